using System;
using System.Collections.Generic;
using System.Linq;
using MlaGen.Generator.Helpers;
using MlaGen.Generator.Model;
using static MlaGen.Generator.Helpers.LiteralFormat;

namespace MlaGen.Generator.Emitting;

/// <summary>
/// The ILGPU kernels of one shape. Every dimension is a constant and inner loops are unrolled here, in C#,
/// because ILGPU 1.5.3 does not unroll loops and spills indexed local arrays to local memory.
/// </summary>
internal static class KernelEmitter
{
    internal const int Lanes = 32;
    internal const string K = "global::MlaGen.Kernels";

    public static void Emit(SourceWriter w, MlaClassSpec spec)
    {
        var s = spec.Shape;
        w.Line("/// <summary>Loads this shape's kernels onto <paramref name=\"device\"/> once per path; later calls return the cached set.</summary>");
        w.Open("public static global::MlaGen.Kernels.MlaKernelSet LoadKernels(global::MlaGen.Devices.MlaDevice device, global::MlaGen.Kernels.MlaKernelPath path = global::MlaGen.Kernels.MlaKernelPath.Auto)");
        w.Line("global::System.ArgumentNullException.ThrowIfNull(device);");
        w.Line("global::MlaGen.Kernels.MlaKernelPath resolved = global::MlaGen.Kernels.MlaKernelSet.Resolve(path, device.Accelerator);");
        w.Line($"return device.GetOrLoad<global::MlaGen.Kernels.MlaKernelSet>({String(spec.FullName)} + \"/\" + resolved, accelerator => new MlaKernels.Set(accelerator, resolved));");
        w.Close();
        w.Line();
        w.Line("/// <summary>A layer of this shape on <paramref name=\"device\"/> with <paramref name=\"weights\"/> uploaded.</summary>");
        w.Line("public static global::MlaGen.MlaLayer CreateLayer(global::MlaGen.Devices.MlaDevice device, global::MlaGen.Weights.MlaWeights weights, global::MlaGen.Kernels.MlaKernelPath path = global::MlaGen.Kernels.MlaKernelPath.Auto) =>");
        w.Line("    new global::MlaGen.MlaLayer(device, Spec, LoadKernels(device, path), weights);");
        w.Line();
        w.Line("/// <summary>ILGPU kernels specialised to this shape; one warp of 32 lanes per row unless noted.</summary>");
        w.Line(MlaEmitter.GeneratedCodeAttribute);
        w.Open("internal static class MlaKernels");
        EmitConstants(w, s, spec.Layout);
        w.Line();
        if (s.HasQLatent)
        {
            EmitProjection(w, "QueryLatentProjectionKernel", "q_a_proj", s.DModel, s.QLatentRank, "DModel", "QLatentRank");
            EmitRmsNorm(w, s);
            EmitProjection(w, "QueryProjectionKernel", "q_b_proj", s.QLatentRank, s.Heads * s.QHeadDim, "QLatentRank", "QueryWidth");
        }
        else
        {
            EmitProjection(w, "QueryProjectionKernel", "q_proj", s.DModel, s.Heads * s.QHeadDim, "DModel", "QueryWidth");
        }
        EmitProjection(w, "KvLatentProjectionKernel", "kv_a_proj_with_mqa", s.DModel, s.CacheRowValues, "DModel", "CacheRowValues");
        EmitKvCacheWrite(w, s);
        EmitQueryAbsorb(w, s);
        EmitAttention(w, s);
        EmitCombine(w, s);
        EmitValueProjection(w, s);
        EmitProjection(w, "OutputProjectionKernel", "o_proj", s.Heads * s.VHeadDim, s.DModel, "HeadOutputWidth", "DModel");
        SerialKernelEmitter.Emit(w, s);
        bool warpgroupDecode = spec.Layout.TensorCoreDecode && KernelLimits.FitsWarpgroupDecode(s);
        if (spec.Layout.TensorCoreDecode)
            TensorCoreEmitter.Emit(w, s);
        if (warpgroupDecode)
            DecodeWarpgroupEmitter.Emit(w, s);
        ExpandedEmitter.Emit(w, s);
        bool warpgroupPrefill = spec.Layout.TensorCorePrefill && KernelLimits.FitsWarpgroupPrefill(s);
        if (spec.Layout.TensorCorePrefill)
        {
            KeyValueExpandEmitter.Emit(w, s);
            ExpandedTensorCoreEmitter.Emit(w, s);
        }
        if (warpgroupPrefill)
            ExpandedWarpgroupEmitter.Emit(w, s);
        EmitKernelSet(w, s, Identifier.EscapeDotted(spec.FullName), spec.Layout.TensorCoreDecode, warpgroupDecode, spec.Layout.TensorCorePrefill, warpgroupPrefill);
        w.Close();
    }

    private static void EmitConstants(SourceWriter w, MlaShapeSpec s, DerivedLayout l)
    {
        w.Line("// Tile shape and specialised numbers.");
        w.Line($"public const int Lanes = {Lanes}; // one warp per row");
        w.Line("public const int ProjectionGroup = 64;");
        w.Line("public const int SerialGroup = 32; // serial path: one thread per row");
        w.Line($"public const int QueryWidth = {Int(s.Heads * s.QHeadDim)}; // H · (nope + rope)");
        w.Line($"public const int HeadOutputWidth = {Int(s.Heads * s.VHeadDim)}; // H · v");
        w.Line($"public const int KvUpRowsPerHead = {Int(s.NopeHeadDim + s.VHeadDim)}; // kv_b_proj rows per head: [W_UK (nope) | W_UV (v)]");
        w.Line($"public const int PageShift = {Int(Log2(s.PageSize))}; // PageSize = 1 << PageShift");
        w.Line($"public const int PageMask = {Int(s.PageSize - 1)};");
        w.Line($"public const float RmsNormEpsilon = {Float((float)s.RmsNormEpsilon)};");
        w.Line($"public const float ScoreScaleLog2 = {Float((float)(l.SoftmaxScale * 1.4426950408889634))}; // softmax scale · log2(e): exp2 form");
        w.Line("// RoPE inverse frequencies (double: the angle is reduced exactly, see KernelMath.Rotate).");
        for (int i = 0; i < l.InverseFrequencies.Count; i++)
            w.Line($"public const double InverseFrequency{i} = {Double(l.InverseFrequencies[i])};");
    }

