using MlaGen.Generator.Helpers;
using MlaGen.Generator.Model;
using static MlaGen.Generator.Emitting.ExpandedTensorCoreEmitter;
using static MlaGen.Generator.Emitting.PtxText;
using static MlaGen.Generator.Emitting.WarpgroupPtx;
using static MlaGen.Generator.Helpers.LiteralFormat;

namespace MlaGen.Generator.Emitting;

/// <summary>
/// The Hopper expanded attention on warpgroup MMA (wgmma, sm_90a, loaded through PTX patching). The CTA's 8 warps are two
/// warpgroups over 128 query rows: Q and P stay A fragments in registers, K and V are read by the tensor cores straight
/// from shared memory through matrix descriptors. 64-key tiles stream through four cp.async stages in dynamic shared
/// memory (two tiles in flight), stored as wgmma's 128-byte-swizzled boxes of 64 values (8 lanes copy one key row's 128
/// contiguous bytes into one conflict-free shared row, as in the decode kernel), and each tile's P·V runs on the tensor
/// cores while the next tile's softmax runs on the CUDA cores (FlashAttention-3's order inside a warpgroup).
/// </summary>
internal static class ExpandedWarpgroupEmitter
{
    /// <summary>Two warpgroups: 128 query rows share each K/V tile, which halves the L2 traffic per FLOP of one.</summary>
    private const int Threads = 256;

    /// <summary>Query rows per CTA: 16 per warp.</summary>
    private const int Rows = Threads / 32 * 16;

    /// <summary>Keys per tile: one wgmma n64 per k-step of Q·Kᵀ, so the softmax's fixed cost per tile (row max exchange, barrier) covers 64 keys.</summary>
    private const int TileKeys = 64;

    /// <summary>S n-tiles (8 keys) per thread's rows.</summary>
    private const int TileScoreTiles = TileKeys / 8;

    /// <summary>
    /// Stages of the tile ring. A stage is busy from its copy until the P·V that reads it, which runs one iteration after its
    /// Q·Kᵀ; four stages keep two tiles' copies in flight behind the one being computed.
    /// </summary>
    private const int Stages = 4;

    /// <summary>Copies run this many tiles ahead of the tile being computed.</summary>
    private const int Lead = Stages - 2;

    private const int BoxBytes = TileKeys * BoxRowBytes; // one 64-value column box of a tile's rows
    private const int CopyRows = Threads / 8; // tile rows per copy pass: 8 lanes take a row's 128 bytes of every box

    public static void Emit(SourceWriter w, MlaShapeSpec s)
    {
        int kBytes = TileKeys * s.QHeadDim * 2;
        int vBytes = TileKeys * s.VHeadDim * 2;
        w.Line("// Warpgroup (wgmma) expanded attention (Hopper): tile, stage ring and matrix descriptors.");
        w.Line($"public const int XwRows = {Int(Rows)}; // query tokens per CTA: two warpgroups of 64");
        w.Line($"public const int XwKeys = {Int(TileKeys)}; // keys per tile");
        w.Line($"public const int XwThreads = {Int(Threads)};");
        w.Line($"public const int XwStages = {Int(Stages)}; // the tile ring: {Lead} tiles in flight behind the one computed");
        w.Line($"public const int XwVBytes = {Int(kBytes)}; // V's offset in a stage: K is QHeadDim/64 boxes of {TileKeys} swizzled 128-byte rows");
        w.Line($"public const int XwStageBytes = {Int(kBytes + vBytes)};");
        w.Line($"public const int XwSharedBytes = XwStages * XwStageBytes + {Int(SwizzleAtomBytes)}; // dynamic, + slack to align the ring to a swizzle atom");
        w.Line($"public const long XwKeyDescriptor = 0x{KMajorDescriptor:X}L; // K-major B, 128-byte swizzle: SBO {SwizzleAtomBytes} B (next 8 keys)");
        w.Line($"public const long XwValueDescriptor = 0x{MnMajorDescriptor(BoxBytes):X}L; // MN-major B, 128-byte swizzle: LBO {BoxBytes} B (next 64 dims), SBO {SwizzleAtomBytes} B (next 8 keys)");
        w.Line();
        EmitKernel(w, s);
    }

