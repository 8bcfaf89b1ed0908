using System;
using ILGPU.Runtime;

namespace MlaGen.Kernels;

/// <summary>
/// The kernels of one [MlaConfig] shape, compiled for one accelerator. The generator writes the implementation;
/// <see cref="MlaGen.MlaLayer"/> drives it. A launch with zero tokens does nothing.
/// </summary>
public abstract class MlaKernelSet
{
    public abstract MlaSpec Spec { get; }

    /// <summary>The form this set runs (never <see cref="MlaKernelPath.Auto"/>).</summary>
    public abstract MlaKernelPath Path { get; }

    /// <summary>Resolves <see cref="MlaKernelPath.Auto"/> for an accelerator.</summary>
    public static MlaKernelPath Resolve(MlaKernelPath path, Accelerator accelerator) =>
        path != MlaKernelPath.Auto ? path
        : accelerator.AcceleratorType == AcceleratorType.CPU ? MlaKernelPath.Serial : MlaKernelPath.Warp;

    /// <summary>q_proj (no q-LoRA) or q_b_proj (q-LoRA): → q <c>[T, H·(nope + rope)]</c>.</summary>
    public abstract void QueryProjection(AcceleratorStream stream, in ProjectionParams p);

    /// <summary>q_a_proj: x → <c>[T, qLatent]</c>. Only for shapes with q-LoRA.</summary>
    public abstract void QueryLatentProjection(AcceleratorStream stream, in ProjectionParams p);

    /// <summary>q_a_layernorm in place on <c>[T, qLatent]</c>. Only for shapes with q-LoRA.</summary>
    public abstract void QueryLatentNorm(AcceleratorStream stream, in RmsNormParams p);

    /// <summary>kv_a_proj_with_mqa: x → <c>[T, latent + rope]</c>.</summary>
    public abstract void KvLatentProjection(AcceleratorStream stream, in ProjectionParams p);

    public abstract void KvCacheWrite(AcceleratorStream stream, in KvCacheWriteParams p);

    public abstract void QueryAbsorb(AcceleratorStream stream, in QueryAbsorbParams p);

    public abstract void Attention(AcceleratorStream stream, in AttentionParams p);

    public abstract void Combine(AcceleratorStream stream, in CombineParams p);

    public abstract void ValueProjection(AcceleratorStream stream, in ValueProjectionParams p);

    /// <summary>o_proj: head outputs <c>[T, H·v]</c> → <c>[T, dModel]</c>.</summary>
    public abstract void OutputProjection(AcceleratorStream stream, in ProjectionParams p);

    /// <summary>
    /// The fastest decode kernel this set holds, which every decode call runs (a Warpgroup set holds the mma.sync kernel
    /// too, for <c>MLAGEN_WGMMA=0</c> comparisons). On the H100 the wgmma kernel wins even with 16 query rows in its 64-row
    /// tile: H = 16, s_q = 1 runs 0.25 ms on it, 0.32 ms on mma.sync (docs/performance.md, decode v6).
    /// </summary>
    public virtual DecodeAttentionKind DecodeForm => DecodeAttentionKind.General;

    /// <summary>True when this set holds a tensor-core decode kernel (mma.sync or wgmma) with its split-KV combine.</summary>
    public bool HasTensorCoreDecode => DecodeForm is DecodeAttentionKind.TensorCore or DecodeAttentionKind.Warpgroup;

    /// <summary>A tensor-core decode kernel's work-item shape: what <see cref="SplitKvScheduler"/> plans for.</summary>
    public virtual DecodeTiling TilingOf(DecodeAttentionKind kernel) =>
        throw new NotSupportedException($"{Spec.Name} has no {kernel} decode kernel on this accelerator.");

    /// <summary>Runs <paramref name="kernel"/> (TensorCore or Warpgroup) over a plan made with <see cref="TilingOf"/> of it.</summary>
    public virtual void TensorCoreAttention(AcceleratorStream stream, in TensorCoreAttentionParams p, DecodeAttentionKind kernel) =>
        throw new NotSupportedException($"{Spec.Name} has no {kernel} decode kernel on this accelerator.");

    public virtual void TensorCoreCombine(AcceleratorStream stream, in TensorCoreCombineParams p) =>
        throw new NotSupportedException($"{Spec.Name} has no tensor-core decode kernel on this accelerator.");

