using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using MlaGen.Devices;
using MlaGen.Kernels;
using Spectre.Console;

namespace MlaGen.DecodeBenchmark;

/// <summary>
/// Order of a run: per shape, compile, check the layer end to end (a failing shape is not timed), then per
/// configuration build the scattered cache view and queries, check the attention stage exactly as it will be timed
/// (a failing configuration is not timed), time it. Then the PyTorch peer on the same grid, then the reports.
/// </summary>
internal static class BenchmarkRunner
{
    public static int Run(BenchOptions options, string commandLine)
    {
        var started = DateTimeOffset.Now;
        var total = Stopwatch.StartNew();
        Directory.CreateDirectory(options.Out);

        using var device = MlaDevice.Create(options.Device);
        bool cuda = device.IsCuda;
        var accelerator = device.Accelerator;
        int runs = options.Runs ?? (cuda ? 50 : 10);
        if (runs < 1)
            throw new ArgumentException("--runs must be at least 1.");
        int seed = options.Seed ?? Random.Shared.Next();
        var rng = new Random(seed);

        var grid = Grid.Build(new GridRequest(options.Heads, options.SeqLens, options.Batches, options.QueryLens, options.Modes, options.Quick, cuda));
        string? partText = null;
        if (options.Part is not null)
        {
            var pieces = options.Part.Split('/');
            if (pieces.Length != 2 || !int.TryParse(pieces[0], out int i) || !int.TryParse(pieces[1], out int n))
                throw new ArgumentException($"--part {options.Part}: expected i/n, e.g. 1/2.");
            grid = Grid.Part(grid, i, n);
            partText = options.Part;
        }
        var shapes = grid.Select(c => c.Shape).Distinct().OrderBy(s => s.Heads).ToList();
        var kernelNames = new List<string>();

        Log($"[bold]MlaGen decode benchmark[/] on {Markup.Escape(device.ToString())}");
        Log($"{grid.Count} configuration(s) of {shapes.Count} shape(s){(partText is null ? "" : $", part {partText}")}; {runs} timed runs each; seed {seed}; output {Markup.Escape(options.Out)}");
        if (!cuda && shapes.Any(s => !s.IsTiny))
            Log("[yellow]warning:[/] DeepSeek-sized shapes on the CPU accelerator take a very long time; --quick or --heads 4 is the CPU smoke test.");

        var layerChecks = new List<LayerCheckResult>();
        var compile = new Dictionary<string, double>(StringComparer.Ordinal);
        var results = new List<ConfigResult>();
        var pools = new Dictionary<(int PageSize, int Row), PagePool>();
        // The shape with the fewest heads (if ≤ 16) also gets one decode at the full (longest) length of the grid.
        int fullLength = grid.Count == 0 ? 0 : grid.Max(c => c.SeqLen);
        bool failed = false;
        var phases = new Dictionary<string, double>(StringComparer.Ordinal) { ["compile"] = 0, ["layer_checks"] = 0, ["configs"] = 0, ["peer"] = 0 };
        var phase = Stopwatch.StartNew();

        using (var timer = new StreamTimer(accelerator, cuda ? StreamTimer.CudaFlushBytes : 0))
        {
            AnsiConsole.Progress()
                .AutoClear(false)
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new SpinnerColumn())
                .Start(ctx =>
                {
                    var task = ctx.AddTask("starting", maxValue: Math.Max(1, shapes.Count + grid.Count));
                    foreach (var shape in shapes)
                    {
                        task.Description = $"{shape.Key}: compiling";
                        phase.Restart();
                        var before = device.LoadTimes.Keys.ToHashSet(StringComparer.Ordinal);
                        var kernels = shape.LoadKernels(device, options.KernelPath);
                        compile[shape.Key] = device.LoadTimes.Where(kv => !before.Contains(kv.Key)).Sum(kv => kv.Value.TotalSeconds);
                        var attention = KernelUnderTest.Create(device, kernels, options.Splits, options.TensorCores);
                        if (!kernelNames.Contains(attention.Name))
                            kernelNames.Add(attention.Name);
                        Log($"{shape.Key}: {Markup.Escape(shape.Spec.ShapeText)}; kernels ({kernels.Path}) compiled and loaded in {compile[shape.Key]:F2} s");
                        phases["compile"] += phase.Elapsed.TotalSeconds;
                        phase.Restart();

                        LayerCheckResult? layer = null;
                        if (!options.NoLayerCheck)
                        {
                            task.Description = $"{shape.Key}: layer check";
                            // Non-absorbed float64 over 32k tokens costs H·32k·2·131k multiply-adds: affordable for 16 heads only.
                            int full = shape == shapes[0] && shape.Heads <= 16 ? fullLength : 0;
                            try
                            {
                                layer = LayerCheck.Run(device, shape, options.KernelPath, rng.Next(), full, s => Log(Markup.Escape(s)), options.TensorCores);
                            }
                            catch (Exception e) when (e is not OutOfMemoryException)
                            {
                                layer = new LayerCheckResult(shape.Key, false, 0, [], 0, double.NaN, double.NaN, double.NaN, double.NaN, double.NaN, 0, 0,
                                    $"{e.GetType().Name}: {e.Message}");
                            }
                            layerChecks.Add(layer);
                            Log($"{shape.Key}: layer check {(layer.Passed ? "[green]passed[/]" : "[red]FAILED[/]")} in {layer.GpuSeconds + layer.ReferenceSeconds:F1} s: {Markup.Escape(layer.Detail)}");
                            failed |= !layer.Passed;
                        }
                        task.Increment(1);
                        phases["layer_checks"] += phase.Elapsed.TotalSeconds;
                        phase.Restart();

                        foreach (var config in grid.Where(c => c.Shape == shape))
                        {
                            task.Description = config.Id;
                            results.Add(RunConfig(device, config, attention, Pool(pools, accelerator, grid, config, seed), timer, layer, runs, options.WarmupMs, rng.Next(), compile[shape.Key]));
                            failed |= !results[^1].Timed;
                            task.Increment(1);
                        }
                        phases["configs"] += phase.Elapsed.TotalSeconds;
                    }
                    task.Description = "done";
                });
        }
        foreach (var pool in pools.Values)
            pool.Dispose();

