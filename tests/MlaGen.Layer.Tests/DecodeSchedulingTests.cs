using System;
using System.Collections.Generic;
using System.Linq;
using ILGPU;
using MlaGen.Devices;
using MlaGen.Kernels;
using Xunit;

namespace MlaGen.Layer.Tests;

/// <summary>The split-KV plan for either decode kernel's tiling, and the rule that picks the kernel per call.</summary>
public class DecodeSchedulingTests
{
    private static readonly DecodeTiling MmaSync = new(16, 16, 3, 4, 4);
    private static readonly DecodeTiling Warpgroup = new(64, 32, 1, 4, 8);

    [Theory]
    [InlineData(16, 1, 1)]  // H16, s_q = 1: one 16-row block per sequence either way
    [InlineData(128, 1, 2)] // H128: two 64-row blocks (eight 16-row ones on mma.sync)
    [InlineData(16, 2, 1)]  // s_q = 2 at H16: 32 rows in one 64-row block
    [InlineData(32, 3, 2)]  // 96 rows: 64 + 32
    public void WarpgroupBlocksHoldUpTo64RowsOfOneSequence(int heads, int newTokens, int blocksPerSequence)
    {
        int sequences = 5;
        var tokens = new int[sequences];
        var last = new int[sequences];
        for (int s = 0; s < sequences; s++)
        {
            tokens[s] = newTokens;
            last[s] = 100 + 37 * s;
        }
        var plan = SplitKvScheduler.Build(tokens, last, heads, Warpgroup, targetItems: 132);
        Assert.Equal(sequences * blocksPerSequence, plan.Blocks);
        AssertBlocksCoverEveryRowOnce(plan, sequences * newTokens * heads);
        for (int b = 0; b < plan.Blocks; b++)
        {
            Assert.InRange(plan.BlockRows[b], 1, Warpgroup.Rows);
            // A block never spans two sequences: its first and last rows belong to the same one.
            Assert.Equal(plan.BlockFirstRow[b] / (newTokens * heads), (plan.BlockFirstRow[b] + plan.BlockRows[b] - 1) / (newTokens * heads));
        }
        // Items cover whole tiles of 32 tokens, every visible one, with no gaps.
        for (int b = 0; b < plan.Blocks; b++)
        {
            int sequence = plan.BlockFirstRow[b] / (newTokens * heads);
            int expectedEnd = (last[sequence] + 1 + Warpgroup.Tokens - 1) / Warpgroup.Tokens * Warpgroup.Tokens;
            int next = 0;
            for (int i = plan.BlockFirstItem[b]; i < plan.BlockFirstItem[b] + plan.BlockItems[b]; i++)
            {
                Assert.Equal(next, plan.ItemBegin[i]);
                Assert.Equal(0, plan.ItemBegin[i] % Warpgroup.Tokens);
                next = plan.ItemEnd[i];
            }
            Assert.Equal(expectedEnd, next);
        }
    }

    [Theory]
    [InlineData(16, 396)] // H16 on mma.sync: 132 SMs x 3 CTAs
    [InlineData(128, 132)] // H128 on wgmma: 132 SMs x 1 CTA
    public void OneLongSequenceFillsEverySlot(int heads, int slots)
    {
        var tiling = heads == 16 ? MmaSync : Warpgroup;
        var plan = SplitKvScheduler.Build([1], [32767], heads, tiling, slots);
        AssertBlocksCoverEveryRowOnce(plan, heads);
        // At least one item per two slots (the old cap of 64 items per block left 332 of 396 idle at H16).
        Assert.True(plan.Items >= slots / 2, $"{plan.Items} items for {slots} slots");
        AssertItemsCoverTheirTiles(plan, tiling, [32767], heads, 1);
    }

    [Theory]
    [InlineData(16, 1, 132, true)]    // one 16-row block cut into ~128 items: each merges at most one of its 64 row slices
    [InlineData(128, 1, 132, true)]   // two 64-row blocks of ~64 items: 256 slices each, four per item, side by side
    [InlineData(16, 8, 132, true)]    // eight 16-row blocks of ~16 items: four slices per item
    [InlineData(128, 8, 132, false)]  // sixteen 64-row blocks of ~8 items: 32 slices per item, more than 8 warps take at once
    [InlineData(16, 128, 132, false)] // B = 128 at S = 4,096: no block is split, nothing to merge
    [InlineData(16, 1, 16, true)]     // 16 slots: 16 items of four slices each
    public void SplitBlocksMergeInPlaceOnlyWhenEveryItemIsResidentAndItsSlicesFitItsWarps(int heads, int sequences, int slots, bool inPlace)
    {
        var tokens = Enumerable.Repeat(1, sequences).ToArray();
        var last = Enumerable.Repeat(sequences <= 8 ? 32767 : 4095, sequences).ToArray();
        var plan = SplitKvScheduler.Build(tokens, last, heads, Warpgroup, slots);
        Assert.Equal(inPlace, plan.MergesInPlace);
        if (plan.MergesInPlace)
        {
            Assert.True(plan.Items <= slots);
            for (int b = 0; b < plan.Blocks; b++)
                Assert.True(plan.BlockItems[b] == 1 || plan.BlockRows[b] * Warpgroup.MergeSlices <= plan.BlockItems[b] * Warpgroup.MergeWarps);
        }
    }

