using System;
using System.Buffers.Binary;
using System.IO;
using System.Linq;
using System.Text;
using MlaGen.Numerics;
using MlaGen.Weights;
using Xunit;

namespace MlaGen.Runtime.Tests;

/// <summary>Writer → reader for every dtype the runtime reads, and the writer's byte layout against the reference's.</summary>
public sealed class SafeTensorsRoundTripTests : IDisposable
{
    private readonly SafeTensorsTempDirectory _directory = new();

    public void Dispose() => _directory.Dispose();

    [Fact]
    public void Bf16RoundTripsBitForBit()
    {
        var random = new Random(11);
        var bits = new ushort[3 * 7];
        for (int i = 0; i < bits.Length; i++)
            bits[i] = (ushort)random.Next(0x10000); // every pattern, NaNs and subnormals included
        var writer = new SafeTensorsWriter();
        writer.AddBf16("x", [3, 7], bits);

        using var file = SaveAndOpen(writer);

        var tensor = file.ReadAsBf16("x");
        Assert.Equal([3, 7], tensor.Shape);
        Assert.Equal(bits, tensor.Data);
        Assert.Equal(SafeTensorsDType.BF16, file.GetInfo("x").DType);
    }

    [Fact]
    public void F16RoundTripsAndWidensExactly()
    {
        var random = new Random(12);
        var values = new Half[5 * 3];
        for (int i = 0; i < values.Length; i++)
            values[i] = BitConverter.UInt16BitsToHalf((ushort)random.Next(0x10000));
        values[0] = Half.NaN;
        values[1] = Half.Epsilon;
        values[2] = Half.MaxValue;
        var writer = new SafeTensorsWriter();
        writer.AddF16("h", [5, 3], values);

        using var file = SaveAndOpen(writer);

        Assert.Equal(values.Select(BitConverter.HalfToUInt16Bits).SelectMany(LittleEndian), file.ReadBytes("h"));
        float[] floats = file.ReadAsFloat32("h");
        ushort[] bf16 = file.ReadAsBf16("h").Data;
        for (int i = 0; i < values.Length; i++)
        {
            Assert.Equal(BitConverter.SingleToUInt32Bits((float)values[i]), BitConverter.SingleToUInt32Bits(floats[i]));
            Assert.Equal(Bf16.FromFloat((float)values[i]), bf16[i]);
        }
    }

    [Fact]
    public void F32RoundTripsBitForBitAndRoundsToBf16()
    {
        var random = new Random(13);
        var values = new float[4 * 4];
        for (int i = 0; i < values.Length; i++)
            values[i] = (float)(random.NextDouble() * 200 - 100);
        values[0] = float.NegativeInfinity;
        values[1] = -0f;
        values[2] = float.Epsilon;
        values[3] = BitConverter.UInt32BitsToSingle(0x7FC0_1234); // NaN with a payload
        var writer = new SafeTensorsWriter();
        writer.AddF32("f", [4, 4], values);

        using var file = SaveAndOpen(writer);

        Assert.Equal(values.Select(BitConverter.SingleToUInt32Bits), file.ReadAsFloat32("f").Select(BitConverter.SingleToUInt32Bits));
        Assert.Equal(values.Select(Bf16.FromFloat), file.ReadAsBf16("f").Data);
    }

    [Fact]
    public void F8E4M3RoundTripsBitForBitAndDequantisesPerBlock()
    {
        // [260, 3]: three row blocks (128, 128, 4) and one column block; every byte value appears.
        var bits = new byte[260 * 3];
        for (int i = 0; i < bits.Length; i++)
            bits[i] = (byte)(i * 7);
        float[] scales = [0.5f, 2f, 0.125f];
        var writer = new SafeTensorsWriter();
        writer.AddF8E4M3WithBlockScales("q.weight", [260, 3], bits, scales);

        using var file = SaveAndOpen(writer);

        Assert.Equal(bits, file.ReadBytes("q.weight"));
        Assert.Equal(SafeTensorsDType.F8E4M3, file.GetInfo("q.weight").DType);
        Assert.Equal([3, 1], file.GetInfo("q.weight_scale_inv").Shape);
        Assert.Equal(scales, file.ReadAsFloat32("q.weight_scale_inv"));
        float[] values = file.ReadAsFloat32("q.weight");
        ushort[] bf16 = file.ReadAsBf16("q.weight").Data;
        for (int i = 0; i < bits.Length; i++)
        {
            float expected = Float8E4M3.ToFloat(bits[i]) * scales[i / 3 / 128];
            Assert.Equal(BitConverter.SingleToUInt32Bits(expected), BitConverter.SingleToUInt32Bits(values[i]));
            Assert.Equal(Bf16.FromFloat(expected), bf16[i]);
        }
    }

    [Fact]
    public void Float8E4M3DecodesEveryByteByTheFormatsRules()
    {
        for (int b = 0; b < 256; b++)
        {
            int exponent = (b >> 3) & 0xF, mantissa = b & 7;
            double magnitude = exponent == 0 ? mantissa / 8.0 * Math.Pow(2, -6) : (1 + mantissa / 8.0) * Math.Pow(2, exponent - 7);
            float value = Float8E4M3.ToFloat((byte)b);
            if ((b & 0x7F) == 0x7F)
            {
                Assert.True(float.IsNaN(value), $"0x{b:X2}");
                Assert.True(Float8E4M3.IsNaN((byte)b));
                continue;
            }
            Assert.Equal((b & 0x80) != 0 ? -magnitude : magnitude, (double)value);
            Assert.True(float.IsFinite(value));
        }
        Assert.Equal(Float8E4M3.MaxValue, Float8E4M3.ToFloat(0x7E));
    }