    private static int Log2(int value)
    {
        int r = 0;
        while ((1 << r) < value)
            r++;
        return r;
    }

    /// <summary>Dot products with the input dimension unrolled by 8 (constant trip count) and its remainder unrolled.</summary>
    private static void EmitProjection(SourceWriter w, string name, string tensor, int inDim, int outDim, string inName, string outName)
    {
        w.Line($"/// <summary>{tensor}: <c>[T, {inName}]</c> → <c>[T, {outName}]</c>; one thread per output value.</summary>");
        w.Open($"public static void {name}({K}.ProjectionParams p)");
        w.Line("int index = global::ILGPU.Grid.GlobalIndex.X;");
        w.Line($"if (index >= p.Tokens * {outName})");
        w.Line("    return;");
        w.Line($"int token = index / {outName};");
        w.Line($"long x = (long)token * {inName};");
        w.Line($"long wRow = (long)(index - token * {outName}) * {inName};");
        EmitUnrolledDot(w, inDim, k => $"p.Input[x + {k}]", k => $"p.Weight[wRow + {k}]");
        w.Line("p.Output[index] = sum0 + sum1;");
        w.Close();
        w.Line();
    }

    private static void EmitRmsNorm(SourceWriter w, MlaShapeSpec s)
    {
        w.Line("/// <summary>q_a_layernorm in place: one warp per token.</summary>");
        w.Open($"public static void QueryLatentNormKernel({K}.RmsNormParams p)");
        w.Line("int lane = global::ILGPU.Group.IdxX;");
        w.Line("long row = (long)global::ILGPU.Grid.IdxX * QLatentRank;");
        w.Line("float squares = 0f;");
        w.Open("for (int k = lane; k < QLatentRank; k += Lanes)");
        w.Line("float v = p.Values[row + k];");
        w.Line("squares += v * v;");
        w.Close();
        w.Line($"float inverseRms = 1f / global::ILGPU.Algorithms.XMath.Sqrt({K}.KernelMath.WarpSum(squares) / QLatentRank + RmsNormEpsilon);");
        w.Line("for (int k = lane; k < QLatentRank; k += Lanes)");
        w.Line($"    p.Values[row + k] = p.Values[row + k] * inverseRms * {K}.KernelMath.Bf16ToFloat(p.Weight[k]);");
        w.Close();
        w.Line();
    }

    /// <summary>
    /// One key of the one-key-at-a-time online softmax (exp2 form): folds <c>score</c> into <c>runningMax</c> and
    /// <c>runningSum</c>, leaving <c>rescale</c> for the accumulated output and <c>weight</c> for this key's value.
    /// </summary>
    internal static void EmitOnlineSoftmaxStep(SourceWriter w)
    {
        w.Line("float newMax = global::System.Math.Max(runningMax, score);");
        w.Line($"float rescale = {K}.KernelMath.Exp2(runningMax - newMax);");
        w.Line($"float weight = {K}.KernelMath.Exp2(score - newMax);");
        w.Line("runningSum = runningSum * rescale + weight;");
        w.Line("runningMax = newMax;");
    }

    /// <summary>(chunk, guard) per lane-strided chunk of <paramref name="n"/> values: element = lane + 32·chunk.</summary>
    internal static IEnumerable<(int Chunk, string? Guard)> LaneChunks(int n)
    {
        for (int c = 0; c * Lanes < n; c++)
            yield return (c, n - c * Lanes >= Lanes ? null : $"lane < {n - c * Lanes}");
    }

    private static string Guarded(string? guard, string value) => guard is null ? value : $"({guard} ? {value} : 0f)";

    /// <summary>One statement per lane chunk of <paramref name="n"/> values (<paramref name="store"/> of the chunk), skipped by lanes past a ragged last chunk.</summary>
    internal static void EmitLaneStores(SourceWriter w, int n, Func<int, string> store)
    {
        foreach (var (c, guard) in LaneChunks(n))
            w.Line(guard is null ? store(c) : $"if ({guard}) {store(c)}");
    }

    /// <summary>RoPE unrolled: loads the d values at <paramref name="source"/>, one rotation per pair, stores at <paramref name="target"/>.</summary>
    internal static void EmitRope(SourceWriter w, MlaShapeSpec s, string prefix, Func<int, string> source, Func<int, string, string> store)
    {
        int d = s.RopeDim;
        for (int i = 0; i < d; i++)
            w.Line($"float {prefix}{i} = {source(i)};");
        for (int i = 0; i < d / 2; i++)
        {
            int a = s.IsRotateHalf ? i : 2 * i;
            int b = s.IsRotateHalf ? i + d / 2 : 2 * i + 1;
            w.Line($"{K}.KernelMath.Rotate(ref {prefix}{a}, ref {prefix}{b}, position, InverseFrequency{i}, RopeAttentionFactor);");
        }
        for (int i = 0; i < d; i++)
            w.Line(store(i, $"{prefix}{i}") + ";");
    }