    [Fact]
    public void SplitBlocksKeepTheCombineWhenTheItemsDoNotAllFitAtOnce()
    {
        // One long sequence (split) among 300 short ones: more items than the 132 slots, so an item could wait for a part
        // whose CTA has no slot yet.
        var tokens = Enumerable.Repeat(1, 301).ToArray();
        var last = Enumerable.Repeat(4095, 301).Prepend(131071).Take(301).ToArray();
        var plan = SplitKvScheduler.Build(tokens, last, 16, Warpgroup, 132);
        Assert.True(plan.Items > 132);
        Assert.True(plan.MaxBlockItems > 1);
        Assert.False(plan.MergesInPlace);
    }

    [Fact]
    public void VariableLengthsAreListedLongestFirstAndFinishNearTheEvenShare()
    {
        var random = new Random(Environment.TickCount);
        int sequences = 128, slots = 132;
        var tokens = Enumerable.Repeat(1, sequences).ToArray();
        var last = Enumerable.Range(0, sequences).Select(_ => (int)Math.Clamp(4096 + 2048 * Gaussian(random), 1, 20000) - 1).ToArray();
        var plan = SplitKvScheduler.Build(tokens, last, 128, Warpgroup, slots);
        AssertBlocksCoverEveryRowOnce(plan, sequences * 128);
        AssertItemsCoverTheirTiles(plan, Warpgroup, last, 128, 1);
        var lengths = Enumerable.Range(0, plan.Items).Select(i => plan.ItemEnd[i] - plan.ItemBegin[i]).ToArray();
        for (int b = 1; b < plan.Blocks; b++)
            Assert.True(lengths[plan.BlockFirstItem[b]] <= lengths[plan.BlockFirstItem[b - 1]], "blocks are listed longest item first");
        // Greedy dispatch in list order onto the slots finishes within 15 % of the even share (FlashMLA's bound on the same data).
        var free = new PriorityQueue<int, long>();
        for (int s = 0; s < slots; s++)
            free.Enqueue(s, 0);
        long finish = 0, total = 0;
        foreach (int length in lengths)
        {
            long tiles = length / Warpgroup.Tokens + SplitKvScheduler.ItemOverheadTiles;
            free.TryDequeue(out int slot, out long at);
            free.Enqueue(slot, at + tiles);
            finish = Math.Max(finish, at + tiles);
            total += tiles;
        }
        Assert.True(finish <= 1.15 * total / slots + 1, $"finish {finish} vs even share {total / (double)slots:F1}");
    }

