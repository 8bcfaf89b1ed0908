using System;
using System.Text.RegularExpressions;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using MlaGen.Kernels;
using Xunit;

namespace MlaGen.Layer.Tests;

/// <summary>
/// The PTX edit behind the register-cap experiment (<see cref="PtxKernelLoader"/>), on the real tensor-core decode
/// kernel compiled without a GPU. Loading the edited PTX needs the CUDA driver: the decode benchmark's
/// <c>--decode-variants</c> does that and checks each variant's results.
/// </summary>
public class PtxTuningTests
{
    private static readonly Lazy<(string Ptx, string Entry)> Attention = new(() =>
        TensorCorePtxTests.CompileToPtxWithEntry(typeof(DeepSeekDecodeShape.MlaKernels).GetMethod(nameof(DeepSeekDecodeShape.MlaKernels.TensorCoreAttentionKernel))!));

    [Fact]
    public void MaxRegistersGoesBetweenTheParameterListAndTheBody()
    {
        var (ptx, entry) = Attention.Value;
        Assert.Equal("Kernel_TensorCoreAttentionKernel", entry);
        string edited = PtxKernelLoader.ApplyTuning(ptx, entry, new PtxTuning(maxRegisters: 128));

        // .entry NAME( .param ... ) .maxnreg 128 { — the place of performance-tuning directives in the PTX grammar.
        var header = Regex.Match(edited, @"\.entry Kernel_TensorCoreAttentionKernel\(\s*\.param \.align \d+ \.b8 \w+\[\d+\]\s*\)\n\.maxnreg 128\n\{");
        Assert.True(header.Success, edited[..Math.Min(400, edited.Length)]);
        Assert.Single(Regex.Matches(edited, @"\.maxnreg"));
        // Nothing else changes.
        Assert.Equal(ptx, edited.Remove(edited.IndexOf("\n.maxnreg 128\n", StringComparison.Ordinal), "\n.maxnreg 128".Length));
    }

    [Fact]
    public void AllDirectivesInGrammarOrder()
    {
        var (ptx, entry) = Attention.Value;
        string edited = PtxKernelLoader.ApplyTuning(ptx, entry, new PtxTuning(maxRegisters: 168, maxThreadsPerBlock: 128, minBlocksPerMultiprocessor: 3));
        Assert.Matches(@"\)\n\.maxntid 128, 1, 1\n\.minnctapersm 3\n\.maxnreg 168\n\{", edited);
    }

    [Fact]
    public void NoTuningLeavesThePtxAlone()
    {
        var (ptx, entry) = Attention.Value;
        Assert.Same(ptx, PtxKernelLoader.ApplyTuning(ptx, entry, PtxTuning.None));
        Assert.Equal("as compiled", PtxTuning.None.ToString());
        Assert.Equal(".maxnreg 128", new PtxTuning(maxRegisters: 128).ToString());
    }

