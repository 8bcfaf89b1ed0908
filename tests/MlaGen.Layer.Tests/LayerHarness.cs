using System;
using System.Collections.Generic;
using System.Linq;
using ILGPU.Runtime;
using MlaGen.Cache;
using MlaGen.Devices;
using MlaGen.Kernels;
using MlaGen.Reference;
using MlaGen.Weights;
using Xunit;

namespace MlaGen.Layer.Tests;

/// <summary>One CPU accelerator for every layer test: it is slow to start and tests share it one at a time.</summary>
public sealed class CpuDeviceFixture : IDisposable
{
    public MlaDevice Device { get; } = MlaDevice.Create("cpu");

    public void Dispose() => Device.Dispose();
}

[CollectionDefinition(Name)]
public sealed class CpuCollection : ICollectionFixture<CpuDeviceFixture>
{
    public const string Name = "CPU accelerator";
}

/// <summary>
/// A layer, its cache and, per sequence, every hidden state fed so far, so the float64 reference can recompute
/// each sequence from scratch. Fresh random data every run; the seed is in every failure message.
/// </summary>
internal sealed class LayerHarness : IDisposable
{
    private readonly Dictionary<SequenceId, List<float>> _history = new();
    private readonly Random _random;

    public LayerHarness(MlaDevice device, MlaSpec spec, Func<MlaDevice, MlaWeights, MlaKernelPath, MlaLayer> create,
        MlaKernelPath path = MlaKernelPath.Auto, int numPages = 64, int maxSequences = 8)
    {
        Seed = Random.Shared.Next();
        _random = new Random(Seed);
        Spec = spec;
        Weights = MlaWeights.Random(spec, _random.Next());
        Layer = create(device, Weights, path);
        int maxPagesPerSequence = Math.Min(numPages, spec.MaxPositions / spec.PageSize);
        Cache = Layer.CreateCache(numPages, maxSequences, maxPagesPerSequence);
        Cache.PagesView.MemSet(0xFF); // NaN everywhere: a row no kernel wrote poisons the result
        Device = device;
    }

    public int Seed { get; }
    public MlaSpec Spec { get; }
    public MlaWeights Weights { get; }
    public MlaLayer Layer { get; }
    public LatentCache Cache { get; }
    public MlaDevice Device { get; }

    public SequenceId NewSequence()
    {
        var id = Cache.CreateSequence();
        _history[id] = new List<float>();
        return id;
    }

    public float[] RandomHidden(int tokens)
    {
        var x = new float[tokens * Spec.DModel];
        for (int i = 0; i < x.Length; i++)
            x[i] = (float)(_random.NextDouble() * 2 - 1);
        return x;
    }

    /// <summary>Runs one Forward over the batch with fresh hidden states and remembers them for the reference.</summary>
    public (MlaForwardResult Result, float[] Hidden) Step(SequenceId[] ids, int[] newTokens, int splits = 0, MlaAttentionForm form = MlaAttentionForm.Auto)
    {
        var hidden = RandomHidden(newTokens.Sum());
        var result = Layer.Forward(Cache, ids, newTokens, hidden,
            new MlaForwardOptions { Splits = splits, CaptureIntermediates = true, PoisonBuffers = true, Form = form });
        int offset = 0;
        for (int i = 0; i < ids.Length; i++)
        {
            _history[ids[i]].AddRange(hidden.AsSpan(offset * Spec.DModel, newTokens[i] * Spec.DModel).ToArray());
            offset += newTokens[i];
        }
        return (result, hidden);
    }

    /// <summary>The float64 reference of the whole sequence so far (non-absorbed, causal).</summary>
    public ReferenceForward Reference(SequenceId id)
    {
        var x = _history[id].ToArray();
        return NaiveMlaReference.Forward(Spec, Weights, x, x.Length / Spec.DModel);
    }

    public float[] History(SequenceId id) => _history[id].ToArray();

    public string Context => $"seed {Seed}, {Spec}";

    public void Dispose()
    {
        Cache.Dispose();
        Layer.Dispose();
    }
}

internal static class Compare
{
    /// <summary>‖a − e‖₂ / ‖e‖₂ over a slice; NaN or Inf anywhere in <paramref name="actual"/> counts as infinite error.</summary>
    public static double RelativeL2(ReadOnlySpan<float> actual, ReadOnlySpan<double> expected) =>
        NaiveMlaReference.RelativeL2(actual, expected);

    /// <summary>
    /// The LSE's error: relative L2, but against at least 1 per element. An LSE off by δ is a softmax denominator off by
    /// a factor e^δ ≈ 1 + δ whatever the LSE's size, so where |LSE| &lt; 1 (a 1-token sequence whose one score nearly
    /// cancels) the absolute error is the meaningful one; plain relative L2 divides bf16 rounding by ~0 there.
    /// </summary>
    public static double LseError(ReadOnlySpan<float> actual, ReadOnlySpan<double> expected)
    {
        Assert.Equal(expected.Length, actual.Length);
        double error = 0, norm = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            double e = actual[i] - expected[i];
            error += e * e;
            norm += expected[i] * expected[i];
        }
        return Math.Sqrt(error) / Math.Max(Math.Sqrt(norm), Math.Sqrt(actual.Length));
    }

    public static void AtMost(double error, double tolerance, string what, string context)
    {
        Assert.True(error <= tolerance, $"{what}: relative L2 error {error:E3} > {tolerance:E1} ({context})");
        MeasuredErrors.Record(what, error);
    }
}

/// <summary>Collects the largest error seen per check, printed at the end so notes can quote measured values.</summary>
internal static class MeasuredErrors
{
    private static readonly Dictionary<string, double> Worst = new();

    public static void Record(string what, double error)
    {
        lock (Worst)
        {
            Worst[what] = Math.Max(error, Worst.GetValueOrDefault(what));
            Console.WriteLine($"[measured] {what}: {error:E3}");
        }
    }
}
