using System;
using System.Collections.Generic;
using System.Linq;
using ILGPU.Runtime;
using MlaGen.Cache;
using MlaGen.Devices;
using Xunit;
using static MlaGen.Runtime.Tests.LatentCacheTestSpecs;

namespace MlaGen.Runtime.Tests;

/// <summary>
/// A Reserve that fails must leave the cache exactly as it was: counters, host view, device block table,
/// device lengths and page contents. Every failing list starts with valid entries that need a page, so an
/// implementation that changes state before it has checked the whole list is caught.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class LatentCacheReserveFailureTests(DeviceFixture fixture)
{
    private readonly MlaDevice _device = fixture.Device;

    public static TheoryData<string> Cases => new()
    {
        "full", "unknown slot", "never created", "default id", "freed", "stale", "duplicate", "negative",
        "beyond MaxPositions", "count mismatch",
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Failed_reserve_changes_nothing_on_host_or_device(string failure)
    {
        // 7 pages of 16 tokens; 60 positions = at most 4 pages per sequence.
        using var cache = new LatentCache(_device, Small(maxPositions: 60), numPages: 7, maxSequences: 4, maxPagesPerSequence: 4);
        var a = cache.CreateSequence();
        var b = cache.CreateSequence();
        var f = cache.CreateSequence();
        var x = cache.CreateSequence();
        cache.Reserve([a, b, f, x], [20, 5, 3, 1]);
        cache.WriteRows(a, 0, Rows(1, 0, 20));
        cache.WriteRows(b, 0, Rows(2, 0, 5));
        cache.FreeSequence(x);
        cache.FreeSequence(f);
        var c = cache.CreateSequence();
        Assert.Equal(f.Slot, c.Slot);
        cache.Reserve([c], [10]);
        cache.WriteRows(c, 0, Rows(3, 0, 10));
        Assert.Equal(3, cache.PagesFree);

        // [a, b] with [16, 1] is valid on its own and takes one page.
        (SequenceId[] ids, int[] counts, Type error, string message) = failure switch
        {
            "full" => (new[] { a, b, c }, new[] { 16, 1, 40 }, typeof(LatentCacheFullException), "needs 4 new page(s)"),
            "unknown slot" => ([a, b, new SequenceId(9, 1)], [16, 1, 1], typeof(KeyNotFoundException), "slot 9 is outside 0..3"),
            "never created" => ([a, b, new SequenceId(1, 5)], [16, 1, 1], typeof(KeyNotFoundException), "never created"),
            "default id" => ([a, b, default], [16, 1, 1], typeof(KeyNotFoundException), "never created"),
            "freed" => ([a, b, x], [16, 1, 1], typeof(KeyNotFoundException), "ids[2]: sequence 3#1 was freed"),
            "stale" => ([a, b, f], [16, 1, 1], typeof(KeyNotFoundException), "ids[2]: sequence 2#1 is stale"),
            "duplicate" => ([a, b, a], [16, 1, 1], typeof(ArgumentException), "ids[2] repeats sequence 0#1"),
            "negative" => ([a, b, c], [16, 1, -1], typeof(ArgumentOutOfRangeException), "newTokens[2] for sequence 2#2 is -1"),
            "beyond MaxPositions" => ([a, b, c], [16, 1, 51], typeof(ArgumentOutOfRangeException), "would make 61, beyond its limit of 60"),
            "count mismatch" => ([a, b], [16], typeof(ArgumentException), "2 sequence id(s) but 1 token count(s)"),
            _ => throw new ArgumentOutOfRangeException(nameof(failure), failure, "no such case"),
        };
        var before = CacheState.Capture(cache, a, b, c);

        var thrown = Assert.Throws(error, () => cache.Reserve(ids, counts));

        Assert.Contains(message, thrown.Message, StringComparison.Ordinal);
        CacheState.Capture(cache, a, b, c).AssertEqual(before);
        cache.Reserve([a, b], [16, 1]);
        Assert.Equal(2, cache.PagesFree);
    }

    [Fact]
    public void Growing_beyond_the_pages_of_a_block_table_row_fails_and_changes_nothing()
    {
        // 1000 positions but only 4 pages per sequence: the block-table row is the limit.
        using var cache = new LatentCache(_device, Small(maxPositions: 1000), numPages: 8, maxSequences: 2, maxPagesPerSequence: 4);
        var a = cache.CreateSequence();
        var b = cache.CreateSequence();
        cache.Reserve([a, b], [60, 2]);
        cache.WriteRows(a, 0, Rows(1, 0, 60));
        var before = CacheState.Capture(cache, a, b);

        var error = Assert.Throws<ArgumentOutOfRangeException>(() => cache.Reserve([b, a], [20, 5]));

        Assert.Equal("newTokens", error.ParamName);
        Assert.Contains("would make 65, beyond its limit of 64", error.Message, StringComparison.Ordinal);
        Assert.Contains("4 pages × 16 tokens", error.Message, StringComparison.Ordinal);
        CacheState.Capture(cache, a, b).AssertEqual(before);
    }

    /// <summary>Everything observable about a cache, host and device.</summary>
    private sealed record CacheState(
        int PagesUsed, int PagesFree, long TokensStored, int ActiveSequences, int[] Lengths, int[][] PagesOf, ushort[][] RowsOf,
        int[] DeviceBlockTable, int[] DeviceLengths, ushort[] DevicePages)
    {
        public static CacheState Capture(LatentCache cache, params SequenceId[] live) => new(
            cache.PagesUsed, cache.PagesFree, cache.TokensStored, cache.ActiveSequences,
            live.Select(cache.GetLength).ToArray(), live.Select(cache.GetPages).ToArray(), live.Select(cache.ReadRows).ToArray(),
            cache.BlockTableView.GetAsArray(), cache.LengthsView.GetAsArray(), cache.PagesView.GetAsArray());

        public void AssertEqual(CacheState expected)
        {
            Assert.Equal(expected.PagesUsed, PagesUsed);
            Assert.Equal(expected.PagesFree, PagesFree);
            Assert.Equal(expected.TokensStored, TokensStored);
            Assert.Equal(expected.ActiveSequences, ActiveSequences);
            Assert.Equal(expected.Lengths, Lengths);
            Assert.Equal(expected.PagesOf, PagesOf);
            Assert.Equal(expected.RowsOf, RowsOf);
            Assert.Equal(expected.DeviceBlockTable, DeviceBlockTable);
            Assert.Equal(expected.DeviceLengths, DeviceLengths);
            Assert.Equal(expected.DevicePages, DevicePages);
        }
    }
}
