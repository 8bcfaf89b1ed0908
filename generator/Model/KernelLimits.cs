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
    /// The tensor-core kv_b_proj expansion stages the latent 32 columns at a time, tiles kv_b_proj's H·(nope + v) rows
    /// by 128 per CTA with n-tiles of 8 that must not straddle a head's K_nope/V boundary, and cp.async-copies cache
    /// rows in 16-byte chunks.
    /// </summary>
    public static string? WhyNoTensorCoreExpand(MlaShapeSpec s)
    {
        if (s.LatentRank % 32 != 0)
            return $"it needs latentRank a multiple of 32 (is {s.LatentRank})";
        if (s.RopeDim % 8 != 0)
            return $"it needs ropeDim a multiple of 8, so that cache rows are 16-byte aligned (is {s.RopeDim})";
        if (s.NopeHeadDim % 8 != 0 || s.VHeadDim % 8 != 0)
            return $"it needs nopeHeadDim and vHeadDim multiples of 8 (are {s.NopeHeadDim} and {s.VHeadDim})";
        if (s.Heads * (s.NopeHeadDim + s.VHeadDim) % 128 != 0)
            return $"it needs heads * (nopeHeadDim + vHeadDim) a multiple of 128 (is {s.Heads * (s.NopeHeadDim + s.VHeadDim)})";
        return null;
    }
}