    private static void EmitKvCacheWrite(SourceWriter w, MlaShapeSpec s)
    {
        w.Line("/// <summary>One warp per token: RMSNorm(c_kv)·kv_a_layernorm and RoPE(k_pe) rounded to BF16 into the token's cache row.</summary>");
        w.Open($"public static void KvCacheWriteKernel({K}.KvCacheWriteParams p)");
        w.Line("int lane = global::ILGPU.Group.IdxX;");
        w.Line("int token = global::ILGPU.Grid.IdxX;");
        w.Line("long source = (long)token * CacheRowValues;");
        var chunks = new List<(int Chunk, string? Guard)>(LaneChunks(s.LatentRank));
        foreach (var (c, guard) in chunks)
            w.Line($"float c{c} = {Guarded(guard, $"p.KvLatent[source + lane + {c * Lanes}]")};");
        w.Line("float squares = " + string.Join(" + ", chunks.ConvertAll(c => $"c{c.Chunk} * c{c.Chunk}")) + ";");
        w.Line($"float inverseRms = 1f / global::ILGPU.Algorithms.XMath.Sqrt({K}.KernelMath.WarpSum(squares) / LatentRank + RmsNormEpsilon);");
        w.Line("int position = p.Cache.TokenPosition[token];");
        w.Line("int page = p.Cache.BlockTable[p.Cache.TokenSlot[token] * p.Cache.BlockTableStride + (position >> PageShift)];");
        w.Line("long target = ((long)page * PageSize + (position & PageMask)) * CacheRowValues;");
        EmitLaneStores(w, s.LatentRank, c => $"p.Cache.Pages[target + lane + {c * Lanes}] = {K}.KernelMath.FloatToBf16(c{c} * inverseRms * {K}.KernelMath.Bf16ToFloat(p.NormWeight[lane + {c * Lanes}]));");
        w.Open("if (lane == 0)");
        EmitRope(w, s, "r", i => $"p.KvLatent[source + LatentRank + {i}]",
            (i, v) => $"p.Cache.Pages[target + LatentRank + {i}] = {K}.KernelMath.FloatToBf16({v})");
        w.Close();
        w.Close();
        w.Line();
    }

    private static void EmitQueryAbsorb(SourceWriter w, MlaShapeSpec s)
    {
        w.Line("/// <summary>One warp per (token, head): q_lat = W_UKᵀ·q_nope (lanes over the latent), and RoPE(q_pe) on lane 0.</summary>");
        w.Open($"public static void QueryAbsorbKernel({K}.QueryAbsorbParams p)");
        w.Line("int lane = global::ILGPU.Group.IdxX;");
        w.Line("int row = global::ILGPU.Grid.IdxX; // token · Heads + head");
        w.Line("int token = row / Heads;");
        w.Line("long query = (long)row * QHeadDim;");
        w.Line("long target = (long)row * CacheRowValues;");
        w.Line("long weight = (long)(row - token * Heads) * KvUpRowsPerHead * LatentRank;");
        var chunks = new List<(int Chunk, string? Guard)>(LaneChunks(s.LatentRank));
        foreach (var (c, _) in chunks)
            w.Line($"float a{c} = 0f;");
        w.Open("for (int n = 0; n < NopeHeadDim; n++)");
        w.Line("float q = p.Query[query + n];");
        w.Line("long w = weight + (long)n * LatentRank;");
        foreach (var (c, guard) in chunks)
            w.Line($"a{c} += q * {Guarded(guard, $"{K}.KernelMath.Bf16ToFloat(p.KvUp[w + lane + {c * Lanes}])")};");
        w.Close();
        EmitLaneStores(w, s.LatentRank, c => $"p.AbsorbedQuery[target + lane + {c * Lanes}] = a{c};");
        w.Open("if (lane == 0)");
        w.Line("int position = p.TokenPosition[token];");
        EmitRope(w, s, "r", i => $"p.Query[query + NopeHeadDim + {i}]", (i, v) => $"p.AbsorbedQuery[target + LatentRank + {i}] = {v}");
        w.Close();
        w.Close();
        w.Line();
    }

