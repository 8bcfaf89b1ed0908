using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Diagnostics;
using System.Linq;
using System.Numerics;
using System.Threading.Tasks;
using ILGPU;
using ILGPU.Runtime;
using MlaGen.Cache;
using MlaGen.Devices;
using MlaGen.Kernels;
using MlaGen.Numerics;
using MlaGen.Reference;
using MlaGen.Weights;

namespace MlaGen.DecodeBenchmark;

/// <summary>Outcome of the end-to-end expanded-form layer check of one shape.</summary>
internal sealed record PrefillLayerCheckResult(
    string Shape, bool Passed, int Seed, string Calls, int CheckedTokens, double Output, double Lse, double GpuSeconds, double ReferenceSeconds, string Detail);

/// <summary>Outcome of one sampled stage check (expanded or absorbed attention of a benchmark case).</summary>
internal sealed record StageCheckResult(bool Passed, double OutputRelL2, double LseRelL2, int SampledRows, long NonFinite, long Scanned, double Tolerance, string Detail);

/// <summary>
/// The whole layer with <see cref="MlaAttentionForm.Expanded"/>, end to end against <see cref="NaiveMlaReference.Forward"/>
/// (float64, non-absorbed) on a few short sequences: fresh random weights and hidden states, poisoned buffers and a
/// poisoned cache. Call 1 prefills three sequences together (1, 65 and 66 tokens: partial and crossing query tiles),
/// call 2 prefills a fourth (20 tokens), call 3 appends chunks to two of them (3 tokens after 65, 45 after 20), so
/// its queries attend to a cached prefix and causally to their chunk. Every new token is compared: output and LSE,
/// relative L2 per call and sequence ≤ 2e-2 (the decode benchmark's end-to-end bound: BF16 cache, bf16 operands).
/// </summary>
internal static class PrefillLayerCheck
{
    public const double Tolerance = LayerCheck.EndToEndTolerance;

