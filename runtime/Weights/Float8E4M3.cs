using System;
using System.Runtime.CompilerServices;

namespace MlaGen.Weights;

/// <summary>
/// FP8 e4m3fn (OCP / NVIDIA, safetensors "F8_E4M3", torch.float8_e4m3fn): sign, 4 exponent bits with bias 7,
/// 3 mantissa bits; subnormals; no infinities; S.1111.111 is NaN; largest finite 448.
/// </summary>
public static class Float8E4M3
{
    public const float MaxValue = 448f;

    private static readonly float[] Values = BuildTable();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToFloat(byte bits) => Values[bits];

    public static bool IsNaN(byte bits) => (bits & 0x7F) == 0x7F;

    private static float[] BuildTable()
    {
        var table = new float[256];
        for (int b = 0; b < 256; b++)
        {
            int exponent = (b >> 3) & 0xF;
            int mantissa = b & 0x7;
            float magnitude;
            if (exponent == 0xF && mantissa == 0x7)
                magnitude = float.NaN;
            else if (exponent == 0)
                magnitude = mantissa * (1f / 512f); // subnormal: mantissa/8 * 2^(1-7)
            else
                magnitude = (1f + mantissa / 8f) * MathF.ScaleB(1f, exponent - 7);
            table[b] = (b & 0x80) != 0 ? -magnitude : magnitude;
        }
        return table;
    }
}
