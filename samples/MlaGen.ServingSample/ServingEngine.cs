using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Linq;
using MlaGen.Cache;

namespace MlaGen.ServingSample;

/// <summary>What one engine step did, for the progress display.</summary>
internal readonly record struct StepReport(int Step, int PrefillTokens, int DecodeTokens, int Joined, int Left, int Running, TimeSpan Elapsed);

/// <summary>Totals of a run.</summary>
internal sealed class ServingStats
{
    public int Steps { get; set; }
    public long PrefillTokens { get; set; }
    public long DecodeTokens { get; set; }
    public TimeSpan ForwardTime { get; set; }
    public List<double> StepMilliseconds { get; } = new();
    public int PeakPagesUsed { get; set; }
    public int PeakRunning { get; set; }
    public int PagesUsedAtEnd { get; set; }
    public long TokensStoredAtEnd { get; set; }
    public double Sum { get; set; }
    public double AbsoluteSum { get; set; }

    /// <summary>Steps whose attention ran on the tensor-core kernel (CUDA and a covered shape), not the general one.</summary>
    public int TensorCoreSteps { get; set; }

    /// <summary>The hidden states fed for the request being verified, and the outputs it got, in token order.</summary>
    public List<float> VerifiedHidden { get; } = new();
    public List<float> VerifiedOutput { get; } = new();
}

/// <summary>
/// Continuous batching over one layer and one latent cache, as LLM servers do it: requests join when a sequence slot
/// and the pages for their full length are free; each step is ONE <see cref="MlaLayer.Forward"/> call that carries one
/// token for every decoding sequence and fills the rest of the step's token budget with prefill chunks (first come,
/// first served); a finished request frees its sequence, and its pages go to the next request.
/// </summary>
internal sealed class ServingEngine
{
    private readonly MlaLayer _layer;
    private readonly LatentCache _cache;
    private readonly HiddenStates _hidden;
    private readonly ServingSettings _settings;
    private readonly int _verifiedRequest;
    private readonly MlaForwardOptions _options;

    public ServingEngine(MlaLayer layer, LatentCache cache, HiddenStates hidden, ServingSettings settings, int verifiedRequest)
    {
        _options = new MlaForwardOptions { TensorCores = settings.TensorCores };
        _layer = layer;
        _cache = cache;
        _hidden = hidden;
        _settings = settings;
        _verifiedRequest = verifiedRequest;
    }

    public ServingStats Run(IReadOnlyList<Request> requests, Action<StepReport> onStep)
    {
        var stats = new ServingStats();
        var waiting = new Queue<Request>(requests.OrderBy(r => r.ArrivalStep).ThenBy(r => r.Index));
        var running = new List<Request>();
        int pageSize = _layer.Spec.PageSize;
        int PagesFor(Request r) => (r.TotalTokens + pageSize - 1) / pageSize;
        int committedPages = 0;
        int dModel = _layer.Spec.DModel;
        int step = 0;

        while (waiting.Count > 0 || running.Count > 0)
        {
            if (running.Count == 0 && waiting.Peek().ArrivalStep > step)
                step = waiting.Peek().ArrivalStep; // idle until the next arrival

            // Join: first come, first served, while a slot and the pages for the whole request are free.
            int joined = 0;
            while (waiting.Count > 0 && waiting.Peek().ArrivalStep <= step && running.Count < _settings.MaxBatch
                   && committedPages + PagesFor(waiting.Peek()) <= _cache.NumPages)
            {
                var request = waiting.Dequeue();
                request.Sequence = _cache.CreateSequence();
                request.JoinedStep = step;
                committedPages += PagesFor(request);
                running.Add(request);
                joined++;
            }
            if (running.Count == 0)
                throw new InvalidOperationException($"Request {waiting.Peek().Index} needs {PagesFor(waiting.Peek())} pages; the cache has {_cache.NumPages}.");

            // Plan the step: decoders first (one token each), then prefill chunks in arrival order.
            var scheduled = new List<(Request Request, int Tokens)>();
            int budget = _settings.StepTokens;
            foreach (var r in running.Where(r => !r.InPrefill && !r.Finished))
            {
                scheduled.Add((r, 1));
                budget--;
            }
            foreach (var r in running.Where(r => r.InPrefill))
            {
                if (budget <= 0)
                    break;
                int chunk = Math.Min(budget, r.PromptTokens - r.Prefilled);
                scheduled.Add((r, chunk));
                budget -= chunk;
            }

            int tokens = scheduled.Sum(s => s.Tokens);
            var ids = new SequenceId[scheduled.Count];
            var counts = new int[scheduled.Count];
            var hidden = new float[(long)tokens * dModel];
            int row = 0;
            for (int i = 0; i < scheduled.Count; i++)
            {
                var (r, n) = scheduled[i];
                ids[i] = r.Sequence;
                counts[i] = n;
                for (int j = 0; j < n; j++, row++)
                    _hidden.Row(r.Index, r.CachedTokens + j).CopyTo(hidden.AsSpan(row * dModel, dModel));
            }

            var clock = Stopwatch.StartNew();
            var result = _layer.Forward(_cache, ids, counts, hidden, _options);
            clock.Stop();

            stats.Steps++;
            stats.ForwardTime += clock.Elapsed;
            stats.StepMilliseconds.Add(clock.Elapsed.TotalMilliseconds);
            if (result.UsedTensorCores)
                stats.TensorCoreSteps++;
            stats.PeakPagesUsed = Math.Max(stats.PeakPagesUsed, _cache.PagesUsed);
            stats.PeakRunning = Math.Max(stats.PeakRunning, running.Count);
            foreach (float v in result.Output)
            {
                stats.Sum += v;
                stats.AbsoluteSum += Math.Abs(v);
            }

            int prefillTokens = 0, decodeTokens = 0;
            row = 0;
            foreach (var (r, n) in scheduled)
            {
                if (r.Index == _verifiedRequest)
                {
                    stats.VerifiedHidden.AddRange(hidden.AsSpan(row * dModel, n * dModel).ToArray());
                    stats.VerifiedOutput.AddRange(result.Output.AsSpan(row * dModel, n * dModel).ToArray());
                }
                row += n;
                if (r.InPrefill)
                {
                    r.Prefilled += n;
                    prefillTokens += n;
                }
                else
                {
                    r.Decoded += n;
                    decodeTokens += n;
                }
            }
            stats.PrefillTokens += prefillTokens;
            stats.DecodeTokens += decodeTokens;

            // Leave: a finished request frees its sequence; its pages return to the cache's free list.
            int left = 0;
            foreach (var r in running.Where(r => r.Finished).ToList())
            {
                _cache.FreeSequence(r.Sequence);
                committedPages -= PagesFor(r);
                r.LeftStep = step;
                running.Remove(r);
                left++;
            }
            onStep(new StepReport(step, prefillTokens, decodeTokens, joined, left, running.Count, clock.Elapsed));
            step++;
        }
        stats.PagesUsedAtEnd = _cache.PagesUsed;
        stats.TokensStoredAtEnd = _cache.TokensStored;
        return stats;
    }
}
