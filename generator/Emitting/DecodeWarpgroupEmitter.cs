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
/// sits in shared memory for the whole item; cached tokens go by steps of two 32-token tiles, one per warpgroup, through
/// four cp.async stages (the step computed and the next one landing). Each warpgroup computes S = Q·Kᵀ of its own tile
/// over the whole reduction, the two tiles' row maxima meet in shared memory so both warpgroups keep one running max, and
/// each warpgroup leaves its P (bf16) in one swizzled box of the step's 64 keys; then each owns half of the latent output
/// columns for O += P·V over both tiles (A = that box, V the tiles' first latent columns, read where they already lie).
/// Q and the tiles are stored as wgmma's 128-byte-swizzled boxes of 64 values (8 lanes copy one row's 128 contiguous bytes
/// into one conflict-free shared row), which serve K (K-major) and V (MN-major) alike. Shared memory above 48 KB is
/// dynamic: the loader raises the function's limit.
/// </summary>
internal static class DecodeWarpgroupEmitter
{
    private const int Threads = 256;
    private const int Rows = 64;
    private const int StepTiles = 2; // one tile per warpgroup
    private const int StepKeys = StepTiles * Keys;
    private const int Stages = 2 * StepTiles; // the step being computed and the next one landing
    private const int QueryChunksInFlight = 6; // 12 16-byte loads per thread in flight while Q is packed (≤ 10 PTX operands: 6 targets, source, count)
    private const int QueryBoxBytes = Rows * BoxRowBytes; // one 64-value column box of Q's rows
    private const int KeyBoxBytes = Keys * BoxRowBytes; // one 64-value column box of a tile's rows
    private const int ProbabilityBytes = Rows * StepKeys * 2; // P of a step: one swizzled box of 64 rows × 64 keys
    private const string Near = "pageAhead"; // the first cache row of each page of the step copied next
    private const string Far = "pageFar"; // the same for step 3 of the item (prefetched into L2 at the start)