    private static void EmitAttention(SourceWriter w, MlaShapeSpec s)
    {
        var latent = new List<(int Chunk, string? Guard)>(LaneChunks(s.LatentRank));
        var rope = new List<(int Chunk, string? Guard)>(LaneChunks(s.RopeDim));
        w.Line("/// <summary>");
        w.Line("/// Absorbed attention, general path (CUDA and CPU): one warp per (token, head, split). Lanes hold latent/32 query");
        w.Line("/// and output values in registers; each cached row is read once, scored against q_lat·c_kv + q_pe·k_pe, and");
        w.Line("/// folded into an online softmax in exp2 form. Writes the split's normalised output and log-sum-exp.");
        w.Line("/// </summary>");
        w.Open($"public static void AttentionKernel({K}.AttentionParams p)");
        w.Line("int lane = global::ILGPU.Group.IdxX;");
        w.Line("int item = global::ILGPU.Grid.IdxX;");
        w.Line("int row = item / p.Splits; // token · Heads + head");
        w.Line("int split = item - row * p.Splits;");
        w.Line("int token = row / Heads;");
        w.Line("int visible = p.Cache.TokenPosition[token] + 1; // causal: positions 0..position");
        w.Line("int chunk = (visible + p.Splits - 1) / p.Splits;");
        w.Line("int begin = split * chunk;");
        w.Line("int end = global::System.Math.Min(visible, begin + chunk);");
        w.Line("long blockRow = (long)p.Cache.TokenSlot[token] * p.Cache.BlockTableStride;");
        w.Line("long query = (long)row * CacheRowValues;");
        foreach (var (c, guard) in latent)
            w.Line($"float q{c} = {Guarded(guard, $"p.AbsorbedQuery[query + lane + {c * Lanes}]")};");
        foreach (var (c, guard) in rope)
            w.Line($"float qr{c} = {Guarded(guard, $"p.AbsorbedQuery[query + LatentRank + lane + {c * Lanes}]")};");
        foreach (var (c, _) in latent)
            w.Line($"float o{c} = 0f;");
        w.Line("float runningMax = float.NegativeInfinity;");
        w.Line("float runningSum = 0f;");
        w.Open("for (int j = begin; j < end; j++)");
        w.Line("int page = p.Cache.BlockTable[blockRow + (j >> PageShift)];");
        w.Line("long cached = ((long)page * PageSize + (j & PageMask)) * CacheRowValues;");
        foreach (var (c, guard) in latent)
            w.Line($"float c{c} = {Guarded(guard, $"{K}.KernelMath.Bf16ToFloat(p.Cache.Pages[cached + lane + {c * Lanes}])")};");
        foreach (var (c, guard) in rope)
            w.Line($"float k{c} = {Guarded(guard, $"{K}.KernelMath.Bf16ToFloat(p.Cache.Pages[cached + LatentRank + lane + {c * Lanes}])")};");
        var terms = new List<string>();
        foreach (var (c, _) in latent)
            terms.Add($"q{c} * c{c}");
        foreach (var (c, _) in rope)
            terms.Add($"qr{c} * k{c}");
        w.Line($"float score = {K}.KernelMath.WarpSum({string.Join(" + ", terms)}) * ScoreScaleLog2;");
        EmitOnlineSoftmaxStep(w);
        foreach (var (c, _) in latent)
            w.Line($"o{c} = o{c} * rescale + weight * c{c};");
        w.Close();
        w.Line("float normalise = runningSum != 0f ? 1f / runningSum : 0f;");
        w.Line("long output = ((long)split * p.Tokens * Heads + row) * LatentRank;");
        EmitLaneStores(w, s.LatentRank, c => $"p.PartialOutput[output + lane + {c * Lanes}] = o{c} * normalise;");
        w.Line("if (lane == 0)");
        w.Line($"    p.PartialLse[(long)split * p.Tokens * Heads + row] = runningSum != 0f ? (runningMax + {K}.KernelMath.Log2(runningSum)) * {K}.KernelMath.Ln2 : float.NegativeInfinity;");
        w.Close();
        w.Line();
    }

    private static void EmitCombine(SourceWriter w, MlaShapeSpec s)
    {
        w.Line("/// <summary>One warp per (token, head): merges the splits' outputs weighted by exp(lse_split − lse).</summary>");
        w.Open($"public static void CombineKernel({K}.CombineParams p)");
        w.Line("int lane = global::ILGPU.Group.IdxX;");
        w.Line("int row = global::ILGPU.Grid.IdxX;");
        w.Line("int rows = p.Tokens * Heads;");
        EmitWarpMerge(w, s, "p.Splits", split => $"(long){split} * rows + row", "row");
        w.Close();
        w.Line();
    }

    /// <summary>
    /// One warp merges a query row's split parts (lanes over the latent) and writes the latent output and LSE.
    /// <paramref name="partRow"/> gives the part's row in the partial buffers for a split expression; <paramref name="outRow"/>
    /// the query row.
    /// </summary>
    internal static void EmitWarpMerge(SourceWriter w, MlaShapeSpec s, string splits, Func<string, string> partRow, string outRow)
    {
        EmitWarpMergedLse(w, splits, partRow);
        EmitWeightedParts(w, s.LatentRank, "lane", GeneralPartsInFlight, splits, partRow, "0", "1");
        w.Line($"long output = (long)({outRow}) * LatentRank;");
        EmitLaneStores(w, s.LatentRank, c => $"p.LatentOutput[output + lane + {c * Lanes}] = o{c};");
        w.Line("if (lane == 0)");
        w.Line($"    p.Lse[{outRow}] = lse;");
    }

    /// <summary>
    /// <c>o{c}</c> (lanes over <paramref name="columns"/> columns from <paramref name="column"/>) = Σ exp(lse_split − lse) · part
    /// over the splits <paramref name="firstSplit"/>, + <paramref name="stride"/>, …: <paramref name="partsInFlight"/> per trip,
    /// every load issued before any is used (a split past the last reads the trip's first part again and weighs it 0).
    /// </summary>
    internal static void EmitWeightedParts(SourceWriter w, int columns, string column, int partsInFlight, string splits, Func<string, string> partRow, string firstSplit, string stride)
    {
        var chunks = new List<(int Chunk, string? Guard)>(LaneChunks(columns));
        foreach (var (c, _) in chunks)
            w.Line($"float o{c} = 0f;");
        w.Open($"for (int split = {firstSplit}; split < {splits}; split += {partsInFlight} * {stride})");
        for (int k = 0; k < partsInFlight; k++)
        {
            string at = k == 0 ? "split" : $"(split + {k} * {stride})";
            w.Line(k == 0 ? $"long row{k} = {partRow("split")};" : $"long row{k} = {at} < {splits} ? {partRow(at)} : row0;");
            w.Line($"float lse{k} = p.PartialLse[row{k}];");
            w.Line($"float share{k} = {(k == 0 ? "" : $"{at} >= {splits} || ")}lse{k} == float.NegativeInfinity ? 0f : {K}.KernelMath.Exp2((lse{k} - lse) * {K}.KernelMath.Log2E);");
            w.Line($"long part{k} = row{k} * LatentRank + {column};");
        }
        foreach (var (c, guard) in chunks)
            for (int k = 0; k < partsInFlight; k++)
                w.Line($"float v{k}_{c} = {Guarded(guard, $"p.PartialOutput[part{k} + {c * Lanes}]")};");
        // A split that saw no token has share 0 and its (possibly poisoned) part is dropped, so it cannot turn into NaN.
        foreach (var (c, _) in chunks)
            w.Line($"o{c} += {string.Join(" + ", Enumerable.Range(0, partsInFlight).Select(k => $"(share{k} != 0f ? share{k} * v{k}_{c} : 0f)"))};");
        w.Close();
    }

