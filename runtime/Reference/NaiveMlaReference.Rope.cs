using System;

namespace MlaGen.Reference;

// RoPE, YaRN and the softmax scale, derived here from the spec's raw attributes only:
// the spec's own InverseFrequencies, SoftmaxScale and RopeAttentionFactor are what these check.
public static partial class NaiveMlaReference
{
    /// <summary>YaRN's magnitude correction: 0.1·m·ln(s) + 1 when s &gt; 1, else 1.</summary>
    public static double YarnMscale(double scalingFactor, double mscale) =>
        scalingFactor > 1 ? 0.1 * mscale * Math.Log(scalingFactor) + 1 : 1;

    /// <summary>(nope + rope)^-0.5 · mscale(factor, mscale_all_dim)² (the square only matters when factor &gt; 1).</summary>
    public static double SoftmaxScale(MlaSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        double mscale = YarnMscale(spec.YarnFactor, spec.YarnMscaleAllDim);
        return 1.0 / Math.Sqrt(spec.NopeHeadDim + spec.RopeDim) * mscale * mscale;
    }

    /// <summary>Factor on cos and sin: mscale(factor, mscale) / mscale(factor, mscale_all_dim).</summary>
    public static double RopeAttentionFactor(MlaSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        return YarnMscale(spec.YarnFactor, spec.YarnMscale) / YarnMscale(spec.YarnFactor, spec.YarnMscaleAllDim);
    }

    /// <summary>
    /// DeepSeek's yarn_find_correction_range: floor of the β_fast dimension and ceil of the β_slow one,
    /// low raised to 0 and high lowered to RopeDim − 1 (exactly the two clamps DeepSeek and HF apply).
    /// </summary>
    public static (int Low, int High) YarnCorrectionRange(MlaSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        int low = (int)Math.Floor(YarnCorrectionDimension(spec, spec.YarnBetaFast));
        int high = (int)Math.Ceiling(YarnCorrectionDimension(spec, spec.YarnBetaSlow));
        return (Math.Max(low, 0), Math.Min(high, spec.RopeDim - 1));
    }

    /// <summary>
    /// Inverse frequency of each rotated pair i in [0, RopeDim/2): θ^(-2i/d), YaRN-blended when YarnFactor &gt; 1
    /// (low i, the fast-rotating pairs, kept; high i divided by the factor; a linear ramp between).
    /// </summary>
    public static double[] InverseFrequencies(MlaSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ValidateRope(spec);
        int d = spec.RopeDim;
        var frequencies = new double[d / 2];
        for (int i = 0; i < frequencies.Length; i++)
            frequencies[i] = Math.Pow(spec.RopeTheta, -2.0 * i / d);
        if (!(spec.YarnFactor > 1))
            return frequencies;

        var (low, high) = YarnCorrectionRange(spec);
        double rampLow = low;
        // DeepSeek's guard: a zero-width ramp would divide 0 by 0 at i == low.
        double rampHigh = low == high ? high + 0.001 : high;
        for (int i = 0; i < frequencies.Length; i++)
        {
            double ramp = Math.Clamp((i - rampLow) / (rampHigh - rampLow), 0.0, 1.0);
            double extrapolated = frequencies[i];
            double interpolated = frequencies[i] / spec.YarnFactor;
            frequencies[i] = extrapolated * (1 - ramp) + interpolated * ramp;
        }
        return frequencies;
    }

    /// <summary>
    /// Rotates one RoPE vector (RopeDim values) to <paramref name="position"/>, in the spec's style, keeping the
    /// element order of the input; cos and sin carry <see cref="RopeAttentionFactor"/>.
    /// </summary>
    public static double[] ApplyRope(MlaSpec spec, ReadOnlySpan<double> values, int position)
    {
        ArgumentNullException.ThrowIfNull(spec);
        if (values.Length != spec.RopeDim)
            throw new ArgumentException($"A RoPE vector has {spec.RopeDim} values, got {values.Length}.", nameof(values));
        var rotation = RopeRotation.At(spec, position);
        var rotated = new double[spec.RopeDim];
        rotation.Rotate(values, rotated);
        return rotated;
    }

    private static double YarnCorrectionDimension(MlaSpec spec, double rotations) =>
        spec.RopeDim * Math.Log(spec.YarnOriginalMaxPositions / (rotations * 2 * Math.PI)) / (2 * Math.Log(spec.RopeTheta));

    private static void ValidateRope(MlaSpec spec)
    {
        if (spec.RopeDim <= 0 || spec.RopeDim % 2 != 0)
            throw new ArgumentException($"RopeDim must be positive and even, got {spec.RopeDim}.", nameof(spec));
        if (spec.RopeStyle != RopeStyle.Interleaved && spec.RopeStyle != RopeStyle.RotateHalf)
            throw new ArgumentException($"Unknown RoPE style {spec.RopeStyle}.", nameof(spec));
    }

    /// <summary>cos and sin of every pair at one position, computed once and applied to many vectors (all heads).</summary>
    private sealed class RopeRotation
    {
        private readonly RopeStyle _style;
        private readonly double[] _cos;
        private readonly double[] _sin;

        private RopeRotation(RopeStyle style, double[] cos, double[] sin)
        {
            _style = style;
            _cos = cos;
            _sin = sin;
        }

        public static RopeRotation At(MlaSpec spec, int position)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(position);
            double[] frequencies = InverseFrequencies(spec);
            double attentionFactor = RopeAttentionFactor(spec);
            var cos = new double[frequencies.Length];
            var sin = new double[frequencies.Length];
            for (int i = 0; i < frequencies.Length; i++)
            {
                double angle = position * frequencies[i];
                cos[i] = Math.Cos(angle) * attentionFactor;
                sin[i] = Math.Sin(angle) * attentionFactor;
            }
            return new RopeRotation(spec.RopeStyle, cos, sin);
        }

        /// <summary>Pair i is (2i, 2i+1) when interleaved, (i, i + d/2) when rotate-half; each is turned by angle pos·f_i.</summary>
        public void Rotate(ReadOnlySpan<double> source, Span<double> destination)
        {
            int half = _cos.Length;
            for (int i = 0; i < half; i++)
            {
                int first = _style == RopeStyle.Interleaved ? 2 * i : i;
                int second = _style == RopeStyle.Interleaved ? 2 * i + 1 : i + half;
                double x = source[first];
                double y = source[second];
                // (x + iy)·(cos + i·sin): DeepSeek's complex-multiply form.
                destination[first] = x * _cos[i] - y * _sin[i];
                destination[second] = x * _sin[i] + y * _cos[i];
            }
        }
    }
}
