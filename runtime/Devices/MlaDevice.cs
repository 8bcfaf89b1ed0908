using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.Threading;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;

namespace MlaGen.Devices;

/// <summary>The kind of accelerator an <see cref="MlaDevice"/> runs on.</summary>
public enum MlaDeviceKind
{
    /// <summary>ILGPU's CPU accelerator with 32-thread warps (see <see cref="MlaDevice.CpuDevice"/>).</summary>
    Cpu,

    /// <summary>A CUDA GPU.</summary>
    Cuda,
}

/// <summary>What device selection needs to know about one CUDA GPU.</summary>
/// <param name="Index">ILGPU's CUDA device index: the N of "cuda:N".</param>
/// <param name="Name">The driver's device name.</param>
/// <param name="MemoryBytes">Global memory in bytes.</param>
/// <param name="Multiprocessors">Number of streaming multiprocessors.</param>
public sealed record CudaDeviceDescription(int Index, string Name, long MemoryBytes, int Multiprocessors)
{
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"cuda:{Index} {Name} ({MemoryBytes / (1024.0 * 1024 * 1024):0.#} GiB, {Multiprocessors} SMs)");
}

/// <summary>The outcome of device selection: which device, and in words why it was chosen.</summary>
/// <param name="Kind">CPU or CUDA.</param>
/// <param name="CudaIndex">The CUDA device index when <paramref name="Kind"/> is CUDA, otherwise null.</param>
/// <param name="Reason">Human text, e.g. "MLAGEN_DEVICE=cpu" or "best of 2 CUDA GPU(s): cuda:1 ...".</param>
public sealed record MlaDeviceChoice(MlaDeviceKind Kind, int? CudaIndex, string Reason)
{
    /// <summary>The selection string that picks this device again: "cpu" or "cuda:N".</summary>
    public string Selection => Kind == MlaDeviceKind.Cpu
        ? "cpu"
        : string.Create(CultureInfo.InvariantCulture, $"cuda:{CudaIndex}");
}

/// <summary>
/// One accelerator (a CUDA GPU or ILGPU's CPU accelerator) that MLA kernels run on, plus a cache of the
/// kernels loaded for it. All devices share one ILGPU <see cref="ILGPU.Context"/> per process.
/// </summary>
/// <remarks>
/// <see cref="Accelerator"/> and <see cref="GetOrLoad{T}"/> throw <see cref="ObjectDisposedException"/>
/// after <see cref="Dispose"/>; the descriptive properties (<see cref="Name"/>, <see cref="Reason"/>,
/// <see cref="LoadTimes"/>, ...) stay readable so they can still be logged. <see cref="GetOrLoad{T}"/> is
/// thread-safe; <see cref="Dispose"/> must not race with it.
/// </remarks>
public sealed class MlaDevice : IDisposable
{
    /// <summary>Environment variable consulted when no selection is passed: "cpu", "cuda" or "cuda:N".</summary>
    public const string EnvironmentVariable = "MLAGEN_DEVICE";

    /// <summary>
    /// The CPU accelerator: 32-lane warps like CUDA (the warp kernels run there too), groups of up to 64 threads,
    /// one multiprocessor per core. Every simulated thread is an OS thread, so fewer is faster.
    /// </summary>
    public static readonly CPUDevice CpuDevice = new(numThreadsPerWarp: 32, numWarpsPerMultiprocessor: 2,
        numMultiprocessors: Math.Max(1, Environment.ProcessorCount));

    // Never disposed: devices and the kernels compiled for them may live until the process exits.
    private static readonly Lazy<Context> LazyContext = new(
        () => Context.Create(builder => builder.Cuda().CPU(CpuDevice).EnableAlgorithms().Profiling()),
        LazyThreadSafetyMode.ExecutionAndPublication);

    private static readonly Lazy<IReadOnlyList<CudaDeviceDescription>> LazyCudaDevices = new(
        DescribeCudaDevices, LazyThreadSafetyMode.ExecutionAndPublication);

    private readonly Accelerator _accelerator;
    // Lazy per key so that a key compiles once while different keys may compile at the same time.
    private readonly ConcurrentDictionary<string, Lazy<object>> _loaded = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, TimeSpan> _loadTimes = new(StringComparer.Ordinal);
    private int _disposed;

    private MlaDevice(Accelerator accelerator, MlaDeviceChoice choice)
    {
        _accelerator = accelerator;
        Kind = choice.Kind;
        Selection = choice.Selection;
        Reason = choice.Reason;
        Name = accelerator.Name;
    }

    /// <summary>The process-wide ILGPU context: CUDA devices, the CPU accelerator as <see cref="CpuDevice"/>, algorithms and profiling enabled.</summary>
    public static Context SharedContext => LazyContext.Value;

