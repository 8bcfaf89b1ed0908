using System;
using System.Diagnostics;
using MlaGen.Numerics;
using MlaGen.Reference;
using MlaGen.Weights;
using Xunit;
using Xunit.Abstractions;
using static MlaGen.Runtime.Tests.ReferenceTestSupport;

namespace MlaGen.Runtime.Tests;

/// <summary>Causality, agreement of Forward with its stages, the BF16 cache path and speed.</summary>
public sealed class ReferenceForwardTests
{
    private readonly ITestOutputHelper _output;

    public ReferenceForwardTests(ITestOutputHelper output) => _output = output;

    [Theory]
    [InlineData(0)]
    [InlineData(24)]
    public void TokenOutputEqualsLastOutputOfItsPrefix(int qLatent)
    {
        var spec = SmallYarnSpec(qLatent);
        var weights = MlaWeights.Random(spec, seed: 31);
        const int tokenCount = 12;
        float[] x = RandomInput(tokenCount, spec.DModel, seed: 32);
        var full = NaiveMlaReference.Forward(spec, weights, x, tokenCount);

        for (int t = 0; t < tokenCount; t++)
        {
            var prefix = NaiveMlaReference.Forward(spec, weights, x.AsSpan(0, (t + 1) * spec.DModel), t + 1);
            AssertClose(prefix.Output.AsSpan(t * spec.DModel, spec.DModel), full.Output.AsSpan(t * spec.DModel, spec.DModel), 1e-13, $"output of token {t}");
            AssertClose(prefix.Lse.AsSpan(t * spec.Heads, spec.Heads), full.Lse.AsSpan(t * spec.Heads, spec.Heads), 1e-13, $"lse of token {t}");
        }

        // A later token must not change an earlier one's output.
        float[] changed = (float[])x.Clone();
        for (int i = 6 * spec.DModel; i < 7 * spec.DModel; i++)
            changed[i] += 0.5f;
        var changedLayer = NaiveMlaReference.Forward(spec, weights, changed, tokenCount);
        AssertClose(full.Output.AsSpan(0, 6 * spec.DModel), changedLayer.Output.AsSpan(0, 6 * spec.DModel), 0, "tokens before the change");
        Assert.NotEqual(full.Output[6 * spec.DModel], changedLayer.Output[6 * spec.DModel]);
    }

    [Fact]
    public void ForwardEqualsItsStagesComposed()
    {
        var spec = SmallYarnSpec(qLatent: 24, style: RopeStyle.RotateHalf);
        var weights = MlaWeights.Random(spec, seed: 41);
        const int tokenCount = 10;
        float[] x = RandomInput(tokenCount, spec.DModel, seed: 42);
        var layer = NaiveMlaReference.Forward(spec, weights, x, tokenCount);

        var cKv = new double[tokenCount][];
        var kPe = new double[tokenCount][];
        for (int t = 0; t < tokenCount; t++)
        {
            var row = NaiveMlaReference.KvPath(spec, weights, x.AsSpan(t * spec.DModel, spec.DModel), t);
            (cKv[t], kPe[t]) = (row.CKv, row.KPe);
            AssertClose(row.CKv, layer.CacheRows[t].CKv, 0, $"c_kv of token {t}");
            AssertClose(row.KPe, layer.CacheRows[t].KPe, 0, $"k_pe of token {t}");
        }
        for (int t = 0; t < tokenCount; t++)
        {
            var query = NaiveMlaReference.QueryPath(spec, weights, x.AsSpan(t * spec.DModel, spec.DModel), t);
            var attention = NaiveMlaReference.Attention(spec, weights, query.Nope, query.Rope, cKv, kPe, t + 1);
            double[] output = NaiveMlaReference.OutputProjection(spec, weights, attention.Heads);
            AssertClose(output, layer.Output.AsSpan(t * spec.DModel, spec.DModel), 1e-13, $"output of token {t}");
            AssertClose(attention.Lse, layer.Lse.AsSpan(t * spec.Heads, spec.Heads), 1e-13, $"lse of token {t}");
        }
    }

