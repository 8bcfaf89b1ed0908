using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Linq;
using ILGPU.Runtime;
using MlaGen;
using MlaGen.Cache;
using MlaGen.Devices;
using MlaGen.Numerics;
using MlaGen.Reference;
using MlaGen.Weights;
using Xunit;
using Xunit.Abstractions;

namespace MlaGen.Layer.Tests;

/// <summary>MaxPositions past 131,072 so one sequence can hold 131,072 tokens; small dims keep the float64 reference quick.</summary>
[MlaConfig(32, 2, 32, 8, NopeHeadDim = 16, VHeadDim = 16, PageSize = 64, MaxPositions = 262144)]
internal partial class LongContextAttention { }

/// <summary>
/// θ = 1e300 leaves every RoPE pair but the first (1 rad per position) unrotated, so a key built only from a fixed
/// direction is the same at every position: the logit tests steer scores to ±1e4 with it.
/// </summary>
[MlaConfig(32, 2, 32, 8, NopeHeadDim = 16, VHeadDim = 16, RopeTheta = 1e300, PageSize = 16, MaxPositions = 4096)]
internal partial class HugeLogitAttention { }

/// <summary>
/// Numerics at the edges: non-finite hidden states stay in their own sequence, logits of ±1e4 keep the online
/// softmax normalised, and a 131,072-token context decodes like the float64 reference.
/// </summary>
[Collection(CpuCollection.Name)]
public class NumericsEdgeTests
{
    private const double Fp32Tolerance = 1e-5;
    private const double Bf16Tolerance = 2e-2;
    private readonly MlaDevice _device;
    private readonly ITestOutputHelper _output;

    public NumericsEdgeTests(CpuDeviceFixture fixture, ITestOutputHelper output)
    {
        _device = fixture.Device;
        _output = output;
    }

    /// <summary>
    /// One batch holds a clean sequence beside sequences whose hidden states carry NaN, +∞ and −∞ (in prefill and in
    /// decode). The clean sequence's outputs, LSE and cache rows must be bit-identical to running it alone, and match
    /// the reference; the poisoned ones must really be poisoned, or the test proves nothing.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public void NumericsNonFiniteHiddenStatesNeverReachAnotherSequence(int splits)
    {
        var spec = LongContextAttention.Spec;
        var weights = MlaWeights.Random(spec, 101);
        var random = new Random(202);
        int d = spec.DModel;
        using var batched = LongContextAttention.CreateLayer(_device, weights);
        using var alone = LongContextAttention.CreateLayer(_device, weights);
        using var batchedCache = batched.CreateCache(16, 4, 4);
        using var aloneCache = alone.CreateCache(16, 4, 4);
        batchedCache.PagesView.MemSet(0xFF); // NaN in every row no kernel wrote
        aloneCache.PagesView.MemSet(0xFF);
        var clean = batchedCache.CreateSequence();
        var nan = batchedCache.CreateSequence();
        var inf = batchedCache.CreateSequence();
        var mixed = batchedCache.CreateSequence();
        var cleanAlone = aloneCache.CreateSequence();

        // (tokens per sequence: clean, NaN, +∞, mixed) per step; the clean one also has a step of 0 new tokens.
        int[][] steps = { new[] { 40, 20, 30, 7 }, new[] { 1, 1, 1, 1 }, new[] { 0, 2, 1, 1 }, new[] { 3, 1, 2, 5 }, new[] { 1, 1, 1, 1 } };
        var history = new List<float>();
        var options = new MlaForwardOptions { Splits = splits, PoisonBuffers = true, CaptureIntermediates = true };
        bool poisonedOutputSeen = false;
        foreach (var counts in steps)
        {
            var parts = counts.Select(n => RandomHidden(random, n * d)).ToArray();
            Poison(parts[1], random, float.NaN);
            Poison(parts[2], random, float.PositiveInfinity);
            Poison(parts[3], random, float.NegativeInfinity);
            Poison(parts[3], random, float.NaN);
            var together = batched.Forward(batchedCache, new[] { clean, nan, inf, mixed }, counts, parts.SelectMany(p => p).ToArray(), options);
            var single = alone.Forward(aloneCache, new[] { cleanAlone }, new[] { counts[0] }, parts[0], options);
            history.AddRange(parts[0]);

            int n = counts[0], heads = spec.Heads;
            AssertBitIdentical(single.Output, together.Output.AsSpan(0, n * d), "output");
            AssertBitIdentical(single.Lse, together.Lse.AsSpan(0, n * heads), "LSE");
            AssertBitIdentical(single.LatentOutput!, together.LatentOutput!.AsSpan(0, n * heads * spec.LatentRank), "latent output");
            Assert.All(single.Output, v => Assert.True(float.IsFinite(v)));
            // The poison must show in the other sequences' results as a non-finite output or LSE (a NaN is never turned into a quiet zero).
            poisonedOutputSeen |= together.Output.AsSpan(n * d).ToArray().Concat(together.Lse.AsSpan(n * heads).ToArray()).Any(v => !float.IsFinite(v));
            Assert.Equal(aloneCache.ReadRows(cleanAlone), batchedCache.ReadRows(clean));

            if (n > 0)
            {
                var reference = NaiveMlaReference.Forward(spec, weights, history.ToArray(), history.Count / d);
                int first = history.Count / d - n;
                Compare.AtMost(Compare.RelativeL2(together.Output.AsSpan(0, n * d), reference.Output.AsSpan(first * d, n * d)),
                    Bf16Tolerance, "clean sequence beside NaN/Inf ones, end to end", $"splits {splits}");
            }
        }
        Assert.True(poisonedOutputSeen, "the NaN/Inf sequences never produced a non-finite output or LSE: the poison did not take");
        Assert.Contains(batchedCache.ReadRows(nan), bits => float.IsNaN(Bf16.ToFloat(bits)));
    }