    private static void EmitKernel(SourceWriter w, MlaShapeSpec s)
    {
        int outTiles = s.VHeadDim / 8;
        w.Line("/// <summary>Causal expanded attention on warpgroup MMA (sm_90a): two warpgroups per (128-token query tile, head) (see ExpandedWarpgroupEmitter).</summary>");
        w.Open($"public static void ExpandedAttentionWarpgroupKernel({KernelEmitter.K}.ExpandedAttentionParams p)");
        EmitPreamble(w, OnlineSoftmaxRegisters(outTiles, TileScoreTiles), "XwSharedBytes", "tiles");
        EmitTileSetup(w);
        w.Line();
        EmitQueryFragments(w, s);
        w.Line();
        w.Line($"{Asm}(\"{Repeat(outTiles * 4, i => $"mov.f32 xo{i}, 0f00000000;")} mov.f32 xm0, {NegativeInfinity}; mov.f32 xm1, {NegativeInfinity}; mov.f32 xl0, 0f00000000; mov.f32 xl1, 0f00000000;\");");
        EmitCopyConstants(w);
        w.Line($"// Tiles 0..{Lead - 1} in flight before the loop; each copy's cache rows are read a copy before it.");
        EmitCacheRowLoads(w, "0", declare: true);
        for (int tile = 0; tile < Lead; tile++)
        {
            EmitCopy(w, s, $"{tile} * XwKeys", $"{tile} * XwStageBytes");
            EmitCacheRowLoads(w, $"{tile + 1} * XwKeys", declare: false);
        }
        w.Line("long stage = 0; // the stage of tile kt");
        w.Line("long previous = 0; // the stage of tile kt - XwKeys, whose P·V runs during this tile's softmax");
        w.Line($"long refill = {Lead} * XwStageBytes; // the stage tile kt + {Lead}·XwKeys goes to: the one tile kt - 2·XwKeys left");
        w.Open("for (int kt = 0; kt < end; kt += XwKeys)");
        w.Line($"// Tile kt has landed ({Lead - 1} later group(s) may still fly); the proxy fence hands it to the tensor cores.");
        w.Line($"{Asm}(\"cp.async.wait_group {Lead - 1}; fence.proxy.async.shared::cta;\");");
        w.Line("global::ILGPU.Group.Barrier(); // landed for everyone, and both warpgroups' P·V of tile kt - 2·XwKeys is done (refill is free)");
        EmitScores(w, s);
        w.Line("if (kt > 0)");
        w.Line($"    {Asm}(\"{ValuesPtx(s)}\", XwValueDescriptor | (((tiles + previous + XwVBytes) >> 4) & 0x3FFF));");
        w.Line($"{Asm}(\"wgmma.commit_group.sync.aligned;\"); // P·V of the last tile (empty at the first): wait_group 1 below then means Q·Kᵀ");
        w.Line($"// While the tensor cores work: the copies of tile kt + {Lead}·XwKeys (cache rows read a copy ago), the cache rows of the next.");
        w.Line($"if (kt + {Lead} * XwKeys < end)");
        w.Open();
        EmitCopy(w, s, $"kt + {Lead} * XwKeys", "refill");
        w.Close();
        w.Line("else");
        w.Line($"    {Asm}(\"cp.async.commit_group;\"); // an empty group keeps wait_group's count");
        EmitCacheRowLoads(w, $"kt + {Lead + 1} * XwKeys", declare: false);
        w.Line($"{Asm}(\"wgmma.wait_group.sync.aligned 1;\"); // S is ready; the last tile's P·V may still run");
        w.Line("// Scale to log2 units, causal mask, online softmax (P stays fp32 in S until the P·V reading the packed P is done).");
        w.Line($"{Asm}(\"{SoftmaxPtx(vote: true, TileScoreTiles, pack: false)}\", visibleLo - kt - 2 * t, visibleHi - kt - 2 * t, ScoreScaleLog2);");
        w.Line($"{Asm}(\"wgmma.wait_group.sync.aligned 0;\"); // the last tile's P·V is done: O and P are free");
        w.Line("// O rescaled only if a row of the warp moved its max (this sits between the tensor cores' last work and their next), P packed.");
        w.Line($"{Asm}(\"{GuardedRescalePtx(outTiles)} {{ {PackPtx(TileScoreTiles)}}}\");");
        w.Line("previous = stage;");
        w.Line("stage = stage == (XwStages - 1) * XwStageBytes ? 0 : stage + XwStageBytes;");
        w.Line("refill = refill == (XwStages - 1) * XwStageBytes ? 0 : refill + XwStageBytes;");
        w.Close();
        w.Line($"{Asm}(\"{ValuesPtx(s)} wgmma.commit_group.sync.aligned; wgmma.wait_group.sync.aligned 0; cp.async.wait_group 0;\", " +
            "XwValueDescriptor | (((tiles + previous + XwVBytes) >> 4) & 0x3FFF)); // the last tile's P·V; no copy may land after the CTA is gone");
        w.Line();
        EmitEpilogue(w, s, outTiles);
        w.Close();
        w.Line();
    }

