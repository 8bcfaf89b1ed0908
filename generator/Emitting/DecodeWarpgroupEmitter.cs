using System.Linq;
using MlaGen.Generator.Helpers;
using MlaGen.Generator.Model;
using static MlaGen.Generator.Emitting.ExpandedTensorCoreEmitter;
using static MlaGen.Generator.Emitting.KernelEmitter;
using static MlaGen.Generator.Emitting.PtxText;
using static MlaGen.Generator.Emitting.WarpgroupPtx;
using static MlaGen.Generator.Helpers.LiteralFormat;

namespace MlaGen.Generator.Emitting;

/// <summary>
/// The Hopper absorbed (decode) attention on warpgroup MMA (wgmma, sm_90a), FlashMLA's shape: one CTA of two warpgroups
/// takes 64 query rows (token × head) of one sequence and a range of its cached tokens. Q (64 × [latent | rope], bf16)
/// sits in shared memory for the whole item; 32-token cache tiles stream through three cp.async stages. Each warpgroup
/// computes S = Q·Kᵀ over half of the reduction, the halves are summed through shared memory, both warpgroups run the
/// same online softmax, and each owns half of the latent output columns for O += P·V (V is the tile's first latent
/// columns, read where it already lies). Q and the tiles are stored as wgmma's 128-byte-swizzled boxes of 64 values (8
/// lanes copy one row's 128 contiguous bytes into one conflict-free shared row), which serve K (K-major) and V (MN-major)
/// alike. Shared memory above 48 KB is dynamic: the loader raises the function's limit.
/// </summary>
internal static class DecodeWarpgroupEmitter
{
    private const int Threads = 256;
    private const int Rows = 64;
    private const int Stages = 3;
    private const int QueryChunksInFlight = 6; // 12 16-byte loads per thread in flight while Q is packed (≤ 10 PTX operands: 6 targets, source, count)
    private const int QueryBoxBytes = Rows * BoxRowBytes; // one 64-value column box of Q's rows
    private const int KeyBoxBytes = Keys * BoxRowBytes; // one 64-value column box of a tile's rows

    public static void Emit(SourceWriter w, MlaShapeSpec s)
    {
        int boxes = s.CacheRowValues / BoxValues;
        int queryBytes = Rows * s.CacheRowValues * 2;
        int stageBytes = Keys * s.CacheRowValues * 2;
        int exchangeBytes = Threads * ScoreTiles * 4 * 4;
        w.Line("// Warpgroup (wgmma) decode attention (Hopper): tile, shared-memory map and matrix descriptors.");
        w.Line($"public const int DwRows = {Int(Rows)}; // query rows (token x head) per CTA: one wgmma M");
        w.Line($"public const int DwKeys = {Int(Keys)}; // cached tokens per tile");
        w.Line($"public const int DwThreads = {Int(Threads)}; // two warpgroups");
        w.Line($"public const int DwStages = {Int(Stages)};");
        w.Line("public const int DwCtasPerSm = 1; // the shared memory below fills an SM");
        w.Line($"public const int DwBoxes = {Int(boxes)}; // 64-value (128-byte) column boxes of a cache row");
        w.Line($"public const int DwStageBytes = {Int(stageBytes)}; // 32 cache rows: box b holds their values 64b.. as 32 swizzled 128-byte rows");
        w.Line($"public const int DwQueryBytes = {Int(queryBytes)}; // Q: 64 rows in the same boxes, at offset 0");
        w.Line($"public const int DwExchangeBytes = {Int(exchangeBytes)}; // each thread's partial S, for the other warpgroup");
        w.Line("public const int DwExchange = DwQueryBytes + DwStages * DwStageBytes;");
        w.Line($"public const int DwOutputStride = {Int(s.LatentRank + 8)}; // fp32 per row of O staged over Q and the stages (+8: a quad's rows start 8 banks apart)");
        w.Line($"public const int DwSharedBytes = DwExchange + DwExchangeBytes + {Int(SwizzleAtomBytes)}; // + slack to align the block to a swizzle atom");
        w.Line($"public const long DwRowDescriptor = 0x{KMajorDescriptor:X}L; // K-major Q (A) and K (B), 128-byte swizzle: SBO {SwizzleAtomBytes} B (next 8 rows)");
        w.Line($"public const long DwValueDescriptor = 0x{MnMajorDescriptor(KeyBoxBytes):X}L; // MN-major V (B), 128-byte swizzle: LBO {KeyBoxBytes} B (next 64 columns), SBO {SwizzleAtomBytes} B (next 8 keys)");
        w.Line();
        EmitKernel(w, s, boxes);
    }

