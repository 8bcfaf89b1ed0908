using MlaGen.Generator.Helpers;
using MlaGen.Generator.Model;
using static MlaGen.Generator.Emitting.ExpandedTensorCoreEmitter;
using static MlaGen.Generator.Emitting.PtxText;
using static MlaGen.Generator.Helpers.LiteralFormat;

namespace MlaGen.Generator.Emitting;

/// <summary>
/// The Hopper expanded attention: the tensor-core kernel's tile, data flow and online softmax, with both products on
/// warpgroup MMA (wgmma, sm_90a, loaded through PTX patching). The CTA's 8 warps are two warpgroups over 128 query rows:
/// Q and P stay A fragments in registers, K and V are read by the tensor cores straight from shared memory through
/// matrix descriptors, so the warps issue 14 wgmma per 32-key tile instead of 40 ldmatrix and 80 mma.sync.
/// </summary>
internal static class ExpandedWarpgroupEmitter
{
    /// <summary>Two warpgroups: 128 query rows share each K/V tile, which halves the L2 traffic per FLOP of one.</summary>
    private const int Threads = 256;

    /// <summary>Query rows per CTA: 16 per warp.</summary>
    private const int Rows = Threads / 32 * 16;

    public static void Emit(SourceWriter w, MlaShapeSpec s)
    {
        int kBytes = Keys * s.QHeadDim * 2;
        int vBytes = Keys * s.VHeadDim * 2;
        int kChunks = s.QHeadDim / 8, vChunks = s.VHeadDim / 8;
        // Descriptor fields (bytes >> 4): LBO at bit 16 = core matrices adjacent along the reduction, SBO at bit 32 = along M/N.
        ulong keyDescriptor = (128UL >> 4) << 16 | ((ulong)(8 * kChunks * 16) >> 4) << 32; // K: keys × dims, dims contiguous
        ulong valueDescriptor = ((ulong)(8 * vChunks * 16) >> 4) << 16 | (128UL >> 4) << 32; // V: keys × dims, dims contiguous (transposed B)
        w.Line("// Warpgroup (wgmma) expanded attention (Hopper): tile, stage layout and matrix descriptors.");
        w.Line($"public const int XwRows = {Int(Rows)}; // query tokens per CTA: two warpgroups of 64");
        w.Line($"public const int XwThreads = {Int(Threads)};");
        w.Line($"public const int XwVBytes = {Int(kBytes)}; // V's offset in a stage: K is 32 keys x QHeadDim in core matrices");
        w.Line($"public const int XwStageBytes = {Int(kBytes + vBytes)};");
        w.Line($"public const long XwKeyDescriptor = 0x{keyDescriptor:X}L; // K-major B: LBO 128 B (next 8 dims), SBO {8 * kChunks * 16} B (next 8 keys)");
        w.Line($"public const long XwValueDescriptor = 0x{valueDescriptor:X}L; // MN-major B: LBO {8 * vChunks * 16} B (next 8 keys), SBO 128 B (next 8 dims)");
        w.Line();
        EmitKernel(w, s, kBytes + vBytes);
    }