    public static void Emit(SourceWriter w, MlaShapeSpec s)
    {
        if (StepKeys != BoxValues)
            throw new System.InvalidOperationException("A step's P is one 64-key box (the K-major A operand of P·V).");
        int boxes = s.CacheRowValues / BoxValues;
        int queryBytes = Rows * s.CacheRowValues * 2;
        int stageBytes = Keys * s.CacheRowValues * 2;
        w.Line("// Warpgroup (wgmma) decode attention (Hopper): tile, shared-memory map and matrix descriptors.");
        w.Line($"public const int DwRows = {Int(Rows)}; // query rows (token x head) per CTA: one wgmma M");
        w.Line($"public const int DwKeys = {Int(Keys)}; // cached tokens per tile: one warpgroup's S");
        w.Line($"public const int DwStepKeys = {Int(StepKeys)}; // cached tokens per step: one tile per warpgroup (the scheduler's unit)");
        w.Line($"public const int DwThreads = {Int(Threads)}; // two warpgroups");
        w.Line($"public const int DwStages = {Int(Stages)}; // the step computed and the next one landing");
        w.Line("public const int DwCtasPerSm = 1; // the shared memory below fills an SM");
        w.Line($"public const int DwBoxes = {Int(boxes)}; // 64-value (128-byte) column boxes of a cache row");
        w.Line($"public const int DwStageBytes = {Int(stageBytes)}; // 32 cache rows: box b holds their values 64b.. as 32 swizzled 128-byte rows");
        w.Line($"public const int DwQueryBytes = {Int(queryBytes)}; // Q: 64 rows in the same boxes, at offset 0");
        w.Line("public const int DwProbabilities = DwQueryBytes + DwStages * DwStageBytes; // P of the step, bf16: 64 rows x 64 keys in one swizzled box (warpgroup w's tile at keys 32w..)");
        w.Line($"public const int DwRowMaxima = DwProbabilities + {Int(ProbabilityBytes)}; // each warpgroup's tile row maxima (fp32, [2][DwRows]); at the end its row sums");
        w.Line($"public const int DwOutputStride = {Int(s.LatentRank + 8)}; // fp32 per row of O staged over Q and the stages (+8: a quad's rows start 8 banks apart)");
        w.Line($"public const int DwSharedBytes = DwRowMaxima + {Int(2 * Rows * 4)} + {Int(SwizzleAtomBytes)}; // + slack to align the block to a swizzle atom");
        w.Line($"public const long DwRowDescriptor = 0x{KMajorDescriptor:X}L; // K-major Q and P (A) and K (B), 128-byte swizzle: SBO {SwizzleAtomBytes} B (next 8 rows)");
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
        EmitPreamble(w, OnlineSoftmaxRegisters(outTiles) + " .reg .f32 xt<2>;", "DwSharedBytes", "shared");
        w.Line("int tid = global::ILGPU.Group.IdxX;");
        w.Line("int half = tid >> 7; // warpgroup: its tile of each step and its half of the output columns");
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
        w.Line("// Steps 0 and 1 in flight before Q is packed, so their loads and Q's overlap; each step's pages are read a step before its copy.");
        EmitPageLoads(w, tilePages, "begin", declare: true);
        EmitCopy(w, s, boxes, tilePages, "begin", "0");
        EmitPageLoads(w, tilePages, "begin + DwStepKeys", declare: false);
        EmitCopy(w, s, boxes, tilePages, "begin + DwStepKeys", $"{StepTiles} * DwStageBytes");
        EmitPageLoads(w, tilePages, "begin + 2 * DwStepKeys", declare: false);
        EmitPageLoads(w, tilePages, "begin + 3 * DwStepKeys", declare: true, Far);
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
        w.Line("// This thread's P words (rows rowLo and rowHi = +1024 B, keys 32·half + 8n + 2t) in the step's swizzled box.");
        w.Line($"long probabilities = shared + DwProbabilities + rowLo * {BoxRowBytes} + 4 * t;");
        for (int nt = 0; nt < ScoreTiles; nt++)
            w.Line($"long probability{nt} = probabilities + ((((4 * half) ^ g) ^ {nt}) << 4);");
        w.Line("long maximaMine = shared + DwRowMaxima + (half * DwRows + rowLo) * 4L;");
        w.Line("long maximaOther = shared + DwRowMaxima + ((1 - half) * DwRows + rowLo) * 4L;");
        w.Line("// Steps 2 and 3 into L2: their copies wait for free stages, and a short item (long contexts split over every SM) is");
        w.Line("// then requested whole from the start. (Prefetching a step ahead in every iteration measured 8 % slower at H = 128.)");
        EmitPrefetch(w, s, tilePages, "begin + 2 * DwStepKeys", Near);
        EmitPrefetch(w, s, tilePages, "begin + 3 * DwStepKeys", Far);
        w.Line("long slot = 0; // the step's first stage");
        EmitStepLoop(w, s, boxes, tilePages, outTiles);
        w.Line();
        EmitQuadSums(w);
        w.Line("// Each row's sum is this warpgroup's P plus the other's (both kept the same max).");
        w.Line($"{Asm}(\"{RowPairStorePtx("xl")}\", maximaMine, t);");
        w.Line("global::ILGPU.Group.Barrier(); // the sums visible, and both warpgroups' last MMAs have read Q and the stages: O may take their place");
        w.Line($"{Asm}(\"{RowPairMergePtx("add.f32", "xl")}\", maximaOther);");
        EmitRowStateValues(w);
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
        TensorCoreEmitter.EmitMergeInPlace(w, s, "DwRows", "DwThreads", "stagedOutput");
        w.Close();
        w.Line();
    }

    /// <summary>8-column n-tiles of the O half a warpgroup owns (4 fp32 accumulators each per thread).</summary>
    private static int OutTiles(MlaShapeSpec s) => s.LatentRank / 2 / 8;