    [Fact]
    public void AttentionFromBf16CacheRowsUsesExactlyTheRoundedValues()
    {
        var spec = SmallYarnSpec();
        var weights = MlaWeights.Random(spec, seed: 51);
        const int tokenCount = 20;
        float[] x = RandomInput(tokenCount, spec.DModel, seed: 52);
        var layer = NaiveMlaReference.Forward(spec, weights, x, tokenCount);
        var query = NaiveMlaReference.QueryPath(spec, weights, x.AsSpan((tokenCount - 1) * spec.DModel, spec.DModel), tokenCount - 1);

        var cacheRows = new ushort[tokenCount][];
        var roundedCKv = new double[tokenCount][];
        var roundedKPe = new double[tokenCount][];
        var exactCKv = new double[tokenCount][];
        var exactKPe = new double[tokenCount][];
        for (int t = 0; t < tokenCount; t++)
        {
            cacheRows[t] = NaiveMlaReference.ToCacheRowBf16(spec, layer.CacheRows[t]);
            // Layout [c_kv | k_pe], each value the BF16 rounding of the float of the double.
            roundedCKv[t] = new double[spec.LatentRank];
            roundedKPe[t] = new double[spec.RopeDim];
            for (int i = 0; i < spec.LatentRank; i++)
                roundedCKv[t][i] = Bf16.ToFloat(Bf16.FromFloat((float)layer.CacheRows[t].CKv[i]));
            for (int i = 0; i < spec.RopeDim; i++)
                roundedKPe[t][i] = Bf16.ToFloat(Bf16.FromFloat((float)layer.CacheRows[t].KPe[i]));
            (exactCKv[t], exactKPe[t]) = (layer.CacheRows[t].CKv, layer.CacheRows[t].KPe);
        }

        var fromCache = NaiveMlaReference.AttentionFromCache(spec, weights, query.Nope, query.Rope, cacheRows, tokenCount);
        var fromRounded = NaiveMlaReference.Attention(spec, weights, query.Nope, query.Rope, roundedCKv, roundedKPe, tokenCount);
        var fromExact = NaiveMlaReference.Attention(spec, weights, query.Nope, query.Rope, exactCKv, exactKPe, tokenCount);
        AssertClose(fromRounded.Heads, fromCache.Heads, 0, "heads from BF16 rows");
        AssertClose(fromRounded.Lse, fromCache.Lse, 0, "lse from BF16 rows");

        // BF16 rounding of the cache moves the result a little, not a lot.
        float[] cacheHeads = Array.ConvertAll(fromCache.Heads, value => (float)value);
        double error = NaiveMlaReference.RelativeL2(cacheHeads, fromExact.Heads);
        Assert.InRange(error, 1e-5, 2e-2);

        // Attending over fewer rows than given uses only the leading ones.
        var firstFive = NaiveMlaReference.AttentionFromCache(spec, weights, query.Nope, query.Rope, cacheRows, 5);
        var onlyFive = NaiveMlaReference.AttentionFromCache(spec, weights, query.Nope, query.Rope, cacheRows[..5], 5);
        AssertClose(onlyFive.Heads, firstFive.Heads, 0, "visible prefix");
        Assert.Throws<ArgumentOutOfRangeException>(
            () => NaiveMlaReference.AttentionFromCache(spec, weights, query.Nope, query.Rope, cacheRows, 0));
    }

    [Fact]
    public void TwoLayersOf300TokensRunQuickly()
    {
        var spec = Spec(dModel: 64, heads: 4, latent: 64, rope: 64, qLatent: 48, nope: 64, v: 64, yarnFactor: 40);
        var first = MlaWeights.Random(spec, seed: 61);
        var second = MlaWeights.Random(spec, seed: 62);
        const int tokenCount = 300;
        float[] x = RandomInput(tokenCount, spec.DModel, seed: 63);

        // CPU time of this process, not wall time: other builds share these cores and would make wall time flaky.
        using var process = Process.GetCurrentProcess();
        TimeSpan cpuBefore = process.TotalProcessorTime;
        var stopwatch = Stopwatch.StartNew();
        var layer1 = NaiveMlaReference.Forward(spec, first, x, tokenCount);
        float[] hidden = Array.ConvertAll(layer1.Output, value => (float)value);
        var layer2 = NaiveMlaReference.Forward(spec, second, hidden, tokenCount);
        stopwatch.Stop();
        process.Refresh();
        double cpuSeconds = (process.TotalProcessorTime - cpuBefore).TotalSeconds;
        _output.WriteLine($"2 layers × {tokenCount} tokens: {stopwatch.Elapsed.TotalMilliseconds:F0} ms wall, {cpuSeconds * 1000:F0} ms CPU");

        foreach (double value in layer2.Output)
            Assert.True(double.IsFinite(value));
        // Generous: the budget is well under a second; an accidental per-query rebuild of K and V takes several seconds.
        Assert.True(cpuSeconds < 3, $"took {cpuSeconds * 1000:F0} ms of CPU");
    }

    [Fact]
    public void DerivedValuesOfTheSpecAreNeverRead()
    {
        // Spec() sets SoftmaxScale, RopeAttentionFactor and InverseFrequencies to NaN; reading any would poison these.
        var spec = SmallYarnSpec(qLatent: 24);
        Assert.True(float.IsNaN(spec.SoftmaxScale) && float.IsNaN(spec.RopeAttentionFactor) && float.IsNaN(spec.InverseFrequencies[0]));
        var layer = NaiveMlaReference.Forward(spec, MlaWeights.Random(spec, seed: 71), RandomInput(5, spec.DModel, seed: 72), 5);
        foreach (double value in layer.Output)
            Assert.True(double.IsFinite(value));
        foreach (double value in layer.Lse)
            Assert.True(double.IsFinite(value));
    }
}
