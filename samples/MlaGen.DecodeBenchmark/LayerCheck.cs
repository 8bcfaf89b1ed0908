using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Linq;
using System.Threading.Tasks;
using ILGPU.Runtime;
using MlaGen.Cache;
using MlaGen.Devices;
using MlaGen.Kernels;
using MlaGen.Reference;
using MlaGen.Weights;

namespace MlaGen.DecodeBenchmark;

/// <summary>Outcome of the end-to-end layer check of one shape: the worst relative L2 of each comparison.</summary>
internal sealed record LayerCheckResult(
    string Shape, bool Passed, int Seed, int[] FinalLengths, int CheckedQueries,
    double EndToEndOutput, double EndToEndLse, double StageLatent, double StageLse, double StageOutput,
    double GpuSeconds, double ReferenceSeconds, string Detail);

/// <summary>
/// The whole layer of one shape on the device, against the float64 NON-absorbed reference (<see cref="NaiveMlaReference"/>):
/// fresh random weights, a few sequences prefilled in chunks (so their pages interleave), then a one-token and a
/// two-token decode step with poisoned buffers. Every new token of the short sequences and the last one of long
/// sequences is checked end to end (≤ 2e-2: BF16 cache, fp32 kernels) and, fed the BF16 rows the kernels cached,
/// stage by stage (≤ 1e-5: latent attention output, LSE, W_UV + o_proj).
/// The reference runs one task per (query, head): each head is a one-head slice of the layer (its q, kv_b rows and
/// o_proj columns), which is the same function, and o_proj sums the heads.
/// </summary>
internal static class LayerCheck
{
    public const double EndToEndTolerance = 2e-2;
    public const double StageTolerance = 1e-5;

    /// <summary>Stages on the tensor-core kernel: Q and P enter the MMA as bf16 (2^-9 relative each).</summary>
    public const double TensorCoreStageTolerance = 1e-2;
    private const int PrefillChunk = 512;
    private const int CheckAllNewTokensUpTo = 512;

