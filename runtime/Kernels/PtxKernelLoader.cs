using System;
using System.Globalization;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;
using ILGPU;
using ILGPU.Backends;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace MlaGen.Kernels;

/// <summary>
/// PTX performance-tuning directives for one kernel entry (PTX ISA, "Performance-Tuning Directives"): they go between
/// the entry's parameter list and its body. ILGPU 1.5.3 writes none and passes no JIT options, so this is the only
/// way to cap a kernel's registers. Every value is checked here, so an instance always edits to valid PTX.
/// </summary>
public sealed class PtxTuning
{
    /// <summary>Smallest and largest <c>.maxnreg</c> accepted (255 is the hardware's per-thread limit).</summary>
    public const int MinRegisters = 16, MaxRegisterLimit = 255;

    /// <summary>Most threads per CTA on every CUDA GPU so far.</summary>
    public const int MaxThreadLimit = 1024;

    /// <summary>Most resident CTAs per SM on any CUDA GPU so far (sm_90: 32).</summary>
    public const int MaxBlocksLimit = 32;

    /// <param name="maxRegisters"><c>.maxnreg N</c>: at most N registers per thread (16 to 255); ptxas spills the rest to local memory.</param>
    /// <param name="maxThreadsPerBlock"><c>.maxntid N, 1, 1</c>: the kernel is never launched with more threads per CTA.</param>
    /// <param name="minBlocksPerMultiprocessor">
    /// <c>.minnctapersm N</c>: ask ptxas to fit N CTAs per SM (it derives a register cap from it); PTX requires
    /// <paramref name="maxThreadsPerBlock"/> with it.
    /// </param>
    public PtxTuning(int? maxRegisters = null, int? maxThreadsPerBlock = null, int? minBlocksPerMultiprocessor = null)
    {
        if (maxRegisters is int r && (r < MinRegisters || r > MaxRegisterLimit))
        {
            throw new ArgumentOutOfRangeException(nameof(maxRegisters), r,
                $"Expected {MinRegisters} to {MaxRegisterLimit} registers per thread for .maxnreg; got {r}.");
        }
        if (maxThreadsPerBlock is int t && (t < 1 || t > MaxThreadLimit))
        {
            throw new ArgumentOutOfRangeException(nameof(maxThreadsPerBlock), t,
                $"Expected 1 to {MaxThreadLimit} threads per block for .maxntid; got {t}.");
        }
        if (minBlocksPerMultiprocessor is int b)
        {
            if (b < 1 || b > MaxBlocksLimit)
            {
                throw new ArgumentOutOfRangeException(nameof(minBlocksPerMultiprocessor), b,
                    $"Expected 1 to {MaxBlocksLimit} blocks per multiprocessor for .minnctapersm; got {b}.");
            }
            if (maxThreadsPerBlock is null)
            {
                throw new ArgumentException(
                    ".minnctapersm needs .maxntid: pass maxThreadsPerBlock (the launch's threads per block) too.", nameof(minBlocksPerMultiprocessor));
            }
        }
        MaxRegisters = maxRegisters;
        MaxThreadsPerBlock = maxThreadsPerBlock;
        MinBlocksPerMultiprocessor = minBlocksPerMultiprocessor;
    }

    /// <summary>No directives: the kernel exactly as ILGPU compiles it.</summary>
    public static PtxTuning None { get; } = new();

    public int? MaxRegisters { get; }

    public int? MaxThreadsPerBlock { get; }

    public int? MinBlocksPerMultiprocessor { get; }

    public bool IsNone => MaxRegisters is null && MaxThreadsPerBlock is null && MinBlocksPerMultiprocessor is null;

    /// <summary>The directives, one per line, in the order the PTX ISA lists them (empty for <see cref="None"/>).</summary>
    public string Directives
    {
        get
        {
            var sb = new StringBuilder();
            if (MaxThreadsPerBlock is int t)
                sb.Append(CultureInfo.InvariantCulture, $".maxntid {t}, 1, 1\n");
            if (MinBlocksPerMultiprocessor is int b)
                sb.Append(CultureInfo.InvariantCulture, $".minnctapersm {b}\n");
            if (MaxRegisters is int r)
                sb.Append(CultureInfo.InvariantCulture, $".maxnreg {r}\n");
            return sb.ToString();
        }
    }

