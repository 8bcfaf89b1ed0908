using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using ILGPU;
using ILGPU.Runtime;
using MlaGen.Cache;
using MlaGen.Devices;
using MlaGen.Kernels;
using MlaGen.Reference;
using MlaGen.Weights;
using Spectre.Console;

namespace MlaGen.DecodeBenchmark;

/// <summary>What the command line chose for the prefill mode.</summary>
internal sealed record PrefillOptions(
    string? Device, int[] Heads, bool Quick, int? Runs, double WarmupMs, string Out, string Python, bool NoPeer, bool NoLayerCheck,
    int? Seed, double PeerTimeoutSeconds, MlaKernelPath KernelPath);

/// <summary>Everything measured for one prefill case.</summary>
internal sealed record PrefillResult(
    PrefillCase Case, string Status, string ExpandedKind, int Tiles,
    StageCheckResult? ExpandedCheck, TimingStats? Attention, TimingStats? ExpandAttention, TimingStats? Query,
    string AbsorbedStatus, bool AbsorbedTensorCores, StageCheckResult? AbsorbedCheck, TimingStats? Absorbed, TimingStats? AbsorbedExtras,
    string PlainStatus, StageCheckResult? PlainCheck, TimingStats? PlainExpandAttention, PrefillPeerResult? Torch, string AutoForm = "")
{
    public static PrefillResult NotRun(PrefillCase c, string status) =>
        new(c, status, "", 0, null, null, null, null, "", false, null, null, null, "", null, null, null);

    /// <summary>Whether the layer's Auto rule (AttentionFormRule.Choose) picks the form that measured faster.</summary>
    public bool? AutoAgrees => FasterForm is null || AutoForm.Length == 0 ? null : string.Equals(FasterForm, AutoForm, StringComparison.OrdinalIgnoreCase);

    private static double? Tflops(double flop, double? ms) => ms is double t && t > 0 ? flop / (t * 1e-3) / 1e12 : null;

    public double? AttentionMs => Attention?.MedianMs;
    public double? AttentionTflops => Tflops(Case.AttentionFlop, AttentionMs);
    public double? ExpandAttentionMs => ExpandAttention?.MedianMs;
    public double? ExpandAttentionTflops => Tflops(Case.AttentionFlop + Case.ExpansionFlop, ExpandAttentionMs);
    public double? ExpansionMs => ExpandAttentionMs - AttentionMs;

    /// <summary>The whole expanded form: HeadQuery (RoPE + bf16) + expansion + attention (sum of medians).</summary>
    public double? ExpandedFullMs => ExpandAttentionMs + Query?.MedianMs;
    public double? AbsorbedMs => Absorbed?.MedianMs;
    public double? AbsorbedTflops => Tflops(Case.AbsorbedFlop, AbsorbedMs);

    /// <summary>The whole absorbed form: QueryAbsorb + attention + combine + W_UV (sum of medians).</summary>
    public double? AbsorbedFullMs => AbsorbedMs + AbsorbedExtras?.MedianMs;

    /// <summary>"expanded" or "absorbed": the faster whole form, where both were timed.</summary>
    public string? FasterForm => ExpandedFullMs is double e && AbsorbedFullMs is double a ? (e <= a ? "expanded" : "absorbed") : null;

    /// <summary>Absorbed whole form over expanded whole form (above 1: expanded is faster).</summary>
    public double? AbsorbedOverExpanded => AbsorbedFullMs / ExpandedFullMs;

    public double? PlainMs => PlainExpandAttention?.MedianMs;

    /// <summary>Plain prefill of P + C over the chunk (both expansion + attention): above 1, the chunk is faster.</summary>
    public double? ChunkSpeedup => PlainMs / ExpandAttentionMs;

    public double? SdpaMs => Torch is { Error: null } ? Torch.SdpaMsMedian : null;
    public double? SdpaTflops => Tflops(Case.AttentionFlop, SdpaMs);
    public double? EagerMs => Torch is { Error: null } ? Torch.EagerMsMedian : null;

    /// <summary>Our attention kernel's time over SDPA's (both take expanded K and V): below 1, ours is faster.</summary>
    public double? OursOverSdpa => AttentionMs / SdpaMs;

    /// <summary>Expansion + attention over SDPA's attention (ours also builds K and V from the latent cache).</summary>
    public double? OursWithExpansionOverSdpa => ExpandAttentionMs / SdpaMs;

    /// <summary>PyTorch eager's time over our attention's: above 1, ours is faster.</summary>
    public double? EagerOverOurs => EagerMs / AttentionMs;
    public double? EagerOverOursWithExpansion => EagerMs / ExpandAttentionMs;
}

