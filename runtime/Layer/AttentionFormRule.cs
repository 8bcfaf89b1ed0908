using System;
using MlaGen.Kernels;

namespace MlaGen;

/// <summary>
/// How the layer picks the attention form of a call when <see cref="MlaForwardOptions.Form"/> is Auto: the form with
/// the smaller modelled time, FLOP over each kernel's rate measured on an H100 (docs/performance.md, "Absorbed or
/// expanded"; the model picked the measured faster form in 26 of 26 benchmark cases with each pair of kernels: mma.sync in
/// docs/bench/h100-prefill, wgmma expanded with mma.sync absorbed in docs/bench/h100-prefill-wgmma, wgmma for both in
/// docs/bench/h100-v5 and, with the rates refitted to prefill v4 and decode v9, docs/bench/h100-v9).
/// Absorbed: 2·(2·latent + rope) FLOP per (query, visible key, head) in the decode kernel the call would run, plus the query absorb
/// and W_UV, 2·latent·(nope + v) per (query, head) on CUDA cores. Expanded: 2·(nope + rope + v) per pair in a kernel
/// whose rate falls with the share of the GPU its (query tile × head) work items fill and with the share of tile rows
/// the call's queries use, plus kv_b_proj over every key of the sequence, 2·latent·(nope + v) per (key, head). So decode and short chunks after long prefixes stay
/// absorbed, prompts and long chunks go expanded. Only tensor-core expanded kernels compete: the serial ones (CPU)
/// exist to check the form, not to be fast.
/// </summary>
public static class AttentionFormRule
{
    /// <summary>Absorbed attention + combine on the mma.sync decode kernel, TFLOP/s.</summary>
    public const double MmaSyncAbsorbedTflops = 50;

    /// <summary>
    /// Absorbed attention + combine on the wgmma decode kernel, TFLOP/s: the chunked cases of one H100 run (docs/bench/h100-v9)
    /// measured 363–412 at H = 128; refitted with the expanded rate below, the pair orders all 26 cases of that run right
    /// (the earlier 120, fitted to docs/bench/h100-v5, only did so beside an expanded rate as stale as itself).
    /// </summary>
    public const double WarpgroupAbsorbedTflops = 380;

    /// <summary>The rate the model uses for the absorbed attention on <paramref name="kernel"/>.</summary>
    public static double AbsorbedRateOf(DecodeAttentionKind kernel) =>
        kernel == DecodeAttentionKind.Warpgroup ? WarpgroupAbsorbedTflops : MmaSyncAbsorbedTflops;

    /// <summary>The absorbed form's per-row query absorb and W_UV (CUDA cores), TFLOP/s.</summary>
    public const double AbsorbedRowTflops = 0.9;

    /// <summary>The mma.sync expanded attention: 125 TFLOP/s with every SM busy, 64-query tiles, 2 CTAs per SM (255 registers, 128 threads).</summary>
    public static ExpandedAttentionRate MmaSyncRate { get; } = new(125, 64, 2);

    /// <summary>The wgmma expanded attention (Hopper, prefill v4): 400 TFLOP/s with every SM busy (measured 418–476 from S = 4096 in docs/bench/h100-v9), 128-query tiles, 1 CTA per SM (214 registers, 256 threads, 165 KB of shared memory).</summary>
    public static ExpandedAttentionRate WarpgroupRate { get; } = new(400, 128, 1);

    /// <summary>The rate the model uses for <paramref name="kind"/>'s expanded attention.</summary>
    public static ExpandedAttentionRate RateOf(ExpandedAttentionKind kind) =>
        kind == ExpandedAttentionKind.Warpgroup ? WarpgroupRate : MmaSyncRate;

    /// <summary>kv_b_proj expansion, TFLOP/s.</summary>
    public const double ExpandTflops = 140;

    /// <summary>The form Auto runs for new tokens <paramref name="newTokens"/>[i] after <paramref name="starts"/>[i] cached ones.</summary>
    public static MlaAttentionForm Choose(MlaKernelSet kernels, ReadOnlySpan<int> newTokens, ReadOnlySpan<int> starts, int multiprocessors)
    {
        ArgumentNullException.ThrowIfNull(kernels);
        if (!kernels.ExpandedForm.RunsOnTensorCores())
            return MlaAttentionForm.Absorbed;
        double absorbedTflops = kernels.HasTensorCoreDecode ? AbsorbedRateOf(kernels.DecodeForm) : MmaSyncAbsorbedTflops;
        var (absorbed, expanded) = EstimateSeconds(kernels.Spec, RateOf(kernels.ExpandedForm), absorbedTflops, newTokens, starts, multiprocessors);
        return expanded < absorbed ? MlaAttentionForm.Expanded : MlaAttentionForm.Absorbed;
    }

    /// <summary>
    /// Modelled seconds of each form for the call on a GPU of <paramref name="multiprocessors"/> SMs, the expanded attention
    /// at <paramref name="rate"/> and the absorbed one at <paramref name="absorbedTflops"/>.
    /// </summary>
    public static (double Absorbed, double Expanded) EstimateSeconds(MlaSpec spec, ExpandedAttentionRate rate, double absorbedTflops,
        ReadOnlySpan<int> newTokens, ReadOnlySpan<int> starts, int multiprocessors)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(rate);
        if (!(absorbedTflops > 0))
            throw new ArgumentOutOfRangeException(nameof(absorbedTflops), absorbedTflops, "Expected a positive rate.");
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
            tiles += Math.Ceiling(c / rate.QueryTile);
        }
        double h = spec.Heads;
        double kvUpFlop = 2.0 * spec.LatentRank * (spec.NopeHeadDim + spec.VHeadDim);
        double fill = Math.Min(1, tiles * h / (rate.CtasPerSm * (double)multiprocessors));
        double used = tiles <= 0 ? 0 : rows / (tiles * rate.QueryTile); // a tile's rows past its chunk's end compute nothing useful
        double absorbed = 2 * pairs * h * (2 * spec.LatentRank + spec.RopeDim) / (absorbedTflops * 1e12)
            + rows * h * kvUpFlop / (AbsorbedRowTflops * 1e12);
        double expanded = fill <= 0 ? 0 : 2 * pairs * h * (spec.QHeadDim + spec.VHeadDim) / (rate.Tflops * fill * used * 1e12)
            + keys * h * kvUpFlop / (ExpandTflops * 1e12);
        return (absorbed, expanded);
    }
}

/// <summary>How fast one expanded-attention kernel runs, for the form rule.</summary>
/// <param name="Tflops">TFLOP/s (causal pairs × 2 · (nope + rope + v) per head) with every SM busy, measured on an H100.</param>
/// <param name="QueryTile">Query tokens per work item.</param>
/// <param name="CtasPerSm">Work items resident per SM.</param>
public sealed record ExpandedAttentionRate(double Tflops, int QueryTile, int CtasPerSm)
{
    public double Tflops { get; } = Tflops > 0 ? Tflops : throw new ArgumentOutOfRangeException(nameof(Tflops), Tflops, "Expected a positive rate.");

    public int QueryTile { get; } = QueryTile > 0 ? QueryTile : throw new ArgumentOutOfRangeException(nameof(QueryTile), QueryTile, "Expected at least one query per tile.");

    public int CtasPerSm { get; } = CtasPerSm > 0 ? CtasPerSm : throw new ArgumentOutOfRangeException(nameof(CtasPerSm), CtasPerSm, "Expected at least one CTA per SM.");
}
