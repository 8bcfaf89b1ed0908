using System;
using System.Collections.Generic;
using System.Linq;
using MlaGen.Cache;
using MlaGen.Devices;
using MlaGen.Weights;
using Xunit;

namespace MlaGen.Layer.Tests;

/// <summary>Two pages of 64 tokens per sequence at most: MaxPositions 128 is reached by Reserve alone, cheaply.</summary>
[MlaConfig(32, 2, 32, 8, NopeHeadDim = 16, VHeadDim = 16, PageSize = 64, MaxPositions = 128)]
internal partial class FaultAttention { }

/// <summary>
/// Bad calls of <see cref="MlaLayer.Forward"/>, <see cref="MlaLayer.Prefill"/> and <see cref="MlaLayer.Decode"/>: each
/// throws the documented exception, naming the argument with what was expected and what came, never an ILGPU
/// exception, and leaves the cache exactly as it was (counters, every sequence's length and pages, and its rows
/// byte for byte).
/// </summary>
[Collection(CpuCollection.Name)]
public class LayerFaultTests
{
    private const int D = 32;
    private readonly MlaDevice _device;

    public LayerFaultTests(CpuDeviceFixture fixture) => _device = fixture.Device;

    public static IEnumerable<object[]> Cases => new[]
    {
        "Forward: hidden one value short", "Forward: hidden one token too long", "Prefill: hidden not whole tokens",
        "Decode: hidden for one of two sequences", "Decode: empty hidden", "Forward: newTokens shorter than sequences",
        "Forward: newTokens longer than sequences", "Forward: negative newTokens", "Decode: id never created",
        "Decode: id outside the slots", "Decode: default id", "Decode: freed id", "Decode: stale id", "Prefill: stale id",
        "Decode: duplicate ids", "Forward: duplicate ids with no new tokens", "Prefill: past MaxPositions",
        "Forward: past MaxPositions after valid ones", "Forward: splits out of range",
    }.Select(c => new object[] { c });

