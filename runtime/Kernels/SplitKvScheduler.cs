using System;
using System.Collections.Generic;
using System.Linq;
using ILGPU.Runtime;

namespace MlaGen.Kernels;

/// <summary>
/// Divides decode attention into work items so that variable lengths and a single long sequence still fill every SM.
/// Each row block (up to the kernel's rows, of one sequence) costs its tiles; each item adds a fixed overhead. For a few
/// item sizes around FlashMLA's Σ(tiles + overhead) / slots, the blocks are cut into equal runs of whole tiles, the items
/// are ordered longest first, and the GPU's greedy dispatch of that order onto the resident CTA slots is simulated; the
/// plan that finishes first wins (on a tie, the one with fewer items, which the combine reads back).
/// </summary>
public static class SplitKvScheduler
{
    /// <summary>
    /// Fixed cost per item (loading Q, filling the copy pipeline, writing the partial output) in the tiling's token units
    /// (<see cref="DecodeTiling.Tokens"/>: a 64-token step on the wgmma kernel, a 16-token tile on mma.sync).
    /// </summary>
    public const int ItemOverheadTiles = 4;

    /// <summary>The most items one row block is cut into (one long sequence over every CTA slot of a large GPU).</summary>
    public const int MaxItemsPerBlock = 512;

    /// <summary>Item sizes tried, as multiples of the even share: fewer, larger items down to several per slot.</summary>
    private static readonly double[] ItemsPerSlot = [0.5, 0.75, 1, 1.25, 1.5, 2, 3, 4];

    /// <summary>
    /// Items (row block, token range [begin, end)) in launch order, blocks (first row, rows, first item, items) longest
    /// item first, the heads per token the rows were counted with, and whether the split blocks merge in place
    /// (<see cref="MergesInPlace"/>).
    /// </summary>
    public sealed record Plan(
        int[] ItemBlock, int[] ItemBegin, int[] ItemEnd,
        int[] BlockFirstRow, int[] BlockRows, int[] BlockFirstItem, int[] BlockItems, int Heads, bool MergesInPlace)
    {
        public int Items => ItemBlock.Length;
        public int Blocks => BlockFirstRow.Length;
        public int MaxBlockItems => BlockItems.Length == 0 ? 0 : BlockItems.Max();

        /// <summary>
        /// The attention and combine parameters of this plan. <paramref name="views"/> names the query, cache and output
        /// buffers (its plan fields and raw addresses are filled here); <paramref name="tokenSlot"/> and
        /// <paramref name="tokenPosition"/> are the call's tokens' cache slots and positions, as the cache addressing has
        /// them on the device; <paramref name="upload"/> puts each of the plan's int arrays on the device, wherever the
        /// caller keeps them.
        /// </summary>
        public (TensorCoreAttentionParams Attention, TensorCoreCombineParams Combine) ToParams(
            TensorCoreAttentionParams views, int blockRows, ReadOnlySpan<int> tokenSlot, ReadOnlySpan<int> tokenPosition,
            Func<PlanArray, int[], ILGPU.ArrayView<int>> upload)
        {
            ArgumentNullException.ThrowIfNull(upload);
            int tokens = Blocks == 0 ? 0 : Enumerable.Range(0, Blocks).Max(b => (BlockFirstRow[b] + BlockRows[b] - 1) / Heads) + 1;
            if (tokenSlot.Length < tokens)
                throw new ArgumentException($"The plan's rows are {tokens} tokens of {Heads} heads, but {tokenSlot.Length} token slots were given.", nameof(tokenSlot));
            if (tokenPosition.Length < tokens)
                throw new ArgumentException($"The plan's rows are {tokens} tokens of {Heads} heads, but {tokenPosition.Length} token positions were given.", nameof(tokenPosition));
            long queryAddress = views.AbsorbedQuery.LoadEffectiveAddressAsPtr().ToInt64();
            if (queryAddress % 16 != 0)
                throw new ArgumentException($"The absorbed query must start 16-byte aligned for vector loads; it starts at 0x{queryAddress:X}.", nameof(views));
            var firstRow = upload(PlanArray.BlockFirstRow, BlockFirstRow);
            var rows = upload(PlanArray.BlockRows, BlockRows);
            var items = upload(PlanArray.BlockItems, BlockItems);
            var firstItem = upload(PlanArray.BlockFirstItem, BlockFirstItem);
            long mergeCounters = MergesInPlace
                ? upload(PlanArray.MergeCounters, new int[2 * Blocks]).LoadEffectiveAddressAsPtr().ToInt64()
                : 0;
            var attention = views with
            {
                PagesAddress = views.Cache.Pages.LoadEffectiveAddressAsPtr().ToInt64(),
                QueryAddress = queryAddress,
                WorkItems = upload(PlanArray.WorkItems, WorkItemRecords(tokenSlot, tokenPosition)),
                Items = Items,
                MergeCounters = mergeCounters,
            };
            var combine = new TensorCoreCombineParams
            {
                PartialOutput = views.PartialOutput,
                PartialLse = views.PartialLse,
                BlockFirstRow = firstRow,
                BlockRows = rows,
                BlockFirstItem = firstItem,
                BlockItems = items,
                LatentOutput = views.LatentOutput,
                Lse = views.Lse,
                Blocks = Blocks,
                BlockCapacity = blockRows,
                MaxBlockItems = MaxBlockItems,
                MergedInPlace = MergesInPlace ? 1 : 0,
            };
            return (attention, combine);
        }

        /// <summary>
        /// Each item as a <see cref="WorkItemRecord"/>: its block's fields copied in, its end clamped to what the block's last
        /// token sees (no row of the block sees further: a prompt's early blocks stop early), its slot that token's.
        /// </summary>
        private int[] WorkItemRecords(ReadOnlySpan<int> tokenSlot, ReadOnlySpan<int> tokenPosition)
        {
            var records = new int[Items * WorkItemRecord.Ints];
            for (int i = 0; i < Items; i++)
            {
                int b = ItemBlock[i];
                int lastToken = (BlockFirstRow[b] + BlockRows[b] - 1) / Heads;
                var record = records.AsSpan(i * WorkItemRecord.Ints, WorkItemRecord.Ints);
                record[WorkItemRecord.Block] = b;
                record[WorkItemRecord.Begin] = ItemBegin[i];
                record[WorkItemRecord.End] = Math.Min(ItemEnd[i], tokenPosition[lastToken] + 1);
                record[WorkItemRecord.Slot] = tokenSlot[lastToken];
                record[WorkItemRecord.FirstRow] = BlockFirstRow[b];
                record[WorkItemRecord.Rows] = BlockRows[b];
                record[WorkItemRecord.BlockItems] = BlockItems[b];
                record[WorkItemRecord.BlockFirstItem] = BlockFirstItem[b];
            }
            return records;
        }
    }

