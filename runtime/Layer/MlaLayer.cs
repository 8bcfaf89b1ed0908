using System;
using System.Collections.Generic;
using ILGPU;
using ILGPU.Runtime;
using MlaGen.Cache;
using MlaGen.Devices;
using MlaGen.Kernels;
using MlaGen.Weights;

namespace MlaGen;

/// <summary>
/// One DeepSeek MLA attention layer on a device: its weights uploaded as BF16, the generated kernels of its shape,
/// and the call order of the absorbed forward pass. Create it through the generated <c>CreateLayer</c>.
/// </summary>
public sealed class MlaLayer : IDisposable
{
    private readonly Dictionary<string, MemoryBuffer1D<ushort, Stride1D.Dense>> _weights = new(StringComparer.Ordinal);
    private readonly LayerScratch _scratch;
    private readonly AcceleratorStream _stream;
    private readonly object _gate = new();
    private bool _disposed;

    public MlaLayer(MlaDevice device, MlaSpec spec, MlaKernelSet kernels, MlaWeights weights)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(kernels);
        ArgumentNullException.ThrowIfNull(weights);
        if (!kernels.Spec.IsSameShape(spec))
            throw new ArgumentException($"Kernels are for {kernels.Spec.ShapeText}, the layer is {spec.ShapeText}.", nameof(kernels));
        if (!weights.Spec.IsSameShape(spec))
            throw new ArgumentException($"Weights are for {weights.Spec.ShapeText}, the layer is {spec.ShapeText}.", nameof(weights));
        Device = device;
        Spec = spec;
        Kernels = kernels;
        var accelerator = device.Accelerator;
        try
        {
            foreach (var (name, tensor) in weights.Tensors)
                _weights[name] = accelerator.Allocate1D(tensor.Data);
        }
        catch
        {
            foreach (var buffer in _weights.Values)
                buffer.Dispose();
            throw;
        }
        _scratch = new LayerScratch(accelerator);
        _stream = accelerator.CreateStream();
    }

    public MlaDevice Device { get; }
    public MlaSpec Spec { get; }
    public MlaKernelSet Kernels { get; }

    /// <summary>This layer's own stream: two layers on one GPU run concurrently, each in order on its stream.</summary>
    public AcceleratorStream Stream => _stream;

    /// <summary>A latent cache of this layer's shape on this layer's device.</summary>
    public LatentCache CreateCache(int numPages, int maxSequences, int maxPagesPerSequence)
    {
        ThrowIfDisposed();
        return new LatentCache(Device, Spec, numPages, maxSequences, maxPagesPerSequence);
    }

    /// <summary>Prefill (or a chunk of it): all of <paramref name="hidden"/> <c>[T, dModel]</c> belongs to one sequence.</summary>
    public MlaForwardResult Prefill(LatentCache cache, SequenceId sequence, ReadOnlySpan<float> hidden, MlaForwardOptions? options = null)
    {
        int tokens = hidden.Length / Math.Max(1, Spec.DModel);
        return Forward(cache, new[] { sequence }, new[] { tokens }, hidden, options);
    }

    /// <summary>One new token per sequence; <paramref name="hidden"/> is <c>[sequences, dModel]</c>.</summary>
    public MlaForwardResult Decode(LatentCache cache, ReadOnlySpan<SequenceId> sequences, ReadOnlySpan<float> hidden, MlaForwardOptions? options = null)
    {
        var ones = new int[sequences.Length];
        Array.Fill(ones, 1);
        return Forward(cache, sequences, ones, hidden, options);
    }

    /// <summary>
    /// Appends <paramref name="newTokens"/>[i] tokens to each sequence and returns the attention output of every new token.
    /// <paramref name="hidden"/> holds the new tokens' hidden states <c>[Σ newTokens, dModel]</c>, sequence by sequence.
    /// A new token at position p attends to positions 0..p of its sequence (causal). Zero new tokens is valid and does nothing.
    /// Bad arguments throw before the cache changes.
    /// </summary>
    public MlaForwardResult Forward(LatentCache cache, ReadOnlySpan<SequenceId> sequences, ReadOnlySpan<int> newTokens,
        ReadOnlySpan<float> hidden, MlaForwardOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(cache);
        options ??= MlaForwardOptions.Default;
        lock (_gate)
        {
            ThrowIfDisposed();
            ValidateCache(cache);
            if (newTokens.Length != sequences.Length)
                throw new ArgumentException(
                    $"newTokens has {newTokens.Length} entries, expected one per sequence ({sequences.Length}).", nameof(newTokens));
            if (options.Splits < 0 || options.Splits > MlaForwardOptions.MaxSplits)
                throw new ArgumentOutOfRangeException(nameof(options), options.Splits, $"Splits must be 0 (automatic) to {MlaForwardOptions.MaxSplits}.");
            long total = 0;
            for (int i = 0; i < newTokens.Length; i++)
            {
                if (newTokens[i] < 0)
                    throw new ArgumentOutOfRangeException(nameof(newTokens), newTokens[i], $"newTokens[{i}] must be 0 or more.");
                total += newTokens[i];
            }
            if (total * Spec.DModel != hidden.Length)
                throw new ArgumentException(
                    $"hidden has {hidden.Length} values, expected {total} tokens × dModel {Spec.DModel} = {total * Spec.DModel}.", nameof(hidden));
            ValidateSequences(cache, sequences, newTokens);
            int tokens = checked((int)total);

            // Positions continue each sequence; Reserve validates ids, capacity and MaxPositions before changing anything.
            var starts = new int[sequences.Length];
            for (int i = 0; i < sequences.Length; i++)
                starts[i] = cache.GetLength(sequences[i]);
            var form = ResolveForm(options.Form, newTokens, starts);
            cache.Reserve(sequences, newTokens);
            if (tokens == 0)
                return MlaForwardResult.Empty(Spec.Heads);
            ILayerAttention attention = form == MlaAttentionForm.Expanded
                ? PlanExpandedAttention(cache, sequences, newTokens, starts, options)
                : PlanAttention(cache, sequences, newTokens, starts, options);
            return Run(attention, hidden.ToArray(), options);
        }
    }

    /// <summary>The form a call runs: the caller's, or the layer's rule for Auto (see <see cref="AttentionFormRule"/>).</summary>
    private MlaAttentionForm ResolveForm(MlaAttentionForm requested, ReadOnlySpan<int> newTokens, ReadOnlySpan<int> starts)
    {
        if (requested == MlaAttentionForm.Auto)
            return AttentionFormRule.Choose(Kernels, newTokens, starts, Device.Accelerator.NumMultiprocessors);
        if (requested == MlaAttentionForm.Expanded && Kernels.ExpandedForm == ExpandedAttentionKind.None)
            throw new ArgumentException(
                $"options.Form is Expanded, but {Spec.Name}'s kernels on {Device} have no expanded form (see HasTensorCorePrefill); expected Auto or Absorbed.", "options");
        if (requested is not (MlaAttentionForm.Absorbed or MlaAttentionForm.Expanded))
            throw new ArgumentOutOfRangeException("options", requested, "Form must be Auto, Absorbed or Expanded.");
        return requested;
    }

    /// <summary>
    /// Plans attention for the last <paramref name="newTokens"/>[i] tokens already in the cache of each sequence, without
    /// running the rest of the layer: fill <see cref="AttentionLaunch.AbsorbedQuery"/>, then <see cref="AttentionLaunch.Launch"/>.
    /// For benchmarks and pipelines that bring their own queries. Valid until the next call on this layer.
    /// </summary>
    public AttentionLaunch PlanAttention(LatentCache cache, ReadOnlySpan<SequenceId> sequences, ReadOnlySpan<int> newTokens, MlaForwardOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(cache);
        ValidateCache(cache);
        var starts = StartsOfLast(cache, sequences, newTokens);
        lock (_gate)
        {
            ThrowIfDisposed();
            return PlanAttention(cache, sequences, newTokens, starts, options ?? MlaForwardOptions.Default);
        }
    }

    /// <summary>
    /// Plans the expanded (non-absorbed) form for the last <paramref name="newTokens"/>[i] tokens already in the cache of
    /// each sequence: fill <see cref="ExpandedAttentionLaunch.Query"/>, then launch. For benchmarks and pipelines that
    /// bring their own queries. Valid until the next call on this layer.
    /// </summary>
    public ExpandedAttentionLaunch PlanExpandedAttention(LatentCache cache, ReadOnlySpan<SequenceId> sequences, ReadOnlySpan<int> newTokens, MlaForwardOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(cache);
        ValidateCache(cache);
        if (Kernels.ExpandedForm == ExpandedAttentionKind.None)
            throw new NotSupportedException($"{Spec.Name}'s kernels on {Device} have no expanded form (see HasTensorCorePrefill).");
        var starts = StartsOfLast(cache, sequences, newTokens);
        lock (_gate)
        {
            ThrowIfDisposed();
            return PlanExpandedAttention(cache, sequences, newTokens, starts, options ?? MlaForwardOptions.Default);
        }
    }

    private ExpandedAttentionLaunch PlanExpandedAttention(LatentCache cache, ReadOnlySpan<SequenceId> sequences, ReadOnlySpan<int> newTokens,
        int[] starts, MlaForwardOptions options)
    {
        var (slots, positions) = CallTokens(cache, sequences, newTokens, starts);
        return new(Kernels, cache, _scratch, _stream, W(MlaWeights.KvBProjName), sequences, newTokens, starts, slots, positions, options);
    }

    /// <summary>Where the last newTokens[i] tokens of each sequence start, checked against its length.</summary>
    private static int[] StartsOfLast(LatentCache cache, ReadOnlySpan<SequenceId> sequences, ReadOnlySpan<int> newTokens)
    {
        if (newTokens.Length != sequences.Length)
            throw new ArgumentException($"newTokens has {newTokens.Length} entries, expected one per sequence ({sequences.Length}).", nameof(newTokens));
        var starts = new int[sequences.Length];
        for (int i = 0; i < sequences.Length; i++)
        {
            int length = cache.GetLength(sequences[i]);
            if (newTokens[i] < 0 || newTokens[i] > length)
                throw new ArgumentOutOfRangeException(nameof(newTokens), newTokens[i], $"newTokens[{i}] must be 0 to the sequence's length {length}.");
            starts[i] = length - newTokens[i];
        }
        return starts;
    }

    /// <summary>The cache must hold this layer's shape on this layer's device.</summary>
    private void ValidateCache(LatentCache cache)
    {
        if (!cache.Spec.IsSameShape(Spec))
            throw new ArgumentException($"The cache holds {cache.Spec.ShapeText}, but this layer is {Spec.ShapeText}.", nameof(cache));
        if (!ReferenceEquals(cache.Device, Device))
            throw new ArgumentException(
                $"The cache lives on another MlaDevice instance ({cache.Device}) than this layer; expected this layer's device ({Device}).", nameof(cache));
    }

    private AttentionLaunch PlanAttention(LatentCache cache, ReadOnlySpan<SequenceId> sequences, ReadOnlySpan<int> newTokens,
        int[] starts, MlaForwardOptions options)
    {
        var (slots, positions) = CallTokens(cache, sequences, newTokens, starts);
        var sequenceTokens = new List<int>();
        var lastPositions = new List<int>();
        for (int i = 0; i < sequences.Length; i++)
        {
            if (newTokens[i] > 0)
            {
                sequenceTokens.Add(newTokens[i]);
                lastPositions.Add(starts[i] + newTokens[i] - 1);
            }
        }
        return new AttentionLaunch(Kernels, cache, _scratch, _stream, W(MlaWeights.KvBProjName), slots, positions, sequenceTokens.ToArray(),
            lastPositions.ToArray(), options);
    }

    /// <summary>Cache slot and position of each new token of the call, sequence by sequence.</summary>
    private static (int[] Slots, int[] Positions) CallTokens(LatentCache cache, ReadOnlySpan<SequenceId> sequences, ReadOnlySpan<int> newTokens, int[] starts)
    {
        int tokens = 0;
        foreach (int n in newTokens)
            tokens += n;
        var slots = new int[tokens];
        var positions = new int[tokens];
        int t = 0;
        for (int i = 0; i < sequences.Length; i++)
        {
            int slot = cache.GetSlot(sequences[i]);
            for (int j = 0; j < newTokens[i]; j++, t++)
            {
                slots[t] = slot;
                positions[t] = starts[i] + j;
            }
        }
        return (slots, positions);
    }

    private MlaForwardResult Run(ILayerAttention attention, float[] hidden, MlaForwardOptions options)
    {
        var stream = _stream;
        var s = Spec;
        int tokens = attention.Tokens;
        int rows = tokens * s.Heads;
        var absorbed = attention as AttentionLaunch;

        var x = _scratch.Hidden.Get((long)tokens * s.DModel);
        x.CopyFromCPU(stream, hidden);
        var query = attention.Query;
        var kvLatent = _scratch.KvLatent.Get((long)tokens * s.CacheRowValues);
        var output = _scratch.Output.Get((long)tokens * s.DModel);
        var qLatent = _scratch.QLatent.Get(s.HasQLatent ? (long)tokens * s.QLatentRank : 1);
        if (options.PoisonBuffers)
        {
            foreach (var view in new[] { query, kvLatent, attention.HeadOutput, output, qLatent })
                view.MemSet(stream, 0xFF); // all-ones bits are a NaN
            absorbed?.AbsorbedQuery.MemSet(stream, 0xFF);
        }

        if (s.HasQLatent)
        {
            Kernels.QueryLatentProjection(stream, new ProjectionParams { Input = x, Weight = W(MlaWeights.QAProjName), Output = qLatent, Tokens = tokens });
            Kernels.QueryLatentNorm(stream, new RmsNormParams { Values = qLatent, Weight = W(MlaWeights.QALayerNormName), Tokens = tokens });
            Kernels.QueryProjection(stream, new ProjectionParams { Input = qLatent, Weight = W(MlaWeights.QBProjName), Output = query, Tokens = tokens });
        }
        else
        {
            Kernels.QueryProjection(stream, new ProjectionParams { Input = x, Weight = W(MlaWeights.QProjName), Output = query, Tokens = tokens });
        }
        Kernels.KvLatentProjection(stream, new ProjectionParams { Input = x, Weight = W(MlaWeights.KvAProjWithMqaName), Output = kvLatent, Tokens = tokens });
        Kernels.KvCacheWrite(stream, new KvCacheWriteParams { KvLatent = kvLatent, NormWeight = W(MlaWeights.KvALayerNormName), Cache = attention.Cache, Tokens = tokens });
        attention.Run(stream);
        Kernels.OutputProjection(stream, new ProjectionParams { Input = attention.HeadOutput, Weight = W(MlaWeights.OProjName), Output = output, Tokens = tokens });
        stream.Synchronize();

        var result = new float[(long)tokens * s.DModel];
        output.SubView(0, result.Length).CopyToCPU(stream, result);
        var lseHost = new float[rows];
        attention.Lse.SubView(0, rows).CopyToCPU(stream, lseHost);
        float[]? absorbedHost = null, latentHost = null;
        if (options.CaptureIntermediates && absorbed is not null)
        {
            absorbedHost = new float[(long)rows * s.CacheRowValues];
            absorbed.AbsorbedQuery.SubView(0, absorbedHost.Length).CopyToCPU(stream, absorbedHost);
            latentHost = new float[(long)rows * s.LatentRank];
            absorbed.LatentOutput.SubView(0, latentHost.Length).CopyToCPU(stream, latentHost);
        }
        stream.Synchronize();
        return new MlaForwardResult(tokens, s.Heads, result, lseHost, absorbedHost, latentHost, attention.UsesTensorCores, attention.Form);
    }

    private ArrayView<ushort> W(string name) => _weights[name].View;

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    /// <summary>
    /// What Reserve checks about the ids, phrased for this method's arguments (Reserve names its own, 'ids'), and this
    /// layer's MaxPositions: a cache of the same shape made for another spec may allow positions beyond this layer's.
    /// </summary>
    private void ValidateSequences(LatentCache cache, ReadOnlySpan<SequenceId> sequences, ReadOnlySpan<int> newTokens)
    {
        for (int i = 0; i < sequences.Length; i++)
        {
            var id = sequences[i];
            int length;
            try
            {
                length = cache.GetLength(id);
            }
            catch (KeyNotFoundException e)
            {
                // The cache says why: freed, stale (slot reused), never created, or a slot it does not have.
                throw new ArgumentException($"sequences[{i}] is {id}, expected a live sequence of this cache; {e.Message}", nameof(sequences), e);
            }
            for (int j = 0; j < i; j++)
            {
                if (sequences[j] == id)
                    throw new ArgumentException($"sequences[{i}] repeats sequences[{j}] ({id}); expected each sequence at most once per call.", nameof(sequences));
            }
            long end = (long)length + newTokens[i];
            if (end > Spec.MaxPositions)
            {
                throw new ArgumentOutOfRangeException(nameof(newTokens), newTokens[i],
                    $"sequences[{i}] ({id}) holds {length} tokens; newTokens[{i}] = {newTokens[i]} would reach position {end - 1}, "
                    + $"expected positions 0..{Spec.MaxPositions - 1} (this layer's MaxPositions is {Spec.MaxPositions}).");
            }
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed)
                return;
            _disposed = true;
            foreach (var buffer in _weights.Values)
                buffer.Dispose();
            _weights.Clear();
            _scratch.Dispose();
            _stream.Dispose();
        }
    }
}
