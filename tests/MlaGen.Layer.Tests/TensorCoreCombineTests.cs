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
/// one item to many, items that saw no token, poisoned output, against a float64 merge.
/// </summary>
public class TensorCoreCombineTests
{
    private const int Latent = 64; // SmallQLoraAttention: two lane chunks
    private const int Capacity = 4;

    [Theory]
    [InlineData(1)] // one warp per row writes straight out
    [InlineData(2)] // warps take items in turn and meet in shared memory
    public void MergesEveryBlocksItemsLikeFloat64(int warps)
    {
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
        var partialOut = new float[items * Capacity * Latent];
        Array.Fill(partialOut, float.NaN); // rows past a block's end and items that saw nothing must never be read
        for (int b = 0; b < blocks; b++)
            for (int i = blockFirstItem[b]; i < blockFirstItem[b] + blockItems[b]; i++)
                for (int r = 0; r < Capacity; r++)
                {
                    bool empty = r >= blockRows[b] || random.Next(5) == 0;
                    partialLse[i * Capacity + r] = empty ? float.NegativeInfinity : (float)(random.NextDouble() * 20 - 10);
                    if (!empty)
                        for (int c = 0; c < Latent; c++)
                            partialOut[(i * Capacity + r) * Latent + c] = (float)(random.NextDouble() * 2 - 1);
                }

        using var device = MlaDevice.Create("cpu");
        var accelerator = device.Accelerator;
        var combine = accelerator.LoadKernel<TensorCoreCombineParams>(SmallQLoraAttention.MlaKernels.TensorCoreCombineKernel);
        using var lseBuffer = accelerator.Allocate1D(partialLse);
        using var outBuffer = accelerator.Allocate1D(partialOut);
        using var firstRow = accelerator.Allocate1D(blockFirstRow);
        using var rowCount = accelerator.Allocate1D(blockRows);
        using var firstItem = accelerator.Allocate1D(blockFirstItem);
        using var itemCount = accelerator.Allocate1D(blockItems);
        using var latentOut = accelerator.Allocate1D<float>(rows * Latent);
        using var lse = accelerator.Allocate1D<float>(rows);
        latentOut.MemSet(0xFF);
        lse.MemSet(0xFF);
        combine(accelerator.DefaultStream, new KernelConfig(blocks * Capacity, 32 * warps,
            SharedMemoryConfig.RequestDynamic<float>(SmallQLoraAttention.MlaKernels.TcCombineSharedFloats(warps))), new TensorCoreCombineParams
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
                var parts = Enumerable.Range(blockFirstItem[b], blockItems[b]).Select(i => i * Capacity + r)
                    .Where(p => !float.IsNegativeInfinity(partialLse[p])).ToArray();
                if (parts.Length == 0)
                {
                    Assert.Equal(float.NegativeInfinity, gotLse[row]);
                    for (int c = 0; c < Latent; c++)
                        Assert.Equal(0f, gotOut[row * Latent + c]);
                    continue;
                }
                double max = parts.Max(p => (double)partialLse[p]);
                double expected = max + Math.Log(parts.Sum(p => Math.Exp(partialLse[p] - max)));
                Assert.InRange(gotLse[row], expected - 1e-4, expected + 1e-4);
                for (int c = 0; c < Latent; c++)
                {
                    double value = parts.Sum(p => Math.Exp(partialLse[p] - expected) * partialOut[p * Latent + c]);
                    Assert.InRange(gotOut[row * Latent + c], value - 1e-4, value + 1e-4);
                }
            }
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(4, 1)]
    [InlineData(5, 2)]
    [InlineData(64, 16)]
    [InlineData(500, 16)]
    public void WarpsPerRowFollowTheLongestBlock(int maxBlockItems, int warps) =>
        Assert.Equal(warps, SmallQLoraAttention.MlaKernels.TcCombineWarps(maxBlockItems));
}