    /// <summary>
    /// Scores of about +1e4 for every key (prefill) and about −1e4 (a decode query pointing the other way): a softmax
    /// without the running max overflows or underflows to 0/0 there. Weights are shaped so the RoPE part of every
    /// score is one large constant (identical keys), the no-RoPE part an ordinary O(1) spread; the result must stay a
    /// convex combination of the cached latents, with finite LSE, and match the float64 reference.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    public void NumericsLogitsOfTenThousandKeepTheSoftmaxNormalised(int splits)
    {
        var spec = HugeLogitAttention.Spec;
        int d = spec.DModel, half = d / 2, heads = spec.Heads, row = spec.CacheRowValues, latent = spec.LatentRank;
        var weights = SteeredWeights(spec, seed: 303);
        var random = new Random(404);
        var direction = RandomHidden(random, half);

        // Calibrate: the RoPE score of a unit-scale query against a unit-scale key, per head.
        double scale = NaiveMlaReference.SoftmaxScale(spec);
        var unitKey = NaiveMlaReference.KvPath(spec, weights, Token(direction, 1, new float[half]), 0);
        var unitQuery = NaiveMlaReference.QueryPath(spec, weights, Token(direction, 1, new float[half]), 0);
        double unitScore = Enumerable.Range(0, heads).Max(h =>
            Math.Abs(scale * Enumerable.Range(0, spec.RopeDim).Sum(r => unitQuery.Rope[h * spec.RopeDim + r] * unitKey.KPe[r])));
        float magnitude = (float)Math.Sqrt(1e4 / unitScore);

        using var layer = HugeLogitAttention.CreateLayer(_device, weights);
        using var cache = layer.CreateCache(8, 2, 8);
        cache.PagesView.MemSet(0xFF);
        var id = cache.CreateSequence();
        var history = new List<float>();
        var options = new MlaForwardOptions { Splits = splits, CaptureIntermediates = true, PoisonBuffers = true };
        double lowestLse = double.PositiveInfinity, highestLse = double.NegativeInfinity;
        // 48 tokens with scores near +1e4 · sign(head), then two decodes pointing the other way (near −1e4 · sign).
        foreach (var (tokens, sign) in new[] { (48, 1f), (1, -1f), (1, -1f) })
        {
            var x = new float[tokens * d];
            for (int t = 0; t < tokens; t++)
                Token(direction, sign * magnitude, RandomHidden(random, half)).CopyTo(x, t * d);
            var result = layer.Forward(cache, new[] { id }, new[] { tokens }, x, options);
            history.AddRange(x);
            int length = cache.GetLength(id);
            Assert.All(result.Output, v => Assert.True(float.IsFinite(v), "output not finite"));
            Assert.All(result.Lse, v => Assert.True(float.IsFinite(v), "LSE not finite"));

            var reference = NaiveMlaReference.Forward(spec, weights, history.ToArray(), length);
            lowestLse = Math.Min(lowestLse, reference.Lse.Min());
            highestLse = Math.Max(highestLse, reference.Lse.Max());
            int first = length - tokens;
            Compare.AtMost(Compare.RelativeL2(result.Output, reference.Output.AsSpan(first * d, tokens * d)), Bf16Tolerance,
                "logits ~1e4: output end to end", $"splits {splits}, sign {sign}");
            Compare.AtMost(Compare.RelativeL2(result.Lse, reference.Lse.AsSpan(first * heads, tokens * heads)), Bf16Tolerance,
                "logits ~1e4: LSE end to end", $"splits {splits}, sign {sign}");

            // Fed exactly the BF16 rows the kernels saw, the float64 reference must agree closely.
            var cached = cache.ReadRows(id);
            var rows = Enumerable.Range(0, length).Select(t => cached.AsSpan(t * row, row).ToArray()).ToList();
            foreach (int j in new[] { 0, tokens / 2, tokens - 1 }.Distinct())
            {
                int position = first + j;
                var q = NaiveMlaReference.QueryPath(spec, weights, history.ToArray().AsSpan(position * d, d), position);
                var attention = NaiveMlaReference.AttentionFromCache(spec, weights, q.Nope, q.Rope, rows, position + 1);
                Compare.AtMost(Compare.RelativeL2(result.LatentOutput!.AsSpan(j * heads * latent, heads * latent), attention.Latent),
                    Bf16Tolerance, "logits ~1e4: latent output over the cached rows", $"splits {splits}");
                Compare.AtMost(Compare.RelativeL2(result.Lse.AsSpan(j * heads, heads), attention.Lse),
                    Bf16Tolerance, "logits ~1e4: LSE over the cached rows", $"splits {splits}");
                Compare.AtMost(Compare.RelativeL2(result.Output.AsSpan(j * d, d), NaiveMlaReference.OutputProjection(spec, weights, attention.Heads)),
                    Bf16Tolerance, "logits ~1e4: output over the cached rows", $"splits {splits}");

                // Normalised: each latent output is a convex combination of the visible c_kv rows.
                for (int h = 0; h < heads; h++)
                {
                    for (int c = 0; c < latent; c++)
                    {
                        double low = rows.Take(position + 1).Min(r => Bf16.ToFloat(r[c])), high = rows.Take(position + 1).Max(r => Bf16.ToFloat(r[c]));
                        float value = result.LatentOutput![(j * heads + h) * latent + c];
                        double slack = 1e-5 * Math.Max(1, Math.Abs(high - low));
                        Assert.True(value >= low - slack && value <= high + slack, $"latent {value} outside [{low}, {high}] (head {h}, channel {c}, position {position})");
                    }
                }
            }
        }
        // LSE ≈ the largest score, so the scores reached about +1e4 in some rows and −1e4 in others.
        _output.WriteLine($"reference LSE from {lowestLse:F0} to {highestLse:F0}");
        Assert.True(lowestLse is < -5e3 and > -5e4, $"no row had scores near -1e4 (lowest LSE {lowestLse})");
        Assert.True(highestLse is > 5e3 and < 5e4, $"no row had scores near +1e4 (highest LSE {highestLse})");
    }