    /// <summary>The int arrays of a <see cref="Plan"/> that the kernels read (and the in-place merge's counters, uploaded as zeros).</summary>
    public enum PlanArray { WorkItems, BlockFirstRow, BlockRows, BlockFirstItem, BlockItems, MergeCounters }

    /// <param name="sequenceTokens">New tokens per sequence in call order (their rows are contiguous, token-major).</param>
    /// <param name="lastPosition">Position of the last new token of each sequence: the block sees up to it.</param>
    /// <param name="heads">Heads per token.</param>
    /// <param name="tiling">The kernel's rows per block and tokens per tile.</param>
    /// <param name="targetItems">CTA slots of the device (SMs × resident CTAs per SM).</param>
    /// <remarks>Blocks are listed longest item first, not in row order: each names its own first row and items.</remarks>
    public static Plan Build(ReadOnlySpan<int> sequenceTokens, ReadOnlySpan<int> lastPosition, int heads, DecodeTiling tiling, int targetItems)
    {
        int tile = tiling.Tokens, blockRows = tiling.Rows;
        if (tile <= 0)
            throw new ArgumentOutOfRangeException(nameof(tiling), tile, "The tile must hold at least one token.");
        if (blockRows <= 0)
            throw new ArgumentOutOfRangeException(nameof(tiling), blockRows, "A block must hold at least one query row.");
        int slots = Math.Max(1, targetItems);
        var firstRows = new List<int>();
        var rowsOfBlock = new List<int>();
        var tilesOfBlock = new List<int>();
        int row = 0;
        for (int s = 0; s < sequenceTokens.Length; s++)
        {
            int rows = sequenceTokens[s] * heads;
            int tiles = (lastPosition[s] + 1 + tile - 1) / tile;
            for (int first = 0; first < rows; first += blockRows)
            {
                firstRows.Add(row + first);
                rowsOfBlock.Add(Math.Min(blockRows, rows - first));
                tilesOfBlock.Add(tiles);
            }
            row += rows;
        }

        long totalCost = 0;
        foreach (int t in tilesOfBlock)
            totalCost += t + ItemOverheadTiles;
        int[]? best = null, bestOrder = null;
        long bestFinish = long.MaxValue;
        int bestItems = int.MaxValue;
        foreach (double perSlot in ItemsPerSlot)
        {
            double costPerItem = Math.Max(1.0, totalCost / (slots * perSlot));
            var tilesPerItem = new int[tilesOfBlock.Count];
            int items = 0;
            for (int b = 0; b < tilesPerItem.Length; b++)
            {
                int tiles = tilesOfBlock[b];
                int splits = (int)Math.Clamp(Math.Round((tiles + ItemOverheadTiles) / costPerItem), 1, Math.Min(MaxItemsPerBlock, tiles));
                tilesPerItem[b] = (tiles + splits - 1) / splits;
                items += (tiles + tilesPerItem[b] - 1) / tilesPerItem[b];
            }
            var candidateOrder = LongestFirst(tilesPerItem);
            long finish = SimulatedFinish(tilesOfBlock, tilesPerItem, candidateOrder, slots);
            if (finish < bestFinish || (finish == bestFinish && items < bestItems))
                (best, bestOrder, bestFinish, bestItems) = (tilesPerItem, candidateOrder, finish, items);
        }

        var order = bestOrder!;
        var itemBlock = new List<int>();
        var itemBegin = new List<int>();
        var itemEnd = new List<int>();
        int blocks = order.Length;
        var blockFirstRow = new int[blocks];
        var blockRowCount = new int[blocks];
        var blockFirstItem = new int[blocks];
        var blockItems = new int[blocks];
        for (int b = 0; b < blocks; b++)
        {
            int source = order[b], tiles = tilesOfBlock[source], perItem = best![source];
            blockFirstRow[b] = firstRows[source];
            blockRowCount[b] = rowsOfBlock[source];
            blockFirstItem[b] = itemBlock.Count;
            for (int begin = 0; begin < tiles; begin += perItem)
            {
                itemBlock.Add(b);
                itemBegin.Add(begin * tile);
                itemEnd.Add(Math.Min(tiles, begin + perItem) * tile);
            }
            blockItems[b] = itemBlock.Count - blockFirstItem[b];
        }
        return new Plan(itemBlock.ToArray(), itemBegin.ToArray(), itemEnd.ToArray(),
            blockFirstRow, blockRowCount, blockFirstItem, blockItems, heads, MergeInPlace(itemBlock.Count, blockRowCount, blockItems, tiling, slots));
    }

