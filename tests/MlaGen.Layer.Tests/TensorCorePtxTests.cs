using System.Linq;
using System.Text.RegularExpressions;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using Xunit;
using Xunit.Abstractions;

namespace MlaGen.Layer.Tests;

/// <summary>
/// The tensor-core kernels compiled to PTX here, without a GPU, the way ILGPU compiles them on one (SM_90): proof in CI
/// that they compile, use mma.sync, keep accumulators in registers and spill nothing to local memory.
/// The GPU benchmark checks their results against the float64 reference.
/// </summary>
public class TensorCorePtxTests
{
    private readonly ITestOutputHelper _output;

    public TensorCorePtxTests(ITestOutputHelper output) => _output = output;

    internal static string CompileToPtx(System.Reflection.MethodInfo kernel) => CompileToPtxWithEntry(kernel).Ptx;

    /// <summary>The PTX and the name of its entry (ILGPU's <c>CompiledKernel.Name</c>, which the driver looks up).</summary>
    internal static (string Ptx, string Entry) CompileToPtxWithEntry(System.Reflection.MethodInfo kernel)
    {
        using var context = Context.Create(b => b.Cuda().EnableAlgorithms());
        using var backend = new PTXBackend(context, new CudaCapabilityContext(CudaArchitecture.SM_90), CudaArchitecture.SM_90,
            CudaInstructionSet.ISA_80, null!);
        var compiled = (PTXCompiledKernel)backend.Compile(EntryPointDescription.FromExplicitlyGroupedKernel(kernel), new KernelSpecialization());
        return (compiled.PTXAssembly, compiled.Name);
    }

    [Fact]
    public void AttentionKernelCompilesToMmaWithoutLocalMemory()
    {
        Assert.True(SmallQLoraAttention.HasTensorCoreDecode);
        var ptx = CompileToPtx(typeof(SmallQLoraAttention.MlaKernels).GetMethod(nameof(SmallQLoraAttention.MlaKernels.TensorCoreAttentionKernel))!);
        int mma = Regex.Matches(ptx, @"mma\.sync\.aligned\.m16n8k16\.row\.col\.f32\.bf16\.bf16\.f32").Count;
        _output.WriteLine($"{ptx.Length} chars, {mma} mma");
        // Q·Kᵀ: 2 n-tiles per k-step of this warp's share (ceil(80 / 16 / 4) = 2 steps); P·V: latent / 32 n-tiles per warp.
        int kPerWarp = (SmallQLoraAttention.CacheRowValues / 16 + 3) / 4;
        Assert.Equal(2 * kPerWarp + SmallQLoraAttention.LatentRank / 32, mma);
        Assert.Contains(".reg .f32 s<8>;", ptx);
        Assert.Contains("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16", ptx);
        Assert.Contains("cp.async.cg.shared.global", ptx);
        Assert.Contains(".shared .align 16 .b8 mla_tiles[", ptx);
        // Reading a named register back into C# goes through a 4-byte .local slot per value (ILGPU's `out` operands);
        // nothing else may: 8 score reads per tile and 4 per P·V n-tile in the epilogue.
        int slots = Regex.Matches(ptx, @"\.local \.align 4 \.b8 __local_depot\d+\[4\];").Count;
        Assert.Equal(8 + SmallQLoraAttention.LatentRank / 32 * 4, slots);
        Assert.Equal(slots, Regex.Matches(ptx, @"\.local \.align").Count);
        Assert.Contains("bar.sync", ptx);
    }

    [Fact]
    public void CombineKernelCompiles()
    {
        var ptx = CompileToPtx(typeof(SmallQLoraAttention.MlaKernels).GetMethod(nameof(SmallQLoraAttention.MlaKernels.TensorCoreCombineKernel))!);
        Assert.Contains(".entry", ptx);
        Assert.DoesNotContain(".local", ptx);
    }