    /// <summary>Split parts the general combine's warp reads per trip (each is latent/32 values per lane).</summary>
    private const int GeneralPartsInFlight = 2;

    /// <summary>Split LSEs a lane reads per trip, all in flight together: up to 128 splits take one trip.</summary>
    private const int LsesInFlight = 4;

    /// <summary>
    /// <c>lse</c> = log Σ exp(lse_split) over the splits, lanes over the splits (each keeps a running max and sum), then
    /// merged across the warp; −∞ when no split saw a token. <paramref name="lseIndex"/> gives the index into <c>p.PartialLse</c>
    /// for a split expression.
    /// </summary>
    internal static void EmitWarpMergedLse(SourceWriter w, string splits, Func<string, string> lseIndex)
    {
        w.Line("float laneMax = float.NegativeInfinity, laneSum = 0f;");
        w.Open($"for (int firstSplit = lane; firstSplit < {splits}; firstSplit += {LsesInFlight} * Lanes)");
        for (int k = 0; k < LsesInFlight; k++)
        {
            w.Line($"int split{k} = global::System.Math.Min(firstSplit + {k * Lanes}, {splits} - 1);");
            w.Line($"float read{k} = p.PartialLse[{lseIndex($"split{k}")}];");
        }
        for (int k = 0; k < LsesInFlight; k++)
            w.Line($"float l{k} = firstSplit + {k * Lanes} < {splits} ? read{k} : float.NegativeInfinity;");
        w.Line("float tripMax = " + Enumerable.Range(1, LsesInFlight - 1).Aggregate("l0", (max, k) => $"global::System.Math.Max({max}, l{k})") + ";");
        w.Line("float newMax = global::System.Math.Max(laneMax, tripMax);");
        w.Open("if (newMax != float.NegativeInfinity)");
        w.Line($"laneSum = laneSum * {K}.KernelMath.Exp2((laneMax - newMax) * {K}.KernelMath.Log2E) + "
            + string.Join(" + ", Enumerable.Range(0, LsesInFlight).Select(k => $"{K}.KernelMath.Exp2((l{k} - newMax) * {K}.KernelMath.Log2E)")) + ";");
        w.Line("laneMax = newMax;");
        w.Close();
        w.Close();
        w.Line($"float maxLse = {K}.KernelMath.WarpMax(laneMax);");
        w.Line($"float total = {K}.KernelMath.WarpSum(laneMax == float.NegativeInfinity ? 0f : laneSum * {K}.KernelMath.Exp2((laneMax - maxLse) * {K}.KernelMath.Log2E));");
        w.Line($"float lse = total != 0f ? maxLse + {K}.KernelMath.Log2(total) * {K}.KernelMath.Ln2 : float.NegativeInfinity;");
    }

    /// <summary>
    /// <c>lse</c> = log Σ exp(lse_split) over the splits, max-subtracted; −∞ when no split saw a token.
    /// <paramref name="lseIndex"/> indexes <c>p.PartialLse</c> in terms of the loop variable <c>split</c>.
    /// </summary>
    internal static void EmitMergedLse(SourceWriter w, string splits, string lseIndex)
    {
        w.Line("float maxLse = float.NegativeInfinity;");
        w.Line($"for (int split = 0; split < {splits}; split++)");
        w.Line($"    maxLse = global::System.Math.Max(maxLse, p.PartialLse[{lseIndex}]);");
        w.Line("float total = 0f;");
        w.Line("if (maxLse != float.NegativeInfinity)");
        w.Line($"    for (int split = 0; split < {splits}; split++)");
        w.Line($"        total += {K}.KernelMath.Exp2((p.PartialLse[{lseIndex}] - maxLse) * {K}.KernelMath.Log2E);");
        w.Line($"float lse = total != 0f ? maxLse + {K}.KernelMath.Log2(total) * {K}.KernelMath.Ln2 : float.NegativeInfinity;");
    }

    /// <summary>Σ_k input(k)·bf16(weight(k)) into two accumulators: unrolled by 8 with a constant trip count, remainder unrolled.</summary>
    private static void EmitUnrolledDot(SourceWriter w, int length, Func<string, string> input, Func<string, string> weight)
    {
        w.Line("float sum0 = 0f, sum1 = 0f;");
        int body = length / 8 * 8;
        if (body > 0)
        {
            w.Open($"for (int k = 0; k < {Int(body)}; k += 8)");
            for (int j = 0; j < 8; j++)
                w.Line($"sum{j & 1} += {input($"k + {j}")} * {K}.KernelMath.Bf16ToFloat({weight($"k + {j}")});");
            w.Close();
        }
        for (int k = body; k < length; k++)
            w.Line($"sum{k & 1} += {input(Int(k))} * {K}.KernelMath.Bf16ToFloat({weight(Int(k))});");
    }

