using System;
using System.Collections.Generic;
using ILGPU;
using ILGPU.Runtime;
using MlaGen.Cache;
using MlaGen.Kernels;

namespace MlaGen;

/// <summary>
/// One expanded-form (non-absorbed) attention launch over a latent cache, with its device buffers planned: per-head
/// queries with RoPE, kv_b_proj over every key of the call's sequences (the whole cached prefix plus the new tokens),
/// and causal attention that writes the head outputs o_proj reads. <see cref="MlaLayer.Forward"/> runs one when the form
/// is expanded; benchmarks fill <see cref="Query"/> and time the three launches. Views stay valid until the layer's next call.
/// </summary>
public sealed class ExpandedAttentionLaunch : ILayerAttention
{
    private readonly MlaKernelSet _kernels;
    private readonly HeadQueryParams _query;
    private readonly KeyValueExpandParams _expand;
    private readonly ExpandedAttentionParams _attention;

    internal ExpandedAttentionLaunch(MlaKernelSet kernels, LatentCache cache, LayerScratch scratch, AcceleratorStream stream,
        ArrayView<ushort> kvUp, ReadOnlySpan<SequenceId> sequences, ReadOnlySpan<int> newTokens, ReadOnlySpan<int> starts, int[] slots, int[] positions,
        MlaForwardOptions options)
    {
        _kernels = kernels;
        var spec = kernels.Spec;
        Kind = kernels.ExpandedForm;

        // Key rows (every position of each sequence with new tokens) and query tiles, longest first.
        int tokens = slots.Length, keys = 0;
        for (int i = 0; i < sequences.Length; i++)
        {
            if (newTokens[i] > 0)
                keys += starts[i] + newTokens[i];
        }
        Tokens = tokens;
        Keys = keys;
        var keyCacheRow = new int[Math.Max(1, keys)];
        var tiles = new List<(int FirstToken, int Tokens, int FirstPosition, int KeyStart)>();
        int token = 0, key = 0;
        for (int i = 0; i < sequences.Length; i++)
        {
            if (newTokens[i] == 0)
                continue;
            int[] pages = cache.GetPages(sequences[i]);
            int length = starts[i] + newTokens[i];
            for (int j = 0; j < length; j++)
                keyCacheRow[key + j] = pages[j / spec.PageSize] * spec.PageSize + j % spec.PageSize;
            for (int j = 0; j < newTokens[i]; j += kernels.ExpandedQueryTile)
                tiles.Add((token + j, Math.Min(kernels.ExpandedQueryTile, newTokens[i] - j), starts[i] + j, key));
            token += newTokens[i];
            key += length;
        }
        tiles.Sort((a, b) => (b.FirstPosition + b.Tokens).CompareTo(a.FirstPosition + a.Tokens)); // longest first: the causal tail fills in behind
        Tiles = tiles.Count;

        Cache = scratch.Address(stream, cache, slots, positions);
        TokenSlot = Cache.TokenSlot;
        TokenPosition = Cache.TokenPosition;
        var keyRows = scratch.KeyCacheRow.Upload(stream, keyCacheRow);
        Query = scratch.Query.Get((long)tokens * spec.Heads * spec.QHeadDim);
        HeadQuery = scratch.HeadQuery.Get((long)tokens * spec.Heads * spec.QHeadDim);
        KeyNope = scratch.KeyNope.Get((long)spec.Heads * keys * spec.NopeHeadDim);
        Value = scratch.Value.Get((long)spec.Heads * keys * spec.VHeadDim);
        HeadOutput = scratch.Heads.Get((long)tokens * spec.Heads * spec.VHeadDim);
        Lse = scratch.Lse.Get((long)tokens * spec.Heads);
        long pagesAddress = cache.PagesView.LoadEffectiveAddressAsPtr().ToInt64();

        _query = new HeadQueryParams { Query = Query, TokenPosition = TokenPosition, HeadQuery = HeadQuery, Tokens = tokens };
        _expand = new KeyValueExpandParams
        {
            Pages = cache.PagesView,
            PagesAddress = pagesAddress,
            KeyCacheRow = keyRows,
            KvUp = kvUp,
            KvUpAddress = kvUp.LoadEffectiveAddressAsPtr().ToInt64(),
            KeyNope = KeyNope,
            Value = Value,
            Keys = keys,
        };
        _attention = new ExpandedAttentionParams
        {
            HeadQuery = HeadQuery,
            KeyNope = KeyNope,
            KeyNopeAddress = KeyNope.LoadEffectiveAddressAsPtr().ToInt64(),
            Value = Value,
            ValueAddress = Value.LoadEffectiveAddressAsPtr().ToInt64(),
            Pages = cache.PagesView,
            PagesAddress = pagesAddress,
            KeyCacheRow = keyRows,
            Keys = keys,
            TileFirstToken = scratch.TileFirstToken.Upload(stream, tiles.ConvertAll(x => x.FirstToken).ToArray()),
            TileTokens = scratch.TileTokens.Upload(stream, tiles.ConvertAll(x => x.Tokens).ToArray()),
            TileFirstPosition = scratch.TileFirstPosition.Upload(stream, tiles.ConvertAll(x => x.FirstPosition).ToArray()),
            TileKeyStart = scratch.TileKeyStart.Upload(stream, tiles.ConvertAll(x => x.KeyStart).ToArray()),
            Tiles = Tiles,
            HeadOutput = HeadOutput,
            HeadOutputAddress = HeadOutput.LoadEffectiveAddressAsPtr().ToInt64(),
            Lse = Lse,
        };
        if (options.PoisonBuffers)
        {
            HeadQuery.MemSet(stream, 0xFF);
            KeyNope.MemSet(stream, 0xFF);
            Value.MemSet(stream, 0xFF);
            HeadOutput.MemSet(stream, 0xFF); // all-ones bits are a NaN
            Lse.MemSet(stream, 0xFF);
        }
    }

