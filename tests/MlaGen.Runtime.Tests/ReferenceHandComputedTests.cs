using System;
using System.Collections.Generic;
using MlaGen.Reference;
using MlaGen.Weights;
using Xunit;
using static MlaGen.Runtime.Tests.ReferenceTestSupport;

namespace MlaGen.Runtime.Tests;

/// <summary>
/// One head, every dimension 2, identity-like weights, two tokens: every number below is worked out on paper.
/// With d = 2 the only RoPE frequency is θ^0 = 1, so position p turns the pair by p radians.
/// </summary>
public sealed class ReferenceHandComputedTests
{
    private static readonly double Sqrt2 = Math.Sqrt(2);

    private static MlaSpec TinySpec(int qLatent = 0, double epsilon = 0) =>
        Spec(dModel: 4, heads: 1, latent: 2, rope: 2, qLatent: qLatent, nope: 2, v: 2, theta: 1e4, epsilon: epsilon);

    private static MlaWeights TinyWeights(MlaSpec spec, float[] kvNorm)
    {
        float[] identity4 = { 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1 };
        var values = new Dictionary<string, float[]>
        {
            [MlaWeights.QProjName] = identity4,
            // q-LoRA: q_a picks x0, x1; q_b maps [a, b] to q_nope = [a, b], q_pe = [a + b, 0].
            [MlaWeights.QAProjName] = new float[] { 1, 0, 0, 0, 0, 1, 0, 0 },
            [MlaWeights.QALayerNormName] = new float[] { 1, 0.5f },
            [MlaWeights.QBProjName] = new float[] { 1, 0, 0, 1, 1, 1, 0, 0 },
            [MlaWeights.KvAProjWithMqaName] = identity4,
            [MlaWeights.KvALayerNormName] = kvNorm,
            // W_UK = identity (rows 0–1), W_UV = diag(2, 1) (rows 2–3).
            [MlaWeights.KvBProjName] = new float[] { 1, 0, 0, 1, 2, 0, 0, 1 },
            // out = [o0, o1, 0, o0 + o1].
            [MlaWeights.OProjName] = new float[] { 1, 0, 0, 1, 0, 0, 1, 1 },
        };
        return ReferenceTestSupport.Weights(spec, values);
    }

    [Fact]
    public void TwoTokenLayerMatchesNumbersWorkedOutByHand()
    {
        var spec = TinySpec();
        var weights = TinyWeights(spec, new float[] { 1, 1 });
        // Token 0 at position 0, token 1 at position 1.
        float[] x = { 3, 4, 1, 0, 0, 2, 0, 1 };
        var layer = NaiveMlaReference.Forward(spec, weights, x, 2);

        // c_kv: [3, 4] / sqrt((9 + 16)/2) = [0.6√2, 0.8√2]; [0, 2] / sqrt(2) = [0, √2].
        AssertClose(new[] { 0.6 * Sqrt2, 0.8 * Sqrt2 }, layer.CacheRows[0].CKv, 1e-15, "c_kv 0");
        AssertClose(new[] { 0.0, Sqrt2 }, layer.CacheRows[1].CKv, 1e-15, "c_kv 1");
        // k_pe: (1, 0) unturned at position 0; (0, 1) turned by 1 rad is (−sin 1, cos 1).
        AssertClose(new[] { 1.0, 0.0 }, layer.CacheRows[0].KPe, 1e-15, "k_pe 0");
        AssertClose(new[] { -Math.Sin(1), Math.Cos(1) }, layer.CacheRows[1].KPe, 1e-15, "k_pe 1");

        // Token 0 sees only itself: p = 1, o = W_UV·c_kv0 = [1.2√2, 0.8√2]; out = [1.2√2, 0.8√2, 0, 2√2].
        // score = q_nope·k_nope + q_pe·k_pe = [3, 4]·[0.6√2, 0.8√2] + 1 = 5√2 + 1; scale 1/√4 = 0.5 → lse = 2.5√2 + 0.5.
        AssertClose(new[] { 1.697056274847714, 1.1313708498984762, 0, 2.8284271247461903 }, layer.Output.AsSpan(0, 4), 1e-14, "out 0");
        AssertClose(2.5 * Sqrt2 + 0.5, layer.Lse[0], 1e-14, "lse 0");
        AssertClose(4.035533905932738, layer.Lse[0], 1e-14, "lse 0 number");

        // Token 1: q_nope = [0, 2], q_pe = (−sin 1, cos 1).
        // s10 = [0, 2]·[0.6√2, 0.8√2] + (−sin 1)·1 = 1.6√2 − sin 1; s11 = [0, 2]·[0, √2] + 1 = 2√2 + 1.
        double a = 0.5 * (1.6 * Sqrt2 - Math.Sin(1));
        double b = 0.5 * (2 * Sqrt2 + 1);
        double p0 = Math.Exp(a) / (Math.Exp(a) + Math.Exp(b));
        double[] o1 = { p0 * 1.2 * Sqrt2, p0 * 0.8 * Sqrt2 + (1 - p0) * Sqrt2 };
        AssertClose(0.23083928544999072, p0, 1e-15, "p0");
        AssertClose(new[] { o1[0], o1[1], 0, o1[0] + o1[1] }, layer.Output.AsSpan(4, 4), 1e-14, "out 1");
        AssertClose(new[] { 0.39174725785426934, 1.3489223527307168, 0, 1.7406696105849861 }, layer.Output.AsSpan(4, 4), 1e-14, "out 1 numbers");
        AssertClose(Math.Log(Math.Exp(a) + Math.Exp(b)), layer.Lse[1], 1e-14, "lse 1");
        AssertClose(2.176668902072797, layer.Lse[1], 1e-14, "lse 1 number");
    }

    [Fact]
    public void QueryLoraPathMatchesNumbersWorkedOutByHand()
    {
        var spec = TinySpec(qLatent: 2);
        var weights = TinyWeights(spec, new float[] { 1, 1 });
        float[] x = { 3, 4, 1, 0 };

        // q_a·x = [3, 4] → RMSNorm [0.6√2, 0.8√2] → ·[1, 0.5] = [0.6√2, 0.4√2]; q_b → nope [0.6√2, 0.4√2], pe [√2, 0].
        var atZero = NaiveMlaReference.QueryPath(spec, weights, x, position: 0);
        AssertClose(new[] { 0.6 * Sqrt2, 0.4 * Sqrt2 }, atZero.Nope, 1e-15, "q_nope");
        AssertClose(new[] { Sqrt2, 0.0 }, atZero.Rope, 1e-15, "q_pe at 0");

        var atOne = NaiveMlaReference.QueryPath(spec, weights, x, position: 1);
        AssertClose(new[] { Sqrt2 * Math.Cos(1), Sqrt2 * Math.Sin(1) }, atOne.Rope, 1e-15, "q_pe at 1");
    }

    [Fact]
    public void RmsNormUsesEpsilonAndNormWeight()
    {
        var spec = TinySpec(epsilon: 0.5);
        var weights = TinyWeights(spec, new float[] { 2, 1 });
        // [3, 4] / sqrt(12.5 + 0.5) · [2, 1] = [6, 4] / √13.
        var row = NaiveMlaReference.KvPath(spec, weights, new float[] { 3, 4, 1, 0 }, position: 0);
        AssertClose(new[] { 6 / Math.Sqrt(13), 4 / Math.Sqrt(13) }, row.CKv, 1e-15, "c_kv");
    }
}
