using System.Text;
using MlaGen.Generator.Helpers;
using MlaGen.Generator.Model;
using static MlaGen.Generator.Emitting.KernelEmitter;
using static MlaGen.Generator.Emitting.PtxText;
using static MlaGen.Generator.Helpers.LiteralFormat;

namespace MlaGen.Generator.Emitting;

/// <summary>
/// The tensor-core kv_b_proj expansion (CUDA only) of the expanded attention form: a bf16 GEMM
/// <c>[keys, latent] · [latent, H·(nope + v)]</c> whose A rows (the keys' c_kv) are gathered from the latent cache.
/// One CTA of 4 warps computes 64 keys × 128 kv_b_proj rows (outputs); the warps form a 2 × 2 grid of 32 keys × 64
/// outputs, i.e. 2 m-tiles × 8 n-tiles of <c>mma.sync.m16n8k16</c> with the 64 fp32 accumulators in named PTX registers.
/// The reduction over the latent runs in stages of 32 columns, cp.async double-buffered into a PTX-declared static
/// shared array (rows padded from 64 to 80 bytes, which makes every ldmatrix phase hit 8 distinct 16-byte bank groups).
/// The epilogue rounds accumulator pairs with <c>cvt.rn.bf16x2.f32</c> and stores them head-major into K_nope or V.
/// </summary>
internal static class KeyValueExpandEmitter
{
    private const string Ldmatrix = "ldmatrix.sync.aligned.m8n8.x4.shared.b16";

    /// <summary>Keys per CTA (the A tile's rows).</summary>
    public const int Keys = 64;

    /// <summary>kv_b_proj rows per CTA (the B tile's rows, the output columns).</summary>
    public const int Outputs = 128;

    /// <summary>Latent columns per cp.async stage: two m16n8k16 k-steps.</summary>
    public const int Stage = 32;

    public const int Threads = 128;

    /// <summary>Shared row stride in bytes: 64 bytes of data + 16 of padding.</summary>
    public const int Stride = Stage * 2 + 16;

    public const int ABytes = Keys * Stride;
    public const int BufferBytes = (Keys + Outputs) * Stride;

    /// <summary>mma.sync instructions in the kernel's PTX: one stage's, per warp (the stage loop is not unrolled).</summary>
    public const int MmaPerStage = Stage / 16 * 2 * 8;

    /// <summary>Epilogue reads of named registers: one packed bf16 pair per (m-tile, n-tile, row half).</summary>
    public const int EpilogueReads = 2 * 8 * 2;

    public static void Emit(SourceWriter w, MlaShapeSpec s)
    {
        int outputRows = s.Heads * (s.NopeHeadDim + s.VHeadDim);
        w.Line("// Tensor-core kv_b_proj expansion (CUDA): tile shape.");
        w.Line($"public const int KvKeys = {Int(Keys)}; // keys per CTA");
        w.Line($"public const int KvOutputs = {Int(Outputs)}; // kv_b_proj rows (outputs) per CTA");
        w.Line($"public const int KvThreads = {Int(Threads)}; // 4 warps, 2 x 2: each 32 keys x 64 outputs");
        w.Line($"public const int KvStage = {Int(Stage)}; // latent columns per cp.async stage");
        w.Line($"public const int KvStages = {Int(s.LatentRank / Stage)}; // LatentRank / KvStage");
        w.Line($"public const int KvStride = {Int(Stride)}; // shared row stride in bytes: +16 spreads ldmatrix rows over banks");
        w.Line($"public const int KvABytes = {Int(ABytes)}; // one buffer's key rows; its kv_b_proj rows follow");
        w.Line($"public const int KvBufferBytes = {Int(BufferBytes)};");
        w.Line($"public const int KvOutputRows = {Int(outputRows)}; // H · (nope + v)");
        w.Line($"public const int KvOutputTiles = {Int(outputRows / Outputs)};");
        w.Line();
        w.Line("/// <summary>Groups (CTAs of <see cref=\"KvThreads\"/>) of <see cref=\"KeyValueExpandTensorCoreKernel\"/> for <paramref name=\"keys\"/> keys.</summary>");
        w.Line("public static int KeyValueExpandGroups(int keys) => (keys + KvKeys - 1) / KvKeys * KvOutputTiles;");
        w.Line();
        EmitKernel(w, s);
    }

