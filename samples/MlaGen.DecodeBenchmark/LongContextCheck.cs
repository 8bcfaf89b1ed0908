using System;
using System.Diagnostics;
using System.Globalization;
using System.Linq;
using System.Threading.Tasks;
using MlaGen.Cache;
using MlaGen.Devices;
using MlaGen.Numerics;
using MlaGen.Reference;
using MlaGen.Weights;

namespace MlaGen.DecodeBenchmark;

/// <summary>
/// A 131,072-token sequence at the full shape: the prefix is written straight into the cache as random BF16 rows,
/// one token is decoded through the layer, and sampled heads are compared with the float64 non-absorbed form over the
/// identical rows (K_h = [W_UK·c_kv | k_pe] and V_h = W_UV·c_kv materialised for every row, in parallel).
/// </summary>
internal static class LongContextCheck
{
    public const int Length = 131_072;
    private const double Tolerance = 1e-2; // bf16 MMA operands on the tensor-core path

    public static bool Run(MlaDevice device, BenchShape shape, int seed, Action<string> log)
    {
        var spec = shape.Spec;
        var rng = new Random(seed);
        var weights = MlaWeights.Random(spec, rng.Next());
        using var layer = shape.CreateLayer(device, weights, Kernels.MlaKernelPath.Auto);
        int pages = Length / spec.PageSize;
        using var cache = layer.CreateCache(pages + 1, 1, pages);
        var id = cache.CreateSequence();
        cache.Reserve(new[] { id }, new[] { Length - 1 });
        var rows = new ushort[(long)(Length - 1) * spec.CacheRowValues];
        for (long i = 0; i < rows.Length; i++)
            rows[i] = Bf16.FromFloat((float)(rng.NextDouble() * 2 - 1));
        cache.WriteRows(id, 0, rows);
        var x = Soak.Hidden(rng, 1, spec.DModel);
        var clock = Stopwatch.StartNew();
        var result = layer.Decode(cache, new[] { id }, x, new MlaForwardOptions { CaptureIntermediates = true, PoisonBuffers = true });
        double layerSeconds = clock.Elapsed.TotalSeconds;
        var all = cache.ReadRows(id);

        var q = NaiveMlaReference.QueryPath(spec, weights, x, Length - 1);
        var kvUp = weights.KvBProj.Data;
        double scale = NaiveMlaReference.SoftmaxScale(spec);
        bool ok = true;
        clock.Restart();
        foreach (int head in new[] { 0, spec.Heads - 1 })
        {
            var (expected, expectedLse) = NaiveHead(spec, kvUp, q, all, head, scale);
            // Ours: W_UV · (Σ p·c_kv) of this head, from the captured latent output.
            var latent = result.LatentOutput!.AsSpan(head * spec.LatentRank, spec.LatentRank);
            var ours = new float[spec.VHeadDim];
            for (int d = 0; d < spec.VHeadDim; d++)
            {
                double sum = 0;
                long w = ((long)head * (spec.NopeHeadDim + spec.VHeadDim) + spec.NopeHeadDim + d) * spec.LatentRank;
                for (int c = 0; c < spec.LatentRank; c++)
                    sum += Bf16.ToFloat(kvUp[w + c]) * latent[c];
                ours[d] = (float)sum;
            }
            double error = NaiveMlaReference.RelativeL2(ours, expected);
            double lseError = Math.Abs(result.Lse[head] - expectedLse) / Math.Abs(expectedLse);
            bool pass = error <= Tolerance && lseError <= Tolerance;
            ok &= pass;
            log(string.Create(CultureInfo.InvariantCulture,
                $"{Length}-token decode ({spec.ShapeText}), head {head}: relative L2 {error:E2}, LSE {result.Lse[head]:F4} vs {expectedLse:F4} ({lseError:E1}) — {(pass ? "ok" : "FAILED")}; {(result.UsedTensorCores ? "tensor-core" : "general")} kernel, layer {layerSeconds:F2} s"));
        }
        log(string.Create(CultureInfo.InvariantCulture, $"float64 non-absorbed reference over {Length} rows × 2 heads took {clock.Elapsed.TotalSeconds:F1} s"));
        return ok;
    }

    /// <summary>One head, non-absorbed, in float64: scores against materialised keys, output as Σ p·v.</summary>
    private static (double[] Output, double Lse) NaiveHead(MlaSpec s, ushort[] kvUp, ReferenceQuery q, ushort[] rows, int head, double scale)
    {
        int n = rows.Length / s.CacheRowValues;
        int nope = s.NopeHeadDim, vDim = s.VHeadDim, latent = s.LatentRank, rope = s.RopeDim;
        var wUk = new double[nope * latent];
        var wUv = new double[vDim * latent];
        for (int r = 0; r < nope; r++)
            for (int c = 0; c < latent; c++)
                wUk[r * latent + c] = Bf16.ToFloat(kvUp[((long)head * (nope + vDim) + r) * latent + c]);
        for (int r = 0; r < vDim; r++)
            for (int c = 0; c < latent; c++)
                wUv[r * latent + c] = Bf16.ToFloat(kvUp[((long)head * (nope + vDim) + nope + r) * latent + c]);
        var scores = new double[n];
        Parallel.For(0, n, j =>
        {
            var ckv = new double[latent];
            long row = (long)j * s.CacheRowValues;
            for (int c = 0; c < latent; c++)
                ckv[c] = Bf16.ToFloat(rows[row + c]);
            double score = 0;
            for (int r = 0; r < nope; r++)
            {
                double k = 0;
                for (int c = 0; c < latent; c++)
                    k += wUk[r * latent + c] * ckv[c];
                score += q.Nope[head * nope + r] * k;
            }
            for (int r = 0; r < rope; r++)
                score += q.Rope[head * rope + r] * Bf16.ToFloat(rows[row + latent + r]);
            scores[j] = score * scale;
        });
        double max = scores.Max();
        double total = scores.Sum(v => Math.Exp(v - max));
        var output = new double[vDim];
        object gate = new();
        Parallel.For(0, n, () => new double[vDim], (j, _, partial) =>
        {
            double p = Math.Exp(scores[j] - max) / total;
            long row = (long)j * s.CacheRowValues;
            for (int d = 0; d < vDim; d++)
            {
                double v = 0;
                for (int c = 0; c < latent; c++)
                    v += wUv[d * latent + c] * Bf16.ToFloat(rows[row + c]);
                partial[d] += p * v;
            }
            return partial;
        }, partial => { lock (gate) for (int d = 0; d < vDim; d++) output[d] += partial[d]; });
        return (output, max + Math.Log(total));
    }
}
