using System;
using System.Collections.Generic;

namespace MlaGen.Kernels;

/// <summary>
/// Divides decode attention into work items of roughly equal cost so variable lengths still fill every SM:
/// each row block (up to the kernel's rows, of one sequence) costs its tiles plus a fixed overhead, and is split into as many
/// token ranges as its share of the total calls for (FlashMLA's rule: Σ(pages + overhead) over the SM parts).
/// </summary>
public static class SplitKvScheduler
{
    /// <summary>Tiles' worth of fixed cost per item (loading Q, writing the partial output, the combine).</summary>
    public const int ItemOverheadTiles = 4;
    public const int MaxItemsPerBlock = 64;

    public sealed record Plan(
        int[] ItemBlock, int[] ItemBegin, int[] ItemEnd,
        int[] BlockFirstRow, int[] BlockRows, int[] BlockFirstItem, int[] BlockItems)
    {
        public int Items => ItemBlock.Length;
        public int Blocks => BlockFirstRow.Length;
    }

    /// <param name="sequenceTokens">New tokens per sequence in call order (their rows are contiguous, token-major).</param>
    /// <param name="lastPosition">Position of the last new token of each sequence: the block sees up to it.</param>
    /// <param name="heads">Heads per token.</param>
    /// <param name="tiling">The kernel's rows per block and tokens per tile.</param>
    /// <param name="targetItems">Items that fill the device (SMs × resident CTAs per SM).</param>
    public static Plan Build(ReadOnlySpan<int> sequenceTokens, ReadOnlySpan<int> lastPosition, int heads, DecodeTiling tiling, int targetItems)
    {
        int tile = tiling.Tokens, blockRows = tiling.Rows;
        if (tile <= 0)
            throw new ArgumentOutOfRangeException(nameof(tiling), tile, "The tile must hold at least one token.");
        if (blockRows <= 0)
            throw new ArgumentOutOfRangeException(nameof(tiling), blockRows, "A block must hold at least one query row.");
        var blockFirstRow = new List<int>();
        var rowsOfBlock = new List<int>();
        var blockTiles = new List<int>();
        int row = 0;
        for (int s = 0; s < sequenceTokens.Length; s++)
        {
            int rows = sequenceTokens[s] * heads;
            int tiles = (lastPosition[s] + 1 + tile - 1) / tile;
            for (int first = 0; first < rows; first += blockRows)
            {
                blockFirstRow.Add(row + first);
                rowsOfBlock.Add(Math.Min(blockRows, rows - first));
                blockTiles.Add(tiles);
            }
            row += rows;
        }

        long totalCost = 0;
        foreach (int t in blockTiles)
            totalCost += t + ItemOverheadTiles;
        long costPerItem = Math.Max(1, (totalCost + Math.Max(1, targetItems) - 1) / Math.Max(1, targetItems));

        var itemBlock = new List<int>();
        var itemBegin = new List<int>();
        var itemEnd = new List<int>();
        var blockFirstItem = new int[blockTiles.Count];
        var blockItems = new int[blockTiles.Count];
        for (int b = 0; b < blockTiles.Count; b++)
        {
            int tiles = blockTiles[b];
            int splits = (int)Math.Clamp((tiles + ItemOverheadTiles + costPerItem - 1) / costPerItem, 1, Math.Min(MaxItemsPerBlock, tiles));
            int tilesPerItem = (tiles + splits - 1) / splits;
            blockFirstItem[b] = itemBlock.Count;
            for (int begin = 0; begin < tiles; begin += tilesPerItem)
            {
                itemBlock.Add(b);
                itemBegin.Add(begin * tile);
                itemEnd.Add(Math.Min(tiles, begin + tilesPerItem) * tile);
            }
            blockItems[b] = itemBlock.Count - blockFirstItem[b];
        }
        return new Plan(itemBlock.ToArray(), itemBegin.ToArray(), itemEnd.ToArray(),
            blockFirstRow.ToArray(), rowsOfBlock.ToArray(), blockFirstItem, blockItems);
    }
}