    /// <summary>
    /// The step loop: each warpgroup's Q·Kᵀ of its tile while the next step's copies leave, the row maxima met in shared
    /// memory, the softmax against the common max, P into the step's box, then O += P·V over both tiles. A step's stages
    /// are refilled once both warpgroups' P·V of it are done (the next step's top barrier), so one step is always landing.
    /// </summary>
    private static void EmitStepLoop(SourceWriter w, MlaShapeSpec s, int boxes, int tilePages, int outTiles)
    {
        w.Open("for (int step = begin; step < end; step += DwStepKeys)");
        w.Line("// This step has landed (at the first, step 1 may still fly); this warpgroup's last P·V is done; the proxy fence hands");
        w.Line("// the tiles (and Q) to the tensor cores.");
        w.Line("if (step == begin)");
        w.Line($"    {Asm}(\"cp.async.wait_group 1;\");");
        w.Line("else");
        w.Line($"    {Asm}(\"cp.async.wait_group 0;\");");
        w.Line($"{Asm}(\"wgmma.wait_group.sync.aligned 0; fence.proxy.async.shared::cta;\");");
        w.Line("global::ILGPU.Group.Barrier(); // landed for everyone, and neither warpgroup's P·V still reads the other slot");
        w.Line("int tile = step + half * DwKeys;");
        EmitScores(w, boxes);
        w.Line("// While the tensor cores work: the next step's copies into the slot the last step used (step 1 left before the loop),");
        w.Line("// then the pages of the step after it.");
        w.Line("if (step != begin)");
        w.Open();
        w.Line("if (step + DwStepKeys < end)");
        w.Open();
        EmitCopy(w, s, boxes, tilePages, "step + DwStepKeys", $"{StepTiles} * DwStageBytes - slot");
        w.Close();
        EmitPageLoads(w, tilePages, "step + 2 * DwStepKeys", declare: false);
        w.Close();
        w.Line($"{Asm}(\"wgmma.wait_group.sync.aligned 0;\"); // S of this warpgroup's tile");
        w.Line("// Mask keys a row may not see, the tile's row maxima (log2 units) to the other warpgroup.");
        w.Line($"{Asm}(\"{RowMaxPtx(ScoreTiles)}\", visibleLo - tile - 2 * t, visibleHi - tile - 2 * t, ScoreScaleLog2);");
        w.Line($"{Asm}(\"{RowPairStorePtx("xt")}\", maximaMine, t);");
        w.Line("global::ILGPU.Group.Barrier(); // both tiles' maxima visible");
        w.Line($"{Asm}(\"{RowPairMergePtx("max.f32", "xt")}\", maximaOther);");
        w.Line("// The softmax against the step's max (the same in both warpgroups), O rescaled only if a row of the warp moved its kept max,");
        w.Line("// P as bf16 into this warpgroup's half of the step's box, fenced for the tensor cores.");
        w.Line($"{Asm}(\"{SoftmaxFromRowMaxPtx(vote: true, ScoreTiles, pack: true)}\", ScoreScaleLog2);");
        w.Line($"{Asm}(\"{GuardedRescalePtx(outTiles)}\");");
        var store = new System.Text.StringBuilder();
        for (int nt = 0; nt < ScoreTiles; nt++)
            store.Append($"st.shared.b32 [%{nt}], xp{2 * nt}; st.shared.b32 [%{nt}+{8 * BoxRowBytes}], xp{2 * nt + 1}; ");
        w.Line($"{Asm}(\"{store}fence.proxy.async.shared::cta;\", {string.Join(", ", Enumerable.Range(0, ScoreTiles).Select(nt => $"probability{nt}"))});");
        w.Line("global::ILGPU.Group.Barrier(); // both halves of P written");
        EmitValues(w, s);
        w.Line($"slot = {StepTiles} * DwStageBytes - slot;");
        w.Close();
        w.Line($"{Asm}(\"cp.async.wait_group 0; wgmma.wait_group.sync.aligned 0;\"); // the last P·V; nothing may land after the CTA is gone");
    }

    /// <summary>
    /// A quad's values of rows g and g + 8 (named registers <paramref name="registers"/>0/1) into this warpgroup's row slots in
    /// <c>DwRowMaxima</c> (%0 = rowLo's slot, rowHi's is 8 floats on), by the quad's first thread (%1 = t).
    /// </summary>
    private static string RowPairStorePtx(string registers) =>
        $"{{ .reg .pred p; setp.eq.s32 p, %1, 0; @p st.shared.f32 [%0], {registers}0; @p st.shared.f32 [%0+{8 * 4}], {registers}1; }}";