    private static void EmitKernel(SourceWriter w, MlaShapeSpec s, int boxes)
    {
        if (Keys * 8 != Threads)
            throw new System.InvalidOperationException("The copy gives each tile row 8 lanes (one 128-byte box row per pass).");
        int outTiles = OutTiles(s);
        int tilePages = Keys / System.Math.Min(s.PageSize, Keys);
        w.Line("/// <summary>Split-KV decode attention on warpgroup MMA (sm_90a): one CTA of two warpgroups per work item (see DecodeWarpgroupEmitter).</summary>");
        w.Open($"public static void DecodeAttentionWarpgroupKernel({K}.TensorCoreAttentionParams p)");
        EmitPreamble(w, OnlineSoftmaxRegisters(outTiles), "DwSharedBytes", "shared");
        w.Line("long exchange = shared + DwExchange;");
        w.Line("int tid = global::ILGPU.Group.IdxX;");
        w.Line("int half = tid >> 7; // warpgroup: its half of the reduction and of the output columns");
        w.Line("int lane = tid & 31;");
        w.Line("int g = lane >> 2; // rows g and g + 8 of the warp's 16");
        w.Line("int t = lane & 3; // columns 2t, 2t + 1 of each 8-column tile");
        w.Line("int rowLo = ((tid >> 5) & 3) * 16 + g;");
        w.Line("int rowHi = rowLo + 8;");
        TensorCoreEmitter.EmitWorkItem(w);
        w.Line("int visibleLo = rowLo < rows ? global::System.Math.Min(p.Cache.TokenPosition[(firstRow + rowLo) / Heads] + 1, end) : 0;");
        w.Line("int visibleHi = rowHi < rows ? global::System.Math.Min(p.Cache.TokenPosition[(firstRow + rowHi) / Heads] + 1, end) : 0;");
        TensorCoreEmitter.EmitItemOutput(w, "DwRows");
        w.Line();
        w.Line("// Copies: 8 lanes per tile row, each 16 bytes of every box (one 128-byte global run per box, one swizzled shared row).");
        w.Line("int copyRow = tid >> 3;");
        w.Line("long copyFrom = copyRow * (CacheRowValues * 2L) + (tid & 7) * 16;");
        w.Line($"int copyInto = copyRow * {BoxRowBytes} + (((tid & 7) ^ (copyRow & 7)) << 4);");
        w.Line("// Tiles 0 and 1 in flight before Q is packed, so their loads and Q's overlap; each tile's pages are read an iteration before its copy.");
        EmitPageLoads(w, tilePages, "begin", declare: true);
        EmitCopy(w, s, boxes, tilePages, "begin", "0");
        EmitPageLoads(w, tilePages, "begin + DwKeys", declare: false);
        EmitCopy(w, s, boxes, tilePages, "begin + DwKeys", "DwStageBytes");
        EmitPageLoads(w, tilePages, "begin + 2 * DwKeys", declare: false);
        w.Line();
        w.Line($"// Q → bf16 in swizzled boxes, only the block's rows (rows are independent in every MMA, so the others may hold anything):");
        w.Line($"// chunk c (8 values) is value 8c.. of the rows; its row r, box b and piece j land at b·64 rows·128 + r·128 + (j ^ r % 8)·16.");
        w.Line($"// One PTX block per trip: the {QueryChunksInFlight} chunks' 16-byte loads all leave before any is converted and stored.");
        w.Line($"int queryChunks = rows * {boxes * 8};");
        w.Open($"for (int firstChunk = tid; firstChunk < queryChunks; firstChunk += {QueryChunksInFlight} * DwThreads)");
        for (int k = 0; k < QueryChunksInFlight; k++)
        {
            w.Line($"int row{k} = (firstChunk + {k} * DwThreads) / {boxes * 8};");
            w.Line($"long into{k} = shared + (firstChunk + {k} * DwThreads) / 8 % {boxes} * {QueryBoxBytes}L + row{k} * {BoxRowBytes} + ((((firstChunk + {k} * DwThreads) & 7) ^ (row{k} & 7)) << 4);");
        }
        var pack = new System.Text.StringBuilder($"{{ .reg .pred v<{QueryChunksInFlight}>; .reg .f32 f<{QueryChunksInFlight * 8}>; .reg .b32 h<{QueryChunksInFlight * 4}>; ");
        for (int k = 0; k < QueryChunksInFlight; k++)
            pack.Append($"setp.gt.s32 v{k}, %{QueryChunksInFlight + 1}, {k * Threads}; ");
        for (int k = 0; k < QueryChunksInFlight; k++)
            for (int half = 0; half < 2; half++)
                pack.Append($"@v{k} ld.global.nc.v4.f32 {{{string.Join(",", Enumerable.Range(0, 4).Select(i => $"f{8 * k + 4 * half + i}"))}}}, [%{QueryChunksInFlight}+{k * Threads * 32 + 16 * half}]; ");
        for (int k = 0; k < QueryChunksInFlight; k++)
        {
            for (int i = 0; i < 4; i++)
                pack.Append($"cvt.rn.bf16x2.f32 h{4 * k + i}, f{8 * k + 2 * i + 1}, f{8 * k + 2 * i}; ");
            pack.Append($"@v{k} st.shared.v4.b32 [%{k}], {{{string.Join(",", Enumerable.Range(0, 4).Select(i => $"h{4 * k + i}"))}}}; ");
        }
        pack.Append('}');
        w.Line($"{Asm}(\"{pack}\", {string.Join(", ", Enumerable.Range(0, QueryChunksInFlight).Select(k => $"into{k}"))}, p.QueryAddress + ((long)firstRow * CacheRowValues + firstChunk * 8L) * 4, queryChunks - firstChunk);");
        w.Close();
        w.Line();
        w.Line($"{Asm}(\"{Repeat(outTiles * 4, i => $"mov.f32 xo{i}, 0f00000000;")} mov.f32 xm0, {NegativeInfinity}; mov.f32 xm1, {NegativeInfinity}; mov.f32 xl0, 0f00000000; mov.f32 xl1, 0f00000000;\");");
        w.Line("long stage = 0;");
        w.Line("// This warpgroup's k-steps: the 16-value steps 2·half and 2·half + 1 of every box (32 bytes into each 128-byte row).");
        w.Line("long stepOffset = half * 64L;");
        EmitTileLoop(w, s, boxes, tilePages, outTiles);
        w.Line();
        EmitRowStates(w);
        w.Line("global::ILGPU.Group.Barrier(); // both warpgroups' last MMAs have read Q and the stages: O may take their place");
        w.Line($"// Normalised O through shared memory ([DwRows][DwOutputStride] fp32 over Q and the stages), so that all {Threads} threads");
        w.Line("// then write whole rows: from registers only the quad's 8 bytes of a row would leave at a time.");
        w.Line($"long stagedLo = shared + ((long)rowLo * DwOutputStride + half * {s.LatentRank / 2} + 2 * t) * 4;");
        var staged = new System.Text.StringBuilder("{ .reg .f32 a, b, c, d; ");
        for (int nt = 0; nt < outTiles; nt++)
        {
            int o = 4 * nt;
            staged.Append($"mul.f32 a, xo{o}, %2; mul.f32 b, xo{o + 1}, %2; mul.f32 c, xo{o + 2}, %3; mul.f32 d, xo{o + 3}, %3; ");
            staged.Append($"st.shared.v2.f32 [%0+{nt * 32}], {{a, b}}; st.shared.v2.f32 [%1+{nt * 32}], {{c, d}}; ");
        }
        staged.Append('}');
        w.Line($"{Asm}(\"{staged}\", stagedLo, stagedLo + 8L * DwOutputStride * 4, invLo, invHi);");
        w.Line("global::ILGPU.Group.Barrier();");
        w.Line($"global::ILGPU.ArrayView<float> stagedOutput = dynamicShared.Cast<float>().SubView((shared - sharedStart) / 4);");
        w.Open("for (int index = tid; index < rows * LatentRank; index += DwThreads)");
        w.Line("int r = index / LatentRank;");
        w.Line("int column = index - r * LatentRank;");
        w.Line("itemOutput[(itemFirstRow + r) * LatentRank + column] = stagedOutput[r * DwOutputStride + column];");
        w.Close();
        w.Open("if (half == 0 && t == 0)");
        w.Line("if (rowLo < rows)");
        w.Line($"    itemLse[itemFirstRow + rowLo] = {NaturalLse("Lo")};");
        w.Line("if (rowHi < rows)");
        w.Line($"    itemLse[itemFirstRow + rowHi] = {NaturalLse("Hi")};");
        w.Close();
        w.Close();
        w.Line();
    }

