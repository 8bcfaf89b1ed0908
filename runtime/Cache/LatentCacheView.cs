using ILGPU;

namespace MlaGen.Cache;

/// <summary>
/// What an attention kernel needs to read a <see cref="LatentCache"/>; a plain struct of views, so it can be a
/// kernel argument. Token <c>t</c> of the sequence in slot <c>s</c> has its row of <see cref="RowValues"/> BF16
/// values at <c>Pages[(BlockTable[s * MaxPagesPerSequence + t / PageSize] * PageSize + t % PageSize) * RowValues]</c>,
/// valid for <c>t &lt; Lengths[s]</c> (compute the offset in <c>long</c>: large caches pass 2^31 values).
/// </summary>
/// <param name="Pages">FlashMLA layout <c>[numPages, PageSize, 1, RowValues]</c>, row = <c>[c_kv (latent) | k_pe (rope)]</c>.</param>
/// <param name="BlockTable">Int32 <c>[maxSequences, MaxPagesPerSequence]</c>, row-major; unused entries are <see cref="LatentCache.UnusedBlock"/>.</param>
/// <param name="Lengths">Int32 <c>[maxSequences]</c>: tokens stored per slot, 0 for free slots.</param>
/// <param name="MaxPagesPerSequence">Row stride of <paramref name="BlockTable"/>.</param>
/// <param name="PageSize">Tokens per page.</param>
/// <param name="RowValues">Values per token row: latent + rope.</param>
public readonly record struct LatentCacheView(
    ArrayView<ushort> Pages,
    ArrayView<int> BlockTable,
    ArrayView<int> Lengths,
    int MaxPagesPerSequence,
    int PageSize,
    int RowValues);