    /// <summary>"as compiled" or the directives on one line, e.g. ".maxnreg 128".</summary>
    public override string ToString() => IsNone ? "as compiled" : Directives.TrimEnd('\n').Replace("\n", "; ", StringComparison.Ordinal);
}

/// <summary>What the CUDA driver reports for one loaded kernel function (<c>cuFuncGetAttribute</c>).</summary>
/// <param name="Registers">Registers per thread (CU_FUNC_ATTRIBUTE_NUM_REGS).</param>
/// <param name="LocalBytes">Local memory per thread in bytes, spills included (LOCAL_SIZE_BYTES).</param>
/// <param name="StaticSharedBytes">Statically allocated shared memory per block (SHARED_SIZE_BYTES).</param>
/// <param name="MaxThreadsPerBlock">Most threads per block this function can be launched with (MAX_THREADS_PER_BLOCK).</param>
public sealed record CudaFunctionAttributes(int Registers, int LocalBytes, int StaticSharedBytes, int MaxThreadsPerBlock);

/// <summary>A kernel loaded from edited PTX: its launcher, the PTX the driver compiled and the ILGPU kernel behind it.</summary>
public sealed class PtxKernel<TParams> : IDisposable
    where TParams : struct
{
    internal PtxKernel(Kernel kernel, Action<AcceleratorStream, KernelConfig, TParams> launch, string ptx, PtxTuning? tuning)
    {
        Kernel = kernel;
        Launch = launch;
        Ptx = ptx;
        Tuning = tuning;
    }

    /// <summary>The ILGPU kernel (a <see cref="CudaKernel"/>); not managed by ILGPU's kernel cache: dispose this object.</summary>
    public Kernel Kernel { get; }

    /// <summary>Launches the kernel, like the delegates of <c>KernelLoaders.LoadKernel</c>.</summary>
    public Action<AcceleratorStream, KernelConfig, TParams> Launch { get; }

    /// <summary>The PTX the driver compiled (after the edit).</summary>
    public string Ptx { get; }

    /// <summary>The directives inserted, or null when a custom edit was applied.</summary>
    public PtxTuning? Tuning { get; }

    /// <summary>Registers, local (spill) bytes, static shared bytes and thread limit as the driver compiled them.</summary>
    public CudaFunctionAttributes Attributes => PtxKernelLoader.GetFunctionAttributes(Kernel);

    /// <summary>
    /// Lets launches ask for up to <paramref name="bytes"/> of dynamic shared memory per CTA. The driver allows 48 KB
    /// unless a function opts in (<c>MAX_DYNAMIC_SHARED_SIZE_BYTES</c>), which ILGPU never does; the H100 allows 227 KB.
    /// </summary>
    public void AllowDynamicSharedMemory(int bytes) => PtxKernelLoader.SetMaxDynamicSharedBytes(Kernel, bytes);

    public void Dispose() => Kernel.Dispose();
}

/// <summary>
/// Loads an explicitly grouped ILGPU kernel on a CUDA accelerator with its PTX edited before the driver compiles it
/// (e.g. a register cap, which ILGPU cannot express), and reads the compiled function's attributes from the driver.
/// Compilation and launch go through ILGPU's public API (<see cref="Accelerator.CompileKernel(in EntryPointDescription)"/>,
/// <see cref="Accelerator.LoadKernel(CompiledKernel)"/>, <see cref="Kernel.CreateLauncherDelegate{TDelegate}"/>); the one
/// internal member used is <see cref="PTXCompiledKernel"/>'s constructor (and the compiled kernel's entry point), found by
/// reflection and checked against ILGPU 1.5.3.
/// </summary>
public static partial class PtxKernelLoader
{
    private const BindingFlags Instance = BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic;

