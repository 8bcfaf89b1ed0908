using System.Text;
using MlaGen.Generator.Helpers;
using MlaGen.Generator.Model;
using static MlaGen.Generator.Emitting.KernelEmitter;
using static MlaGen.Generator.Emitting.PtxText;
using static MlaGen.Generator.Helpers.LiteralFormat;

namespace MlaGen.Generator.Emitting;

/// <summary>
/// The tensor-core decode kernel (CUDA only): bf16 <c>mma.sync.m16n8k16</c> with fp32 accumulators held in named PTX
/// registers (ILGPU would round-trip <c>EmitRef</c> operands through local memory). One CTA of 4 warps takes 16 query
/// rows of one sequence and a range of cached tokens, 16 tokens per tile: the tile is loaded once into shared memory
/// for all 16 rows (V is its first latent columns), the 4 warps split QKᵀ over the 576-wide reduction, every warp
/// keeps the same online softmax, and each warp owns a quarter of the latent output columns for P·V.
/// </summary>
internal static class TensorCoreEmitter
{

    public static void Emit(SourceWriter w, MlaShapeSpec s)
    {
        int rowWords = s.CacheRowValues / 2;
        int kSteps = s.CacheRowValues / 16;
        int colsPerWarp = s.LatentRank / 4;
        int nTiles = colsPerWarp / 8;
        int chunksPerRow = s.CacheRowValues / 8;
        int tileChunks = 16 * chunksPerRow;
        int prefetch = (tileChunks + 127) / 128;

        w.Line("// Tensor-core decode (CUDA): tile shape.");
        w.Line("public const int TcRows = 16; // query rows per CTA: one mma M tile");
        w.Line("public const int TcTile = 16; // cached tokens per step");
        w.Line("public const int TcWarps = 4;");
        w.Line("public const int TcThreads = 128;");
        w.Line("public const int TcCtasPerSm = 2; // resident per SM: 255 registers x 128 threads each fit twice in 64K registers");
        w.Line($"public const int TcRowWords = {Int(rowWords)}; // a cache row as packed bf16 pairs");
        w.Line($"public const int TcStride = {Int(rowWords + 4)}; // shared-memory row stride in words: +4 spreads rows over banks");
        w.Line($"public const int TcKSteps = {Int(kSteps)}; // 16-wide steps of the [c_kv | k_pe] reduction");
        w.Line($"public const int TcColsPerWarp = {Int(colsPerWarp)}; // latent output columns each warp owns");
        w.Line($"public const int TcChunksPerRow = {Int(chunksPerRow)}; // 16-byte chunks per cache row");
        w.Line($"public const int TcTileChunks = {Int(tileChunks)};");
        var (slices, sliceColumns, partsInFlight) = CombineSlicing(s);
        w.Line($"public const int TcCombineSlices = {Int(slices)}; // CTAs per row, each merging a slice of the latent columns (more CTAs, fewer loads each)");
        w.Line($"public const int TcCombineSliceColumns = {Int(sliceColumns)};");
        w.Line($"public const int TcCombinePartsInFlight = {Int(partsInFlight)}; // items a warp reads per trip: ~32 loads per lane in flight");
        w.Line("public const int TcCombineMaxWarps = 16; // warps merging one row's slice");
        w.Line("/// <summary>Warps per row slice for the combine: one trip of items each where it can, so one long sequence's many items merge in parallel.</summary>");
        w.Line("public static int TcCombineWarps(int maxBlockItems) => global::System.Math.Clamp((maxBlockItems + TcCombinePartsInFlight - 1) / TcCombinePartsInFlight, 1, TcCombineMaxWarps);");
        w.Line("/// <summary>The combine's dynamic shared memory: each warp's partial sum of the slice; one float (ILGPU's minimum) for one warp, which keeps occupancy.</summary>");
        w.Line("public static int TcCombineSharedFloats(int warps) => warps > 1 ? warps * TcCombineSliceColumns : 1;");
        w.Line();
        EmitAttention(w, s, nTiles, prefetch);
        EmitCombine(w, s);
    }

