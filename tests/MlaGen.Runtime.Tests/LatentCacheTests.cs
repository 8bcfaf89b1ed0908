using System;
using System.Collections.Generic;
using System.Linq;
using ILGPU.Runtime;
using MlaGen.Cache;
using MlaGen.Devices;
using Xunit;
using static MlaGen.Runtime.Tests.LatentCacheTestSpecs;

namespace MlaGen.Runtime.Tests;

/// <summary>The paged latent cache: construction, accounting, device tables, rows, freeing, disposal, shape checks.</summary>
[Collection(DeviceCollection.Name)]
public sealed class LatentCacheTests(DeviceFixture fixture)
{
    private readonly MlaDevice _device = fixture.Device;

    [Theory]
    [InlineData(0, 2, 4, "numPages")]
    [InlineData(-3, 2, 4, "numPages")]
    [InlineData(8, 0, 4, "maxSequences")]
    [InlineData(8, 2, 0, "maxPagesPerSequence")]
    [InlineData(8, 2, 17, "maxPagesPerSequence")]
    public void Constructor_rejects_each_bad_size_naming_the_argument_and_both_numbers(int numPages, int maxSequences, int maxPagesPerSequence, string argument)
    {
        var spec = Small(maxPositions: 250);

        var error = Assert.Throws<ArgumentOutOfRangeException>(() => new LatentCache(_device, spec, numPages, maxSequences, maxPagesPerSequence));

        Assert.Equal(argument, error.ParamName);
        int actual = argument switch { "numPages" => numPages, "maxSequences" => maxSequences, _ => maxPagesPerSequence };
        Assert.Equal(actual, error.ActualValue);
        Assert.Contains($"got {actual}", error.Message, StringComparison.Ordinal);
        Assert.Contains(actual == 17 ? "<= 16" : "> 0", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void MaxPositions_rounded_up_to_a_page_bounds_the_pages_per_sequence_and_the_tokens()
    {
        // 250 positions need 16 pages of 16 tokens, but a sequence may still hold only 250 tokens.
        using var cache = new LatentCache(_device, Small(maxPositions: 250), numPages: 20, maxSequences: 1, maxPagesPerSequence: 16);
        var id = cache.CreateSequence();

        Assert.Equal(250, cache.MaxTokensPerSequence);
        cache.Reserve([id], [250]);
        Assert.Equal(16, cache.PagesUsed);
        Assert.Throws<ArgumentOutOfRangeException>(() => cache.Reserve([id], [1]));
    }

    [Fact]
    public void Shapes_and_views_follow_the_flashmla_layout()
    {
        using var cache = new LatentCache(_device, Small(), numPages: 5, maxSequences: 3, maxPagesPerSequence: 4);

        Assert.Equal([5, PageSize, 1, RowValues], cache.PagesShape);
        Assert.Equal(5L * PageSize * RowValues, cache.PagesView.Length);
        Assert.Equal([3, 4], cache.BlockTableShape);
        Assert.Equal(12, cache.BlockTableView.Length);
        Assert.Equal(3, cache.LengthsView.Length);
        Assert.Equal(-1, LatentCache.UnusedBlock);
        Assert.All(cache.BlockTableView.GetAsArray(), entry => Assert.Equal(LatentCache.UnusedBlock, entry));
        Assert.All(cache.LengthsView.GetAsArray(), length => Assert.Equal(0, length));
        Assert.All(cache.PagesView.GetAsArray(), value => Assert.Equal(0, value));

        var view = cache.View;
        Assert.Equal(cache.PagesView, view.Pages);
        Assert.Equal(cache.BlockTableView, view.BlockTable);
        Assert.Equal(cache.LengthsView, view.Lengths);
        Assert.Equal(4, view.MaxPagesPerSequence);
        Assert.Equal(PageSize, view.PageSize);
        Assert.Equal(RowValues, view.RowValues);
    }

    [Fact]
    public void Accounting_through_create_reserve_free_reuse_and_full_is_exact_and_the_device_tables_follow()
    {
        using var cache = new LatentCache(_device, Small(maxPositions: 128), numPages: 10, maxSequences: 3, maxPagesPerSequence: 8);
        AssertCounters(cache, pagesUsed: 0, tokens: 0, active: 0);
        Assert.Equal(160, cache.CapacityTokens);
        Assert.Equal(10, cache.NumPages);
        Assert.Equal(3, cache.MaxSequences);
        Assert.Equal(8, cache.MaxPagesPerSequence);

        var a = cache.CreateSequence();
        var b = cache.CreateSequence();
        Assert.Equal(new SequenceId(0, 1), a);
        Assert.Equal(new SequenceId(1, 1), b);
        AssertCounters(cache, pagesUsed: 0, tokens: 0, active: 2);
        AssertDeviceMatchesHost(cache, a, b);

        cache.Reserve([a, b], [40, 1]);
        AssertCounters(cache, pagesUsed: 4, tokens: 41, active: 2);
        Assert.Equal([0, 1, 2], cache.GetPages(a));
        Assert.Equal([3], cache.GetPages(b));
        Assert.Equal(40, cache.GetLength(a));
        AssertDeviceMatchesHost(cache, a, b);

        cache.Reserve([b, a], [16, 8]);
        AssertCounters(cache, pagesUsed: 5, tokens: 65, active: 2);
        Assert.Equal([0, 1, 2], cache.GetPages(a));
        Assert.Equal([3, 4], cache.GetPages(b));
        AssertDeviceMatchesHost(cache, a, b);

        cache.Reserve([a], [0]);
        cache.Reserve([], []);
        AssertCounters(cache, pagesUsed: 5, tokens: 65, active: 2);

        cache.FreeSequence(a);
        Assert.False(cache.Contains(a));
        AssertCounters(cache, pagesUsed: 2, tokens: 17, active: 1);
        AssertDeviceMatchesHost(cache, b);

        var c = cache.CreateSequence();
        Assert.Equal(new SequenceId(0, 2), c);
        Assert.Equal(0, cache.GetSlot(c));
        Assert.Equal(0, cache.GetLength(c));
        cache.Reserve([c], [33]);
        Assert.Equal([0, 1, 2], cache.GetPages(c));
        AssertCounters(cache, pagesUsed: 5, tokens: 50, active: 2);
        AssertDeviceMatchesHost(cache, b, c);

        cache.Reserve([b], [95]);
        AssertCounters(cache, pagesUsed: 10, tokens: 145, active: 2);
        Assert.Equal(0, cache.PagesFree);
        cache.Reserve([c], [15]);
        AssertCounters(cache, pagesUsed: 10, tokens: 160, active: 2);
        Assert.Equal(cache.CapacityTokens, cache.TokensStored);
        AssertDeviceMatchesHost(cache, b, c);

        var full = Assert.Throws<LatentCacheFullException>(() => cache.Reserve([c], [1]));
        Assert.Contains("needs 1 new page(s)", full.Message, StringComparison.Ordinal);
        Assert.Contains("only 0 of 10 pages are free", full.Message, StringComparison.Ordinal);

        var d = cache.CreateSequence();
        Assert.Equal(2, cache.GetSlot(d));
        var noSlot = Assert.Throws<LatentCacheFullException>(() => cache.CreateSequence());
        Assert.Contains("All 3 sequence slots", noSlot.Message, StringComparison.Ordinal);
        AssertCounters(cache, pagesUsed: 10, tokens: 160, active: 3);
        AssertDeviceMatchesHost(cache, b, c, d);
    }

    [Fact]
    public void Rows_round_trip_across_page_boundaries_and_land_where_flashmla_reads_them()
    {
        using var cache = new LatentCache(_device, Small(), numPages: 8, maxSequences: 2, maxPagesPerSequence: 4);
        var a = cache.CreateSequence();
        var b = cache.CreateSequence();
        // Interleaved growth gives a pages [0, 2, 3]: one separate page, then two adjacent ones.
        cache.Reserve([a, b], [16, 16]);
        cache.Reserve([a], [24]);
        Assert.Equal([0, 2, 3], cache.GetPages(a));

        var rowsA = Rows(tag: 1, start: 0, count: 40);
        var rowsB = Rows(tag: 2, start: 0, count: 16);
        cache.WriteRows(a, 0, rowsA);
        cache.WriteRows(b, 0, rowsB);

        Assert.Equal(rowsA, cache.ReadRows(a));
        Assert.Equal(rowsB, cache.ReadRows(b));
        AssertPhysicalLayout(cache, a, rowsA);
        AssertPhysicalLayout(cache, b, rowsB);

        // Tokens 10..34 cross both page boundaries of a (16 and 32).
        var middle = Rows(tag: 3, start: 10, count: 25);
        cache.WriteRows(a, 10, middle);
        var expected = (ushort[])rowsA.Clone();
        middle.CopyTo(expected, 10 * RowValues);
        Assert.Equal(expected, cache.ReadRows(a));
        AssertPhysicalLayout(cache, a, expected);
        Assert.Equal(rowsB, cache.ReadRows(b));
    }

    [Fact]
    public void WriteRows_outside_the_reserved_tokens_or_with_partial_rows_is_rejected_without_writing()
    {
        using var cache = new LatentCache(_device, Small(), numPages: 4, maxSequences: 1, maxPagesPerSequence: 4);
        var a = cache.CreateSequence();
        cache.Reserve([a], [40]);
        var before = cache.PagesView.GetAsArray();

        var beyond = Assert.Throws<ArgumentOutOfRangeException>(() => cache.WriteRows(a, 39, Rows(1, 39, 2)));
        Assert.Equal("startToken", beyond.ParamName);
        Assert.Contains("tokens 39..40", beyond.Message, StringComparison.Ordinal);
        Assert.Contains("0..39", beyond.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentOutOfRangeException>(() => cache.WriteRows(a, -1, Rows(1, 0, 1)));
        var partial = Assert.Throws<ArgumentException>(() => cache.WriteRows(a, 0, new ushort[RowValues + 1]));
        Assert.Equal("rows", partial.ParamName);

        Assert.Equal(before, cache.PagesView.GetAsArray());
    }

    [Fact]
    public void Reserve_uploads_only_the_block_table_rows_and_lengths_of_the_sequences_it_grows()
    {
        using var cache = new LatentCache(_device, Small(), numPages: 8, maxSequences: 2, maxPagesPerSequence: 4);
        var a = cache.CreateSequence();
        var b = cache.CreateSequence();
        cache.Reserve([a, b], [5, 5]);
        // Scribble over b's device row and length behind the cache's back: a later Reserve of a alone must not rewrite them.
        cache.BlockTableView.SubView(4, 4).CopyFromCPU(new[] { 77, 77, 77, 77 });
        cache.LengthsView.SubView(1, 1).CopyFromCPU(new[] { 999 });

        cache.Reserve([a], [20]);

        var table = cache.BlockTableView.GetAsArray();
        var lengths = cache.LengthsView.GetAsArray();
        Assert.Equal([0, 2, -1, -1], table[..4]);
        Assert.Equal(25, lengths[0]);
        Assert.Equal([77, 77, 77, 77], table[4..]);
        Assert.Equal(999, lengths[1]);
    }

    [Fact]
    public void Freeing_twice_or_with_a_stale_id_is_an_error_that_changes_nothing()
    {
        using var cache = new LatentCache(_device, Small(), numPages: 4, maxSequences: 1, maxPagesPerSequence: 4);
        var a = cache.CreateSequence();
        cache.Reserve([a], [20]);
        cache.FreeSequence(a);

        var twice = Assert.Throws<KeyNotFoundException>(() => cache.FreeSequence(a));
        Assert.Contains("sequence 0#1 was freed", twice.Message, StringComparison.Ordinal);
        AssertCounters(cache, pagesUsed: 0, tokens: 0, active: 0);

        var b = cache.CreateSequence();
        cache.Reserve([b], [3]);
        var stale = Assert.Throws<KeyNotFoundException>(() => cache.FreeSequence(a));
        Assert.Contains("sequence 0#1 is stale", stale.Message, StringComparison.Ordinal);
        Assert.True(cache.Contains(b));
        Assert.Equal(3, cache.GetLength(b));
        AssertCounters(cache, pagesUsed: 1, tokens: 3, active: 1);
        AssertDeviceMatchesHost(cache, b);

        Assert.Throws<KeyNotFoundException>(() => cache.GetLength(a));
        Assert.Throws<KeyNotFoundException>(() => cache.ReadRows(a));
        Assert.Throws<KeyNotFoundException>(() => cache.WriteRows(a, 0, Rows(1, 0, 1)));
        Assert.Throws<KeyNotFoundException>(() => cache.GetSlot(new SequenceId(5, 1)));
        Assert.False(cache.Contains(default));
    }

    [Fact]
    public void Every_member_refuses_use_after_dispose()
    {
        var cache = new LatentCache(_device, Small(), numPages: 2, maxSequences: 1, maxPagesPerSequence: 2);
        var a = cache.CreateSequence();
        cache.Dispose();
        cache.Dispose();

        var uses = new Action[]
        {
            () => cache.CreateSequence(),
            () => cache.FreeSequence(a),
            () => cache.Reserve([a], [1]),
            () => cache.GetLength(a),
            () => cache.GetSlot(a),
            () => cache.GetPages(a),
            () => cache.Contains(a),
            () => cache.ReadRows(a),
            () => cache.WriteRows(a, 0, ReadOnlySpan<ushort>.Empty),
            () => cache.EnsureCompatible(Small()),
            () => _ = cache.PagesView,
            () => _ = cache.BlockTableView,
            () => _ = cache.LengthsView,
            () => _ = cache.View,
            () => _ = cache.PagesUsed,
            () => _ = cache.PagesFree,
            () => _ = cache.TokensStored,
            () => _ = cache.NumPages,
            () => _ = cache.Spec,
        };
        Assert.All(uses, use => Assert.Throws<ObjectDisposedException>(use));
    }

    [Fact]
    public void A_cache_whose_device_was_disposed_refuses_use()
    {
        var device = MlaDevice.Create("cpu");
        using var cache = new LatentCache(device, Small(), numPages: 2, maxSequences: 1, maxPagesPerSequence: 2);

        device.Dispose();

        var error = Assert.Throws<ObjectDisposedException>(() => cache.CreateSequence());
        Assert.Contains("device cpu", error.Message, StringComparison.Ordinal);
        Assert.Throws<ObjectDisposedException>(() => new LatentCache(device, Small(), 2, 1, 2));
    }

    [Fact]
    public void EnsureCompatible_accepts_the_same_shape_and_names_both_shapes_otherwise()
    {
        var spec = Small();
        using var cache = new LatentCache(_device, spec, numPages: 2, maxSequences: 1, maxPagesPerSequence: 2);
        cache.EnsureCompatible(Small(maxPositions: 64, name: "Other.SameShape"));

        var other = Small(latent: 64, name: "Other.WiderLatent");
        var error = Assert.Throws<ArgumentException>(() => cache.EnsureCompatible(other));

        Assert.Equal("spec", error.ParamName);
        Assert.Contains(spec.ShapeText, error.Message, StringComparison.Ordinal);
        Assert.Contains(other.ShapeText, error.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => cache.EnsureCompatible(Small(pageSize: 32)));
    }

    private static void AssertCounters(LatentCache cache, int pagesUsed, long tokens, int active)
    {
        Assert.Equal(pagesUsed, cache.PagesUsed);
        Assert.Equal(cache.NumPages - pagesUsed, cache.PagesFree);
        Assert.Equal(tokens, cache.TokensStored);
        Assert.Equal(active, cache.ActiveSequences);
    }

    /// <summary>The device block table and lengths equal what the host reports for the live sequences; every other row is unused.</summary>
    internal static void AssertDeviceMatchesHost(LatentCache cache, params SequenceId[] live)
    {
        var expectedTable = Enumerable.Repeat(LatentCache.UnusedBlock, cache.MaxSequences * cache.MaxPagesPerSequence).ToArray();
        var expectedLengths = new int[cache.MaxSequences];
        foreach (var id in live)
        {
            int slot = cache.GetSlot(id);
            cache.GetPages(id).CopyTo(expectedTable, slot * cache.MaxPagesPerSequence);
            expectedLengths[slot] = cache.GetLength(id);
        }
        Assert.Equal(expectedTable, cache.BlockTableView.GetAsArray());
        Assert.Equal(expectedLengths, cache.LengthsView.GetAsArray());

        var pages = live.SelectMany(cache.GetPages).ToArray();
        Assert.Equal(pages.Length, pages.Distinct().Count());
        Assert.Equal(cache.PagesUsed, pages.Length);
        Assert.Equal(cache.TokensStored, live.Sum(id => (long)cache.GetLength(id)));
    }

    /// <summary>Token t's row is at ((page[t / PageSize] * PageSize) + t % PageSize) * RowValues of the flat page buffer.</summary>
    private static void AssertPhysicalLayout(LatentCache cache, SequenceId id, ushort[] expectedRows)
    {
        var flat = cache.PagesView.GetAsArray();
        var pages = cache.GetPages(id);
        for (int t = 0; t < expectedRows.Length / RowValues; t++)
        {
            int offset = (pages[t / PageSize] * PageSize + t % PageSize) * RowValues;
            Assert.Equal(expectedRows.AsSpan(t * RowValues, RowValues).ToArray(), flat.AsSpan(offset, RowValues).ToArray());
        }
    }
}
