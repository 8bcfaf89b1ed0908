using System;
using MlaGen.Reference;
using MlaGen.Weights;
using Xunit;
using static MlaGen.Runtime.Tests.ReferenceTestSupport;

namespace MlaGen.Runtime.Tests;

/// <summary>RoPE styles, position 0 and single rotations worked out by hand.</summary>
public sealed class ReferenceRopeTests
{
    [Theory]
    [InlineData(0)]
    [InlineData(24)]
    public void InterleavedAndRotateHalfAgreeWhenRopeRowsAreDeinterleaved(int qLatent)
    {
        var interleavedSpec = SmallYarnSpec(qLatent);
        var rotateHalfSpec = WithStyle(interleavedSpec, RopeStyle.RotateHalf);
        var interleavedWeights = MlaWeights.Random(interleavedSpec, seed: 11);
        var rotateHalfWeights = WithRopeRowsDeinterleaved(interleavedSpec, interleavedWeights);
        int rope = interleavedSpec.RopeDim;
        float[] tokens = RandomInput(2, interleavedSpec.DModel, seed: 5);
        ReadOnlySpan<float> queryToken = tokens.AsSpan(0, interleavedSpec.DModel);
        ReadOnlySpan<float> keyToken = tokens.AsSpan(interleavedSpec.DModel, interleavedSpec.DModel);

        foreach (int position in new[] { 0, 1, 7, 300, 5000, 100000 })
        {
            var qInterleaved = NaiveMlaReference.QueryPath(interleavedSpec, interleavedWeights, queryToken, position);
            var qRotateHalf = NaiveMlaReference.QueryPath(rotateHalfSpec, rotateHalfWeights, queryToken, position);
            var kInterleaved = NaiveMlaReference.KvPath(interleavedSpec, interleavedWeights, keyToken, position / 2);
            var kRotateHalf = NaiveMlaReference.KvPath(rotateHalfSpec, rotateHalfWeights, keyToken, position / 2);
            AssertClose(kInterleaved.CKv, kRotateHalf.CKv, 1e-14, "c_kv");
            AssertClose(qInterleaved.Nope, qRotateHalf.Nope, 1e-14, "q_nope");
            for (int h = 0; h < interleavedSpec.Heads; h++)
            {
                double interleavedScore = Dot(qInterleaved.Rope.AsSpan(h * rope, rope), kInterleaved.KPe);
                double rotateHalfScore = Dot(qRotateHalf.Rope.AsSpan(h * rope, rope), kRotateHalf.KPe);
                AssertClose(interleavedScore, rotateHalfScore, 1e-12, $"q_pe·k_pe head {h} at position {position}");
            }
            // Element by element, rotate-half's output is interleaved's output de-interleaved.
            for (int j = 0; j < rope; j++)
            {
                int source = j < rope / 2 ? 2 * j : 2 * (j - rope / 2) + 1;
                AssertClose(kInterleaved.KPe[source], kRotateHalf.KPe[j], 1e-12, $"k_pe[{j}] at position {position / 2}");
            }
        }

        // The whole layer agrees too.
        float[] x = RandomInput(9, interleavedSpec.DModel, seed: 6);
        var interleavedLayer = NaiveMlaReference.Forward(interleavedSpec, interleavedWeights, x, 9);
        var rotateHalfLayer = NaiveMlaReference.Forward(rotateHalfSpec, rotateHalfWeights, x, 9);
        AssertClose(interleavedLayer.Output, rotateHalfLayer.Output, 1e-12, "layer output");
        AssertClose(interleavedLayer.Lse, rotateHalfLayer.Lse, 1e-12, "lse");
    }

    [Theory]
    [InlineData(RopeStyle.Interleaved, 0)]
    [InlineData(RopeStyle.RotateHalf, 0)]
    [InlineData(RopeStyle.Interleaved, 24)]
    public void PositionZeroOnlyScalesByTheRopeAttentionFactor(RopeStyle style, int qLatent)
    {
        var spec = SmallYarnSpec(qLatent, style);
        var weights = MlaWeights.Random(spec, seed: 3);
        float[] x = RandomInput(1, spec.DModel, seed: 4);
        const double attentionFactor = 1.0857263992561355; // mscale(40, 1) / mscale(40, 0.707)
        int rope = spec.RopeDim;

        double[] kvA = MatVec(weights.KvAProjWithMqa, ToDoubles(x));
        var row = NaiveMlaReference.KvPath(spec, weights, x, position: 0);
        for (int i = 0; i < rope; i++)
            AssertClose(kvA[spec.LatentRank + i] * attentionFactor, row.KPe[i], 1e-13, $"k_pe[{i}]");

        if (qLatent == 0)
        {
            double[] q = MatVec(weights.QProj!, ToDoubles(x));
            var query = NaiveMlaReference.QueryPath(spec, weights, x, position: 0);
            for (int h = 0; h < spec.Heads; h++)
                for (int i = 0; i < rope; i++)
                    AssertClose(q[h * spec.QHeadDim + spec.NopeHeadDim + i] * attentionFactor, query.Rope[h * rope + i], 1e-13, $"q_pe head {h} [{i}]");
        }

        var unscaledSpec = Spec(qLatent: qLatent, style: style, yarnFactor: 40, mscale: 0.707, mscaleAllDim: 0.707);
        double[] values = { 0.5, -1.25, 2, 3, -4, 0.125, 7, -8, 1, 2, 3, 4, 5, 6, 7, 8 };
        AssertClose(values, NaiveMlaReference.ApplyRope(unscaledSpec, values, position: 0), 0, "unscaled RoPE at position 0");
    }

    [Fact]
    public void RopeRotatesEachPairByPositionTimesFrequencyByHand()
    {
        // d = 4, θ = 100: f = [1, 0.1]; position 2 → angles 2 and 0.2.
        double[] x = { 1, 2, 3, 4 };
        double c2 = Math.Cos(2), s2 = Math.Sin(2), c02 = Math.Cos(0.2), s02 = Math.Sin(0.2);

        // Interleaved: pairs (x0, x1) and (x2, x3).
        double[] interleaved = NaiveMlaReference.ApplyRope(Spec(rope: 4, theta: 100, style: RopeStyle.Interleaved), x, position: 2);
        double[] expectedInterleaved = { 1 * c2 - 2 * s2, 1 * s2 + 2 * c2, 3 * c02 - 4 * s02, 3 * s02 + 4 * c02 };
        AssertClose(expectedInterleaved, interleaved, 1e-15, "interleaved");
        AssertClose(new[] { -2.234741690198506, 0.0770037537313969, 2.1455224103434802, 4.5162743037501505 }, interleaved, 1e-14, "interleaved numbers");

        // Rotate-half: pairs (x0, x2) and (x1, x3).
        double[] rotateHalf = NaiveMlaReference.ApplyRope(Spec(rope: 4, theta: 100, style: RopeStyle.RotateHalf), x, position: 2);
        double[] expectedRotateHalf = { 1 * c2 - 3 * s2, 2 * c02 - 4 * s02, 1 * s2 + 3 * c2, 2 * s02 + 4 * c02 };
        AssertClose(expectedRotateHalf, rotateHalf, 1e-15, "rotate-half");

        // d = 2: f_0 = 1, so (1, 0) at position 1 turns by one radian to (cos 1, sin 1).
        double[] unit = NaiveMlaReference.ApplyRope(Spec(rope: 2, theta: 100), new double[] { 1, 0 }, position: 1);
        AssertClose(new[] { 0.5403023058681398, 0.8414709848078965 }, unit, 1e-15, "unit vector at position 1");
    }
}