    /// <summary>8-column n-tiles of the O half a warpgroup owns (4 fp32 accumulators each per thread).</summary>
    private static int OutTiles(MlaShapeSpec s) => s.LatentRank / 2 / 8;

    /// <summary>
    /// The tile loop: per tile, Q·Kᵀ (the last tile's P·V still in flight), exchange, softmax, P·V; tile + 2's copies
    /// leave once both warpgroups' last P·V are done (three stages: two tiles in flight). (Issuing them behind P·V
    /// instead, off the path from the scores to P, measured 2 % slower at H = 128: the copies then lead by less.)
    /// </summary>
    private static void EmitTileLoop(SourceWriter w, MlaShapeSpec s, int boxes, int tilePages, int outTiles)
    {
        w.Open("for (int tile = begin; tile < end; tile += DwKeys)");
        w.Line("// Tile `tile` has landed (one later group may still fly); the proxy fence hands it (and Q) to the tensor cores.");
        w.Line($"{Asm}(\"cp.async.wait_group 1; fence.proxy.async.shared::cta;\");");
        w.Line("global::ILGPU.Group.Barrier(); // landed for everyone");
        EmitScores(w, boxes);
        w.Line("// Q·Kᵀ of this tile and P·V of the last one (left in flight across the top barrier and this issue) are done.");
        w.Line($"{Asm}(\"wgmma.wait_group.sync.aligned 0;\");");
        EmitExchangeStore(w);
        w.Line("global::ILGPU.Group.Barrier(); // partial S visible, and neither warpgroup's P·V still reads the last tile's stage");
        w.Line("// Tile + 2's copies into the stage tile - 1 used, then the page of tile + 3.");
        w.Line("long refill = stage == 0 ? 2 * DwStageBytes : stage - DwStageBytes;");
        w.Line("if (tile + 2 * DwKeys < end)");
        w.Open();
        EmitCopy(w, s, boxes, tilePages, "tile + 2 * DwKeys", "refill");
        w.Close();
        w.Line("else");
        w.Line($"    {Asm}(\"cp.async.commit_group;\"); // an empty group keeps wait_group 1's count");
        EmitPageLoads(w, tilePages, "tile + 3 * DwKeys", declare: false);
        EmitExchangeAdd(w);
        w.Line("// Scale to log2 units, mask keys a row may not see, online softmax, rescale O, pack P (shared with the expanded kernels).");
        EmitSoftmax(w, outTiles, "visibleLo - tile - 2 * t", "visibleHi - tile - 2 * t");
        EmitValues(w, s, "stage");
        w.Line("stage = stage == 2 * DwStageBytes ? 0 : stage + DwStageBytes;");
        w.Close();
        w.Line($"{Asm}(\"cp.async.wait_group 0; wgmma.wait_group.sync.aligned 0;\"); // the last P·V; nothing may land after the CTA is gone");
    }

