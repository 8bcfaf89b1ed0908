using System;
using System.Linq;
using ILGPU;
using ILGPU.Runtime;
using MlaGen.Devices;
using MlaGen.Kernels;
using Xunit;

namespace MlaGen.Layer.Tests;

/// <summary>
/// The split-KV combine of the tensor-core decode kernels, run on the CPU accelerator (it has no inline PTX): blocks with
/// two items to many, items that saw no token, poisoned output, against a float64 merge; a block of one item is the
/// attention kernel's to write, so the combine leaves its rows alone.
/// </summary>
public class TensorCoreCombineTests
{
    private const int Capacity = 4;

    [Theory]
    [InlineData(false, 1)] // latent 64, one slice: one warp per row writes straight out
    [InlineData(false, 2)] // warps take items in turn and meet in shared memory
    [InlineData(true, 1)] // latent 512 in four slices of 128 columns, one CTA each
    [InlineData(true, 2)] // 17 items: two trips of eight parts for each warp
    public void MergesEveryBlocksItemsLikeFloat64(bool deepSeek, int warps)
    {
        int latent = deepSeek ? DeepSeekDecodeShape.LatentRank : SmallQLoraAttention.LatentRank;
        int slices = deepSeek ? DeepSeekDecodeShape.MlaKernels.TcCombineSlices : SmallQLoraAttention.MlaKernels.TcCombineSlices;
        Assert.Equal(deepSeek ? 4 : 1, slices);
        int sharedFloats = deepSeek ? DeepSeekDecodeShape.MlaKernels.TcCombineSharedFloats(warps) : SmallQLoraAttention.MlaKernels.TcCombineSharedFloats(warps);
        Action<TensorCoreCombineParams> kernel = deepSeek ? DeepSeekDecodeShape.MlaKernels.TensorCoreCombineKernel : SmallQLoraAttention.MlaKernels.TensorCoreCombineKernel;
        var random = new Random(Environment.TickCount);
        int[] blockItems = [1, 2, 9, 3, 17];
        int[] blockRows = [4, 3, 4, 1, 2];
        int blocks = blockItems.Length, items = blockItems.Sum();
        var blockFirstItem = new int[blocks];
        for (int b = 1; b < blocks; b++)
            blockFirstItem[b] = blockFirstItem[b - 1] + blockItems[b - 1];
        // Blocks listed in the reverse of their rows' order, as the scheduler may list them (longest items first).
        var blockFirstRow = new int[blocks];
        for (int b = blocks - 2; b >= 0; b--)
            blockFirstRow[b] = blockFirstRow[b + 1] + blockRows[b + 1];
        int rows = blockRows.Sum();
        var partialLse = new float[items * Capacity];
        var partialOut = new float[items * Capacity * latent];
        Array.Fill(partialOut, float.NaN); // rows past a block's end and items that saw nothing must never be read
        for (int b = 0; b < blocks; b++)
            for (int i = blockFirstItem[b]; i < blockFirstItem[b] + blockItems[b]; i++)
                for (int r = 0; r < Capacity; r++)
                {
                    bool empty = r >= blockRows[b] || random.Next(5) == 0;
                    partialLse[i * Capacity + r] = empty ? float.NegativeInfinity : (float)(random.NextDouble() * 20 - 10);
                    if (!empty)
                        for (int c = 0; c < latent; c++)
                            partialOut[(i * Capacity + r) * latent + c] = (float)(random.NextDouble() * 2 - 1);
                }

        using var device = MlaDevice.Create("cpu");
        var accelerator = device.Accelerator;
        var combine = accelerator.LoadKernel(kernel);
        using var lseBuffer = accelerator.Allocate1D(partialLse);
        using var outBuffer = accelerator.Allocate1D(partialOut);
        using var firstRow = accelerator.Allocate1D(blockFirstRow);
        using var rowCount = accelerator.Allocate1D(blockRows);
        using var firstItem = accelerator.Allocate1D(blockFirstItem);
        using var itemCount = accelerator.Allocate1D(blockItems);
        using var latentOut = accelerator.Allocate1D<float>(rows * latent);
        using var lse = accelerator.Allocate1D<float>(rows);
        latentOut.MemSet(0xFF);
        lse.MemSet(0xFF);
        combine(accelerator.DefaultStream, new KernelConfig(blocks * Capacity * slices, 32 * warps,
            SharedMemoryConfig.RequestDynamic<float>(sharedFloats)), new TensorCoreCombineParams
        {
            PartialOutput = outBuffer.View, PartialLse = lseBuffer.View, BlockFirstRow = firstRow.View, BlockRows = rowCount.View,
            BlockFirstItem = firstItem.View, BlockItems = itemCount.View, LatentOutput = latentOut.View, Lse = lse.View,
            Blocks = blocks, BlockCapacity = Capacity, MaxBlockItems = blockItems.Max(),
        });
        accelerator.Synchronize();
        var gotOut = latentOut.GetAsArray1D();
        var gotLse = lse.GetAsArray1D();

        for (int b = 0; b < blocks; b++)
            for (int r = 0; r < blockRows[b]; r++)
            {
                int row = blockFirstRow[b] + r;
                if (blockItems[b] == 1)
                {
                    Assert.Equal(-1, BitConverter.SingleToInt32Bits(gotLse[row])); // still the poison
                    Assert.All(gotOut.AsSpan(row * latent, latent).ToArray(), v => Assert.Equal(-1, BitConverter.SingleToInt32Bits(v)));
                    continue;
                }
                var parts = Enumerable.Range(blockFirstItem[b], blockItems[b]).Select(i => i * Capacity + r)
                    .Where(p => !float.IsNegativeInfinity(partialLse[p])).ToArray();
                if (parts.Length == 0)
                {
                    Assert.Equal(float.NegativeInfinity, gotLse[row]);
                    for (int c = 0; c < latent; c++)
                        Assert.Equal(0f, gotOut[row * latent + c]);
                    continue;
                }
                double max = parts.Max(p => (double)partialLse[p]);
                double expected = max + Math.Log(parts.Sum(p => Math.Exp(partialLse[p] - max)));
                Assert.InRange(gotLse[row], expected - 1e-4, expected + 1e-4);
                for (int c = 0; c < latent; c++)
                {
                    double value = parts.Sum(p => Math.Exp(partialLse[p] - expected) * partialOut[p * latent + c]);
                    Assert.InRange(gotOut[row * latent + c], value - 1e-4, value + 1e-4);
                }
            }
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(8, 1)] // eight parts per trip: 4 lane chunks of a 128-column slice each
    [InlineData(9, 2)]
    [InlineData(128, 16)] // one trip for 128 items
    [InlineData(500, 16)]
    public void WarpsPerRowFollowTheLongestBlock(int maxBlockItems, int warps) =>
        Assert.Equal(warps, DeepSeekDecodeShape.MlaKernels.TcCombineWarps(maxBlockItems));
}
