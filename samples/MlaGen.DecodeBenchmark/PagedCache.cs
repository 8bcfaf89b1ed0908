using System;
using System.Threading.Tasks;
using ILGPU;
using ILGPU.Runtime;
using MlaGen.Kernels;
using MlaGen.Numerics;

namespace MlaGen.DecodeBenchmark;

/// <summary>
/// A pool of cache pages in FlashMLA's layout <c>[numPages, PageSize, 1, latent + rope]</c> (BF16), filled once with
/// random rows and shared by every configuration of one row width. The value at flat index i is a pure function of
/// (seed, i), so a check can recompute any row on the host without keeping a copy of the pool.
/// </summary>
internal sealed class PagePool : IDisposable
{
    private const int ChunkValues = 1 << 24;
    private readonly MemoryBuffer1D<ushort, Stride1D.Dense> _pages;

    public PagePool(Accelerator accelerator, int pageSize, int rowValues, int numPages, ulong seed)
    {
        PageSize = pageSize;
        RowValues = rowValues;
        NumPages = numPages;
        Seed = seed;
        long values = (long)numPages * pageSize * rowValues;
        _pages = accelerator.Allocate1D<ushort>(values);
        var host = new ushort[Math.Min(values, ChunkValues)];
        for (long start = 0; start < values; start += ChunkValues)
        {
            int count = (int)Math.Min(ChunkValues, values - start);
            long first = start;
            Parallel.For(0, (count + 65535) / 65536, block =>
            {
                int begin = block * 65536;
                int end = Math.Min(count, begin + 65536);
                for (int i = begin; i < end; i++)
                    host[i] = ValueAt(seed, first + i);
            });
            _pages.View.BaseView.SubView(start, count).CopyFromCPU(new ReadOnlySpan<ushort>(host, 0, count));
        }
        accelerator.Synchronize();
    }

    public int PageSize { get; }
    public int RowValues { get; }
    public int NumPages { get; }
    public ulong Seed { get; }
    public long Bytes => (long)NumPages * PageSize * RowValues * sizeof(ushort);
    public ArrayView<ushort> Pages => _pages.View.BaseView;

    /// <summary>BF16 of a uniform value in [-1, 1) drawn from (seed, index) by SplitMix64.</summary>
    public static ushort ValueAt(ulong seed, long index)
    {
        ulong z = seed + (ulong)index * 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        z ^= z >> 31;
        int mantissa = (int)(z >> 40); // 24 random bits
        return Bf16.FromFloat((mantissa - (1 << 23)) * (1f / (1 << 23)));
    }

    /// <summary>The row at (page, slot) as floats (exact BF16 values).</summary>
    public void ReadRow(int page, int slot, Span<float> destination)
    {
        long start = ((long)page * PageSize + slot) * RowValues;
        for (int c = 0; c < RowValues; c++)
            destination[c] = Bf16.ToFloat(ValueAt(Seed, start + c));
    }

    public void Dispose() => _pages.Dispose();
}

/// <summary>
/// Everything one configuration launches with: a block table over a shuffled subset of the pool's pages (so the
/// table is not the identity), the slot and position of each query token, random absorbed queries
/// <c>[B·s_q, H, latent + rope]</c> (fp32), and the outputs.
/// </summary>
internal sealed class ConfigBuffers : IDisposable
{
    private readonly MemoryBuffer1D<int, Stride1D.Dense> _blockTable, _slots, _positions;
    private readonly MemoryBuffer1D<float, Stride1D.Dense> _query, _latentOut, _lse;

    public ConfigBuffers(Accelerator accelerator, BenchConfig config, PagePool pool, int seed)
    {
        Config = config;
        Pool = pool;
        int pageSize = pool.PageSize;
        int b = config.Batch, sq = config.QueryLen, heads = config.Heads, row = config.RowValues;
        if (config.PagesNeeded > pool.NumPages)
            throw new InvalidOperationException($"{config.Id} needs {config.PagesNeeded} pages, the pool has {pool.NumPages}.");

        var rng = new Random(seed);
        // A random permutation of the pool's pages; sequences take consecutive entries of it.
        var order = new int[pool.NumPages];
        for (int i = 0; i < order.Length; i++)
            order[i] = i;
        rng.Shuffle(order);
        Stride = (config.MaxSeqLen + pageSize - 1) / pageSize;
        BlockTable = new int[(long)b * Stride];
        Array.Fill(BlockTable, -1);
        int next = 0;
        for (int s = 0; s < b; s++)
        {
            int pages = (config.Lengths[s] + pageSize - 1) / pageSize;
            for (int p = 0; p < pages; p++)
                BlockTable[(long)s * Stride + p] = order[next++];
        }

        Slots = new int[config.Tokens];
        Positions = new int[config.Tokens];
        for (int s = 0; s < b; s++)
        {
            for (int j = 0; j < sq; j++)
            {
                Slots[s * sq + j] = s;
                Positions[s * sq + j] = config.Lengths[s] - sq + j;
            }
        }

        // Scores = scale · q·row with rows uniform in [-1, 1): a query amplitude a gives an sd of scale·a·sqrt(row/9);
        // aim for sd ≈ 2.5 so the softmax is peaked, not flat (a flat one would hide errors in the scores).
        double scale = Reference.NaiveMlaReference.SoftmaxScale(config.Shape.Spec);
        float amplitude = (float)(2.5 / (scale * Math.Sqrt(row / 9.0)));
        Query = new float[(long)config.Tokens * heads * row];
        for (long i = 0; i < Query.Length; i++)
            Query[i] = (float)(rng.NextDouble() * 2 - 1) * amplitude;

        _blockTable = accelerator.Allocate1D(BlockTable);
        _slots = accelerator.Allocate1D(Slots);
        _positions = accelerator.Allocate1D(Positions);
        _query = accelerator.Allocate1D(Query);
        _latentOut = accelerator.Allocate1D<float>((long)config.Tokens * heads * config.Latent);
        _lse = accelerator.Allocate1D<float>((long)config.Tokens * heads);
        accelerator.Synchronize();
    }

    public BenchConfig Config { get; }
    public PagePool Pool { get; }
    public int Stride { get; }
    public int[] BlockTable { get; }
    public int[] Slots { get; }
    public int[] Positions { get; }
    public float[] Query { get; }

    public ArrayView<float> QueryView => _query.View;
    public ArrayView<float> LatentOutput => _latentOut.View;
    public ArrayView<float> Lse => _lse.View;

    public CacheAddressing Addressing => new()
    {
        Pages = Pool.Pages,
        BlockTable = _blockTable.View,
        BlockTableStride = Stride,
        TokenSlot = _slots.View,
        TokenPosition = _positions.View,
    };

    public DecodeProblem Problem => new(QueryView, Addressing, Config.Tokens, Config.MaxSeqLen, LatentOutput, Lse);

    /// <summary>Token <paramref name="token"/> of sequence <paramref name="sequence"/> as floats.</summary>
    public void ReadRow(int sequence, int token, Span<float> destination)
    {
        int page = BlockTable[(long)sequence * Stride + token / Pool.PageSize];
        Pool.ReadRow(page, token % Pool.PageSize, destination);
    }

    public void Dispose()
    {
        _blockTable.Dispose();
        _slots.Dispose();
        _positions.Dispose();
        _query.Dispose();
        _latentOut.Dispose();
        _lse.Dispose();
    }
}
