using System;
using MlaGen.Kernels;
using Xunit;

namespace MlaGen.Layer.Tests;

/// <summary>The split-KV plan for either decode kernel's tiling, and the rule that picks the kernel per call.</summary>
public class DecodeSchedulingTests
{
    private static readonly DecodeTiling MmaSync = new(16, 16, 3);
    private static readonly DecodeTiling Warpgroup = new(64, 32, 1);

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
        int row = 0;
        for (int b = 0; b < plan.Blocks; b++)
        {
            Assert.Equal(row, plan.BlockFirstRow[b]);
            Assert.InRange(plan.BlockRows[b], 1, Warpgroup.Rows);
            // A block never spans two sequences: its first and last rows belong to the same one.
            Assert.Equal(plan.BlockFirstRow[b] / (newTokens * heads), (plan.BlockFirstRow[b] + plan.BlockRows[b] - 1) / (newTokens * heads));
            row += plan.BlockRows[b];
        }
        Assert.Equal(sequences * newTokens * heads, row);
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

    [Fact]
    public void TilingMustHoldRowsAndTokens()
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => SplitKvScheduler.Build([1], [10], 16, new DecodeTiling(0, 32, 1), 132));
        Assert.Equal("tiling", ex.ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => SplitKvScheduler.Build([1], [10], 16, new DecodeTiling(64, 0, 1), 132));
    }

    [Theory]
    [InlineData(DecodeAttentionKind.Warpgroup, 16, DecodeAttentionKind.TensorCore)] // H16 decode: 48 of 64 wgmma rows would be empty
    [InlineData(DecodeAttentionKind.Warpgroup, 17, DecodeAttentionKind.Warpgroup)]
    [InlineData(DecodeAttentionKind.Warpgroup, 32, DecodeAttentionKind.Warpgroup)]  // H16 s_q = 2
    [InlineData(DecodeAttentionKind.Warpgroup, 128, DecodeAttentionKind.Warpgroup)]
    [InlineData(DecodeAttentionKind.TensorCore, 128, DecodeAttentionKind.TensorCore)] // off Hopper: mma.sync everywhere
    [InlineData(DecodeAttentionKind.TensorCore, 1, DecodeAttentionKind.TensorCore)]
    public void DecodeKernelRule(DecodeAttentionKind best, int maxRows, DecodeAttentionKind expected) =>
        Assert.Equal(expected, MlaKernelSet.ChooseDecodeKernel(best, maxRows, MmaSync.Rows));
}