    /// <summary>Loads <paramref name="kernel"/> with <paramref name="tuning"/>'s directives inserted into its entry.</summary>
    public static PtxKernel<TParams> Load<TParams>(Accelerator accelerator, MethodInfo kernel, PtxTuning tuning)
        where TParams : struct
    {
        ArgumentNullException.ThrowIfNull(tuning);
        return Load<TParams>(accelerator, kernel, (ptx, entry) => ApplyTuning(ptx, entry, tuning), tuning);
    }

    /// <summary>
    /// When set to a directory, every kernel loaded here also leaves its final PTX there as <c>&lt;entry&gt;.ptx</c>, for
    /// <c>ptxas -arch=sm_90a -v</c> (registers, spills, and the warnings the driver's JIT does not show, such as wgmma serialisation).
    /// </summary>
    public const string DumpDirectoryVariable = "MLAGEN_PTX_DUMP";

    /// <summary>Loads <paramref name="kernel"/> with its PTX passed through <paramref name="editPtx"/> (PTX text, entry name) → PTX text.</summary>
    public static PtxKernel<TParams> Load<TParams>(Accelerator accelerator, MethodInfo kernel, Func<string, string, string> editPtx)
        where TParams : struct =>
        Load<TParams>(accelerator, kernel, editPtx, null);

    private static PtxKernel<TParams> Load<TParams>(Accelerator accelerator, MethodInfo kernel, Func<string, string, string> editPtx, PtxTuning? tuning)
        where TParams : struct
    {
        ArgumentNullException.ThrowIfNull(accelerator);
        ArgumentNullException.ThrowIfNull(kernel);
        ArgumentNullException.ThrowIfNull(editPtx);
        if (accelerator.AcceleratorType != AcceleratorType.Cuda)
        {
            throw new NotSupportedException(
                $"Loading a kernel from edited PTX needs a CUDA accelerator; {accelerator.Name} is {accelerator.AcceleratorType}.");
        }
        var compiled = accelerator.CompileKernel(EntryPointDescription.FromExplicitlyGroupedKernel(kernel)) as PTXCompiledKernel
            ?? throw new NotSupportedException($"The CUDA accelerator did not compile {kernel.Name} to PTX.");
        string edited = editPtx(compiled.PTXAssembly, compiled.Name);
        if (Environment.GetEnvironmentVariable(DumpDirectoryVariable) is { Length: > 0 } dumpDirectory)
        {
            System.IO.Directory.CreateDirectory(dumpDirectory);
            System.IO.File.WriteAllText(System.IO.Path.Combine(dumpDirectory, compiled.Name + ".ptx"), edited);
        }
        var launch = LoadLauncher<TParams>(accelerator, WithPtx(compiled, edited), out var loaded);
        return new PtxKernel<TParams>(loaded, launch, edited, tuning);
    }

