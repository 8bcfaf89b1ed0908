using System.Collections.Generic;

namespace MlaGen.Reference;

/// <summary>The query of one token: no-RoPE part and RoPE part (after rotation), both head-major.</summary>
/// <param name="Nope">[Heads · NopeHeadDim]: head h at h·NopeHeadDim.</param>
/// <param name="Rope">[Heads · RopeDim]: head h at h·RopeDim, rotated at the token's position.</param>
public sealed record ReferenceQuery(double[] Nope, double[] Rope);

/// <summary>What one token contributes to the latent cache.</summary>
/// <param name="CKv">[LatentRank]: RMS-normed latent, times kv_a_layernorm.weight.</param>
/// <param name="KPe">[RopeDim]: the RoPE key shared by all heads, rotated at the token's position.</param>
public sealed record ReferenceCacheRow(double[] CKv, double[] KPe);

/// <summary>Attention of one query token over its visible keys.</summary>
/// <param name="Heads">[Heads · VHeadDim]: o_h = Σ p·V_h, the input of o_proj.</param>
/// <param name="Lse">[Heads]: natural log of Σ exp(scaled score), as FlashMLA returns it.</param>
/// <param name="Latent">[Heads · LatentRank]: Σ p·c_kv per head, what an absorbed kernel holds before W_UV.</param>
public sealed record ReferenceAttention(double[] Heads, double[] Lse, double[] Latent);

/// <summary>One causal layer over one sequence.</summary>
/// <param name="TokenCount">T, the number of tokens (positions 0 .. T-1).</param>
/// <param name="Output">[T · DModel] row-major: the layer output of each token.</param>
/// <param name="Lse">[T · Heads] row-major: log-sum-exp of each token and head.</param>
/// <param name="CacheRows">Per token, the c_kv and k_pe it wrote to the cache (double, before any rounding).</param>
public sealed record ReferenceForward(int TokenCount, double[] Output, double[] Lse, IReadOnlyList<ReferenceCacheRow> CacheRows);