    [Fact]
    public void ExpandedAttentionKernelKeepsTheInnerLoopInRegisters()
    {
        Assert.True(SmallQLoraAttention.HasTensorCorePrefill);
        var ptx = CompileToPtx(typeof(SmallQLoraAttention.MlaKernels).GetMethod(nameof(SmallQLoraAttention.MlaKernels.ExpandedAttentionTensorCoreKernel))!);
        int mma = Regex.Matches(ptx, @"mma\.sync\.aligned\.m16n8k16\.row\.col\.f32\.bf16\.bf16\.f32").Count;
        _output.WriteLine($"{ptx.Length} chars, {mma} mma");
        // Per 32-key tile: four 8-key n-tiles per 16-wide step of q·k, and two 16-key steps of P·V over v/8 n-tiles.
        int qSteps = SmallQLoraAttention.QHeadDim / 16, outTiles = SmallQLoraAttention.VHeadDim / 8;
        Assert.Equal(4 * qSteps + 2 * outTiles, mma);
        Assert.Contains("ex2.approx.ftz.f32", ptx);
        Assert.Contains("shfl.sync.bfly.b32", ptx);
        Assert.Contains("cvt.rn.bf16x2.f32", ptx);
        Assert.Contains("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16", ptx);
        Assert.Contains(".shared .align 16 .b8 xa_tiles[", ptx);
        AssertLazyRescale(ptx, outTiles, guarded: false);
        // Only the epilogue reads named registers back into C#, as 8-byte pairs: max/sum of 2 rows. O leaves from its
        // registers: one 8-byte store per row and n-tile.
        int slots = Regex.Matches(ptx, @"\.local \.align 8 \.b8 __local_depot\d+\[8\];").Count;
        Assert.Equal(2, slots);
        Assert.Equal(2 * outTiles, Regex.Matches(ptx, @"st\.global\.v2\.f32").Count);
        Assert.Equal(slots, Regex.Matches(ptx, @"\.local \.align").Count);
    }

