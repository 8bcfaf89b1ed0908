using System;
using System.Collections.Generic;
using System.Linq;
using System.Threading.Tasks;
using MlaGen.Devices;
using MlaGen.Weights;

namespace MlaGen.DecodeBenchmark;

/// <summary>
/// Two layers with their own caches (and so their own streams) driven from two threads at once must give bit-identical
/// results to running the same steps one after the other.
/// </summary>
internal static class ConcurrencyCheck
{
    public static bool Run(MlaDevice device, BenchShape shape, int seed, Action<string> log)
    {
        var weights = new[] { MlaWeights.Random(shape.Spec, seed), MlaWeights.Random(shape.Spec, seed + 1) };
        List<float> Drive(int which)
        {
            using var layer = shape.CreateLayer(device, weights[which], Kernels.MlaKernelPath.Auto);
            using var cache = layer.CreateCache(256, 4, 64);
            var rng = new Random(seed + 10 + which);
            var ids = Enumerable.Range(0, 4).Select(_ => cache.CreateSequence()).ToArray();
            var outputs = new List<float>();
            var prompts = ids.Select(_ => rng.Next(1, 600)).ToArray();
            outputs.AddRange(layer.Forward(cache, ids, prompts, Soak.Hidden(rng, prompts.Sum(), shape.Spec.DModel)).Output);
            for (int step = 0; step < 200; step++)
                outputs.AddRange(layer.Decode(cache, ids, Soak.Hidden(rng, ids.Length, shape.Spec.DModel)).Output);
            return outputs;
        }

        var sequential = new[] { Drive(0), Drive(1) };
        var concurrent = new List<float>[2];
        Parallel.Invoke(() => concurrent[0] = Drive(0), () => concurrent[1] = Drive(1));
        bool same = sequential[0].SequenceEqual(concurrent[0]) && sequential[1].SequenceEqual(concurrent[1]);
        log($"two layers on two threads and two streams (4 sequences, prefill + 200 decode steps each): {(same ? "bit-identical to running them in turn" : "DIFFERENT from running them in turn")} ({sequential[0].Count + sequential[1].Count} outputs compared)");
        return same;
    }

}
