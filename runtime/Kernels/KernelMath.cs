using System;
using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Algorithms;

namespace MlaGen.Kernels;

/// <summary>Device-side helpers the generated kernels call; each compiles for CUDA and runs on the CPU accelerator.</summary>
public static class KernelMath
{
    public const float Log2E = 1.4426950408889634f;
    public const float Ln2 = 0.6931471805599453f;
    private const double InverseTwoPi = 0.15915494309189535;
    private const float TwoPi = 6.2831853071795865f;

    /// <summary>Widens BF16 bits to float (exact).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Bf16ToFloat(ushort bits) => Interop.IntAsFloat((uint)bits << 16);

    /// <summary>Rounds to BF16, nearest even; NaN stays NaN.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort FloatToBf16(float value)
    {
        uint bits = Interop.FloatAsInt(value);
        if ((bits & 0x7FFF_FFFFu) > 0x7F80_0000u)
            return (ushort)((bits >> 16) | 0x0040u);
        uint rounding = 0x7FFFu + ((bits >> 16) & 1u);
        return (ushort)((bits + rounding) >> 16);
    }

    /// <summary>Sum over the 32 lanes of a warp; every lane gets the total.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float WarpSum(float value)
    {
        value += Warp.ShuffleXor(value, 16);
        value += Warp.ShuffleXor(value, 8);
        value += Warp.ShuffleXor(value, 4);
        value += Warp.ShuffleXor(value, 2);
        value += Warp.ShuffleXor(value, 1);
        return value;
    }

    /// <summary>Maximum over the 32 lanes of a warp; every lane gets it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float WarpMax(float value)
    {
        value = Math.Max(value, Warp.ShuffleXor(value, 16));
        value = Math.Max(value, Warp.ShuffleXor(value, 8));
        value = Math.Max(value, Warp.ShuffleXor(value, 4));
        value = Math.Max(value, Warp.ShuffleXor(value, 2));
        value = Math.Max(value, Warp.ShuffleXor(value, 1));
        return value;
    }

    /// <summary>
    /// Rotates (x0, x1) by position · inverseFrequency, scaled by <paramref name="factor"/>. The angle is reduced in
    /// double so that a position of 160k keeps the same accuracy as position 1 (fp32 would lose ~1e-2 rad).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Rotate(ref float x0, ref float x1, int position, double inverseFrequency, float factor)
    {
        double turns = position * inverseFrequency * InverseTwoPi;
        double fraction = turns - (long)turns;
        float angle = (float)fraction * TwoPi;
        float c = XMath.Cos(angle) * factor;
        float s = XMath.Sin(angle) * factor;
        float r0 = x0 * c - x1 * s;
        float r1 = x0 * s + x1 * c;
        x0 = r0;
        x1 = r1;
    }

    /// <summary>Two floats rounded to BF16 and packed: <paramref name="low"/> in bits 0–15, as mma fragments expect.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint PackBf16(float low, float high) => FloatToBf16(low) | ((uint)FloatToBf16(high) << 16);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Exp2(float x) => XMath.Exp2(x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Log2(float x) => XMath.Log2(x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Rsqrt(float x) => XMath.Rsqrt(x);
}