    public static PrefillLayerCheckResult Run(MlaDevice device, BenchShape shape, MlaKernelPath path, int seed, Action<string> log)
    {
        var spec = shape.Spec;
        var rng = new Random(seed);
        int d = spec.DModel;
        // Per sequence: the tokens each call appends (0: not in that call).
        int[][] calls =
        {
            new[] { 1, 65, 66, 0 },
            new[] { 0, 0, 0, 20 },
            new[] { 0, 3, 0, 45 },
        };
        int n = calls[0].Length;
        var final = Enumerable.Range(0, n).Select(i => calls.Sum(c => c[i])).ToArray();
        var weights = MlaWeights.Random(spec, rng.Next());
        var history = final.Select(f => Soak.Hidden(rng, f, d)).ToArray();

        var gpuWatch = Stopwatch.StartNew();
        var results = new List<(int Call, int Sequence, int Start, int Count, float[] Output, float[] Lse)>();
        using (var layer = shape.CreateLayer(device, weights, path))
        {
            int pagesPerSequence = (final.Max() + spec.PageSize - 1) / spec.PageSize;
            using var cache = layer.CreateCache(n * pagesPerSequence + n, n, pagesPerSequence);
            cache.PagesView.MemSet(0xFF); // NaN: a row no kernel wrote poisons the result
            device.Accelerator.Synchronize();
            var ids = Enumerable.Range(0, n).Select(_ => cache.CreateSequence()).ToArray();
            var options = new MlaForwardOptions { Form = MlaAttentionForm.Expanded, PoisonBuffers = true };
            var done = new int[n];
            for (int c = 0; c < calls.Length; c++)
            {
                var members = Enumerable.Range(0, n).Where(i => calls[c][i] > 0).ToArray();
                var counts = members.Select(i => calls[c][i]).ToArray();
                var hidden = new float[(long)counts.Sum() * d];
                long offset = 0;
                foreach (int i in members)
                {
                    Array.Copy(history[i], (long)done[i] * d, hidden, offset, (long)calls[c][i] * d);
                    offset += (long)calls[c][i] * d;
                }
                var result = layer.Forward(cache, members.Select(i => ids[i]).ToArray(), counts, hidden, options);
                if (result.Form != MlaAttentionForm.Expanded)
                    throw new InvalidOperationException($"call {c + 1} asked for the expanded form, the layer ran {result.Form}");
                int row = 0;
                foreach (int i in members)
                {
                    int count = calls[c][i];
                    results.Add((c + 1, i, done[i], count,
                        result.Output.AsSpan(row * d, count * d).ToArray(),
                        result.Lse.AsSpan(row * spec.Heads, count * spec.Heads).ToArray()));
                    row += count;
                    done[i] += count;
                }
            }
        }
        double gpuSeconds = gpuWatch.Elapsed.TotalSeconds;
        log($"{shape.Key}: expanded-form layer ran in {gpuSeconds:F1} s (sequences of {string.Join(", ", final)} tokens in 3 calls); float64 reference (NaiveMlaReference.Forward)...");

        var refWatch = Stopwatch.StartNew();
        var reference = new ReferenceForward[n];
        Parallel.For(0, n, i => reference[i] = NaiveMlaReference.Forward(spec, weights, history[i], final[i]));
        double refSeconds = refWatch.Elapsed.TotalSeconds;

        double worstOut = 0, worstLse = 0;
        var failures = new List<string>();
        foreach (var (call, i, start, count, output, lse) in results)
        {
            double outError = NaiveMlaReference.RelativeL2(output, reference[i].Output.AsSpan(start * d, count * d));
            double lseError = NaiveMlaReference.RelativeL2(lse, reference[i].Lse.AsSpan(start * spec.Heads, count * spec.Heads));
            worstOut = Math.Max(worstOut, outError);
            worstLse = Math.Max(worstLse, lseError);
            string where = $"call {call} sequence {i} tokens {start}..{start + count - 1}";
            if (!(outError <= Tolerance))
                failures.Add(FormattableString.Invariant($"{where}: output rel L2 {outError:E2} > {Tolerance:E0}"));
            if (!(lseError <= Tolerance))
                failures.Add(FormattableString.Invariant($"{where}: LSE rel L2 {lseError:E2} > {Tolerance:E0}"));
        }
        int tokens = results.Sum(r => r.Count);
        string detail = failures.Count == 0
            ? FormattableString.Invariant($"{tokens} new tokens in 3 calls (prefill, prefill, chunks after cached prefixes): output {worstOut:E2}, LSE {worstLse:E2} (≤ {Tolerance:E0})")
            : string.Join("; ", failures.Take(4)) + (failures.Count > 4 ? $" (+{failures.Count - 4} more)" : "");
        string callText = string.Join("; ", calls.Select(c => string.Join(" ", c)));
        return new PrefillLayerCheckResult(shape.Key, failures.Count == 0, seed, callText, tokens, worstOut, worstLse, gpuSeconds, refSeconds, detail);
    }
}

/// <summary>
/// Per (sequence, head): every key of the sequence expanded in float64 from its BF16 cache row and the BF16 kv_b
/// weights, K_nope = W_UK·c_kv and V = W_UV·c_kv, with the row's k_pe; shared by the checks of one case.
/// </summary>
internal sealed class ExpandedKeys
{
    private readonly ConcurrentDictionary<(int Sequence, int Head), (double[] KNope, double[] KPe, double[] Value)> _heads = new();
    private readonly ConcurrentDictionary<int, ushort[]> _rows = new();
    private readonly MlaSpec _spec;
    private readonly MlaWeights _weights;
    private readonly LatentCache _cache;
    private readonly SequenceId[] _ids;

    public ExpandedKeys(MlaSpec spec, MlaWeights weights, LatentCache cache, SequenceId[] ids)
    {
        _spec = spec;
        _weights = weights;
        _cache = cache;
        _ids = ids;
    }

    /// <summary>The sequence's BF16 cache rows as the kernels read them (copied back once).</summary>
    public ushort[] Rows(int sequence) => _rows.GetOrAdd(sequence, s => _cache.ReadRows(_ids[s]));