    private static void EmitValueProjection(SourceWriter w, MlaShapeSpec s)
    {
        w.Line("/// <summary>o = W_UV·o_lat per head: one thread per (token, head, v); the latent is unrolled by 8.</summary>");
        w.Open($"public static void ValueProjectionKernel({K}.ValueProjectionParams p)");
        w.Line("int index = global::ILGPU.Grid.GlobalIndex.X;");
        w.Line("if (index >= p.Tokens * HeadOutputWidth)");
        w.Line("    return;");
        w.Line("int row = index / VHeadDim; // token · Heads + head");
        w.Line("int v = index - row * VHeadDim;");
        w.Line("long latent = (long)row * LatentRank;");
        w.Line("long weight = ((long)(row % Heads) * KvUpRowsPerHead + NopeHeadDim + v) * LatentRank;");
        EmitUnrolledDot(w, s.LatentRank, k => $"p.LatentOutput[latent + {k}]", k => $"p.KvUp[weight + {k}]");
        w.Line("p.HeadOutput[index] = sum0 + sum1;");
        w.Close();
        w.Line();
    }

    /// <summary>
    /// The expression that loads a warpgroup kernel retargeted to sm_90a with its dynamic shared memory opted in, or null off
    /// Hopper (<c>WarpgroupKernels.TryLoad</c>).
    /// </summary>
    private static string WarpgroupTryLoad(string paramsType, string kernel, string sharedBytes) =>
        $"{K}.WarpgroupKernels.TryLoad<{K}.{paramsType}>(accelerator, ((global::System.Action<{K}.{paramsType}>){kernel}).Method, {sharedBytes})";