    private static double Gaussian(Random random) =>
        Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());

    private static void AssertBlocksCoverEveryRowOnce(SplitKvScheduler.Plan plan, int rows)
    {
        var seen = new int[rows];
        for (int b = 0; b < plan.Blocks; b++)
            for (int r = plan.BlockFirstRow[b]; r < plan.BlockFirstRow[b] + plan.BlockRows[b]; r++)
                seen[r]++;
        Assert.All(seen, count => Assert.Equal(1, count));
    }

    private static void AssertItemsCoverTheirTiles(SplitKvScheduler.Plan plan, DecodeTiling tiling, int[] last, int heads, int newTokens)
    {
        for (int b = 0; b < plan.Blocks; b++)
        {
            int sequence = plan.BlockFirstRow[b] / (newTokens * heads);
            int expectedEnd = (last[sequence] + 1 + tiling.Tokens - 1) / tiling.Tokens * tiling.Tokens;
            int next = 0;
            for (int i = plan.BlockFirstItem[b]; i < plan.BlockFirstItem[b] + plan.BlockItems[b]; i++)
            {
                Assert.Equal(b, plan.ItemBlock[i]);
                Assert.Equal(next, plan.ItemBegin[i]);
                Assert.True(plan.ItemEnd[i] > plan.ItemBegin[i]);
                next = plan.ItemEnd[i];
            }
            Assert.Equal(expectedEnd, next);
        }
    }

    [Theory]
    [InlineData(16, 1, 1)]     // one long sequence split over many items
    [InlineData(64, 2, 37)]    // s_q = 2: one block per token, each bounded by its own token
    [InlineData(16, 300, 2)]   // prompts: 64-row blocks of 4 tokens, the early ones stopping at their own tokens (causal)
    [InlineData(128, 1, 128)]  // two blocks per sequence, variable lengths
    public void WorkItemRecordsCarryTheirBlockAndStopWhereTheBlocksLastTokenSees(int heads, int newTokens, int sequences)
    {
        var random = new Random(Environment.TickCount);
        var tokens = Enumerable.Repeat(newTokens, sequences).ToArray();
        var last = Enumerable.Range(0, sequences).Select(_ => sequences == 1 ? 32767 : random.Next(2 * newTokens, 9000)).ToArray();
        // Per token of the call: its sequence's slot, and positions that end at the sequence's last (gaps allowed).
        var tokenSlot = new int[sequences * newTokens];
        var tokenPosition = new int[sequences * newTokens];
        for (int q = 0; q < sequences; q++)
        {
            int slot = random.Next(1000), position = last[q];
            for (int j = newTokens - 1; j >= 0; j--)
            {
                tokenSlot[q * newTokens + j] = slot;
                tokenPosition[q * newTokens + j] = position;
                position -= random.Next(1, 3);
            }
        }
        var plan = SplitKvScheduler.Build(tokens, last, heads, Warpgroup, 132);
        using var device = MlaDevice.Create("cpu");
        using var query = device.Accelerator.Allocate1D<float>(16);
        using var pages = device.Accelerator.Allocate1D<ushort>(16);
        using var scratch = device.Accelerator.Allocate1D<int>(1);
        var views = new TensorCoreAttentionParams { AbsorbedQuery = query.View, Cache = new CacheAddressing { Pages = pages.View } };
        var uploaded = new Dictionary<SplitKvScheduler.PlanArray, int[]>();
        plan.ToParams(views, Warpgroup.Rows, tokenSlot, tokenPosition, (array, values) => { uploaded[array] = values; return scratch.View; });

        var records = uploaded[SplitKvScheduler.PlanArray.WorkItems];
        Assert.Equal(plan.Items * WorkItemRecord.Ints, records.Length);
        for (int i = 0; i < plan.Items; i++)
        {
            var record = records.AsSpan(i * WorkItemRecord.Ints, WorkItemRecord.Ints);
            int b = plan.ItemBlock[i];
            int lastToken = (plan.BlockFirstRow[b] + plan.BlockRows[b] - 1) / heads;
            Assert.Equal(b, record[WorkItemRecord.Block]);
            Assert.Equal(plan.ItemBegin[i], record[WorkItemRecord.Begin]);
            Assert.Equal(Math.Min(plan.ItemEnd[i], tokenPosition[lastToken] + 1), record[WorkItemRecord.End]);
            Assert.Equal(tokenSlot[lastToken], record[WorkItemRecord.Slot]);
            Assert.Equal(plan.BlockFirstRow[b], record[WorkItemRecord.FirstRow]);
            Assert.Equal(plan.BlockRows[b], record[WorkItemRecord.Rows]);
            Assert.Equal(plan.BlockItems[b], record[WorkItemRecord.BlockItems]);
            Assert.Equal(plan.BlockFirstItem[b], record[WorkItemRecord.BlockFirstItem]);
        }
        var ex = Assert.Throws<ArgumentException>(() => plan.ToParams(views, Warpgroup.Rows, tokenSlot.AsSpan(0, tokenSlot.Length - 1), tokenPosition, (_, _) => scratch.View));
        Assert.Equal("tokenSlot", ex.ParamName);
        ex = Assert.Throws<ArgumentException>(() => plan.ToParams(views, Warpgroup.Rows, tokenSlot, tokenPosition.AsSpan(0, tokenPosition.Length - 1), (_, _) => scratch.View));
        Assert.Equal("tokenPosition", ex.ParamName);
    }

    [Fact]
    public void TilingMustHoldRowsAndTokens()
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => SplitKvScheduler.Build([1], [10], 16, new DecodeTiling(0, 32, 1, 4, 8), 132));
        Assert.Equal("tiling", ex.ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => SplitKvScheduler.Build([1], [10], 16, new DecodeTiling(64, 0, 1, 4, 8), 132));
    }
}