    /// <summary>Query tokens per work item of the expanded (non-absorbed) attention on this set.</summary>
    public virtual int ExpandedQueryTile => 64;

    /// <summary>Keys per work item of <see cref="KeyValueExpand"/>: the key arrays are allocated in multiples of it.</summary>
    public const int ExpandedKeyTile = 64;

    /// <summary>Which kernels run the expanded form on this set, or <see cref="ExpandedAttentionKind.None"/>.</summary>
    public virtual ExpandedAttentionKind ExpandedForm => ExpandedAttentionKind.None;

    public virtual void HeadQuery(AcceleratorStream stream, in HeadQueryParams p) =>
        throw new NotSupportedException($"{Spec.Name} has no expanded-attention kernels on this accelerator.");

    public virtual void KeyValueExpand(AcceleratorStream stream, in KeyValueExpandParams p) =>
        throw new NotSupportedException($"{Spec.Name} has no expanded-attention kernels on this accelerator.");

    public virtual void ExpandedAttention(AcceleratorStream stream, in ExpandedAttentionParams p) =>
        throw new NotSupportedException($"{Spec.Name} has no expanded-attention kernels on this accelerator.");
}

/// <summary>How a kernel set runs the absorbed (decode) attention.</summary>
public enum DecodeAttentionKind
{
    /// <summary>The general kernel (one warp or thread per query row): every accelerator and shape.</summary>
    General = 0,

    /// <summary>bf16 mma.sync, 16 query rows per CTA, on a CUDA GPU.</summary>
    TensorCore = 1,

    /// <summary>Hopper's warpgroup MMA (wgmma, sm_90a), 64 query rows per CTA: the fast path on an H100.</summary>
    Warpgroup = 2,
}

/// <summary>The work item of a tensor-core decode kernel.</summary>
/// <param name="Rows">Query rows (token × head of one sequence) per block: the partial output holds this many per item.</param>
/// <param name="Tokens">Cached tokens per tile: items cover multiples of it.</param>
/// <param name="CtasPerSm">CTAs that fit on one SM at once: the scheduler fills SMs × this.</param>
/// <param name="MergeSlices">Slices of a row that a split block is merged by (each a share of the latent columns).</param>
/// <param name="MergeWarps">Warps of the kernel's CTA: the most row slices one item merges side by side in place.</param>
public readonly record struct DecodeTiling(int Rows, int Tokens, int CtasPerSm, int MergeSlices, int MergeWarps);

/// <summary>How a kernel set runs the expanded (non-absorbed) attention form.</summary>
public enum ExpandedAttentionKind
{
    /// <summary>Not available: the layer runs every call in the absorbed form.</summary>
    None = 0,

    /// <summary>One thread per query row (the CPU accelerator): correct, for tests and small shapes.</summary>
    Serial = 1,

    /// <summary>bf16 mma.sync kernels on a CUDA GPU.</summary>
    TensorCore = 2,

    /// <summary>The attention on Hopper's warpgroup MMA (wgmma, sm_90a), the expansion on mma.sync: the fast path on an H100.</summary>
    Warpgroup = 3,
}

/// <summary>Which form of the row-cooperative kernels (norms, cache write, absorb, attention, combine) a kernel set runs.</summary>
public enum MlaKernelPath
{
    /// <summary>Warp on CUDA, serial on the CPU accelerator.</summary>
    Auto = 0,

    /// <summary>One warp of 32 lanes per row, reductions by shuffle: the GPU form.</summary>
    Warp = 1,

    /// <summary>One thread per row, no shuffles: the CPU accelerator turns every shuffle into an OS-thread barrier.</summary>
    Serial = 2,
}

/// <summary>What an <see cref="ExpandedAttentionKind"/> says about the hardware it runs on.</summary>
public static class ExpandedAttentionKindExtensions
{
    /// <summary>True for the CUDA tensor-core kinds (mma.sync or wgmma): the ones fast enough to compete in the form rule.</summary>
    public static bool RunsOnTensorCores(this ExpandedAttentionKind kind) =>
        kind is ExpandedAttentionKind.TensorCore or ExpandedAttentionKind.Warpgroup;
}
