using System;
using System.Collections.Generic;
using System.Linq;
using ILGPU;
using ILGPU.Runtime;
using MlaGen.Cache;
using MlaGen.Devices;
using MlaGen.Kernels;

namespace MlaGen;

/// <summary>
/// One absorbed-attention launch (attention + split combine) over a latent cache, with its device buffers planned:
/// the tensor-core kernel with its split-KV schedule where the shape and device allow, else the general kernel.
/// <see cref="MlaLayer.Forward"/> runs one per call; benchmarks fill <see cref="AbsorbedQuery"/> and time
/// <see cref="Launch"/>. Views stay valid until the layer's next call.
/// </summary>
public sealed class AttentionLaunch : ILayerAttention
{
    private readonly MlaKernelSet _kernels;
    private readonly ArrayView<ushort> _kvUp;
    private readonly AttentionParams _general;
    private readonly CombineParams _generalCombine;
    private readonly TensorCoreAttentionParams _tensorCore;
    private readonly TensorCoreCombineParams _tensorCoreCombine;

    internal AttentionLaunch(MlaKernelSet kernels, LatentCache cache, LayerScratch scratch, AcceleratorStream stream, ArrayView<ushort> kvUp,
        int[] slots, int[] positions, int[] sequenceTokens, int[] lastPositions, MlaForwardOptions options)
    {
        _kernels = kernels;
        _kvUp = kvUp;
        var spec = kernels.Spec;
        var accelerator = cache.Device.Accelerator;
        Tokens = slots.Length;
        Rows = Tokens * spec.Heads;
        var addressing = Cache = scratch.Address(stream, cache, slots, positions);
        TokenSlot = addressing.TokenSlot;
        TokenPosition = addressing.TokenPosition;
        Query = scratch.Query.Get((long)Rows * spec.QHeadDim);
        HeadOutput = scratch.Heads.Get((long)Rows * spec.VHeadDim);
        AbsorbedQuery = scratch.Absorbed.Get((long)Rows * spec.CacheRowValues);
        LatentOutput = scratch.LatentOut.Get((long)Rows * spec.LatentRank);
        Lse = scratch.Lse.Get(Rows);

        UsesTensorCores = kernels.HasTensorCoreDecode && options.TensorCores && options.Splits == 0;
        if (UsesTensorCores)
        {
            DecodeKernel = kernels.DecodeForm;
            var tiling = kernels.TilingOf(DecodeKernel);
            var plan = SplitKvScheduler.Build(sequenceTokens, lastPositions, spec.Heads, tiling,
                targetItems: accelerator.NumMultiprocessors * tiling.CtasPerSm);
            Parts = plan.Items;
            var partialOut = scratch.PartialOut.Get((long)plan.Items * tiling.Rows * spec.LatentRank);
            var partialLse = scratch.PartialLse.Get((long)plan.Items * tiling.Rows);
            (_tensorCore, _tensorCoreCombine) = plan.ToParams(new TensorCoreAttentionParams
            {
                AbsorbedQuery = AbsorbedQuery,
                Cache = addressing,
                PartialOutput = partialOut,
                PartialLse = partialLse,
                LatentOutput = LatentOutput,
                Lse = Lse,
            }, tiling.Rows, slots, positions, (array, values) => scratch.Plan(array).Upload(stream, values));
        }
        else
        {
            int maxVisible = 0;
            foreach (int p in positions)
                maxVisible = Math.Max(maxVisible, p + 1);
            int splits = options.Splits > 0 ? options.Splits : ChooseSplits(cache.Device, Rows, maxVisible);
            Parts = splits;
            var partialOut = scratch.PartialOut.Get((long)splits * Rows * spec.LatentRank);
            var partialLse = scratch.PartialLse.Get((long)splits * Rows);
            _general = new AttentionParams
            {
                AbsorbedQuery = AbsorbedQuery, Cache = addressing, PartialOutput = partialOut, PartialLse = partialLse,
                Tokens = Tokens, Splits = splits,
            };
            _generalCombine = new CombineParams
            {
                PartialOutput = partialOut, PartialLse = partialLse, LatentOutput = LatentOutput, Lse = Lse,
                Tokens = Tokens, Splits = splits,
            };
        }
        if (options.PoisonBuffers)
        {
            LatentOutput.MemSet(stream, 0xFF);
            Lse.MemSet(stream, 0xFF);
            (UsesTensorCores ? _tensorCore.PartialOutput : _general.PartialOutput).MemSet(stream, 0xFF);
            (UsesTensorCores ? _tensorCore.PartialLse : _general.PartialLse).MemSet(stream, 0xFF);
        }
    }