    /// <summary>
    /// 131,071 cached tokens written through <see cref="LatentCache.WriteRows"/> (the external-producer path), then one
    /// decode through the layer at position 131,071, with one split and with eight. Against the float64 reference fed
    /// the same BF16 rows: output, LSE and latent output within 1e-5.
    /// </summary>
    [Fact]
    public void LseErrorIsRelativeAboveOneAndAbsoluteBelow()
    {
        // A 1-token row whose one score nearly cancels: LSE 1e-4 off by 2e-3 is a 0.2 % softmax denominator, not 2,000 %.
        Assert.Equal(2e-3, Compare.LseError(new[] { 0.0021f }, new[] { 1e-4 }), 6);
        // Large LSEs are compared relatively, and a real error still fails the end-to-end tolerance.
        Assert.Equal(0.01, Compare.LseError(new[] { 10.1f, 0f }, new[] { 10.0, 0.0 }), 4);
        Assert.True(Compare.LseError(new[] { 10f, 1.5f }, new[] { 10.0, 1.0 }) > 2e-2);
        Assert.Throws<Xunit.Sdk.EqualException>(() => Compare.LseError(new[] { 1f }, new[] { 1.0, 2.0 }));
    }

    [Fact]
    public void NumericsDecodeAt131072TokensMatchesTheReference()
    {
        const int Prefix = 131_071;
        var spec = LongContextAttention.Spec;
        int row = spec.CacheRowValues, heads = spec.Heads, latent = spec.LatentRank, d = spec.DModel;
        var weights = MlaWeights.Random(spec, 505);
        var random = new Random(606);
        var rows = new ushort[Prefix * row];
        for (int t = 0; t < Prefix; t++)
        {
            for (int c = 0; c < row; c++)
            {
                // c_kv as after RMSNorm (mean square ~1), k_pe of RoPE-key size.
                double bound = c < latent ? Math.Sqrt(3) : 1;
                rows[t * row + c] = Bf16.FromFloat((float)((random.NextDouble() * 2 - 1) * bound));
            }
        }
        var hidden = RandomHidden(random, d);

        var stopwatch = Stopwatch.StartNew();
        using var layer = LongContextAttention.CreateLayer(_device, weights);
        using var cache = layer.CreateCache(numPages: 2 * 2048, maxSequences: 2, maxPagesPerSequence: 2048);
        var results = new List<(int Splits, MlaForwardResult Result, SequenceId Id)>();
        foreach (int splits in new[] { 1, 8 })
        {
            var id = cache.CreateSequence();
            cache.Reserve(new[] { id }, new[] { Prefix });
            cache.WriteRows(id, 0, rows);
            var result = layer.Decode(cache, new[] { id }, hidden, new MlaForwardOptions { Splits = splits, CaptureIntermediates = true, PoisonBuffers = true });
            Assert.Equal(Prefix + 1, cache.GetLength(id));
            results.Add((splits, result, id));
        }
        var layerTime = stopwatch.Elapsed;

        var cached = cache.ReadRows(results[0].Id);
        Assert.True(cached.AsSpan(0, rows.Length).SequenceEqual(rows), "WriteRows then ReadRows changed the prefix");
        Assert.Equal(cached, cache.ReadRows(results[1].Id));
        var cacheRows = new List<ushort[]>(Prefix + 1);
        for (int t = 0; t <= Prefix; t++)
            cacheRows.Add(cached.AsSpan(t * row, row).ToArray());

        stopwatch.Restart();
        var q = NaiveMlaReference.QueryPath(spec, weights, hidden, Prefix);
        var attention = NaiveMlaReference.AttentionFromCache(spec, weights, q.Nope, q.Rope, cacheRows, Prefix + 1);
        var expected = NaiveMlaReference.OutputProjection(spec, weights, attention.Heads);
        _output.WriteLine($"layer (two decodes, cache fill included) {layerTime.TotalSeconds:F2} s, float64 reference {stopwatch.Elapsed.TotalSeconds:F2} s");

        foreach (var (splits, result, _) in results)
        {
            string where = $"131,072 tokens, splits {splits}";
            Compare.AtMost(Compare.RelativeL2(result.Output, expected), Fp32Tolerance, $"131k decode output (splits {splits})", where);
            Compare.AtMost(Compare.RelativeL2(result.Lse, attention.Lse), Fp32Tolerance, $"131k decode LSE (splits {splits})", where);
            Compare.AtMost(Compare.RelativeL2(result.LatentOutput!, attention.Latent), Fp32Tolerance, $"131k decode latent (splits {splits})", where);
            Assert.Equal(heads, result.Lse.Length);
        }
    }

