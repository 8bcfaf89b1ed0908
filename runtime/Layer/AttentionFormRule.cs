using System;
using MlaGen.Kernels;

namespace MlaGen;

/// <summary>
/// How the layer picks the attention form of a call when <see cref="MlaForwardOptions.Form"/> is Auto: the form with
/// the smaller modelled time, FLOP over each kernel's rate measured on an H100 (docs/performance.md, "Absorbed or
/// expanded"). The absorbed form costs 2·(2·latent + rope) FLOP per (query, visible key, head); the expanded form costs
/// 2·(nope + rope + v) per pair plus kv_b_proj over every key of the sequence, 2·latent·(nope + v) per (key, head).
/// So decode stays absorbed and long prompts or long chunks go expanded. Only tensor-core expanded kernels compete:
/// the serial ones (CPU) exist to check the form, not to be fast.
/// </summary>
public static class AttentionFormRule
{
    /// <summary>
    /// Rates (TFLOP/s) of the tensor-core kernels measured on an H100 at 128 heads: absorbed attention (v2, 61–65),
    /// expanded attention (124–135), kv_b_proj expansion (126–152). Their ratios, not their sizes, decide the rule.
    /// </summary>
    public const double AbsorbedTflops = 60;
    public const double ExpandedAttentionTflops = 125;
    public const double ExpandTflops = 140;

    /// <summary>The form Auto runs for new tokens <paramref name="newTokens"/>[i] after <paramref name="starts"/>[i] cached ones.</summary>
    public static MlaAttentionForm Choose(MlaKernelSet kernels, ReadOnlySpan<int> newTokens, ReadOnlySpan<int> starts)
    {
        ArgumentNullException.ThrowIfNull(kernels);
        if (kernels.ExpandedForm != ExpandedAttentionKind.TensorCore)
            return MlaAttentionForm.Absorbed;
        var (absorbed, expanded) = EstimateSeconds(kernels.Spec, newTokens, starts);
        return expanded < absorbed ? MlaAttentionForm.Expanded : MlaAttentionForm.Absorbed;
    }

    /// <summary>Modelled seconds of each form for the call, from the FLOP counts and the measured rates.</summary>
    public static (double Absorbed, double Expanded) EstimateSeconds(MlaSpec spec, ReadOnlySpan<int> newTokens, ReadOnlySpan<int> starts)
    {
        ArgumentNullException.ThrowIfNull(spec);
        if (newTokens.Length != starts.Length)
            throw new ArgumentException($"starts has {starts.Length} entries, expected one per sequence ({newTokens.Length}).", nameof(starts));
        double pairs = 0, keys = 0;
        for (int i = 0; i < newTokens.Length; i++)
        {
            double c = newTokens[i];
            if (c <= 0)
                continue;
            pairs += c * starts[i] + c * (c + 1) / 2; // query at position p sees p + 1 keys
            keys += starts[i] + c;
        }
        double h = spec.Heads;
        double absorbed = 2 * pairs * h * (2 * spec.LatentRank + spec.RopeDim) / (AbsorbedTflops * 1e12);
        double expanded = 2 * pairs * h * (spec.QHeadDim + spec.VHeadDim) / (ExpandedAttentionTflops * 1e12)
            + 2 * keys * h * spec.LatentRank * (spec.NopeHeadDim + spec.VHeadDim) / (ExpandTflops * 1e12);
        return (absorbed, expanded);
    }
}
