using System;
using System.Linq;
using MlaGen.Weights;
using Xunit;

namespace MlaGen.Runtime.Tests;

/// <summary>
/// Files packed byte by byte from the format's definition (hand-written JSON header, hand-packed little-endian data);
/// every expected value below is worked out by hand, not by the library.
/// </summary>
public sealed class SafeTensorsHandBuiltFixtureTests : IDisposable
{
    // Data section layout (byte offsets), chosen by hand:
    //   tall.weight            F8_E4M3 [130, 4]  [  0, 520)  two row blocks of 128, one column block
    //   tall.weight_scale_inv  F32     [2, 1]    [520, 528)  0.5, 3.0
    //   wide.weight            F8_E4M3 [2, 130]  [528, 788)  one row block, two column blocks
    //   wide.weight_scale_inv  F32     [1, 2]    [788, 796)  0.25, 4.0
    //   bf16                   BF16    [3]       [796, 802)
    //   f16                    F16     [4]       [802, 810)
    //   f32                    F32     [2]       [810, 818)
    //   f32.rounding           F32     [3]       [818, 830)
    // Listed out of data order, with whitespace, metadata in the middle: JSON allows all three.
    private const string Header = """
        {
          "f32.rounding": {"dtype": "F32", "shape": [3], "data_offsets": [818, 830]},
          "tall.weight": {"dtype": "F8_E4M3", "shape": [130, 4], "data_offsets": [0, 520]},
          "wide.weight_scale_inv": {"dtype": "F32", "shape": [1, 2], "data_offsets": [788, 796]},
          "__metadata__": {"format": "pt", "note": "hand-made"},
          "tall.weight_scale_inv": {"dtype": "F32", "shape": [2, 1], "data_offsets": [520, 528]},
          "wide.weight": {"dtype": "F8_E4M3", "shape": [2, 130], "data_offsets": [528, 788]},
          "bf16": {"dtype": "BF16", "shape": [3], "data_offsets": [796, 802]},
          "f16": {"dtype": "F16", "shape": [4], "data_offsets": [802, 810]},
          "f32": {"dtype": "F32", "shape": [2], "data_offsets": [810, 818]}
        }
        """;

    private readonly SafeTensorsTempDirectory _directory = new();
    private readonly string _path;

    public SafeTensorsHandBuiltFixtureTests() => _path = _directory.Write("hand.safetensors", SafeTensorsBytes.File(Header, Data()));

    public void Dispose() => _directory.Dispose();

    private static byte[] Data()
    {
        var data = new byte[830];
        // tall.weight, row r at 4r. e4m3fn: 0x38 = 1, 0x40 = 2, 0xB8 = -1, 0x01 = 2^-9 (smallest subnormal),
        // 0x7E = 448 (largest), 0x80 = -0, 0x7F / 0xFF = NaN, 0x08 = 2^-6 (smallest normal), 0x07 = 7 * 2^-9.
        Put(data, 0, 0x38, 0x40, 0xB8, 0x01);       // row 0   (block 0, scale 0.5)
        Put(data, 4 * 127, 0x7E, 0x38, 0x00, 0x80); // row 127 (block 0, scale 0.5)
        Put(data, 4 * 128, 0x38, 0x40, 0x7E, 0x01); // row 128 (block 1, scale 3)
        Put(data, 4 * 129, 0x7F, 0xFF, 0x08, 0x07); // row 129 (block 1, scale 3)
        Put(data, 520, 0x00, 0x00, 0x00, 0x3F);     // 0.5f = 0x3F000000
        Put(data, 524, 0x00, 0x00, 0x40, 0x40);     // 3.0f = 0x40400000
        // wide.weight, row r at 528 + 130r.
        data[528 + 0] = 0x38;                       // [0, 0]   column block 0, scale 0.25
        data[528 + 127] = 0x40;                     // [0, 127] column block 0
        data[528 + 128] = 0x38;                     // [0, 128] column block 1, scale 4
        data[528 + 130 + 129] = 0xB8;               // [1, 129] column block 1
        Put(data, 788, 0x00, 0x00, 0x80, 0x3E);     // 0.25f = 0x3E800000
        Put(data, 792, 0x00, 0x00, 0x80, 0x40);     // 4.0f = 0x40800000
        Put(data, 796, 0x80, 0x3F, 0xA0, 0xC0, 0x01, 0x00);             // bf16 0x3F80 (1), 0xC0A0 (-5), 0x0001
        Put(data, 802, 0x00, 0x3C, 0x00, 0xC0, 0x55, 0x35, 0x01, 0x00); // f16 0x3C00 (1), 0xC000 (-2), 0x3555, 0x0001 (2^-24)
        Put(data, 810, 0x00, 0x00, 0xC0, 0x3F, 0x00, 0x00, 0x80, 0xBE); // f32 1.5, -0.25
        Put(data, 818, 0x00, 0x80, 0x80, 0x3F,                          // 0x3F808000: halfway, even below
                       0x00, 0x80, 0x81, 0x3F,                          // 0x3F818000: halfway, odd below
                       0x01, 0x80, 0x80, 0x3F);                         // 0x3F808001: just above halfway
        return data;
    }