    public (double[] KNope, double[] KPe, double[] Value) Head(int sequence, int head) =>
        _heads.GetOrAdd((sequence, head), key => Expand(Rows(key.Sequence), key.Head));

    private (double[] KNope, double[] KPe, double[] Value) Expand(ushort[] rows, int head)
    {
        int latent = _spec.LatentRank, rope = _spec.RopeDim, nope = _spec.NopeHeadDim, v = _spec.VHeadDim, row = _spec.CacheRowValues;
        int keys = rows.Length / row;
        var w = new double[(nope + v) * latent];
        var data = _weights.KvBProj.Data;
        long first = (long)head * (nope + v) * latent;
        for (int i = 0; i < w.Length; i++)
            w[i] = Bf16.ToFloat(data[first + i]);
        var kNope = new double[(long)keys * nope];
        var value = new double[(long)keys * v];
        var kPe = new double[(long)keys * rope];
        Parallel.For(0, keys, () => new double[latent], (t, _, c) =>
        {
            for (int i = 0; i < latent; i++)
                c[i] = Bf16.ToFloat(rows[(long)t * row + i]);
            for (int i = 0; i < rope; i++)
                kPe[(long)t * rope + i] = Bf16.ToFloat(rows[(long)t * row + latent + i]);
            for (int j = 0; j < nope; j++)
                kNope[(long)t * nope + j] = Dot(w.AsSpan(j * latent, latent), c);
            for (int j = 0; j < v; j++)
                value[(long)t * v + j] = Dot(w.AsSpan((nope + j) * latent, latent), c);
            return c;
        }, _ => { });
        return (kNope, kPe, value);
    }

    internal static double Dot(ReadOnlySpan<double> a, ReadOnlySpan<double> b)
    {
        var sum = Vector<double>.Zero;
        int i = 0;
        int width = Vector<double>.Count;
        for (; i + width <= a.Length; i += width)
            sum += new Vector<double>(a.Slice(i, width)) * new Vector<double>(b.Slice(i, width));
        double total = Vector.Sum(sum);
        for (; i < a.Length; i++)
            total += a[i] * b[i];
        return total;
    }
}

/// <summary>
/// Stage checks of one benchmark case, on the launch that is timed: outputs poisoned (NaN) before the launch, scanned
/// for values not written, and sampled (token, head) rows compared with float64 over the identical BF16 cache rows.
/// </summary>
internal static class PrefillStageCheck
{
    /// <summary>bf16 Q, K, V and P in the MMAs (2^-9 relative each), as the tensor-core decode stage bound.</summary>
    public const double TensorCoreTolerance = LayerCheck.TensorCoreStageTolerance;

    /// <summary>Values scanned for NaN per output buffer; larger buffers are scanned in evenly spaced blocks up to this.</summary>
    private const long ScanLimit = 1L << 30;

    /// <summary>The samples: sequences 0 and B−1; the chunk's first and last token and one random; heads 0 and H−1.</summary>
    public static (int Sequence, int Token, int Head)[] Samples(PrefillCase c, int seed, int maxHeads = 2)
    {
        var rng = new Random(seed);
        var sequences = new[] { 0, c.Batch - 1 }.Distinct();
        var tokens = new[] { 0, c.Chunk - 1, rng.Next(c.Chunk) }.Distinct().ToArray();
        var heads = new[] { 0, c.Heads - 1 }.Distinct().Take(maxHeads).ToArray();
        return sequences.SelectMany(s => tokens.SelectMany(j => heads.Select(h => (s, j, h)))).ToArray();
    }