    /// <summary>S = Q·Kᵀ of the tile in <c>stage</c>: one wgmma m64n64k16 per 16-wide k-step (k-step i reads K at +256·i bytes), committed.</summary>
    private static void EmitScores(SourceWriter w, MlaShapeSpec s)
    {
        int qSteps = s.QHeadDim / 16;
        string scores = Registers("xs", 0, TileScoreTiles * 4);
        w.Line("long keyDescriptor = XwKeyDescriptor | (((tiles + stage) >> 4) & 0x3FFF);");
        w.Line($"// S = Q·Kᵀ: {qSteps} wgmma m64n{TileKeys}k16, two per statement (k-step i: box i / 4, +32 bytes per step inside it); the first overwrites S.");
        for (int i = 0; i < qSteps; i += 2)
        {
            string fence = i == 0 ? "wgmma.fence.sync.aligned; " : "";
            string scale = i == 0 ? "xwz" : "xwa";
            string first = $"wgmma.mma_async.sync.aligned.m64n{TileKeys}k16.f32.bf16.bf16 {{{scores}}}, {{%1,%2,%3,%4}}, %0, {scale}, 1, 1, 0;";
            string args = $"keyDescriptor + {KeyStep(i)}L, q{i}a, q{i}b, q{i}c, q{i}d";
            if (i + 1 < qSteps)
            {
                w.Line($"{Asm}(\"{{ .reg .b64 b; {fence}{first} " +
                    $"add.s64 b, %0, {KeyStep(i + 1) - KeyStep(i)}; wgmma.mma_async.sync.aligned.m64n{TileKeys}k16.f32.bf16.bf16 {{{scores}}}, {{%5,%6,%7,%8}}, b, xwa, 1, 1, 0; }}\", " +
                    $"{args}, q{i + 1}a, q{i + 1}b, q{i + 1}c, q{i + 1}d);");
            }
            else
            {
                w.Line($"{Asm}(\"{fence}{first}\", {args});");
            }
        }
        w.Line($"{Asm}(\"wgmma.commit_group.sync.aligned;\");");
    }

    /// <summary>
    /// O += P·V of one tile: one wgmma m64n(VHeadDim)k16 per 16 keys, V transposed (MN-major) from the stage whose V
    /// descriptor is %0; not committed.
    /// </summary>
    private static string ValuesPtx(MlaShapeSpec s)
    {
        string output = Registers("xo", 0, s.VHeadDim / 8 * 4);
        var pv = new System.Text.StringBuilder("{ .reg .b64 b; wgmma.fence.sync.aligned; ");
        for (int kk = 0; kk < TileKeys / 16; kk++)
        {
            pv.Append(kk == 0 ? "mov.b64 b, %0; " : $"add.s64 b, %0, {kk * 2 * SwizzleAtomBytes >> 4}; ");
            pv.Append($"wgmma.mma_async.sync.aligned.m64n{s.VHeadDim}k16.f32.bf16.bf16 {{{output}}}, {{{Registers("xp", 4 * kk, 4)}}}, b, xwa, 1, 1, 1; ");
        }
        return pv.Append('}').ToString();
    }

    /// <summary>The K descriptor's offset (bytes >> 4) of k-step <paramref name="i"/>: box i / 4, 32 bytes per step inside it.</summary>
    private static int KeyStep(int i) => ((i / 4) * BoxBytes + (i % 4) * 32) >> 4;

