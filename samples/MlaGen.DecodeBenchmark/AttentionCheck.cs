using System;
using System.Collections.Generic;
using System.Linq;
using System.Threading.Tasks;
using ILGPU;
using ILGPU.Runtime;
using MlaGen.Reference;

namespace MlaGen.DecodeBenchmark;

/// <summary>Outcome of the attention-stage check of one configuration.</summary>
internal sealed record AttentionCheckResult(bool Passed, double OutputRelL2, double LseRelL2, int SampledRows, bool AllFinite, string Detail);

/// <summary>
/// The attention stage of one configuration, exactly as it will be timed (same launch, splits, scattered block
/// table, causal positions), against float64 over the identical BF16 cache rows and fp32 queries: softmax(scale·q·row)
/// over the visible rows, weighted sum of their latent part, natural-log LSE. The queries are random absorbed queries,
/// so the reference is the absorbed form; the layer check ties the absorbed form to the non-absorbed reference.
/// </summary>
internal static class AttentionCheck
{
    /// <summary>fp32 accumulation over up to ~10^5 rows stays near 10^-6; the brief's bound for a stage fed identical inputs.</summary>
    public const double Tolerance = 1e-5;

    public static AttentionCheckResult Run(Accelerator accelerator, ConfigBuffers buffers, IDecodeLaunch launch, int seed, double tolerance = Tolerance)
    {
        var config = buffers.Config;
        var spec = config.Shape.Spec;
        int heads = config.Heads, latent = config.Latent, row = config.RowValues, sq = config.QueryLen;
        var stream = accelerator.DefaultStream;

        // Poison the outputs (all-ones bits are a NaN) so an element the launch does not write is caught.
        buffers.LatentOutput.MemSet(stream, 0xFF);
        buffers.Lse.MemSet(stream, 0xFF);
        launch.Enqueue(stream);
        stream.Synchronize();
        var output = new float[buffers.LatentOutput.Length];
        buffers.LatentOutput.CopyToCPU(output);
        var lse = new float[buffers.Lse.Length];
        buffers.Lse.CopyToCPU(lse);
        int nonFinite = output.Count(v => !float.IsFinite(v)) + lse.Count(v => !float.IsFinite(v));

        // Sample: the longest and shortest sequences and two random ones; first and last new token; heads 0, H-1, one random.
        var rng = new Random(seed);
        var lengths = config.Lengths;
        var sequences = new List<int> { Array.IndexOf(lengths, lengths.Max()), Array.IndexOf(lengths, lengths.Min()) };
        for (int i = 0; i < 2; i++)
            sequences.Add(rng.Next(config.Batch));
        var headSet = new[] { 0, heads - 1, rng.Next(heads) }.Distinct().ToArray();
        var tokenSet = new[] { 0, sq - 1 }.Distinct().ToArray();
        var samples = sequences.Distinct()
            .SelectMany(s => tokenSet.SelectMany(j => headSet.Select(h => (Sequence: s, Token: j, Head: h))))
            .ToArray();

        double scale = NaiveMlaReference.SoftmaxScale(spec);
        var expectedOut = new double[samples.Length][];
        var expectedLse = new double[samples.Length];
        // One task per sampled sequence: its rows are expanded once and shared by its (token, head) samples.
        Parallel.ForEach(samples.Select((x, i) => (x, i)).GroupBy(p => p.x.Sequence), group =>
        {
            int s = group.Key;
            int length = lengths[s];
            var rows = new float[(long)length * row];
            for (int t = 0; t < length; t++)
                buffers.ReadRow(s, t, rows.AsSpan(t * row, row));
            foreach (var (sample, index) in group)
            {
                int token = s * sq + sample.Token;
                int visible = buffers.Positions[token] + 1;
                var q = buffers.Query.AsSpan((int)(((long)token * heads + sample.Head) * row), row);
                (expectedOut[index], expectedLse[index]) = Attend(q, rows, visible, row, latent, scale);
            }
        });

        var actualOut = new List<float>();
        var wantedOut = new List<double>();
        var actualLse = new float[samples.Length];
        for (int i = 0; i < samples.Length; i++)
        {
            var (s, j, h) = samples[i];
            long r = (long)(s * sq + j) * heads + h;
            actualOut.AddRange(output.AsSpan((int)(r * latent), latent).ToArray());
            wantedOut.AddRange(expectedOut[i]);
            actualLse[i] = lse[r];
        }
        double outError = NaiveMlaReference.RelativeL2(actualOut.ToArray(), wantedOut.ToArray());
        double lseError = NaiveMlaReference.RelativeL2(actualLse, expectedLse);
        bool passed = nonFinite == 0 && outError <= tolerance && lseError <= tolerance;
        string detail = nonFinite > 0
            ? $"{nonFinite} output/LSE values not finite (unwritten or overflowed)"
            : FormattableString.Invariant($"{samples.Length} (token, head) rows: output rel L2 {outError:E2}, LSE rel L2 {lseError:E2}");
        return new AttentionCheckResult(passed, outError, lseError, samples.Length, nonFinite == 0, detail);
    }

    /// <summary>float64 softmax attention of one query over the first <paramref name="visible"/> rows.</summary>
    private static (double[] Output, double Lse) Attend(ReadOnlySpan<float> q, float[] rows, int visible, int row, int latent, double scale)
    {
        var query = q.ToArray();
        return Attend(visible, scale,
            t =>
            {
                var r = rows.AsSpan(t * row, row);
                double dot = 0;
                for (int c = 0; c < row; c++)
                    dot += (double)query[c] * r[c];
                return dot;
            },
            (t, w, output) =>
            {
                var r = rows.AsSpan(t * row, latent);
                for (int c = 0; c < latent; c++)
                    output[c] += w * r[c];
            }, latent);
    }

    /// <summary>float64 softmax(scale · score(t)) over t &lt; visible; <paramref name="accumulate"/> adds weight · value row t.</summary>
    internal static (double[] Output, double Lse) Attend(int visible, double scale, Func<int, double> score, Action<int, double, double[]> accumulate, int width)
    {
        var scores = new double[visible];
        double max = double.NegativeInfinity;
        for (int t = 0; t < visible; t++)
        {
            scores[t] = scale * score(t);
            max = Math.Max(max, scores[t]);
        }
        var output = new double[width];
        double sum = 0;
        for (int t = 0; t < visible; t++)
        {
            double w = Math.Exp(scores[t] - max);
            sum += w;
            accumulate(t, w, output);
        }
        for (int i = 0; i < width; i++)
            output[i] /= sum;
        return (output, max + Math.Log(sum));
    }
}
