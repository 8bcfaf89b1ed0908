using System;

namespace MlaGen;

/// <summary>What one <see cref="MlaLayer.Forward"/> call returns, for the T new tokens in call order.</summary>
public sealed class MlaForwardResult
{
    internal MlaForwardResult(int tokens, int heads, float[] output, float[] lse, float[]? absorbedQuery, float[]? latentOutput,
        bool usedTensorCores = false, MlaAttentionForm form = MlaAttentionForm.Absorbed)
    {
        Form = form;
        UsedTensorCores = usedTensorCores;
        Tokens = tokens;
        Heads = heads;
        Output = output;
        Lse = lse;
        AbsorbedQuery = absorbedQuery;
        LatentOutput = latentOutput;
    }

    public int Tokens { get; }

    /// <summary>The form attention ran in (never Auto).</summary>
    public MlaAttentionForm Form { get; }

    /// <summary>Whether attention ran on the tensor-core kernel (else the general kernel).</summary>
    public bool UsedTensorCores { get; }
    public int Heads { get; }

    /// <summary>Attention output after o_proj, <c>[T, dModel]</c>.</summary>
    public float[] Output { get; }

    /// <summary>Natural-log log-sum-exp of the scaled scores, <c>[T, H]</c> (as FlashMLA returns it).</summary>
    public float[] Lse { get; }

    /// <summary>With <see cref="MlaForwardOptions.CaptureIntermediates"/> in the absorbed form: <c>[T, H, latent + rope]</c> = [W_UKᵀ·q_nope | RoPE(q_pe)].</summary>
    public float[]? AbsorbedQuery { get; }

    /// <summary>With <see cref="MlaForwardOptions.CaptureIntermediates"/> in the absorbed form: Σ p·c_kv before W_UV, <c>[T, H, latent]</c>.</summary>
    public float[]? LatentOutput { get; }

    public static MlaForwardResult Empty(int heads) => new(0, heads, Array.Empty<float>(), Array.Empty<float>(), null, null);
}

/// <summary>Knobs of one forward call; the defaults are right for production use.</summary>
public sealed record MlaForwardOptions
{
    public const int MaxSplits = 64;

    /// <summary>
    /// Split-KV parts per (token, head) of the general kernel; 0 lets the layer choose (and allows the tensor-core
    /// kernel, which plans its own splits). A positive value forces the general kernel with that many splits.
    /// </summary>
    public int Splits { get; init; }

    /// <summary>Use the tensor-core decode kernel where the shape and the device have it (CUDA, see MLA014).</summary>
    public bool TensorCores { get; init; } = true;

    /// <summary>
    /// Which attention form runs the call: <see cref="MlaAttentionForm.Auto"/> lets the layer choose by its cost rule
    /// (see docs/performance.md, "Absorbed or expanded").
    /// </summary>
    public MlaAttentionForm Form { get; init; }

    /// <summary>Also copy back the absorbed query and the latent output (for tests and debugging).</summary>
    public bool CaptureIntermediates { get; init; }

    /// <summary>Fill every intermediate and output buffer with NaN before the kernels run, so an element no kernel wrote shows up.</summary>
    public bool PoisonBuffers { get; init; }

    public static MlaForwardOptions Default { get; } = new();
}

/// <summary>How attention is computed for a call.</summary>
public enum MlaAttentionForm
{
    /// <summary>The layer picks the cheaper form for the call (absorbed for decode, expanded for long prompts).</summary>
    Auto = 0,

    /// <summary>Queries absorbed into the latent space; attention reads the cache rows directly (decode's form).</summary>
    Absorbed = 1,

    /// <summary>kv_b_proj expands the latent rows into per-head K and V first (DeepSeek's prefill form).</summary>
    Expanded = 2,
}
