using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using ILGPU.Runtime.Cuda;
using MlaGen.Cache;
using MlaGen.Devices;
using MlaGen.Reference;
using MlaGen.Weights;

namespace MlaGen.DecodeBenchmark;

/// <summary>
/// Many decode steps with sequences joining (a short prefill) and leaving (their pages freed) at random, on one layer
/// and one cache. At checkpoints a probe sequence is prefilled and decoded in the fragmented cache and checked against
/// the float64 non-absorbed reference; at the end every sequence has left, the cache must hold nothing, and after
/// disposing layer and cache the device's free memory must be back at its baseline. On CUDA it first decodes one
/// 131,072-token sequence at the full shape against the float64 reference (<see cref="LongContextCheck"/>), and checks
/// two layers on two threads and streams against running them in turn (<see cref="ConcurrencyCheck"/>).
/// </summary>
internal static class Soak
{
    private const int Checkpoints = 10;
    private const double Tolerance = 2e-2;

    public static int Run(MlaDevice device, BenchShape shape, int steps, int seed, string outDirectory)
    {
        var log = new List<string>();
        void Log(string line)
        {
            Console.WriteLine(line);
            log.Add(line);
        }

        var spec = shape.Spec;
        var rng = new Random(seed);
        bool concurrentOk = ConcurrencyCheck.Run(device, shape, rng.Next(), Log);
        bool longOk = !device.IsCuda || LongContextCheck.Run(device, shape, rng.Next(), Log);
        long FreeBytes() => device.Accelerator is CudaAccelerator cuda ? cuda.GetFreeMemory() : GC.GetTotalMemory(true);
        long baseline = FreeBytes();
        var clock = Stopwatch.StartNew();
        var weights = MlaWeights.Random(spec, rng.Next());
        int worstFailures = 0;
        double worstError = 0;
        long decodedTokens = 0, prefilledTokens = 0;
        int joins = 0, leaves = 0, peakActive = 0, peakPages = 0;
        using (var layer = shape.CreateLayer(device, weights, Kernels.MlaKernelPath.Auto))
        using (var cache = layer.CreateCache(numPages: 1024, maxSequences: 48, maxPagesPerSequence: 32))
        {
            var active = new List<(SequenceId Id, int Target)>();
            int checkpointEvery = Math.Max(1, steps / Checkpoints);
            for (int step = 1; step <= steps; step++)
            {
                // Join: a few new sequences with short prompts while slots and pages allow.
                int joining = rng.Next(0, 3);
                var newIds = new List<SequenceId>();
                var prompts = new List<int>();
                for (int j = 0; j < joining && active.Count + newIds.Count < cache.MaxSequences - 1; j++)
                {
                    int prompt = rng.Next(1, 200);
                    int target = prompt + rng.Next(1, 600);
                    // Keep every admitted sequence able to reach its target, plus room for the probe.
                    int Pages(int tokens) => (tokens + spec.PageSize - 1) / spec.PageSize;
                    int stillNeeded = active.Sum(a => Pages(a.Target) - Pages(cache.GetLength(a.Id)));
                    if (cache.PagesFree - stillNeeded < Pages(target) + Pages(68))
                        break;
                    var id = cache.CreateSequence();
                    newIds.Add(id);
                    prompts.Add(prompt);
                    active.Add((id, target));
                }
                if (newIds.Count > 0)
                {
                    layer.Forward(cache, newIds.ToArray(), prompts.ToArray(), Hidden(rng, prompts.Sum(), spec.DModel));
                    prefilledTokens += prompts.Sum();
                    joins += newIds.Count;
                }

                // Decode one token for every active sequence.
                if (active.Count > 0)
                {
                    var ids = active.Select(a => a.Id).ToArray();
                    var result = layer.Decode(cache, ids, Hidden(rng, ids.Length, spec.DModel));
                    decodedTokens += ids.Length;
                    if (result.Output.Any(v => !float.IsFinite(v)))
                        throw new InvalidOperationException($"step {step}: a decode output is not finite");
                }
                peakActive = Math.Max(peakActive, active.Count);
                peakPages = Math.Max(peakPages, cache.PagesUsed);

                // Leave: sequences that reached their length.
                for (int i = active.Count - 1; i >= 0; i--)
                {
                    if (cache.GetLength(active[i].Id) >= active[i].Target)
                    {
                        cache.FreeSequence(active[i].Id);
                        active.RemoveAt(i);
                        leaves++;
                    }
                }

                if (step % checkpointEvery == 0)
                {
                    double error = Probe(layer, cache, weights, rng);
                    worstError = Math.Max(worstError, error);
                    bool ok = error <= Tolerance;
                    worstFailures += ok ? 0 : 1;
                    Log(string.Create(CultureInfo.InvariantCulture,
                        $"soak step {step}/{steps}: {active.Count} active, {cache.PagesUsed}/{cache.NumPages} pages, {joins} joined, {leaves} left, {decodedTokens} decoded; probe vs float64 reference {error:E2} ({(ok ? "ok" : "FAILED")}); free device memory {FreeBytes() / 1048576.0:F1} MiB; {clock.Elapsed.TotalSeconds:F0} s"));
                }
            }
            foreach (var (id, _) in active)
            {
                cache.FreeSequence(id);
                leaves++;
            }
            Log($"all sequences left: {cache.PagesUsed} pages used, {cache.TokensStored} tokens stored, {cache.ActiveSequences} sequences (each must be 0)");
            if (cache.PagesUsed != 0 || cache.TokensStored != 0 || cache.ActiveSequences != 0)
                worstFailures++;
        }
        long after = FreeBytes();
        long drift = baseline - after;
        bool memoryOk = !device.IsCuda || Math.Abs(drift) <= 4L << 20; // allocator granularity; the cache alone is 75 MB
        Log(string.Create(CultureInfo.InvariantCulture,
            $"soak done: {steps} steps, {joins} joined, {leaves} left (peak {peakActive} at once, {peakPages} pages), {prefilledTokens} prefilled + {decodedTokens} decoded tokens in {clock.Elapsed.TotalSeconds:F1} s; free device memory {baseline / 1048576.0:F1} MiB before, {after / 1048576.0:F1} MiB after layer and cache were disposed ({(memoryOk ? "back at baseline" : "LEAK")}); worst probe error {worstError:E2}"));
        Directory.CreateDirectory(outDirectory);
        File.WriteAllLines(Path.Combine(outDirectory, "soak.log"), log);
        return worstFailures == 0 && memoryOk && longOk && concurrentOk ? 0 : 1;
    }

