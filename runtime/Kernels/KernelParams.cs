using ILGPU;

namespace MlaGen.Kernels;

// One params struct per kernel, as FlashMLA does: every view and scalar a launch needs, by name.
// Row-major layouts; T = tokens in the call, H = heads. Dimensions that are constants live in the generated kernels.

/// <summary>y[t, o] = Σ_k x[t, k] · W[o, k] with W as BF16 <c>[out, in]</c>.</summary>
public struct ProjectionParams
{
    public ArrayView<float> Input;
    public ArrayView<ushort> Weight;
    public ArrayView<float> Output;
    public int Tokens;
}

/// <summary>In-place RMSNorm of each token's row, times a BF16 weight.</summary>
public struct RmsNormParams
{
    public ArrayView<float> Values;
    public ArrayView<ushort> Weight;
    public int Tokens;
}

/// <summary>Where each token of the call lives in the latent cache.</summary>
public struct CacheAddressing
{
    /// <summary>BF16 pages <c>[numPages, PageSize, 1, latent + rope]</c>.</summary>
    public ArrayView<ushort> Pages;
    /// <summary>int32 <c>[maxSequences, BlockTableStride]</c>: page index of each page of a sequence slot.</summary>
    public ArrayView<int> BlockTable;
    public int BlockTableStride;
    /// <summary>Cache slot (block-table row) of each token <c>[T]</c>.</summary>
    public ArrayView<int> TokenSlot;
    /// <summary>Position of each token in its sequence <c>[T]</c>; it sees cached positions 0..position.</summary>
    public ArrayView<int> TokenPosition;
}

/// <summary>kv_a output <c>[T, latent + rope]</c> → RMSNorm(c_kv), RoPE(k_pe) → BF16 cache rows.</summary>
public struct KvCacheWriteParams
{
    public ArrayView<float> KvLatent;
    public ArrayView<ushort> NormWeight;
    public CacheAddressing Cache;
    public int Tokens;
}

/// <summary>q <c>[T, H, nope + rope]</c> → absorbed query <c>[T, H, latent + rope]</c> = [W_UKᵀ·q_nope | RoPE(q_pe)].</summary>
public struct QueryAbsorbParams
{
    public ArrayView<float> Query;
    public ArrayView<ushort> KvUp;
    public ArrayView<int> TokenPosition;
    public ArrayView<float> AbsorbedQuery;
    public int Tokens;
}

/// <summary>
/// Split-KV absorbed attention: each (token, head, split) writes its normalised partial latent output
/// <c>[Splits, T·H, latent]</c> and log-sum-exp <c>[Splits, T·H]</c>.
/// </summary>
public struct AttentionParams
{
    public ArrayView<float> AbsorbedQuery;
    public CacheAddressing Cache;
    public ArrayView<float> PartialOutput;
    public ArrayView<float> PartialLse;
    public int Tokens;
    public int Splits;
}

/// <summary>Merges the splits: latent output <c>[T, H, latent]</c> and natural-log LSE <c>[T, H]</c>.</summary>
public struct CombineParams
{
    public ArrayView<float> PartialOutput;
    public ArrayView<float> PartialLse;
    public ArrayView<float> LatentOutput;
    public ArrayView<float> Lse;
    public int Tokens;
    public int Splits;
}

/// <summary>Per head o = W_UV · o_lat: latent output <c>[T, H, latent]</c> → head outputs <c>[T, H · v]</c>.</summary>
public struct ValueProjectionParams
{
    public ArrayView<float> LatentOutput;
    public ArrayView<ushort> KvUp;
    public ArrayView<float> HeadOutput;
    public int Tokens;
}

/// <summary>
/// Tensor-core decode attention (CUDA): one CTA per work item = (block of up to the kernel's rows of one sequence,
/// range of cached tokens). Writes each item's normalised partial output <c>[Items, rows, latent]</c> and LSE
/// <c>[Items, rows]</c>, or, for a block of one item, the final ones.
/// </summary>
public struct TensorCoreAttentionParams
{
    public ArrayView<float> AbsorbedQuery;
    public CacheAddressing Cache;
    /// <summary>Device address of <c>Cache.Pages[0]</c>: cp.async needs a raw global address.</summary>
    public long PagesAddress;
    /// <summary>Device address of <c>AbsorbedQuery[0]</c> (16-byte aligned), for vector loads of Q.</summary>
    public long QueryAddress;
    /// <summary>Per item, <see cref="WorkItemRecord.Ints"/> ints: its row block and cached token range, and the block's fields it starts from.</summary>
    public ArrayView<int> WorkItems;
    public ArrayView<float> PartialOutput;
    public ArrayView<float> PartialLse;
    /// <summary>Latent output <c>[T, H, latent]</c> and LSE <c>[T, H]</c>, for the rows of blocks that are not split.</summary>
    public ArrayView<float> LatentOutput;
    public ArrayView<float> Lse;
    public int Items;
    /// <summary>
    /// Device address of the plan's merge counters (two ints per block, zero between launches) when the plan's items are
    /// all resident at once and each split block merges itself (<see cref="SplitKvScheduler.Plan.MergesInPlace"/>); else 0.
    /// </summary>
    public long MergeCounters;
}