    /// <summary>
    /// Expanded attention: q = the fp32 query as filled (before RoPE), RoPE applied to q_pe in float64 at the token's
    /// position; K_h = [W_UK·c_kv | k_pe], V_h = W_UV·c_kv in float64; softmax(scale·q·K) over positions 0..position.
    /// </summary>
    public static StageCheckResult Expanded(Accelerator accelerator, PrefillCase c, ExpandedAttentionLaunch plan, ExpandedKeys keys,
        ulong querySeed, float amplitude, int seed, int maxHeads = 2)
    {
        var spec = c.Shape.Spec;
        int heads = c.Heads, nope = spec.NopeHeadDim, rope = spec.RopeDim, qk = c.QkDim, v = c.VDim;
        var stream = accelerator.DefaultStream;
        plan.HeadOutput.MemSet(stream, 0xFF);
        plan.Lse.MemSet(stream, 0xFF);
        plan.Launch(stream);
        stream.Synchronize();
        long outValues = c.Tokens * heads * v, lseValues = c.Tokens * heads;
        var (badOut, scannedOut) = CountNonFinite(plan.HeadOutput.SubView(0, outValues));
        var (badLse, scannedLse) = CountNonFinite(plan.Lse.SubView(0, lseValues));

        double scale = NaiveMlaReference.SoftmaxScale(spec);
        var samples = Samples(c, seed, maxHeads);
        var expectedOut = new double[samples.Length][];
        var expectedLse = new double[samples.Length];
        var actualOut = new float[samples.Length * v];
        var actualLse = new float[samples.Length];
        for (int k = 0; k < samples.Length; k++)
        {
            var (s, j, h) = samples[k];
            long token = (long)s * c.Chunk + j;
            long rowIndex = token * heads + h;
            plan.HeadOutput.SubView(rowIndex * v, v).CopyToCPU(actualOut.AsSpan(k * v, v));
            plan.Lse.SubView(rowIndex, 1).CopyToCPU(actualLse.AsSpan(k, 1));
        }
        // Expand per (sequence, head) once, in parallel inside; then each sample in parallel.
        foreach (var group in samples.Select(x => (x.Sequence, x.Head)).Distinct())
            keys.Head(group.Sequence, group.Head);
        Parallel.For(0, samples.Length, k =>
        {
            var (s, j, h) = samples[k];
            long token = (long)s * c.Chunk + j;
            int position = c.Prefix + j;
            long qStart = (token * heads + h) * qk;
            var qNope = new double[nope];
            var qRaw = new double[rope];
            for (int i = 0; i < nope; i++)
                qNope[i] = DeviceFill.ValueAt(querySeed, qStart + i, amplitude);
            for (int i = 0; i < rope; i++)
                qRaw[i] = DeviceFill.ValueAt(querySeed, qStart + nope + i, amplitude);
            double[] qPe = NaiveMlaReference.ApplyRope(spec, qRaw, position);
            var (kNope, kPe, value) = keys.Head(s, h);
            (expectedOut[k], expectedLse[k]) = AttentionCheck.Attend(position + 1, scale,
                t => ExpandedKeys.Dot(qNope, kNope.AsSpan(t * nope, nope)) + ExpandedKeys.Dot(qPe, kPe.AsSpan(t * rope, rope)),
                (t, w, output) =>
                {
                    for (int i = 0; i < v; i++)
                        output[i] += w * value[t * v + i];
                }, v);
        });
        return Compare(samples.Length, actualOut, expectedOut.SelectMany(x => x).ToArray(), actualLse, expectedLse,
            badOut + badLse, scannedOut + scannedLse, TensorCoreTolerance, "head output");
    }