/// <summary>
/// The prefill mode: per shape, compile and check the layer end to end in the expanded form (a failing shape is not
/// timed); per case, fill a latent cache with random BF16 rows, check the expanded attention (and the absorbed one)
/// on the very launch that is timed, time (i) attention, (ii) expansion + attention, the query kernel, the absorbed
/// form, and for chunked cases a plain prefill of P + C; then the PyTorch SDPA/eager peer; then the reports.
/// </summary>
internal static class PrefillRunner
{
    /// <summary>Wall time one measurement aims at: slow cases get fewer runs (never fewer than <see cref="MinRuns"/>).</summary>
    private const double MeasureBudgetMs = 1500;
    private const int MinRuns = 20;

    public static int Run(PrefillOptions options, string commandLine)
    {
        var started = DateTimeOffset.Now;
        var total = Stopwatch.StartNew();
        Directory.CreateDirectory(options.Out);
        using var device = MlaDevice.Create(options.Device);
        bool cuda = device.IsCuda;
        var accelerator = device.Accelerator;
        int runs = options.Runs ?? (cuda ? 50 : options.Quick ? 3 : 5);
        if (runs < 1)
            throw new ArgumentException("--runs must be at least 1.");
        int seed = options.Seed ?? Random.Shared.Next();
        var rng = new Random(seed);
        var cases = PrefillGrid.Build(options.Heads, options.Quick, cuda);
        var shapes = cases.Select(c => c.Shape).Distinct().OrderBy(s => s.Heads).ToList();
        var phases = new Dictionary<string, double>(StringComparer.Ordinal) { ["compile"] = 0, ["layer_checks"] = 0, ["cases"] = 0, ["peer"] = 0 };
        var phase = Stopwatch.StartNew();

        Log($"[bold]MlaGen prefill benchmark[/] on {Markup.Escape(device.ToString())}");
        Log($"{cases.Count} case(s) of {shapes.Count} shape(s); {runs} timed runs each (at least {Math.Min(runs, MinRuns)} where one run is long); seed {seed}; output {Markup.Escape(options.Out)}");

        var layerChecks = new List<PrefillLayerCheckResult>();
        var compile = new Dictionary<string, double>(StringComparer.Ordinal);
        var kinds = new Dictionary<string, string>(StringComparer.Ordinal);
        var results = new List<PrefillResult>();
        bool failed = false;
        using (var timer = new StreamTimer(accelerator, cuda ? StreamTimer.CudaFlushBytes : 0))
        {
            foreach (var shape in shapes)
            {
                phase.Restart();
                var before = device.LoadTimes.Keys.ToHashSet(StringComparer.Ordinal);
                var kernels = shape.LoadKernels(device, options.KernelPath);
                compile[shape.Key] = device.LoadTimes.Where(kv => !before.Contains(kv.Key)).Sum(kv => kv.Value.TotalSeconds);
                kinds[shape.Key] = kernels.ExpandedForm.ToString();
                Log($"{shape.Key}: {Markup.Escape(shape.Spec.ShapeText)}; kernels ({kernels.Path}, expanded form: {kernels.ExpandedForm}) loaded in {compile[shape.Key]:F2} s");
                phases["compile"] += phase.Elapsed.TotalSeconds;
                phase.Restart();

                PrefillLayerCheckResult? layer = null;
                if (kernels.ExpandedForm == ExpandedAttentionKind.None)
                {
                    Log($"{shape.Key}: [red]no expanded-form kernels on this accelerator[/]: nothing to time");
                    failed = true;
                }
                else if (!options.NoLayerCheck)
                {
                    try
                    {
                        layer = PrefillLayerCheck.Run(device, shape, options.KernelPath, rng.Next(), s => Log(Markup.Escape(s)));
                    }
                    catch (Exception e)
                    {
                        layer = new PrefillLayerCheckResult(shape.Key, false, 0, "", 0, double.NaN, double.NaN, 0, 0, $"{e.GetType().Name}: {e.Message}");
                    }
                    layerChecks.Add(layer);
                    Log($"{shape.Key}: expanded-form layer check {(layer.Passed ? "[green]passed[/]" : "[red]FAILED[/]")} (GPU {layer.GpuSeconds:F1} s, reference {layer.ReferenceSeconds:F1} s): {Markup.Escape(layer.Detail)}");
                    failed |= !layer.Passed;
                }
                phases["layer_checks"] += phase.Elapsed.TotalSeconds;
                phase.Restart();

                var weights = MlaWeights.Random(shape.Spec, rng.Next());
                foreach (var c in cases.Where(c => c.Shape == shape))
                {
                    PrefillResult result;
                    if (kernels.ExpandedForm == ExpandedAttentionKind.None)
                        result = PrefillResult.NotRun(c, "refused: no expanded-form kernels");
                    else if (layer is { Passed: false })
                        result = PrefillResult.NotRun(c, "refused: expanded-form layer check failed");
                    else
                        result = RunCase(device, c, weights, options.KernelPath, timer, runs, options.WarmupMs, rng.Next());
                    results.Add(result);
                    failed |= result.Status.StartsWith("refused", StringComparison.Ordinal) || result.Status.StartsWith("error", StringComparison.Ordinal)
                        || result.AbsorbedStatus.StartsWith("refused", StringComparison.Ordinal) || result.PlainStatus.StartsWith("refused", StringComparison.Ordinal);
                }
                phases["cases"] += phase.Elapsed.TotalSeconds;
            }
        }

        phase.Restart();
        PrefillPeerReport peer;
        if (options.NoPeer)
            peer = PrefillPeerReport.NotRun("not run (--no-peer)");
        else
        {
            Log($"PyTorch peer: {Markup.Escape(options.Python)} {PrefillPeer.ScriptName} on {cases.Count} case(s)...");
            peer = PrefillPeer.Run(options.Python, cases, cuda, runs, options.WarmupMs, options.Out, TimeSpan.FromSeconds(options.PeerTimeoutSeconds),
                s => Log(Markup.Escape(s)));
            if (!peer.Ran || peer.Status != "ok")
                Log($"[yellow]PyTorch peer: {Markup.Escape(peer.Status)}[/]; reporting ours only{(peer.Ran ? " where the peer has no result" : "")}.");
        }
        phases["peer"] = phase.Elapsed.TotalSeconds;
        results = results.Select(r => r with { Torch = peer.Results.GetValueOrDefault(r.Case.Id) }).ToList();

        var summary = new PrefillSummary($"{device.Selection} {device.Name}", device.Reason, started, total.Elapsed.TotalSeconds, commandLine,
            runs, MinRuns, MeasureBudgetMs, options.WarmupMs, cuda ? StreamTimer.CudaFlushBytes : 0, seed, kinds, layerChecks, compile, peer, results, phases);
        PrintTable(summary);
        PrefillReports.WriteAll(summary, options.Out);
        var plots = PrefillPlots.Write(summary, options.Out, s => Log(Markup.Escape(s)));
        Log(string.Create(CultureInfo.InvariantCulture, $"time: {string.Join(", ", phases.Select(p => $"{p.Key} {p.Value:F1} s"))}"));
        Log($"wrote prefill.csv, prefill.json, prefill.md{string.Concat(plots.Select(p => ", " + Path.GetFileName(p)))} to {Markup.Escape(options.Out)} in {total.Elapsed.TotalSeconds:F0} s");
        if (failed)
            Log("[red]some checks failed or cases errored: those were not timed (exit code 1)[/]");
        return failed ? 1 : 0;
    }

