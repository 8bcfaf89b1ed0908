using System;
using ILGPU;
using ILGPU.Runtime;
using MlaGen.Devices;
using MlaGen.Kernels;

namespace MlaGen.DecodeBenchmark;

/// <summary>
/// The inputs and outputs of one decode-attention launch, as a kernel sees them: absorbed queries
/// <c>[Tokens, H, latent + rope]</c> (fp32), the paged cache, and the latent output <c>[Tokens, H, latent]</c> with its
/// natural-log LSE <c>[Tokens, H]</c>.
/// </summary>
internal readonly record struct DecodeProblem(
    ArrayView<float> AbsorbedQuery, CacheAddressing Cache, int Tokens, int MaxVisible, ArrayView<float> LatentOutput, ArrayView<float> Lse);

/// <summary>A decode-attention implementation that the benchmark can check and time.</summary>
internal interface IDecodeAttention
{
    /// <summary>Short name for reports, e.g. "split-KV Attention + Combine".</summary>
    string Name { get; }

    /// <summary>Relative L2 bound of the attention stage fed identical inputs (1e-5 for fp32 kernels).</summary>
    double StageTolerance => 1e-5;

    /// <summary>Allocates what one problem needs (split scratch, ...) and returns the launch to repeat.</summary>
    IDecodeLaunch Prepare(DecodeProblem problem);
}

/// <summary>One prepared problem: <see cref="Enqueue"/> is everything inside the timed region.</summary>
internal interface IDecodeLaunch : IDisposable
{
    /// <summary>Split-KV parts (1 when the kernel does not split).</summary>
    int Splits { get; }

    /// <summary>Scratch bytes the launch holds besides inputs and outputs.</summary>
    long ScratchBytes { get; }

    void Enqueue(AcceleratorStream stream);
}

/// <summary>
/// THE place that says which decode kernel is checked and timed. To time the tensor-core kernel once it exists,
/// implement <see cref="IDecodeAttention"/> over its <c>MlaKernelSet</c> method and return it here (or add a
/// <c>--kernel</c> choice): the checks, timing and reports use only this interface.
/// </summary>
internal static class KernelUnderTest
{
    /// <summary>The tensor-core kernel where the shape and device have it (unless splits are forced), else the general one.</summary>
    public static IDecodeAttention Create(MlaDevice device, MlaKernelSet kernels, int splitsOverride, bool tensorCores = true) =>
        tensorCores && splitsOverride == 0 && kernels.HasTensorCoreDecode
            ? new TensorCoreDecodeAttention(device, kernels)
            : new SplitKvAttention(device, kernels, splitsOverride);
}

/// <summary>The generated general path: <c>Attention</c> writes per-split partial outputs, <c>Combine</c> merges them.</summary>
internal sealed class SplitKvAttention : IDecodeAttention
{
    /// <summary>Same bound as the layer's.</summary>
    public const int MaxSplits = MlaForwardOptions.MaxSplits;

    /// <summary>Largest split scratch (partial outputs and LSE) a launch may allocate.</summary>
    public const long MaxPartialBytes = 4L << 30;

    private readonly MlaDevice _device;
    private readonly MlaKernelSet _kernels;
    private readonly int _splitsOverride;

    public SplitKvAttention(MlaDevice device, MlaKernelSet kernels, int splitsOverride)
    {
        if (splitsOverride < 0 || splitsOverride > MaxSplits)
            throw new ArgumentOutOfRangeException(nameof(splitsOverride), splitsOverride, $"Splits must be 0 (automatic) to {MaxSplits}.");
        _device = device;
        _kernels = kernels;
        _splitsOverride = splitsOverride;
    }

    public string Name => $"split-KV Attention + Combine ({_kernels.Path} path)";

    public IDecodeLaunch Prepare(DecodeProblem problem)
    {
        int heads = _kernels.Spec.Heads;
        int latent = _kernels.Spec.LatentRank;
        int rows = problem.Tokens * heads;
        int splits = _splitsOverride > 0 ? _splitsOverride : AttentionLaunch.ChooseSplits(_device, rows, problem.MaxVisible);
        // Partial outputs are splits · rows · (latent + 1) fp32. The automatic choice keeps splits · rows ≤ 32 warps per
        // SM + rows (≈ 9 MB + rows · 2 KB on an H100); a forced count must stay under MaxPartialBytes.
        long perSplit = (long)rows * (latent + 1) * sizeof(float);
        if (perSplit * splits > MaxPartialBytes)
        {
            throw new ArgumentOutOfRangeException(nameof(problem), splits,
                $"{splits} splits of {rows} rows need {perSplit * splits / 1e9:F1} GB of partial outputs, more than {MaxPartialBytes / 1e9:F1} GB; use fewer splits.");
        }
        var partialOut = _device.Accelerator.Allocate1D<float>((long)splits * rows * latent);
        var partialLse = _device.Accelerator.Allocate1D<float>((long)splits * rows);
        return new Launch(_kernels, problem, splits, partialOut, partialLse);
    }

    private sealed class Launch : IDecodeLaunch
    {
        private readonly MlaKernelSet _kernels;
        private readonly MemoryBuffer1D<float, Stride1D.Dense> _partialOut, _partialLse;
        private readonly AttentionParams _attention;
        private readonly CombineParams _combine;

        public Launch(MlaKernelSet kernels, DecodeProblem problem, int splits,
            MemoryBuffer1D<float, Stride1D.Dense> partialOut, MemoryBuffer1D<float, Stride1D.Dense> partialLse)
        {
            _kernels = kernels;
            _partialOut = partialOut;
            _partialLse = partialLse;
            Splits = splits;
            _attention = new AttentionParams
            {
                AbsorbedQuery = problem.AbsorbedQuery,
                Cache = problem.Cache,
                PartialOutput = partialOut.View,
                PartialLse = partialLse.View,
                Tokens = problem.Tokens,
                Splits = splits,
            };
            _combine = new CombineParams
            {
                PartialOutput = partialOut.View,
                PartialLse = partialLse.View,
                LatentOutput = problem.LatentOutput,
                Lse = problem.Lse,
                Tokens = problem.Tokens,
                Splits = splits,
            };
        }

        public int Splits { get; }

        public long ScratchBytes => (_partialOut.Length + _partialLse.Length) * sizeof(float);

        public void Enqueue(AcceleratorStream stream)
        {
            _kernels.Attention(stream, _attention);
            _kernels.Combine(stream, _combine);
        }

        public void Dispose()
        {
            _partialOut.Dispose();
            _partialLse.Dispose();
        }
    }
}