    [Theory]
    [InlineData(15)]
    [InlineData(256)]
    [InlineData(0)]
    [InlineData(-1)]
    public void RegisterCapOutsideTheHardwareRangeIsRejected(int registers)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new PtxTuning(maxRegisters: registers));
        Assert.Equal("maxRegisters", e.ParamName);
        Assert.Equal(registers, e.ActualValue);
        Assert.Contains("16 to 255", e.Message, StringComparison.Ordinal);
        Assert.Contains($"got {registers}", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void TheRangeEndsAreAccepted()
    {
        Assert.Equal(16, new PtxTuning(maxRegisters: 16).MaxRegisters);
        Assert.Equal(255, new PtxTuning(maxRegisters: 255).MaxRegisters);
    }

    [Fact]
    public void MinBlocksNeedsMaxThreads()
    {
        var e = Assert.Throws<ArgumentException>(() => new PtxTuning(minBlocksPerMultiprocessor: 2));
        Assert.Equal("minBlocksPerMultiprocessor", e.ParamName);
        Assert.Equal("maxThreadsPerBlock", Assert.Throws<ArgumentOutOfRangeException>(() => new PtxTuning(maxThreadsPerBlock: 2048)).ParamName);
        Assert.Equal("minBlocksPerMultiprocessor",
            Assert.Throws<ArgumentOutOfRangeException>(() => new PtxTuning(maxThreadsPerBlock: 128, minBlocksPerMultiprocessor: 0)).ParamName);
    }

    [Fact]
    public void MissingEntryOrExistingDirectivesAreRejected()
    {
        var (ptx, entry) = Attention.Value;
        var cap = new PtxTuning(maxRegisters: 128);
        Assert.Contains("found 0", Assert.Throws<ArgumentException>(() => PtxKernelLoader.ApplyTuning(ptx, "Kernel_NoSuchKernel", cap)).Message, StringComparison.Ordinal);
        // A prefix of the entry name is not the entry.
        Assert.Throws<ArgumentException>(() => PtxKernelLoader.ApplyTuning(ptx, "Kernel_TensorCoreAttention", cap));
        string once = PtxKernelLoader.ApplyTuning(ptx, entry, cap);
        Assert.Contains("already has directives", Assert.Throws<ArgumentException>(() => PtxKernelLoader.ApplyTuning(once, entry, cap)).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void CompiledKernelCopyCarriesTheEditedPtx()
    {
        // The one internal ILGPU member the loader needs (PTXCompiledKernel's constructor), exercised without a GPU.
        var method = typeof(DeepSeekDecodeShape.MlaKernels).GetMethod(nameof(DeepSeekDecodeShape.MlaKernels.TensorCoreCombineKernel))!;
        using var context = Context.Create(b => b.Cuda().EnableAlgorithms());
        using var backend = new PTXBackend(context, new CudaCapabilityContext(CudaArchitecture.SM_90), CudaArchitecture.SM_90,
            CudaInstructionSet.ISA_80, null!);
        var compiled = (PTXCompiledKernel)backend.Compile(EntryPointDescription.FromExplicitlyGroupedKernel(method), new KernelSpecialization());
        string edited = PtxKernelLoader.ApplyTuning(compiled.PTXAssembly, compiled.Name, new PtxTuning(maxRegisters: 64));
        var copy = PtxKernelLoader.WithPtx(compiled, edited);
        Assert.Equal(edited, copy.PTXAssembly);
        Assert.Equal(compiled.Name, copy.Name);
        Assert.Same(compiled.Info, copy.Info);
        Assert.Same(compiled.SourceMethod, copy.SourceMethod);
        Assert.Equal(compiled.NumParameters, copy.NumParameters);
    }

    [Fact]
    public void LauncherOfACompiledKernelRuns()
    {
        // The loader's ILGPU path after the PTX edit (LoadKernel(CompiledKernel) → CreateLauncherDelegate), on the CPU.
        using var context = Context.Create(b => b.CPU());
        using var cpu = context.CreateCPUAccelerator(0);
        var compiled = cpu.CompileKernel(EntryPointDescription.FromExplicitlyGroupedKernel(
            typeof(PtxTestKernels).GetMethod(nameof(PtxTestKernels.AddIndex))!));
        var launch = PtxKernelLoader.LoadLauncher<PtxTestKernels.CountParams>(cpu, compiled, out var kernel);
        using (kernel)
        using (var values = cpu.Allocate1D<int>(8))
        {
            values.MemSetToZero();
            launch(cpu.DefaultStream, new KernelConfig(2, 4), new PtxTestKernels.CountParams { Values = values.View });
            cpu.Synchronize();
            Assert.Equal(new[] { 0, 1, 2, 3, 4, 5, 6, 7 }, values.GetAsArray1D());
        }
    }

    [Fact]
    public void RetargetingRewritesTargetAndRaisesAnOldVersion()
    {
        var (ptx, _) = Attention.Value;
        Assert.Matches(@"(?m)^\.target sm_80\b", ptx);
        string edited = PtxKernelLoader.WithTarget(ptx, "sm_90a");
        Assert.Matches(@"(?m)^\.target sm_90a$", edited);
        Assert.DoesNotMatch(@"(?m)^\.target sm_80\b", edited);
        var version = Version.Parse(Regex.Match(edited, @"(?m)^\.version ([0-9.]+)").Groups[1].Value);
        Assert.True(version >= PtxKernelLoader.ArchitectureSpecificIsa, $".version {version}");
        // Only those two lines change.
        Assert.Equal(ptx.Split('\n').Length, edited.Split('\n').Length);
        string old = Regex.Replace(ptx, @"(?m)^\.version [0-9.]+", ".version 7.8");
        Assert.Contains(".version 8.0\n", PtxKernelLoader.WithTarget(old, "sm_90a").Replace("\r", "", StringComparison.Ordinal), StringComparison.Ordinal);
    }

    [Fact]
    public void RetargetingRejectsBadTargetsAndModules()
    {
        var (ptx, _) = Attention.Value;
        Assert.Throws<ArgumentException>("target", () => PtxKernelLoader.WithTarget(ptx, "sm90a; .entry x"));
        Assert.Throws<ArgumentException>("ptx", () => PtxKernelLoader.WithTarget(".version 8.0\n.entry x() {}", "sm_90a"));
        Assert.Throws<ArgumentException>("ptx", () => PtxKernelLoader.WithTarget(ptx + "\n.target sm_80\n", "sm_90a"));
    }

    [Fact]
    public void WarpgroupKernelsAreNotLoadedOffHopper()
    {
        using var context = Context.Create(b => b.CPU());
        using var cpu = context.CreateCPUAccelerator(0);
        Assert.False(WarpgroupKernels.IsAvailable(cpu));
        var method = typeof(ExpandPtxDeepSeekShape.MlaKernels).GetMethod(nameof(ExpandPtxDeepSeekShape.MlaKernels.ExpandedAttentionWarpgroupKernel))!;
        Assert.Null(WarpgroupKernels.TryLoad<ExpandedAttentionParams>(cpu, method));
    }

    [Fact]
    public void LoadingNeedsCuda()
    {
        using var context = Context.Create(b => b.CPU());
        using var cpu = context.CreateCPUAccelerator(0);
        var method = typeof(DeepSeekDecodeShape.MlaKernels).GetMethod(nameof(DeepSeekDecodeShape.MlaKernels.TensorCoreAttentionKernel))!;
        var e = Assert.Throws<NotSupportedException>(() => PtxKernelLoader.Load<TensorCoreAttentionParams>(cpu, method, new PtxTuning(maxRegisters: 128)));
        Assert.Contains("CUDA", e.Message, StringComparison.Ordinal);
    }
}

/// <summary>A trivial kernel for the loader's ILGPU path; public because ILGPU's CPU backend emits code outside this assembly.</summary>
public static class PtxTestKernels
{
    public struct CountParams
    {
        public ArrayView<int> Values;
    }

    public static void AddIndex(CountParams p) => p.Values[Grid.GlobalIndex.X] += Grid.GlobalIndex.X;
}
