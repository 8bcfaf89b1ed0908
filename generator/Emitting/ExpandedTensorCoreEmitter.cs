using System.Text;
using MlaGen.Generator.Helpers;
using MlaGen.Generator.Model;
using static MlaGen.Generator.Emitting.KernelEmitter;
using static MlaGen.Generator.Emitting.PtxText;
using static MlaGen.Generator.Helpers.LiteralFormat;

namespace MlaGen.Generator.Emitting;

/// <summary>
/// The tensor-core expanded attention (CUDA only), FlashAttention-2 style: one CTA of 4 warps takes 64 query tokens of
/// one sequence for one head; each warp owns 16 query rows, keeps Q as bf16 A fragments in registers and S, P, O, the
/// running max and sum in named PTX registers, so the whole inner loop (scores, causal mask, online softmax, P·V) runs
/// without leaving registers. K (nope from the expanded keys, rope from the cache row) and V tiles of 32 keys are
/// double-buffered in shared memory by cp.async.
/// </summary>
internal static class ExpandedTensorCoreEmitter
{
    private const int Threads = 128;
    internal const int Keys = 32;
    internal const int ScoreTiles = Keys / 8; // n-tiles of S per warp
    internal const string NegativeInfinity = "0fFF800000";

    public static void Emit(SourceWriter w, MlaShapeSpec s)
    {
        int kStride = s.QHeadDim / 2 + 4;
        int vStride = s.VHeadDim / 2 + 4;
        int kBytes = Keys * kStride * 4;
        int vBytes = Keys * vStride * 4;
        w.Line("// Tensor-core expanded attention (CUDA): tile shape.");
        w.Line("public const int XaRows = 64; // query tokens per CTA: 16 per warp");
        w.Line($"public const int XaKeys = {Int(Keys)}; // keys per tile");
        w.Line($"public const int XaThreads = {Int(Threads)};");
        w.Line($"public const int XaKStride = {Int(kStride)}; // shared K row stride in words: +4 spreads rows over banks");
        w.Line($"public const int XaVStride = {Int(vStride)};");
        w.Line($"public const int XaQSteps = {Int(s.QHeadDim / 16)}; // 16-wide k-steps of q·k");
        w.Line($"public const int XaVBytes = {Int(kBytes)}; // V's offset in a stage");
        w.Line($"public const int XaStageBytes = {Int(kBytes + vBytes)};");
        w.Line();
        EmitKernel(w, s, kBytes, vBytes);
    }

