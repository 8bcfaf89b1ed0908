using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;

namespace MlaGen.DecodeBenchmark;

/// <summary>
/// One prefill case: B sequences of length P + C whose last C tokens are the queries of one call (each sees its
/// sequence's keys at positions ≤ its own: the cached prefix of P tokens and, causally, the chunk). P = 0 is a plain
/// prefill of S = C tokens.
/// </summary>
internal sealed record PrefillCase(BenchShape Shape, int Batch, int Prefix, int Chunk)
{
    public bool Chunked => Prefix > 0;
    public int Heads => Shape.Heads;
    public int Length => Prefix + Chunk;
    public int QkDim => Shape.Spec.NopeHeadDim + Shape.Spec.RopeDim;
    public int VDim => Shape.Spec.VHeadDim;

    public string Id => Chunked
        ? string.Create(CultureInfo.InvariantCulture, $"{Shape.Key}-B{Batch}-C{Chunk}-P{Prefix}")
        : string.Create(CultureInfo.InvariantCulture, $"{Shape.Key}-B{Batch}-S{Chunk}");

    /// <summary>Query tokens of the call: B · C.</summary>
    public long Tokens => (long)Batch * Chunk;

    /// <summary>Keys the expansion covers: every cached position of every sequence, B · (P + C).</summary>
    public long Keys => (long)Batch * Length;

    /// <summary>Σ over the queries of visible(q) = position + 1: B · (C·P + C·(C+1)/2).</summary>
    public double SumVisible => Batch * ((double)Chunk * Prefix + (double)Chunk * (Chunk + 1) / 2);

    /// <summary>2 · Σ visible · H · ((nope + rope) + v): QKᵀ and PV of the expanded form, causal.</summary>
    public double AttentionFlop => 2 * SumVisible * Heads * (QkDim + VDim);

    /// <summary>2 · Keys · latent · H · (nope + v): kv_b_proj over every key's latent row.</summary>
    public double ExpansionFlop => 2.0 * Keys * Shape.Spec.LatentRank * Heads * (Shape.Spec.NopeHeadDim + VDim);

    /// <summary>2 · Σ visible · H · ((latent + rope) + latent): the absorbed form's attention.</summary>
    public double AbsorbedFlop => 2 * SumVisible * Heads * (Shape.Spec.CacheRowValues + Shape.Spec.LatentRank);

    /// <summary>The absorbed form is timed for chunked cases and plain prefill up to 4096 tokens (the grid).</summary>
    public bool TimeAbsorbed => Chunked || Chunk <= 4096;

    /// <summary>Score elements B · H · C · (P + C): what an eager (materialised) attention writes.</summary>
    public double ScoreElements => (double)Batch * Heads * Chunk * Length;

    /// <summary>For a chunked case, the plain prefill of all P + C tokens of the same sequence (ours, for comparison).</summary>
    public PrefillCase? PlainEquivalent => Chunked ? new PrefillCase(Shape, Batch, 0, Length) : null;

    /// <summary>Relative cost, for ordering.</summary>
    public double Cost => AttentionFlop + ExpansionFlop;
}

internal static class PrefillGrid
{
    /// <summary>
    /// CUDA: plain prefill S ∈ {1024, 4096, 16384} × B ∈ {1, 8} and chunked C ∈ {64, 512, 2048} × P ∈ {4096, 16384,
    /// 32768} (B = 1), each for H ∈ {16, 128} (or --heads); --prefill-quick (or --quick): S = 4096 B = 1 and C = 512
    /// P = 16384 at H = 128. CPU: the tiny shape at a few short lengths.
    /// </summary>
    public static List<PrefillCase> Build(int[] heads, bool quick, bool cuda)
    {
        var cases = new List<PrefillCase>();
        if (!cuda)
        {
            var tiny = BenchShape.ForHeads(4);
            if (heads.Length > 0 && !heads.All(h => h == 4))
                throw new ArgumentException("On the CPU accelerator the prefill mode runs the tiny shape only (--heads 4).");
            int[] seqs = quick ? new[] { 70 } : new[] { 40, 150 };
            int[] batches = quick ? new[] { 1, 2 } : new[] { 1, 3 };
            foreach (int s in seqs)
                foreach (int b in batches)
                    cases.Add(new PrefillCase(tiny, b, 0, s));
            foreach (int c in quick ? new[] { 20 } : new[] { 16, 70 })
                foreach (int p in quick ? new[] { 50 } : new[] { 50, 130 })
                    cases.Add(new PrefillCase(tiny, 1, p, c));
            return cases;
        }

        var headList = heads.Length > 0 ? heads : quick ? new[] { 128 } : new[] { 16, 128 };
        foreach (int h in headList)
        {
            var shape = BenchShape.ForHeads(h);
            if (quick)
            {
                cases.Add(new PrefillCase(shape, 1, 0, 4096));
                cases.Add(new PrefillCase(shape, 1, 16384, 512));
                continue;
            }
            foreach (int s in new[] { 1024, 4096, 16384 })
                foreach (int b in new[] { 1, 8 })
                    cases.Add(new PrefillCase(shape, b, 0, s));
            foreach (int c in new[] { 64, 512, 2048 })
                foreach (int p in new[] { 4096, 16384, 32768 })
                    cases.Add(new PrefillCase(shape, 1, p, c));
        }
        foreach (var c in cases)
        {
            if (c.Length > c.Shape.Spec.MaxPositions)
                throw new ArgumentException($"{c.Id}: {c.Length} tokens exceed MaxPositions {c.Shape.Spec.MaxPositions} of {c.Shape.Key}.");
        }
        return cases
            .OrderBy(c => c.Heads).ThenBy(c => c.Chunked ? 1 : 0).ThenBy(c => c.Chunk).ThenBy(c => c.Prefix).ThenBy(c => c.Batch)
            .ToList();
    }
}
