using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;

namespace MlaGen.DecodeBenchmark;

internal enum LengthMode
{
    /// <summary>Every sequence has length S.</summary>
    Fixed,

    /// <summary>Lengths drawn from a normal distribution with mean S and sd S/2 (FlashMLA's varlen test), fixed seed.</summary>
    Variable,
}

/// <summary>
/// One timed configuration: B sequences of lengths L_i (each including its s_q new tokens), s_q query tokens per
/// sequence at positions L_i − s_q .. L_i − 1, causal among them.
/// </summary>
internal sealed record BenchConfig(BenchShape Shape, int Batch, int SeqLen, int QueryLen, LengthMode Mode, int[] Lengths)
{
    public int Heads => Shape.Heads;
    public int RowValues => Shape.Spec.CacheRowValues;
    public int Latent => Shape.Spec.LatentRank;
    public int PageSize => Shape.Spec.PageSize;

    public string Id => string.Create(CultureInfo.InvariantCulture,
        $"{Shape.Key}-B{Batch}-S{SeqLen}-q{QueryLen}-{(Mode == LengthMode.Fixed ? "fixed" : "var")}");

    /// <summary>Query tokens of one launch: B · s_q.</summary>
    public int Tokens => Batch * QueryLen;

    public long SumSeqLen => Lengths.Sum(l => (long)l);

    public int MaxSeqLen => Lengths.Max();

    public long PagesNeeded => Lengths.Sum(l => (long)((l + PageSize - 1) / PageSize));

    /// <summary>FlashMLA's count: 2 · s_q · Σseqlen · H · (576 + 512), with 576 = latent + rope and 512 = latent.</summary>
    public double Flop => 2.0 * QueryLen * SumSeqLen * Heads * (RowValues + Latent);

    /// <summary>FlashMLA's count: (Σseqlen · 576 + B·s_q·H·576 + B·s_q·H·512) · 2 bytes; the cache is read once for all heads.</summary>
    public double Bytes => ((double)SumSeqLen * RowValues + (double)Tokens * Heads * RowValues + (double)Tokens * Heads * Latent) * 2;

    /// <summary>Relative work, for splitting the grid into parts.</summary>
    public double Cost => (double)QueryLen * SumSeqLen * Heads + 2e6;
}

/// <summary>What the command line asked for; empty arrays mean "the default".</summary>
internal sealed record GridRequest(int[] Heads, int[] SeqLens, int[] Batches, int[] QueryLens, LengthMode[] Modes, bool Quick, bool Cuda);

internal static class Grid
{
    /// <summary>Seed of the variable lengths: fixed, so every run (and the PyTorch peer) sees the same Σseqlen.</summary>
    public const int LengthSeed = 20250;