    private static PrefillResult RunCase(MlaDevice device, PrefillCase c, MlaWeights weights, MlaKernelPath path, StreamTimer timer,
        int runs, double warmupMs, int seed)
    {
        var spec = c.Shape.Spec;
        var accelerator = device.Accelerator;
        var stream = accelerator.DefaultStream;
        var rng = new Random(seed);
        var result = PrefillResult.NotRun(c, "ok");

        // Device memory: skip what cannot fit rather than fail half-way.
        long weightBytes = weights.Tensors.Values.Sum(t => (long)t.Data.Length * sizeof(ushort));
        long cacheBytes = (long)c.Batch * PagesPerSequence(c) * spec.PageSize * spec.CacheRowValues * sizeof(ushort);
        long expanded = ExpandedBytes(c);
        if (c.PlainEquivalent is { } plainCase)
            expanded = Math.Max(expanded, ExpandedBytes(plainCase));
        long available = (long)(accelerator.MemorySize * 0.92) - timer.FlushBytes - weightBytes - cacheBytes;
        if (expanded > available)
        {
            string why = FormattableString.Invariant($"skipped: needs ~{(expanded + weightBytes + cacheBytes) / 1e9:F1} GB of device memory, the device has {accelerator.MemorySize / 1e9:F1} GB");
            Log($"{c.Id}: [yellow]{Markup.Escape(why)}[/]");
            return result with { Status = why };
        }
        bool absorbedFits = expanded + AbsorbedBytes(c) <= available;

        var clock = Stopwatch.StartNew();
        try
        {
            using var layer = c.Shape.CreateLayer(device, weights, path);
            int pages = PagesPerSequence(c);
            using var cache = layer.CreateCache(c.Batch * pages, c.Batch, pages);
            var ids = Enumerable.Range(0, c.Batch).Select(_ => cache.CreateSequence()).ToArray();
            cache.Reserve(ids, Enumerable.Repeat(c.Length, c.Batch).ToArray());
            ulong rowSeed = (ulong)rng.NextInt64();
            for (int s = 0; s < c.Batch; s++)
                cache.WriteRows(ids[s], 0, DeviceFill.Bf16Rows(rowSeed + (ulong)s * 0x1000_0000_0000UL, (long)c.Length * spec.CacheRowValues));
            accelerator.Synchronize();
            var keys = new ExpandedKeys(spec, weights, cache, ids);
            var newTokens = Enumerable.Repeat(c.Chunk, c.Batch).ToArray();
            var auto = AttentionFormRule.Choose(layer.Kernels, newTokens, Enumerable.Repeat(c.Prefix, c.Batch).ToArray(), layer.Device.Accelerator.NumMultiprocessors);
            result = result with { AutoForm = auto.ToString().ToLowerInvariant() };
            float expandedAmplitude = ExpandedQueryAmplitude(spec, weights);
            var expandedOptions = new MlaForwardOptions { Form = MlaAttentionForm.Expanded };

            // (i), (ii) and the query kernel of the expanded form.
            var plan = layer.PlanExpandedAttention(cache, ids, newTokens, expandedOptions);
            layer.Stream.Synchronize();
            result = result with { ExpandedKind = plan.Kind.ToString(), Tiles = plan.Tiles };
            ulong querySeed = (ulong)rng.NextInt64();
            DeviceFill.Uniform(device, stream, plan.Query, querySeed, expandedAmplitude);
            var check = PrefillStageCheck.Expanded(accelerator, c, plan, keys, querySeed, expandedAmplitude, rng.Next());
            result = result with { ExpandedCheck = check };
            if (!check.Passed)
            {
                Log($"{c.Id}: [red]expanded attention check FAILED[/] ({Markup.Escape(check.Detail)}): not timed");
                result = result with { Status = "refused: expanded attention check failed" };
            }
            else
            {
                var attention = Measure(timer, plan.LaunchAttention, runs, warmupMs);
                var both = Measure(timer, s => { plan.LaunchExpand(s); plan.LaunchAttention(s); }, runs, warmupMs);
                var query = Measure(timer, plan.LaunchQuery, runs, warmupMs);
                result = result with { Attention = attention, ExpandAttention = both, Query = query };
                Log(string.Create(CultureInfo.InvariantCulture,
                    $"{c.Id} expanded ({plan.Kind}, {plan.Tiles} tiles, {plan.Keys} keys): attention {attention.MedianMs:F4} ms ({Reports.T(result.AttentionTflops)} TFLOP/s), expansion + attention {both.MedianMs:F4} ms ({Reports.T(result.ExpandAttentionTflops)} TFLOP/s), query {query.MedianMs:F4} ms; check {check.OutputRelL2:E1}"));
            }

            // The absorbed form on the same call.
            if (!c.TimeAbsorbed)
                result = result with { AbsorbedStatus = "not timed (plain prefill above 4096 tokens)" };
            else if (!absorbedFits)
                result = result with { AbsorbedStatus = FormattableString.Invariant($"skipped: needs ~{AbsorbedBytes(c) / 1e9:F1} GB more device memory") };
            else
                result = RunAbsorbed(device, c, layer, cache, ids, newTokens, weights, keys, timer, runs, warmupMs, rng, result);

            // For a chunked case: the same sequence as one plain prefill of P + C (ours, expansion + attention).
            if (c.PlainEquivalent is { } plain && check.Passed)
            {
                var plainPlan = layer.PlanExpandedAttention(cache, ids, Enumerable.Repeat(plain.Chunk, c.Batch).ToArray(), expandedOptions);
                layer.Stream.Synchronize();
                ulong plainSeed = (ulong)rng.NextInt64();
                DeviceFill.Uniform(device, stream, plainPlan.Query, plainSeed, expandedAmplitude);
                var plainCheck = PrefillStageCheck.Expanded(accelerator, plain, plainPlan, keys, plainSeed, expandedAmplitude, rng.Next(), maxHeads: 1);
                if (!plainCheck.Passed)
                {
                    Log($"{c.Id}: [red]plain prefill of {plain.Chunk} check FAILED[/] ({Markup.Escape(plainCheck.Detail)}): not timed");
                    result = result with { PlainStatus = "refused: check failed", PlainCheck = plainCheck };
                }
                else
                {
                    var plainTiming = Measure(timer, s => { plainPlan.LaunchExpand(s); plainPlan.LaunchAttention(s); }, runs, warmupMs);
                    result = result with { PlainStatus = "ok", PlainCheck = plainCheck, PlainExpandAttention = plainTiming };
                    Log(string.Create(CultureInfo.InvariantCulture,
                        $"{c.Id}: plain prefill of {plain.Chunk} tokens (expansion + attention) {plainTiming.MedianMs:F4} ms; chunk speedup {result.ChunkSpeedup:F2}×"));
                }
            }
        }
        catch (Exception e)
        {
            bool memory = e is OutOfMemoryException || e.Message.Contains("OUT_OF_MEMORY", StringComparison.OrdinalIgnoreCase)
                || e.Message.Contains("out of memory", StringComparison.OrdinalIgnoreCase);
            string status = memory ? $"skipped: out of memory ({e.GetType().Name})" : $"error: {e.GetType().Name}: {e.Message}";
            Log($"{c.Id}: [red]{Markup.Escape(status)}[/]");
            try
            {
                accelerator.Synchronize();
            }
            catch (Exception again)
            {
                Log($"{c.Id}: [red]the accelerator did not recover[/] ({Markup.Escape(again.Message)})");
            }
            return result with { Status = result.Status == "ok" ? status : result.Status + "; " + status };
        }
        Log(string.Create(CultureInfo.InvariantCulture, $"{c.Id}: done in {clock.Elapsed.TotalSeconds:F1} s"));
        return result;
    }