    private static void EmitKernel(SourceWriter w, MlaShapeSpec s, int kBytes, int vBytes)
    {
        int qSteps = s.QHeadDim / 16;
        int outTiles = s.VHeadDim / 8;
        int stageBytes = kBytes + vBytes;
        w.Line("/// <summary>Causal expanded attention on tensor cores: one CTA of 4 warps per (query tile, head) (see ExpandedTensorCoreEmitter).</summary>");
        w.Open($"public static void ExpandedAttentionTensorCoreKernel({K}.ExpandedAttentionParams p)");
        w.Line("// Named registers and the two stages first, before any branch (ILGPU pastes inline PTX unbraced): S, P, O, and");
        w.Line("// the running max (log2 units) and per-thread partial sum of rows g and g + 8.");
        w.Line($"{Asm}(\"{OnlineSoftmaxRegisters(outTiles)} " +
            $".shared .align 16 .b8 xa_tiles[{2 * stageBytes}];\");");
        EmitTileSetup(w);
        w.Line();
        EmitQueryFragments(w, s);
        w.Line("// ldmatrix row addresses (bytes into a stage): lane l names row l % 8 of 8x8 matrix l / 8.");
        w.Line("int matrix = lane >> 3;");
        w.Line("long kRow = (long)(((lane & 7) + (matrix >> 1) * 8) * XaKStride * 4 + (matrix & 1) * 16); // K: keys x dims");
        w.Line("long vRow = (long)(XaVBytes + ((lane & 7) + (matrix & 1) * 8) * XaVStride * 4 + (matrix >> 1) * 16); // V: keys x dims");
        w.Line();
        w.Line($"{Asm}(\"{Repeat(outTiles * 4, i => $"mov.f32 xo{i}, 0f00000000;")} mov.f32 xm0, {NegativeInfinity}; mov.f32 xm1, {NegativeInfinity}; mov.f32 xl0, 0f00000000; mov.f32 xl1, 0f00000000;\");");
        EmitCopy(w, s, "0", "0");
        w.Line("long buffer = 0;");
        w.Open("for (int kt = 0; kt < end; kt += XaKeys)");
        w.Line($"{Asm}(\"cp.async.wait_group 0;\");");
        w.Line("global::ILGPU.Group.Barrier(); // this tile has landed for everyone, and nobody still reads the other stage");
        w.Line("if (kt + XaKeys < end)");
        w.Open();
        EmitCopy(w, s, "kt + XaKeys", "XaStageBytes - buffer");
        w.Close();
        w.Line();
        w.Line("// S = Q·Kᵀ: per k-step, two ldmatrix.x4 give the B fragments of all four 8-key n-tiles.");
        w.Line($"{Asm}(\"{Repeat(ScoreTiles * 4, i => $"mov.f32 xs{i}, 0f00000000;")}\");");
        for (int i = 0; i < qSteps; i++)
        {
            w.Line($"{Asm}(\"{{ .reg .u64 a; .reg .b32 b<8>; mov.u64 a, xa_tiles; add.u64 a, a, %0; " +
                "ldmatrix.sync.aligned.m8n8.x4.shared.b16 {b0,b1,b2,b3}, [a]; " +
                $"ldmatrix.sync.aligned.m8n8.x4.shared.b16 {{b4,b5,b6,b7}}, [a+{16 * 4 * (s.QHeadDim / 2 + 4)}]; " +
                $"{Mma} {{xs0,xs1,xs2,xs3}}, {{%1,%2,%3,%4}}, {{b0,b1}}, {{xs0,xs1,xs2,xs3}}; " +
                $"{Mma} {{xs4,xs5,xs6,xs7}}, {{%1,%2,%3,%4}}, {{b2,b3}}, {{xs4,xs5,xs6,xs7}}; " +
                $"{Mma} {{xs8,xs9,xs10,xs11}}, {{%1,%2,%3,%4}}, {{b4,b5}}, {{xs8,xs9,xs10,xs11}}; " +
                $"{Mma} {{xs12,xs13,xs14,xs15}}, {{%1,%2,%3,%4}}, {{b6,b7}}, {{xs12,xs13,xs14,xs15}}; }}\", " +
                $"buffer + kRow + {32 * i}L, q{i}a, q{i}b, q{i}c, q{i}d);");
        }
        w.Line("// Scale to log2 units, mask keys a row may not see (key kt + c is visible when c < visible - kt), online softmax,");
        w.Line("// rescale O, and pack P as bf16 A fragments (the S accumulator layout is the m16k16 A layout).");
        EmitSoftmax(w, outTiles, "visibleLo - kt - 2 * t", "visibleHi - kt - 2 * t");
        w.Line("// O += P·V: ldmatrix.trans of V gives two 8-column n-tiles' B fragments at a time.");
        for (int kk = 0; kk < Keys / 16; kk++)
        {
            for (int np = 0; np < outTiles / 2; np++)
            {
                int a = 8 * np, b = 8 * np + 4;
                w.Line($"{Asm}(\"{{ .reg .u64 a; .reg .b32 b<4>; mov.u64 a, xa_tiles; add.u64 a, a, %0; ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {{b0,b1,b2,b3}}, [a]; " +
                    $"{Mma} {{xo{a},xo{a + 1},xo{a + 2},xo{a + 3}}}, {{xp{4 * kk},xp{4 * kk + 1},xp{4 * kk + 2},xp{4 * kk + 3}}}, {{b0,b1}}, {{xo{a},xo{a + 1},xo{a + 2},xo{a + 3}}}; " +
                    $"{Mma} {{xo{b},xo{b + 1},xo{b + 2},xo{b + 3}}}, {{xp{4 * kk},xp{4 * kk + 1},xp{4 * kk + 2},xp{4 * kk + 3}}}, {{b2,b3}}, {{xo{b},xo{b + 1},xo{b + 2},xo{b + 3}}}; }}\", " +
                    $"buffer + vRow + {16 * kk * 4 * (s.VHeadDim / 2 + 4) + 32 * np}L);");
            }
        }
        w.Line("buffer = XaStageBytes - buffer;");
        w.Close();
        w.Line();
        EmitEpilogue(w, s, outTiles);
        w.Close();
        w.Line();
    }

