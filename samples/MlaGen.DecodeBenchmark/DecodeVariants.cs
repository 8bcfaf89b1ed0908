using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Reflection;
using System.Text;
using ILGPU;
using ILGPU.Runtime;
using MlaGen.Devices;
using MlaGen.Kernels;
using Spectre.Console;

namespace MlaGen.DecodeBenchmark;

/// <summary>One build of the tensor-core attention kernel in <see cref="DecodeVariants"/>, checked and (if it passed) timed.</summary>
internal sealed record VariantResult(
    string Config, string Variant, CudaFunctionAttributes? Attributes, AttentionCheckResult? Check, TimingStats? Stats, double? GBps, double? Tflops,
    double? RatioToBaseline, string Status);

/// <summary>
/// <c>--decode-variants</c>: the register-cap experiment (docs/performance.md, "What v4 needs" 1). ptxas gives the
/// tensor-core attention kernel ~250 registers per thread, so few warps fit on an SM. ILGPU cannot ask for fewer, so
/// the kernel is loaded through <see cref="PtxKernelLoader"/> with <c>.maxnreg</c> inserted into its PTX, and each
/// build is checked against the float64 reference (<see cref="AttentionCheck"/>) and timed with the combine, exactly as
/// the grid times the kernel. A build that fails its check is reported, not timed.
/// </summary>
internal static class DecodeVariants
{
    /// <summary>The builds compared; the first is the baseline of the ratios.</summary>
    private static readonly (string Name, PtxTuning Tuning)[] Variants =
    {
        ("a: as compiled", PtxTuning.None),
        ("b: .maxnreg 168", new PtxTuning(maxRegisters: 168)),
        ("c: .maxnreg 128", new PtxTuning(maxRegisters: 128)),
    };

    // The generated MlaKernels classes are internal to this assembly, so their kernel methods are named directly.
    private static readonly (int Heads, MethodInfo Kernel, int Threads)[] Kernels =
    {
        (16, new Action<TensorCoreAttentionParams>(Heads16Attention.MlaKernels.TensorCoreAttentionKernel).Method, Heads16Attention.MlaKernels.TcThreads),
        (128, new Action<TensorCoreAttentionParams>(Heads128Attention.MlaKernels.TensorCoreAttentionKernel).Method, Heads128Attention.MlaKernels.TcThreads),
    };

    /// <summary>The mma.sync kernel's work item (the same constants for every shape), which the variants are builds of.</summary>
    private static readonly DecodeTiling MmaSyncTiling =
        new(Heads16Attention.MlaKernels.TcRows, Heads16Attention.MlaKernels.TcTile, Heads16Attention.MlaKernels.TcCtasPerSm,
            Heads16Attention.MlaKernels.TcCombineSlices, Heads16Attention.MlaKernels.TcThreads / 32);

    public static int Run(string? deviceSelection, int? runsOption, double warmupMs, int? seedOption, string outDir)
    {
        using var device = MlaDevice.Create(deviceSelection);
        if (!device.IsCuda)
        {
            Log($"[red]--decode-variants needs a CUDA GPU[/] (it loads PTX with register caps into the CUDA driver); this run got {Markup.Escape(device.ToString())}.");
            return 2;
        }
        Directory.CreateDirectory(outDir);
        var accelerator = device.Accelerator;
        int runs = runsOption ?? 50;
        int seed = seedOption ?? Random.Shared.Next();
        // B = 128 (no block split) and B = 1 over 32K tokens (one wave of split items, merged in place).
        var heads = Kernels.Select(k => k.Heads).ToArray();
        var configs = Grid.Build(new GridRequest(heads, [4096], [128], [1], [LengthMode.Fixed], Quick: false, Cuda: true))
            .Concat(Grid.Build(new GridRequest(heads, [32768], [1], [1], [LengthMode.Fixed], Quick: false, Cuda: true))).ToList();
        Log($"[bold]decode variants[/] on {Markup.Escape(device.ToString())}: {string.Join(", ", configs.Select(c => c.Id))}; {runs} timed runs each; seed {seed}");

        var results = new List<VariantResult>();
        bool failed = false;
        long pages = configs.Max(c => c.PagesNeeded);
        using (var pool = new PagePool(accelerator, configs[0].PageSize, configs[0].RowValues, checked((int)pages), (ulong)seed * 0x9E3779B97F4A7C15UL + 1))
        using (var timer = new StreamTimer(accelerator, StreamTimer.CudaFlushBytes))
        {
            foreach (var config in configs)
            {
                var (_, method, threads) = Kernels.Single(k => k.Heads == config.Heads);
                var kernels = config.Shape.LoadKernels(device, MlaKernelPath.Auto);
                using var buffers = new ConfigBuffers(accelerator, config, pool, seed);
                double? baseline = null;
                foreach (var (name, tuning) in Variants)
                {
                    var result = RunVariant(device, kernels, method, threads, name, tuning, config, buffers, timer, runs, warmupMs, seed, baseline);
                    baseline ??= result.Stats?.MedianMs;
                    failed |= result.Stats is null;
                    results.Add(result);
                }
            }
        }

        PrintTable(results);
        File.WriteAllText(Path.Combine(outDir, "variants.csv"), Csv(results));
        File.WriteAllText(Path.Combine(outDir, "variants.md"), Markdown(results, device.ToString(), runs, seed));
        Log($"wrote variants.csv and variants.md to {Markup.Escape(outDir)}");
        return failed ? 1 : 0;
    }

