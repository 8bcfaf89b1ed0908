using System;
using System.Collections.Generic;
using System.IO;
using System.Text;
using MlaGen.Weights;
using Xunit;

namespace MlaGen.Runtime.Tests;

/// <summary>Malformed files: each must fail with a message naming the file and the problem, and leave nothing open.</summary>
public sealed class SafeTensorsFaultTests : IDisposable
{
    private readonly SafeTensorsTempDirectory _directory = new();

    public void Dispose() => _directory.Dispose();

    private static byte[] File(string header, int dataBytes) => SafeTensorsBytes.File(header, new byte[dataBytes]);

    public static TheoryData<string, byte[], string> MalformedFiles() => new()
    {
        { "empty file", [], "is 0 bytes long" },
        { "shorter than 8 bytes", [1, 0, 0, 0, 0], "is 5 bytes long" },
        { "header length beyond the file", SafeTensorsBytes.WithHeaderLength(100, Encoding.UTF8.GetBytes("{}      "), new byte[12]),
            "header length 100 runs past the end of the file (28 bytes" },
        { "absurd header length", SafeTensorsBytes.WithHeaderLength(ulong.MaxValue, Encoding.UTF8.GetBytes("{}      "), []),
            "header length 18446744073709551615 exceeds the 100000000-byte limit" },
        { "invalid JSON", File("""{"a": {"dtype": "F32", """, 0), "header is not valid JSON" },
        { "invalid UTF-8", SafeTensorsBytes.WithHeaderLength(8, [0x7B, 0x22, 0xFF, 0xFE, 0x22, 0x7D, 0x20, 0x20], []), "not valid UTF-8" },
        { "header is an array", File("[]", 0), "header must be a JSON object, but it is an array" },
        { "tensor entry is a number", File("""{"a": 3}""", 0), "tensor 'a' must be an object with dtype, shape and data_offsets, but it is a number" },
        { "dtype missing", File("""{"a": {"shape": [1], "data_offsets": [0, 4]}}""", 4), "tensor 'a' has no \"dtype\"" },
        { "dtype not a string", File("""{"a": {"dtype": 7, "shape": [1], "data_offsets": [0, 4]}}""", 4), "\"dtype\" must be a string, but it is a number" },
        { "shape not an array", File("""{"a": {"dtype": "F32", "shape": 1, "data_offsets": [0, 4]}}""", 4), "\"shape\" must be an array" },
        { "negative dimension", File("""{"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}""", 4), "shape[0] is -1, not a non-negative integer" },
        { "fractional dimension", File("""{"a": {"dtype": "F32", "shape": [2, 1.5], "data_offsets": [0, 4]}}""", 4), "shape[1] is 1.5" },
        { "three data offsets", File("""{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}}""", 4), "data_offsets must be [begin, end], but it is [0, 4, 8]" },
        { "negative data offset", File("""{"a": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}}""", 4), "data offset -4 is not a non-negative integer" },
        { "metadata value not a string", File("""{"__metadata__": {"epoch": 3}}""", 0), "'__metadata__' must map strings to strings, but 'epoch' holds a number" },
        { "metadata not an object", File("""{"__metadata__": "pt"}""", 0), "'__metadata__' must be an object of strings" },
        { "unknown dtype", File("""{"a": {"dtype": "F7_E3M3", "shape": [1], "data_offsets": [0, 1]}}""", 1), "tensor 'a' has unknown dtype \"F7_E3M3\"" },
        { "dtype in the wrong case", File("""{"a": {"dtype": "f32", "shape": [1], "data_offsets": [0, 4]}}""", 4), "unknown dtype \"f32\"" },
        { "offsets out of range", File("""{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}""", 4),
            "tensor 'a': data_offsets [0, 8] are out of range; the data section has 4 bytes" },
        { "begin after end", File("""{"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}""", 8), "data_offsets [8, 0] begin after they end" },
        { "size does not match shape and dtype", File("""{"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}""", 8),
            "tensor 'a': F32 [3] needs 12 bytes, but data_offsets [0, 8] hold 8" },
        { "more bytes than shape and dtype need", File("""{"a": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 8]}}""", 8),
            "tensor 'a': BF16 [2] needs 4 bytes, but data_offsets [0, 8] hold 8" },
        { "overlapping tensors", File("""{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}""", 12),
            "tensor 'b' bytes [4, 12) overlap tensor 'a' bytes [0, 8)" },
        { "hole between tensors", File("""{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}""", 12),
            "data bytes [4, 8) before tensor 'b' belong to no tensor" },
        { "bytes after the last tensor", File("""{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}""", 8),
            "the data section has 8 bytes but the tensors cover only 4" },
        { "tensor listed twice", File("""{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}""", 2),
            "tensor 'a' appears twice" },
        { "packed dtype not a whole number of bytes", File("""{"a": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}""", 2),
            "3 elements of F4 are not a whole number of bytes" },
    };

    [Theory]
    [MemberData(nameof(MalformedFiles))]
    public void MalformedFileIsRejectedNamingFileAndProblem(string fault, byte[] bytes, string expectedProblem)
    {
        string path = _directory.Write("bad.safetensors", bytes);

        var e = Assert.Throws<SafeTensorsFormatException>(() => SafeTensorsFile.Open(path));

        Assert.True(e.Message.Contains(expectedProblem, StringComparison.Ordinal), $"{fault}: message was \"{e.Message}\"");
        Assert.Contains(path, e.Message, StringComparison.Ordinal);
        Assert.Equal(path, e.Path);
        Assert.IsAssignableFrom<IOException>(e);
        AssertNothingOpenAndDeletable(path);
    }