    /// <param name="fullLength">When &gt; 0, one more sequence ends at exactly this length (its last token is checked).</param>
    public static LayerCheckResult Run(MlaDevice device, BenchShape shape, MlaKernelPath path, int seed, int fullLength, Action<string> log, bool tensorCores = true)
    {
        var spec = shape.Spec;
        var rng = new Random(seed);
        var prefill = new List<int> { 1, 64, 65, 333, 1000 };
        if (fullLength > 3)
            prefill.Add(fullLength - 3);
        int n = prefill.Count;
        int[] final = prefill.Select(p => p + 3).ToArray();
        int d = spec.DModel, heads = spec.Heads, latent = spec.LatentRank;

        var gpuWatch = Stopwatch.StartNew();
        var weights = MlaWeights.Random(spec, rng.Next());
        var history = final.Select(f => new float[(long)f * d]).ToArray();
        foreach (var x in history)
            for (long i = 0; i < x.Length; i++)
                x[i] = (float)(rng.NextDouble() * 2 - 1);

        MlaForwardResult step1, step2;
        ushort[][] cachedRows;
        using (var layer = shape.CreateLayer(device, weights, path))
        {
            int pagesPerSequence = (final.Max() + spec.PageSize - 1) / spec.PageSize;
            int numPages = final.Sum(f => (f + spec.PageSize - 1) / spec.PageSize) + n;
            using var cache = layer.CreateCache(numPages, n, pagesPerSequence);
            cache.PagesView.MemSet(0xFF); // NaN everywhere: a row no kernel wrote poisons the result
            var ids = Enumerable.Range(0, n).Select(_ => cache.CreateSequence()).ToArray();

            var poison = new MlaForwardOptions { PoisonBuffers = true, TensorCores = tensorCores };
            var done = new int[n];
            while (done.Zip(prefill).Any(p => p.First < p.Second))
            {
                var count = Enumerable.Range(0, n).Select(i => Math.Min(PrefillChunk, prefill[i] - done[i])).ToArray();
                var hidden = Gather(history, done, count, d);
                layer.Forward(cache, ids, count, hidden, poison);
                for (int i = 0; i < n; i++)
                    done[i] += count[i];
            }

            // The decode steps' stage checks read the absorbed query and latent output, which only the absorbed form has: with
            // short prefixes and 128 heads Auto may run a 2-token step expanded (it models that as faster), so name the form.
            var capture = new MlaForwardOptions
            {
                PoisonBuffers = true, CaptureIntermediates = true, TensorCores = tensorCores, Form = MlaAttentionForm.Absorbed,
            };
            var ones = Enumerable.Repeat(1, n).ToArray();
            step1 = layer.Forward(cache, ids, ones, Gather(history, done, ones, d), capture);
            for (int i = 0; i < n; i++)
                done[i] += 1;
            var twos = Enumerable.Repeat(2, n).ToArray();
            step2 = layer.Forward(cache, ids, twos, Gather(history, done, twos, d), capture);
            cachedRows = ids.Select(cache.ReadRows).ToArray();
        }
        double gpuSeconds = gpuWatch.Elapsed.TotalSeconds;

        // The queries to check: (sequence, position, result, row of that result).
        var queries = new List<(int Sequence, int Position, MlaForwardResult Result, int Row)>();
        for (int i = 0; i < n; i++)
        {
            bool all = final[i] <= CheckAllNewTokensUpTo;
            if (all)
                queries.Add((i, prefill[i], step1, i));
            for (int j = all ? 0 : 1; j < 2; j++)
                queries.Add((i, prefill[i] + 1 + j, step2, 2 * i + j));
        }
        log($"{shape.Key}: layer ran in {gpuSeconds:F1} s (sequences of {string.Join(", ", final)} tokens); float64 reference of {queries.Count} queries × {heads} heads...");

        var refWatch = Stopwatch.StartNew();
        var headSlices = Enumerable.Range(0, heads).Select(h => SliceHead(spec, weights, h)).ToArray();

        // Cache rows per sequence: the reference's own (float64, end to end) and the kernels' BF16 ones (stage).
        var needed = Enumerable.Range(0, n).Select(i => queries.Where(q => q.Sequence == i).Select(q => q.Position + 1).DefaultIfEmpty(0).Max()).ToArray();
        var refCKv = new double[n][][];
        var refKPe = new double[n][][];
        var bfCKv = new double[n][][];
        var bfKPe = new double[n][][];
        for (int i = 0; i < n; i++)
        {
            int count = needed[i];
            var rowsC = new double[count][];
            var rowsK = new double[count][];
            float[] x = history[i];
            Parallel.For(0, count, t =>
            {
                var row = NaiveMlaReference.KvPath(spec, weights, x.AsSpan((int)((long)t * d), d), t);
                rowsC[t] = row.CKv;
                rowsK[t] = row.KPe;
            });
            refCKv[i] = rowsC;
            refKPe[i] = rowsK;
            int rv = spec.CacheRowValues;
            bfCKv[i] = Enumerable.Range(0, count).Select(t => NaiveMlaReference.Bf16ToDoubles(cachedRows[i].AsSpan(t * rv, latent))).ToArray();
            bfKPe[i] = Enumerable.Range(0, count).Select(t => NaiveMlaReference.Bf16ToDoubles(cachedRows[i].AsSpan(t * rv + latent, spec.RopeDim))).ToArray();
        }

        var queryParts = new ReferenceQuery[queries.Count];
        Parallel.For(0, queries.Count, k =>
        {
            var (i, position, _, _) = queries[k];
            queryParts[k] = NaiveMlaReference.QueryPath(spec, weights, history[i].AsSpan((int)((long)position * d), d), position);
        });

        // One task per (query, head, {end to end, stage}); the long ones first so the pool stays busy.
        var e2e = new ReferenceAttention[queries.Count, heads];
        var stage = new ReferenceAttention[queries.Count, heads];
        var work = (from k in Enumerable.Range(0, queries.Count)
                    from h in Enumerable.Range(0, heads)
                    from kind in new[] { 0, 1 }
                    orderby queries[k].Position descending
                    select (k, h, kind)).ToArray();
        Parallel.ForEach(work, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount }, item =>
        {
            var (k, h, kind) = item;
            var (i, position, _, _) = queries[k];
            var (headSpec, headWeights) = headSlices[h];
            var q = queryParts[k];
            var qNope = q.Nope.AsSpan(h * spec.NopeHeadDim, spec.NopeHeadDim);
            var qPe = q.Rope.AsSpan(h * spec.RopeDim, spec.RopeDim);
            if (kind == 0)
                e2e[k, h] = NaiveMlaReference.Attention(headSpec, headWeights, qNope, qPe, refCKv[i], refKPe[i], position + 1);
            else
                stage[k, h] = NaiveMlaReference.Attention(headSpec, headWeights, qNope, qPe, bfCKv[i], bfKPe[i], position + 1);
        });