    [Fact]
    public void MixedFileKeepsMetadataPadsHeaderAndAlignsEveryTensor()
    {
        var writer = new SafeTensorsWriter();
        writer.SetMetadata("format", "pt");
        writer.SetMetadata("note", "ünïcode & <symbols>+");
        writer.AddF8E4M3("a8", [3], [1, 2, 3]);
        writer.AddBf16("b16", [1], [0x3F80]);
        writer.AddF32("c32", [1], [2f]);
        writer.AddF16("d16", [3], [(Half)1, (Half)2, (Half)3]);
        writer.Add("e64", SafeTensorsDType.I64, [1], new byte[8]);
        string path = _directory.File("mixed.safetensors");
        writer.Save(path);
        byte[] bytes = File.ReadAllBytes(path);

        using var file = SafeTensorsFile.Open(path);
        Assert.Equal(writer.Metadata, file.Metadata);
        Assert.Equal(0, file.HeaderLength % 8);
        string header = Encoding.UTF8.GetString(bytes, 8, (int)file.HeaderLength);
        Assert.EndsWith("}", header.TrimEnd(' '), StringComparison.Ordinal);
        Assert.Contains("ünïcode & <symbols>+", header, StringComparison.Ordinal);
        // As the reference writes: by descending dtype, then name, so every tensor starts aligned to its element size.
        Assert.Equal(["e64", "c32", "b16", "d16", "a8"], file.TensorNames);
        foreach (string name in file.TensorNames)
        {
            var info = file.GetInfo(name);
            Assert.Equal(0, (8 + file.HeaderLength + info.DataBegin) % (info.DType.BitSize() / 8));
        }
        Assert.Equal(writer.DataLength, file.DataLength);
        Assert.Equal(8 + file.HeaderLength + file.DataLength, bytes.Length);
    }

    [Fact]
    public void WriterLaysOutBytesAsTheReferenceImplementationDoes()
    {
        // What the reference writes for one F32 [1, 2, 3] tensor holding 0..5: a 64-byte header needing no padding.
        float[] values = [0, 1, 2, 3, 4, 5];
        byte[] data = values.SelectMany(v => LittleEndian(BitConverter.SingleToUInt32Bits(v))).ToArray();
        var writer = new SafeTensorsWriter();
        writer.AddF32("attn.0", [1, 2, 3], values);
        Assert.Equal(
            SafeTensorsBytes.File("""{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}""", data),
            writer.ToArray());
        Assert.Equal(64, writer.ToArray()[0]);

        // A 65-byte header gets 7 spaces.
        writer = new SafeTensorsWriter();
        writer.AddF32("attn0", [1, 1, 2, 3], values);
        byte[] padded = writer.ToArray();
        Assert.Equal(
            SafeTensorsBytes.File("""{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}""", data),
            padded);
        Assert.Equal(72, padded[0]);
        Assert.Equal("       ", Encoding.ASCII.GetString(padded, 8 + 65, 7));

        // No tensors: "{}" and six spaces; metadata comes first.
        Assert.Equal(SafeTensorsBytes.File("{}", []), new SafeTensorsWriter().ToArray());
        writer = new SafeTensorsWriter();
        writer.SetMetadata("framework", "pt");
        Assert.Equal(SafeTensorsBytes.File("""{"__metadata__":{"framework":"pt"}}""", []), writer.ToArray());
    }

    [Fact]
    public void FailedSaveLeavesNoFileBehind()
    {
        var writer = new SafeTensorsWriter();
        writer.AddBf16("x", [2], [1, 2]);
        string blocked = _directory.File("taken");
        Directory.CreateDirectory(blocked); // a directory where the file should go: the final rename fails

        Assert.ThrowsAny<IOException>(() => writer.Save(blocked));

        Assert.Equal([blocked], _directory.Entries());
        Assert.Empty(Directory.GetFileSystemEntries(blocked));
    }

    [Fact]
    public void SaveReplacesAnExistingFileWhole()
    {
        string path = _directory.Write("model.safetensors", new byte[1000]);
        var writer = new SafeTensorsWriter();
        writer.AddBf16("x", [2], [0x3F80, 0x4000]);

        writer.Save(path);

        Assert.Equal(writer.ToArray(), File.ReadAllBytes(path));
        Assert.Equal([path], _directory.Entries());
    }

    [Fact]
    public void WriterRefusesInconsistentTensors()
    {
        var writer = new SafeTensorsWriter();
        Assert.Contains("needs 12 bytes but 8 were given",
            Assert.Throws<ArgumentException>(() => writer.AddF32("x", [3], [1f, 2f])).Message, StringComparison.Ordinal);
        writer.AddF32("x", [2], [1f, 2f]);
        Assert.Contains("'x' is added twice", Assert.Throws<ArgumentException>(() => writer.AddF32("x", [2], [1f, 2f])).Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => writer.AddBf16("__metadata__", [1], [0]));
        Assert.Contains("needs 1x1 block scales but 2 were given",
            Assert.Throws<ArgumentException>(() => writer.AddF8E4M3WithBlockScales("w", [2, 2], new byte[4], [1f, 1f])).Message, StringComparison.Ordinal);
        Assert.Equal(["x"], writer.TensorNames);
    }

    private SafeTensorsFile SaveAndOpen(SafeTensorsWriter writer)
    {
        string path = _directory.File($"{Guid.NewGuid():N}.safetensors");
        writer.Save(path);
        return SafeTensorsFile.Open(path);
    }

    private static byte[] LittleEndian(ushort value)
    {
        var bytes = new byte[2];
        BinaryPrimitives.WriteUInt16LittleEndian(bytes, value);
        return bytes;
    }

    private static byte[] LittleEndian(uint value)
    {
        var bytes = new byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(bytes, value);
        return bytes;
    }
}
