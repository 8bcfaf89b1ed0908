using System;
using System.Collections.Generic;
using System.Linq;
using MlaGen.Numerics;
using MlaGen.Weights;
using Xunit;

namespace MlaGen.Runtime.Tests;

/// <summary>Loading and saving one MLA layer under Hugging Face names, single-file and sharded, BF16, F32 and FP8.</summary>
public sealed class SafeTensorsMlaLayerTests : IDisposable
{
    private readonly SafeTensorsTempDirectory _directory = new();

    public void Dispose() => _directory.Dispose();

    [Theory]
    [InlineData(0)]
    [InlineData(24)]
    public void RandomLayerSavedAndLoadedIsBitIdentical(int qLatentRank)
    {
        var spec = SafeTensorsTestSpecs.Small(qLatentRank);
        var weights = MlaWeights.Random(spec, seed: 42 + qLatentRank);
        string path = _directory.File("layer.safetensors");

        MlaWeightsLoader.Save(weights, path, layer: 5);
        var loaded = MlaWeightsLoader.Load(path, spec, layer: 5);

        AssertSameWeights(weights, loaded);
        using var file = SafeTensorsFile.Open(path);
        Assert.Equal("pt", file.Metadata["format"]);
        Assert.Equal(
            MlaWeights.ExpectedTensors(spec).Select(t => "model.layers.5.self_attn." + t.Name).Order(StringComparer.Ordinal),
            file.TensorNames.Order(StringComparer.Ordinal));
        Assert.All(file.TensorNames, name => Assert.Equal(SafeTensorsDType.BF16, file.GetInfo(name).DType));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(24)]
    public void ShardedCheckpointLoadsEachLayer(int qLatentRank)
    {
        var spec = SafeTensorsTestSpecs.Small(qLatentRank);
        var layer0 = MlaWeights.Random(spec, seed: 1);
        var layer1 = MlaWeights.Random(spec, seed: 2);
        // Every layer is split across both shards, alternating tensor by tensor.
        var shards = new[] { new SafeTensorsWriter(), new SafeTensorsWriter() };
        int next = 0;
        foreach (var (layer, weights) in new[] { (0, layer0), (1, layer1) })
        {
            foreach (var tensor in weights.Tensors.Values)
                shards[next++ % 2].AddBf16(MlaWeightsLoader.TensorName(layer, tensor.Name), tensor.Shape, tensor.Data);
        }
        shards[0].AddBf16("model.embed_tokens.weight", [4, 64], new ushort[4 * 64]);
        SafeTensorsWriter.SaveSharded(_directory.Path, shards);

        AssertSameWeights(layer0, MlaWeightsLoader.Load(_directory.Path, spec, 0));
        AssertSameWeights(layer1, MlaWeightsLoader.Load(_directory.File("model.safetensors.index.json"), spec, 1));
        using var checkpoint = SafeTensorsCheckpoint.Open(_directory.Path);
        var tensorShards = MlaWeights.ExpectedTensors(spec).Select(t => checkpoint.ShardPathOf(MlaWeightsLoader.TensorName(0, t.Name))).Distinct();
        Assert.Equal(2, tensorShards.Count());
    }

    [Fact]
    public void Fp8AndF32TensorsAreConvertedToBf16()
    {
        var spec = SafeTensorsTestSpecs.Small(0);
        var reference = MlaWeights.Random(spec, seed: 7);
        // q_proj [64, 64] as FP8 with one block scale, kv_b_proj [64, 32] as FP8, o_proj as F32; the scales in the other shard.
        var qBits = Enumerable.Range(0, 64 * 64).Select(i => (byte)(i % 0x7E)).ToArray();
        var kvBBits = Enumerable.Range(0, 64 * 32).Select(i => (byte)(0x80 | (i % 0x7E))).ToArray();
        var oValues = Enumerable.Range(0, 64 * 32).Select(i => (i - 1000) / 3000f).ToArray();
        var first = new SafeTensorsWriter();
        var second = new SafeTensorsWriter();
        first.AddF8E4M3(MlaWeightsLoader.TensorName(0, MlaWeights.QProjName), [64, 64], qBits);
        first.AddF8E4M3(MlaWeightsLoader.TensorName(0, MlaWeights.KvBProjName), [64, 32], kvBBits);
        second.AddF32(MlaWeightsLoader.TensorName(0, MlaWeights.QProjName) + "_scale_inv", [1, 1], [0.25f]);
        second.AddF32(MlaWeightsLoader.TensorName(0, MlaWeights.KvBProjName) + "_scale_inv", [1, 1], [3f]);
        second.AddF32(MlaWeightsLoader.TensorName(0, MlaWeights.OProjName), [64, 32], oValues);
        foreach (string name in new[] { MlaWeights.KvAProjWithMqaName, MlaWeights.KvALayerNormName })
            second.AddBf16(MlaWeightsLoader.TensorName(0, name), reference.Tensors[name].Shape, reference.Tensors[name].Data);
        SafeTensorsWriter.SaveSharded(_directory.Path, [first, second]);

        var loaded = MlaWeightsLoader.Load(_directory.Path, spec, 0);

        Assert.Equal(qBits.Select(b => Bf16.FromFloat(Float8E4M3.ToFloat(b) * 0.25f)), loaded.QProj!.Data);
        Assert.Equal(kvBBits.Select(b => Bf16.FromFloat(Float8E4M3.ToFloat(b) * 3f)), loaded.KvBProj.Data);
        Assert.Equal(oValues.Select(Bf16.FromFloat), loaded.OProj.Data);
        Assert.Equal(reference.KvAProjWithMqa.Data, loaded.KvAProjWithMqa.Data);
        Assert.Equal([64, 64], loaded.QProj.Shape);
        Assert.Equal(MlaWeights.QProjName, loaded.QProj.Name);
    }

