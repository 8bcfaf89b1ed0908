using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text.Json;
using MlaGen.Numerics;
using MlaGen.Weights;
using Xunit;

namespace MlaGen.Runtime.Tests;

/// <summary>Single-file and sharded checkpoints: finding files, finding tensors in shards, lazy opening, index faults.</summary>
public sealed class SafeTensorsCheckpointTests : IDisposable
{
    private readonly SafeTensorsTempDirectory _directory = new();

    public void Dispose() => _directory.Dispose();

    /// <summary>Shard 1: "a" (BF16 [2]) and the FP8 weight "w.weight" [2, 2]; shard 2: "b" (F32 [3]) and w's block scale.</summary>
    private IReadOnlyList<string> WriteTwoShards()
    {
        var first = new SafeTensorsWriter();
        first.AddBf16("a", [2], [0x3F80, 0x4000]);
        first.AddF8E4M3("w.weight", [2, 2], [0x38, 0x40, 0xB8, 0x01]);
        var second = new SafeTensorsWriter();
        second.AddF32("b", [3], [1f, 2f, 3f]);
        second.AddF32("w.weight_scale_inv", [1, 1], [0.5f]);
        return SafeTensorsWriter.SaveSharded(_directory.Path, [first, second]);
    }

    [Fact]
    public void ShardedCheckpointWritesHuggingFaceNamesAndIndex()
    {
        var shards = WriteTwoShards();

        Assert.Equal(["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"], shards);
        using var index = JsonDocument.Parse(File.ReadAllBytes(_directory.File("model.safetensors.index.json")));
        Assert.Equal(4 + 4 + 12 + 4, index.RootElement.GetProperty("metadata").GetProperty("total_size").GetInt64());
        var weightMap = index.RootElement.GetProperty("weight_map").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString());
        Assert.Equal(shards[0], weightMap["a"]);
        Assert.Equal(shards[0], weightMap["w.weight"]);
        Assert.Equal(shards[1], weightMap["b"]);
        Assert.Equal(shards[1], weightMap["w.weight_scale_inv"]);
        Assert.Equal(4, weightMap.Count);
        Assert.Equal(3, _directory.Entries().Length); // no temporary files left
    }

    [Fact]
    public void DirectoryAndIndexFileOpenTheSameShardedCheckpoint()
    {
        WriteTwoShards();
        foreach (string path in new[] { _directory.Path, _directory.File("model.safetensors.index.json") })
        {
            using var checkpoint = SafeTensorsCheckpoint.Open(path);
            Assert.True(checkpoint.IsSharded);
            Assert.Equal(_directory.File("model.safetensors.index.json"), checkpoint.Path);
            Assert.Equal(["a", "b", "w.weight", "w.weight_scale_inv"], checkpoint.TensorNames.Order(StringComparer.Ordinal));
            Assert.Equal(2, checkpoint.ShardPaths.Count);
            Assert.Equal("24", checkpoint.Metadata["total_size"]);
            Assert.Equal(_directory.File("model-00002-of-00002.safetensors"), checkpoint.ShardPathOf("b"));
            Assert.Equal(new ushort[] { 0x3F80, 0x4000 }, checkpoint.ReadAsBf16("a").Data);
            Assert.Equal(new[] { 1f, 2f, 3f }, checkpoint.ReadAsFloat32("b"));
            Assert.True(checkpoint.TryGetInfo("b", out var info));
            Assert.Equal([3], info.Shape);
            Assert.False(checkpoint.TryGetInfo("c", out _));
            Assert.Contains("has no tensor 'c'", Assert.Throws<KeyNotFoundException>(() => checkpoint.ReadAsBf16("c")).Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void DirectoryWithASingleFileOpensThatFile()
    {
        var writer = new SafeTensorsWriter();
        writer.SetMetadata("format", "pt");
        writer.AddBf16("a", [1], [0x3F80]);
        writer.Save(_directory.File("model.safetensors"));

        using var checkpoint = SafeTensorsCheckpoint.Open(_directory.Path);

        Assert.False(checkpoint.IsSharded);
        Assert.Equal(_directory.File("model.safetensors"), checkpoint.Path);
        Assert.Equal(["a"], checkpoint.TensorNames);
        Assert.Equal("pt", checkpoint.Metadata["format"]);
    }

    [Fact]
    public void Fp8WeightFindsItsBlockScaleInAnotherShard()
    {
        var shards = WriteTwoShards();
        using var checkpoint = SafeTensorsCheckpoint.Open(_directory.Path);

        // 1, 2, -1, 2^-9, each times 0.5.
        Assert.Equal(new[] { 0.5f, 1f, -0.5f, 1f / 1024 }, checkpoint.ReadAsFloat32("w.weight"));
        Assert.Equal(new ushort[] { 0x3F00, 0x3F80, 0xBF00, 0x3A80 }, checkpoint.ReadAsBf16("w.weight").Data);

        // The shard alone lacks the scale.
        using var shard = SafeTensorsFile.Open(_directory.File(shards[0]));
        Assert.Contains("no 'w.weight_scale_inv'", Assert.Throws<SafeTensorsFormatException>(() => shard.ReadAsBf16("w.weight")).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Fp8WeightWithoutScaleAnywhereIsRefused()
    {
        var only = new SafeTensorsWriter();
        only.AddF8E4M3("w.weight", [1, 1], [0x38]);
        SafeTensorsWriter.SaveSharded(_directory.Path, [only]);
        using var checkpoint = SafeTensorsCheckpoint.Open(_directory.Path);

        var e = Assert.Throws<SafeTensorsFormatException>(() => checkpoint.ReadAsBf16("w.weight"));
        Assert.Contains("tensor 'w.weight' is F8_E4M3 but the checkpoint has no 'w.weight_scale_inv'", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ShardsOpenOnFirstUseAndAllCloseOnDispose()
    {
        var shards = WriteTwoShards().Select(_directory.File).ToArray();
        if (!Directory.Exists("/proc/self/fd"))
            return; // descriptors can only be inspected on Linux

        var checkpoint = SafeTensorsCheckpoint.Open(_directory.Path);
        Assert.Empty(SafeTensorsHandles.OpenReferencesTo(shards[0]));
        Assert.Empty(SafeTensorsHandles.OpenReferencesTo(shards[1]));

        checkpoint.ReadAsFloat32("b");
        Assert.Empty(SafeTensorsHandles.OpenReferencesTo(shards[0]));
        Assert.NotEmpty(SafeTensorsHandles.OpenReferencesTo(shards[1]));

        checkpoint.ReadAsBf16("a");
        Assert.NotEmpty(SafeTensorsHandles.OpenReferencesTo(shards[0]));

        checkpoint.Dispose();
        Assert.Empty(SafeTensorsHandles.OpenReferencesTo(shards[0]));
        Assert.Empty(SafeTensorsHandles.OpenReferencesTo(shards[1]));
        Assert.Throws<ObjectDisposedException>(() => checkpoint.ReadAsBf16("a"));
    }

    public static TheoryData<string, string, string> MalformedIndexes() => new()
    {
        { "invalid JSON", """{"weight_map": {"a": """, "the index is not valid JSON" },
        { "no weight_map", """{"metadata": {}}""", "the index has no \"weight_map\" object" },
        { "weight_map value not a file name", """{"weight_map": {"a": 3}}""", "weight_map maps 'a' to 3, not to a file name" },
        { "missing shard", """{"weight_map": {"a": "model-00009-of-00009.safetensors"}}""", "weight_map names shard 'model-00009-of-00009.safetensors' (for 'a'), which does not exist" },
        { "shard outside the directory", """{"weight_map": {"a": "../elsewhere.safetensors"}}""", "weight_map puts 'a' in '../elsewhere.safetensors', which is not a file beside the index" },
        { "tensor listed twice", """{"weight_map": {"a": "model-00001-of-00002.safetensors", "a": "model-00001-of-00002.safetensors"}}""", "weight_map lists 'a' twice" },
    };

    [Theory]
    [MemberData(nameof(MalformedIndexes))]
    public void MalformedIndexIsRejectedNamingIndexAndProblem(string fault, string indexJson, string expectedProblem)
    {
        WriteTwoShards();
        string index = _directory.File("model.safetensors.index.json");
        File.WriteAllText(index, indexJson);

        var e = Assert.Throws<SafeTensorsFormatException>(() => SafeTensorsCheckpoint.Open(_directory.Path));

        Assert.True(e.Message.Contains(expectedProblem, StringComparison.Ordinal), $"{fault}: message was \"{e.Message}\"");
        Assert.Equal(index, e.Path);
    }

    [Fact]
    public void IndexPointingAtTheWrongShardIsReportedOnRead()
    {
        WriteTwoShards();
        File.WriteAllText(_directory.File("model.safetensors.index.json"),
            """{"metadata": {}, "weight_map": {"b": "model-00001-of-00002.safetensors"}}""");
        using var checkpoint = SafeTensorsCheckpoint.Open(_directory.Path);

        var e = Assert.Throws<SafeTensorsFormatException>(() => checkpoint.ReadAsBf16("b"));
        Assert.Contains("the index puts 'b' in 'model-00001-of-00002.safetensors', but that shard has no such tensor", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void DirectoryWithoutACheckpointIsNotFound()
    {
        var e = Assert.Throws<FileNotFoundException>(() => SafeTensorsCheckpoint.Open(_directory.Path));
        Assert.Contains("holds neither model.safetensors nor model.safetensors.index.json", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ShardedWriterRefusesATensorInTwoShards()
    {
        var first = new SafeTensorsWriter();
        first.AddBf16("a", [1], [0]);
        var second = new SafeTensorsWriter();
        second.AddBf16("a", [1], [0]);
        var e = Assert.Throws<ArgumentException>(() => SafeTensorsWriter.SaveSharded(_directory.Path, [first, second]));
        Assert.Contains("'a' is in both model-00001-of-00002.safetensors and model-00002-of-00002.safetensors", e.Message, StringComparison.Ordinal);
        Assert.Empty(_directory.Entries());
    }

    [Fact]
    public void ReadAsBf16OfAnF32ShardTensorRoundsLikeBf16FromFloat()
    {
        WriteTwoShards();
        using var checkpoint = SafeTensorsCheckpoint.Open(_directory.Path);
        Assert.Equal(new[] { 1f, 2f, 3f }.Select(Bf16.FromFloat), checkpoint.ReadAsBf16("b").Data);
    }
}