    /// <summary>The work item: thread coordinates, the (query tile, head) pair and the keys the tile's rows may see.</summary>
    internal static void EmitTileSetup(SourceWriter w)
    {
        w.Line("int tid = global::ILGPU.Group.IdxX;");
        w.Line("int warp = tid >> 5;");
        w.Line("int lane = tid & 31;");
        w.Line("int g = lane >> 2; // mma group: rows g and g + 8");
        w.Line("int t = lane & 3; // thread in group: columns 2t, 2t + 1");
        w.Line("int item = global::ILGPU.Grid.IdxX;");
        w.Line("int head = item / p.Tiles; // head-major: the CTAs running together read one head's keys, which then stay in L2");
        w.Line("int tile = item - head * p.Tiles;");
        w.Line("int tokens = p.TileTokens[tile];");
        w.Line("int firstToken = p.TileFirstToken[tile];");
        w.Line("int firstPosition = p.TileFirstPosition[tile];");
        w.Line("int keyStart = p.TileKeyStart[tile];");
        w.Line("int end = firstPosition + tokens; // keys 0..end-1 of the sequence: no row of the tile sees further");
        w.Line("int rowLo = warp * 16 + g;");
        w.Line("int rowHi = rowLo + 8;");
        w.Line("int visibleLo = rowLo < tokens ? firstPosition + rowLo + 1 : 0;");
        w.Line("int visibleHi = rowHi < tokens ? firstPosition + rowHi + 1 : 0;");
        w.Line("long headKeys = (long)head * p.Keys + keyStart;");
    }

    /// <summary>Q as bf16 A fragments in registers (the same layout for mma.sync m16k16 and a warpgroup's 16-row slice).</summary>
    internal static void EmitQueryFragments(SourceWriter w, MlaShapeSpec s)
    {
        int qSteps = s.QHeadDim / 16;
        w.Line($"// Q as bf16 A fragments: {qSteps} k-steps x 4 registers, read once.");
        w.Line("global::ILGPU.ArrayView<uint> query = p.HeadQuery.Cast<uint>();");
        w.Line("long qLo = (((long)(firstToken + rowLo) * Heads + head) * QHeadDim + 2 * t) / 2;");
        w.Line("long qHi = (((long)(firstToken + rowHi) * Heads + head) * QHeadDim + 2 * t) / 2;");
        for (int i = 0; i < qSteps; i++)
        {
            w.Line($"uint q{i}a = rowLo < tokens ? query[qLo + {8 * i}] : 0u;");
            w.Line($"uint q{i}b = rowHi < tokens ? query[qHi + {8 * i}] : 0u;");
            w.Line($"uint q{i}c = rowLo < tokens ? query[qLo + {8 * i + 4}] : 0u;");
            w.Line($"uint q{i}d = rowHi < tokens ? query[qHi + {8 * i + 4}] : 0u;");
        }
    }

    /// <summary>
    /// The quad's partial sums make each row's sum; then O is normalised and stored straight from its PTX registers (8 bytes
    /// per row and n-tile: a quad writes a row's 32 contiguous bytes; rows past the tile's tokens store nothing), and the
    /// natural-log LSE is written.
    /// </summary>
    internal static void EmitEpilogue(SourceWriter w, MlaShapeSpec s, int outTiles)
    {
        EmitRowStates(w);
        w.Line("long outLo = p.HeadOutputAddress + (((long)(firstToken + rowLo) * Heads + head) * VHeadDim + 2 * t) * 4L;");
        w.Line("long outHi = p.HeadOutputAddress + (((long)(firstToken + rowHi) * Heads + head) * VHeadDim + 2 * t) * 4L;");
        var store = new StringBuilder("{ .reg .pred lo, hi; .reg .f32 a, b; setp.lt.s32 lo, %2, %4; setp.lt.s32 hi, %3, %4; ");
        for (int nt = 0; nt < outTiles; nt++)
        {
            int o = 4 * nt;
            store.Append($"mul.f32 a, xo{o}, %5; mul.f32 b, xo{o + 1}, %5; @lo st.global.v2.f32 [%0+{32 * nt}], {{a, b}}; ");
            store.Append($"mul.f32 a, xo{o + 2}, %6; mul.f32 b, xo{o + 3}, %6; @hi st.global.v2.f32 [%1+{32 * nt}], {{a, b}}; ");
        }
        store.Append('}');
        w.Line($"{Asm}(\"{store}\", outLo, outHi, rowLo, rowHi, tokens, invLo, invHi);");
        w.Open("if (t == 0)");
        w.Line("if (rowLo < tokens)");
        w.Line($"    p.Lse[(long)(firstToken + rowLo) * Heads + head] = {NaturalLse("Lo")};");
        w.Line("if (rowHi < tokens)");
        w.Line($"    p.Lse[(long)(firstToken + rowHi) * Heads + head] = {NaturalLse("Hi")};");
        w.Close();
    }

