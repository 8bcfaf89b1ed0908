using MlaGen.Generator.Helpers;
using MlaGen.Generator.Model;
using static MlaGen.Generator.Emitting.KernelEmitter;

namespace MlaGen.Generator.Emitting;

/// <summary>
/// The serial twins of the row-cooperative kernels: one thread per row, plain loops, no shuffles. They compute the
/// same function as the warp kernels; the CPU accelerator runs them because it turns each shuffle into an OS-thread
/// barrier (the warp form is ~100x slower there).
/// </summary>
internal static class SerialKernelEmitter
{
    public static void Emit(SourceWriter w, MlaShapeSpec s)
    {
        w.Line("// Serial path (CPU accelerator): same functions as the warp kernels above, one thread per row.");
        w.Line();
        if (s.HasQLatent)
            EmitRmsNorm(w);
        EmitKvCacheWrite(w, s);
        EmitQueryAbsorb(w, s);
        EmitAttention(w);
        EmitCombine(w);
    }

    private static void Header(SourceWriter w, string summary, string name, string parameters, string count)
    {
        w.Line($"/// <summary>{summary}</summary>");
        w.Open($"public static void {name}({K}.{parameters} p)");
        w.Line("int index = global::ILGPU.Grid.GlobalIndex.X;");
        w.Line($"if (index >= {count})");
        w.Line("    return;");
    }

    private static void EmitRmsNorm(SourceWriter w)
    {
        Header(w, "q_a_layernorm in place, one thread per token.", "QueryLatentNormSerialKernel", "RmsNormParams", "p.Tokens");
        w.Line("long row = (long)index * QLatentRank;");
        w.Line("float squares = 0f;");
        w.Line("for (int k = 0; k < QLatentRank; k++)");
        w.Line("    squares += p.Values[row + k] * p.Values[row + k];");
        w.Line("float inverseRms = 1f / global::ILGPU.Algorithms.XMath.Sqrt(squares / QLatentRank + RmsNormEpsilon);");
        w.Line("for (int k = 0; k < QLatentRank; k++)");
        w.Line($"    p.Values[row + k] = p.Values[row + k] * inverseRms * {K}.KernelMath.Bf16ToFloat(p.Weight[k]);");
        w.Close();
        w.Line();
    }

    private static void EmitKvCacheWrite(SourceWriter w, MlaShapeSpec s)
    {
        Header(w, "RMSNorm(c_kv) and RoPE(k_pe) into the cache row, one thread per token.", "KvCacheWriteSerialKernel", "KvCacheWriteParams", "p.Tokens");
        w.Line("int token = index;");
        w.Line("long source = (long)token * CacheRowValues;");
        w.Line("float squares = 0f;");
        w.Line("for (int c = 0; c < LatentRank; c++)");
        w.Line("    squares += p.KvLatent[source + c] * p.KvLatent[source + c];");
        w.Line("float inverseRms = 1f / global::ILGPU.Algorithms.XMath.Sqrt(squares / LatentRank + RmsNormEpsilon);");
        w.Line("int position = p.Cache.TokenPosition[token];");
        w.Line("int page = p.Cache.BlockTable[p.Cache.TokenSlot[token] * p.Cache.BlockTableStride + (position >> PageShift)];");
        w.Line("long target = ((long)page * PageSize + (position & PageMask)) * CacheRowValues;");
        w.Line("for (int c = 0; c < LatentRank; c++)");
        w.Line($"    p.Cache.Pages[target + c] = {K}.KernelMath.FloatToBf16(p.KvLatent[source + c] * inverseRms * {K}.KernelMath.Bf16ToFloat(p.NormWeight[c]));");
        EmitRope(w, s, "r", i => $"p.KvLatent[source + LatentRank + {i}]",
            (i, v) => $"p.Cache.Pages[target + LatentRank + {i}] = {K}.KernelMath.FloatToBf16({v})");
        w.Close();
        w.Line();
    }

    private static void EmitQueryAbsorb(SourceWriter w, MlaShapeSpec s)
    {
        Header(w, "q_lat = W_UKᵀ·q_nope and RoPE(q_pe), one thread per (token, head).", "QueryAbsorbSerialKernel", "QueryAbsorbParams", "p.Tokens * Heads");
        w.Line("int row = index;");
        w.Line("int token = row / Heads;");
        w.Line("long query = (long)row * QHeadDim;");
        w.Line("long target = (long)row * CacheRowValues;");
        w.Line("long weight = (long)(row - token * Heads) * KvUpRowsPerHead * LatentRank;");
        w.Open("for (int c = 0; c < LatentRank; c++)");
        w.Line("float sum = 0f;");
        w.Line("for (int n = 0; n < NopeHeadDim; n++)");
        w.Line($"    sum += p.Query[query + n] * {K}.KernelMath.Bf16ToFloat(p.KvUp[weight + (long)n * LatentRank + c]);");
        w.Line("p.AbsorbedQuery[target + c] = sum;");
        w.Close();
        w.Line("int position = p.TokenPosition[token];");
        EmitRope(w, s, "r", i => $"p.Query[query + NopeHeadDim + {i}]", (i, v) => $"p.AbsorbedQuery[target + LatentRank + {i}] = {v}");
        w.Close();
        w.Line();
    }