    private static VariantResult RunVariant(MlaDevice device, MlaKernelSet kernels, MethodInfo method, int threads, string name, PtxTuning tuning,
        BenchConfig config, ConfigBuffers buffers, StreamTimer timer, int runs, double warmupMs, int seed, double? baseline)
    {
        try
        {
            using var kernel = PtxKernelLoader.Load<TensorCoreAttentionParams>(device.Accelerator, method, tuning);
            var attributes = kernel.Attributes;
            var attention = new TensorCoreDecodeAttention(device, kernels, (stream, p) =>
            {
                if (p.Items > 0)
                    kernel.Launch(stream, new KernelConfig(p.Items, threads), p);
            }, MmaSyncTiling, name);
            using var launch = attention.Prepare(buffers.Problem);
            var check = AttentionCheck.Run(device.Accelerator, buffers, launch, seed, attention.StageTolerance);
            string regs = $"{attributes.Registers} registers, {attributes.LocalBytes} B local";
            if (!check.Passed)
            {
                Log($"{config.Id} {Markup.Escape(name)} ({regs}): [red]attention check FAILED[/] ({Markup.Escape(check.Detail)}): not timed");
                return new VariantResult(config.Id, name, attributes, check, null, null, null, null, "refused: attention check failed");
            }
            var stats = timer.Time(launch.Enqueue, runs, warmupMs);
            double ms = stats.MedianMs;
            var result = new VariantResult(config.Id, name, attributes, check, stats, config.Bytes / (ms * 1e-3) / 1e9, config.Flop / (ms * 1e-3) / 1e12,
                baseline is double b ? b / ms : 1.0, "ok");
            Log(string.Create(CultureInfo.InvariantCulture,
                $"{config.Id} {Markup.Escape(name)} ({regs}): {ms:F4} ms, {Reports.G(result.GBps)} GB/s, {Reports.T(result.Tflops)} TFLOP/s, {result.RatioToBaseline:F2}x of a; check {check.OutputRelL2:E1}"));
            return result;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            Log($"{config.Id} {Markup.Escape(name)}: [red]error[/] {Markup.Escape(e.GetType().Name + ": " + e.Message)}");
            return new VariantResult(config.Id, name, null, null, null, null, null, null, $"error: {e.GetType().Name}: {e.Message}");
        }
    }

    private static readonly string[] Columns = { "config", "variant", "registers", "local bytes", "median ms", "GB/s", "TFLOP/s", "speedup vs a", "check rel L2", "status" };

    private static string[] Cells(VariantResult r) => new[]
    {
        r.Config, r.Variant, F(r.Attributes?.Registers), F(r.Attributes?.LocalBytes), F(r.Stats?.MedianMs, "F4"), Reports.G(r.GBps), Reports.T(r.Tflops),
        F(r.RatioToBaseline, "F2"), F(r.Check?.OutputRelL2, "E1"), r.Status,
    };

    private static void PrintTable(List<VariantResult> results)
    {
        var table = new Table().Border(TableBorder.Rounded);
        foreach (var column in Columns)
            table.AddColumn(column);
        foreach (var r in results)
            table.AddRow(Cells(r).Select(c => Markup.Escape(c.Length == 0 ? "-" : c)).ToArray());
        AnsiConsole.Write(table);
        Log("speedup vs a = median time of variant a (as compiled) / this variant's; local bytes include register spills");
    }

    private static string Csv(List<VariantResult> results)
    {
        var sb = new StringBuilder("config,variant,registers,local_bytes,static_shared_bytes,median_ms,min_ms,p90_ms,gbps,tflops,speedup_vs_a,check_rel_l2,status\n");
        foreach (var r in results)
        {
            sb.AppendLine(string.Join(',', r.Config, r.Variant, F(r.Attributes?.Registers), F(r.Attributes?.LocalBytes), F(r.Attributes?.StaticSharedBytes),
                F(r.Stats?.MedianMs, "G6"), F(r.Stats?.MinMs, "G6"), F(r.Stats?.P90Ms, "G6"), F(r.GBps, "G6"), F(r.Tflops, "G6"), F(r.RatioToBaseline, "G4"),
                F(r.Check?.OutputRelL2, "E2"), "\"" + r.Status.Replace("\"", "'", StringComparison.Ordinal) + "\""));
        }
        return sb.ToString();
    }

    private static string Markdown(List<VariantResult> results, string device, int runs, int seed)
    {
        var sb = new StringBuilder();
        sb.AppendLine("# Decode kernel register-cap variants");
        sb.AppendLine();
        sb.AppendLine(string.Create(CultureInfo.InvariantCulture,
            $"{device}; tensor-core attention + combine; {runs} timed runs each (median), L2 flushed before each; seed {seed}."));
        sb.AppendLine("Every variant is ILGPU's PTX of the kernel loaded through PtxKernelLoader, with the directive shown inserted "
            + "(variant a: unedited, the same text the generated kernel set loads); registers and local bytes are the driver's "
            + "(cuFuncGetAttribute); each variant was checked against float64 (AttentionCheck) before it was timed.");
        sb.AppendLine();
        sb.AppendLine("| " + string.Join(" | ", Columns) + " |");
        sb.AppendLine("|" + string.Concat(Enumerable.Repeat("---|", Columns.Length)));
        foreach (var r in results)
            sb.AppendLine("| " + string.Join(" | ", Cells(r).Select(c => c.Replace('|', '/'))) + " |");
        return sb.ToString();
    }

    private static string F(double? value, string format) => value is double v ? v.ToString(format, CultureInfo.InvariantCulture) : "";

    private static string F(int? value) => value?.ToString(CultureInfo.InvariantCulture) ?? "";

    private static void Log(string markup) => AnsiConsole.MarkupLine(markup);
}
