using System;
using System.Linq;
using MlaGen.Devices;
using MlaGen.Kernels;
using MlaGen.Weights;
using Xunit;

namespace MlaGen.Layer.Tests;

/// <summary>A NaN in the input must come out as NaN where it reaches, never as a quiet 0 output with a −∞ LSE.</summary>
[Collection(CpuCollection.Name)]
public class NanPropagationTests
{
    private readonly MlaDevice _device;

    public NanPropagationTests(CpuDeviceFixture fixture) => _device = fixture.Device;

    [Theory]
    [InlineData(MlaKernelPath.Serial, 1)]
    [InlineData(MlaKernelPath.Serial, 3)]
    [InlineData(MlaKernelPath.Warp, 2)]
    public void NanInOneTokenPoisonsItAndLaterTokensOnly(MlaKernelPath path, int splits)
    {
        var spec = SmallQLoraAttention.Spec;
        using var layer = SmallQLoraAttention.CreateLayer(_device, MlaWeights.Random(spec, 5), path);
        using var cache = layer.CreateCache(4, 1, 4);
        var id = cache.CreateSequence();
        int d = spec.DModel, heads = spec.Heads;
        var random = new Random(6);
        var x = Enumerable.Range(0, 5 * d).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray();
        x[2 * d + 7] = float.NaN;

        var result = layer.Prefill(cache, id, x, new MlaForwardOptions { Splits = splits, PoisonBuffers = true });

        for (int t = 0; t < 5; t++)
        {
            var output = result.Output.AsSpan(t * d, d).ToArray();
            var lse = result.Lse.AsSpan(t * heads, heads).ToArray();
            if (t < 2)
            {
                Assert.All(output, v => Assert.True(float.IsFinite(v), $"token {t} comes before the NaN and must stay finite"));
                Assert.All(lse, v => Assert.True(float.IsFinite(v)));
            }
            else
            {
                Assert.All(output, v => Assert.True(float.IsNaN(v), $"token {t} sees the NaN token: output {v}, expected NaN"));
                Assert.All(lse, v => Assert.True(float.IsNaN(v), $"token {t}: LSE {v}, expected NaN (not −∞)"));
            }
        }
    }
}
