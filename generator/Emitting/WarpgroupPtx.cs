using MlaGen.Generator.Helpers;
using static MlaGen.Generator.Emitting.PtxText;

namespace MlaGen.Generator.Emitting;

/// <summary>
/// What the two warpgroup (wgmma, sm_90a) kernels share: operands in 128-byte-swizzled boxes of 64 bf16 values (a row's
/// 128 bytes in one shared row, 16-byte piece j of row r at r·128 + (j ^ r % 8)·16), their matrix descriptors, and the
/// kernel's preamble (named registers, wgmma's scale-d predicates, the dynamic shared block aligned to a swizzle atom).
/// </summary>
internal static class WarpgroupPtx
{
    public const int BoxValues = 64; // bf16 values in one 128-byte swizzled row
    public const int BoxRowBytes = 128;
    public const int SwizzleAtomBytes = 8 * BoxRowBytes; // the swizzle repeats every 8 rows; atoms must be 1024-byte aligned

    /// <summary>Descriptor bits 62-63 = 1: the 128-byte swizzle. The other fields are bytes >> 4: LBO at bit 16, SBO at bit 32.</summary>
    private const ulong Swizzle128 = 1UL << 62;

    /// <summary>A K-major operand in boxes (A, or B = keys × dims): SBO one atom (the next 8 rows); a k-step is +32 bytes in the row.</summary>
    public const ulong KMajorDescriptor = Swizzle128 | (1UL << 16) | ((ulong)SwizzleAtomBytes >> 4) << 32;

    /// <summary>An MN-major B (keys × dims read transposed): LBO one box of <paramref name="boxBytes"/> (the next 64 columns), SBO one atom (the next 8 keys).</summary>
    public static ulong MnMajorDescriptor(int boxBytes) => Swizzle128 | ((ulong)boxBytes >> 4) << 16 | ((ulong)SwizzleAtomBytes >> 4) << 32;

    /// <summary>
    /// The kernel's first statements: the named registers <paramref name="registers"/> and the scale-d predicates xwz (false:
    /// the first MMA overwrites D) and xwa (true: accumulate), before any branch since ILGPU pastes inline PTX unbraced; then
    /// the dynamic block (<paramref name="sharedBytes"/> at launch) as <c>sharedStart</c> and, aligned to a swizzle atom,
    /// <paramref name="aligned"/>.
    /// </summary>
    public static void EmitPreamble(SourceWriter w, string registers, string sharedBytes, string aligned)
    {
        w.Line("// Named registers first, before any branch (ILGPU pastes inline PTX unbraced).");
        w.Line($"{Asm}(\"{registers} .reg .pred xwz, xwa;\");");
        w.Line($"{Asm}(\"{{ .reg .u32 z; mov.u32 z, 0; setp.ne.u32 xwz, z, 0; setp.eq.u32 xwa, z, 0; }}\"); // wgmma scale-d: false overwrites D, true accumulates");
        w.Line($"// The dynamic block ({sharedBytes} at launch): ILGPU declares it as __dyn_shared_alloca once the kernel asks for it.");
        w.Line("global::ILGPU.ArrayView<byte> dynamicShared = global::ILGPU.SharedMemory.GetDynamic<byte>();");
        w.Line($"{Asm}(\"mov.u64 %0, __dyn_shared_alloca;\", out long sharedStart);");
        w.Line($"long {aligned} = (sharedStart + {SwizzleAtomBytes - 1}) & ~{SwizzleAtomBytes - 1}L; // the swizzle is a function of address bits 4-9");
    }
}