    /// <summary>The CUDA GPUs ILGPU found in this process (empty without a driver or GPU), in CUDA index order.</summary>
    public static IReadOnlyList<CudaDeviceDescription> CudaDevices => LazyCudaDevices.Value;

    public Accelerator Accelerator
    {
        get
        {
            ThrowIfDisposed();
            return _accelerator;
        }
    }

    public MlaDeviceKind Kind { get; }

    public bool IsCuda => Kind == MlaDeviceKind.Cuda;

    /// <summary>The accelerator's name as ILGPU reports it (the GPU model, or "CPUAccelerator").</summary>
    public string Name { get; }

    /// <summary>The selection string that picks this device again: "cpu" or "cuda:N".</summary>
    public string Selection { get; }

    /// <summary>Why this device was chosen, e.g. "MLAGEN_DEVICE=cpu" or "no CUDA GPU found".</summary>
    public string Reason { get; }

    public bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    /// <summary>Wall time of the first load of every key loaded so far (a snapshot).</summary>
    public IReadOnlyDictionary<string, TimeSpan> LoadTimes => new Dictionary<string, TimeSpan>(_loadTimes, StringComparer.Ordinal);

    /// <summary>Sum of <see cref="LoadTimes"/>: what compiling kernels for this device has cost so far.</summary>
    public TimeSpan TotalLoadTime
    {
        get
        {
            var total = TimeSpan.Zero;
            foreach (var time in _loadTimes.Values)
                total += time;
            return total;
        }
    }

    /// <summary>
    /// Opens a device. <paramref name="selection"/> is "cpu", "cuda" (the best GPU) or "cuda:N"; when null the
    /// environment variable <see cref="EnvironmentVariable"/> (same syntax) decides, and when that is unset or
    /// empty, the best CUDA GPU if there is one, else the CPU accelerator.
    /// </summary>
    /// <exception cref="ArgumentException">The selection (or the environment variable) is malformed or names a GPU index that does not exist.</exception>
    /// <exception cref="InvalidOperationException">CUDA was asked for but no CUDA GPU is available.</exception>
    public static MlaDevice Create(string? selection = null)
    {
        var choice = Choose(selection, Environment.GetEnvironmentVariable(EnvironmentVariable), CudaDevices);
        var context = SharedContext;
        Device device = choice.Kind == MlaDeviceKind.Cuda
            ? context.GetCudaDevice(choice.CudaIndex!.Value)
            : context.GetCPUDevice(0);
        return new MlaDevice(device.CreateAccelerator(context), choice);
    }

    /// <summary>
    /// The device-choice rule of <see cref="Create"/> as a pure function: <paramref name="selection"/> beats
    /// <paramref name="environmentValue"/>, which beats the automatic choice among <paramref name="cudaDevices"/>.
    /// An empty or blank environment value counts as unset; an empty selection is an error.
    /// The automatic choice takes the GPU with the most memory, then the most SMs, then the lowest index.
    /// </summary>
    public static MlaDeviceChoice Choose(string? selection, string? environmentValue, IReadOnlyList<CudaDeviceDescription> cudaDevices)
    {
        ArgumentNullException.ThrowIfNull(cudaDevices);
        if (selection is not null)
            return Parse(selection, $"selection={selection}", $"Argument selection \"{selection}\"", nameof(selection), cudaDevices);
        if (!string.IsNullOrWhiteSpace(environmentValue))
        {
            return Parse(environmentValue, $"{EnvironmentVariable}={environmentValue}",
                $"Environment variable {EnvironmentVariable}=\"{environmentValue}\"", EnvironmentVariable, cudaDevices);
        }
        if (cudaDevices.Count == 0)
            return new MlaDeviceChoice(MlaDeviceKind.Cpu, null, "no CUDA GPU found, using the CPU accelerator");
        var best = Best(cudaDevices);
        return new MlaDeviceChoice(MlaDeviceKind.Cuda, best.Index, $"best of {cudaDevices.Count} CUDA GPU(s): {best}");
    }

