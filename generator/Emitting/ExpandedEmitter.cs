using MlaGen.Generator.Helpers;
using MlaGen.Generator.Model;
using static MlaGen.Generator.Emitting.KernelEmitter;

namespace MlaGen.Generator.Emitting;

/// <summary>
/// The expanded (non-absorbed) attention form that DeepSeek uses for prefill: per-head queries with RoPE, kv_b_proj
/// applied to every key's latent row, then causal attention over K (nope + rope) and V. This file holds the query
/// kernel (both accelerators) and the serial forms (CPU); the tensor-core forms live in ExpandedTensorCoreEmitter and
/// KeyValueExpandEmitter.
/// </summary>
internal static class ExpandedEmitter
{
    public static void Emit(SourceWriter w, MlaShapeSpec s)
    {
        w.Line("// Expanded (non-absorbed) form: prefill and chunked prefill.");
        w.Line("public const int ExpandedQueryTile = 64; // query tokens of one sequence per work item");
        bool pairs = s.NopeHeadDim % 2 == 0 && s.QHeadDim % 2 == 0; // rows start on a 4-byte boundary
        w.Line($"public const int HeadQueryConvertsPerRow = {(pairs ? "NopeHeadDim / 2; // a pair" : "NopeHeadDim; // a value")} per thread; plus one RoPE thread per row");
        w.Line();
        EmitHeadQuery(w, s);
        EmitExpandSerial(w);
        EmitAttentionSerial(w);
    }

    private static void EmitHeadQuery(SourceWriter w, MlaShapeSpec s)
    {
        bool pairs = s.NopeHeadDim % 2 == 0 && s.QHeadDim % 2 == 0;
        w.Line("/// <summary>");
        w.Line("/// q → BF16 [q_nope | RoPE(q_pe)] per (token, head), no shuffles (both accelerators). The first threads convert");
        w.Line("/// the nope part, one value (or pair) each so neighbouring threads touch neighbouring words; the last rows-many");
        w.Line("/// threads rotate one row's RoPE part each, side by side so a warp's lanes all rotate (its double-precision angles are the cost).");
        w.Line("/// </summary>");
        w.Open($"public static void HeadQueryKernel({K}.HeadQueryParams p)");
        w.Line("int index = global::ILGPU.Grid.GlobalIndex.X;");
        w.Line("int rows = p.Tokens * Heads;");
        w.Line("int converts = rows * HeadQueryConvertsPerRow;");
        w.Open("if (index < converts)");
        w.Line("int convertRow = index / HeadQueryConvertsPerRow; // token · Heads + head");
        w.Line("int pair = index - convertRow * HeadQueryConvertsPerRow;");
        w.Line(pairs
            ? $"p.HeadQuery.Cast<uint>()[((long)convertRow * QHeadDim >> 1) + pair] = {K}.KernelMath.PackBf16(p.Query[(long)convertRow * QHeadDim + 2 * pair], p.Query[(long)convertRow * QHeadDim + 2 * pair + 1]);"
            : $"p.HeadQuery[(long)convertRow * QHeadDim + pair] = {K}.KernelMath.FloatToBf16(p.Query[(long)convertRow * QHeadDim + pair]);");
        w.Line("return;");
        w.Close();
        w.Line("int row = index - converts;");
        w.Line("if (row >= rows)");
        w.Line("    return;");
        w.Line("long at = (long)row * QHeadDim;");
        w.Line("int position = p.TokenPosition[row / Heads];");
        EmitRope(w, s, "r", i => $"p.Query[at + NopeHeadDim + {i}]", (i, v) => $"p.HeadQuery[at + NopeHeadDim + {i}] = {K}.KernelMath.FloatToBf16({v})");
        w.Close();
        w.Line();
    }

    private static void EmitExpandSerial(SourceWriter w)
    {
        w.Line("/// <summary>kv_b_proj over one key's cached latent row for one head, one thread per (key, head): K_nope and V as BF16.</summary>");
        w.Open($"public static void KeyValueExpandSerialKernel({K}.KeyValueExpandParams p)");
        w.Line("int index = global::ILGPU.Grid.GlobalIndex.X; // head · Keys + key");
        w.Line("if (index >= p.Keys * Heads)");
        w.Line("    return;");
        w.Line("int head = index / p.Keys;");
        w.Line("long latent = (long)p.KeyCacheRow[index - head * p.Keys] * CacheRowValues;");
        w.Line("long weight = (long)head * KvUpRowsPerHead * LatentRank;");
        w.Open("for (int d = 0; d < KvUpRowsPerHead; d++)");
        w.Line("float sum = 0f;");
        w.Line("for (int k = 0; k < LatentRank; k++)");
        w.Line($"    sum += {K}.KernelMath.Bf16ToFloat(p.KvUp[weight + (long)d * LatentRank + k]) * {K}.KernelMath.Bf16ToFloat(p.Pages[latent + k]);");
        w.Line("if (d < NopeHeadDim)");
        w.Line($"    p.KeyNope[(long)index * NopeHeadDim + d] = {K}.KernelMath.FloatToBf16(sum);");
        w.Line("else");
        w.Line($"    p.Value[(long)index * VHeadDim + d - NopeHeadDim] = {K}.KernelMath.FloatToBf16(sum);");
        w.Close();
        w.Close();
        w.Line();
    }

    private static void EmitAttentionSerial(SourceWriter w)
    {
        w.Line("/// <summary>Causal expanded attention, one group per (query tile, head) and one thread per query row; fp32 online softmax.</summary>");
        w.Open($"public static void ExpandedAttentionSerialKernel({K}.ExpandedAttentionParams p)");
        w.Line("int item = global::ILGPU.Grid.IdxX;");
        w.Line("int tile = item / Heads;");
        w.Line("int head = item - tile * Heads;");
        w.Line("int r = global::ILGPU.Group.IdxX;");
        w.Line("if (r >= p.TileTokens[tile])");
        w.Line("    return;");
        w.Line("int token = p.TileFirstToken[tile] + r;");
        w.Line("int visible = p.TileFirstPosition[tile] + r + 1; // causal: the prefix and the chunk up to itself");
        w.Line("int keyStart = p.TileKeyStart[tile];");
        w.Line("long query = ((long)token * Heads + head) * QHeadDim;");
        w.Line("long output = ((long)token * Heads + head) * VHeadDim;");
        w.Line("global::ILGPU.ArrayView<float> o = global::ILGPU.LocalMemory.Allocate<float>(VHeadDim);");
        w.Line("for (int d = 0; d < VHeadDim; d++)");
        w.Line("    o[d] = 0f;");
        w.Line("float runningMax = float.NegativeInfinity;");
        w.Line("float runningSum = 0f;");
        w.Open("for (int j = 0; j < visible; j++)");
        w.Line("long key = (long)head * p.Keys + keyStart + j;");
        w.Line("long rope = (long)p.KeyCacheRow[keyStart + j] * CacheRowValues + LatentRank;");
        w.Line("float dot = 0f;");
        w.Line("for (int n = 0; n < NopeHeadDim; n++)");
        w.Line($"    dot += {K}.KernelMath.Bf16ToFloat(p.HeadQuery[query + n]) * {K}.KernelMath.Bf16ToFloat(p.KeyNope[key * NopeHeadDim + n]);");
        w.Line("for (int i = 0; i < RopeDim; i++)");
        w.Line($"    dot += {K}.KernelMath.Bf16ToFloat(p.HeadQuery[query + NopeHeadDim + i]) * {K}.KernelMath.Bf16ToFloat(p.Pages[rope + i]);");
        w.Line("float score = dot * ScoreScaleLog2;");
        EmitOnlineSoftmaxStep(w);
        w.Line("for (int d = 0; d < VHeadDim; d++)");
        w.Line($"    o[d] = o[d] * rescale + weight * {K}.KernelMath.Bf16ToFloat(p.Value[key * VHeadDim + d]);");
        w.Close();
        w.Line("float normalise = 1f / runningSum; // every query sees at least itself");
        w.Line("for (int d = 0; d < VHeadDim; d++)");
        w.Line("    p.HeadOutput[output + d] = o[d] * normalise;");
        w.Line($"p.Lse[(long)token * Heads + head] = (runningMax + {K}.KernelMath.Log2(runningSum)) * {K}.KernelMath.Ln2;");
        w.Close();
        w.Line();
    }
}