    /// <summary>
    /// Random weights, then cut so that the first half of the hidden state (a fixed direction times a large scale)
    /// drives only the RoPE parts of q and k, and the second half (ordinary noise) only c_kv and q_nope. The RoPE
    /// pair 0, the only one θ = 1e300 still rotates, is cut from q, so the RoPE score does not depend on position.
    /// </summary>
    private static MlaWeights SteeredWeights(MlaSpec spec, int seed)
    {
        var weights = MlaWeights.Random(spec, seed);
        int d = spec.DModel, half = d / 2, latent = spec.LatentRank, qk = spec.QHeadDim, nope = spec.NopeHeadDim;
        var kvA = weights.KvAProjWithMqa.Data;
        for (int r = 0; r < latent + spec.RopeDim; r++)
            for (int c = 0; c < d; c++)
                if (r < latent ? c < half : c >= half)
                    kvA[r * d + c] = 0;
        var qProj = weights.QProj!.Data;
        for (int h = 0; h < spec.Heads; h++)
        {
            for (int r = 0; r < qk; r++)
            {
                bool rope = r >= nope;
                bool pairZero = r == nope || r == nope + 1; // interleaved pair 0: elements 0 and 1
                for (int c = 0; c < d; c++)
                    if (pairZero || (rope ? c >= half : c < half))
                        qProj[(h * qk + r) * d + c] = 0;
            }
        }
        return weights;
    }

    private static float[] Token(float[] direction, float magnitude, float[] noise)
    {
        var x = new float[direction.Length + noise.Length];
        for (int i = 0; i < direction.Length; i++)
            x[i] = direction[i] * magnitude;
        noise.CopyTo(x, direction.Length);
        return x;
    }

    private static float[] RandomHidden(Random random, int length)
    {
        var x = new float[length];
        for (int i = 0; i < x.Length; i++)
            x[i] = (float)(random.NextDouble() * 2 - 1);
        return x;
    }

    /// <summary>Puts <paramref name="value"/> into a few random places (one at least, when there is room).</summary>
    private static void Poison(float[] x, Random random, float value)
    {
        for (int k = 0; k < Math.Min(x.Length, 3); k++)
            x[random.Next(x.Length)] = value;
    }

    private static void AssertBitIdentical(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i]))
                Assert.Fail($"{what} [{i}]: {actual[i]:R} beside NaN/Inf sequences, {expected[i]:R} alone");
        }
    }
}