    private static PrefillResult RunAbsorbed(MlaDevice device, PrefillCase c, MlaLayer layer, LatentCache cache, SequenceId[] ids, int[] newTokens,
        MlaWeights weights, ExpandedKeys keys, StreamTimer timer, int runs, double warmupMs, Random rng, PrefillResult result)
    {
        var spec = c.Shape.Spec;
        var accelerator = device.Accelerator;
        var stream = accelerator.DefaultStream;
        var absorbed = layer.PlanAttention(cache, ids, newTokens);
        layer.Stream.Synchronize();
        // As the decode benchmark: rows uniform in [-1, 1), scores with a standard deviation of about 2.5.
        double scale = NaiveMlaReference.SoftmaxScale(spec);
        float amplitude = (float)(2.5 / (scale * Math.Sqrt(spec.CacheRowValues / 9.0)));
        ulong querySeed = (ulong)rng.NextInt64();
        DeviceFill.Uniform(device, stream, absorbed.AbsorbedQuery, querySeed, amplitude);
        var check = PrefillStageCheck.Absorbed(accelerator, c, absorbed, keys, querySeed, amplitude, rng.Next());
        result = result with { AbsorbedCheck = check, AbsorbedTensorCores = absorbed.UsesTensorCores };
        if (!check.Passed)
        {
            Log($"{c.Id}: [red]absorbed attention check FAILED[/] ({Markup.Escape(check.Detail)}): not timed");
            return result with { AbsorbedStatus = "refused: absorbed attention check failed" };
        }
        var attention = Measure(timer, absorbed.Launch, runs, warmupMs);

        // The absorbed form's other kernels for this call: W_UKᵀ·q_nope + RoPE (QueryAbsorb) before, W_UV after.
        long rows = c.Tokens * c.Heads;
        using var query = accelerator.Allocate1D<float>(rows * c.QkDim);
        using var kvUp = accelerator.Allocate1D(weights.KvBProj.Data);
        using var headOut = accelerator.Allocate1D<float>(rows * c.VDim);
        DeviceFill.Uniform(device, stream, query.View, (ulong)rng.NextInt64(), 1f);
        var absorb = new QueryAbsorbParams
        {
            Query = query.View, KvUp = kvUp.View, TokenPosition = absorbed.TokenPosition, AbsorbedQuery = absorbed.AbsorbedQuery, Tokens = (int)c.Tokens,
        };
        var valueProjection = new ValueProjectionParams { LatentOutput = absorbed.LatentOutput, KvUp = kvUp.View, HeadOutput = headOut.View, Tokens = (int)c.Tokens };
        var extras = Measure(timer, s =>
        {
            layer.Kernels.QueryAbsorb(s, absorb);
            layer.Kernels.ValueProjection(s, valueProjection);
        }, runs, warmupMs);
        result = result with { AbsorbedStatus = "ok", Absorbed = attention, AbsorbedExtras = extras };
        Log(string.Create(CultureInfo.InvariantCulture,
            $"{c.Id} absorbed ({(absorbed.UsesTensorCores ? "tensor-core" : "general")} kernel, {absorbed.Parts} parts): attention + combine {attention.MedianMs:F4} ms ({Reports.T(result.AbsorbedTflops)} TFLOP/s), QueryAbsorb + W_UV {extras.MedianMs:F4} ms; check {check.OutputRelL2:E1}"));
        return result;
    }