    [Fact]
    public void WarpgroupAttentionKernelIssuesWgmmaFromSharedMemoryDescriptors()
    {
        // The swizzled boxes need nope, rope and v in whole 64-value boxes: DeepSeek's shape has them, the small test shape not.
        Assert.Null(typeof(SmallQLoraAttention.MlaKernels).GetMethod("ExpandedAttentionWarpgroupKernel"));
        var (ptx, entry) = CompileToPtxWithEntry(typeof(ExpandPtxDeepSeekShape.MlaKernels).GetMethod(nameof(ExpandPtxDeepSeekShape.MlaKernels.ExpandedAttentionWarpgroupKernel))!);
        int qSteps = ExpandPtxDeepSeekShape.QHeadDim / 16, outTiles = ExpandPtxDeepSeekShape.VHeadDim / 8, keys = ExpandPtxDeepSeekShape.MlaKernels.XwKeys;
        int scores = Regex.Matches(ptx, $@"wgmma\.mma_async\.sync\.aligned\.m64n{keys}k16\.f32\.bf16\.bf16 [^;]*, 1, 1, 0;").Count;
        int values = Regex.Matches(ptx, $@"wgmma\.mma_async\.sync\.aligned\.m64n{ExpandPtxDeepSeekShape.VHeadDim}k16\.f32\.bf16\.bf16 [^;]*, 1, 1, 1;").Count;
        _output.WriteLine($"{ptx.Length} chars, {scores} Q·Kᵀ and {values} P·V wgmma");
        // One wgmma per 16-wide k-step of q·k (K-major B); one per 16 keys of P·V (transposed V: the last immediate is 1), twice:
        // in the loop for the previous tile (under this tile's softmax) and once after it for the last tile.
        Assert.Equal(qSteps, scores);
        Assert.Equal(2 * keys / 16, values);
        Assert.Equal(qSteps + 2 * keys / 16, Regex.Matches(ptx, @"wgmma\.mma_async").Count);
        // The softmax runs between "S is ready" (wait 1: the previous P·V may still run) and "P·V is done" (wait 0).
        // (The loop body is found from its one wait_group 1: ILGPU may lay the blocks after the loop out before it.)
        int waitScores = ptx.IndexOf("wgmma.wait_group.sync.aligned 1;", System.StringComparison.Ordinal);
        int softmax = ptx.IndexOf("ex2.approx.ftz.f32", System.StringComparison.Ordinal);
        int waitValues = ptx.IndexOf("wgmma.wait_group.sync.aligned 0;", softmax, System.StringComparison.Ordinal);
        int pack = ptx.IndexOf("cvt.rn.bf16x2.f32 xp0", System.StringComparison.Ordinal);
        Assert.Single(Regex.Matches(ptx, @"wgmma\.wait_group\.sync\.aligned 1;"));
        Assert.True(0 < waitScores && waitScores < softmax && softmax < waitValues && waitValues < pack, "softmax between the two waits, P packed after P·V is done");
        Assert.Contains("wgmma.fence.sync.aligned;", ptx);
        Assert.Contains("fence.proxy.async.shared::cta;", ptx);
        Assert.Contains($"cp.async.wait_group {ExpandPtxDeepSeekShape.MlaKernels.XwStages - 3};", ptx);
        // Each thread copies 16 bytes of every 64-value box of a key row: box b at +128·b of its source row (nope: 2 boxes,
        // rope: 1 from the cache row, v: 2) and at +b·64 keys·128 B in the stage (the swizzled layout both descriptors name).
        var offsets = Regex.Matches(ptx, @"cp\.async\.cg\.shared\.global \[\s*%rd\d+\+(\d+)\], \[\s*%rd\d+\+(\d+)\], 16")
            .Select(m => (Shared: int.Parse(m.Groups[1].Value), Global: int.Parse(m.Groups[2].Value))).Distinct().Order().ToArray();
        int box = keys * 128;
        Assert.Equal(new[] { (0, 0), (box, 128), (2 * box, 0), (3 * box, 0), (4 * box, 128) }, offsets);
        Assert.Equal(1L, (long)((ulong)ExpandPtxDeepSeekShape.MlaKernels.XwKeyDescriptor >> 62));
        Assert.Equal(1L, (long)((ulong)ExpandPtxDeepSeekShape.MlaKernels.XwValueDescriptor >> 62));
        // The ring lives in the dynamic block (the launch asks for XwSharedBytes; the loader raises the function's limit).
        Assert.Matches(@"\.extern \.shared \.align \d+ \.b8 __dyn_shared_alloca\[\];", ptx);
        Assert.DoesNotMatch(@"\.shared \.align \d+ \.b8 (?!__dyn_shared_alloca)\w+\[\d+\]", ptx);
        Assert.True(ExpandPtxDeepSeekShape.MlaKernels.XwSharedBytes <= 227 * 1024, "an H100 CTA gets at most 227 KB of shared memory");
        AssertLazyRescale(ptx, outTiles, guarded: true);
        // Only 8-byte reads of PTX values go through local memory: the dynamic block's address once, and the epilogue's row
        // states as in the mma.sync kernel; O leaves from its registers.
        int slots = Regex.Matches(ptx, @"\.local \.align 8 \.b8 __local_depot\d+\[8\];").Count;
        Assert.Equal(1 + 2, slots);
        Assert.Equal(2 * outTiles, Regex.Matches(ptx, @"st\.global\.v2\.f32").Count);
        Assert.Equal(slots, Regex.Matches(ptx, @"\.local \.align").Count);
        // ILGPU writes sm_80, where wgmma does not exist: the loader retargets the module.
        string hopper = MlaGen.Kernels.PtxKernelLoader.WithTarget(ptx, "sm_90a");
        Assert.Contains(".target sm_90a", hopper);
        Assert.Contains(entry, hopper);
    }

