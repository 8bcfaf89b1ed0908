using System;
using MlaGen.Devices;
using MlaGen.Weights;
using Xunit;

namespace MlaGen.Layer.Tests;

public class SmokeTests
{
    [Fact]
    public void PrefillRunsOnCpu()
    {
        using var device = MlaDevice.Create("cpu");
        var weights = MlaWeights.Random(SmallQLoraAttention.Spec, 1);
        using var layer = SmallQLoraAttention.CreateLayer(device, weights);
        using var cache = layer.CreateCache(8, 2, 4);
        var id = cache.CreateSequence();
        var x = new float[5 * 64];
        var rng = new Random(2);
        for (int i = 0; i < x.Length; i++) x[i] = (float)rng.NextDouble() - 0.5f;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var r = layer.Prefill(cache, id, x);
        Console.WriteLine($"prefill {sw.ElapsedMilliseconds} ms; out[0]={r.Output[0]} lse[0]={r.Lse[0]}");
        Assert.All(r.Output, v => Assert.True(float.IsFinite(v)));
    }
}