    /// <summary>Loads a compiled explicitly grouped kernel and binds its launcher, as ILGPU's <c>LoadKernel&lt;TDelegate&gt;</c> does.</summary>
    internal static Action<AcceleratorStream, KernelConfig, TParams> LoadLauncher<TParams>(Accelerator accelerator, CompiledKernel compiled, out Kernel kernel)
        where TParams : struct
    {
        kernel = accelerator.LoadKernel(compiled);
        try
        {
            return kernel.CreateLauncherDelegate<Action<AcceleratorStream, KernelConfig, TParams>>();
        }
        catch
        {
            kernel.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Inserts <paramref name="tuning"/>'s directives into the entry <paramref name="entryName"/> of
    /// <paramref name="ptx"/>: after the closing parenthesis of its parameter list, before the <c>{</c> of its body.
    /// Throws <see cref="ArgumentException"/> when the entry is missing or ambiguous or already carries directives.
    /// </summary>
    public static string ApplyTuning(string ptx, string entryName, PtxTuning tuning)
    {
        ArgumentNullException.ThrowIfNull(ptx);
        ArgumentException.ThrowIfNullOrEmpty(entryName);
        ArgumentNullException.ThrowIfNull(tuning);
        if (tuning.IsNone)
            return ptx;
        var entries = Regex.Matches(ptx, $@"\.entry\s+{Regex.Escape(entryName)}\s*\(");
        if (entries.Count != 1)
            throw new ArgumentException($"Expected exactly one '.entry {entryName}(' in the PTX; found {entries.Count}.", nameof(ptx));
        // Parameter declarations (".param .align 8 .b8 _p_1[216]") contain no parentheses: the next ')' closes the list.
        int close = ptx.IndexOf(')', entries[0].Index + entries[0].Length);
        int body = close < 0 ? -1 : ptx.IndexOf('{', close);
        if (body < 0)
            throw new ArgumentException($"The entry {entryName} has no parameter list followed by a body.", nameof(ptx));
        string between = ptx[(close + 1)..body];
        if (!string.IsNullOrWhiteSpace(between))
        {
            throw new ArgumentException(
                $"The entry {entryName} already has directives before its body ('{between.Trim()}'); refusing to add more.", nameof(ptx));
        }
        return string.Concat(ptx.AsSpan(0, close + 1), "\n", tuning.Directives, ptx.AsSpan(body));
    }

    /// <summary>The PTX ISA version that introduced <c>sm_90a</c> (wgmma, setmaxnreg).</summary>
    public static readonly Version ArchitectureSpecificIsa = new(8, 0);

    /// <summary>
    /// Retargets a module to <paramref name="target"/> (e.g. <c>sm_90a</c>, which wgmma needs and ILGPU 1.5.3 never writes:
    /// it caps its target at sm_80), raising <c>.version</c> to 8.0 where it is older. Throws <see cref="ArgumentException"/>
    /// when the module has no single <c>.target</c> or <c>.version</c> line.
    /// </summary>
    public static string WithTarget(string ptx, string target)
    {
        ArgumentNullException.ThrowIfNull(ptx);
        ArgumentException.ThrowIfNullOrEmpty(target);
        if (!Regex.IsMatch(target, "^sm_[0-9]+a?$"))
            throw new ArgumentException($"Expected a PTX target like 'sm_90a'; got '{target}'.", nameof(target));
        var targetLine = new Regex(@"^\.target\s+[^\r\n]+$", RegexOptions.Multiline);
        var versionLine = new Regex(@"^\.version\s+([0-9]+)\.([0-9]+)\s*$", RegexOptions.Multiline);
        int targets = targetLine.Count(ptx), versions = versionLine.Count(ptx);
        if (targets != 1 || versions != 1)
        {
            throw new ArgumentException(
                $"Expected one '.target' and one '.version' line in the PTX; found {targets} and {versions}.", nameof(ptx));
        }
        ptx = targetLine.Replace(ptx, $".target {target}");
        return versionLine.Replace(ptx, m =>
            new Version(int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture), int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture)) < ArchitectureSpecificIsa
                ? $".version {ArchitectureSpecificIsa}"
                : m.Value);
    }