    /// <summary>The other warpgroup's values of the same rows (%0 = its rowLo slot) merged into <paramref name="registers"/>0/1 by <paramref name="op"/>.</summary>
    private static string RowPairMergePtx(string op, string registers) =>
        $"{{ .reg .f32 u; ld.shared.f32 u, [%0]; {op} {registers}0, {registers}0, u; ld.shared.f32 u, [%0+{8 * 4}]; {op} {registers}1, {registers}1, u; }}";

    /// <summary>S = Q·Kᵀ of this warpgroup's tile over the whole reduction, committed as one group.</summary>
    private static void EmitScores(SourceWriter w, int boxes)
    {
        string scores = Registers("xs", 0, ScoreTiles * 4);
        w.Line("long queryDescriptor = DwRowDescriptor | ((shared >> 4) & 0x3FFF);");
        w.Line("long keyDescriptor = DwRowDescriptor | (((shared + DwQueryBytes + slot + half * DwStageBytes) >> 4) & 0x3FFF);");
        w.Line($"// S = Q·Kᵀ: {4 * boxes} wgmma m64n{Keys}k16 (four 16-value k-steps per box, +32 bytes each), both operands read from shared memory.");
        for (int box = 0; box < boxes; box++)
        {
            string fence = box == 0 ? "wgmma.fence.sync.aligned; " : "";
            var step = new System.Text.StringBuilder($"{{ .reg .b64 a, b; {fence}");
            for (int sub = 0; sub < 4; sub++)
            {
                step.Append($"add.s64 a, %0, {(box * QueryBoxBytes + sub * 32) >> 4}; add.s64 b, %1, {(box * KeyBoxBytes + sub * 32) >> 4}; ");
                step.Append($"wgmma.mma_async.sync.aligned.m64n{Keys}k16.f32.bf16.bf16 {{{scores}}}, a, b, {(box == 0 && sub == 0 ? "xwz" : "xwa")}, 1, 1, 0, 0; ");
            }
            w.Line($"{Asm}(\"{step}}}\", queryDescriptor, keyDescriptor);");
        }
        w.Line($"{Asm}(\"wgmma.commit_group.sync.aligned;\");");
    }

    /// <summary>
    /// O (this half's columns) += P·V of the step: per 16 keys one wgmma with A = P from the step's box (K-major, +32 bytes per
    /// k-step) and B = V transposed (MN-major) from the tile's first boxes; committed, waited for at the next step's top.
    /// </summary>
    private static void EmitValues(SourceWriter w, MlaShapeSpec s)
    {
        string output = Registers("xo", 0, OutTiles(s) * 4);
        w.Line($"// O (this half's {s.LatentRank / 2} columns) += P·V: {StepKeys / 16} wgmma m64n{s.LatentRank / 2}k16, P from its box, V transposed (MN-major) in the tiles' first boxes.");
        int stageBytes = Keys * s.CacheRowValues * 2;
        var pv = new System.Text.StringBuilder("{ .reg .b64 a, b; wgmma.fence.sync.aligned; ");
        for (int kk = 0; kk < StepKeys / 16; kk++)
        {
            int values = (kk / (Keys / 16) * stageBytes + kk % (Keys / 16) * 2 * SwizzleAtomBytes) >> 4; // tile kk / 2's stage, 16 keys (two atoms) per k-step
            pv.Append(kk == 0 ? "mov.b64 a, %0; mov.b64 b, %1; " : $"add.s64 a, %0, {kk * 32 >> 4}; add.s64 b, %1, {values}; ");
            pv.Append($"wgmma.mma_async.sync.aligned.m64n{s.LatentRank / 2}k16.f32.bf16.bf16 {{{output}}}, a, b, xwa, 1, 1, 0, 1; ");
        }
        pv.Append("wgmma.commit_group.sync.aligned; }");
        w.Line($"{Asm}(\"{pv}\", DwRowDescriptor | (((shared + DwProbabilities) >> 4) & 0x3FFF), " +
            $"DwValueDescriptor | (((shared + DwQueryBytes + slot + half * {s.LatentRank / 2 / BoxValues * KeyBoxBytes}L) >> 4) & 0x3FFF));");
    }

