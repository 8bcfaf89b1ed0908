using System;
using System.Collections.Generic;
using System.Linq;
using MlaGen.Cache;
using MlaGen.Devices;
using MlaGen.Kernels;
using MlaGen.Reference;
using MlaGen.Weights;
using Xunit;

namespace MlaGen.Layer.Tests;

/// <summary>
/// The generated layer against the float64 non-absorbed reference. Stage checks feed the reference exactly what the
/// kernels saw (the BF16 cache rows) and hold to 1e-5; end-to-end checks include BF16 cache rounding and hold to 2e-2.
/// </summary>
[Collection(CpuCollection.Name)]
public class LayerCorrectnessTests
{
    private const double Fp32Tolerance = 1e-5;
    private const double Bf16Tolerance = 2e-2;
    private readonly MlaDevice _device;

    public LayerCorrectnessTests(CpuDeviceFixture fixture) => _device = fixture.Device;

    internal static (MlaSpec Spec, Func<MlaDevice, MlaWeights, MlaKernelPath, MlaLayer> Create) Shape(string name) => name switch
    {
        "SmallQLora" => (SmallQLoraAttention.Spec, SmallQLoraAttention.CreateLayer),
        "RotateHalfYarn" => (RotateHalfYarnAttention.Spec, RotateHalfYarnAttention.CreateLayer),
        "InterleavedYarn" => (InterleavedYarnAttention.Spec, InterleavedYarnAttention.CreateLayer),
        _ => throw new ArgumentException(name),
    };

    [Theory]
    [InlineData("SmallQLora", 1)]
    [InlineData("RotateHalfYarn", 3)]
    [InlineData("InterleavedYarn", 0)]
    public void VariableLengthBatchMatchesReference(string shape, int splits)
    {
        var (spec, create) = Shape(shape);
        using var h = new LayerHarness(_device, spec, create);
        int[] lengths = { 0, 1, 63, 64, 65, 300 };
        var ids = lengths.Select(_ => h.NewSequence()).ToArray();

        var (prefill, _) = h.Step(ids, lengths, splits);
        Assert.Equal(lengths.Sum(), prefill.Tokens);
        CheckAgainstReference(h, ids, lengths, prefill, stageTokensPerSequence: 2);

        var ones = lengths.Select(_ => 1).ToArray();
        var (decode, _) = h.Step(ids, ones, splits);
        CheckAgainstReference(h, ids, ones, decode, stageTokensPerSequence: 1);
        Assert.Equal(lengths.Select(l => l + 1), ids.Select(h.Cache.GetLength));
    }

    /// <summary>
    /// The warp kernels (what CUDA runs) on the CPU accelerator: slow there, so a small batch. Together with the serial
    /// runs above this shows both forms compute the same function.
    /// </summary>
    [Theory]
    [InlineData("SmallQLora")]
    [InlineData("RotateHalfYarn")]
    public void WarpPathMatchesReference(string shape)
    {
        var (spec, create) = Shape(shape);
        using var h = new LayerHarness(_device, spec, create, MlaKernelPath.Warp);
        Assert.Equal(MlaKernelPath.Warp, h.Layer.Kernels.Path);
        int[] lengths = { 0, 1, 5, 17 };
        var ids = lengths.Select(_ => h.NewSequence()).ToArray();
        var (prefill, _) = h.Step(ids, lengths, splits: 2);
        CheckAgainstReference(h, ids, lengths, prefill, stageTokensPerSequence: 2);
        var twos = lengths.Select(_ => 2).ToArray();
        var (decode, _) = h.Step(ids, twos, splits: 1);
        CheckAgainstReference(h, ids, twos, decode, stageTokensPerSequence: 2);
    }