    private static void EmitKernelSet(SourceWriter w, MlaShapeSpec s, string fullName, bool tensorCores, bool warpgroupDecode, bool tensorCorePrefill, bool warpgroupPrefill)
    {
        const string Stream = "global::ILGPU.Runtime.AcceleratorStream";
        const string Config = "global::ILGPU.KernelConfig";
        string Launcher(string p) => $"global::System.Action<{Stream}, {Config}, {K}.{p}>";
        // (field, params, kernel, method, launch count, row-cooperative: has a serial twin)
        var kernels = new List<(string Field, string Params, string Kernel, string Method, string Count, bool Rows)>
        {
            ("_queryProjection", "ProjectionParams", "QueryProjectionKernel", "QueryProjection", "p.Tokens * QueryWidth", false),
            ("_kvLatentProjection", "ProjectionParams", "KvLatentProjectionKernel", "KvLatentProjection", "p.Tokens * CacheRowValues", false),
            ("_kvCacheWrite", "KvCacheWriteParams", "KvCacheWrite", "KvCacheWrite", "p.Tokens", true),
            ("_queryAbsorb", "QueryAbsorbParams", "QueryAbsorb", "QueryAbsorb", "p.Tokens * Heads", true),
            ("_attention", "AttentionParams", "Attention", "Attention", "p.Tokens * Heads * p.Splits", true),
            ("_combine", "CombineParams", "Combine", "Combine", "p.Tokens * Heads", true),
            ("_valueProjection", "ValueProjectionParams", "ValueProjectionKernel", "ValueProjection", "p.Tokens * HeadOutputWidth", false),
            ("_outputProjection", "ProjectionParams", "OutputProjectionKernel", "OutputProjection", "p.Tokens * DModel", false),
        };
        if (s.HasQLatent)
        {
            kernels.Add(("_queryLatentProjection", "ProjectionParams", "QueryLatentProjectionKernel", "QueryLatentProjection", "p.Tokens * QLatentRank", false));
            kernels.Add(("_queryLatentNorm", "RmsNormParams", "QueryLatentNorm", "QueryLatentNorm", "p.Tokens", true));
        }

        w.Line("/// <summary>The kernels above, compiled for one accelerator in one path.</summary>");
        w.Open($"internal sealed class Set : {K}.MlaKernelSet");
        w.Line("private readonly bool _serial;");
        foreach (var k in kernels)
            w.Line($"private readonly {Launcher(k.Params)} {k.Field};");
        if (tensorCores)
        {
            w.Line($"private readonly {Launcher("TensorCoreAttentionParams")}? _tensorCoreAttention;");
            w.Line($"private readonly {Launcher("TensorCoreCombineParams")}? _tensorCoreCombine;");
            if (warpgroupDecode)
                w.Line($"private readonly {Launcher("TensorCoreAttentionParams")}? _warpgroupAttention;");
        }
        w.Line($"private readonly {Launcher("HeadQueryParams")} _headQuery;");
        w.Line($"private readonly {Launcher("KeyValueExpandParams")}? _keyValueExpand;");
        w.Line($"private readonly {Launcher("ExpandedAttentionParams")}? _expandedAttention;");
        w.Line();
        w.Open($"public Set(global::ILGPU.Runtime.Accelerator accelerator, {K}.MlaKernelPath path)");
        w.Line($"Path = {K}.MlaKernelSet.Resolve(path, accelerator);");
        w.Line($"_serial = Path == {K}.MlaKernelPath.Serial;");
        foreach (var k in kernels)
        {
            string load = $"global::ILGPU.Runtime.KernelLoaders.LoadKernel<{K}.{k.Params}>(accelerator, ";
            w.Line(k.Rows
                ? $"{k.Field} = _serial ? {load}{k.Kernel}SerialKernel) : {load}{k.Kernel}Kernel);"
                : $"{k.Field} = {load}{k.Kernel});");
        }
        if (tensorCores)
        {
            w.Line("// Inline PTX: only a CUDA accelerator can compile and run these.");
            w.Open("if (accelerator.AcceleratorType == global::ILGPU.Runtime.AcceleratorType.Cuda)");
            w.Line($"_tensorCoreAttention = global::ILGPU.Runtime.KernelLoaders.LoadKernel<{K}.TensorCoreAttentionParams>(accelerator, TensorCoreAttentionKernel);");
            w.Line($"DecodeForm = {K}.DecodeAttentionKind.TensorCore;");
            if (warpgroupDecode)
            {
                w.Line("// Hopper: the decode on wgmma (sm_90a, dynamic shared memory above 48 KB), which every call runs.");
                w.Line($"{K}.PtxKernel<{K}.TensorCoreAttentionParams>? decodeWarpgroup = {WarpgroupTryLoad("TensorCoreAttentionParams", "DecodeAttentionWarpgroupKernel", "DwSharedBytes")};");
                w.Open("if (decodeWarpgroup is not null)");
                w.Line("_warpgroupAttention = decodeWarpgroup.Launch;");
                w.Line($"DecodeForm = {K}.DecodeAttentionKind.Warpgroup;");
                w.Close();
            }
            w.Line($"_tensorCoreCombine = global::ILGPU.Runtime.KernelLoaders.LoadKernel<{K}.TensorCoreCombineParams>(accelerator, TensorCoreCombineKernel);");
            w.Close();
        }
        w.Line($"_headQuery = global::ILGPU.Runtime.KernelLoaders.LoadKernel<{K}.HeadQueryParams>(accelerator, HeadQueryKernel);");
        w.Open("if (_serial)");
        w.Line($"_keyValueExpand = global::ILGPU.Runtime.KernelLoaders.LoadKernel<{K}.KeyValueExpandParams>(accelerator, KeyValueExpandSerialKernel);");
        w.Line($"_expandedAttention = global::ILGPU.Runtime.KernelLoaders.LoadKernel<{K}.ExpandedAttentionParams>(accelerator, ExpandedAttentionSerialKernel);");
        w.Line($"ExpandedForm = {K}.ExpandedAttentionKind.Serial;");
        w.Close();
        if (tensorCorePrefill)
        {
            w.Line("else if (accelerator.AcceleratorType == global::ILGPU.Runtime.AcceleratorType.Cuda)");
            w.Open();
            w.Line($"_keyValueExpand = global::ILGPU.Runtime.KernelLoaders.LoadKernel<{K}.KeyValueExpandParams>(accelerator, KeyValueExpandTensorCoreKernel);");
            if (warpgroupPrefill)
            {
                w.Line("// Hopper: the attention on wgmma (PTX retargeted to sm_90a, dynamic shared memory above 48 KB); elsewhere on mma.sync. (No `var`: the user's class may be named so.)");
                w.Line($"{K}.PtxKernel<{K}.ExpandedAttentionParams>? warpgroup = {WarpgroupTryLoad("ExpandedAttentionParams", "ExpandedAttentionWarpgroupKernel", "XwSharedBytes")};");
                w.Open("if (warpgroup is not null)");
                w.Line("_expandedAttention = warpgroup.Launch;");
                w.Line($"ExpandedForm = {K}.ExpandedAttentionKind.Warpgroup;");
                w.Close();
                w.Line("else");
                w.Open();
            }
            w.Line($"_expandedAttention = global::ILGPU.Runtime.KernelLoaders.LoadKernel<{K}.ExpandedAttentionParams>(accelerator, ExpandedAttentionTensorCoreKernel);");
            w.Line($"ExpandedForm = {K}.ExpandedAttentionKind.TensorCore;");
            if (warpgroupPrefill)
                w.Close();
            w.Close();
        }
        w.Close();
        w.Line();
        w.Line($"public override global::MlaGen.MlaSpec Spec => global::{fullName}.Spec;");
        w.Line();
        w.Line($"public override {K}.MlaKernelPath Path {{ get; }}");
        w.Line();
        w.Line("private static int Groups(int count, int group) => (count + group - 1) / group;");
        w.Line();
        foreach (var k in kernels)
        {
            w.Open($"public override void {k.Method}({Stream} stream, in {K}.{k.Params} p)");
            w.Line("if (p.Tokens <= 0)");
            w.Line("    return;");
            w.Line($"int count = {k.Count};");
            w.Line(k.Rows
                ? $"{k.Field}(stream, _serial ? new {Config}(Groups(count, SerialGroup), SerialGroup) : new {Config}(count, Lanes), p);"
                : $"{k.Field}(stream, new {Config}(Groups(count, ProjectionGroup), ProjectionGroup), p);");
            w.Close();
        }
        if (tensorCores)
        {
            w.Line($"public override {K}.DecodeAttentionKind DecodeForm {{ get; }}");
            w.Line();
            w.Line($"public override {K}.DecodeTiling TilingOf({K}.DecodeAttentionKind kernel) => kernel switch");
            w.Line("{");
            if (warpgroupDecode)
                w.Line($"    {K}.DecodeAttentionKind.Warpgroup when _warpgroupAttention is not null => new {K}.DecodeTiling(DwRows, DwStepKeys, DwCtasPerSm, TcCombineSlices, DwThreads / Lanes),");
            w.Line($"    {K}.DecodeAttentionKind.TensorCore when _tensorCoreAttention is not null => new {K}.DecodeTiling(TcRows, TcTile, TcCtasPerSm, TcCombineSlices, TcThreads / Lanes),");
            w.Line("    _ => base.TilingOf(kernel),");
            w.Line("};");
            w.Line();
            w.Open($"public override void TensorCoreAttention({Stream} stream, in {K}.TensorCoreAttentionParams p, {K}.DecodeAttentionKind kernel)");
            if (warpgroupDecode)
            {
                w.Line($"if (kernel == {K}.DecodeAttentionKind.Warpgroup && _warpgroupAttention is not null)");
                w.Open();
                w.Line("if (p.Items > 0)");
                w.Line($"    _warpgroupAttention(stream, new {Config}(p.Items, DwThreads, global::ILGPU.SharedMemoryConfig.RequestDynamic<byte>(DwSharedBytes)), p);");
                w.Close();
                w.Line($"else if (kernel == {K}.DecodeAttentionKind.TensorCore && _tensorCoreAttention is not null)");
            }
            else
            {
                w.Line($"if (kernel == {K}.DecodeAttentionKind.TensorCore && _tensorCoreAttention is not null)");
            }
            w.Open();
            w.Line("if (p.Items > 0)");
            w.Line($"    _tensorCoreAttention(stream, new {Config}(p.Items, TcThreads), p);");
            w.Close();
            w.Line("else");
            w.Line("    base.TensorCoreAttention(stream, p, kernel);");
            w.Close();
            w.Open($"public override void TensorCoreCombine({Stream} stream, in {K}.TensorCoreCombineParams p)");
            w.Line("if (_tensorCoreCombine is null)");
            w.Line("    base.TensorCoreCombine(stream, p);");
            w.Line("else if (p.Blocks > 0 && p.MaxBlockItems > 1 && p.MergedInPlace == 0) // otherwise the attention wrote every row itself");
            w.Open();
            w.Line("int warps = TcCombineWarps(p.MaxBlockItems);");
            w.Line($"_tensorCoreCombine(stream, new {Config}(p.Blocks * p.BlockCapacity * TcCombineSlices, Lanes * warps, global::ILGPU.SharedMemoryConfig.RequestDynamic<float>(TcCombineSharedFloats(warps))), p);");
            w.Close();
            w.Close();
        }
        w.Line($"public override {K}.ExpandedAttentionKind ExpandedForm {{ get; }}");
        w.Line();
        if (tensorCorePrefill)
        {
            if (warpgroupPrefill)
            {
                w.Line($"public override int ExpandedQueryTile => ExpandedForm == {K}.ExpandedAttentionKind.Warpgroup ? XwRows : MlaKernels.ExpandedQueryTile;");
                w.Line();
            }
            w.Line("/// <summary>The expanded attention's launch over <paramref name=\"ctas\"/> CTAs: the serial kernel takes a thread per query row, the wgmma kernel its tile ring in dynamic shared memory.</summary>");
            w.Line($"private {Config} ExpandedLaunch(int ctas) => ExpandedForm switch");
            w.Line("{");
            if (warpgroupPrefill)
                w.Line($"    {K}.ExpandedAttentionKind.Warpgroup => new {Config}(ctas, XwThreads, global::ILGPU.SharedMemoryConfig.RequestDynamic<byte>(XwSharedBytes)),");
            w.Line($"    {K}.ExpandedAttentionKind.TensorCore => new {Config}(ctas, XaThreads),");
            w.Line($"    _ => new {Config}(ctas, MlaKernels.ExpandedQueryTile),");
            w.Line("};");
        }
        else
        {
            w.Line("/// <summary>The (serial) expanded attention's launch over <paramref name=\"ctas\"/> CTAs: a thread per query row.</summary>");
            w.Line($"private {Config} ExpandedLaunch(int ctas) => new {Config}(ctas, MlaKernels.ExpandedQueryTile);");
        }
        w.Line();
        w.Open($"public override void HeadQuery({Stream} stream, in {K}.HeadQueryParams p)");
        w.Line("if (p.Tokens > 0)");
        w.Line($"    _headQuery(stream, new {Config}(Groups(p.Tokens * Heads * (HeadQueryConvertsPerRow + 1), ProjectionGroup), ProjectionGroup), p);");
        w.Close();
        w.Open($"public override void KeyValueExpand({Stream} stream, in {K}.KeyValueExpandParams p)");
        w.Line("if (_keyValueExpand is null)");
        w.Line("    base.KeyValueExpand(stream, p);");
        w.Line("else if (p.Keys > 0)");
        string serialExpand = $"new {Config}(Groups(p.Keys * Heads, ProjectionGroup), ProjectionGroup)";
        w.Line(tensorCorePrefill
            ? $"    _keyValueExpand(stream, ExpandedForm == {K}.ExpandedAttentionKind.Serial ? {serialExpand} : new {Config}(KeyValueExpandGroups(p.Keys), KvThreads), p);"
            : $"    _keyValueExpand(stream, {serialExpand}, p);");
        w.Close();
        w.Open($"public override void ExpandedAttention({Stream} stream, in {K}.ExpandedAttentionParams p)");
        w.Line("if (_expandedAttention is null)");
        w.Line("    base.ExpandedAttention(stream, p);");
        w.Line("else if (p.Tiles > 0)");
        w.Line("    _expandedAttention(stream, ExpandedLaunch(p.Tiles * Heads), p);");
        w.Close();
        if (!s.HasQLatent)
        {
            foreach (var (method, p) in new[] { ("QueryLatentProjection", "ProjectionParams"), ("QueryLatentNorm", "RmsNormParams") })
            {
                w.Line($"public override void {method}({Stream} stream, in {K}.{p} p) =>");
                w.Line("    throw new global::System.InvalidOperationException(\"This shape has no q-LoRA (QLatentRank = 0): queries come from q_proj.\");");
            }
        }
        w.Close();
    }
}