    /// <summary>One untimed run sizes the run count: at most ~<see cref="MeasureBudgetMs"/> of timed runs, never fewer than <see cref="MinRuns"/>.</summary>
    private static TimingStats Measure(StreamTimer timer, Action<AcceleratorStream> enqueue, int runs, double warmupMs)
    {
        var stream = timer.Accelerator.DefaultStream;
        stream.Synchronize();
        var wall = Stopwatch.StartNew();
        enqueue(stream);
        stream.Synchronize();
        double estimate = Math.Max(1e-3, wall.Elapsed.TotalMilliseconds);
        int n = estimate * runs <= MeasureBudgetMs ? runs : Math.Max(Math.Min(runs, MinRuns), (int)(MeasureBudgetMs / estimate));
        return timer.Time(enqueue, n, warmupMs);
    }

    private static int PagesPerSequence(PrefillCase c) => (c.Length + c.Shape.Spec.PageSize - 1) / c.Shape.Spec.PageSize;

    /// <summary>Query fp32 + head query bf16 + head output fp32 + LSE per (token, head); K_nope and V bf16 per (head, key).</summary>
    private static long ExpandedBytes(PrefillCase c)
    {
        long rows = c.Tokens * c.Heads;
        long keys = (c.Keys + (long)c.Batch * MlaKernelSet.ExpandedKeyTile) * c.Heads;
        return rows * (c.QkDim * 6L + c.VDim * 4L + 4) + keys * (c.Shape.Spec.NopeHeadDim + c.VDim) * 2L + c.Keys * 16;
    }

