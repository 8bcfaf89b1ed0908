using System;
using System.Runtime.CompilerServices;

namespace MlaGen.Numerics;

/// <summary>bfloat16 as raw <c>ushort</c> bits (ILGPU has no bf16 type): the upper half of an IEEE float.</summary>
public static class Bf16
{
    /// <summary>Round to nearest even, as <c>cvt.rn.bf16.f32</c> does; NaN stays a quiet NaN.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort FromFloat(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if ((bits & 0x7FFF_FFFFu) > 0x7F80_0000u)
            return (ushort)((bits >> 16) | 0x0040u);
        uint rounding = 0x7FFFu + ((bits >> 16) & 1u);
        return (ushort)((bits + rounding) >> 16);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToFloat(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    public static ushort[] FromFloats(ReadOnlySpan<float> values)
    {
        var result = new ushort[values.Length];
        for (int i = 0; i < values.Length; i++)
            result[i] = FromFloat(values[i]);
        return result;
    }

    public static float[] ToFloats(ReadOnlySpan<ushort> values)
    {
        var result = new float[values.Length];
        for (int i = 0; i < values.Length; i++)
            result[i] = ToFloat(values[i]);
        return result;
    }
}