    [Theory]
    [MemberData(nameof(Cases))]
    public void FaultThrowsNamingTheArgumentAndLeavesTheCacheUnchanged(string fault)
    {
        using var s = new Scenario(_device);
        var (a, b, freed, stale) = (s.A, s.B, s.Freed, s.Stale);
        float[] Hidden(int tokens) => s.Hidden(tokens);
        var ones = new[] { 1, 1 };
        var before = CacheState.Of(s.Cache, s.All);

        Exception e = fault switch
        {
            "Forward: hidden one value short" => Expect<ArgumentException>(() => s.Layer.Forward(s.Cache, new[] { a, b }, new[] { 2, 1 }, Hidden(3).AsSpan(1)),
                "hidden", "hidden has 95 values", "expected 3 tokens × dModel 32 = 96"),
            "Forward: hidden one token too long" => Expect<ArgumentException>(() => s.Layer.Forward(s.Cache, new[] { a, b }, new[] { 2, 1 }, Hidden(4)),
                "hidden", "hidden has 128 values", "expected 3 tokens × dModel 32 = 96"),
            "Prefill: hidden not whole tokens" => Expect<ArgumentException>(() => s.Layer.Prefill(s.Cache, b, Hidden(2).AsSpan(0, D + 5)),
                "hidden", "hidden has 37 values", "× dModel 32"),
            "Decode: hidden for one of two sequences" => Expect<ArgumentException>(() => s.Layer.Decode(s.Cache, new[] { a, b }, Hidden(1)),
                "hidden", "hidden has 32 values", "expected 2 tokens × dModel 32 = 64"),
            "Decode: empty hidden" => Expect<ArgumentException>(() => s.Layer.Decode(s.Cache, new[] { a }, ReadOnlySpan<float>.Empty),
                "hidden", "hidden has 0 values", "expected 1 tokens"),
            "Forward: newTokens shorter than sequences" => Expect<ArgumentException>(() => s.Layer.Forward(s.Cache, new[] { a, b }, new[] { 1 }, Hidden(1)),
                "newTokens", "newTokens has 1 entries", "expected one per sequence (2)"),
            "Forward: newTokens longer than sequences" => Expect<ArgumentException>(() => s.Layer.Forward(s.Cache, new[] { a }, ones, Hidden(2)),
                "newTokens", "newTokens has 2 entries", "expected one per sequence (1)"),
            "Forward: negative newTokens" => ExpectOutOfRange(() => s.Layer.Forward(s.Cache, new[] { a, b }, new[] { 2, -1 }, Hidden(1)),
                "newTokens", -1, "newTokens[1] must be 0 or more"),
            "Decode: id never created" => Expect<ArgumentException>(() => s.Layer.Decode(s.Cache, new[] { a, new SequenceId(3, 7) }, Hidden(2)),
                "sequences", "sequences[1] is sequence 3#7", "expected a live sequence", "never created"),
            "Decode: id outside the slots" => Expect<ArgumentException>(() => s.Layer.Decode(s.Cache, new[] { new SequenceId(99, 1) }, Hidden(1)),
                "sequences", "sequences[0] is sequence 99#1", "slot 99 is outside 0..3"),
            "Decode: default id" => Expect<ArgumentException>(() => s.Layer.Decode(s.Cache, new[] { b, default(SequenceId) }, Hidden(2)),
                "sequences", "sequences[1] is sequence 0#0", "never created"),
            "Decode: freed id" => Expect<ArgumentException>(() => s.Layer.Decode(s.Cache, new[] { a, freed }, Hidden(2)),
                "sequences", $"sequences[1] is {freed}", "was freed"),
            "Decode: stale id" => Expect<ArgumentException>(() => s.Layer.Decode(s.Cache, new[] { stale, b }, Hidden(2)),
                "sequences", $"sequences[0] is {stale}", "is stale"),
            "Prefill: stale id" => Expect<ArgumentException>(() => s.Layer.Prefill(s.Cache, stale, Hidden(3)),
                "sequences", $"sequences[0] is {stale}", "is stale"),
            "Decode: duplicate ids" => Expect<ArgumentException>(() => s.Layer.Decode(s.Cache, new[] { a, b, a }, Hidden(3)),
                "sequences", "sequences[2] repeats sequences[0]", "at most once"),
            "Forward: duplicate ids with no new tokens" => Expect<ArgumentException>(() => s.Layer.Forward(s.Cache, new[] { b, b }, new[] { 0, 0 }, ReadOnlySpan<float>.Empty),
                "sequences", "sequences[1] repeats sequences[0]"),
            "Prefill: past MaxPositions" => ExpectOutOfRange(() => s.Layer.Prefill(s.Cache, a, Hidden(59)),
                "newTokens", 59, "holds 70 tokens", "would reach position 128", "expected positions 0..127"),
            "Forward: past MaxPositions after valid ones" => ExpectOutOfRange(() => s.Layer.Forward(s.Cache, new[] { b, a }, new[] { 3, 60 }, Hidden(63)),
                "newTokens", 60, "sequences[1]", "would reach position 129"),
            "Forward: splits out of range" => ExpectOutOfRange(() => s.Layer.Forward(s.Cache, new[] { a }, new[] { 1 }, Hidden(1), new MlaForwardOptions { Splits = 65 }),
                "options", 65, "Splits must be 0 (automatic) to 64"),
            _ => throw new ArgumentException(fault),
        };

        Assert.DoesNotContain("ILGPU", e.GetType().FullName, StringComparison.Ordinal);
        CacheState.Of(s.Cache, s.All).AssertSameAs(before, fault);
        s.AssertStillWorks();
    }

    [Fact]
    public void FaultFullCacheThrowsCacheFullAndLeavesItUnchanged()
    {
        // Three pages: A holds two (70 tokens), B one full page (64 tokens), so B's next token needs a fourth page.
        using var s = new Scenario(_device, numPages: 3, lengthOfB: 64, freeAndStale: false);
        var before = CacheState.Of(s.Cache, s.All);
        var e = Assert.Throws<LatentCacheFullException>(() => s.Layer.Decode(s.Cache, new[] { s.A, s.B }, s.Hidden(2)));
        Assert.Contains("needs 1 new page(s)", e.Message, StringComparison.Ordinal);
        Assert.Contains("only 0 of 3 pages are free", e.Message, StringComparison.Ordinal);
        CacheState.Of(s.Cache, s.All).AssertSameAs(before, "full cache");
        // A alone still fits in its second page.
        s.Layer.Decode(s.Cache, new[] { s.A }, s.Hidden(1));
        Assert.Equal(71, s.Cache.GetLength(s.A));
    }

    [Fact]
    public void FaultCacheOfAnotherShapeOrDeviceIsRejected()
    {
        using var s = new Scenario(_device);
        var before = CacheState.Of(s.Cache, s.All);
        using (var other = new LatentCache(_device, SmallQLoraAttention.Spec, 4, 2, 4))
        {
            var id = other.CreateSequence();
            var e = Expect<ArgumentException>(() => s.Layer.Decode(other, new[] { id }, s.Hidden(1)),
                "cache", "The cache holds dModel=64 heads=4 latent=64", "but this layer is dModel=32 heads=2 latent=32");
            Assert.Equal(0, other.GetLength(id));
            Assert.Equal(0, other.PagesUsed);
        }
        using (var otherDevice = MlaDevice.Create("cpu"))
        using (var elsewhere = new LatentCache(otherDevice, FaultAttention.Spec, 4, 2, 2))
        {
            var id = elsewhere.CreateSequence();
            Expect<ArgumentException>(() => s.Layer.Prefill(elsewhere, id, s.Hidden(2)),
                "cache", "another MlaDevice instance", "expected this layer's device");
            Assert.Equal(0, elsewhere.GetLength(id));
        }
        CacheState.Of(s.Cache, s.All).AssertSameAs(before, "foreign caches");
        s.AssertStillWorks();
    }