    private static void EmitAttention(SourceWriter w, MlaShapeSpec s, int nTiles, int prefetch)
    {
        int kPerWarp = (s.CacheRowValues / 16 + 3) / 4;
        int tileBytes = 16 * (s.CacheRowValues / 2 + 4) * 4;
        w.Line("/// <summary>Tensor-core split-KV decode attention: one CTA of 4 warps per work item (see TensorCoreEmitter).</summary>");
        w.Open($"public static void TensorCoreAttentionKernel({K}.TensorCoreAttentionParams p)");
        w.Line("// Named PTX registers and the two K tiles first, before any branch: ILGPU pastes inline PTX unbraced, so they");
        w.Line("// live for the whole kernel; the tiles are declared here so cp.async and ldmatrix can name them.");
        w.Line($"{Asm}(\".reg .f32 s<8>; .reg .f32 o<{nTiles * 4}>; .shared .align 16 .b8 mla_tiles[{2 * tileBytes}];\");");
        w.Line("global::ILGPU.ArrayView<float> partial = global::ILGPU.SharedMemory.Allocate<float>(TcWarps * 256);");
        w.Line("int tid = global::ILGPU.Group.IdxX;");
        w.Line("int warp = tid >> 5;");
        w.Line("int lane = tid & 31;");
        w.Line("int g = lane >> 2; // mma group: rows g and g + 8");
        w.Line("int t = lane & 3; // thread in group: columns 2t, 2t + 1");
        EmitWorkItem(w);
        EmitItemOutput(w, "TcRows");
        w.Line("int visibleLo = g < rows ? p.Cache.TokenPosition[(firstRow + g) / Heads] + 1 : 0;");
        w.Line("int visibleHi = g + 8 < rows ? p.Cache.TokenPosition[(firstRow + g + 8) / Heads] + 1 : 0;");
        w.Line();
        w.Line($"// Q as bf16 mma A fragments in registers: this warp's {kPerWarp} k-steps of the [c_kv | k_pe] reduction.");
        w.Line($"int kBase = warp * {kPerWarp};");
        w.Line("long qLo = (long)(firstRow + g) * CacheRowValues + 2 * t;");
        w.Line("long qHi = qLo + 8L * CacheRowValues;");
        for (int i = 0; i < kPerWarp; i++)
        {
            string k = $"(kBase + {i})";
            string lo = $"g < rows && {k} < TcKSteps";
            string hi = $"g + 8 < rows && {k} < TcKSteps";
            w.Line($"uint q{i}a = {lo} ? {K}.KernelMath.PackBf16(p.AbsorbedQuery[qLo + 16 * {k}], p.AbsorbedQuery[qLo + 16 * {k} + 1]) : 0u;");
            w.Line($"uint q{i}b = {hi} ? {K}.KernelMath.PackBf16(p.AbsorbedQuery[qHi + 16 * {k}], p.AbsorbedQuery[qHi + 16 * {k} + 1]) : 0u;");
            w.Line($"uint q{i}c = {lo} ? {K}.KernelMath.PackBf16(p.AbsorbedQuery[qLo + 16 * {k} + 8], p.AbsorbedQuery[qLo + 16 * {k} + 9]) : 0u;");
            w.Line($"uint q{i}d = {hi} ? {K}.KernelMath.PackBf16(p.AbsorbedQuery[qHi + 16 * {k} + 8], p.AbsorbedQuery[qHi + 16 * {k} + 9]) : 0u;");
        }
        w.Line();
        w.Line("// ldmatrix row addresses (bytes into a tile): lane l names row l % 8 of 8x8 matrix l / 8.");
        w.Line("int matrix = lane >> 3;");
        w.Line("long kRow = (long)(((lane & 7) + (matrix >> 1) * 8) * TcStride * 4 + (matrix & 1) * 16); // K: tokens x dims");
        w.Line("long vRow = (long)(((lane & 7) + (matrix & 1) * 8) * TcStride * 4 + (warp * TcColsPerWarp + (matrix >> 1) * 8) * 2); // V: tokens x columns");
        w.Line();
        w.Line($"{Asm}(\"{Repeat(nTiles * 4, i => $"mov.f32 o{i}, 0f00000000;")}\");");
        EmitCopy(w, prefetch, "begin", "0", tileBytes);
        w.Line("float maxLo = float.NegativeInfinity, maxHi = float.NegativeInfinity, sumLo = 0f, sumHi = 0f;");
        w.Line("long buffer = 0;");
        w.Open("for (int tile = begin; tile < end; tile += TcTile)");
        w.Line($"{Asm}(\"cp.async.wait_group 0;\");");
        w.Line("global::ILGPU.Group.Barrier(); // this tile has landed for everyone, and nobody still reads the other buffer");
        w.Line("if (tile + TcTile < end)");
        w.Open();
        EmitCopy(w, prefetch, "tile + TcTile", $"{tileBytes} - buffer", tileBytes);
        w.Close();
        w.Line();
        w.Line("// S = Q·Kᵀ over this warp's share of the reduction: ldmatrix.x4 gives both n-tiles' B fragments.");
        w.Line($"{Asm}(\"{Repeat(8, i => $"mov.f32 s{i}, 0f00000000;")}\");");
        for (int i = 0; i < kPerWarp; i++)
        {
            w.Line($"if (kBase + {i} < TcKSteps)");
            w.Line($"    {Asm}(\"{{ .reg .u64 a; .reg .b32 b<4>; mov.u64 a, mla_tiles; add.u64 a, a, %0; ldmatrix.sync.aligned.m8n8.x4.shared.b16 {{b0,b1,b2,b3}}, [a]; " +
                $"{Mma} {{s0,s1,s2,s3}}, {{%1,%2,%3,%4}}, {{b0,b1}}, {{s0,s1,s2,s3}}; {Mma} {{s4,s5,s6,s7}}, {{%1,%2,%3,%4}}, {{b2,b3}}, {{s4,s5,s6,s7}}; }}\", " +
                $"buffer + kRow + (kBase + {i}) * 32L, q{i}a, q{i}b, q{i}c, q{i}d);");
        }
        for (int i = 0; i < 8; i++)
        {
            w.Line($"{Asm}(\"mov.f32 %0, s{i};\", out float x{i});");
            w.Line($"partial[warp * 256 + {i * 32} + lane] = x{i};");
        }
        w.Line("global::ILGPU.Group.Barrier();");
        w.Line("// Sum the warps' shares, scale to log2 units, mask what each row may not see.");
        for (int i = 0; i < 8; i++)
        {
            int nt = i >> 2;
            bool hi = (i & 2) != 0;
            string token = $"tile + {8 * nt} + 2 * t + {i & 1}";
            w.Line($"float s{i} = partial[{i * 32} + lane] + partial[{256 + i * 32} + lane] + partial[{512 + i * 32} + lane] + partial[{768 + i * 32} + lane];");
            w.Line($"s{i} = {token} < {(hi ? "visibleHi" : "visibleLo")} ? s{i} * ScoreScaleLog2 : float.NegativeInfinity;");
        }
        EmitSoftmax(w, "Lo", new[] { 0, 1, 4, 5 });
        EmitSoftmax(w, "Hi", new[] { 2, 3, 6, 7 });
        var rescale = new StringBuilder();
        for (int nt = 0; nt < nTiles; nt++)
            for (int c = 0; c < 4; c++)
                rescale.Append($"mul.f32 o{4 * nt + c}, o{4 * nt + c}, %{(c < 2 ? 0 : 1)}; ");
        w.Line($"{Asm}(\"{rescale.ToString().TrimEnd()}\", rescaleLo, rescaleHi);");
        w.Line("// P as the A operand (the S accumulator layout is the m16k16 A layout).");
        w.Line($"uint pa0 = {K}.KernelMath.PackBf16(s0, s1), pa1 = {K}.KernelMath.PackBf16(s2, s3);");
        w.Line($"uint pa2 = {K}.KernelMath.PackBf16(s4, s5), pa3 = {K}.KernelMath.PackBf16(s6, s7);");
        w.Line("// O += P·V: V is the tile itself; ldmatrix.trans gives two n-tiles' B fragments at a time.");
        for (int np = 0; np < nTiles / 2; np++)
        {
            int a = 8 * np, b = 8 * np + 4;
            w.Line($"{Asm}(\"{{ .reg .u64 a; .reg .b32 b<4>; mov.u64 a, mla_tiles; add.u64 a, a, %0; ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {{b0,b1,b2,b3}}, [a]; " +
                $"{Mma} {{o{a},o{a + 1},o{a + 2},o{a + 3}}}, {{%1,%2,%3,%4}}, {{b0,b1}}, {{o{a},o{a + 1},o{a + 2},o{a + 3}}}; " +
                $"{Mma} {{o{b},o{b + 1},o{b + 2},o{b + 3}}}, {{%1,%2,%3,%4}}, {{b2,b3}}, {{o{b},o{b + 1},o{b + 2},o{b + 3}}}; }}\", " +
                $"buffer + vRow + {np * 32}L, pa0, pa1, pa2, pa3);");
        }
        w.Line($"buffer = {tileBytes} - buffer;");
        w.Close();
        w.Line();
        w.Line("// Normalise and write this item's partial output and log-sum-exp.");
        w.Line("float invLo = sumLo != 0f ? 1f / sumLo : 0f;");
        w.Line("float invHi = sumHi != 0f ? 1f / sumHi : 0f;");
        w.Line("long outLo = (itemFirstRow + g) * LatentRank + warp * TcColsPerWarp + 2 * t;");
        w.Line("long outHi = outLo + 8L * LatentRank;");
        for (int nt = 0; nt < nTiles; nt++)
        {
            int o = 4 * nt;
            for (int c = 0; c < 4; c++)
                w.Line($"{Asm}(\"mov.f32 %0, o{o + c};\", out float r{o + c});");
            w.Line($"if (g < rows) {{ itemOutput[outLo + {8 * nt}] = r{o} * invLo; itemOutput[outLo + {8 * nt + 1}] = r{o + 1} * invLo; }}");
            w.Line($"if (g + 8 < rows) {{ itemOutput[outHi + {8 * nt}] = r{o + 2} * invHi; itemOutput[outHi + {8 * nt + 1}] = r{o + 3} * invHi; }}");
        }
        w.Open("if (warp == 0 && t == 0)");
        w.Line("if (g < rows)");
        w.Line($"    itemLse[itemFirstRow + g] = sumLo != 0f ? (maxLo + {K}.KernelMath.Log2(sumLo)) * {K}.KernelMath.Ln2 : float.NegativeInfinity;");
        w.Line("if (g + 8 < rows)");
        w.Line($"    itemLse[itemFirstRow + g + 8] = sumHi != 0f ? (maxHi + {K}.KernelMath.Log2(sumHi)) * {K}.KernelMath.Ln2 : float.NegativeInfinity;");
        w.Close();
        EmitMergeInPlace(w, s, "TcRows", "TcThreads", "partial");
        w.Close();
        w.Line();
    }