    /// <summary>The driver's view of a loaded CUDA kernel: registers, local (spill) bytes, static shared bytes, thread limit.</summary>
    public static CudaFunctionAttributes GetFunctionAttributes(Kernel kernel)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        if (kernel is not CudaKernel cuda)
            throw new NotSupportedException($"Function attributes come from the CUDA driver; this kernel runs on {kernel.Accelerator.AcceleratorType}.");
        // cuFuncGetAttribute works on the current context: ILGPU keeps the accelerator's bound to the thread that binds it.
        kernel.Accelerator.Bind();
        return new CudaFunctionAttributes(
            Registers: Attribute(cuda.FunctionPtr, CuFuncAttribute.NumRegs),
            LocalBytes: Attribute(cuda.FunctionPtr, CuFuncAttribute.LocalSizeBytes),
            StaticSharedBytes: Attribute(cuda.FunctionPtr, CuFuncAttribute.SharedSizeBytes),
            MaxThreadsPerBlock: Attribute(cuda.FunctionPtr, CuFuncAttribute.MaxThreadsPerBlock));
    }

    /// <summary>Raises a loaded CUDA kernel's dynamic shared-memory limit (<c>cuFuncSetAttribute</c>, MAX_DYNAMIC_SHARED_SIZE_BYTES).</summary>
    public static void SetMaxDynamicSharedBytes(Kernel kernel, int bytes)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        if (kernel is not CudaKernel cuda)
            throw new NotSupportedException($"Dynamic shared-memory limits are CUDA function attributes; this kernel runs on {kernel.Accelerator.AcceleratorType}.");
        kernel.Accelerator.Bind();
        int error = OperatingSystem.IsWindows()
            ? NativeWindows.cuFuncSetAttribute(cuda.FunctionPtr, CuFuncAttribute.MaxDynamicSharedSizeBytes, bytes)
            : NativeLinux.cuFuncSetAttribute(cuda.FunctionPtr, CuFuncAttribute.MaxDynamicSharedSizeBytes, bytes);
        if (error != 0)
        {
            throw new InvalidOperationException(
                $"cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES, {bytes}) failed: {(CudaError)error} ({error}); {kernel.Accelerator.Name} allows "
                + $"{kernel.Accelerator.MaxSharedMemoryPerGroup} bytes per block without opt-in, and its opt-in limit is lower than {bytes}.");
        }
    }

    /// <summary>A copy of <paramref name="compiled"/> with other PTX text: ILGPU's constructor is internal, so by reflection.</summary>
    internal static PTXCompiledKernel WithPtx(PTXCompiledKernel compiled, string ptx)
    {
        var entryPoint = typeof(CompiledKernel).GetProperty("EntryPoint", Instance);
        var constructor = entryPoint is null
            ? null
            : typeof(PTXCompiledKernel).GetConstructor(Instance, null,
                new[] { typeof(Context), entryPoint.PropertyType, typeof(CompiledKernel.KernelInfo), typeof(string) }, null);
        if (entryPoint is null || constructor is null)
        {
            throw new NotSupportedException(
                $"This ILGPU ({typeof(Context).Assembly.GetName().Version}) has no internal PTXCompiledKernel(Context, EntryPoint, KernelInfo, string) "
                + "constructor or CompiledKernel.EntryPoint property; PtxKernelLoader was written against ILGPU 1.5.3.");
        }
        return (PTXCompiledKernel)constructor.Invoke(new[] { compiled.Context, entryPoint.GetValue(compiled), compiled.Info, (object)ptx });
    }

    private static int Attribute(IntPtr function, CuFuncAttribute attribute)
    {
        int error = OperatingSystem.IsWindows()
            ? NativeWindows.cuFuncGetAttribute(out int value, attribute, function)
            : NativeLinux.cuFuncGetAttribute(out value, attribute, function);
        if (error != 0)
            throw new InvalidOperationException($"cuFuncGetAttribute({attribute}) failed: {(CudaError)error} ({error}).");
        return value;
    }

    /// <summary>CUfunction_attribute values of the CUDA driver API.</summary>
    private enum CuFuncAttribute
    {
        MaxThreadsPerBlock = 0,
        SharedSizeBytes = 1,
        LocalSizeBytes = 3,
        NumRegs = 4,
        MaxDynamicSharedSizeBytes = 8,
    }

    // The driver library ILGPU binds too ("nvcuda" / libcuda); libcuda.so.1 exists wherever a driver is installed.
    private static partial class NativeWindows
    {
        [LibraryImport("nvcuda")]
        [UnmanagedCallConv(CallConvs = new[] { typeof(System.Runtime.CompilerServices.CallConvStdcall) })]
        internal static partial int cuFuncGetAttribute(out int value, CuFuncAttribute attribute, IntPtr function);

        [LibraryImport("nvcuda")]
        [UnmanagedCallConv(CallConvs = new[] { typeof(System.Runtime.CompilerServices.CallConvStdcall) })]
        internal static partial int cuFuncSetAttribute(IntPtr function, CuFuncAttribute attribute, int value);
    }

    private static partial class NativeLinux
    {
        [LibraryImport("libcuda.so.1")]
        internal static partial int cuFuncGetAttribute(out int value, CuFuncAttribute attribute, IntPtr function);

        [LibraryImport("libcuda.so.1")]
        internal static partial int cuFuncSetAttribute(IntPtr function, CuFuncAttribute attribute, int value);
    }
}