    /// <summary>
    /// A cache of the same shape made for a spec with more positions (IsSameShape ignores MaxPositions) would let
    /// tokens past this layer's MaxPositions through Reserve; the layer itself must refuse them.
    /// </summary>
    [Fact]
    public void FaultCacheWithMorePositionsCannotTakeTheLayerPastItsMaxPositions()
    {
        using var s = new Scenario(_device);
        Assert.True(LongContextAttention.Spec.IsSameShape(FaultAttention.Spec));
        using var roomy = new LatentCache(_device, LongContextAttention.Spec, numPages: 8, maxSequences: 2, maxPagesPerSequence: 4);
        var id = roomy.CreateSequence();
        roomy.Reserve(new[] { id }, new[] { 127 });
        var rows = roomy.ReadRows(id);
        ExpectOutOfRange(() => s.Layer.Prefill(roomy, id, s.Hidden(2)), "newTokens", 2, "holds 127 tokens", "would reach position 128", "expected positions 0..127");
        Assert.Equal(127, roomy.GetLength(id));
        Assert.Equal(rows, roomy.ReadRows(id));
        // Position 127 is the layer's last one; the token after it is refused although the cache has room.
        s.Layer.Decode(roomy, new[] { id }, s.Hidden(1));
        Assert.Equal(128, roomy.GetLength(id));
        rows = roomy.ReadRows(id);
        ExpectOutOfRange(() => s.Layer.Decode(roomy, new[] { id }, s.Hidden(1)), "newTokens", 1, "would reach position 128");
        Assert.Equal(128, roomy.GetLength(id));
        Assert.Equal(rows, roomy.ReadRows(id));
        Assert.Equal(2, roomy.PagesUsed);
    }

    [Fact]
    public void FaultDisposedLayerOrCacheThrowsObjectDisposed()
    {
        using var s = new Scenario(_device);
        var before = CacheState.Of(s.Cache, s.All);

        var weights = MlaWeights.Random(FaultAttention.Spec, 7);
        var disposedLayer = FaultAttention.CreateLayer(_device, weights);
        disposedLayer.Dispose();
        var e = Assert.Throws<ObjectDisposedException>(() => disposedLayer.Decode(s.Cache, new[] { s.A }, s.Hidden(1)));
        Assert.Contains(nameof(MlaLayer), e.ObjectName, StringComparison.Ordinal);
        Assert.Throws<ObjectDisposedException>(() => disposedLayer.Prefill(s.Cache, s.B, s.Hidden(2)));
        Assert.Throws<ObjectDisposedException>(() => disposedLayer.CreateCache(1, 1, 1));
        CacheState.Of(s.Cache, s.All).AssertSameAs(before, "disposed layer");

        var disposedCache = s.Layer.CreateCache(4, 2, 2);
        var id = disposedCache.CreateSequence();
        disposedCache.Dispose();
        var c = Assert.Throws<ObjectDisposedException>(() => s.Layer.Decode(disposedCache, new[] { id }, s.Hidden(1)));
        Assert.Contains(nameof(LatentCache), c.ObjectName, StringComparison.Ordinal);
        Assert.Throws<ObjectDisposedException>(() => s.Layer.Prefill(disposedCache, id, s.Hidden(3)));
        CacheState.Of(s.Cache, s.All).AssertSameAs(before, "disposed cache");
        s.AssertStillWorks();
    }

    [Fact]
    public void FaultCreateLayerWithWeightsOfAnotherShapeNamesWeights()
    {
        var random = MlaWeights.Random(SmallQLoraAttention.Spec, 3);
        var e = Expect<ArgumentException>(() => FaultAttention.CreateLayer(_device, random), "weights",
            "Weights are for dModel=64 heads=4 latent=64", "the layer is dModel=32 heads=2 latent=32");
        var created = MlaWeights.Create(RotateHalfYarnAttention.Spec, MlaWeights.Random(RotateHalfYarnAttention.Spec, 4).Tensors.Values);
        Expect<ArgumentException>(() => FaultAttention.CreateLayer(_device, created), "weights",
            "Weights are for dModel=48 heads=2 latent=40", "the layer is dModel=32");
        Assert.Throws<ArgumentException>(() => new MlaLayer(_device, FaultAttention.Spec, FaultAttention.LoadKernels(_device), random));
    }

