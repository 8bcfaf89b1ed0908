using System;
using System.Linq;
using MlaGen.Cache;
using MlaGen.Devices;
using MlaGen.Kernels;
using Xunit;

namespace MlaGen.Layer.Tests;

/// <summary>
/// The expanded (non-absorbed) form on the CPU accelerator, where it runs its serial kernels: prefill and chunked
/// prefill against the float64 reference, mixed with absorbed decode on the same cache, and the layer's form rule.
/// Its bf16 Q, K and V hold it to the end-to-end tolerance (the tensor-core kernels are checked on the GPU by the benchmark).
/// </summary>
[Collection(CpuCollection.Name)]
public class ExpandedFormTests
{
    private const double Bf16Tolerance = 2e-2;
    private const int H100Sms = 132;
    private readonly MlaDevice _device;

    public ExpandedFormTests(CpuDeviceFixture fixture) => _device = fixture.Device;

    [Theory]
    [InlineData("SmallQLora")]
    [InlineData("RotateHalfYarn")]
    [InlineData("InterleavedYarn")]
    public void ExpandedPrefillMatchesReference(string shape)
    {
        var (spec, create) = LayerCorrectnessTests.Shape(shape);
        using var h = new LayerHarness(_device, spec, create);
        Assert.Equal(ExpandedAttentionKind.Serial, h.Layer.Kernels.ExpandedForm);
        int[] lengths = { 0, 1, 63, 64, 65, 150 };
        var ids = lengths.Select(_ => h.NewSequence()).ToArray();
        var (result, _) = h.Step(ids, lengths, form: MlaAttentionForm.Expanded);
        Assert.Equal(MlaAttentionForm.Expanded, result.Form);
        Assert.Null(result.AbsorbedQuery);
        CheckEndToEnd(h, ids, lengths, result);
    }

    [Theory]
    [InlineData("SmallQLora")]
    [InlineData("RotateHalfYarn")]
    public void ChunkedPrefillThenAbsorbedDecodeMatchReference(string shape)
    {
        var (spec, create) = LayerCorrectnessTests.Shape(shape);
        using var h = new LayerHarness(_device, spec, create);
        var ids = new[] { h.NewSequence(), h.NewSequence() };
        var (first, _) = h.Step(ids, new[] { 40, 3 }, form: MlaAttentionForm.Absorbed);
        CheckEndToEnd(h, ids, new[] { 40, 3 }, first);
        // A chunk attends to the cached prefix and causally to itself; the second chunk spans a page boundary and two tiles.
        foreach (var chunk in new[] { new[] { 30, 70 }, new[] { 1, 66 } })
        {
            var (result, _) = h.Step(ids, chunk, form: MlaAttentionForm.Expanded);
            Assert.Equal(MlaAttentionForm.Expanded, result.Form);
            CheckEndToEnd(h, ids, chunk, result);
        }
        var (decode, _) = h.Step(ids, new[] { 1, 1 });
        Assert.Equal(MlaAttentionForm.Absorbed, decode.Form);
        CheckEndToEnd(h, ids, new[] { 1, 1 }, decode);
    }

    [Fact]
    public void ExpandedAndAbsorbedAgreeOnTheSameCall()
    {
        var (spec, create) = LayerCorrectnessTests.Shape("SmallQLora");
        using var h = new LayerHarness(_device, spec, create);
        var hidden = h.RandomHidden(90);
        var a = h.Cache.CreateSequence();
        var b = h.Cache.CreateSequence();
        var absorbed = h.Layer.Prefill(h.Cache, a, hidden, new MlaForwardOptions { Form = MlaAttentionForm.Absorbed, PoisonBuffers = true });
        var expanded = h.Layer.Prefill(h.Cache, b, hidden, new MlaForwardOptions { Form = MlaAttentionForm.Expanded, PoisonBuffers = true });
        Assert.Equal(h.Cache.ReadRows(a), h.Cache.ReadRows(b));
        var reference = absorbed.Output.Select(v => (double)v).ToArray();
        Compare.AtMost(Compare.RelativeL2(expanded.Output, reference), 1e-2, "expanded vs absorbed output", h.Context);
        Compare.AtMost(Compare.RelativeL2(expanded.Lse, absorbed.Lse.Select(v => (double)v).ToArray()), 1e-3, "expanded vs absorbed LSE", h.Context);
    }

    [Fact]
    public void AutoRunsAbsorbedWithoutTensorCoreExpandedKernels()
    {
        var (spec, create) = LayerCorrectnessTests.Shape("SmallQLora");
        using var h = new LayerHarness(_device, spec, create);
        var id = h.NewSequence();
        var (result, _) = h.Step(new[] { id }, new[] { 200 });
        Assert.Equal(MlaAttentionForm.Absorbed, result.Form);
    }