    private static void EmitKernel(SourceWriter w, MlaShapeSpec s, int stageBytes)
    {
        int qSteps = s.QHeadDim / 16;
        int outTiles = s.VHeadDim / 8;
        string scores = Registers("xs", 0, ScoreTiles * 4);
        string output = Registers("xo", 0, outTiles * 4);
        w.Line("/// <summary>Causal expanded attention on warpgroup MMA (sm_90a): two warpgroups per (128-token query tile, head) (see ExpandedWarpgroupEmitter).</summary>");
        w.Open($"public static void ExpandedAttentionWarpgroupKernel({KernelEmitter.K}.ExpandedAttentionParams p)");
        w.Line("// Named registers and the two stages first, before any branch (ILGPU pastes inline PTX unbraced).");
        w.Line($"{Asm}(\"{OnlineSoftmaxRegisters(outTiles)} " +
            $".reg .pred xwz, xwa; .shared .align 128 .b8 xw_tiles[{2 * stageBytes}];\");");
        w.Line($"{Asm}(\"{{ .reg .u32 z; mov.u32 z, 0; setp.ne.u32 xwz, z, 0; setp.eq.u32 xwa, z, 0; }}\"); // wgmma scale-d: false overwrites D, true accumulates");
        w.Line($"{Asm}(\"mov.u64 %0, xw_tiles;\", out long tiles);");
        EmitTileSetup(w);
        w.Line();
        EmitQueryFragments(w, s);
        w.Line();
        w.Line($"{Asm}(\"{Repeat(outTiles * 4, i => $"mov.f32 xo{i}, 0f00000000;")} mov.f32 xm0, {NegativeInfinity}; mov.f32 xm1, {NegativeInfinity}; mov.f32 xl0, 0f00000000; mov.f32 xl1, 0f00000000;\");");
        EmitChunkConstants(w, s);
        EmitCacheRowLoads(w, s, "0", declare: true);
        EmitCopy(w, s, "0", "0");
        EmitCacheRowLoads(w, s, "XaKeys", declare: false);
        w.Line("long buffer = 0;");
        w.Open("for (int kt = 0; kt < end; kt += XaKeys)");
        w.Line("// The tile's copies are visible to the tensor cores' (async) proxy only after this thread's proxy fence.");
        w.Line($"{Asm}(\"cp.async.wait_group 0; fence.proxy.async.shared::cta;\");");
        w.Line("global::ILGPU.Group.Barrier(); // this tile has landed for everyone, and no wgmma still reads the other stage");
        w.Line("long keyDescriptor = XwKeyDescriptor | (((tiles + buffer) >> 4) & 0x3FFF);");
        w.Line("long valueDescriptor = XwValueDescriptor | (((tiles + buffer + XwVBytes) >> 4) & 0x3FFF);");
        w.Line();
        w.Line($"// S = Q·Kᵀ: {qSteps} wgmma m64n{Keys}k16, two per statement (k-step i reads K's core matrices at +256·i bytes); the first overwrites S.");
        for (int i = 0; i < qSteps; i += 2)
        {
            string fence = i == 0 ? "wgmma.fence.sync.aligned; " : "";
            string scale = i == 0 ? "xwz" : "xwa";
            string first = $"wgmma.mma_async.sync.aligned.m64n{Keys}k16.f32.bf16.bf16 {{{scores}}}, {{%1,%2,%3,%4}}, %0, {scale}, 1, 1, 0;";
            string args = $"keyDescriptor + {16 * i}L, q{i}a, q{i}b, q{i}c, q{i}d";
            if (i + 1 < qSteps)
            {
                w.Line($"{Asm}(\"{{ .reg .b64 b; {fence}{first} " +
                    $"add.s64 b, %0, 16; wgmma.mma_async.sync.aligned.m64n{Keys}k16.f32.bf16.bf16 {{{scores}}}, {{%5,%6,%7,%8}}, b, xwa, 1, 1, 0; }}\", " +
                    $"{args}, q{i + 1}a, q{i + 1}b, q{i + 1}c, q{i + 1}d);");
            }
            else
            {
                w.Line($"{Asm}(\"{fence}{first}\", {args});");
            }
        }
        w.Line($"{Asm}(\"wgmma.commit_group.sync.aligned;\");");
        w.Line("// While the tensor cores work: the next tile's copies (its cache rows were read a tile ago) and the cache rows of the one after.");
        w.Line("if (kt + XaKeys < end)");
        w.Open();
        EmitCopy(w, s, "kt + XaKeys", "XwStageBytes - buffer");
        w.Close();
        EmitCacheRowLoads(w, s, "kt + 2 * XaKeys", declare: false);
        w.Line($"{Asm}(\"wgmma.wait_group.sync.aligned 0;\");");
        w.Line("// Scale to log2 units, causal mask, online softmax, rescale O, pack P as bf16 A fragments (as in the mma.sync kernel).");
        EmitSoftmax(w, outTiles, "visibleLo - kt - 2 * t", "visibleHi - kt - 2 * t");
        w.Line($"// O += P·V: {Keys / 16} wgmma m64n{s.VHeadDim}k16 with V transposed (MN-major) from shared memory; done before the next tile's barrier.");
        var pv = new System.Text.StringBuilder("wgmma.fence.sync.aligned; ");
        for (int kk = 0; kk < Keys / 16; kk++)
        {
            string descriptor = kk == 0 ? "%0" : "b";
            if (kk > 0)
                pv.Append($"add.s64 b, %0, {kk * 16 * s.VHeadDim * 2 / 16}; ");
            pv.Append($"wgmma.mma_async.sync.aligned.m64n{s.VHeadDim}k16.f32.bf16.bf16 {{{output}}}, {{{Registers("xp", 4 * kk, 4)}}}, {descriptor}, xwa, 1, 1, 1; ");
        }
        pv.Append("wgmma.commit_group.sync.aligned; wgmma.wait_group.sync.aligned 0;");
        w.Line($"{Asm}(\"{{ .reg .b64 b; {pv} }}\", valueDescriptor);");
        w.Line("buffer = XwStageBytes - buffer;");
        w.Close();
        w.Line();
        EmitEpilogue(w, s, outTiles);
        w.Close();
        w.Line();
    }

    private static int KeyChunks(MlaShapeSpec s) => s.QHeadDim / 8;

    private static int ValueChunks(MlaShapeSpec s) => s.VHeadDim / 8;

