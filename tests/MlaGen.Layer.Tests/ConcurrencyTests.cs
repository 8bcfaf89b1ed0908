using System;
using System.Collections.Generic;
using System.Linq;
using System.Threading;
using MlaGen.Cache;
using MlaGen.Devices;
using MlaGen.Kernels;
using MlaGen.Weights;
using Xunit;

namespace MlaGen.Layer.Tests;

/// <summary>
/// Two layers, each with its own cache, driven from two threads at once on the one shared CPU accelerator: every
/// output and LSE must be bit-identical to running the same steps one layer after the other.
/// </summary>
[Collection(CpuCollection.Name)]
public class ConcurrencyTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);
    private readonly MlaDevice _device;

    public ConcurrencyTests(CpuDeviceFixture fixture) => _device = fixture.Device;

    /// <summary>Same shape: both layers launch the very same compiled kernels. Different shapes: two kernel sets.</summary>
    [Theory]
    [InlineData("same shape")]
    [InlineData("different shapes")]
    public void ConcurrencyTwoLayersOnTwoThreadsMatchRunningThemInTurn(string shapes)
    {
        var second = shapes == "same shape"
            ? (LongContextAttention.Spec, (Func<MlaDevice, MlaWeights, MlaKernelPath, MlaLayer>)LongContextAttention.CreateLayer)
            : (HugeLogitAttention.Spec, HugeLogitAttention.CreateLayer);
        var scripts = new[]
        {
            Script.Make(LongContextAttention.Spec, LongContextAttention.CreateLayer, seed: 1),
            Script.Make(second.Item1, second.Item2, seed: 2),
        };

        // In turn: the first script to the end, then the second.
        var inTurn = scripts.Select(s => s.Run(_device)).ToArray();

        // At once, three times over so the interleavings differ; a barrier starts both threads together.
        for (int round = 0; round < 3; round++)
        {
            using var barrier = new Barrier(2);
            var outcomes = new Outcome?[scripts.Length];
            var failures = new Exception?[scripts.Length];
            var threads = scripts.Select((script, i) => new Thread(() =>
            {
                try
                {
                    barrier.SignalAndWait();
                    outcomes[i] = script.Run(_device);
                }
                catch (Exception e)
                {
                    failures[i] = e;
                }
            }) { IsBackground = true, Name = $"layer {i}" }).ToArray();
            foreach (var thread in threads)
                thread.Start();
            foreach (var thread in threads)
                Assert.True(thread.Join(Deadline), $"round {round}: {thread.Name} did not finish within {Deadline.TotalSeconds} s (deadlock?)");
            foreach (var failure in failures)
                Assert.Null(failure);
            // The two scripts really ran at the same time: their spans of Forward calls overlap.
            var (a, b) = (outcomes[0]!, outcomes[1]!);
            Assert.True(a.Start < b.End && b.Start < a.End, $"round {round}: the threads ran one after the other ({a.Start}-{a.End} vs {b.Start}-{b.End} ticks)");
            for (int i = 0; i < scripts.Length; i++)
                outcomes[i]!.AssertBitIdentical(inTurn[i], $"{shapes}, round {round}, layer {i}");
        }
    }

    /// <summary>One layer's work: prefills of ragged lengths, decodes, a multi-token step, a freed and a new sequence.</summary>
    private sealed class Script
    {
        private readonly MlaSpec _spec;
        private readonly Func<MlaDevice, MlaWeights, MlaKernelPath, MlaLayer> _create;
        private readonly MlaWeights _weights;
        private readonly List<(int[] Sequences, int[] NewTokens, float[] Hidden, int Splits, int? FreeAfter)> _steps = new();

        private Script(MlaSpec spec, Func<MlaDevice, MlaWeights, MlaKernelPath, MlaLayer> create, int seed)
        {
            _spec = spec;
            _create = create;
            _weights = MlaWeights.Random(spec, seed);
        }

        public static Script Make(MlaSpec spec, Func<MlaDevice, MlaWeights, MlaKernelPath, MlaLayer> create, int seed)
        {
            var script = new Script(spec, create, seed);
            var random = new Random(seed * 7919);
            // Sequence indices: 0..2 from the start; 3 is created after 1 is freed (so it reuses 1's slot and pages).
            script.Add(random, new[] { 0, 1, 2 }, new[] { 37, 16, 5 }, splits: 1);
            for (int step = 0; step < 3; step++)
                script.Add(random, new[] { 0, 1, 2 }, new[] { 1, 1, 1 }, splits: step + 1);
            script.Add(random, new[] { 2, 0 }, new[] { 3, 2 }, splits: 2, freeAfter: 1);
            script.Add(random, new[] { 3 }, new[] { 20 }, splits: 1);
            for (int step = 0; step < 3; step++)
                script.Add(random, new[] { 0, 2, 3 }, new[] { 1, 1, 1 }, splits: 4 - step);
            return script;
        }

        private void Add(Random random, int[] sequences, int[] newTokens, int splits, int? freeAfter = null)
        {
            var hidden = new float[newTokens.Sum() * _spec.DModel];
            for (int i = 0; i < hidden.Length; i++)
                hidden[i] = (float)(random.NextDouble() * 2 - 1);
            _steps.Add((sequences, newTokens, hidden, splits, freeAfter));
        }

        public Outcome Run(MlaDevice device)
        {
            using var layer = _create(device, _weights, MlaKernelPath.Auto);
            using var cache = layer.CreateCache(numPages: 16, maxSequences: 4, maxPagesPerSequence: 4);
            var ids = new Dictionary<int, SequenceId>();
            long start = System.Diagnostics.Stopwatch.GetTimestamp();
            var outputs = new List<float[]>();
            var lses = new List<float[]>();
            foreach (var (sequences, newTokens, hidden, splits, freeAfter) in _steps)
            {
                foreach (int s in sequences)
                    if (!ids.ContainsKey(s))
                        ids[s] = cache.CreateSequence();
                var result = layer.Forward(cache, sequences.Select(s => ids[s]).ToArray(), newTokens, hidden,
                    new MlaForwardOptions { Splits = splits, PoisonBuffers = true });
                outputs.Add(result.Output);
                lses.Add(result.Lse);
                if (freeAfter is int f)
                {
                    cache.FreeSequence(ids[f]);
                    ids.Remove(f);
                }
            }
            long end = System.Diagnostics.Stopwatch.GetTimestamp();
            var rows = ids.OrderBy(p => p.Key).Select(p => cache.ReadRows(p.Value)).ToList();
            return new Outcome(outputs, lses, rows, start, end);
        }
    }

    private sealed record Outcome(List<float[]> Outputs, List<float[]> Lses, List<ushort[]> Rows, long Start, long End)
    {
        public void AssertBitIdentical(Outcome expected, string where)
        {
            Assert.Equal(expected.Outputs.Count, Outputs.Count);
            for (int step = 0; step < Outputs.Count; step++)
            {
                Same(expected.Outputs[step], Outputs[step], $"{where}, step {step}, output");
                Same(expected.Lses[step], Lses[step], $"{where}, step {step}, LSE");
            }
            for (int s = 0; s < Rows.Count; s++)
                Assert.True(expected.Rows[s].AsSpan().SequenceEqual(Rows[s]), $"{where}: cache rows of sequence {s} differ");
        }

        private static void Same(float[] expected, float[] actual, string where)
        {
            Assert.True(expected.Length == actual.Length, $"{where}: {actual.Length} values, {expected.Length} in turn");
            Assert.All(actual, v => Assert.True(float.IsFinite(v), $"{where}: a value is not finite"));
            for (int i = 0; i < expected.Length; i++)
            {
                if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i]))
                    Assert.Fail($"{where} [{i}]: {actual[i]:R} at once, {expected[i]:R} in turn");
            }
        }
    }
}
