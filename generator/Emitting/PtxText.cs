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

    /// <summary>"x{first},x{first+1},…" for <paramref name="count"/> named registers.</summary>
    public static string Registers(string name, int first, int count) =>
        string.Join(",", Enumerable.Range(first, count).Select(i => name + i));
}
