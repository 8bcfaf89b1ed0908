using System;
using MlaGen.Numerics;
using MlaGen.Reference;
using MlaGen.Weights;
using Xunit;
using static MlaGen.Runtime.Tests.ReferenceTestSupport;

namespace MlaGen.Runtime.Tests;

/// <summary>
/// The absorbed form (what GPU kernels compute), written only here, must equal the reference's non-absorbed form in
/// double: q_lat = W_UKᵀ·q_nope scores against c_kv, and W_UV is applied after Σ p·c_kv.
/// </summary>
public sealed class ReferenceAbsorbedIdentityTests
{
    [Theory]
    [InlineData(0)]
    [InlineData(24)]
    public void AbsorbedScoresAndOutputsEqualTheNonAbsorbedReference(int qLatent)
    {
        var spec = SmallYarnSpec(qLatent);
        var weights = MlaWeights.Random(spec, seed: 21);
        const int tokenCount = 17;
        float[] x = RandomInput(tokenCount, spec.DModel, seed: 22);
        var cKv = new double[tokenCount][];
        var kPe = new double[tokenCount][];
        for (int t = 0; t < tokenCount; t++)
        {
            var row = NaiveMlaReference.KvPath(spec, weights, x.AsSpan(t * spec.DModel, spec.DModel), t);
            cKv[t] = row.CKv;
            kPe[t] = row.KPe;
        }
        int queryPosition = tokenCount - 1;
        var query = NaiveMlaReference.QueryPath(spec, weights, x.AsSpan(queryPosition * spec.DModel, spec.DModel), queryPosition);

        var reference = NaiveMlaReference.Attention(spec, weights, query.Nope, query.Rope, cKv, kPe, tokenCount);

        int nope = spec.NopeHeadDim, rope = spec.RopeDim, v = spec.VHeadDim, latent = spec.LatentRank;
        double scale = NaiveMlaReference.SoftmaxScale(spec);
        for (int h = 0; h < spec.Heads; h++)
        {
            // q_lat[c] = Σ_j W_UK[j, c]·q_nope[j]: W_UK is rows h·(nope+v) .. +nope of kv_b_proj.
            var queryLatent = new double[latent];
            for (int j = 0; j < nope; j++)
                for (int c = 0; c < latent; c++)
                    queryLatent[c] += KvB(spec, weights, h * (nope + v) + j, c) * query.Nope[h * nope + j];

            var scores = new double[tokenCount];
            double max = double.NegativeInfinity;
            for (int t = 0; t < tokenCount; t++)
            {
                double absorbed = Dot(queryLatent, cKv[t]);
                double nonAbsorbed = Dot(query.Nope.AsSpan(h * nope, nope), KNope(spec, weights, h, cKv[t]));
                AssertClose(nonAbsorbed, absorbed, 1e-12, $"q_nope·k_nope head {h} token {t}");
                scores[t] = scale * (absorbed + Dot(query.Rope.AsSpan(h * rope, rope), kPe[t]));
                max = Math.Max(max, scores[t]);
            }

            double sum = 0;
            var latentOut = new double[latent];
            for (int t = 0; t < tokenCount; t++)
            {
                double weight = Math.Exp(scores[t] - max);
                sum += weight;
                for (int c = 0; c < latent; c++)
                    latentOut[c] += weight * cKv[t][c];
            }
            for (int c = 0; c < latent; c++)
                latentOut[c] /= sum;

            // o_h[i] = Σ_c W_UV[i, c]·latentOut[c]: W_UV is rows h·(nope+v)+nope .. +v.
            var headOut = new double[v];
            for (int i = 0; i < v; i++)
                for (int c = 0; c < latent; c++)
                    headOut[i] += KvB(spec, weights, h * (nope + v) + nope + i, c) * latentOut[c];

            AssertClose(headOut, reference.Heads.AsSpan(h * v, v), 1e-12, $"W_UV·Σp·c_kv head {h}");
            AssertClose(latentOut, reference.Latent.AsSpan(h * latent, latent), 1e-12, $"Σp·c_kv head {h}");
            AssertClose(max + Math.Log(sum), reference.Lse[h], 1e-12, $"lse head {h}");
        }
    }

    private static double KvB(MlaSpec spec, MlaWeights weights, int row, int column) =>
        Bf16.ToFloat(weights.KvBProj.Data[row * spec.LatentRank + column]);

    /// <summary>k_nope of head h: W_UK·c_kv.</summary>
    private static double[] KNope(MlaSpec spec, MlaWeights weights, int head, double[] cKv)
    {
        int nope = spec.NopeHeadDim;
        var kNope = new double[nope];
        for (int j = 0; j < nope; j++)
            for (int c = 0; c < spec.LatentRank; c++)
                kNope[j] += KvB(spec, weights, head * (nope + spec.VHeadDim) + j, c) * cKv[c];
        return kNope;
    }
}