    private static void EmitKernel(SourceWriter w, MlaShapeSpec s)
    {
        w.Line("/// <summary>");
        w.Line("/// K_nope and V of every key through kv_b_proj: one CTA per (64-key tile, 128-output tile), the key tile varying");
        w.Line("/// fastest so that consecutive CTAs share a weight tile (see KeyValueExpandEmitter).");
        w.Line("/// </summary>");
        w.Open($"public static void KeyValueExpandTensorCoreKernel({K}.KeyValueExpandParams p)");
        w.Line("// Named accumulators and the two stage buffers first, before any branch: ILGPU pastes inline PTX unbraced.");
        w.Line($"{Asm}(\".reg .f32 acc<64>; .shared .align 16 .b8 kv_tiles[{2 * BufferBytes}];\");");
        w.Line("int tid = global::ILGPU.Group.IdxX;");
        w.Line("int warp = tid >> 5;");
        w.Line("int lane = tid & 31;");
        w.Line("int g = lane >> 2; // mma group: rows g and g + 8");
        w.Line("int t = lane & 3; // thread in group: columns 2t, 2t + 1");
        w.Line("int keyTiles = (p.Keys + KvKeys - 1) / KvKeys;");
        w.Line("int outTile = global::ILGPU.Grid.IdxX / keyTiles;");
        w.Line("int keyBase = (global::ILGPU.Grid.IdxX - outTile * keyTiles) * KvKeys;");
        w.Line("int outBase = outTile * KvOutputs;");
        w.Line();
        w.Line("// cp.async sources: thread tid copies 16-byte chunk tid & 3 of key rows tid >> 2 (+32) and weight rows tid >> 2 (+32, +64, +96).");
        w.Line("// Keys past p.Keys are zero-filled (source size 0, a valid dummy address) and never read from KeyCacheRow.");
        w.Line("int chunkRow = tid >> 2;");
        w.Line("long chunkBytes = (tid & 3) * 16L;");
        w.Line("long into = (long)chunkRow * KvStride + chunkBytes;");
        for (int i = 0; i < 2; i++)
        {
            w.Line($"bool keyInside{i} = keyBase + chunkRow + {32 * i} < p.Keys;");
            w.Line($"long keySource{i} = p.PagesAddress + (keyInside{i} ? (long)p.KeyCacheRow[keyBase + chunkRow + {32 * i}] * CacheRowBytes + chunkBytes : 0L);");
            w.Line($"int keySize{i} = keyInside{i} ? 16 : 0;");
            w.Line($"long keyStep{i} = keyInside{i} ? KvStage * 2L : 0L;");
        }
        w.Line("long weightSource = p.KvUpAddress + (long)(outBase + chunkRow) * (LatentRank * 2L) + chunkBytes;");
        w.Line();
        w.Line("// ldmatrix lane addresses (bytes into a buffer): lane l names row l % 8 of 8x8 matrix l / 8.");
        w.Line("// A (keys x latent): matrices = (rows 0-7 | 8-15) x (k 0-7 | 8-15), column-major order: a0..a3 of the m16k16 fragment.");
        w.Line("// B (outputs x latent): matrices = (outputs 0-7: k 0-7 | 8-15), (outputs 8-15: k 0-7 | 8-15): b0, b1 of two n-tiles.");
        w.Line("int matrix = lane >> 3;");
        w.Line("long aLane = (long)(((warp & 1) * 32 + (lane & 7) + (matrix & 1) * 8) * KvStride + (matrix >> 1) * 16);");
        w.Line("long bLane = KvABytes + (long)(((warp >> 1) * 64 + (lane & 7) + (matrix >> 1) * 8) * KvStride + (matrix & 1) * 16);");
        w.Line();
        w.Line($"{Asm}(\"{Repeat(64, i => $"mov.f32 acc{i}, 0f00000000;")}\");");
        EmitCopy(w, "0L");
        w.Line("long buffer = 0;");
        w.Open("for (int stage = 0; stage < KvStages; stage++)");
        w.Line($"{Asm}(\"cp.async.wait_group 0;\");");
        w.Line("global::ILGPU.Group.Barrier(); // this stage has landed for everyone, and nobody still reads the other buffer");
        w.Line("if (stage + 1 < KvStages)");
        w.Open();
        w.Line("keySource0 += keyStep0;");
        w.Line("keySource1 += keyStep1;");
        w.Line("weightSource += KvStage * 2L;");
        EmitCopy(w, "KvBufferBytes - buffer");
        w.Close();
        w.Line("// Two k-steps: per k-step 2 ldmatrix.x4 of A (2 m-tiles), 4 of B (8 n-tiles), 16 mma.");
        w.Line($"{Asm}(\"{StageAsm()}\", buffer + aLane, buffer + bLane);");
        w.Line("buffer = KvBufferBytes - buffer;");
        w.Close();
        w.Line();
        EmitEpilogue(w, s);
        w.Close();
        w.Line();
    }