    public int Tokens { get; }
    public int Rows { get; }
    public bool UsesTensorCores { get; }

    /// <summary>The tensor-core kernel this call runs (<see cref="MlaKernelSet.DecodeForm"/>), or General.</summary>
    public DecodeAttentionKind DecodeKernel { get; }

    /// <summary>Work items (tensor-core path) or splits per row (general path).</summary>
    public int Parts { get; }

    /// <summary><c>[T, H, nope + rope]</c> fp32: q as q_proj (or q_b_proj) writes it; the layer absorbs it into <see cref="AbsorbedQuery"/>.</summary>
    public ArrayView<float> Query { get; }

    /// <summary><c>[T, H, v]</c> fp32: W_UV·o_lat per head, what o_proj reads (written by the layer's run, not by <see cref="Launch"/>).</summary>
    public ArrayView<float> HeadOutput { get; }

    /// <summary><c>[T, H, latent + rope]</c> fp32: [W_UKᵀ·q_nope | RoPE(q_pe)] per token and head.</summary>
    public ArrayView<float> AbsorbedQuery { get; }
    public ArrayView<float> LatentOutput { get; }
    public ArrayView<float> Lse { get; }
    public ArrayView<int> TokenSlot { get; }

    /// <summary>The cache and this call's token slots and positions, as kernels address them.</summary>
    public CacheAddressing Cache { get; }
    public ArrayView<int> TokenPosition { get; }

    /// <summary>Attention and the combine of its splits, on <paramref name="stream"/>.</summary>
    public void Launch(AcceleratorStream stream)
    {
        if (UsesTensorCores)
        {
            _kernels.TensorCoreAttention(stream, _tensorCore, DecodeKernel);
            _kernels.TensorCoreCombine(stream, _tensorCoreCombine);
        }
        else
        {
            _kernels.Attention(stream, _general);
            _kernels.Combine(stream, _generalCombine);
        }
    }

    /// <summary>The layer's absorbed run: q → absorbed query, attention and combine, then W_UV per head.</summary>
    MlaAttentionForm ILayerAttention.Form => MlaAttentionForm.Absorbed;

    void ILayerAttention.Run(AcceleratorStream stream)
    {
        _kernels.QueryAbsorb(stream, new QueryAbsorbParams { Query = Query, KvUp = _kvUp, TokenPosition = TokenPosition, AbsorbedQuery = AbsorbedQuery, Tokens = Tokens });
        Launch(stream);
        _kernels.ValueProjection(stream, new ValueProjectionParams { LatentOutput = LatentOutput, KvUp = _kvUp, HeadOutput = HeadOutput, Tokens = Tokens });
    }

    /// <summary>
    /// The general kernel's automatic split count: enough (row, split) warps to give every SM 32, at least 256 tokens
    /// per split, at most <see cref="MlaForwardOptions.MaxSplits"/>; on the CPU one split avoids redundant work.
    /// </summary>
    public static int ChooseSplits(MlaDevice device, int rows, int maxVisible)
    {
        ArgumentNullException.ThrowIfNull(device);
        if (!device.IsCuda)
            return 1;
        int warpsWanted = device.Accelerator.NumMultiprocessors * 32;
        int splits = (warpsWanted + rows - 1) / rows;
        int maxUseful = Math.Max(1, maxVisible / 256); // keep at least 256 tokens per split
        return Math.Clamp(Math.Min(splits, maxUseful), 1, MlaForwardOptions.MaxSplits);
    }
}

