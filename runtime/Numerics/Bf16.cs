using System;
using System.Runtime.CompilerServices;
using MlaGen.Kernels;

namespace MlaGen.Numerics;

/// <summary>bfloat16 as raw <c>ushort</c> bits (ILGPU has no bf16 type): the upper half of an IEEE float.</summary>
public static class Bf16
{
    /// <summary>Round to nearest even, as <c>cvt.rn.bf16.f32</c> does; NaN stays a quiet NaN (the kernels' own rounding).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort FromFloat(float value) => KernelMath.FloatToBf16(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToFloat(ushort bits) => KernelMath.Bf16ToFloat(bits);

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
