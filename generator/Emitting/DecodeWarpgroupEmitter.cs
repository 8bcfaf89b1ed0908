using MlaGen.Generator.Helpers;
using MlaGen.Generator.Model;
using static MlaGen.Generator.Emitting.ExpandedTensorCoreEmitter;
using static MlaGen.Generator.Emitting.KernelEmitter;
using static MlaGen.Generator.Emitting.PtxText;
using static MlaGen.Generator.Helpers.LiteralFormat;

namespace MlaGen.Generator.Emitting;

/// <summary>
/// The Hopper absorbed (decode) attention on warpgroup MMA (wgmma, sm_90a), FlashMLA's shape: one CTA of two warpgroups
/// takes 64 query rows (token × head) of one sequence and a range of its cached tokens. Q (64 × [latent | rope], bf16)
/// sits in shared memory for the whole item; 32-token cache tiles stream through three cp.async stages. Each warpgroup
/// computes S = Q·Kᵀ over half of the reduction, the halves are summed through shared memory, both warpgroups run the
/// same online softmax, and each owns half of the latent output columns for O += P·V (V is the tile's first latent
/// columns, read where it already lies). Shared memory above 48 KB is dynamic: the loader raises the function's limit.
/// </summary>
internal static class DecodeWarpgroupEmitter
{
    private const int Threads = 256;
    private const int Rows = 64;
    private const int Stages = 3;

    public static void Emit(SourceWriter w, MlaShapeSpec s)
    {
        int chunks = s.CacheRowValues / 8;
        int queryBytes = Rows * s.CacheRowValues * 2;
        int stageBytes = Keys * s.CacheRowValues * 2;
        int exchangeBytes = Threads * ScoreTiles * 4 * 4;
        int rowGroupBytes = 8 * chunks * 16;
        // Descriptor fields (bytes >> 4): LBO at bit 16 = core matrices adjacent along the reduction, SBO at bit 32 = along M/N.
        ulong rowDescriptor = (128UL >> 4) << 16 | ((ulong)rowGroupBytes >> 4) << 32;
        ulong valueDescriptor = ((ulong)rowGroupBytes >> 4) << 16 | (128UL >> 4) << 32;
        w.Line("// Warpgroup (wgmma) decode attention (Hopper): tile, shared-memory map and matrix descriptors.");
        w.Line($"public const int DwRows = {Int(Rows)}; // query rows (token x head) per CTA: one wgmma M");
        w.Line($"public const int DwKeys = {Int(Keys)}; // cached tokens per tile");
        w.Line($"public const int DwThreads = {Int(Threads)}; // two warpgroups");
        w.Line($"public const int DwStages = {Int(Stages)};");
        w.Line("public const int DwCtasPerSm = 1; // the shared memory below fills an SM");
        w.Line($"public const int DwHalfSteps = {Int(s.CacheRowValues / 32)}; // 16-wide k-steps of Q·Kᵀ per warpgroup");
        w.Line($"public const int DwStageBytes = {Int(stageBytes)}; // 32 cache rows in core matrices");
        w.Line($"public const int DwQueryBytes = {Int(queryBytes)}; // Q: 64 rows in core matrices, at offset 0");
        w.Line($"public const int DwExchangeBytes = {Int(exchangeBytes)}; // each thread's partial S, for the other warpgroup");
        w.Line("public const int DwExchange = DwQueryBytes + DwStages * DwStageBytes;");
        w.Line("public const int DwSharedBytes = DwExchange + DwExchangeBytes + 128; // + slack to align the dynamic block to 128 B");
        w.Line($"public const long DwRowDescriptor = 0x{rowDescriptor:X}L; // K-major Q (A) and K (B): LBO 128 B (next 8 dims), SBO {rowGroupBytes} B (next 8 rows)");
        w.Line($"public const long DwValueDescriptor = 0x{valueDescriptor:X}L; // MN-major V (B): LBO {rowGroupBytes} B (next 8 keys), SBO 128 B (next 8 columns)");
        w.Line();
        EmitKernel(w, s, chunks, rowGroupBytes);
    }