    /// <summary>
    /// The online softmax keeps a row's max until a tile's exceeds it by more than 2^8, and O is multiplied by the rows'
    /// rescale factors in one place only, every accumulator once. <paramref name="guarded"/>: that place is skipped by a
    /// uniform branch inside PTX unless a warp vote (one per tile) says a row moved, with no flag through local memory; else
    /// it runs every tile, with no vote (the mma.sync prefill kernel).
    /// </summary>
    internal static void AssertLazyRescale(string ptx, int outTiles, bool guarded)
    {
        Assert.Equal(guarded ? 1 : 0, Regex.Matches(ptx, @"vote\.sync\.any\.pred xmoved, q, -1;").Count);
        Assert.Equal(guarded ? 1 : 0, Regex.Matches(ptx, @"@!xmoved bra\.uni XO_KEPT;").Count);
        Assert.Empty(Regex.Matches(ptx, @"\.local \.align 4 \.b8 __local_depot\d+\[4\];"));
        Assert.Equal(2, Regex.Matches(ptx, @"setp\.gt\.f32 moved[01], m, u;").Count);
        Assert.Equal(2, Regex.Matches(ptx, @"add\.f32 u, xm[01], 0f41000000;").Count);
        var rescaled = Regex.Matches(ptx, @"mul\.f32 xo(\d+), xo\1, xr([01]);").Select(m => int.Parse(m.Groups[1].Value)).ToArray();
        Assert.Equal(Enumerable.Range(0, 4 * outTiles), rescaled.Order());
        Assert.Empty(Regex.Matches(ptx, @"mul\.f32 xo\d+, xo\d+, r;"));
    }
}

/// <summary>The Hopper decode kernel (wgmma, dynamic shared memory) compiled to PTX for DeepSeek's shape, without a GPU.</summary>
public class DecodeWarpgroupPtxTests
{
    private readonly ITestOutputHelper _output;

    public DecodeWarpgroupPtxTests(ITestOutputHelper output) => _output = output;