    /// <summary>
    /// The split-KV work item both decode kernels start from, one record (<c>WorkItemRecord</c>, one sector): its row block
    /// (first row, rows, items), the cached token range [begin, end) no row of it sees past, and the sequence's block-table
    /// row. Nothing here waits for another load, so the first copy waits for this sector and the block table only.
    /// </summary>
    internal static void EmitWorkItem(SourceWriter w)
    {
        w.Line("int item = global::ILGPU.Grid.IdxX;");
        w.Line($"long record = (long)item * {K}.WorkItemRecord.Ints;");
        foreach (var (name, field) in new[] { ("block", "Block"), ("begin", "Begin"), ("end", "End"), ("sequenceSlot", "Slot"), ("firstRow", "FirstRow"), ("rows", "Rows"), ("blockItems", "BlockItems"), ("blockFirstItem", "BlockFirstItem") })
            w.Line($"int {name} = p.WorkItems[record + {K}.WorkItemRecord.{field}];");
        w.Line("long blockRow = (long)sequenceSlot * p.Cache.BlockTableStride;");
    }

    /// <summary>
    /// Where the item's rows go: a block of one item writes its final latent output and LSE itself (the combine skips it),
    /// else the item's partial ones (<c>itemOutput</c>/<c>itemLse</c> from row <c>itemFirstRow</c>).
    /// </summary>
    internal static void EmitItemOutput(SourceWriter w, string rowsPerItem)
    {
        w.Line("bool alone = blockItems == 1;");
        w.Line("global::ILGPU.ArrayView<float> itemOutput = alone ? p.LatentOutput : p.PartialOutput;");
        w.Line("global::ILGPU.ArrayView<float> itemLse = alone ? p.Lse : p.PartialLse;");
        w.Line($"long itemFirstRow = alone ? firstRow : (long)item * {rowsPerItem};");
    }