    /// <summary>One stage's cp.async: 2 key-row chunks and 4 weight-row chunks per thread, one commit group.</summary>
    private static void EmitCopy(SourceWriter w, string buffer)
    {
        string copy = CopyAsync("kv_tiles");
        w.Line("{");
        w.Line($"    long at = {buffer} + into;");
        for (int i = 0; i < 2; i++)
            w.Line($"    {Asm}(\"{copy}\", at + {32 * i * Stride}L, keySource{i}, keySize{i});");
        for (int i = 0; i < 4; i++)
            w.Line($"    {Asm}(\"{copy}\", at + {ABytes + 32 * i * Stride}L, weightSource + {32 * i} * (LatentRank * 2L), 16);");
        w.Line($"    {Asm}(\"cp.async.commit_group;\");");
        w.Line("}");
    }

    /// <summary>The PTX of one stage: %0 = A lane address, %1 = B lane address (bytes into kv_tiles).</summary>
    private static string StageAsm()
    {
        var sb = new StringBuilder();
        sb.Append("{ .reg .u64 a; .reg .u64 b; .reg .b32 fa<8>; .reg .b32 fb<16>; mov.u64 a, kv_tiles; add.u64 b, a, %1; add.u64 a, a, %0; ");
        for (int ks = 0; ks < Stage / 16; ks++)
        {
            int k = ks * 32; // 16 bf16 columns
            for (int mt = 0; mt < 2; mt++)
                sb.Append($"{Ldmatrix} {{fa{4 * mt},fa{4 * mt + 1},fa{4 * mt + 2},fa{4 * mt + 3}}}, [a+{mt * 16 * Stride + k}]; ");
            for (int np = 0; np < 4; np++)
                sb.Append($"{Ldmatrix} {{fb{4 * np},fb{4 * np + 1},fb{4 * np + 2},fb{4 * np + 3}}}, [b+{np * 16 * Stride + k}]; ");
            for (int mt = 0; mt < 2; mt++)
            {
                for (int nt = 0; nt < 8; nt++)
                {
                    int c = mt * 32 + nt * 4;
                    string acc = $"{{acc{c},acc{c + 1},acc{c + 2},acc{c + 3}}}";
                    sb.Append($"{Mma} {acc}, {{fa{4 * mt},fa{4 * mt + 1},fa{4 * mt + 2},fa{4 * mt + 3}}}, {{fb{2 * nt},fb{2 * nt + 1}}}, {acc}; ");
                }
            }
        }
        sb.Append('}');
        return sb.ToString();
    }

    /// <summary>
    /// Accumulator c of (m-tile mt, n-tile nt) is acc[32·mt + 4·nt + c]: c = 0, 1 row g, columns 2t, 2t + 1; c = 2, 3 row g + 8.
    /// Each n-tile's 8 outputs lie in one head's K_nope or V (nope and v are multiples of 8).
    /// </summary>
    private static void EmitEpilogue(SourceWriter w, MlaShapeSpec s)
    {
        w.Line("// Round pairs to bf16 and store them head-major: [H, Keys, nope] and [H, Keys, v]; keys past p.Keys are not written.");
        w.Line("global::ILGPU.ArrayView<uint> keyNope = p.KeyNope.Cast<uint>();");
        w.Line("global::ILGPU.ArrayView<uint> value = p.Value.Cast<uint>();");
        w.Line("int rowKey = keyBase + (warp & 1) * 32 + g;");
        w.Line("int warpOut = outBase + (warp >> 1) * 64;");
        for (int nt = 0; nt < 8; nt++)
        {
            w.Open();
            w.Line($"int o = warpOut + {8 * nt};");
            w.Line("int head = o / KvUpRowsPerHead;");
            w.Line("int d = o - head * KvUpRowsPerHead + 2 * t;");
            w.Line("bool isKey = d < NopeHeadDim;");
            w.Line("long headBase = (long)head * p.Keys;");
            w.Line("global::ILGPU.ArrayView<uint> dest = isKey ? keyNope : value;");
            w.Line("int dim = isKey ? NopeHeadDim : VHeadDim;");
            w.Line("int column = isKey ? d : d - NopeHeadDim;");
            for (int mt = 0; mt < 2; mt++)
            {
                for (int half = 0; half < 2; half++)
                {
                    int c = mt * 32 + nt * 4 + 2 * half;
                    string v = $"v{mt}{half}";
                    int row = mt * 16 + half * 8;
                    w.Line($"{Asm}(\"cvt.rn.bf16x2.f32 %0, acc{c + 1}, acc{c};\", out uint {v});");
                    w.Line($"if (rowKey + {row} < p.Keys)");
                    w.Line($"    dest[((headBase + rowKey + {row}) * dim + column) >> 1] = {v};");
                }
            }
            w.Close();
        }
    }
}
