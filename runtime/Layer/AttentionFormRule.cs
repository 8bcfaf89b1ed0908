using System;
using MlaGen.Kernels;

namespace MlaGen;

/// <summary>
/// How the layer picks the attention form of a call when <see cref="MlaForwardOptions.Form"/> is Auto: the form with
/// the smaller modelled time, FLOP over each kernel's rate measured on an H100 (docs/performance.md, "Absorbed or
/// expanded"; the model picked the measured faster form in 26 of 26 benchmark cases).
/// Absorbed: 2·(2·latent + rope) FLOP per (query, visible key, head) in the tensor-core kernel, plus the query absorb
/// and W_UV, 2·latent·(nope + v) per (query, head) on CUDA cores. Expanded: 2·(nope + rope + v) per pair in a kernel
/// whose rate falls with the share of the GPU its (64-query tile × head) work items fill, plus kv_b_proj over every
/// key of the sequence, 2·latent·(nope + v) per (key, head). So decode and short chunks after long prefixes stay
/// absorbed, prompts and long chunks go expanded. Only tensor-core expanded kernels compete: the serial ones (CPU)
/// exist to check the form, not to be fast.
/// </summary>
public static class AttentionFormRule
{
    /// <summary>Absorbed attention + combine (tensor cores), TFLOP/s.</summary>
    public const double AbsorbedTflops = 50;

    /// <summary>The absorbed form's per-row query absorb and W_UV (CUDA cores), TFLOP/s.</summary>
    public const double AbsorbedRowTflops = 0.9;

    /// <summary>Expanded attention with every SM busy, TFLOP/s.</summary>
    public const double ExpandedAttentionTflops = 125;

    /// <summary>CTAs of the expanded attention resident per SM (255 registers per thread, 128 threads).</summary>
    public const int ExpandedCtasPerSm = 2;

    /// <summary>kv_b_proj expansion, TFLOP/s.</summary>
    public const double ExpandTflops = 140;

    /// <summary>The form Auto runs for new tokens <paramref name="newTokens"/>[i] after <paramref name="starts"/>[i] cached ones.</summary>
    public static MlaAttentionForm Choose(MlaKernelSet kernels, ReadOnlySpan<int> newTokens, ReadOnlySpan<int> starts, int multiprocessors)
    {
        ArgumentNullException.ThrowIfNull(kernels);
        if (kernels.ExpandedForm != ExpandedAttentionKind.TensorCore)
            return MlaAttentionForm.Absorbed;
        var (absorbed, expanded) = EstimateSeconds(kernels.Spec, newTokens, starts, multiprocessors);
        return expanded < absorbed ? MlaAttentionForm.Expanded : MlaAttentionForm.Absorbed;
    }

    /// <summary>Modelled seconds of each form for the call on a GPU of <paramref name="multiprocessors"/> SMs.</summary>
    public static (double Absorbed, double Expanded) EstimateSeconds(MlaSpec spec, ReadOnlySpan<int> newTokens, ReadOnlySpan<int> starts, int multiprocessors)
    {
        ArgumentNullException.ThrowIfNull(spec);
        if (newTokens.Length != starts.Length)
            throw new ArgumentException($"starts has {starts.Length} entries, expected one per sequence ({newTokens.Length}).", nameof(starts));
        if (multiprocessors <= 0)
            throw new ArgumentOutOfRangeException(nameof(multiprocessors), multiprocessors, "Expected at least one multiprocessor.");
        double pairs = 0, keys = 0, rows = 0, tiles = 0;
        for (int i = 0; i < newTokens.Length; i++)
        {
            double c = newTokens[i];
            if (c <= 0)
                continue;
            pairs += c * starts[i] + c * (c + 1) / 2; // query at position p sees p + 1 keys
            keys += starts[i] + c;
            rows += c;
            tiles += Math.Ceiling(c / MlaKernelSet.ExpandedQueryTile);
        }
        double h = spec.Heads;
        double kvUpFlop = 2.0 * spec.LatentRank * (spec.NopeHeadDim + spec.VHeadDim);
        double fill = Math.Min(1, tiles * h / (ExpandedCtasPerSm * (double)multiprocessors));
        double absorbed = 2 * pairs * h * (2 * spec.LatentRank + spec.RopeDim) / (AbsorbedTflops * 1e12)
            + rows * h * kvUpFlop / (AbsorbedRowTflops * 1e12);
        double expanded = fill <= 0 ? 0 : 2 * pairs * h * (spec.QHeadDim + spec.VHeadDim) / (ExpandedAttentionTflops * fill * 1e12)
            + keys * h * kvUpFlop / (ExpandTflops * 1e12);
        return (absorbed, expanded);
    }
}
