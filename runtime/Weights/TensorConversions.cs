using System;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using MlaGen.Numerics;

namespace MlaGen.Weights;

/// <summary>Converts a run of little-endian elements; <paramref name="firstElement"/> is the run's index in its tensor.</summary>
internal delegate void ChunkConverter<T>(ReadOnlySpan<byte> source, Span<T> destination, long firstElement);

/// <summary>Little-endian element decoders shared by the file and checkpoint readers.</summary>
internal static class TensorConversions
{
    public static void Bf16FromBf16(ReadOnlySpan<byte> source, Span<ushort> destination, long firstElement)
    {
        if (BitConverter.IsLittleEndian)
        {
            source.CopyTo(MemoryMarshal.AsBytes(destination));
            return;
        }
        for (int i = 0; i < destination.Length; i++)
            destination[i] = BinaryPrimitives.ReadUInt16LittleEndian(source.Slice(2 * i));
    }

    public static void Bf16FromF16(ReadOnlySpan<byte> source, Span<ushort> destination, long firstElement)
    {
        for (int i = 0; i < destination.Length; i++)
            destination[i] = Bf16.FromFloat((float)BinaryPrimitives.ReadHalfLittleEndian(source.Slice(2 * i)));
    }

    public static void Bf16FromF32(ReadOnlySpan<byte> source, Span<ushort> destination, long firstElement)
    {
        for (int i = 0; i < destination.Length; i++)
            destination[i] = Bf16.FromFloat(BinaryPrimitives.ReadSingleLittleEndian(source.Slice(4 * i)));
    }

    public static void F32FromBf16(ReadOnlySpan<byte> source, Span<float> destination, long firstElement)
    {
        for (int i = 0; i < destination.Length; i++)
            destination[i] = Bf16.ToFloat(BinaryPrimitives.ReadUInt16LittleEndian(source.Slice(2 * i)));
    }

    public static void F32FromF16(ReadOnlySpan<byte> source, Span<float> destination, long firstElement)
    {
        for (int i = 0; i < destination.Length; i++)
            destination[i] = (float)BinaryPrimitives.ReadHalfLittleEndian(source.Slice(2 * i));
    }

    public static void F32FromF32(ReadOnlySpan<byte> source, Span<float> destination, long firstElement)
    {
        if (BitConverter.IsLittleEndian)
        {
            source.CopyTo(MemoryMarshal.AsBytes(destination));
            return;
        }
        for (int i = 0; i < destination.Length; i++)
            destination[i] = BinaryPrimitives.ReadSingleLittleEndian(source.Slice(4 * i));
    }
}

/// <summary>
/// DeepSeek-V3 block scales of one FP8 weight [R, C]: <c>scale_inv</c> is F32 [ceil(R/128), ceil(C/128)] and
/// value[r, c] = fp8(q[r, c]) · scale_inv[r / 128, c / 128].
/// </summary>
internal sealed class Fp8BlockScales
{
    public const int BlockSize = 128;

    private readonly int _columns;
    private readonly int _scaleColumns;
    private readonly float[] _scaleInv;

    private Fp8BlockScales(int columns, int scaleColumns, float[] scaleInv)
    {
        _columns = columns;
        _scaleColumns = scaleColumns;
        _scaleInv = scaleInv;
    }

    /// <summary>The scale tensor's name for a weight, as DeepSeek-V3 checkpoints spell it.</summary>
    public static string ScaleName(string weightName) => weightName + "_scale_inv";

    /// <summary>Checks the weight is 2-D and the scale has the block grid's shape and a float dtype.</summary>
    public static void Validate(SafeTensorInfo weight, string weightPath, SafeTensorInfo scale, string scalePath)
    {
        if (weight.Shape.Count != 2)
            throw new SafeTensorsFormatException(weightPath,
                $"tensor '{weight.Name}' is F8_E4M3 with shape {weight.ShapeText}; block-scaled FP8 weights must be 2-D.");
        int scaleRows = CeilDiv(weight.Shape[0]);
        int scaleColumns = CeilDiv(weight.Shape[1]);
        if (scale.Shape.Count != 2 || scale.Shape[0] != scaleRows || scale.Shape[1] != scaleColumns)
            throw new SafeTensorsFormatException(scalePath,
                $"block-scale tensor '{scale.Name}' has shape {scale.ShapeText}, but weight '{weight.Name}' {weight.ShapeText} "
                + $"needs [{scaleRows}, {scaleColumns}] (one scale per {BlockSize}x{BlockSize} block).");
        if (scale.DType is not (SafeTensorsDType.F32 or SafeTensorsDType.BF16 or SafeTensorsDType.F16))
            throw new SafeTensorsFormatException(scalePath,
                $"block-scale tensor '{scale.Name}' is {scale.DType.Name()}; scales must be F32 (or BF16/F16).");
    }

    /// <summary>Scales for a weight already checked by <see cref="Validate"/>.</summary>
    public static Fp8BlockScales Create(SafeTensorInfo weight, float[] scaleInv) =>
        new(weight.Shape[1], CeilDiv(weight.Shape[1]), scaleInv);

    public void ToBf16(ReadOnlySpan<byte> source, Span<ushort> destination, long firstElement)
    {
        long row = firstElement / _columns;
        int column = (int)(firstElement % _columns);
        for (int i = 0; i < destination.Length; i++)
        {
            float value = Float8E4M3.ToFloat(source[i]) * _scaleInv[(row / BlockSize) * _scaleColumns + column / BlockSize];
            destination[i] = Bf16.FromFloat(value);
            if (++column == _columns)
            {
                column = 0;
                row++;
            }
        }
    }

    public void ToF32(ReadOnlySpan<byte> source, Span<float> destination, long firstElement)
    {
        long row = firstElement / _columns;
        int column = (int)(firstElement % _columns);
        for (int i = 0; i < destination.Length; i++)
        {
            destination[i] = Float8E4M3.ToFloat(source[i]) * _scaleInv[(row / BlockSize) * _scaleColumns + column / BlockSize];
            if (++column == _columns)
            {
                column = 0;
                row++;
            }
        }
    }

    private static int CeilDiv(int extent) => (int)(((long)extent + BlockSize - 1) / BlockSize);
}
