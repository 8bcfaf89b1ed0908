using System;

namespace MlaGen;

/// <summary>What one <see cref="MlaLayer.Forward"/> call returns, for the T new tokens in call order.</summary>
public sealed class MlaForwardResult
{
    internal MlaForwardResult(int tokens, int heads, float[] output, float[] lse, float[]? absorbedQuery, float[]? latentOutput)
    {
        Tokens = tokens;
        Heads = heads;
        Output = output;
        Lse = lse;
        AbsorbedQuery = absorbedQuery;
        LatentOutput = latentOutput;
    }

    public int Tokens { get; }
    public int Heads { get; }

    /// <summary>Attention output after o_proj, <c>[T, dModel]</c>.</summary>
    public float[] Output { get; }

    /// <summary>Natural-log log-sum-exp of the scaled scores, <c>[T, H]</c> (as FlashMLA returns it).</summary>
    public float[] Lse { get; }

    /// <summary>With <see cref="MlaForwardOptions.CaptureIntermediates"/>: <c>[T, H, latent + rope]</c> = [W_UKᵀ·q_nope | RoPE(q_pe)].</summary>
    public float[]? AbsorbedQuery { get; }

    /// <summary>With <see cref="MlaForwardOptions.CaptureIntermediates"/>: Σ p·c_kv before W_UV, <c>[T, H, latent]</c>.</summary>
    public float[]? LatentOutput { get; }

    public static MlaForwardResult Empty(int heads) => new(0, heads, Array.Empty<float>(), Array.Empty<float>(), null, null);
}

/// <summary>Knobs of one forward call; the defaults are right for production use.</summary>
public sealed record MlaForwardOptions
{
    /// <summary>Split-KV parts per (token, head); 0 lets the layer choose from the device and the lengths.</summary>
    public int Splits { get; init; }

    /// <summary>Also copy back the absorbed query and the latent output (for tests and debugging).</summary>
    public bool CaptureIntermediates { get; init; }

    /// <summary>Fill every intermediate and output buffer with NaN before the kernels run, so an element no kernel wrote shows up.</summary>
    public bool PoisonBuffers { get; init; }

    public static MlaForwardOptions Default { get; } = new();
}
