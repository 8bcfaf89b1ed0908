namespace MlaGen.Generator.Model;

/// <summary>The largest shapes the generated kernels handle, and why (MLA007 quotes these).</summary>
internal static class KernelLimits
{
    public const int MaxLatentRank = 1024;
    public const string LatentReason = "each of the 32 lanes of an attention warp keeps latentRank/32 query and output values in registers";
    public const int MaxRopeDim = 256;
    public const string RopeReason = "RoPE is unrolled into one statement pair per rotated pair";
    public const int MaxHeadDim = 512;
    public const string HeadDimReason = "per-head projections unroll over the head dimension";
    public const int MaxHeads = 1024;
    public const string HeadsReason = "query rows (token x head) are indexed in a 32-bit grid";
    public const int MaxModelDim = 65536;
    public const string ModelDimReason = "projection dot products unroll the input dimension by 8 with a constant trip count";
    public const int MaxPositions = 1 << 24;
    public const string WeightReason = "weights are indexed with 32-bit integers inside kernels";

    /// <summary>The tensor-core decode kernel tiles the latent by 64 columns and the RoPE part by 16.</summary>
    public static string? WhyNoTensorCoreDecode(MlaShapeSpec s)
    {
        if (s.LatentRank % 64 != 0 || s.LatentRank > 512)
            return $"it needs latentRank a multiple of 64 up to 512 (is {s.LatentRank})";
        if (s.RopeDim % 16 != 0 || s.RopeDim > 64)
            return $"it needs ropeDim a multiple of 16 up to 64 (is {s.RopeDim})";
        return null;
    }

    /// <summary>
    /// The Hopper decode kernel on top of the tensor-core one: it keeps cache rows in 128-byte swizzled boxes of 64 values,
    /// so latent + rope must be a multiple of 64 (DeepSeek's 576 is), and each warpgroup's half of the latent output must be
    /// whole boxes (latent a multiple of 128). Other shapes keep the mma.sync kernel on Hopper too.
    /// </summary>
    public static bool FitsWarpgroupDecode(MlaShapeSpec s) =>
        WhyNoTensorCoreDecode(s) is null && s.CacheRowValues % 64 == 0 && s.LatentRank % 128 == 0;

    /// <summary>
    /// The Hopper prefill attention on top of the tensor-core one: it keeps K (nope, then rope) and V tiles in 128-byte
    /// swizzled boxes of 64 values, so nope, rope and v must each be whole boxes (DeepSeek's 128, 64, 128 are). Other shapes
    /// keep the mma.sync kernel on Hopper too.
    /// </summary>
    public static bool FitsWarpgroupPrefill(MlaShapeSpec s) =>
        WhyNoTensorCorePrefill(s) is null && s.NopeHeadDim % 64 == 0 && s.RopeDim % 64 == 0 && s.VHeadDim % 64 == 0;

    /// <summary>
    /// The tensor-core prefill kernels. The attention keeps a warp's 16 query rows as bf16 A fragments ((nope + rope)/16
    /// k-steps, at most 12) and its output as v/8 accumulator tiles (at most 16), and copies K and V in 16-byte chunks.
    /// The kv_b_proj expansion stages the latent 32 columns at a time and tiles kv_b_proj's H·(nope + v) rows by 128.
    /// </summary>
    public static string? WhyNoTensorCorePrefill(MlaShapeSpec s)
    {
        if (s.NopeHeadDim % 16 != 0 || s.RopeDim % 16 != 0 || s.QHeadDim > 192)
            return $"it needs nopeHeadDim and ropeDim multiples of 16 with nope + rope up to 192 (is {s.NopeHeadDim} + {s.RopeDim})";
        if (s.VHeadDim % 16 != 0 || s.VHeadDim > 128)
            return $"it needs vHeadDim a multiple of 16 up to 128 (is {s.VHeadDim})";
        if (s.LatentRank % 32 != 0)
            return $"it needs latentRank a multiple of 32 (is {s.LatentRank})";
        if (s.Heads * (s.NopeHeadDim + s.VHeadDim) % 128 != 0)
            return $"it needs heads * (nopeHeadDim + vHeadDim) a multiple of 128 (is {s.Heads * (s.NopeHeadDim + s.VHeadDim)})";
        return null;
    }
}