    [Theory]
    [InlineData("SmallQLora", 2)]
    [InlineData("RotateHalfYarn", 3)]
    [InlineData("InterleavedYarn", 2)]
    [InlineData("InterleavedYarn", 3)]
    public void MultiTokenDecodeIsCausalAmongNewTokens(string shape, int newTokensPerSequence)
    {
        var (spec, create) = Shape(shape);
        using var h = new LayerHarness(_device, spec, create);
        int[] lengths = { 7, 40, 1 };
        var ids = lengths.Select(_ => h.NewSequence()).ToArray();
        h.Step(ids, lengths);
        var sq = lengths.Select(_ => newTokensPerSequence).ToArray();
        for (int step = 0; step < 2; step++)
        {
            var (result, _) = h.Step(ids, sq, splits: step + 1);
            CheckAgainstReference(h, ids, sq, result, stageTokensPerSequence: newTokensPerSequence);
        }
    }

    [Theory]
    [InlineData("SmallQLora")]
    [InlineData("RotateHalfYarn")]
    public void PrefillThenDecodeEqualsOneLongPrefill(string shape)
    {
        var (spec, create) = Shape(shape);
        using var h = new LayerHarness(_device, spec, create);
        var hidden = h.RandomHidden(135);
        var stepwise = h.Cache.CreateSequence();
        var whole = h.Cache.CreateSequence();
        int d = spec.DModel;

        h.Layer.Prefill(h.Cache, stepwise, hidden.AsSpan(0, 130 * d));
        var decoded = new List<float>();
        for (int t = 130; t < 135; t++)
            decoded.AddRange(h.Layer.Decode(h.Cache, new[] { stepwise }, hidden.AsSpan(t * d, d)).Output);
        var once = h.Layer.Prefill(h.Cache, whole, hidden, new MlaForwardOptions { Splits = 4, PoisonBuffers = true });

        var tail = once.Output.AsSpan(130 * d).ToArray().Select(v => (double)v).ToArray();
        Compare.AtMost(Compare.RelativeL2(decoded.ToArray(), tail), Fp32Tolerance, "130 + 5 decode vs 135 prefill", h.Context);
        Assert.Equal(h.Cache.ReadRows(stepwise), h.Cache.ReadRows(whole));

        var reference = NaiveMlaReference.Forward(spec, h.Weights, hidden, 135);
        Compare.AtMost(Compare.RelativeL2(decoded.ToArray(), reference.Output.AsSpan(130 * d)), Bf16Tolerance, "decode vs reference", h.Context);
    }

    [Theory]
    [InlineData("SmallQLora")]
    [InlineData("RotateHalfYarn")]
    [InlineData("InterleavedYarn")]
    public void GeneratedScaleAndFrequenciesMatchTheIndependentReference(string shape)
    {
        var (spec, _) = Shape(shape);
        double scale = NaiveMlaReference.SoftmaxScale(spec);
        Assert.True(Math.Abs(spec.SoftmaxScale - scale) <= 1e-7 * scale, $"softmax scale {spec.SoftmaxScale} vs {scale}");
        Assert.True(Math.Abs(spec.RopeAttentionFactor - NaiveMlaReference.RopeAttentionFactor(spec)) <= 1e-7);
        var frequencies = NaiveMlaReference.InverseFrequencies(spec);
        Assert.Equal(frequencies.Length, spec.InverseFrequencies.Count);
        for (int i = 0; i < frequencies.Length; i++)
            Assert.True(Math.Abs(spec.InverseFrequencies[i] - frequencies[i]) <= 1e-7 * frequencies[i], $"pair {i}");
    }