    /// <summary>
    /// After the key loop: the quad's four partial sums make each row's sum; declares <c>maxLo/sumLo/invLo</c> and
    /// <c>maxHi/sumHi/invHi</c> for rows g and g + 8 (inv 0 for a row that saw nothing).
    /// </summary>
    internal static void EmitRowStates(SourceWriter w)
    {
        EmitQuadSums(w);
        EmitRowStateValues(w);
    }

    /// <summary>The quad's four partial sums (xl0/xl1) made the row's sum in each of its threads.</summary>
    internal static void EmitQuadSums(SourceWriter w)
    {
        w.Line("// The quad's four partial sums make the row's sum; then normalise and write O and the natural-log LSE.");
        w.Line($"{Asm}(\"{{ .reg .f32 u; shfl.sync.bfly.b32 u, xl0, 1, 31, -1; add.f32 xl0, xl0, u; shfl.sync.bfly.b32 u, xl0, 2, 31, -1; add.f32 xl0, xl0, u; " +
            "shfl.sync.bfly.b32 u, xl1, 1, 31, -1; add.f32 xl1, xl1, u; shfl.sync.bfly.b32 u, xl1, 2, 31, -1; add.f32 xl1, xl1, u; }\");");
    }

    /// <summary>Declares <c>maxLo/sumLo/invLo</c> and <c>maxHi/sumHi/invHi</c> from xm and the row sums in xl (inv 0 for a row that saw nothing).</summary>
    internal static void EmitRowStateValues(SourceWriter w)
    {
        w.Line($"{Asm}(\"mov.b64 %0, {{xm0, xl0}};\", out ulong stateLo);");
        w.Line($"{Asm}(\"mov.b64 %0, {{xm1, xl1}};\", out ulong stateHi);");
        w.Line($"float maxLo = {Low("stateLo")}, sumLo = {High("stateLo")};");
        w.Line($"float maxHi = {Low("stateHi")}, sumHi = {High("stateHi")};");
        w.Line("float invLo = sumLo != 0f ? 1f / sumLo : 0f;");
        w.Line("float invHi = sumHi != 0f ? 1f / sumHi : 0f;");
    }

    /// <summary>The natural-log LSE of row "Lo" or "Hi" from its log2-unit max and sum (−∞ for a row that saw nothing).</summary>
    internal static string NaturalLse(string row) =>
        $"sum{row} != 0f ? (max{row} + {K}.KernelMath.Log2(sum{row})) * {K}.KernelMath.Ln2 : float.NegativeInfinity";

    internal static string Low(string packed) => $"global::ILGPU.Interop.IntAsFloat((uint)({packed} & 0xFFFFFFFFUL))";

    internal static string High(string packed) => $"global::ILGPU.Interop.IntAsFloat((uint)({packed} >> 32))";

    /// <summary>
    /// The named registers of the online softmax: S, P (bf16 pairs), O, and per row (g, g + 8) the kept max (log2 units),
    /// this thread's partial sum and the factor O must be rescaled by.
    /// </summary>
    internal static string OnlineSoftmaxRegisters(int outTiles, int scoreTiles = ScoreTiles) =>
        $".reg .f32 xs<{scoreTiles * 4}>; .reg .b32 xp<{scoreTiles * 2}>; .reg .f32 xo<{outTiles * 4}>; .reg .f32 xm<2>; .reg .f32 xl<2>; .reg .f32 xr<2>; .reg .pred xmoved;";