    private static void EmitKernel(SourceWriter w, MlaShapeSpec s, int chunks, int rowGroupBytes)
    {
        int outTiles = s.LatentRank / 2 / 8;
        int halfSteps = s.CacheRowValues / 32;
        int tileChunks = Keys * chunks;
        int passes = (tileChunks + Threads - 1) / Threads;
        int tilePages = Keys / System.Math.Min(s.PageSize, Keys);
        string scores = Registers("xs", 0, ScoreTiles * 4);
        string output = Registers("xo", 0, outTiles * 4);
        w.Line("/// <summary>Split-KV decode attention on warpgroup MMA (sm_90a): one CTA of two warpgroups per work item (see DecodeWarpgroupEmitter).</summary>");
        w.Open($"public static void DecodeAttentionWarpgroupKernel({K}.TensorCoreAttentionParams p)");
        w.Line("// Named registers first, before any branch (ILGPU pastes inline PTX unbraced): S, P, O, running max and sum.");
        w.Line($"{Asm}(\".reg .f32 xs<{ScoreTiles * 4}>; .reg .b32 xp<{ScoreTiles * 2}>; .reg .f32 xo<{outTiles * 4}>; .reg .f32 xm<2>; .reg .f32 xl<2>; .reg .pred xwz, xwa;\");");
        w.Line($"{Asm}(\"{{ .reg .u32 z; mov.u32 z, 0; setp.ne.u32 xwz, z, 0; setp.eq.u32 xwa, z, 0; }}\"); // wgmma scale-d: false overwrites D, true accumulates");
        w.Line("// The dynamic block (DwSharedBytes at launch): ILGPU declares it as __dyn_shared_alloca once the kernel asks for it.");
        w.Line("global::ILGPU.ArrayView<byte> dynamicShared = global::ILGPU.SharedMemory.GetDynamic<byte>();");
        w.Line($"{Asm}(\"mov.u64 %0, __dyn_shared_alloca;\", out long sharedStart);");
        w.Line("long shared = (sharedStart + 127) & ~127L;");
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
        w.Line();
        w.Line("// Q → bf16 core matrices in shared memory: chunk c (8 values) is row (c / (8·chunks))·8 + c % 8, column (c / 8) % chunks.");
        w.Open("for (int c = tid; c < DwRows * TcChunksPerRow; c += DwThreads)");
        w.Line("int row = c / (8 * TcChunksPerRow) * 8 + (c & 7);");
        w.Line("long from = (long)(firstRow + row) * CacheRowValues + ((c >> 3) % TcChunksPerRow) * 8;");
        w.Line("bool real = row < rows;");
        for (int i = 0; i < 4; i++)
            w.Line($"uint q{i} = real ? {K}.KernelMath.PackBf16(p.AbsorbedQuery[from + {2 * i}], p.AbsorbedQuery[from + {2 * i + 1}]) : 0u;");
        w.Line($"{Asm}(\"st.shared.v4.b32 [%0], {{%1, %2, %3, %4}};\", shared + c * 16L, q0, q1, q2, q3);");
        w.Close();
        w.Line();
        w.Line("// Copy constants of this thread's chunks of a tile (core-matrix order, like Q): row and source byte in the tile's rows.");
        w.Line($"int chunk = {CopyChunk};");
        for (int j = 0; j < passes; j++)
        {
            string c = $"(chunk + {j * Threads})";
            w.Line($"int copyRow{j} = {c} / {8 * chunks} * 8 + ({c} & 7);");
            w.Line($"int copyFrom{j} = (copyRow{j} * TcChunksPerRow + ({c} >> 3) % TcChunksPerRow) * 16;");
        }
        w.Line();
        w.Line($"{Asm}(\"{Repeat(outTiles * 4, i => $"mov.f32 xo{i}, 0f00000000;")} mov.f32 xm0, {NegativeInfinity}; mov.f32 xm1, {NegativeInfinity}; mov.f32 xl0, 0f00000000; mov.f32 xl1, 0f00000000;\");");
        w.Line("// Tiles 0 and 1 in flight before the loop; each tile's pages are read an iteration before its copy.");
        EmitPageLoads(w, tilePages, "begin", declare: true);
        EmitCopy(w, s, passes, tileChunks, tilePages, "begin", "0");
        EmitPageLoads(w, tilePages, "begin + DwKeys", declare: false);
        EmitCopy(w, s, passes, tileChunks, tilePages, "begin + DwKeys", "DwStageBytes");
        EmitPageLoads(w, tilePages, "begin + 2 * DwKeys", declare: false);
        w.Line("long stage = 0;");
        w.Line("long qSteps = shared + half * DwHalfSteps * 256L; // this warpgroup's k-steps: 16 dims = two core matrices = 256 B each");
        w.Open("for (int tile = begin; tile < end; tile += DwKeys)");
        w.Line("// Tile `tile` has landed (one later group may still fly); the proxy fence hands it (and Q) to the tensor cores.");
        w.Line($"{Asm}(\"cp.async.wait_group 1; fence.proxy.async.shared::cta;\");");
        w.Line("global::ILGPU.Group.Barrier(); // landed for everyone, and no wgmma still reads the stage refilled next");
        w.Line("long queryDescriptor = DwRowDescriptor | ((qSteps >> 4) & 0x3FFF);");
        w.Line("long keyDescriptor = DwRowDescriptor | (((qSteps + DwQueryBytes + stage) >> 4) & 0x3FFF);");
        w.Line($"// S (this half) = Q·Kᵀ: {halfSteps} wgmma m64n{Keys}k16 with both operands read from shared memory through descriptors.");
        for (int i = 0; i < halfSteps; i += 2)
        {
            string fence = i == 0 ? "wgmma.fence.sync.aligned; " : "";
            string scale = i == 0 ? "xwz" : "xwa";
            var step = new System.Text.StringBuilder($"{{ .reg .b64 a, b; {fence}");
            for (int k = i; k < System.Math.Min(i + 2, halfSteps); k++)
            {
                step.Append($"add.s64 a, %0, {k * 16}; add.s64 b, %1, {k * 16}; ");
                step.Append($"wgmma.mma_async.sync.aligned.m64n{Keys}k16.f32.bf16.bf16 {{{scores}}}, a, b, {(k == i ? scale : "xwa")}, 1, 1, 0, 0; ");
            }
            w.Line($"{Asm}(\"{step}}}\", queryDescriptor, keyDescriptor);");
        }
        w.Line($"{Asm}(\"wgmma.commit_group.sync.aligned;\");");
        w.Line("// While the tensor cores work: tile + 2's copies into the stage tile - 1 used, then the page of tile + 3.");
        w.Line("long refill = stage == 0 ? 2 * DwStageBytes : stage - DwStageBytes;");
        w.Line("if (tile + 2 * DwKeys < end)");
        w.Open();
        EmitCopy(w, s, passes, tileChunks, tilePages, "tile + 2 * DwKeys", "refill");
        w.Close();
        w.Line("else");
        w.Line($"    {Asm}(\"cp.async.commit_group;\"); // an empty group keeps wait_group 1's count");
        EmitPageLoads(w, tilePages, "tile + 3 * DwKeys", declare: false);
        w.Line($"{Asm}(\"wgmma.wait_group.sync.aligned 0;\");");
        w.Line("// Sum the halves: each thread leaves its partial S for the thread at the same place in the other warpgroup.");
        w.Line($"{Asm}(\"{{ .reg .u64 a; {Repeat(ScoreTiles * 4, i => $"add.s64 a, %0, {i * Threads * 4}; st.shared.f32 [a], xs{i};")} }}\", exchange + tid * 4L);");
        w.Line("global::ILGPU.Group.Barrier();");
        w.Line($"{Asm}(\"{{ .reg .u64 a; .reg .f32 v; {Repeat(ScoreTiles * 4, i => $"add.s64 a, %0, {i * Threads * 4}; ld.shared.f32 v, [a]; add.f32 xs{i}, xs{i}, v;")} }}\", exchange + (tid ^ 128) * 4L);");
        w.Line("// Scale to log2 units, mask keys a row may not see, online softmax, rescale O, pack P (shared with the expanded kernels).");
        w.Line($"{Asm}(\"{SoftmaxPtx(outTiles)}\", visibleLo - tile - 2 * t, visibleHi - tile - 2 * t, ScoreScaleLog2);");
        w.Line($"// O (this half's {s.LatentRank / 2} columns) += P·V: {Keys / 16} wgmma m64n{s.LatentRank / 2}k16, V transposed (MN-major) in the tile.");
        var pv = new System.Text.StringBuilder("{ .reg .b64 b; wgmma.fence.sync.aligned; ");
        for (int kk = 0; kk < Keys / 16; kk++)
        {
            pv.Append(kk == 0 ? "mov.b64 b, %0; " : $"add.s64 b, %0, {kk * 2 * rowGroupBytes / 16}; ");
            pv.Append($"wgmma.mma_async.sync.aligned.m64n{s.LatentRank / 2}k16.f32.bf16.bf16 {{{output}}}, {{{Registers("xp", 4 * kk, 4)}}}, b, xwa, 1, 1, 1; ");
        }
        pv.Append("wgmma.commit_group.sync.aligned; wgmma.wait_group.sync.aligned 0; }");
        w.Line($"{Asm}(\"{pv}\", DwValueDescriptor | (((shared + DwQueryBytes + stage + half * {s.LatentRank / 2 / 8 * 128}L) >> 4) & 0x3FFF));");
        w.Line("stage = stage == 2 * DwStageBytes ? 0 : stage + DwStageBytes;");
        w.Close();
        w.Line($"{Asm}(\"cp.async.wait_group 0;\"); // nothing may land after the CTA is gone");
        w.Line();
        EmitRowStates(w);
        w.Line($"long outLo = ((long)item * DwRows + rowLo) * LatentRank + half * {s.LatentRank / 2} + 2 * t;");
        w.Line("long outHi = outLo + 8L * LatentRank;");
        for (int nt = 0; nt < outTiles; nt++)
        {
            int o = 4 * nt;
            w.Line($"{Asm}(\"mov.b64 %0, {{xo{o}, xo{o + 1}}};\", out ulong lo{nt});");
            w.Line($"{Asm}(\"mov.b64 %0, {{xo{o + 2}, xo{o + 3}}};\", out ulong hi{nt});");
            w.Line($"if (rowLo < rows) {{ p.PartialOutput[outLo + {8 * nt}] = {Low($"lo{nt}")} * invLo; p.PartialOutput[outLo + {8 * nt + 1}] = {High($"lo{nt}")} * invLo; }}");
            w.Line($"if (rowHi < rows) {{ p.PartialOutput[outHi + {8 * nt}] = {Low($"hi{nt}")} * invHi; p.PartialOutput[outHi + {8 * nt + 1}] = {High($"hi{nt}")} * invHi; }}");
        }
        w.Open("if (half == 0 && t == 0)");
        w.Line("if (rowLo < rows)");
        w.Line($"    p.PartialLse[(long)item * DwRows + rowLo] = {NaturalLse("Lo")};");
        w.Line("if (rowHi < rows)");
        w.Line($"    p.PartialLse[(long)item * DwRows + rowHi] = {NaturalLse("Hi")};");
        w.Close();
        w.Close();
        w.Line();
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
    /// cp.async of the tile at <paramref name="start"/> into the stage at byte <paramref name="stage"/> (16-byte chunks in
    /// core-matrix order; tokens past <c>end</c> are zero-filled), then commit. Uses the pages read an iteration earlier (pageAhead).
    /// </summary>
    private static void EmitCopy(SourceWriter w, MlaShapeSpec s, int passes, int tileChunks, int tilePages, string start, string stage)
    {
        w.Line("{");
        w.Line($"    int first = {start};");
        w.Line($"    long into = shared + DwQueryBytes + {stage};");
        for (int i = 0; i < tilePages; i++)
        {
            w.Line($"    long rows{i} = p.PagesAddress + (pageAhead{i} - {i * System.Math.Min(s.PageSize, Keys)}) * CacheRowValues * 2L;");
        }
        for (int j = 0; j < passes; j++)
        {
            bool partial = (j + 1) * Threads > tileChunks;
            w.Line(partial ? $"    if (chunk + {j * Threads} < {tileChunks})" : $"    // chunk {j}");
            w.Line("    {");
            w.Line($"        bool inside = first + copyRow{j} < end;");
            string rowsBase = tilePages == 1 ? "rows0" : $"(copyRow{j} < PageSize ? rows0 : rows1)";
            w.Line($"        long source = inside ? {rowsBase} + copyFrom{j} : p.PagesAddress;");
            w.Line($"        {Asm}(\"cp.async.cg.shared.global [%0], [%1], 16, %2;\", into + (chunk + {j * Threads}) * 16L, source, inside ? 16 : 0);");
            w.Line("    }");
        }
        w.Line($"    {Asm}(\"cp.async.commit_group;\");");
        w.Line("}");
    }
}