/// <summary>
/// One work item of <see cref="TensorCoreAttentionParams.WorkItems"/>: everything a CTA needs before its first cache copy in
/// one 32-byte sector, so that the start is one load and the block-table read instead of a chain through the block arrays
/// and the cache's token arrays.
/// </summary>
public static class WorkItemRecord
{
    /// <summary>The item's row block (its in-place merge counters are at 2 · block).</summary>
    public const int Block = 0;
    /// <summary>First cached token (a multiple of the tiling's tokens).</summary>
    public const int Begin = 1;
    /// <summary>One past the last cached token: no further than the block's last token sees.</summary>
    public const int End = 2;
    /// <summary>The block's sequence's cache slot: its row of the block table.</summary>
    public const int Slot = 3;
    /// <summary>The block's first query row (token · H + head) and row count.</summary>
    public const int FirstRow = 4;
    public const int Rows = 5;
    /// <summary>The block's items and its first item (1 item: the item writes the final output).</summary>
    public const int BlockItems = 6;
    public const int BlockFirstItem = 7;
    /// <summary>Ints per record.</summary>
    public const int Ints = 8;
}

/// <summary>Merges each row block's items into latent output <c>[T, H, latent]</c> and LSE <c>[T, H]</c>.</summary>
public struct TensorCoreCombineParams
{
    public ArrayView<float> PartialOutput;
    public ArrayView<float> PartialLse;
    public ArrayView<int> BlockFirstRow;
    public ArrayView<int> BlockRows;
    public ArrayView<int> BlockFirstItem;
    public ArrayView<int> BlockItems;
    public ArrayView<float> LatentOutput;
    public ArrayView<float> Lse;
    public int Blocks;
    /// <summary>Rows each item's partial output holds: the attention kernel's <see cref="DecodeTiling.Rows"/>.</summary>
    public int BlockCapacity;
    /// <summary>The most items any block has: sets how many warps merge each row.</summary>
    public int MaxBlockItems;
    /// <summary>1 when the attention kernel merged every split block itself: the combine has nothing left to do.</summary>
    public int MergedInPlace;
}

/// <summary>
/// Expanded (non-absorbed) form, query side: q <c>[T, H, nope + rope]</c> fp32 → per-head query
/// <c>[T, H, nope + rope]</c> as BF16, [q_nope | RoPE(q_pe)] (the softmax scale is applied by the attention kernel).
/// </summary>
public struct HeadQueryParams
{
    public ArrayView<float> Query;
    public ArrayView<int> TokenPosition;
    public ArrayView<ushort> HeadQuery;
    public int Tokens;
}

/// <summary>
/// Expanded form, key side: every key's latent row c_kv (read from the cache) through kv_b_proj, per head
/// K_nope = W_UK·c_kv and V = W_UV·c_kv, written BF16 and head-major <c>[H, Keys, nope]</c> and <c>[H, Keys, v]</c>.
/// The keys' shared RoPE part stays in the cache: the attention kernel reads it from there.
/// </summary>
public struct KeyValueExpandParams
{
    public ArrayView<ushort> Pages;
    /// <summary>Device address of <c>Pages[0]</c> (cp.async needs raw global addresses).</summary>
    public long PagesAddress;
    /// <summary>Cache row of each key, <c>page · PageSize + offset</c> <c>[Keys]</c>.</summary>
    public ArrayView<int> KeyCacheRow;
    /// <summary>kv_b_proj <c>[H · (nope + v), latent]</c>.</summary>
    public ArrayView<ushort> KvUp;
    public long KvUpAddress;
    public ArrayView<ushort> KeyNope;
    public ArrayView<ushort> Value;
    public int Keys;
}

/// <summary>
/// Expanded-form causal attention for prefill and chunked prefill: each work item is one head of a query tile (up to
/// 64 consecutive new tokens of one sequence). A query at position p sees its sequence's keys 0..p: the cached prefix
/// and the chunk itself. Writes the head outputs <c>[T, H, v]</c> (what o_proj reads) and the natural-log LSE <c>[T, H]</c>.
/// </summary>
public struct ExpandedAttentionParams
{
    public ArrayView<ushort> HeadQuery;
    public ArrayView<ushort> KeyNope;
    public long KeyNopeAddress;
    public ArrayView<ushort> Value;
    public long ValueAddress;
    /// <summary>The cache, for the keys' RoPE part (columns latent..latent + rope of each key's row).</summary>
    public ArrayView<ushort> Pages;
    public long PagesAddress;
    public ArrayView<int> KeyCacheRow;
    /// <summary>Row count of the head-major key arrays (their per-head stride).</summary>
    public int Keys;
    /// <summary>Per query tile: first token of the call, token count (≤ the set's ExpandedQueryTile), position of its first token, and where its sequence's keys start.</summary>
    public ArrayView<int> TileFirstToken;
    public ArrayView<int> TileTokens;
    public ArrayView<int> TileFirstPosition;
    public ArrayView<int> TileKeyStart;
    public int Tiles;
    public ArrayView<float> HeadOutput;
    /// <summary>HeadOutput's device address: the tensor-core kernels store O straight from their PTX registers.</summary>
    public long HeadOutputAddress;
    public ArrayView<float> Lse;
}
