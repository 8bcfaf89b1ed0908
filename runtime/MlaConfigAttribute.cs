using System;

namespace MlaGen;

/// <summary>
/// Marks a <c>partial class</c> as a DeepSeek-style Multi-head Latent Attention layer of exactly this shape.
/// The MlaGen source generator emits ILGPU kernels specialised to it. Defaults are DeepSeek-V2/V3's values.
/// </summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false, Inherited = false)]
public sealed class MlaConfigAttribute : Attribute
{
    /// <param name="dModel">Hidden size of the model (2048 in V2-Lite, 5120 in V2, 7168 in V3).</param>
    /// <param name="heads">Attention heads this layer computes (128 in V3; 16 or 32 under tensor parallelism).</param>
    /// <param name="latentRank">kv_lora_rank: the compressed KV width cached per token (512 in DeepSeek).</param>
    /// <param name="ropeDim">qk_rope_head_dim: the shared RoPE key width cached per token (64 in DeepSeek).</param>
    public MlaConfigAttribute(int dModel, int heads, int latentRank, int ropeDim)
    {
        DModel = dModel;
        Heads = heads;
        LatentRank = latentRank;
        RopeDim = ropeDim;
    }

    public int DModel { get; }
    public int Heads { get; }
    public int LatentRank { get; }
    public int RopeDim { get; }

    /// <summary>q_lora_rank; 0 means queries come from a plain <c>q_proj</c> (V2-Lite). 1536 in V2/V3.</summary>
    public int QLatentRank { get; set; }

    /// <summary>qk_nope_head_dim: the non-RoPE part of each query/key head (128).</summary>
    public int NopeHeadDim { get; set; } = 128;

    /// <summary>v_head_dim (128).</summary>
    public int VHeadDim { get; set; } = 128;

    /// <summary>rope_theta (10000; Moonlight uses 50000).</summary>
    public double RopeTheta { get; set; } = 10000;

    public RopeStyle RopeStyle { get; set; } = RopeStyle.Interleaved;

    /// <summary>YaRN scaling factor; 1 turns YaRN off (DeepSeek-V2/V3 use 40).</summary>
    public double YarnFactor { get; set; } = 1;

    /// <summary>original_max_position_embeddings of YaRN (4096).</summary>
    public int YarnOriginalMaxPositions { get; set; } = 4096;

    public double YarnBetaFast { get; set; } = 32;
    public double YarnBetaSlow { get; set; } = 1;

    /// <summary>YaRN mscale (V2: 0.707, V3: 1).</summary>
    public double YarnMscale { get; set; } = 1;

    /// <summary>YaRN mscale_all_dim (V2: 0.707, V3: 1); enters the softmax scale squared.</summary>
    public double YarnMscaleAllDim { get; set; } = 1;

    /// <summary>Largest position a token may have; 0 derives YarnOriginalMaxPositions × max(1, YarnFactor).</summary>
    public int MaxPositions { get; set; }

    /// <summary>Tokens per page of the latent cache; a power of two ≥ 16 (FlashMLA uses 64).</summary>
    public int PageSize { get; set; } = 64;

    /// <summary>Epsilon of q_a_layernorm and kv_a_layernorm.</summary>
    public double RmsNormEpsilon { get; set; } = 1e-6;
}