    [Fact]
    public void NegativeLayerIsRejected()
    {
        var spec = SafeTensorsTestSpecs.Small(0);
        string path = _directory.File("layer.safetensors");
        MlaWeightsLoader.Save(MlaWeights.Random(spec, 1), path, 0);

        var e = Assert.Throws<ArgumentOutOfRangeException>(() => MlaWeightsLoader.Load(path, spec, -1));
        Assert.Equal("layer", e.ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => MlaWeightsLoader.Save(MlaWeights.Random(spec, 1), path, -2));
    }

    [Fact]
    public void AbsentLayerIsRejectedNamingTheLayersThere()
    {
        var spec = SafeTensorsTestSpecs.Small(0);
        var writer = new SafeTensorsWriter();
        MlaWeightsLoader.AddLayer(writer, MlaWeights.Random(spec, 1), 0);
        MlaWeightsLoader.AddLayer(writer, MlaWeights.Random(spec, 2), 1);
        string path = _directory.File("layers.safetensors");
        writer.Save(path);

        var e = Assert.Throws<ArgumentOutOfRangeException>(() => MlaWeightsLoader.Load(path, spec, 2));

        Assert.Equal("layer", e.ParamName);
        Assert.Contains("has no layer 2", e.Message, StringComparison.Ordinal);
        Assert.Contains("it has layers 0 to 1", e.Message, StringComparison.Ordinal);
        Assert.Contains(path, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void MissingTensorIsNamedInFullWithShapeAndLayer()
    {
        var spec = SafeTensorsTestSpecs.Small(0);
        var weights = MlaWeights.Random(spec, 1);
        var writer = new SafeTensorsWriter();
        foreach (var tensor in weights.Tensors.Values.Where(t => t.Name != MlaWeights.KvALayerNormName))
            writer.AddBf16(MlaWeightsLoader.TensorName(3, tensor.Name), tensor.Shape, tensor.Data);
        string path = _directory.File("layer.safetensors");
        writer.Save(path);

        var e = Assert.Throws<ArgumentException>(() => MlaWeightsLoader.Load(path, spec, 3));

        Assert.Contains("Layer 3", e.Message, StringComparison.Ordinal);
        Assert.Contains("has no tensor 'model.layers.3.self_attn.kv_a_layernorm.weight'", e.Message, StringComparison.Ordinal);
        Assert.Contains("expects shape [32]", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void MisShapedTensorIsNamedWithExpectedAndActualShape()
    {
        var spec = SafeTensorsTestSpecs.Small(0);
        var weights = MlaWeights.Random(spec, 1);
        var writer = new SafeTensorsWriter();
        foreach (var tensor in weights.Tensors.Values.Where(t => t.Name != MlaWeights.KvBProjName))
            writer.AddBf16(MlaWeightsLoader.TensorName(0, tensor.Name), tensor.Shape, tensor.Data);
        writer.AddBf16(MlaWeightsLoader.TensorName(0, MlaWeights.KvBProjName), [64, 16], new ushort[64 * 16]);
        string path = _directory.File("layer.safetensors");
        writer.Save(path);

        var e = Assert.Throws<ArgumentException>(() => MlaWeightsLoader.Load(path, spec, 0));

        Assert.Contains("tensor 'model.layers.0.self_attn.kv_b_proj.weight' has shape [64, 16]", e.Message, StringComparison.Ordinal);
        Assert.Contains("expects [64, 32]", e.Message, StringComparison.Ordinal);
        Assert.Contains("Layer 0", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void QLoraSpecOverAPlainCheckpointSaysWhichQProjectionIsThere()
    {
        string path = _directory.File("layer.safetensors");
        MlaWeightsLoader.Save(MlaWeights.Random(SafeTensorsTestSpecs.Small(0), 1), path, 0);

        var e = Assert.Throws<ArgumentException>(() => MlaWeightsLoader.Load(path, SafeTensorsTestSpecs.Small(24), 0));

        Assert.Contains("has no tensor 'model.layers.0.self_attn.q_a_proj.weight'; Tests.SmallMlaQLora expects shape [24, 64]", e.Message, StringComparison.Ordinal);
        Assert.Contains("has 'model.layers.0.self_attn.q_proj.weight' instead", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void TensorNamesAreTheHuggingFaceOnes()
    {
        Assert.Equal("model.layers.0.self_attn.", MlaWeightsLoader.LayerPrefix(0));
        Assert.Equal("model.layers.61.self_attn.kv_a_proj_with_mqa.weight", MlaWeightsLoader.TensorName(61, MlaWeights.KvAProjWithMqaName));
        Assert.Equal("model.layers.2.self_attn.q_a_layernorm.weight", MlaWeightsLoader.TensorName(2, MlaWeights.QALayerNormName));
    }

    private static void AssertSameWeights(MlaWeights expected, MlaWeights actual)
    {
        Assert.Equal(expected.Tensors.Keys.Order(StringComparer.Ordinal), actual.Tensors.Keys.Order(StringComparer.Ordinal));
        foreach (var (name, tensor) in expected.Tensors)
        {
            Assert.Equal(tensor.Shape, actual.Tensors[name].Shape);
            Assert.True(tensor.Data.AsSpan().SequenceEqual(actual.Tensors[name].Data), $"{name} differs");
        }
        Assert.True(expected.Spec.IsSameShape(actual.Spec));
    }
}