    /// <summary>A fresh sequence in the fragmented cache: 64-token prompt, 4 decode steps, checked against float64.</summary>
    private static double Probe(MlaLayer layer, LatentCache cache, MlaWeights weights, Random rng)
    {
        var spec = layer.Spec;
        var id = cache.CreateSequence();
        try
        {
            var history = new List<float>(Hidden(rng, 64, spec.DModel));
            layer.Prefill(cache, id, history.ToArray(), new MlaForwardOptions { PoisonBuffers = true });
            float[] last = Array.Empty<float>();
            for (int i = 0; i < 4; i++)
            {
                var x = Hidden(rng, 1, spec.DModel);
                history.AddRange(x);
                last = layer.Decode(cache, new[] { id }, x, new MlaForwardOptions { PoisonBuffers = true }).Output;
            }
            int length = history.Count / spec.DModel;
            var reference = NaiveMlaReference.Forward(spec, weights, history.ToArray(), length);
            return NaiveMlaReference.RelativeL2(last, reference.Output.AsSpan((length - 1) * spec.DModel, spec.DModel));
        }
        finally
        {
            cache.FreeSequence(id);
        }
    }

    /// <summary>Random hidden states, uniform in ±1, for the soak and the other GPU reliability checks.</summary>
    internal static float[] Hidden(Random rng, int tokens, int dModel)
    {
        var x = new float[tokens * dModel];
        for (int i = 0; i < x.Length; i++)
            x[i] = (float)(rng.NextDouble() * 2 - 1);
        return x;
    }
}
