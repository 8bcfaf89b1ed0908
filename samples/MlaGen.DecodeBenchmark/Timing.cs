using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Linq;
using ILGPU;
using ILGPU.Runtime;

namespace MlaGen.DecodeBenchmark;

/// <summary>Milliseconds of the timed runs: median, min, 90th percentile (nearest rank), mean.</summary>
internal sealed record TimingStats(int Runs, int WarmupRuns, double MedianMs, double MinMs, double P90Ms, double MeanMs)
{
    public static TimingStats From(IReadOnlyList<double> milliseconds, int warmupRuns)
    {
        if (milliseconds.Count == 0)
            throw new ArgumentException("No timed runs.", nameof(milliseconds));
        var sorted = milliseconds.OrderBy(x => x).ToArray();
        int n = sorted.Length;
        double median = n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
        double p90 = sorted[Math.Clamp((int)Math.Ceiling(0.9 * n) - 1, 0, n - 1)];
        return new TimingStats(n, warmupRuns, median, sorted[0], p90, sorted.Average());
    }
}

/// <summary>
/// Times a stream workload the way triton's do_bench does: warm-up for about <c>warmupMs</c>, then
/// <c>runs</c> repetitions, each preceded by a write of a large scratch buffer (outside the timed region) so no run
/// finds the previous run's data in L2, each bracketed by two profiling markers (CUDA events on a GPU). All runs are
/// queued before one synchronisation, so host launch gaps do not enter the measurement.
/// </summary>
internal sealed class StreamTimer : IDisposable
{
    /// <summary>256 MiB, as do_bench: several times the H100's 50 MB L2.</summary>
    public const long CudaFlushBytes = 256L << 20;

    private readonly Accelerator _accelerator;
    private readonly MemoryBuffer1D<byte, Stride1D.Dense>? _flush;

    public StreamTimer(Accelerator accelerator, long flushBytes)
    {
        _accelerator = accelerator;
        if (flushBytes > 0)
            _flush = accelerator.Allocate1D<byte>(flushBytes);
    }

    public long FlushBytes => _flush?.Length ?? 0;

    public Accelerator Accelerator => _accelerator;

    public TimingStats Time(Action<AcceleratorStream> enqueue, int runs, double warmupMs)
    {
        var stream = _accelerator.DefaultStream;

        // One untimed run gives the estimate that sizes the warm-up (and compiles anything still lazy).
        var wall = Stopwatch.StartNew();
        enqueue(stream);
        stream.Synchronize();
        double estimateMs = Math.Max(1e-3, wall.Elapsed.TotalMilliseconds);
        int warmup = Math.Clamp((int)Math.Ceiling(warmupMs / estimateMs), 2, 200);
        for (int i = 0; i < warmup; i++)
        {
            Flush(stream, i);
            enqueue(stream);
        }
        stream.Synchronize();

        var markers = new List<(ProfilingMarker Start, ProfilingMarker End)>(runs);
        try
        {
            for (int i = 0; i < runs; i++)
            {
                Flush(stream, i);
                var start = stream.AddProfilingMarker();
                enqueue(stream);
                var end = stream.AddProfilingMarker();
                markers.Add((start, end));
            }
            stream.Synchronize();
            var times = markers.Select(m => (m.End - m.Start).TotalMilliseconds).ToArray();
            return TimingStats.From(times, warmup + 1);
        }
        finally
        {
            foreach (var (start, end) in markers)
            {
                start.Dispose();
                end.Dispose();
            }
        }
    }

    private void Flush(AcceleratorStream stream, int run)
    {
        _flush?.View.MemSet(stream, (byte)(run & 0xFF));
    }

    public void Dispose() => _flush?.Dispose();
}