    [Fact]
    public void FormRuleKeepsDecodeAbsorbedAndSendsLongPromptsExpanded()
    {
        // DeepSeek-V3's attention shape (only its sizes matter to the rule).
        var v3 = new MlaSpec("V3", 7168, 128, 512, 64, 1536, 128, 128, RopeStyle.Interleaved, 10000, 1, 4096, 32, 1, 1, 1, 163840, 64,
            1e-6, 0.0722f, 1f, new float[32]);
        var h16 = new MlaSpec("H16", 2048, 16, 512, 64, 0, 128, 128, RopeStyle.Interleaved, 10000, 1, 4096, 32, 1, 1, 1, 163840, 64,
            1e-6, 0.0722f, 1f, new float[32]);
        // The pairs a GPU runs: mma.sync for both forms off Hopper, wgmma for both on it (the absorbed chunks are all wider than 16 rows).
        foreach (var (rate, absorbed) in new[]
        {
            (AttentionFormRule.MmaSyncRate, AttentionFormRule.MmaSyncAbsorbedTflops),
            (AttentionFormRule.WarpgroupRate, AttentionFormRule.WarpgroupAbsorbedTflops),
        })
        {
            bool hopper = rate == AttentionFormRule.WarpgroupRate;
            var (decodeAbsorbed, decodeExpanded) = AttentionFormRule.EstimateSeconds(v3, rate, absorbed, new[] { 1 }, new[] { 4095 }, H100Sms);
            Assert.True(decodeAbsorbed < decodeExpanded, $"{rate} decode: absorbed {decodeAbsorbed} s vs expanded {decodeExpanded} s");
            var (prefillAbsorbed, prefillExpanded) = AttentionFormRule.EstimateSeconds(v3, rate, absorbed, new[] { 4096 }, new[] { 0 }, H100Sms);
            Assert.True(prefillExpanded < prefillAbsorbed, $"{rate} prefill: absorbed {prefillAbsorbed} s vs expanded {prefillExpanded} s");
            var (chunkAbsorbed, chunkExpanded) = AttentionFormRule.EstimateSeconds(v3, rate, absorbed, new[] { 512 }, new[] { 16384 }, H100Sms);
            Assert.True(chunkExpanded < chunkAbsorbed, $"{rate} chunk 512 after 16384: absorbed {chunkAbsorbed} s vs expanded {chunkExpanded} s");
            // 16 heads, a 64-token chunk after 16,384 cached: 16 work items leave most SMs idle (and half of each 128-row
            // tile idle), so absorbed wins (measured 0.47 vs 0.90 ms on wgmma in docs/bench/h100-v9, 1.06 vs 1.88 ms on mma.sync).
            var (shortAbsorbed, shortExpanded) = AttentionFormRule.EstimateSeconds(h16, rate, absorbed, new[] { 64 }, new[] { 16384 }, H100Sms);
            Assert.True(shortAbsorbed < shortExpanded, $"{rate} H16 chunk 64 after 16384: absorbed {shortAbsorbed} s vs expanded {shortExpanded} s");
            // ...but with 4,096 cached it is expanded (measured 0.25 vs 0.41 ms on wgmma).
            var (nearAbsorbed, nearExpanded) = AttentionFormRule.EstimateSeconds(h16, rate, absorbed, new[] { 64 }, new[] { 4096 }, H100Sms);
            Assert.True(!hopper || nearExpanded < nearAbsorbed, $"{rate} H16 chunk 64 after 4096: absorbed {nearAbsorbed} s vs expanded {nearExpanded} s");
            // 128 heads, 64 tokens after 16,384: the wgmma decode kernel makes absorbed the faster form (measured 3.22 vs 4.30 ms).
            var (wideAbsorbed, wideExpanded) = AttentionFormRule.EstimateSeconds(v3, rate, absorbed, new[] { 64 }, new[] { 16384 }, H100Sms);
            Assert.True(!hopper || wideAbsorbed < wideExpanded, $"{rate} H128 chunk 64 after 16384: absorbed {wideAbsorbed} s vs expanded {wideExpanded} s");
        }
        var anyRate = AttentionFormRule.WarpgroupRate;
        Assert.Throws<ArgumentException>("starts", () => AttentionFormRule.EstimateSeconds(v3, anyRate, 100, new[] { 1, 2 }, new[] { 0 }, H100Sms));
        Assert.Throws<ArgumentOutOfRangeException>("multiprocessors", () => AttentionFormRule.EstimateSeconds(v3, anyRate, 100, new[] { 1 }, new[] { 0 }, 0));
        Assert.Throws<ArgumentOutOfRangeException>("absorbedTflops", () => AttentionFormRule.EstimateSeconds(v3, anyRate, 0, new[] { 1 }, new[] { 0 }, H100Sms));
        Assert.Equal(AttentionFormRule.WarpgroupAbsorbedTflops, AttentionFormRule.AbsorbedRateOf(DecodeAttentionKind.Warpgroup));
        Assert.Equal(AttentionFormRule.MmaSyncAbsorbedTflops, AttentionFormRule.AbsorbedRateOf(DecodeAttentionKind.TensorCore));
        Assert.Throws<ArgumentOutOfRangeException>("Tflops", () => new ExpandedAttentionRate(0, 64, 1));
        Assert.Throws<ArgumentOutOfRangeException>("QueryTile", () => new ExpandedAttentionRate(100, 0, 1));
        Assert.Throws<ArgumentOutOfRangeException>("CtasPerSm", () => new ExpandedAttentionRate(100, 64, 0));
        Assert.Same(AttentionFormRule.WarpgroupRate, AttentionFormRule.RateOf(ExpandedAttentionKind.Warpgroup));
        Assert.Same(AttentionFormRule.MmaSyncRate, AttentionFormRule.RateOf(ExpandedAttentionKind.TensorCore));
    }

    private static void CheckEndToEnd(LayerHarness h, SequenceId[] ids, int[] newTokens, MlaForwardResult result)
    {
        var s = h.Spec;
        int d = s.DModel, heads = s.Heads;
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
            string where = $"{result.Form} form, {n} new of {length}, {h.Context}";
            double output = Compare.RelativeL2(result.Output.AsSpan(offset * d, n * d), reference.Output.AsSpan(first * d, n * d));
            Compare.AtMost(output, Bf16Tolerance, "output end to end", where);
            MeasuredErrors.Record($"{result.Form} form end to end", output);
            Compare.AtMost(Compare.LseError(result.Lse.AsSpan(offset * heads, n * heads), reference.Lse.AsSpan(first * heads, n * heads)),
                Bf16Tolerance, "LSE end to end (relative, or absolute below |LSE| = 1)", where);
            offset += n;
        }
    }
}