    /// <summary>Headroom of the kept max, log2 units: a row keeps its max until a tile's exceeds it by more than this (P ≤ 2^8).</summary>
    internal const string MaxHeadroom = "0f41000000"; // 8.0

    /// <summary>
    /// O registers per thread from which the rescale is guarded by a vote and a branch. Measured on the H100 (docs/performance.md,
    /// v8): skipping the decode kernel's 128 multiplies per tile gained 3–4 %; guarding the mma.sync prefill kernel's 64 cost
    /// 3 % (its rescale sits inside the softmax's block, off the tensor cores' critical path).
    /// </summary>
    internal const int GuardedRescaleRegisters = 128;

    /// <summary>
    /// One tile's online softmax: scale, mask, softmax with a lazily kept max, and P packed as bf16. Where O is wide
    /// (<see cref="GuardedRescaleRegisters"/>), O is rescaled only when a row of the warp moved its max (rare after the first
    /// tiles); elsewhere the rescale runs every tile in the same PTX block (a factor of 1 for rows that kept their max).
    /// <paramref name="visibleLo"/>/<paramref name="visibleHi"/>: keys visible to rows g/g+8 counted from this thread's first column.
    /// </summary>
    internal static void EmitSoftmax(SourceWriter w, int outTiles, string visibleLo, string visibleHi)
    {
        bool guarded = 4 * outTiles >= GuardedRescaleRegisters;
        string rescale = guarded ? GuardedRescalePtx(outTiles) : RescalePtx(outTiles);
        w.Line($"{Asm}(\"{SoftmaxPtx(vote: guarded)} {rescale}\", {visibleLo}, {visibleHi}, ScoreScaleLog2);");
    }

    /// <summary>
    /// One PTX block. With <paramref name="vote"/>, the kernel's predicate xmoved says whether some row of the warp moved its
    /// kept max (a warp vote, so a branch on it is uniform). Operands: %0/%1 keys visible to rows g/g+8 counted from this
    /// thread's first column, %2 the log2 score scale. The mask and the max act on raw scores (the scale is positive, so the max of the scaled
    /// scores is the scaled max, bit for bit), and each P is one fma and one ex2: 2^(s·scale − m). A row keeps its max m
    /// while the tile's max stays below m + 8 (so P ≤ 256, exact in the final O / l because l uses the same m); xr holds
    /// each row's rescale factor (1 when kept). The max and the sum are pairwise trees, so their additions do not wait on
    /// each other in one chain. Thread-local sums are kept (the quad's sum is taken once at the end); a row with nothing
    /// visible yet keeps max −∞.
    /// </summary>
    internal static string SoftmaxPtx(bool vote, int scoreTiles = ScoreTiles, bool pack = true)
    {
        var b = SoftmaxBlockHead(scoreTiles);
        for (int row = 0; row < 2; row++)
        {
            MaskAndMax(b, row, scoreTiles, "m");
            SoftmaxFromMax(b, row, scoreTiles, "%2");
        }
        return SoftmaxBlockTail(b, vote, pack, scoreTiles);
    }

    /// <summary>
    /// The first half of <see cref="SoftmaxPtx"/> for a max shared between warpgroups: masks the scores and leaves each row's
    /// scaled tile max in the kernel's registers xt0/xt1. Operands as <see cref="SoftmaxPtx"/>'s.
    /// </summary>
    internal static string RowMaxPtx(int scoreTiles)
    {
        var b = SoftmaxBlockHead(scoreTiles);
        for (int row = 0; row < 2; row++)
            MaskAndMax(b, row, scoreTiles, $"xt{row}");
        return b.Append('}').ToString();
    }

    /// <summary>
    /// The second half of <see cref="SoftmaxPtx"/>, from the tile maxima in xt0/xt1 (this warpgroup's and the other's
    /// combined): the kept max, P, the sums, the vote. Operand %0: the log2 score scale.
    /// </summary>
    internal static string SoftmaxFromRowMaxPtx(bool vote, int scoreTiles, bool pack)
    {
        var b = SoftmaxBlockHead(scoreTiles);
        for (int row = 0; row < 2; row++)
        {
            b.Append($"mov.f32 m, xt{row}; ");
            SoftmaxFromMax(b, row, scoreTiles, "%0");
        }
        return SoftmaxBlockTail(b, vote, pack, scoreTiles);
    }