    /// <summary>
    /// The per-thread constants of the tile copies, hoisted out of the loop: 8 lanes per tile row (rows copyRow and
    /// copyRow + 32), each 16 bytes of every 128-byte box row, so a warp reads whole 128-byte lines and writes conflict-free
    /// swizzled shared rows (piece j of row r lands at r·128 + (j ^ r % 8)·16 of its box).
    /// </summary>
    private static void EmitCopyConstants(SourceWriter w)
    {
        w.Line("// Copies: 8 lanes per tile row, each 16 bytes of every box (one 128-byte global run per box, one swizzled shared row).");
        w.Line("int copyRow = tid >> 3;");
        w.Line("int copyPiece = (tid & 7) * 16;");
        w.Line($"int copyInto = copyRow * {BoxRowBytes} + (((tid & 7) ^ (copyRow & 7)) << 4);");
        w.Line("long nopeBase = p.KeyNopeAddress + headKeys * NopeHeadDim * 2L + copyPiece;");
        w.Line("long valueBase = p.ValueAddress + headKeys * VHeadDim * 2L + copyPiece;");
        w.Line("long ropeBase = p.PagesAddress + LatentRank * 2L + copyPiece;");
    }

    /// <summary>
    /// Each copied row's cache row (for its RoPE part) for the tile at <paramref name="start"/>, read a copy before its copy so
    /// the copy never waits on it; clamped to the sequence's last key, so the read is always in bounds and never branches.
    /// </summary>
    private static void EmitCacheRowLoads(SourceWriter w, string start, bool declare)
    {
        for (int pass = 0; pass < TileKeys / CopyRows; pass++)
            w.Line($"{(declare ? "int " : "")}cacheRow{pass} = p.KeyCacheRow[keyStart + global::System.Math.Min({start} + copyRow + {pass * CopyRows}, end - 1)];");
    }

    /// <summary>
    /// cp.async of one key tile into a stage: per copied row, the K nope boxes from the expanded keys and the V boxes,
    /// then the RoPE boxes from the cache rows (last, as only they wait on the rows' indices), each from one source and one target register with immediate offsets; rows past
    /// <c>end</c> are zero-filled (no global read). Then commit.
    /// </summary>
    private static void EmitCopy(SourceWriter w, MlaShapeSpec s, string start, string stage)
    {
        int nopeBoxes = s.NopeHeadDim / BoxValues, ropeBoxes = s.RopeDim / BoxValues, valueBoxes = s.VHeadDim / BoxValues;
        w.Line("{");
        w.Line($"    int first = {start};");
        for (int pass = 0; pass < TileKeys / CopyRows; pass++)
        {
            string row = $"first + copyRow + {pass * CopyRows}";
            w.Line($"    // Row copyRow + {pass * CopyRows}: K nope, K rope, V.");
            w.Line($"    long into{pass} = tiles + {stage} + copyInto + {pass * CopyRows * BoxRowBytes};");
            w.Line($"    int bytes{pass} = {row} < end ? 16 : 0;");
            w.Line($"    long nope{pass} = bytes{pass} != 0 ? nopeBase + ({row}) * (NopeHeadDim * 2L) : p.KeyNopeAddress;");
            w.Line($"    long rope{pass} = bytes{pass} != 0 ? ropeBase + (long)cacheRow{pass} * CacheRowValues * 2L : p.PagesAddress;");
            w.Line($"    long value{pass} = bytes{pass} != 0 ? valueBase + ({row}) * (VHeadDim * 2L) : p.ValueAddress;");
            w.Line($"    {Asm}(\"{Copies(0, nopeBoxes)}\", into{pass}, nope{pass}, bytes{pass});");
            w.Line($"    {Asm}(\"{Copies(nopeBoxes, ropeBoxes)}\", into{pass}, rope{pass}, bytes{pass});");
            w.Line($"    {Asm}(\"{Copies(nopeBoxes + ropeBoxes, valueBoxes)}\", into{pass}, value{pass}, bytes{pass});");
        }
        w.Line($"    {Asm}(\"cp.async.commit_group;\");");
        w.Line("}");
    }

    /// <summary><paramref name="count"/> 16-byte cp.async: box firstBox + b of the stage row at %0 from +128·b of the source at %1.</summary>
    private static string Copies(int firstBox, int count) =>
        Repeat(count, b => $"cp.async.cg.shared.global [%0+{(firstBox + b) * BoxBytes}], [%1+{b * BoxRowBytes}], 16, %2;");
}