    /// <summary>cp.async of one tile into a buffer: 16-byte chunks; rows past <c>end</c> are zero-filled (source size 0).</summary>
    private static void EmitCopy(SourceWriter w, int prefetch, string start, string bufferBytes, int tileBytes)
    {
        w.Line("{");
        w.Line($"    long pageRow = (long)p.Cache.BlockTable[blockRow + (({start}) >> PageShift)] * PageSize + (({start}) & PageMask);");
        w.Line($"    int valid = end - ({start});");
        w.Line($"    long into = {bufferBytes};");
        for (int i = 0; i < prefetch; i++)
        {
            string chunk = $"tid + {i * 128}";
            w.Line($"    if ({chunk} < TcTileChunks)");
            w.Line("    {");
            w.Line($"        int row = ({chunk}) / TcChunksPerRow;");
            w.Line($"        int column = ({chunk}) - row * TcChunksPerRow;");
            w.Line("        bool inside = row < valid;");
            w.Line("        long source = p.PagesAddress + (inside ? ((pageRow + row) * TcChunksPerRow + column) * 16L : 0L);");
            w.Line($"        {Asm}(\"{CopyAsync("mla_tiles")}\", into + (long)row * TcStride * 4 + column * 16, source, inside ? 16 : 0);");
            w.Line("    }");
        }
        w.Line("    global::ILGPU.Runtime.Cuda.CudaAsm.Emit(\"cp.async.commit_group;\");");
        w.Line("}");
    }