        // The peer runs after our timing, with our buffers freed, so the two never share the GPU.
        PeerReport peer;
        phase.Restart();
        if (options.NoPeer)
            peer = PeerReport.NotRun("not run (--no-peer)");
        else
        {
            Log($"PyTorch peer: {Markup.Escape(options.Python)} {Peer.ScriptName} on {grid.Count} configuration(s)...");
            peer = Peer.Run(options.Python, grid, cuda, runs, options.WarmupMs, options.Out, TimeSpan.FromSeconds(options.PeerTimeoutSeconds),
                s => Log(Markup.Escape(s)));
            if (!peer.Ran || peer.Status != "ok")
                Log($"[yellow]PyTorch peer: {Markup.Escape(peer.Status)}[/]; reporting ours only{(peer.Ran ? " where the peer has no result" : "")}.");
        }
        phases["peer"] = phase.Elapsed.TotalSeconds;
        results = results.Select(r => r with { Torch = peer.Results.GetValueOrDefault(r.Config.Id) }).ToList();

        var summary = new RunSummary($"{device.Selection} {device.Name}", device.Reason, kernelNames.Count == 0 ? "(none)" : string.Join("; ", kernelNames), started, total.Elapsed.TotalSeconds, commandLine,
            runs, options.WarmupMs, cuda ? StreamTimer.CudaFlushBytes : 0, seed, partText, layerChecks, compile, peer, results, phases);
        PrintTable(summary);
        Reports.WriteAll(summary, options.Out);
        var plots = Plots.Write(summary, options.Out, s => Log(Markup.Escape(s)));
        Log(string.Create(CultureInfo.InvariantCulture, $"time: {string.Join(", ", phases.Select(p => $"{p.Key} {p.Value:F1} s"))}"));
        Log($"wrote results.csv, results.json, results.md{string.Concat(plots.Select(p => ", " + Path.GetFileName(p)))} to {Markup.Escape(options.Out)} in {total.Elapsed.TotalSeconds:F0} s");
        if (failed)
            Log("[red]some checks failed or configurations errored: those were not timed (exit code 1)[/]");
        return failed ? 1 : 0;
    }

    private static ConfigResult RunConfig(MlaDevice device, BenchConfig config, IDecodeAttention attention, PagePool pool, StreamTimer timer,
        LayerCheckResult? layer, int runs, double warmupMs, int seed, double compileSeconds)
    {
        if (layer is { Passed: false })
            return new ConfigResult(config, attention.Name, "refused: layer check failed", 0, null, null, compileSeconds, null);
        try
        {
            using var buffers = new ConfigBuffers(device.Accelerator, config, pool, seed);
            using var launch = attention.Prepare(buffers.Problem);
            var check = AttentionCheck.Run(device.Accelerator, buffers, launch, seed, attention.StageTolerance);
            if (!check.Passed)
            {
                Log($"{config.Id}: [red]attention check FAILED[/] ({Markup.Escape(check.Detail)}): not timed");
                return new ConfigResult(config, attention.Name, "refused: attention check failed", launch.Splits, null, check, compileSeconds, null);
            }
            var stats = timer.Time(launch.Enqueue, runs, warmupMs);
            var result = new ConfigResult(config, attention.Name, layer is null ? "ok (layer not checked)" : "ok", launch.Splits, stats, check, compileSeconds, null);
            Log(string.Create(CultureInfo.InvariantCulture,
                $"{config.Id}: {stats.MedianMs:F4} ms (min {stats.MinMs:F4}, p90 {stats.P90Ms:F4}), {Reports.G(result.OurGBps)} GB/s, {Reports.T(result.OurTflops)} TFLOP/s, splits {launch.Splits}; check {check.OutputRelL2:E1}"));
            return result;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            Log($"{config.Id}: [red]error[/] {Markup.Escape(e.GetType().Name + ": " + e.Message)}");
            return new ConfigResult(config, attention.Name, $"error: {e.GetType().Name}: {e.Message}", 0, null, null, compileSeconds, null);
        }
    }

    /// <summary>The page pool of the config's row layout, sized for every configuration of the grid that shares it.</summary>
    private static PagePool Pool(Dictionary<(int, int), PagePool> pools, ILGPU.Runtime.Accelerator accelerator, List<BenchConfig> grid, BenchConfig config, int seed)
    {
        var key = (config.PageSize, config.RowValues);
        if (!pools.TryGetValue(key, out var pool))
        {
            long pages = grid.Where(c => (c.PageSize, c.RowValues) == key).Max(c => c.PagesNeeded);
            var watch = Stopwatch.StartNew();
            pool = new PagePool(accelerator, config.PageSize, config.RowValues, checked((int)pages), (ulong)seed * 0x9E3779B97F4A7C15UL + 1);
            pools[key] = pool;
            Log($"page pool: {pages} pages of {config.PageSize} × {config.RowValues} BF16 ({pool.Bytes / 1e9:F2} GB) filled in {watch.Elapsed.TotalSeconds:F1} s");
        }
        return pool;
    }

    private static void PrintTable(RunSummary run)
    {
        var table = new Table().Border(TableBorder.Rounded);
        foreach (string column in new[] { "config", "splits", "ms", "GB/s", "TFLOP/s", "torch ms", "ours/torch", "%copy", "status" })
            table.AddColumn(column);
        foreach (var r in run.Configs)
        {
            table.AddRow(
                r.Config.Id, r.Splits.ToString(CultureInfo.InvariantCulture),
                r.Ours is null ? "-" : r.Ours.MedianMs.ToString("F4", CultureInfo.InvariantCulture),
                r.OurGBps is null ? "-" : Reports.G(r.OurGBps),
                r.OurTflops is null ? "-" : Reports.T(r.OurTflops),
                r.TorchMs?.ToString("F4", CultureInfo.InvariantCulture) ?? "-",
                r.TimeRatio?.ToString("F2", CultureInfo.InvariantCulture) ?? "-",
                r.PercentOfCopy(run.Peer.CopyGBps)?.ToString("F1", CultureInfo.InvariantCulture) ?? "-",
                Markup.Escape(r.Status));
        }
        AnsiConsole.Write(table);
        if (run.Peer.CopyGBps is double copy)
            Log(string.Create(CultureInfo.InvariantCulture, $"device copy (PyTorch, {run.Peer.CopyBytes >> 20} MiB, read + write counted): {copy:F0} GB/s"));
        Log("ours/torch = our median time / PyTorch eager's (below 1: ours is faster); %copy = our GB/s / device copy GB/s");
    }

    private static void Log(string markup) => AnsiConsole.MarkupLine(markup);
}