    private static void Put(byte[] data, int offset, params byte[] bytes) => bytes.CopyTo(data, offset);

    [Fact]
    public void HeaderEntriesAndMetadataAreReadAsWritten()
    {
        using var file = SafeTensorsFile.Open(_path);

        Assert.Equal(830, file.DataLength);
        Assert.Equal(0, file.HeaderLength % 8);
        Assert.Equal(
            ["tall.weight", "tall.weight_scale_inv", "wide.weight", "wide.weight_scale_inv", "bf16", "f16", "f32", "f32.rounding"],
            file.TensorNames);
        Assert.Equal("pt", file.Metadata["format"]);
        Assert.Equal("hand-made", file.Metadata["note"]);
        Assert.Equal(2, file.Metadata.Count);
        Assert.True(file.TryGetInfo("wide.weight", out var wide));
        Assert.Equal(SafeTensorsDType.F8E4M3, wide.DType);
        Assert.Equal([2, 130], wide.Shape);
        Assert.Equal((528L, 788L, 260L), (wide.DataBegin, wide.DataEnd, wide.ElementCount));
        Assert.False(file.TryGetInfo("__metadata__", out _));
    }

    [Fact]
    public void Bf16IsCopiedBitForBit()
    {
        using var file = SafeTensorsFile.Open(_path);
        var tensor = file.ReadAsBf16("bf16");
        Assert.Equal("bf16", tensor.Name);
        Assert.Equal([3], tensor.Shape);
        Assert.Equal(new ushort[] { 0x3F80, 0xC0A0, 0x0001 }, tensor.Data);
        Assert.Equal(new[] { 1f, -5f, BitConverter.UInt32BitsToSingle(0x0001_0000) }, file.ReadAsFloat32("bf16"));
    }

    [Fact]
    public void F16IsWidenedExactlyAndRoundedToNearestBf16()
    {
        using var file = SafeTensorsFile.Open(_path);
        // 0x3555 = 1.0101010101b * 2^-2 = 0.333251953125; its bf16 keeps 7 mantissa bits, the rest (101b...) rounds up.
        Assert.Equal(new[] { 1f, -2f, 0.333251953125f, 5.9604644775390625e-8f }, file.ReadAsFloat32("f16"));
        Assert.Equal(new ushort[] { 0x3F80, 0xC000, 0x3EAB, 0x3380 }, file.ReadAsBf16("f16").Data);
    }

    [Fact]
    public void F32IsReadExactlyAndRoundedToNearestEvenBf16()
    {
        using var file = SafeTensorsFile.Open(_path);
        Assert.Equal(new[] { 1.5f, -0.25f }, file.ReadAsFloat32("f32"));
        Assert.Equal(new ushort[] { 0x3FC0, 0xBE80 }, file.ReadAsBf16("f32").Data);
        Assert.Equal(new ushort[] { 0x3F80, 0x3F82, 0x3F81 }, file.ReadAsBf16("f32.rounding").Data);
    }