    /// <summary>Online softmax for the 4 scores of one row a lane holds; the quad (4 lanes) shares the row.</summary>
    private static void EmitSoftmax(SourceWriter w, string row, int[] scores)
    {
        string m = "max" + row, l = "sum" + row;
        w.Line($"float tileMax{row} = global::System.Math.Max(global::System.Math.Max(s{scores[0]}, s{scores[1]}), global::System.Math.Max(s{scores[2]}, s{scores[3]}));");
        w.Line($"tileMax{row} = global::System.Math.Max(tileMax{row}, global::ILGPU.Warp.ShuffleXor(tileMax{row}, 1));");
        w.Line($"tileMax{row} = global::System.Math.Max(tileMax{row}, global::ILGPU.Warp.ShuffleXor(tileMax{row}, 2));");
        w.Line($"float newMax{row} = global::System.Math.Max({m}, tileMax{row});");
        w.Line($"bool none{row} = newMax{row} == float.NegativeInfinity; // nothing visible yet: keep zeros, avoid -inf - -inf");
        w.Line($"float rescale{row} = none{row} ? 1f : {K}.KernelMath.Exp2({m} - newMax{row});");
        foreach (int i in scores)
            w.Line($"s{i} = none{row} ? 0f : {K}.KernelMath.Exp2(s{i} - newMax{row});");
        w.Line($"float tileSum{row} = s{scores[0]} + s{scores[1]} + s{scores[2]} + s{scores[3]};");
        w.Line($"tileSum{row} += global::ILGPU.Warp.ShuffleXor(tileSum{row}, 1);");
        w.Line($"tileSum{row} += global::ILGPU.Warp.ShuffleXor(tileSum{row}, 2);");
        w.Line($"{l} = {l} * rescale{row} + tileSum{row};");
        w.Line($"{m} = newMax{row};");
    }

    /// <summary>
    /// The combine's split of a row: 4 slices of the latent where each is whole lane chunks, and as many items per warp trip
    /// as keep ~32 part loads per lane in flight (2 to 8).
    /// </summary>
    private static (int Slices, int SliceColumns, int PartsInFlight) CombineSlicing(MlaShapeSpec s)
    {
        int slices = s.LatentRank % (4 * Lanes) == 0 ? 4 : 1;
        int sliceColumns = s.LatentRank / slices;
        int chunks = (sliceColumns + Lanes - 1) / Lanes;
        return (slices, sliceColumns, System.Math.Max(2, System.Math.Min(8, 32 / chunks)));
    }

