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
    private const int MaxSplits = 64;
    private readonly Dictionary<string, MemoryBuffer1D<ushort, Stride1D.Dense>> _weights = new(StringComparer.Ordinal);
    private readonly DeviceScratch<float> _hidden, _qLatent, _query, _kvLatent, _absorbed, _partialOut, _partialLse, _latentOut, _lse, _heads, _output;
    private readonly DeviceScratch<int> _tokenSlot, _tokenPosition;
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
        _hidden = new(accelerator); _qLatent = new(accelerator); _query = new(accelerator); _kvLatent = new(accelerator);
        _absorbed = new(accelerator); _partialOut = new(accelerator); _partialLse = new(accelerator); _latentOut = new(accelerator);
        _lse = new(accelerator); _heads = new(accelerator); _output = new(accelerator);
        _tokenSlot = new(accelerator); _tokenPosition = new(accelerator);
    }

    public MlaDevice Device { get; }
    public MlaSpec Spec { get; }
    public MlaKernelSet Kernels { get; }

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
            if (!cache.Spec.IsSameShape(Spec))
                throw new ArgumentException($"The cache holds {cache.Spec.ShapeText}, but this layer is {Spec.ShapeText}.", nameof(cache));
            if (!ReferenceEquals(cache.Device, Device))
                throw new ArgumentException(
                    $"The cache lives on another MlaDevice instance ({cache.Device}) than this layer; expected this layer's device ({Device}).", nameof(cache));
            if (newTokens.Length != sequences.Length)
                throw new ArgumentException(
                    $"newTokens has {newTokens.Length} entries, expected one per sequence ({sequences.Length}).", nameof(newTokens));
            if (options.Splits < 0 || options.Splits > MaxSplits)
                throw new ArgumentOutOfRangeException(nameof(options), options.Splits, $"Splits must be 0 (automatic) to {MaxSplits}.");
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
            var slots = new int[tokens];
            var positions = new int[tokens];
            int t = 0;
            for (int i = 0; i < sequences.Length; i++)
            {
                int start = cache.GetLength(sequences[i]);
                int slot = cache.GetSlot(sequences[i]);
                for (int j = 0; j < newTokens[i]; j++, t++)
                {
                    slots[t] = slot;
                    positions[t] = start + j;
                }
            }
            cache.Reserve(sequences, newTokens);
            if (tokens == 0)
                return MlaForwardResult.Empty(Spec.Heads);
            return Run(cache, tokens, slots, positions, hidden.ToArray(), options);
        }
    }

    private MlaForwardResult Run(LatentCache cache, int tokens, int[] slots, int[] positions, float[] hidden, MlaForwardOptions options)
    {
        var stream = Device.Accelerator.DefaultStream;
        var s = Spec;
        int heads = s.Heads;
        int rows = tokens * heads;
        int maxVisible = 0;
        foreach (int p in positions)
            maxVisible = Math.Max(maxVisible, p + 1);
        int splits = options.Splits > 0 ? options.Splits : ChooseSplits(rows, maxVisible);

        var x = _hidden.Get((long)tokens * s.DModel);
        x.CopyFromCPU(hidden);
        var slotView = _tokenSlot.Get(tokens);
        slotView.CopyFromCPU(slots);
        var positionView = _tokenPosition.Get(tokens);
        positionView.CopyFromCPU(positions);
        var addressing = new CacheAddressing
        {
            Pages = cache.PagesView,
            BlockTable = cache.BlockTableView,
            BlockTableStride = cache.MaxPagesPerSequence,
            TokenSlot = slotView,
            TokenPosition = positionView,
        };

        var query = _query.Get((long)tokens * heads * s.QHeadDim);
        var kvLatent = _kvLatent.Get((long)tokens * s.CacheRowValues);
        var absorbed = _absorbed.Get((long)rows * s.CacheRowValues);
        var partialOut = _partialOut.Get((long)splits * rows * s.LatentRank);
        var partialLse = _partialLse.Get((long)splits * rows);
        var latentOut = _latentOut.Get((long)rows * s.LatentRank);
        var lse = _lse.Get(rows);
        var headOut = _heads.Get((long)tokens * heads * s.VHeadDim);
        var output = _output.Get((long)tokens * s.DModel);
        var qLatent = _qLatent.Get(s.HasQLatent ? (long)tokens * s.QLatentRank : 1);
        if (options.PoisonBuffers)
        {
            foreach (var view in new[] { query, kvLatent, absorbed, partialOut, partialLse, latentOut, lse, headOut, output, qLatent })
                view.MemSet(stream, 0xFF); // all-ones bits are a NaN
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
        Kernels.KvCacheWrite(stream, new KvCacheWriteParams { KvLatent = kvLatent, NormWeight = W(MlaWeights.KvALayerNormName), Cache = addressing, Tokens = tokens });

        Kernels.QueryAbsorb(stream, new QueryAbsorbParams { Query = query, KvUp = W(MlaWeights.KvBProjName), TokenPosition = positionView, AbsorbedQuery = absorbed, Tokens = tokens });

        Kernels.Attention(stream, new AttentionParams { AbsorbedQuery = absorbed, Cache = addressing, PartialOutput = partialOut, PartialLse = partialLse, Tokens = tokens, Splits = splits });
        Kernels.Combine(stream, new CombineParams { PartialOutput = partialOut, PartialLse = partialLse, LatentOutput = latentOut, Lse = lse, Tokens = tokens, Splits = splits });

        Kernels.ValueProjection(stream, new ValueProjectionParams { LatentOutput = latentOut, KvUp = W(MlaWeights.KvBProjName), HeadOutput = headOut, Tokens = tokens });
        Kernels.OutputProjection(stream, new ProjectionParams { Input = headOut, Weight = W(MlaWeights.OProjName), Output = output, Tokens = tokens });
        stream.Synchronize();

        var result = new float[(long)tokens * s.DModel];
        output.CopyToCPU(result);
        var lseHost = new float[rows];
        lse.CopyToCPU(lseHost);
        float[]? absorbedHost = null, latentHost = null;
        if (options.CaptureIntermediates)
        {
            absorbedHost = new float[(long)rows * s.CacheRowValues];
            absorbed.CopyToCPU(absorbedHost);
            latentHost = new float[(long)rows * s.LatentRank];
            latentOut.CopyToCPU(latentHost);
        }
        return new MlaForwardResult(tokens, heads, result, lseHost, absorbedHost, latentHost);
    }

    /// <summary>Enough (row, split) warps to fill the GPU; on the CPU one split avoids redundant work.</summary>
    private int ChooseSplits(int rows, int maxVisible)
    {
        if (!Device.IsCuda)
            return 1;
        int warpsWanted = Device.Accelerator.NumMultiprocessors * 32;
        int splits = (warpsWanted + rows - 1) / rows;
        int maxUseful = Math.Max(1, maxVisible / 256); // keep at least 256 tokens per split
        return Math.Clamp(Math.Min(splits, maxUseful), 1, MaxSplits);
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
            foreach (var scratch in new IDisposable[] { _hidden, _qLatent, _query, _kvLatent, _absorbed, _partialOut, _partialLse, _latentOut, _lse, _heads, _output, _tokenSlot, _tokenPosition })
                scratch.Dispose();
        }
    }
}