    private static StringBuilder SoftmaxBlockHead(int scoreTiles) =>
        new($"{{ .reg .f32 m, r, u, base, nbase, t<{scoreTiles}>; .reg .pred q, moved<2>; ");

    private static string SoftmaxBlockTail(StringBuilder b, bool vote, bool pack, int scoreTiles)
    {
        if (pack)
            b.Append(PackPtx(scoreTiles));
        if (vote)
            b.Append("or.pred q, moved0, moved1; vote.sync.any.pred xmoved, q, -1; ");
        return b.Append('}').ToString();
    }

    /// <summary>The scores of row g (<paramref name="row"/> 0) or g + 8 in this thread's accumulator registers.</summary>
    private static int[] RowScores(int row, int scoreTiles)
    {
        var scores = new int[scoreTiles * 2];
        for (int nt = 0; nt < scoreTiles; nt++)
        {
            scores[2 * nt] = 4 * nt + 2 * row;
            scores[2 * nt + 1] = 4 * nt + 2 * row + 1;
        }
        return scores;
    }

    /// <summary>Masks a row's scores (operand %row: keys visible from this thread's first column) and leaves the quad's scaled max (operand %2) in <paramref name="max"/>.</summary>
    private static void MaskAndMax(StringBuilder b, int row, int scoreTiles, string max)
    {
        int[] scores = RowScores(row, scoreTiles);
        foreach (int i in scores)
        {
            int column = 8 * (i / 4) + (i & 1);
            b.Append($"setp.gt.s32 q, %{row}, {column}; selp.f32 xs{i}, xs{i}, {NegativeInfinity}, q; ");
        }
        Tree(b, "max.f32", scores, max);
        b.Append($"shfl.sync.bfly.b32 u, {max}, 1, 31, -1; max.f32 {max}, {max}, u; shfl.sync.bfly.b32 u, {max}, 2, 31, -1; max.f32 {max}, {max}, u; ");
        b.Append($"mul.f32 {max}, {max}, %2; ");
    }

    /// <summary>From the row's tile max in m: the lazily kept max, the rescale factor xr, P = 2^(s·scale − m) in place, the running sum.</summary>
    private static void SoftmaxFromMax(StringBuilder b, int row, int scoreTiles, string scale)
    {
        int[] scores = RowScores(row, scoreTiles);
        b.Append($"add.f32 u, xm{row}, {MaxHeadroom}; setp.gt.f32 moved{row}, m, u; selp.f32 m, m, xm{row}, moved{row}; ");
        b.Append($"setp.eq.f32 q, m, {NegativeInfinity}; selp.f32 base, 0f00000000, m, q; neg.f32 nbase, base; ");
        b.Append($"sub.f32 r, xm{row}, base; ex2.approx.ftz.f32 r, r; selp.f32 xr{row}, r, 0f3F800000, moved{row}; mov.f32 xm{row}, m; ");
        foreach (int i in scores)
            b.Append($"fma.rn.f32 xs{i}, xs{i}, {scale}, nbase; ex2.approx.ftz.f32 xs{i}, xs{i}; ");
        Tree(b, "add.f32", scores, "u");
        b.Append($"fma.rn.f32 xl{row}, xl{row}, xr{row}, u; ");
    }

    /// <summary>
    /// <paramref name="result"/> = the <paramref name="op"/> of the scores <paramref name="inputs"/> as a pairwise tree
    /// through the block's t registers (a power-of-two count), so each level's operations are independent.
    /// </summary>
    private static void Tree(StringBuilder b, string op, int[] inputs, string result)
    {
        for (int j = 0; j < inputs.Length / 2; j++)
            b.Append(inputs.Length == 2 ? $"{op} {result}, xs{inputs[0]}, xs{inputs[1]}; " : $"{op} t{j}, xs{inputs[2 * j]}, xs{inputs[2 * j + 1]}; ");
        for (int width = inputs.Length / 2; width > 1; width /= 2)
            for (int j = 0; j < width / 2; j++)
                b.Append(width == 2 ? $"{op} {result}, t0, t1; " : $"{op} t{j}, t{2 * j}, t{2 * j + 1}; ");
    }