    private static T Expect<T>(Func<object> call, string parameter, params string[] messageParts)
        where T : ArgumentException
    {
        var e = Assert.Throws<T>(call);
        Assert.Equal(parameter, e.ParamName);
        foreach (var part in messageParts)
            Assert.Contains(part, e.Message, StringComparison.Ordinal);
        return e;
    }

    private static ArgumentOutOfRangeException ExpectOutOfRange(Func<object> call, string parameter, object? actual, params string[] messageParts)
    {
        var e = Expect<ArgumentOutOfRangeException>(call, parameter, messageParts);
        if (actual is not null)
            Assert.Equal(actual, e.ActualValue);
        return e;
    }

    /// <summary>
    /// A layer and its cache with history: A holds 70 tokens (two pages), B 10 (or <c>lengthOfB</c>), a freed id and a
    /// stale id (its slot reused by C, 5 tokens). Rows are written by the layer, so they are real cache contents.
    /// </summary>
    private sealed class Scenario : IDisposable
    {
        private readonly Random _random = new(20260523);

        public Scenario(MlaDevice device, int numPages = 8, int lengthOfB = 10, bool freeAndStale = true)
        {
            Weights = MlaWeights.Random(FaultAttention.Spec, 11);
            Layer = FaultAttention.CreateLayer(device, Weights);
            Cache = Layer.CreateCache(numPages, maxSequences: 4, maxPagesPerSequence: 2);
            A = Cache.CreateSequence();
            B = Cache.CreateSequence();
            Layer.Prefill(Cache, A, Hidden(70));
            Layer.Prefill(Cache, B, Hidden(lengthOfB));
            var live = new List<SequenceId> { A, B };
            if (freeAndStale)
            {
                Stale = Cache.CreateSequence();
                Cache.FreeSequence(Stale);
                var c = Cache.CreateSequence(); // reuses the slot: Stale is stale now
                Layer.Prefill(Cache, c, Hidden(5));
                Freed = Cache.CreateSequence();
                Cache.FreeSequence(Freed);
                live.Add(c);
            }
            All = live.ToArray();
        }

        public MlaWeights Weights { get; }
        public MlaLayer Layer { get; }
        public LatentCache Cache { get; }
        public SequenceId A { get; }
        public SequenceId B { get; }
        public SequenceId Freed { get; }
        public SequenceId Stale { get; }
        public SequenceId[] All { get; }

        public float[] Hidden(int tokens)
        {
            var x = new float[tokens * D];
            for (int i = 0; i < x.Length; i++)
                x[i] = (float)(_random.NextDouble() * 2 - 1);
            return x;
        }

        /// <summary>After a refused call the layer and cache still serve a valid one.</summary>
        public void AssertStillWorks()
        {
            int length = Cache.GetLength(B);
            var result = Layer.Decode(Cache, new[] { B }, Hidden(1));
            Assert.All(result.Output, v => Assert.True(float.IsFinite(v)));
            Assert.Equal(length + 1, Cache.GetLength(B));
        }

        public void Dispose()
        {
            Cache.Dispose();
            Layer.Dispose();
        }
    }

    /// <summary>Everything observable about a cache from outside, rows included.</summary>
    private sealed record CacheState(int PagesUsed, int PagesFree, long TokensStored, int ActiveSequences, (SequenceId Id, int Length, int[] Pages, ushort[] Rows)[] Sequences)
    {
        public static CacheState Of(LatentCache cache, SequenceId[] ids) => new(
            cache.PagesUsed, cache.PagesFree, cache.TokensStored, cache.ActiveSequences,
            ids.Select(id => (id, cache.GetLength(id), cache.GetPages(id), cache.ReadRows(id))).ToArray());

        public void AssertSameAs(CacheState before, string what)
        {
            Assert.True(before.PagesUsed == PagesUsed, $"{what}: PagesUsed {before.PagesUsed} → {PagesUsed}");
            Assert.True(before.PagesFree == PagesFree, $"{what}: PagesFree {before.PagesFree} → {PagesFree}");
            Assert.True(before.TokensStored == TokensStored, $"{what}: TokensStored {before.TokensStored} → {TokensStored}");
            Assert.True(before.ActiveSequences == ActiveSequences, $"{what}: ActiveSequences {before.ActiveSequences} → {ActiveSequences}");
            for (int i = 0; i < Sequences.Length; i++)
            {
                var (id, length, pages, rows) = Sequences[i];
                Assert.True(before.Sequences[i].Length == length, $"{what}: {id} length {before.Sequences[i].Length} → {length}");
                Assert.True(before.Sequences[i].Pages.SequenceEqual(pages), $"{what}: {id} pages changed");
                Assert.True(before.Sequences[i].Rows.AsSpan().SequenceEqual(rows), $"{what}: {id} rows changed");
            }
        }
    }
}