    /// <summary>Absorbed query, latent output and partial outputs fp32 per (token, head), plus this benchmark's query and W_UV output.</summary>
    private static long AbsorbedBytes(PrefillCase c)
    {
        long rows = c.Tokens * c.Heads;
        var s = c.Shape.Spec;
        return rows * (s.CacheRowValues * 4L + s.LatentRank * 4L * 2 + 12 + c.QkDim * 4L + c.VDim * 4L) + (1L << 28);
    }

    /// <summary>
    /// Query amplitude for the expanded form: keys are [W_UK·c_kv | k_pe] with rows uniform in [-1, 1) (E = 1/3 per
    /// value), so E[k_nope²] = mean over W_UK rows of Σ w² / 3; aim the scores' standard deviation at about 2.5.
    /// </summary>
    private static float ExpandedQueryAmplitude(MlaSpec spec, MlaWeights weights)
    {
        int nope = spec.NopeHeadDim, v = spec.VHeadDim, latent = spec.LatentRank;
        var data = weights.KvBProj.Data;
        double sum = 0;
        for (int h = 0; h < spec.Heads; h++)
            for (int j = 0; j < nope; j++)
                for (int i = 0; i < latent; i++)
                {
                    double w = Numerics.Bf16.ToFloat(data[((long)h * (nope + v) + j) * latent + i]);
                    sum += w * w;
                }
        double kNope2 = sum / (spec.Heads * nope) / 3;
        double perQueryValue = (nope * kNope2 + spec.RopeDim / 3.0) / 3; // E[q²] = a²/3 for q uniform in ±a
        return (float)(2.5 / (NaiveMlaReference.SoftmaxScale(spec) * Math.Sqrt(perQueryValue)));
    }