    [Fact]
    public void DecodeKernelIssuesWgmmaFromDynamicSharedMemory()
    {
        var (ptx, entry) = TensorCorePtxTests.CompileToPtxWithEntry(
            typeof(ExpandPtxDeepSeekShape.MlaKernels).GetMethod(nameof(ExpandPtxDeepSeekShape.MlaKernels.DecodeAttentionWarpgroupKernel))!);
        int steps = ExpandPtxDeepSeekShape.CacheRowValues / 16, keys = ExpandPtxDeepSeekShape.MlaKernels.DwKeys;
        int stepKeys = ExpandPtxDeepSeekShape.MlaKernels.DwStepKeys;
        int scores = Regex.Matches(ptx, $@"wgmma\.mma_async\.sync\.aligned\.m64n{keys}k16\.f32\.bf16\.bf16 [^;]*, 1, 1, 0, 0;").Count;
        int values = Regex.Matches(ptx, $@"wgmma\.mma_async\.sync\.aligned\.m64n{ExpandPtxDeepSeekShape.LatentRank / 2}k16\.f32\.bf16\.bf16 [^;]*, 1, 1, 0, 1;").Count;
        _output.WriteLine($"{ptx.Length} chars, {scores} Q·Kᵀ and {values} P·V wgmma");
        // Each warpgroup: one wgmma per 16-wide k-step of the whole Q·Kᵀ of its tile (A and B by descriptor, both K-major), one
        // per 16 keys of the step's P·V over its half of the latent columns (A = the step's P box, K-major; V transposed).
        Assert.Equal(2 * keys, stepKeys);
        Assert.Equal(steps, scores);
        Assert.Equal(stepKeys / 16, values);
        Assert.Equal(steps + stepKeys / 16, Regex.Matches(ptx, @"wgmma\.mma_async").Count);
        Assert.Contains("fence.proxy.async.shared::cta;", ptx);
        Assert.Contains("cp.async.wait_group 1;", ptx);
        Assert.Contains("cp.async.wait_group 0;", ptx);
        // Each thread copies one row of each of the step's two tiles, 16 bytes of every 64-value box: per tile one source and
        // one target register, box b at +128·b in the cache row and +32 rows·128 B·b in the stage (the 128-byte swizzled
        // layout both descriptors name).
        var offsets = Regex.Matches(ptx, @"cp\.async\.cg\.shared\.global \[%rd\d+\+(\d+)\], \[%rd\d+\+(\d+)\], 16")
            .Select(m => (Shared: int.Parse(m.Groups[1].Value), Global: int.Parse(m.Groups[2].Value))).Distinct().OrderBy(o => o.Global).ToArray();
        int boxes = ExpandPtxDeepSeekShape.MlaKernels.DwBoxes;
        Assert.Equal(Enumerable.Range(1, boxes - 1).Select(b => (b * keys * 128, b * 128)), offsets);
        Assert.Equal(1L, (long)((ulong)ExpandPtxDeepSeekShape.MlaKernels.DwRowDescriptor >> 62));
        Assert.Equal(1L, (long)((ulong)ExpandPtxDeepSeekShape.MlaKernels.DwValueDescriptor >> 62));
        // The stages live in the dynamic block under ILGPU's internal name (the kernel names it in PTX): guard it here.
        Assert.Matches(@"\.extern \.shared \.align \d+ \.b8 __dyn_shared_alloca\[\];", ptx);
        Assert.DoesNotMatch(@"\.shared \.align \d+ \.b8 (?!__dyn_shared_alloca)\w+\[\d+\]", ptx);
        Assert.True(ExpandPtxDeepSeekShape.MlaKernels.DwSharedBytes <= 227 * 1024, "an H100 CTA gets at most 227 KB of shared memory");
        Assert.Equal(0, ExpandPtxDeepSeekShape.MlaKernels.DwProbabilities % 1024); // P is a swizzled box: atom-aligned
        // Q arrives as 16-byte vector loads, six chunks of 8 values (two loads each) per thread in flight per trip.
        Assert.Equal(12, Regex.Matches(ptx, @"ld\.global\.nc\.v4\.f32").Count);
        // P leaves as 8 bf16 pairs per thread (2 rows × 4 n-tiles); the row maxima and, at the end, the row sums cross
        // between the warpgroups as 2 floats per quad each way.
        Assert.Equal(8, Regex.Matches(ptx, @"st\.shared\.b32 \[\s*%rd\d+(\+1024)?\], xp\d+;").Count);
        Assert.Equal(2, Regex.Matches(ptx, @"st\.shared\.f32 \[\s*%rd\d+(\+32)?\], xt[01];").Count);
        Assert.Equal(2, Regex.Matches(ptx, @"st\.shared\.f32 \[\s*%rd\d+(\+32)?\], xl[01];").Count);
        // O leaves through shared memory (two 8-byte stores per 8-column tile of each warpgroup's half), staged over Q and the stages.
        int outTiles = ExpandPtxDeepSeekShape.LatentRank / 2 / 8;
        Assert.Equal(2 * outTiles, Regex.Matches(ptx, @"st\.shared\.v2\.f32").Count);
        Assert.True(64 * ExpandPtxDeepSeekShape.MlaKernels.DwOutputStride * 4 <= ExpandPtxDeepSeekShape.MlaKernels.DwProbabilities, "staged O must fit over Q and the stages");
        TensorCorePtxTests.AssertLazyRescale(ptx, outTiles, guarded: true);
        int slots = Regex.Matches(ptx, @"\.local \.align 8 \.b8 __local_depot\d+\[8\];").Count;
        _output.WriteLine($"{slots} local slots");
        string hopper = MlaGen.Kernels.PtxKernelLoader.WithTarget(ptx, "sm_90a");
        Assert.Contains(entry, hopper);
    }
}