    [Fact]
    public void Fp8RowBlocksUseTheirOwnScale()
    {
        using var file = SafeTensorsFile.Open(_path);
        var tensor = file.ReadAsBf16("tall.weight");
        Assert.Equal([130, 4], tensor.Shape);
        ushort[] bits = tensor.Data;

        // Row 0, scale 0.5: 0.5, 1, -0.5, 2^-10.
        Assert.Equal(new ushort[] { 0x3F00, 0x3F80, 0xBF00, 0x3A80 }, bits[0..4]);
        // Row 127, still scale 0.5: 224, 0.5, 0, -0.
        Assert.Equal(new ushort[] { 0x4360, 0x3F00, 0x0000, 0x8000 }, bits[(4 * 127)..(4 * 128)]);
        // Row 128, scale 3: 3, 6, 1344, 3 * 2^-9.
        Assert.Equal(new ushort[] { 0x4040, 0x40C0, 0x44A8, 0x3BC0 }, bits[(4 * 128)..(4 * 129)]);
        // Row 129, scale 3: NaN, NaN, 3 * 2^-6, 21 * 2^-9.
        Assert.True(float.IsNaN(BitConverter.UInt32BitsToSingle((uint)bits[4 * 129] << 16)));
        Assert.True(float.IsNaN(BitConverter.UInt32BitsToSingle((uint)bits[4 * 129 + 1] << 16)));
        Assert.Equal(new ushort[] { 0x3D40, 0x3D28 }, bits[(4 * 129 + 2)..(4 * 130)]);
        // Every other row is +0.
        Assert.All(bits[4..(4 * 127)], b => Assert.Equal(0, b));

        float[] values = file.ReadAsFloat32("tall.weight");
        Assert.Equal(new[] { 0.5f, 1f, -0.5f, 1f / 1024 }, values[0..4]);
        Assert.Equal(new[] { 3f, 6f, 1344f, 3f / 512 }, values[(4 * 128)..(4 * 129)]);
    }

    [Fact]
    public void Fp8ColumnBlocksUseTheirOwnScale()
    {
        using var file = SafeTensorsFile.Open(_path);
        ushort[] bits = file.ReadAsBf16("wide.weight").Data;

        var expected = new ushort[260];
        expected[0] = 0x3E80;         // 1 * 0.25
        expected[127] = 0x3F00;       // 2 * 0.25
        expected[128] = 0x4080;       // 1 * 4
        expected[130 + 129] = 0xC080; // -1 * 4
        Assert.Equal(expected, bits);
    }

    [Fact]
    public void UnpaddedHeaderScalarAndEmptyTensorsAreRead()
    {
        // The reference writer pads to 8 bytes, but an unpadded header is still valid.
        string header = """{"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"z":{"dtype":"BF16","shape":[0,3],"data_offsets":[4,4]}}""";
        Assert.NotEqual(0, header.Length % 8);
        string path = _directory.Write("scalar.safetensors", SafeTensorsBytes.File(header, [0x00, 0x00, 0x80, 0x3F], padHeader: false));

        using var file = SafeTensorsFile.Open(path);
        Assert.Equal(header.Length, file.HeaderLength);
        var scalar = file.ReadAsBf16("s");
        Assert.Empty(scalar.Shape);
        Assert.Equal(new ushort[] { 0x3F80 }, scalar.Data);
        var empty = file.ReadAsBf16("z");
        Assert.Equal([0, 3], empty.Shape);
        Assert.Empty(empty.Data);
        Assert.Empty(file.Metadata);
    }

    [Fact]
    public void HeaderOnlyFileHoldsNoTensors()
    {
        string path = _directory.Write("empty.safetensors", SafeTensorsBytes.File("{}", []));
        using var file = SafeTensorsFile.Open(path);
        Assert.Empty(file.TensorNames);
        Assert.Equal(0, file.DataLength);
    }

    [Fact]
    public void CheckpointOverTheFixtureGivesTheSameValues()
    {
        using var file = SafeTensorsFile.Open(_path);
        using var checkpoint = SafeTensorsCheckpoint.Open(_path);
        Assert.False(checkpoint.IsSharded);
        Assert.Equal(file.TensorNames, checkpoint.TensorNames);
        foreach (string name in new[] { "tall.weight", "wide.weight", "bf16", "f16", "f32" })
            Assert.Equal(file.ReadAsBf16(name).Data, checkpoint.ReadAsBf16(name).Data);
        Assert.Equal("hand-made", checkpoint.Metadata["note"]);
        Assert.Equal(file.ReadBytes("wide.weight"), checkpoint.ReadBytes("wide.weight"));
        Assert.Equal(260, checkpoint.ReadBytes("wide.weight").Length);
        Assert.Equal(4, checkpoint.ReadBytes("wide.weight").Count(b => b != 0));
    }
}
