using System;
using System.Collections.Generic;
using ILGPU;
using ILGPU.Runtime;
using MlaGen.Devices;
using MlaGen.Kernels;

namespace MlaGen.DecodeBenchmark;

/// <summary>
/// The tensor-core split-KV kernel (CUDA only): plans work items with <see cref="SplitKvScheduler"/> exactly as
/// <see cref="AttentionLaunch"/> does inside the layer, then runs TensorCoreAttention + TensorCoreCombine. The attention
/// launch can be replaced (same parameters, same grid) to time another build of the kernel, e.g. one loaded by
/// <see cref="PtxKernelLoader"/> with a register cap (<see cref="DecodeVariants"/>).
/// </summary>
internal sealed class TensorCoreDecodeAttention : IDecodeAttention
{
    private readonly MlaDevice _device;
    private readonly MlaKernelSet _kernels;
    private readonly Action<AcceleratorStream, TensorCoreAttentionParams>? _attention;
    private readonly DecodeTiling? _tiling;

    /// <param name="attention">Launches the attention kernel instead of the set's (null: the set's own launch).</param>
    /// <param name="tiling">The replacement kernel's work item (required with <paramref name="attention"/>).</param>
    /// <param name="variant">Appended to <see cref="Name"/> when <paramref name="attention"/> is given.</param>
    public TensorCoreDecodeAttention(MlaDevice device, MlaKernelSet kernels,
        Action<AcceleratorStream, TensorCoreAttentionParams>? attention = null, DecodeTiling? tiling = null, string? variant = null)
    {
        if (!kernels.HasTensorCoreDecode)
            throw new ArgumentException($"{kernels.Spec.Name} has no tensor-core decode kernel on {device.Name}.", nameof(kernels));
        if (attention is not null && tiling is null)
            throw new ArgumentException("A replaced attention launch needs its kernel's tiling: the plan and the combine depend on it.", nameof(tiling));
        _device = device;
        _kernels = kernels;
        _attention = attention;
        _tiling = tiling;
        string kernel = attention is not null || kernels.DecodeForm == DecodeAttentionKind.TensorCore
            ? "mma.sync bf16"
            : "wgmma bf16 sm_90a";
        Name = $"tensor-core split-KV ({kernel}) + combine" + (attention is null ? "" : $" [{variant ?? "replaced attention launch"}]");
    }

    public string Name { get; }

    /// <summary>Q and P enter the MMA as bf16 (2^-9 relative each): a stage fed identical cache rows agrees to ~3e-3, not 1e-6.</summary>
    public double StageTolerance => 1e-2;

    public IDecodeLaunch Prepare(DecodeProblem problem)
    {
        var spec = _kernels.Spec;
        var slots = new int[problem.Tokens];
        var positions = new int[problem.Tokens];
        problem.Cache.TokenSlot.SubView(0, problem.Tokens).CopyToCPU(slots);
        problem.Cache.TokenPosition.SubView(0, problem.Tokens).CopyToCPU(positions);
        // Tokens of one sequence are contiguous in the problem: group runs of the same slot.
        var sequenceTokens = new List<int>();
        var lastPositions = new List<int>();
        for (int t = 0; t < slots.Length; t++)
        {
            if (t == 0 || slots[t] != slots[t - 1])
            {
                sequenceTokens.Add(0);
                lastPositions.Add(0);
            }
            sequenceTokens[^1]++;
            lastPositions[^1] = positions[t];
        }
        // The kernel the layer runs (AttentionLaunch: the set's fastest).
        var tokensPerSequence = sequenceTokens.ToArray();
        var kernel = _kernels.DecodeForm;
        var tiling = _tiling ?? _kernels.TilingOf(kernel);
        var plan = SplitKvScheduler.Build(tokensPerSequence, lastPositions.ToArray(), spec.Heads, tiling,
            _device.Accelerator.NumMultiprocessors * tiling.CtasPerSm);
        Action<AcceleratorStream, TensorCoreAttentionParams> attention = _attention ?? ((stream, p) => _kernels.TensorCoreAttention(stream, p, kernel));
        return new Launch(_device.Accelerator, _kernels, problem, plan, slots, positions, tiling.Rows, attention);
    }

    private sealed class Launch : IDecodeLaunch
    {
        private readonly MlaKernelSet _kernels;
        private readonly List<MemoryBuffer> _buffers = new();
        private readonly TensorCoreAttentionParams _attention;
        private readonly TensorCoreCombineParams _combine;
        private readonly Action<AcceleratorStream, TensorCoreAttentionParams> _attentionLaunch;

        public Launch(Accelerator accelerator, MlaKernelSet kernels, DecodeProblem problem, SplitKvScheduler.Plan plan, int[] tokenSlot, int[] tokenPosition, int blockRows,
            Action<AcceleratorStream, TensorCoreAttentionParams> attentionLaunch)
        {
            _kernels = kernels;
            _attentionLaunch = attentionLaunch;
            int latent = kernels.Spec.LatentRank;
            ArrayView<int> Ints(int[] values)
            {
                var buffer = accelerator.Allocate1D(values.Length == 0 ? new[] { 0 } : values);
                _buffers.Add(buffer);
                return buffer.View;
            }
            var partialOut = accelerator.Allocate1D<float>((long)plan.Items * blockRows * latent);
            var partialLse = accelerator.Allocate1D<float>((long)plan.Items * blockRows);
            _buffers.Add(partialOut);
            _buffers.Add(partialLse);
            ScratchBytes = (partialOut.Length + partialLse.Length) * sizeof(float);
            Splits = plan.Items;
            (_attention, _combine) = plan.ToParams(new TensorCoreAttentionParams
            {
                AbsorbedQuery = problem.AbsorbedQuery,
                Cache = problem.Cache,
                PartialOutput = partialOut.View,
                PartialLse = partialLse.View,
                LatentOutput = problem.LatentOutput,
                Lse = problem.Lse,
            }, blockRows, tokenSlot, tokenPosition, (_, values) => Ints(values));
        }

        /// <summary>Work items of the plan (the tensor-core kernel's unit of split-KV).</summary>
        public int Splits { get; }

        public long ScratchBytes { get; }

        public void Enqueue(AcceleratorStream stream)
        {
            _attentionLaunch(stream, _attention);
            _kernels.TensorCoreCombine(stream, _combine);
        }

        public void Dispose()
        {
            foreach (var b in _buffers)
                b.Dispose();
        }
    }
}
