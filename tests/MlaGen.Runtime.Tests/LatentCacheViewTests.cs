using ILGPU;
using ILGPU.Runtime;
using MlaGen.Cache;
using MlaGen.Devices;
using Xunit;
using static MlaGen.Runtime.Tests.LatentCacheTestSpecs;

namespace MlaGen.Runtime.Tests;

/// <summary>A kernel that takes <see cref="LatentCacheView"/> as an argument reads the rows ReadRows returns.</summary>
[Collection(DeviceCollection.Name)]
public sealed class LatentCacheViewTests(DeviceFixture fixture)
{
    private const ushort PastLength = 0xFFFF;

    private readonly MlaDevice _device = fixture.Device;

    [Fact]
    public void A_kernel_gathers_a_sequence_through_the_view_exactly_as_ReadRows_does()
    {
        using var cache = new LatentCache(_device, Small(), numPages: 8, maxSequences: 3, maxPagesPerSequence: 4);
        var filler = cache.CreateSequence();
        var id = cache.CreateSequence();
        cache.Reserve([id, filler], [10, 16]);
        cache.Reserve([id], [30]);
        Assert.Equal([0, 2, 3], cache.GetPages(id));
        var rows = Rows(tag: 4, start: 0, count: 40);
        cache.WriteRows(id, 0, rows);
        cache.WriteRows(filler, 0, Rows(tag: 5, start: 0, count: 16));

        var gather = _device.GetOrLoad(
            "test.latent-cache-gather",
            a => a.LoadAutoGroupedStreamKernel<Index1D, LatentCacheView, int, ArrayView<ushort>>(GatherKernel));
        const int ExtraTokens = 3;
        using var output = _device.Accelerator.Allocate1D<ushort>((40 + ExtraTokens) * RowValues);
        gather((int)output.Length, cache.View, cache.GetSlot(id), output.View);
        var gathered = output.GetAsArray1D();

        Assert.Equal(rows, gathered[..rows.Length]);
        Assert.Equal(cache.ReadRows(id), gathered[..rows.Length]);
        Assert.All(gathered[rows.Length..], value => Assert.Equal(PastLength, value));
    }

    private static void GatherKernel(Index1D index, LatentCacheView cache, int slot, ArrayView<ushort> output)
    {
        int token = index / cache.RowValues;
        int value = index - token * cache.RowValues;
        if (token >= cache.Lengths[slot])
        {
            output[index] = PastLength;
            return;
        }
        int page = cache.BlockTable[slot * cache.MaxPagesPerSequence + token / cache.PageSize];
        long offset = ((long)page * cache.PageSize + token % cache.PageSize) * cache.RowValues + value;
        output[index] = cache.Pages[offset];
    }
}