    private static void EmitAttention(SourceWriter w)
    {
        Header(w, "Split-KV absorbed attention, one thread per (token, head, split); accumulates in its output slot.",
            "AttentionSerialKernel", "AttentionParams", "p.Tokens * Heads * p.Splits");
        w.Line("int row = index / p.Splits;");
        w.Line("int split = index - row * p.Splits;");
        w.Line("int token = row / Heads;");
        w.Line("int visible = p.Cache.TokenPosition[token] + 1;");
        w.Line("int chunk = (visible + p.Splits - 1) / p.Splits;");
        w.Line("int begin = split * chunk;");
        w.Line("int end = global::System.Math.Min(visible, begin + chunk);");
        w.Line("long blockRow = (long)p.Cache.TokenSlot[token] * p.Cache.BlockTableStride;");
        w.Line("long query = (long)row * CacheRowValues;");
        w.Line("long output = ((long)split * p.Tokens * Heads + row) * LatentRank;");
        w.Line("for (int c = 0; c < LatentRank; c++)");
        w.Line("    p.PartialOutput[output + c] = 0f;");
        w.Line("float runningMax = float.NegativeInfinity;");
        w.Line("float runningSum = 0f;");
        w.Open("for (int j = begin; j < end; j++)");
        w.Line("int page = p.Cache.BlockTable[blockRow + (j >> PageShift)];");
        w.Line("long cached = ((long)page * PageSize + (j & PageMask)) * CacheRowValues;");
        w.Line("float dot = 0f;");
        w.Line("for (int c = 0; c < CacheRowValues; c++)");
        w.Line($"    dot += p.AbsorbedQuery[query + c] * {K}.KernelMath.Bf16ToFloat(p.Cache.Pages[cached + c]);");
        w.Line("float score = dot * ScoreScaleLog2;");
        EmitOnlineSoftmaxStep(w);
        w.Line("for (int c = 0; c < LatentRank; c++)");
        w.Line($"    p.PartialOutput[output + c] = p.PartialOutput[output + c] * rescale + weight * {K}.KernelMath.Bf16ToFloat(p.Cache.Pages[cached + c]);");
        w.Close();
        w.Line("float normalise = runningSum != 0f ? 1f / runningSum : 0f;");
        w.Line("for (int c = 0; c < LatentRank; c++)");
        w.Line("    p.PartialOutput[output + c] *= normalise;");
        w.Line($"p.PartialLse[(long)split * p.Tokens * Heads + row] = runningSum != 0f ? (runningMax + {K}.KernelMath.Log2(runningSum)) * {K}.KernelMath.Ln2 : float.NegativeInfinity;");
        w.Close();
        w.Line();
    }

    private static void EmitCombine(SourceWriter w)
    {
        Header(w, "Merges the splits, one thread per (token, head).", "CombineSerialKernel", "CombineParams", "p.Tokens * Heads");
        w.Line("int row = index;");
        w.Line("int rows = p.Tokens * Heads;");
        EmitMergedLse(w, "p.Splits", "(long)split * rows + row");
        w.Line("long output = (long)row * LatentRank;");
        w.Line("for (int c = 0; c < LatentRank; c++)");
        w.Line("    p.LatentOutput[output + c] = 0f;");
        w.Open("for (int split = 0; split < p.Splits; split++)");
        w.Line("float partLse = p.PartialLse[(long)split * rows + row];");
        w.Line("if (partLse == float.NegativeInfinity)");
        w.Line("    continue;");
        w.Line($"float share = {K}.KernelMath.Exp2((partLse - lse) * {K}.KernelMath.Log2E);");
        w.Line("long part = ((long)split * rows + row) * LatentRank;");
        w.Line("for (int c = 0; c < LatentRank; c++)");
        w.Line("    p.LatentOutput[output + c] += share * p.PartialOutput[part + c];");
        w.Close();
        w.Line("p.Lse[row] = lse;");
        w.Close();
        w.Line();
    }
}
