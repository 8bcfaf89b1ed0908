using System;
using MlaGen.Generator.Helpers;

namespace MlaGen.Generator.Model;

/// <summary>RoPE, YaRN and softmax-scale formulas of DeepSeek's inference code and HF's DeepseekV2/V3 attention.</summary>
internal static class LayoutMath
{
    public static DerivedLayout Derive(MlaShapeSpec shape, bool tensorCoreDecode, bool tensorCorePrefill) =>
        new(
            (float)SoftmaxScale(shape),
            (float)RopeAttentionFactor(shape),
            InverseFrequencies(shape).ToEquatableArray(),
            tensorCoreDecode,
            tensorCorePrefill);

    /// <summary>YaRN's mscale(s, m) = 0.1·m·ln(s) + 1 for s &gt; 1, else 1.</summary>
    public static double Mscale(double scale, double m) => scale <= 1 ? 1.0 : 0.1 * m * Math.Log(scale) + 1.0;

    public static double SoftmaxScale(MlaShapeSpec s)
    {
        double scale = 1.0 / Math.Sqrt(s.NopeHeadDim + s.RopeDim);
        if (s.YarnEnabled)
        {
            double m = Mscale(s.YarnFactor, s.YarnMscaleAllDim);
            scale *= m * m; // forgetting the square looks right at position 0 and drifts later
        }
        return scale;
    }

    public static double RopeAttentionFactor(MlaShapeSpec s) =>
        s.YarnEnabled ? Mscale(s.YarnFactor, s.YarnMscale) / Mscale(s.YarnFactor, s.YarnMscaleAllDim) : 1.0;

    public static double[] InverseFrequencies(MlaShapeSpec s)
    {
        int d = s.RopeDim;
        int pairs = d / 2;
        var freq = new double[pairs];
        for (int i = 0; i < pairs; i++)
            freq[i] = 1.0 / Math.Pow(s.RopeTheta, 2.0 * i / d);
        if (!s.YarnEnabled)
            return freq;

        double low = Math.Floor(CorrectionDim(s.YarnBetaFast, d, s.RopeTheta, s.YarnOriginalMaxPositions));
        double high = Math.Ceiling(CorrectionDim(s.YarnBetaSlow, d, s.RopeTheta, s.YarnOriginalMaxPositions));
        low = Math.Max(low, 0);
        high = Math.Min(high, d - 1);
        if (low == high)
            high += 0.001; // DeepSeek's guard against a zero-width ramp
        for (int i = 0; i < pairs; i++)
        {
            double ramp = Math.Min(Math.Max((i - low) / (high - low), 0), 1);
            double smooth = 1 - ramp;
            freq[i] = freq[i] / s.YarnFactor * (1 - smooth) + freq[i] * smooth;
        }
        return freq;
    }

    /// <summary>The dimension index at which the wavelength makes <paramref name="rotations"/> turns over the original context.</summary>
    private static double CorrectionDim(double rotations, int dim, double theta, int originalMaxPositions) =>
        dim * Math.Log(originalMaxPositions / (rotations * 2 * Math.PI)) / (2 * Math.Log(theta));
}