/// <summary>The device buffers a layer reuses across calls: they grow to the largest call and stay.</summary>
internal sealed class LayerScratch : IDisposable
{
    public LayerScratch(Accelerator a)
    {
        Hidden = new(a); QLatent = new(a); Query = new(a); KvLatent = new(a); Absorbed = new(a); PartialOut = new(a);
        PartialLse = new(a); LatentOut = new(a); Lse = new(a); Heads = new(a); Output = new(a);
        HeadQuery = new(a); KeyNope = new(a); Value = new(a); KeyCacheRow = new(a); TileFirstToken = new(a); TileTokens = new(a);
        TileFirstPosition = new(a); TileKeyStart = new(a);
        TokenSlot = new(a); TokenPosition = new(a);
        _plan = Enum.GetValues<SplitKvScheduler.PlanArray>().ToDictionary(array => array, _ => new DeviceScratch<int>(a));
    }

    private readonly Dictionary<SplitKvScheduler.PlanArray, DeviceScratch<int>> _plan;

    /// <summary>Where a split-KV plan's int array lives on the device.</summary>
    public DeviceScratch<int> Plan(SplitKvScheduler.PlanArray array) => _plan[array];

    /// <summary>Uploads the call's token slots and positions and returns the cache addressing kernels read them through.</summary>
    public CacheAddressing Address(AcceleratorStream stream, LatentCache cache, int[] slots, int[] positions)
    {
        var tokenSlot = TokenSlot.Get(slots.Length);
        tokenSlot.CopyFromCPU(stream, slots);
        var tokenPosition = TokenPosition.Get(positions.Length);
        tokenPosition.CopyFromCPU(stream, positions);
        return new CacheAddressing
        {
            Pages = cache.PagesView,
            BlockTable = cache.BlockTableView,
            BlockTableStride = cache.MaxPagesPerSequence,
            TokenSlot = tokenSlot,
            TokenPosition = tokenPosition,
        };
    }

    public DeviceScratch<float> Hidden { get; }
    public DeviceScratch<float> QLatent { get; }
    public DeviceScratch<float> Query { get; }
    public DeviceScratch<float> KvLatent { get; }
    public DeviceScratch<float> Absorbed { get; }
    public DeviceScratch<float> PartialOut { get; }
    public DeviceScratch<float> PartialLse { get; }
    public DeviceScratch<float> LatentOut { get; }
    public DeviceScratch<float> Lse { get; }
    public DeviceScratch<float> Heads { get; }
    public DeviceScratch<float> Output { get; }
    public DeviceScratch<ushort> HeadQuery { get; }
    public DeviceScratch<ushort> KeyNope { get; }
    public DeviceScratch<ushort> Value { get; }
    public DeviceScratch<int> KeyCacheRow { get; }
    public DeviceScratch<int> TileFirstToken { get; }
    public DeviceScratch<int> TileTokens { get; }
    public DeviceScratch<int> TileFirstPosition { get; }
    public DeviceScratch<int> TileKeyStart { get; }
    public DeviceScratch<int> TokenSlot { get; }
    public DeviceScratch<int> TokenPosition { get; }

    public void Dispose()
    {
        foreach (var s in new IDisposable[]
        {
            Hidden, QLatent, Query, KvLatent, Absorbed, PartialOut, PartialLse, LatentOut, Lse, Heads, Output, HeadQuery, KeyNope,
            Value, KeyCacheRow, TileFirstToken, TileTokens, TileFirstPosition, TileKeyStart, TokenSlot,
            TokenPosition,
        }.Concat(_plan.Values))
            s.Dispose();
    }
}