    /// <summary>Serial (CPU) or tensor-core (CUDA) kernels.</summary>
    public ExpandedAttentionKind Kind { get; }

    /// <summary>Whether the tensor-core kernels run (CUDA), not the serial ones.</summary>
    public bool UsesTensorCores => Kind.RunsOnTensorCores();

    public int Tokens { get; }

    /// <summary>Keys of the call: every position of every sequence that has new tokens.</summary>
    public int Keys { get; }

    /// <summary>Work items per head: query tiles of up to 64 tokens of one sequence.</summary>
    public int Tiles { get; }

    /// <summary><c>[T, H, nope + rope]</c> fp32: q as q_proj (or q_b_proj) writes it, before RoPE.</summary>
    public ArrayView<float> Query { get; }

    /// <summary><c>[T, H, nope + rope]</c> BF16: [q_nope | RoPE(q_pe)].</summary>
    public ArrayView<ushort> HeadQuery { get; }

    /// <summary><c>[H, Keys, nope]</c> BF16: W_UK·c_kv of every key.</summary>
    public ArrayView<ushort> KeyNope { get; }

    /// <summary><c>[H, Keys, v]</c> BF16: W_UV·c_kv of every key.</summary>
    public ArrayView<ushort> Value { get; }

    /// <summary><c>[T, H, v]</c> fp32: attention output per head, what o_proj reads.</summary>
    public ArrayView<float> HeadOutput { get; }

    /// <summary><c>[T, H]</c> natural-log log-sum-exp of the scaled scores.</summary>
    public ArrayView<float> Lse { get; }

    public ArrayView<int> TokenSlot { get; }
    public ArrayView<int> TokenPosition { get; }

    /// <summary>The cache and this call's token slots and positions, as the cache-write kernel addresses them.</summary>
    public CacheAddressing Cache { get; }

    /// <summary>RoPE and BF16 of <see cref="Query"/> into <see cref="HeadQuery"/>.</summary>
    public void LaunchQuery(AcceleratorStream stream) => _kernels.HeadQuery(stream, _query);

    /// <summary>kv_b_proj over every key's cached latent row into <see cref="KeyNope"/> and <see cref="Value"/>.</summary>
    public void LaunchExpand(AcceleratorStream stream) => _kernels.KeyValueExpand(stream, _expand);

    /// <summary>Causal attention into <see cref="HeadOutput"/> and <see cref="Lse"/>.</summary>
    public void LaunchAttention(AcceleratorStream stream) => _kernels.ExpandedAttention(stream, _attention);

    /// <summary>The three launches in order.</summary>
    public void Launch(AcceleratorStream stream)
    {
        LaunchQuery(stream);
        LaunchExpand(stream);
        LaunchAttention(stream);
    }

    MlaAttentionForm ILayerAttention.Form => MlaAttentionForm.Expanded;

    void ILayerAttention.Run(AcceleratorStream stream) => Launch(stream);

    private static ArrayView<int> Upload(AcceleratorStream stream, DeviceScratch<int> scratch, List<int> values)
    {
        var view = scratch.Get(values.Count);
        if (values.Count > 0)
            view.SubView(0, values.Count).CopyFromCPU(stream, values.ToArray());
        return view;
    }
}

/// <summary>What the layer needs of either attention form: the call's cache addressing, where q goes in, and one run.</summary>
internal interface ILayerAttention
{
    int Tokens { get; }
    ArrayView<int> TokenPosition { get; }
    CacheAddressing Cache { get; }

    /// <summary>q <c>[T, H, nope + rope]</c>: the layer's projections write it here.</summary>
    ArrayView<float> Query { get; }
    ArrayView<float> Lse { get; }
    bool UsesTensorCores { get; }
    MlaAttentionForm Form { get; }

    /// <summary><c>[T, H, v]</c>: attention output per head, what o_proj reads.</summary>
    ArrayView<float> HeadOutput { get; }

    /// <summary>Runs attention from <see cref="Query"/> to <see cref="HeadOutput"/> and <see cref="Lse"/>.</summary>
    void Run(AcceleratorStream stream);
}