    /// <summary>S (this warpgroup's half of the reduction) = Q·Kᵀ of the tile in <c>stage</c>, committed as one group.</summary>
    private static void EmitScores(SourceWriter w, int boxes)
    {
        string scores = Registers("xs", 0, ScoreTiles * 4);
        w.Line("long queryDescriptor = DwRowDescriptor | (((shared + stepOffset) >> 4) & 0x3FFF);");
        w.Line("long keyDescriptor = DwRowDescriptor | (((shared + DwQueryBytes + stage + stepOffset) >> 4) & 0x3FFF);");
        w.Line($"// S (this half) = Q·Kᵀ: {2 * boxes} wgmma m64n{Keys}k16 with both operands read from shared memory through descriptors.");
        for (int box = 0; box < boxes; box++)
        {
            string fence = box == 0 ? "wgmma.fence.sync.aligned; " : "";
            var step = new System.Text.StringBuilder($"{{ .reg .b64 a, b; {fence}");
            for (int sub = 0; sub < 2; sub++)
            {
                step.Append($"add.s64 a, %0, {(box * QueryBoxBytes + sub * 32) >> 4}; add.s64 b, %1, {(box * KeyBoxBytes + sub * 32) >> 4}; ");
                step.Append($"wgmma.mma_async.sync.aligned.m64n{Keys}k16.f32.bf16.bf16 {{{scores}}}, a, b, {(box == 0 && sub == 0 ? "xwz" : "xwa")}, 1, 1, 0, 0; ");
            }
            w.Line($"{Asm}(\"{step}}}\", queryDescriptor, keyDescriptor);");
        }
        w.Line($"{Asm}(\"wgmma.commit_group.sync.aligned;\");");
    }

    /// <summary>
    /// Each thread leaves its partial S for the thread at the same place in the other warpgroup: four 16-byte vectors, vector j
    /// of all threads contiguous (a warp's stores and loads cover 512 contiguous bytes, conflict-free).
    /// </summary>
    private static void EmitExchangeStore(SourceWriter w)
    {
        w.Line("// Sum the halves: each thread leaves its partial S for the thread at the same place in the other warpgroup.");
        w.Line($"{Asm}(\"{Repeat(ScoreTiles, j => $"st.shared.v4.f32 [%0+{j * Threads * 16}], {{{Registers("xs", 4 * j, 4)}}};")}\", exchange + tid * 16L);");
    }