    /// <summary>
    /// Returns the value loaded for <paramref name="key"/> on this device, calling <paramref name="load"/> only the
    /// first time (once even when threads race) and recording its wall time in <see cref="LoadTimes"/>.
    /// A load that throws is not cached: the next call tries again. Loaded values that are
    /// <see cref="IDisposable"/> are disposed with the device.
    /// </summary>
    /// <exception cref="InvalidOperationException">The key was loaded before as a different type, or the loader returned null.</exception>
    public T GetOrLoad<T>(string key, Func<Accelerator, T> load)
        where T : class
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(load);
        ThrowIfDisposed();
        var entry = _loaded.GetOrAdd(
            key,
            static (k, state) => new Lazy<object>(() => state.Device.LoadTimed(k, state.Load), LazyThreadSafetyMode.ExecutionAndPublication),
            (Device: this, Load: (Func<Accelerator, object>)load));
        object value;
        try
        {
            value = entry.Value;
        }
        catch
        {
            // Lazy would replay the exception forever; forget the entry so a later call can retry.
            _loaded.TryRemove(new KeyValuePair<string, Lazy<object>>(key, entry));
            throw;
        }
        return value as T ?? throw new InvalidOperationException(
            $"Kernel key '{key}' was loaded as {value.GetType().FullName}, but is now asked for as {typeof(T).FullName}.");
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        foreach (var entry in _loaded.Values)
        {
            if (entry.IsValueCreated && entry.Value is IDisposable disposable)
                disposable.Dispose();
        }
        _loaded.Clear();
        _accelerator.Dispose();
    }

    public override string ToString() => $"{Selection} {Name} ({Reason})";

    private object LoadTimed(string key, Func<Accelerator, object> load)
    {
        var stopwatch = Stopwatch.StartNew();
        object? value = load(_accelerator);
        stopwatch.Stop();
        if (value is null)
            throw new InvalidOperationException($"The loader for kernel key '{key}' returned null.");
        _loadTimes[key] = stopwatch.Elapsed;
        return value;
    }

    private void ThrowIfDisposed()
    {
        if (IsDisposed)
            throw new ObjectDisposedException(nameof(MlaDevice), $"The MlaDevice {Selection} ({Name}) was disposed.");
    }

    private static MlaDeviceChoice Parse(
        string text, string reason, string source, string paramName, IReadOnlyList<CudaDeviceDescription> cudaDevices)
    {
        const string Expected = "expected \"cpu\", \"cuda\" or \"cuda:N\" with N a CUDA device index";
        string normalized = text.Trim();
        if (normalized.Equals("cpu", StringComparison.OrdinalIgnoreCase))
            return new MlaDeviceChoice(MlaDeviceKind.Cpu, null, reason);
        if (normalized.Equals("cuda", StringComparison.OrdinalIgnoreCase))
        {
            ThrowIfNoCuda(source, cudaDevices);
            var best = Best(cudaDevices);
            return new MlaDeviceChoice(MlaDeviceKind.Cuda, best.Index, $"{reason}: best of {cudaDevices.Count} CUDA GPU(s): {best}");
        }
        const string CudaPrefix = "cuda:";
        if (normalized.StartsWith(CudaPrefix, StringComparison.OrdinalIgnoreCase))
        {
            string digits = normalized[CudaPrefix.Length..];
            if (!int.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out int index))
                throw new ArgumentException($"{source} is not a device selection: {Expected}, but \"{digits}\" is not an index.", paramName);
            ThrowIfNoCuda(source, cudaDevices);
            if (index >= cudaDevices.Count)
            {
                throw new ArgumentException(
                    $"{source} names CUDA device {index}, but {cudaDevices.Count} CUDA GPU(s) exist: expected an index in 0..{cudaDevices.Count - 1}.",
                    paramName);
            }
            return new MlaDeviceChoice(MlaDeviceKind.Cuda, index, $"{reason}: {cudaDevices[index]}");
        }
        throw new ArgumentException($"{source} is not a device selection: {Expected}.", paramName);
    }

    private static void ThrowIfNoCuda(string source, IReadOnlyList<CudaDeviceDescription> cudaDevices)
    {
        if (cudaDevices.Count == 0)
        {
            throw new InvalidOperationException(
                $"{source} asks for a CUDA GPU, but no CUDA GPU was found (no NVIDIA driver, no GPU, or no GPU of an architecture ILGPU supports). "
                + "Select \"cpu\", or pass no selection to fall back to the CPU accelerator.");
        }
    }

    private static CudaDeviceDescription Best(IReadOnlyList<CudaDeviceDescription> cudaDevices)
    {
        var best = cudaDevices[0];
        foreach (var candidate in cudaDevices)
        {
            bool better = candidate.MemoryBytes > best.MemoryBytes
                || (candidate.MemoryBytes == best.MemoryBytes && candidate.Multiprocessors > best.Multiprocessors)
                || (candidate.MemoryBytes == best.MemoryBytes && candidate.Multiprocessors == best.Multiprocessors && candidate.Index < best.Index);
            if (better)
                best = candidate;
        }
        return best;
    }

    private static IReadOnlyList<CudaDeviceDescription> DescribeCudaDevices()
    {
        var devices = SharedContext.GetCudaDevices();
        var descriptions = new CudaDeviceDescription[devices.Count];
        for (int i = 0; i < devices.Count; i++)
            descriptions[i] = new CudaDeviceDescription(i, devices[i].Name, devices[i].MemorySize, devices[i].NumMultiprocessors);
        return Array.AsReadOnly(descriptions);
    }
}