        double worstOut = 0, worstLse = 0, worstLatent = 0, worstStageLse = 0, worstStageOut = 0;
        var failures = new List<string>();
        for (int k = 0; k < queries.Count; k++)
        {
            var (i, position, result, r) = queries[k];
            var e2eHeads = Concat(heads, h => e2e[k, h].Heads);
            var stageHeads = Concat(heads, h => stage[k, h].Heads);
            var expectedOut = NaiveMlaReference.OutputProjection(spec, weights, e2eHeads);
            var expectedLse = Enumerable.Range(0, heads).Select(h => e2e[k, h].Lse[0]).ToArray();
            var stageLatent = Concat(heads, h => stage[k, h].Latent);
            var stageLse = Enumerable.Range(0, heads).Select(h => stage[k, h].Lse[0]).ToArray();
            var stageOut = NaiveMlaReference.OutputProjection(spec, weights, stageHeads);

            string where = $"sequence {i} position {position}";
            Track(ref worstOut, NaiveMlaReference.RelativeL2(result.Output.AsSpan(r * d, d), expectedOut), EndToEndTolerance, $"{where}: output end to end", failures);
            Track(ref worstLse, NaiveMlaReference.RelativeL2(result.Lse.AsSpan(r * heads, heads), expectedLse), EndToEndTolerance, $"{where}: LSE end to end", failures);
            Track(ref worstLatent, NaiveMlaReference.RelativeL2(result.LatentOutput!.AsSpan(r * heads * latent, heads * latent), stageLatent), result.UsedTensorCores ? TensorCoreStageTolerance : StageTolerance, $"{where}: latent output over the cached rows", failures);
            Track(ref worstStageLse, NaiveMlaReference.RelativeL2(result.Lse.AsSpan(r * heads, heads), stageLse), result.UsedTensorCores ? TensorCoreStageTolerance : StageTolerance, $"{where}: LSE over the cached rows", failures);
            Track(ref worstStageOut, NaiveMlaReference.RelativeL2(result.Output.AsSpan(r * d, d), stageOut), result.UsedTensorCores ? TensorCoreStageTolerance : StageTolerance, $"{where}: W_UV + o_proj over the cached rows", failures);
        }
        double refSeconds = refWatch.Elapsed.TotalSeconds;
        string detail = failures.Count == 0
            ? FormattableString.Invariant($"{queries.Count} queries: end to end output {worstOut:E2} LSE {worstLse:E2} (≤ {EndToEndTolerance:E0}); stage latent {worstLatent:E2} LSE {worstStageLse:E2} output {worstStageOut:E2} (≤ {(step1.UsedTensorCores ? TensorCoreStageTolerance : StageTolerance):E0}, {(step1.UsedTensorCores ? "tensor-core" : "general")} kernel)")
            : string.Join("; ", failures.Take(4)) + (failures.Count > 4 ? $" (+{failures.Count - 4} more)" : "");
        return new LayerCheckResult(shape.Key, failures.Count == 0, seed, final, queries.Count,
            worstOut, worstLse, worstLatent, worstStageLse, worstStageOut, gpuSeconds, refSeconds, detail);
    }

    private static void Track(ref double worst, double error, double tolerance, string what, List<string> failures)
    {
        worst = Math.Max(worst, error);
        if (!(error <= tolerance))
            failures.Add(FormattableString.Invariant($"{what}: rel L2 {error:E2} > {tolerance:E0}"));
    }

    private static double[] Concat(int heads, Func<int, double[]> part) => Enumerable.Range(0, heads).SelectMany(part).ToArray();

    /// <summary>Hidden states of tokens done[i] .. done[i] + count[i] − 1 of every sequence, sequence by sequence.</summary>
    private static float[] Gather(float[][] history, int[] done, int[] count, int d)
    {
        var hidden = new float[(long)count.Sum() * d];
        long offset = 0;
        for (int i = 0; i < history.Length; i++)
        {
            Array.Copy(history[i], (long)done[i] * d, hidden, offset, (long)count[i] * d);
            offset += (long)count[i] * d;
        }
        return hidden;
    }

    /// <summary>Head <paramref name="h"/> alone as a one-head layer: its q rows, kv_b rows and o_proj columns; shared tensors reused.</summary>
    private static (MlaSpec Spec, MlaWeights Weights) SliceHead(MlaSpec s, MlaWeights w, int h)
    {
        var spec = new MlaSpec(
            $"{s.Name}[head {h}]", s.DModel, 1, s.LatentRank, s.RopeDim, s.QLatentRank, s.NopeHeadDim, s.VHeadDim,
            s.RopeStyle, s.RopeTheta, s.YarnFactor, s.YarnOriginalMaxPositions, s.YarnBetaFast, s.YarnBetaSlow,
            s.YarnMscale, s.YarnMscaleAllDim, s.MaxPositions, s.PageSize, s.RmsNormEpsilon, s.SoftmaxScale,
            s.RopeAttentionFactor, s.InverseFrequencies.ToArray());
        var tensors = new List<Bf16Tensor>();
        foreach (var tensor in w.Tensors.Values)
        {
            switch (tensor.Name)
            {
                case MlaWeights.QProjName:
                case MlaWeights.QBProjName:
                    tensors.Add(Rows(tensor, h * s.QHeadDim, s.QHeadDim));
                    break;
                case MlaWeights.KvBProjName:
                    tensors.Add(Rows(tensor, h * (s.NopeHeadDim + s.VHeadDim), s.NopeHeadDim + s.VHeadDim));
                    break;
                case MlaWeights.OProjName:
                    tensors.Add(Columns(tensor, h * s.VHeadDim, s.VHeadDim));
                    break;
                default:
                    tensors.Add(tensor);
                    break;
            }
        }
        return (spec, MlaWeights.Create(spec, tensors));
    }

    private static Bf16Tensor Rows(Bf16Tensor t, int first, int count)
    {
        int columns = t.Shape[1];
        var data = new ushort[(long)count * columns];
        Array.Copy(t.Data, (long)first * columns, data, 0, data.Length);
        return new Bf16Tensor(t.Name, new[] { count, columns }, data);
    }

    private static Bf16Tensor Columns(Bf16Tensor t, int first, int count)
    {
        int rows = t.Shape[0], columns = t.Shape[1];
        var data = new ushort[(long)rows * count];
        for (int r = 0; r < rows; r++)
            Array.Copy(t.Data, (long)r * columns + first, data, (long)r * count, count);
        return new Bf16Tensor(t.Name, new[] { rows, count }, data);
    }
}