    /// <summary>P as bf16 A fragments: the S accumulator layout of 16 keys is the k16 A layout.</summary>
    internal static string PackPtx(int scoreTiles = ScoreTiles) =>
        Repeat(scoreTiles * 2, i => $"cvt.rn.bf16x2.f32 xp{i}, xs{2 * i + 1}, xs{2 * i};") + " ";

    /// <summary>
    /// <see cref="RescalePtx"/> skipped by a uniform branch inside the block unless the softmax's vote set xmoved. The label is
    /// private to the kernel's one copy of this block, so the flag never leaves PTX (an ILGPU <c>out</c> operand would pass it
    /// through a local-memory slot).
    /// </summary>
    internal static string GuardedRescalePtx(int outTiles) =>
        "{ @!xmoved bra.uni XO_KEPT; " + RescalePtx(outTiles) + " XO_KEPT: }";

    /// <summary>O of rows g and g + 8 times their rescale factors (xr), a block of its own.</summary>
    internal static string RescalePtx(int outTiles)
    {
        var b = new StringBuilder();
        for (int row = 0; row < 2; row++)
            for (int nt = 0; nt < outTiles; nt++)
                b.Append($"mul.f32 xo{4 * nt + 2 * row}, xo{4 * nt + 2 * row}, xr{row}; mul.f32 xo{4 * nt + 2 * row + 1}, xo{4 * nt + 2 * row + 1}, xr{row}; ");
        return "{ " + b + "}";
    }

    /// <summary>cp.async of one key tile into a stage: K rows [nope | rope] then V rows, 16-byte chunks; keys past <c>end</c> are zero-filled.</summary>
    private static void EmitCopy(SourceWriter w, MlaShapeSpec s, string start, string stage)
    {
        int nopeChunks = s.NopeHeadDim / 8;
        w.Line("{");
        w.Line($"    int first = {start};");
        w.Line($"    long into = {stage};");
        EmitChunks(w, "K", s.QHeadDim / 8, "into + (long)row * XaKStride * 4 + column * 16",
            $"long nope = p.KeyNopeAddress + ((headKeys + first + row) * NopeHeadDim + column * 8) * 2L;",
            $"long rope = column >= {nopeChunks} && inside ? p.PagesAddress + ((long)p.KeyCacheRow[keyStart + first + row] * CacheRowValues + LatentRank + (column - {nopeChunks}) * 8) * 2L : 0L;",
            $"long source = !inside ? p.KeyNopeAddress : column < {nopeChunks} ? nope : rope;");
        EmitChunks(w, "V", s.VHeadDim / 8, "into + XaVBytes + (long)row * XaVStride * 4 + column * 16",
            "long source = p.ValueAddress + (inside ? ((headKeys + first + row) * VHeadDim + column * 8) * 2L : 0L);");
        w.Line("    global::ILGPU.Runtime.Cuda.CudaAsm.Emit(\"cp.async.commit_group;\");");
        w.Line("}");
    }

    /// <summary>
    /// The copies of one operand: every thread takes chunks tid, tid + 128, ... of the tile's key rows × <paramref name="chunksPerRow"/>;
    /// <paramref name="sourceLines"/> set <c>source</c> from <c>row</c>, <c>column</c> and <c>inside</c>.
    /// </summary>
    private static void EmitChunks(SourceWriter w, string operand, int chunksPerRow, string target, params string[] sourceLines)
    {
        int total = Keys * chunksPerRow;
        for (int i = 0; i * Threads < total; i++)
        {
            string chunk = $"tid + {i * Threads}";
            bool guard = (i + 1) * Threads > total;
            w.Line(guard ? $"    if ({chunk} < {total})" : $"    // {operand} chunk");
            w.Line("    {");
            w.Line($"        int row = ({chunk}) / {chunksPerRow};");
            w.Line($"        int column = ({chunk}) - row * {chunksPerRow};");
            w.Line("        bool inside = first + row < end;");
            foreach (string line in sourceLines)
                w.Line("        " + line);
            w.Line($"        {Asm}(\"{CopyAsync("xa_tiles")}\", {target}, source, inside ? 16 : 0);");
            w.Line("    }");
        }
    }
}