    /// <summary>Adds the other warpgroup's partial S (after the barrier that made it visible).</summary>
    private static void EmitExchangeAdd(SourceWriter w) =>
        w.Line($"{Asm}(\"{{ .reg .f32 v<{ScoreTiles * 4}>; {Repeat(ScoreTiles, j => $"ld.shared.v4.f32 {{{Registers("v", 4 * j, 4)}}}, [%0+{j * Threads * 16}];")} {Repeat(ScoreTiles * 4, i => $"add.f32 xs{i}, xs{i}, v{i};")} }}\", exchange + (tid ^ 128) * 16L);");

    /// <summary>O (this half's columns) += P·V of the tile in the stage at <paramref name="stage"/>, committed, not waited for.</summary>
    private static void EmitValues(SourceWriter w, MlaShapeSpec s, string stage)
    {
        string output = Registers("xo", 0, OutTiles(s) * 4);
        w.Line($"// O (this half's {s.LatentRank / 2} columns) += P·V: {Keys / 16} wgmma m64n{s.LatentRank / 2}k16, V transposed (MN-major) in the tile's first boxes.");
        var pv = new System.Text.StringBuilder("{ .reg .b64 b; wgmma.fence.sync.aligned; ");
        for (int kk = 0; kk < Keys / 16; kk++)
        {
            pv.Append(kk == 0 ? "mov.b64 b, %0; " : $"add.s64 b, %0, {kk * 2 * SwizzleAtomBytes >> 4}; ");
            pv.Append($"wgmma.mma_async.sync.aligned.m64n{s.LatentRank / 2}k16.f32.bf16.bf16 {{{output}}}, {{{Registers("xp", 4 * kk, 4)}}}, b, xwa, 1, 1, 1; ");
        }
        pv.Append("wgmma.commit_group.sync.aligned; }");
        w.Line($"{Asm}(\"{pv}\", DwValueDescriptor | (((shared + DwQueryBytes + {stage} + half * {s.LatentRank / 2 / BoxValues * KeyBoxBytes}L) >> 4) & 0x3FFF));");
    }

    /// <summary>
    /// The cache page(s) of the tile starting at <paramref name="start"/> as the first cache row of each: one page when a page
    /// holds a whole tile, else one per page the tile spans. Clamped to the item's last token, so always a real table entry.
    /// </summary>
    private static void EmitPageLoads(SourceWriter w, int tilePages, string start, bool declare)
    {
        for (int i = 0; i < tilePages; i++)
        {
            string position = $"global::System.Math.Min({start} + {i} * PageSize, end - 1)";
            string type = declare ? "long " : "";
            w.Line($"{type}pageAhead{i} = (long)p.Cache.BlockTable[blockRow + ({position} >> PageShift)] * PageSize + ({position} & PageMask);");
        }
    }

    /// <summary>
    /// cp.async of the tile at <paramref name="start"/> into the stage at byte <paramref name="stage"/>: this thread's row,
    /// 16 bytes of each box, at fixed offsets from one source and one target address (rows past <c>end</c> are zero-filled),
    /// then commit. Uses the pages read an iteration earlier (pageAhead).
    /// </summary>
    private static void EmitCopy(SourceWriter w, MlaShapeSpec s, int boxes, int tilePages, string start, string stage)
    {
        w.Line("{");
        w.Line($"    bool inside = {start} + copyRow < end;");
        for (int i = 0; i < tilePages; i++)
            w.Line($"    long rows{i} = p.PagesAddress + (pageAhead{i} - {i * System.Math.Min(s.PageSize, Keys)}) * CacheRowValues * 2L;");
        string rowsBase = tilePages == 1 ? "rows0" : "(copyRow < PageSize ? rows0 : rows1)";
        w.Line($"    long source = inside ? {rowsBase} + copyFrom : p.PagesAddress;");
        var copies = new System.Text.StringBuilder();
        for (int box = 0; box < boxes; box++)
            copies.Append($"cp.async.cg.shared.global [%0+{box * KeyBoxBytes}], [%1+{box * BoxRowBytes}], 16, %2; ");
        w.Line($"    {Asm}(\"{copies}cp.async.commit_group;\", shared + DwQueryBytes + {stage} + copyInto, source, inside ? 16 : 0);");
        w.Line("}");
    }
}