    /// <summary>How many passes of all threads cover a tile's <paramref name="chunksPerRow"/> × 32 chunks.</summary>
    private static int Passes(int chunksPerRow) => (Keys * chunksPerRow + Threads - 1) / Threads;

    /// <summary>
    /// The per-thread constants of the tile copies, hoisted out of the loop: chunk c = chunk + 256·j (the lane permutation of
    /// <see cref="CopyChunk"/>) is row (c / (8·chunks))·8 + c % 8, column (c / 8) % chunks, and lands at
    /// byte 16·c of its operand (core-matrix order: a warp writes 512 contiguous bytes, each quarter-warp reads 4 rows × 32
    /// bytes); its source offset within the key row.
    /// </summary>
    private static void EmitChunkConstants(SourceWriter w, MlaShapeSpec s)
    {
        int nopeChunks = s.NopeHeadDim / 8;
        w.Line("// Copy constants per chunk of this thread (core-matrix order; see ExpandedWarpgroupEmitter.EmitChunkConstants).");
        w.Line($"int chunk = {CopyChunk};");
        foreach (var (name, chunks) in new[] { ("k", KeyChunks(s)), ("v", ValueChunks(s)) })
        {
            for (int j = 0; j < Passes(chunks); j++)
            {
                string chunk = $"(chunk + {j * Threads})";
                w.Line($"int {name}Row{j} = ({chunk} / {8 * chunks}) * 8 + ({chunk} & 7);");
                w.Line($"int {name}Column{j} = ({chunk} >> 3) % {chunks};");
                w.Line($"bool {name}Live{j} = {chunk} < {Keys * chunks};");
                if (name == "k")
                {
                    w.Line($"bool kRope{j} = kColumn{j} >= {nopeChunks};");
                    w.Line($"long kOffset{j} = kRope{j} ? (LatentRank + (kColumn{j} - {nopeChunks}) * 8) * 2L : ((long)kRow{j} * NopeHeadDim + kColumn{j} * 8) * 2L;");
                }
                else
                {
                    w.Line($"long vOffset{j} = ((long)vRow{j} * VHeadDim + vColumn{j} * 8) * 2L;");
                }
            }
        }
        w.Line("long nopeBase = p.KeyNopeAddress + headKeys * NopeHeadDim * 2L;");
        w.Line("long valueBase = p.ValueAddress + headKeys * VHeadDim * 2L;");
    }

    /// <summary>
    /// Each K chunk's cache row (for its RoPE part) for the tile at <paramref name="start"/>, read a tile before its copy so
    /// the copy never waits on it; clamped to the sequence's last key, so the read is always in bounds and never branches.
    /// </summary>
    private static void EmitCacheRowLoads(SourceWriter w, MlaShapeSpec s, string start, bool declare)
    {
        for (int j = 0; j < Passes(KeyChunks(s)); j++)
            w.Line($"{(declare ? "int " : "")}cacheRow{j} = p.KeyCacheRow[keyStart + global::System.Math.Min({start} + kRow{j}, end - 1)];");
    }

    /// <summary>cp.async of one key tile into a stage (K rows [nope | rope], then V rows); keys past <c>end</c> are zero-filled.</summary>
    private static void EmitCopy(SourceWriter w, MlaShapeSpec s, string start, string stage)
    {
        w.Line("{");
        w.Line($"    int first = {start};");
        w.Line($"    long into = {stage};");
        w.Line("    long nopeTile = nopeBase + first * NopeHeadDim * 2L;");
        w.Line("    long valueTile = valueBase + first * VHeadDim * 2L;");
        foreach (var (name, chunks) in new[] { ("k", KeyChunks(s)), ("v", ValueChunks(s)) })
        {
            for (int j = 0; j < Passes(chunks); j++)
            {
                bool partial = (j + 1) * Threads > Keys * chunks;
                w.Line(partial ? $"    if ({name}Live{j})" : $"    // {name.ToUpperInvariant()} chunk {j}");
                w.Line("    {");
                w.Line($"        bool inside = first + {name}Row{j} < end;");
                w.Line(name == "k"
                    ? $"        long source = !inside ? p.KeyNopeAddress : kRope{j} ? p.PagesAddress + (long)cacheRow{j} * CacheRowValues * 2L + kOffset{j} : nopeTile + kOffset{j};"
                    : $"        long source = inside ? valueTile + vOffset{j} : p.ValueAddress;");
                string target = name == "k" ? $"into + (chunk + {j * Threads}) * 16L" : $"into + XwVBytes + (chunk + {j * Threads}) * 16L";
                w.Line($"        {Asm}(\"{CopyAsync("xw_tiles")}\", {target}, source, inside ? 16 : 0);");
                w.Line("    }");
            }
        }
        w.Line($"    {Asm}(\"cp.async.commit_group;\");");
        w.Line("}");
    }
}