    /// <summary>
    /// The configurations to run, smallest shape first. Without --batch/--seq the default grid is filtered by
    /// --heads/--sq/--lengths; with either of them the grid is the cross product of the given values (defaults for
    /// the rest).
    /// </summary>
    public static List<BenchConfig> Build(GridRequest request)
    {
        var defaultHeads = request.Cuda ? new[] { 16, 32, 64, 128 } : new[] { 4 };
        var heads = request.Heads.Length > 0 ? request.Heads : request.Cuda && request.Quick ? new[] { 16, 128 } : defaultHeads;
        var sqs = request.QueryLens.Length > 0 ? request.QueryLens : request.Cuda && request.Quick ? new[] { 1 } : new[] { 1, 2 };
        var modes = request.Modes.Length > 0 ? request.Modes : new[] { LengthMode.Fixed, LengthMode.Variable };

        var points = new List<(int B, int S, int H, int Sq, LengthMode Mode)>();
        if (request.Batches.Length > 0 || request.SeqLens.Length > 0)
        {
            var batches = request.Batches.Length > 0 ? request.Batches : DefaultBatches(request);
            var seqs = request.SeqLens.Length > 0 ? request.SeqLens : DefaultSeqLens(request);
            foreach (int h in heads)
                foreach (int b in batches)
                    foreach (int s in seqs)
                        foreach (int q in sqs)
                            foreach (var m in modes)
                                points.Add((b, s, h, q, m));
        }
        else
        {
            foreach (int h in heads)
            {
                foreach (int b in DefaultBatches(request))
                    foreach (int s in DefaultSeqLens(request))
                        foreach (int q in sqs)
                            foreach (var m in modes)
                                points.Add((b, s, h, q, m));
                // Long contexts at small batch: H = 16 and 128, s_q = 1, fixed lengths.
                if (request.Cuda && !request.Quick && (h == 16 || h == 128) && sqs.Contains(1) && modes.Contains(LengthMode.Fixed))
                {
                    points.Add((1, 32768, h, 1, LengthMode.Fixed));
                    points.Add((8, 32768, h, 1, LengthMode.Fixed));
                }
            }
        }

        var configs = new List<BenchConfig>();
        foreach (var (b, s, h, q, m) in points.Distinct())
        {
            var shape = BenchShape.ForHeads(h);
            if (b < 1 || s < 1 || q < 1)
                throw new ArgumentException($"Batch ({b}), sequence length ({s}) and s_q ({q}) must be at least 1.");
            if (q > s)
                throw new ArgumentException($"s_q = {q} new tokens do not fit in sequences of length {s}.");
            if (s > shape.Spec.MaxPositions)
                throw new ArgumentException($"Sequence length {s} exceeds MaxPositions {shape.Spec.MaxPositions} of {shape.Key}.");
            configs.Add(new BenchConfig(shape, b, s, q, m, MakeLengths(b, s, q, m, shape.Spec.MaxPositions)));
        }
        return configs
            .OrderBy(c => c.Heads).ThenBy(c => c.Batch == 128 ? 0 : 1).ThenBy(c => c.Batch).ThenBy(c => c.SeqLen)
            .ThenBy(c => c.QueryLen).ThenBy(c => c.Mode)
            .ToList();
    }

    private static int[] DefaultBatches(GridRequest r) => r.Cuda ? new[] { 128 } : new[] { r.Quick ? 4 : 8 };

    private static int[] DefaultSeqLens(GridRequest r) =>
        r.Cuda ? (r.Quick ? new[] { 4096 } : new[] { 4096, 8192 }) : (r.Quick ? new[] { 64, 200 } : new[] { 256, 1024 });

    /// <summary>
    /// Fixed: all S. Variable: N(S, S/2) rounded, clipped to ≥ max(1, s_q) (FlashMLA clips to s_q too) and to MaxPositions;
    /// the seed depends on B and S only, so every head count and s_q sees the same draw.
    /// </summary>
    public static int[] MakeLengths(int batch, int seqLen, int queryLen, LengthMode mode, int maxPositions)
    {
        var lengths = new int[batch];
        if (mode == LengthMode.Fixed)
        {
            Array.Fill(lengths, seqLen);
            return lengths;
        }
        var rng = new Random(LengthSeed + 7919 * batch + 104729 * seqLen);
        int floor = Math.Max(1, queryLen);
        for (int i = 0; i < batch; i++)
        {
            // Box–Muller: one standard normal per sequence.
            double u1 = 1.0 - rng.NextDouble();
            double u2 = rng.NextDouble();
            double z = Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
            double length = Math.Round(seqLen + z * seqLen / 2.0);
            lengths[i] = (int)Math.Clamp(length, floor, maxPositions);
        }
        return lengths;
    }

    /// <summary>Part <paramref name="part"/> of <paramref name="parts"/>: contiguous runs of the list with about equal cost.</summary>
    public static List<BenchConfig> Part(List<BenchConfig> configs, int part, int parts)
    {
        if (parts < 1 || part < 1 || part > parts)
            throw new ArgumentException($"--part {part}/{parts}: expected 1 ≤ i ≤ n.");
        if (parts == 1)
            return configs;
        double total = configs.Sum(c => c.Cost);
        var result = new List<BenchConfig>();
        double before = 0;
        foreach (var c in configs)
        {
            // A config belongs to the part that holds the middle of its cost interval.
            double middle = before + c.Cost / 2;
            int owner = Math.Min(parts, (int)(middle / total * parts) + 1);
            if (owner == part)
                result.Add(c);
            before += c.Cost;
        }
        return result;
    }
}