    /// <summary>
    /// Absorbed attention: the absorbed query as filled, softmax(scale·q·row) over the BF16 cache rows at positions
    /// 0..position, weighted sum of their latent part (before W_UV), natural-log LSE.
    /// </summary>
    public static StageCheckResult Absorbed(Accelerator accelerator, PrefillCase c, AttentionLaunch plan, ExpandedKeys keys,
        ulong querySeed, float amplitude, int seed)
    {
        var spec = c.Shape.Spec;
        int heads = c.Heads, row = spec.CacheRowValues, latent = spec.LatentRank;
        var stream = accelerator.DefaultStream;
        plan.LatentOutput.MemSet(stream, 0xFF);
        plan.Lse.MemSet(stream, 0xFF);
        plan.Launch(stream);
        stream.Synchronize();
        var (badOut, scannedOut) = CountNonFinite(plan.LatentOutput.SubView(0, c.Tokens * heads * latent));
        var (badLse, scannedLse) = CountNonFinite(plan.Lse.SubView(0, c.Tokens * heads));

        double scale = NaiveMlaReference.SoftmaxScale(spec);
        var samples = Samples(c, seed);
        var expectedOut = new double[samples.Length][];
        var expectedLse = new double[samples.Length];
        var actualOut = new float[samples.Length * latent];
        var actualLse = new float[samples.Length];
        for (int k = 0; k < samples.Length; k++)
        {
            var (s, j, h) = samples[k];
            long rowIndex = ((long)s * c.Chunk + j) * heads + h;
            plan.LatentOutput.SubView(rowIndex * latent, latent).CopyToCPU(actualOut.AsSpan(k * latent, latent));
            plan.Lse.SubView(rowIndex, 1).CopyToCPU(actualLse.AsSpan(k, 1));
        }
        foreach (int s in samples.Select(x => x.Sequence).Distinct())
            keys.Rows(s);
        Parallel.For(0, samples.Length, k =>
        {
            var (s, j, h) = samples[k];
            int position = c.Prefix + j;
            long qStart = (((long)s * c.Chunk + j) * heads + h) * row;
            var q = new double[row];
            for (int i = 0; i < row; i++)
                q[i] = DeviceFill.ValueAt(querySeed, qStart + i, amplitude);
            var rows = keys.Rows(s);
            var r = new double[row];
            (expectedOut[k], expectedLse[k]) = AttentionCheck.Attend(position + 1, scale,
                t =>
                {
                    for (int i = 0; i < row; i++)
                        r[i] = Bf16.ToFloat(rows[t * row + i]);
                    return ExpandedKeys.Dot(q, r);
                },
                (t, w, output) =>
                {
                    for (int i = 0; i < latent; i++)
                        output[i] += w * Bf16.ToFloat(rows[t * row + i]);
                }, latent);
        });
        return Compare(samples.Length, actualOut, expectedOut.SelectMany(x => x).ToArray(), actualLse, expectedLse,
            badOut + badLse, scannedOut + scannedLse, plan.UsesTensorCores ? TensorCoreTolerance : AttentionCheck.Tolerance, "latent output");
    }

    private static StageCheckResult Compare(int samples, float[] actualOut, double[] expectedOut, float[] actualLse, double[] expectedLse,
        long nonFinite, long scanned, double tolerance, string what)
    {
        double outError = NaiveMlaReference.RelativeL2(actualOut, expectedOut);
        double lseError = NaiveMlaReference.RelativeL2(actualLse, expectedLse);
        bool passed = nonFinite == 0 && outError <= tolerance && lseError <= tolerance;
        string detail = nonFinite > 0
            ? FormattableString.Invariant($"{nonFinite} of {scanned} scanned {what}/LSE values not finite (unwritten or overflowed)")
            : FormattableString.Invariant($"{samples} (token, head) rows: {what} rel L2 {outError:E2}, LSE rel L2 {lseError:E2} (≤ {tolerance:E0}); {scanned} values scanned, all finite");
        return new StageCheckResult(passed, outError, lseError, samples, nonFinite, scanned, tolerance, detail);
    }

    /// <summary>Non-finite values of a device buffer, copied back in blocks (all of it up to <see cref="ScanLimit"/>, else evenly spaced blocks).</summary>
    private static (long Bad, long Scanned) CountNonFinite(ArrayView<float> view)
    {
        const int Block = 1 << 24;
        long length = view.Length;
        long blocks = (length + Block - 1) / Block;
        long wanted = Math.Min(blocks, ScanLimit / Block);
        var host = new float[Math.Min(length, Block)];
        long bad = 0, scanned = 0;
        for (long k = 0; k < wanted; k++)
        {
            long b = wanted == blocks ? k : k * blocks / wanted;
            long start = b * Block;
            int count = (int)Math.Min(Block, length - start);
            view.SubView(start, count).CopyToCPU(host.AsSpan(0, count));
            for (int i = 0; i < count; i++)
                if (!float.IsFinite(host[i]))
                    bad++;
            scanned += count;
        }
        return (bad, scanned);
    }
}