    private static void PrintTable(PrefillSummary run)
    {
        var table = new Table().Border(TableBorder.Rounded);
        foreach (string column in new[] { "case", "attn ms", "TFLOP/s", "exp+attn ms", "absorbed ms", "faster form", "SDPA ms", "eager ms", "ours/SDPA", "eager/ours", "chunk vs P+C", "status" })
            table.AddColumn(column);
        foreach (var r in run.Results)
        {
            table.AddRow(r.Case.Id, F(r.AttentionMs, "F3"), Reports.T(r.AttentionTflops), F(r.ExpandAttentionMs, "F3"), F(r.AbsorbedMs, "F3"),
                r.FasterForm ?? "-", F(r.SdpaMs, "F3"), F(r.EagerMs, "F3"), F(r.OursOverSdpa, "F2"), F(r.EagerOverOurs, "F2"),
                F(r.ChunkSpeedup, "F2"), Markup.Escape(r.Status));
        }
        AnsiConsole.Write(table);
        Log("ours/SDPA = our attention kernel's time over SDPA's (below 1: ours is faster); eager/ours above 1: ours is faster; chunk vs P+C = plain prefill of P + C time over the chunk's (expansion + attention both)");
    }

    private static string F(double? value, string format) => value is double v ? v.ToString(format, CultureInfo.InvariantCulture) : "-";

    private static void Log(string markup) => AnsiConsole.MarkupLine(markup);
}