    [Fact]
    public void CheckpointOverAMalformedFileThrowsTheSameAndLeavesNothingOpen()
    {
        string path = _directory.Write("bad.safetensors", File("""{"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}""", 8));
        var e = Assert.Throws<SafeTensorsFormatException>(() => SafeTensorsCheckpoint.Open(path));
        Assert.Contains("needs 12 bytes", e.Message, StringComparison.Ordinal);
        AssertNothingOpenAndDeletable(path);
    }

    [Fact]
    public void DisposeReleasesDescriptorAndMapping()
    {
        string path = _directory.Write("good.safetensors", File("""{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}""", 8));
        var file = SafeTensorsFile.Open(path);
        Assert.Equal(new float[2], file.ReadAsFloat32("a"));
        if (Directory.Exists("/proc/self/fd"))
            Assert.NotEmpty(SafeTensorsHandles.OpenReferencesTo(path)); // the check does see an open file

        file.Dispose();
        file.Dispose();

        Assert.Throws<ObjectDisposedException>(() => file.ReadAsFloat32("a"));
        AssertNothingOpenAndDeletable(path);
    }

    [Fact]
    public void Fp8WithoutItsScaleTensorIsRefusedNamingTheScale()
    {
        string path = _directory.Write("fp8.safetensors", File("""{"w.weight": {"dtype": "F8_E4M3", "shape": [2, 2], "data_offsets": [0, 4]}}""", 4));
        using var file = SafeTensorsFile.Open(path);

        var e = Assert.Throws<SafeTensorsFormatException>(() => file.ReadAsBf16("w.weight"));
        Assert.Contains("tensor 'w.weight' is F8_E4M3 but the file has no 'w.weight_scale_inv' block-scale tensor", e.Message, StringComparison.Ordinal);
        Assert.Contains(path, e.Message, StringComparison.Ordinal);
        Assert.Throws<SafeTensorsFormatException>(() => file.ReadAsFloat32("w.weight"));
        Assert.Equal(new byte[4], file.ReadBytes("w.weight")); // the raw bytes need no scale
    }

    [Fact]
    public void Fp8ScaleOfTheWrongGridIsRefusedWithBothShapes()
    {
        // [130, 4] needs a [2, 1] grid; [1, 1] is one block short.
        string header = """{"w.weight": {"dtype": "F8_E4M3", "shape": [130, 4], "data_offsets": [0, 520]}, "w.weight_scale_inv": {"dtype": "F32", "shape": [1, 1], "data_offsets": [520, 524]}}""";
        string path = _directory.Write("fp8.safetensors", File(header, 524));
        using var file = SafeTensorsFile.Open(path);

        var e = Assert.Throws<SafeTensorsFormatException>(() => file.ReadAsBf16("w.weight"));
        Assert.Contains("'w.weight_scale_inv' has shape [1, 1], but weight 'w.weight' [130, 4] needs [2, 1]", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Fp8WeightThatIsNot2DIsRefused()
    {
        string header = """{"w.weight": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}, "w.weight_scale_inv": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}""";
        string path = _directory.Write("fp8.safetensors", File(header, 8));
        using var file = SafeTensorsFile.Open(path);
        var e = Assert.Throws<SafeTensorsFormatException>(() => file.ReadAsBf16("w.weight"));
        Assert.Contains("block-scaled FP8 weights must be 2-D", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void UnknownTensorNameIsReportedWithFileAndName()
    {
        string path = _directory.Write("good.safetensors", File("""{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}""", 4));
        using var file = SafeTensorsFile.Open(path);
        var e = Assert.Throws<KeyNotFoundException>(() => file.ReadAsBf16("b"));
        Assert.Contains("has no tensor 'b'", e.Message, StringComparison.Ordinal);
        Assert.Contains(path, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void DtypeWithoutAFloatConversionIsNotSupported()
    {
        string path = _directory.Write("ints.safetensors", File("""{"i": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}}""", 8));
        using var file = SafeTensorsFile.Open(path);
        var e = Assert.Throws<NotSupportedException>(() => file.ReadAsBf16("i"));
        Assert.Contains("tensor 'i' is I64", e.Message, StringComparison.Ordinal);
        Assert.Equal(new byte[8], file.ReadBytes("i"));
    }

    [Fact]
    public void MissingFileIsAFileNotFoundError()
    {
        string path = _directory.File("absent.safetensors");
        Assert.Throws<FileNotFoundException>(() => SafeTensorsFile.Open(path));
        var e = Assert.Throws<FileNotFoundException>(() => SafeTensorsCheckpoint.Open(path));
        Assert.Contains(path, e.Message, StringComparison.Ordinal);
    }

    private static void AssertNothingOpenAndDeletable(string path)
    {
        Assert.Empty(SafeTensorsHandles.OpenReferencesTo(path));
        System.IO.File.Delete(path);
        Assert.False(System.IO.File.Exists(path));
    }
}