    /// <summary>
    /// End to end per sequence (≤ 2e-2, BF16 cache), and for a sample of tokens the stages fed identical inputs (≤ 1e-5):
    /// absorbed query, attention over the BF16 rows actually cached, and o_proj of the reference heads.
    /// </summary>
    private static void CheckAgainstReference(LayerHarness h, SequenceId[] ids, int[] newTokens, MlaForwardResult result, int stageTokensPerSequence)
    {
        var s = h.Spec;
        int d = s.DModel, heads = s.Heads, row = s.CacheRowValues;
        Assert.All(result.Output, v => Assert.True(float.IsFinite(v), "an output element was not written"));
        Assert.All(result.Lse, v => Assert.True(float.IsFinite(v), "an LSE element was not written"));
        int offset = 0;
        for (int i = 0; i < ids.Length; i++)
        {
            int n = newTokens[i];
            if (n == 0)
                continue;
            int length = h.Cache.GetLength(ids[i]);
            var reference = h.Reference(ids[i]);
            int first = length - n;
            string where = $"sequence of length {length}, {h.Context}";

            Compare.AtMost(Compare.RelativeL2(result.Output.AsSpan(offset * d, n * d), reference.Output.AsSpan(first * d, n * d)),
                Bf16Tolerance, "output end to end", where);
            Compare.AtMost(Compare.LseError(result.Lse.AsSpan(offset * heads, n * heads), reference.Lse.AsSpan(first * heads, n * heads)),
                Bf16Tolerance, "LSE end to end (relative, or absolute below |LSE| = 1)", where);

            var cached = h.Cache.ReadRows(ids[i]);
            var rows = Enumerable.Range(0, length).Select(t => cached.AsSpan(t * row, row).ToArray()).ToList();
            var expectedRows = reference.CacheRows.SelectMany(r => r.CKv.Concat(r.KPe)).ToArray();
            Compare.AtMost(Compare.RelativeL2(MlaGen.Numerics.Bf16.ToFloats(cached), expectedRows), Bf16Tolerance, "cache rows (BF16)", where);

            var history = h.History(ids[i]);
            foreach (int j in SampleTokens(n, stageTokensPerSequence))
            {
                int position = first + j;
                int callRow = offset + j;
                var q = NaiveMlaReference.QueryPath(s, h.Weights, history.AsSpan(position * d, d), position);
                var expectedQuery = AbsorbedQuery(s, h.Weights, q);
                Compare.AtMost(Compare.RelativeL2(result.AbsorbedQuery.AsSpan(callRow * heads * row, heads * row), expectedQuery),
                    Fp32Tolerance, "absorbed query (fp32 stage)", where);

                var attention = NaiveMlaReference.AttentionFromCache(s, h.Weights, q.Nope, q.Rope, rows, position + 1);
                Compare.AtMost(Compare.RelativeL2(result.LatentOutput.AsSpan(callRow * heads * s.LatentRank, heads * s.LatentRank), attention.Latent),
                    Fp32Tolerance, "latent attention output over the cached rows (fp32 stage)", where);
                Compare.AtMost(Compare.RelativeL2(result.Lse.AsSpan(callRow * heads, heads), attention.Lse),
                    Fp32Tolerance, "LSE over the cached rows (fp32 stage)", where);
                var projected = NaiveMlaReference.OutputProjection(s, h.Weights, attention.Heads);
                Compare.AtMost(Compare.RelativeL2(result.Output.AsSpan(callRow * d, d), projected),
                    Fp32Tolerance, "W_UV and o_proj over the cached rows (fp32 stage)", where);
            }
            offset += n;
        }
    }

    private static IEnumerable<int> SampleTokens(int n, int count) =>
        count >= n ? Enumerable.Range(0, n) : new[] { 0, n - 1 }.Concat(Enumerable.Range(1, count - 2).Select(k => k * n / count)).Distinct();

    /// <summary>[W_UKᵀ·q_nope | q_pe] per head in double: what the absorbed kernels must hold.</summary>
    private static double[] AbsorbedQuery(MlaSpec s, MlaWeights w, ReferenceQuery q)
    {
        var result = new double[s.Heads * s.CacheRowValues];
        var kvUp = w.KvBProj.Data;
        for (int head = 0; head < s.Heads; head++)
        {
            for (int n = 0; n < s.NopeHeadDim; n++)
            {
                double qn = q.Nope[head * s.NopeHeadDim + n];
                int weightRow = head * (s.NopeHeadDim + s.VHeadDim) + n;
                for (int c = 0; c < s.LatentRank; c++)
                    result[head * s.CacheRowValues + c] += qn * MlaGen.Numerics.Bf16.ToFloat(kvUp[weightRow * s.LatentRank + c]);
            }
            for (int r = 0; r < s.RopeDim; r++)
                result[head * s.CacheRowValues + s.LatentRank + r] = q.Rope[head * s.RopeDim + r];
        }
        return result;
    }
}