    /// <summary>
    /// Whether each split block is merged by its own items at the end of the attention kernel instead of by a combine
    /// launch: when every item has a CTA slot at once (so the items that wait for their block's last part never keep it
    /// from starting; other streams' work only delays them) and no item has more row slices to merge than its CTA has warps
    /// (one group of warps per slice, all in one round; more would be merged one round after another, slower than the
    /// combine's CTAs side by side).
    /// </summary>
    private static bool MergeInPlace(int items, int[] blockRows, int[] blockItems, DecodeTiling tiling, int slots)
    {
        if (items > slots || tiling.MergeSlices <= 0 || tiling.MergeWarps <= 0)
            return false;
        bool split = false;
        for (int b = 0; b < blockRows.Length; b++)
        {
            if (blockItems[b] == 1)
                continue;
            split = true;
            if ((long)blockRows[b] * tiling.MergeSlices > (long)blockItems[b] * tiling.MergeWarps)
                return false;
        }
        return split;
    }

    /// <summary>Block indices by descending tiles per item (stable): the GPU starts CTAs roughly in index order.</summary>
    private static int[] LongestFirst(int[] tilesPerItem)
    {
        var order = new int[tilesPerItem.Length];
        for (int b = 0; b < order.Length; b++)
            order[b] = b;
        Array.Sort(order, (x, y) => tilesPerItem[x] != tilesPerItem[y] ? tilesPerItem[y].CompareTo(tilesPerItem[x]) : x.CompareTo(y));
        return order;
    }

    /// <summary>When the last slot finishes if each item, in <paramref name="order"/>, starts on the slot that frees first.</summary>
    private static long SimulatedFinish(List<int> tilesOfBlock, int[] tilesPerItem, int[] order, int slots)
    {
        var free = new PriorityQueue<int, long>(slots);
        for (int s = 0; s < slots; s++)
            free.Enqueue(s, 0);
        long finish = 0;
        foreach (int b in order)
        {
            int tiles = tilesOfBlock[b], perItem = tilesPerItem[b];
            for (int begin = 0; begin < tiles; begin += perItem)
            {
                free.TryDequeue(out int slot, out long at);
                long done = at + Math.Min(perItem, tiles - begin) + ItemOverheadTiles;
                finish = Math.Max(finish, done);
                free.Enqueue(slot, done);
            }
        }
        return finish;
    }
}