    private static void EmitCombine(SourceWriter w, MlaShapeSpec s)
    {
        w.Line("/// <summary>");
        w.Line("/// One CTA per query row and slice of its latent columns: its warps take the row block's items in turn (lanes over the");
        w.Line("/// slice), weighted by exp(lse_item − lse), and sum their parts through shared memory. Blocks of one item are skipped:");
        w.Line("/// the attention kernel wrote their rows.");
        w.Line("/// </summary>");
        w.Open($"public static void TensorCoreCombineKernel({K}.TensorCoreCombineParams p)");
        w.Line("global::ILGPU.ArrayView<float> merged = global::ILGPU.SharedMemory.GetDynamic<float>(); // TcCombineSharedFloats(warps)");
        w.Line("int lane = global::ILGPU.Group.IdxX & 31;");
        w.Line("int warp = global::ILGPU.Group.IdxX >> 5;");
        w.Line("int warps = global::ILGPU.Group.DimX >> 5;");
        w.Line("int slice = global::ILGPU.Grid.IdxX % TcCombineSlices;");
        w.Line("int blockRow = global::ILGPU.Grid.IdxX / TcCombineSlices;");
        w.Line("int block = blockRow / p.BlockCapacity;");
        w.Line("int r = blockRow - block * p.BlockCapacity;");
        w.Line("if (r >= p.BlockRows[block])");
        w.Line("    return;");
        w.Line("int count = p.BlockItems[block];");
        w.Line("if (count == 1)");
        w.Line("    return; // the attention kernel wrote this block's rows itself");
        EmitRowSliceMerge(w, s, new MergedBlock("count", "p.BlockFirstItem[block]", "p.BlockFirstRow[block]", "p.BlockCapacity"),
            new MergeWarps("warp", "warps", "global::ILGPU.Group.IdxX", "global::ILGPU.Group.DimX", "global::ILGPU.Group.Barrier();"));
        w.Close();
        w.Line();
    }

    /// <summary>
    /// The split block a row-slice merge reads: <see cref="Items"/> parts from item <see cref="FirstItem"/>, each
    /// <see cref="Capacity"/> rows, into output rows from <see cref="FirstRow"/> (C# expressions in the kernel's scope).
    /// </summary>
    internal readonly record struct MergedBlock(string Items, string FirstItem, string FirstRow, string Capacity);

    /// <summary>
    /// The warps that run a row-slice merge: warp <see cref="Warp"/> of <see cref="Warps"/> (thread <see cref="Thread"/> of
    /// <see cref="Threads"/>), meeting at <see cref="Barrier"/>, a statement that those warps alone reach.
    /// </summary>
    internal readonly record struct MergeWarps(string Warp, string Warps, string Thread, string Threads, string Barrier);

    /// <summary>
    /// Merges one row slice of a split block: row <c>r</c> of <paramref name="block"/>, latent columns
    /// <c>slice</c>·TcCombineSliceColumns.., over its items. The <paramref name="warps"/> take the items in turn, lanes the
    /// columns; their sums meet in <c>merged</c> (shared, warps × TcCombineSliceColumns floats). The combine kernel runs one
    /// slice per CTA; an attention kernel that merges its own block shares the block's slices among the block's items.
    /// </summary>
    internal static void EmitRowSliceMerge(SourceWriter w, MlaShapeSpec s, MergedBlock block, MergeWarps warps)
    {
        var (_, sliceColumns, partsInFlight) = CombineSlicing(s);
        w.Line($"int first = {block.FirstItem};");
        System.Func<string, string> partRow = split => $"(long)(first + {split}) * {block.Capacity} + r";
        EmitWarpMergedLse(w, block.Items, partRow);
        EmitWeightedParts(w, sliceColumns, "slice * TcCombineSliceColumns + lane", partsInFlight, block.Items, partRow, warps.Warp, warps.Warps);
        w.Line($"long output = (long)({block.FirstRow} + r) * LatentRank + slice * TcCombineSliceColumns;");
        w.Open($"if ({warps.Warps} == 1)");
        EmitLaneStores(w, sliceColumns, c => $"p.LatentOutput[output + lane + {c * Lanes}] = o{c};");
        w.Close();
        w.Open("else");
        EmitLaneStores(w, sliceColumns, c => $"merged[{warps.Warp} * TcCombineSliceColumns + lane + {c * Lanes}] = o{c};");
        w.Line(warps.Barrier);
        w.Open($"for (int column = {warps.Thread}; column < TcCombineSliceColumns; column += {warps.Threads})");
        w.Line("float sum = 0f;");
        w.Line($"for (int other = 0; other < {warps.Warps}; other++)");
        w.Line("    sum += merged[other * TcCombineSliceColumns + column];");
        w.Line("p.LatentOutput[output + column] = sum;");
        w.Close();
        w.Close();
        w.Line($"if ({warps.Thread} == 0 && slice == 0)");
        w.Line($"    p.Lse[{block.FirstRow} + r] = lse;");
    }

