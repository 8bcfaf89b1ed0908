using System.Linq;
using System.Text;

namespace MlaGen.Generator.Emitting;

/// <summary>The inline-PTX pieces the tensor-core emitters share.</summary>
internal static class PtxText
{
    /// <summary>ILGPU's inline-PTX entry point (inputs become registers; only the first argument may be <c>out</c>).</summary>
    public const string Asm = "global::ILGPU.Runtime.Cuda.CudaAsm.Emit";

    /// <summary>bf16 × bf16 → fp32, one 16 × 8 × 16 tile per warp.</summary>
    public const string Mma = "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32";

    /// <summary>One 16-byte cp.async into the kernel's PTX-declared shared array: %0 byte offset, %1 source, %2 bytes (0 fills zeros).</summary>
    public static string CopyAsync(string sharedArray) =>
        $"{{ .reg .u64 d; mov.u64 d, {sharedArray}; add.u64 d, d, %0; cp.async.cg.shared.global [d], [%1], 16, %2; }}";

    /// <summary><paramref name="count"/> PTX statements, space-separated.</summary>
    public static string Repeat(int count, System.Func<int, string> statement)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < count; i++)
            sb.Append(statement(i)).Append(i + 1 < count ? " " : "");
        return sb.ToString();
    }

    /// <summary>
    /// The first tile chunk this thread copies in the expanded wgmma kernel (the decode kernel copies swizzled boxes instead) (core-matrix order: chunk c is row c % 8 of its 8-row
    /// group, column (c / 8) % chunks; later passes add the CTA's thread count). A warp copies 32 consecutive chunks (8 rows × 4 columns); the lanes are permuted so that each quarter-warp,
    /// which the memory pipe serves together, takes 4 rows × 2 adjacent columns: 4 whole 32-byte sectors (8 rows × 1 column
    /// would touch 8 half-used sectors, and the cp.async writes to shared memory follow the sectors).
    /// </summary>
    public const string CopyChunk = "(tid & ~31) + (((lane >> 4) * 2 + ((lane >> 2) & 1)) * 8 + ((lane >> 3) & 1) * 4 + (lane & 3))";

    /// <summary>"x{first},x{first+1},…" for <paramref name="count"/> named registers.</summary>
    public static string Registers(string name, int first, int count) =>
        string.Join(",", Enumerable.Range(first, count).Select(i => name + i));
}