    /// <summary>
    /// The cache page(s) of each tile of the step starting at <paramref name="start"/> as the first cache row of each: one
    /// page per tile when a page holds a whole tile, else one per page the tile spans. Clamped to the item's last token, so
    /// always a real table entry.
    /// </summary>
    private static void EmitPageLoads(SourceWriter w, int tilePages, string start, bool declare, string name = Near)
    {
        for (int tile = 0; tile < StepTiles; tile++)
        {
            for (int i = 0; i < tilePages; i++)
            {
                string position = $"global::System.Math.Min({start} + {tile * Keys} + {i} * PageSize, end - 1)";
                string type = declare ? "long " : "";
                w.Line($"{type}{name}{tile}{i} = (long)p.Cache.BlockTable[blockRow + ({position} >> PageShift)] * PageSize + ({position} & PageMask);");
            }
        }
    }

    /// <summary>
    /// cp.async of the step at <paramref name="start"/> into the stages from byte <paramref name="stage"/>: for each tile
    /// this thread's row, 16 bytes of each box, at fixed offsets from one source and one target address (rows past
    /// <c>end</c> are zero-filled), then one commit for the step. Uses the pages read a step earlier (pageAhead).
    /// </summary>
    private static void EmitCopy(SourceWriter w, MlaShapeSpec s, int boxes, int tilePages, string start, string stage)
    {
        var copies = new System.Text.StringBuilder();
        for (int box = 0; box < boxes; box++)
            copies.Append($"cp.async.cg.shared.global [%0+{box * KeyBoxBytes}], [%1+{box * BoxRowBytes}], 16, %2; ");
        w.Line("{");
        for (int tile = 0; tile < StepTiles; tile++)
        {
            w.Line($"    bool inside{tile} = {start} + {tile * Keys} + copyRow < end;");
            string rowsBase = EmitTileRows(w, s, tilePages, tile, Near, "    ");
            w.Line($"    long source{tile} = inside{tile} ? {rowsBase} + copyFrom : p.PagesAddress;");
            w.Line($"    {Asm}(\"{copies}\", shared + DwQueryBytes + {stage} + {tile} * DwStageBytes + copyInto, source{tile}, inside{tile} ? 16 : 0);");
        }
        w.Line($"    {Asm}(\"cp.async.commit_group;\");");
        w.Line("}");
    }

    /// <summary>
    /// Declares <c>rows{tile}{i}</c> from the page registers <paramref name="pages"/> and returns the expression of the address
    /// that row copyRow of tile <paramref name="tile"/> is at copyRow · 2·CacheRowValues bytes from (its page's, when a tile spans two).
    /// </summary>
    private static string EmitTileRows(SourceWriter w, MlaShapeSpec s, int tilePages, int tile, string pages, string indent)
    {
        for (int i = 0; i < tilePages; i++)
            w.Line($"{indent}long rows{tile}{i} = p.PagesAddress + ({pages}{tile}{i} - {i * System.Math.Min(s.PageSize, Keys)}) * CacheRowValues * 2L;");
        return tilePages == 1 ? $"rows{tile}0" : $"(copyRow < PageSize ? rows{tile}0 : rows{tile}1)";
    }

    /// <summary>
    /// The step at <paramref name="start"/> into L2, one bulk prefetch per cache row (lane <c>tile</c> of each row's 8 copy
    /// lanes takes that tile), so its copy finds it there; rows past <c>end</c> are skipped. Pages from <paramref name="pages"/>.
    /// </summary>
    private static void EmitPrefetch(SourceWriter w, MlaShapeSpec s, int tilePages, string start, string pages)
    {
        for (int tile = 0; tile < StepTiles; tile++)
        {
            w.Open($"if ((tid & 7) == {tile} && {start} + {tile * Keys} + copyRow < end)");
            string rowsBase = EmitTileRows(w, s, tilePages, tile, pages, "");
            w.Line($"{Asm}(\"cp.async.bulk.prefetch.L2.global [%0], {s.CacheRowValues * 2};\", {rowsBase} + copyRow * (CacheRowValues * 2L));");
            w.Close();
        }
    }
}