    /// <summary>
    /// The in-place merge, after the item's part is written, for plans whose items are all resident at once
    /// (<c>p.MergeCounters</c> ≠ 0): the block's items count themselves in, wait for all of them, and share the block's row
    /// slices; the last to leave zeroes the counters for the next launch. An item's slices (every blockItems-th unit of the
    /// block from its own) go side by side, one group of warps each: the fewest groups that take them in one round (the plan
    /// allows no more slices per item than the CTA has warps), each group meeting at its own named barrier (1 + group; 0 is
    /// the CTA's). <paramref name="threads"/> is the CTA's thread count, <paramref name="merged"/> a shared view of at least
    /// threads/32 × TcCombineSliceColumns floats free by now.
    /// </summary>
    internal static void EmitMergeInPlace(SourceWriter w, MlaShapeSpec s, string capacity, string threads, string merged)
    {
        w.Line("// A split block merges here when the plan is one wave: no combine launch, and the parts are read back from L2.");
        w.Open("if (!alone && p.MergeCounters != 0)");
        w.Line("global::ILGPU.Group.Barrier(); // every thread's share of the part is written");
        w.Line("if (tid == 0)");
        w.Line($"    {Asm}(\"{MergeArrivalPtx}\", p.MergeCounters + block * 8L, blockItems);");
        w.Line("global::ILGPU.Group.Barrier(); // all of the block's parts are visible to the whole CTA");
        w.Line("int firstUnit = item - blockFirstItem;");
        w.Line("int units = (rows * TcCombineSlices - firstUnit + blockItems - 1) / blockItems; // this item's row slices");
        w.Line($"int groups = {threads} / Lanes;");
        w.Line("while (groups > 1 && groups / 2 >= units)");
        w.Line("    groups /= 2;");
        w.Line($"int groupWarps = {threads} / Lanes / groups;");
        w.Line("int group = (tid >> 5) / groupWarps;");
        w.Line("int groupWarp = (tid >> 5) - group * groupWarps;");
        w.Line($"global::ILGPU.ArrayView<float> merged = {merged}.SubView((long)group * groupWarps * TcCombineSliceColumns, (long)groupWarps * TcCombineSliceColumns);");
        string barrier = $"{Asm}(\"bar.sync %0, %1;\", 1 + group, groupWarps * Lanes);";
        w.Open("for (int unit = firstUnit + group * blockItems; unit < rows * TcCombineSlices; unit += groups * blockItems)");
        w.Line("int r = unit / TcCombineSlices;");
        w.Line("int slice = unit - r * TcCombineSlices;");
        EmitRowSliceMerge(w, s, new MergedBlock("blockItems", "blockFirstItem", "firstRow", capacity),
            new MergeWarps("groupWarp", "groupWarps", "tid - group * groupWarps * Lanes", "groupWarps * Lanes", barrier));
        w.Line($"{barrier} // merged is free for the group's next slice");
        w.Close();
        w.Close();
    }

    /// <summary>
    /// Thread 0 of an item: its CTA's part is written (the barrier before), so count it in at <c>%0</c> (release), wait
    /// until all <c>%1</c> items of the block have (acquire), then count itself out at <c>%0+4</c>; the last out zeroes both.
    /// </summary>
    private const string MergeArrivalPtx =
        "{ .reg .u32 n; .reg .pred pw, pl; fence.acq_rel.gpu; red.release.gpu.global.add.u32 [%0], 1; " +
        "MlaMergeWait: ld.acquire.gpu.global.u32 n, [%0]; setp.lt.u32 pw, n, %1; @pw bra MlaMergeWait; " +
        "atom.relaxed.gpu.global.add.u32 n, [%0+4], 1; add.u32 n, n, 1; setp.eq.u32 pl, n, %1; " +
        "@pl st.relaxed.gpu.global.u32 [%0], 0; @pl st.relaxed.gpu.global.u32 [%0+4], 0; }";
}
