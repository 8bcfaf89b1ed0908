using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Text;
using System.Text.Json;
using static MlaGen.DecodeBenchmark.CsvText;

namespace MlaGen.DecodeBenchmark;

/// <summary>Everything known about one configuration after the run.</summary>
internal sealed record ConfigResult(
    BenchConfig Config, string Kernel, string Status, int Splits, TimingStats? Ours, AttentionCheckResult? Check, double CompileSeconds, PeerResult? Torch)
{
    public bool Timed => Ours is not null;

    public double? OurGBps => Ours is null ? null : Config.Bytes / (Ours.MedianMs * 1e-3) / 1e9;

    public double? OurTflops => Ours is null ? null : Config.Flop / (Ours.MedianMs * 1e-3) / 1e12;

    public double? TorchMs => Torch?.Error is null ? Torch?.MsMedian : null;

    public double? TorchGBps => TorchMs is double ms ? Config.Bytes / (ms * 1e-3) / 1e9 : null;

    public double? TorchTflops => TorchMs is double ms ? Config.Flop / (ms * 1e-3) / 1e12 : null;

    /// <summary>Torch time over ours: above 1 means ours is faster.</summary>
    public double? Speedup => Ours is not null && TorchMs is double t ? t / Ours.MedianMs : null;

    /// <summary>Our time over torch's (the ratio the console prints).</summary>
    public double? TimeRatio => Ours is not null && TorchMs is double t ? Ours.MedianMs / t : null;

    public double? PercentOfCopy(double? copyGBps) => OurGBps is double g && copyGBps is double c && c > 0 ? 100 * g / c : null;
}

/// <summary>The run as a whole, for the report files.</summary>
internal sealed record RunSummary(
    string Device, string DeviceReason, string Kernel, DateTimeOffset Started, double TotalSeconds, string CommandLine,
    int Runs, double WarmupMs, long FlushBytes, int Seed, string? Part, IReadOnlyList<LayerCheckResult> LayerChecks,
    IReadOnlyDictionary<string, double> CompileSeconds, PeerReport Peer, IReadOnlyList<ConfigResult> Configs,
    IReadOnlyDictionary<string, double> PhaseSeconds);

internal static class Reports
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public static void WriteAll(RunSummary run, string outDir)
    {
        File.WriteAllText(Path.Combine(outDir, "results.csv"), Csv(run));
        File.WriteAllText(Path.Combine(outDir, "results.json"), Json(run));
        File.WriteAllText(Path.Combine(outDir, "results.md"), Markdown(run));
    }

    private static string F(double? value, string format) => value is double v ? v.ToString(format, Inv) : "";

    /// <summary>GB/s: whole numbers, more digits for the CPU's small values.</summary>
    internal static string G(double? value) => value is double v ? v.ToString(v >= 100 ? "F0" : v >= 1 ? "F1" : "G3", Inv) : "";

    /// <summary>TFLOP/s: two decimals, more digits for small values.</summary>
    internal static string T(double? value) => value is double v ? v.ToString(v >= 1 ? "F2" : "G3", Inv) : "";

    public static string Csv(RunSummary run)
    {
        var sb = new StringBuilder();
        sb.AppendLine("config,shape,heads,batch,seq_len,q_len,lengths,sum_seqlen,max_seqlen,kernel,splits,status,runs,ms_median,ms_min,ms_p90,"
            + "gbps,tflops,compile_s,check_out_rel_l2,check_lse_rel_l2,torch_ms_median,torch_ms_min,torch_ms_p90,torch_gbps,torch_tflops,"
            + "torch_check_rel_err,speedup,time_ratio_ours_over_torch,pct_copy,copy_gbps");
        foreach (var r in run.Configs)
        {
            var c = r.Config;
            var cells = new[]
            {
                c.Id, c.Shape.Key, c.Heads.ToString(Inv), c.Batch.ToString(Inv), c.SeqLen.ToString(Inv), c.QueryLen.ToString(Inv),
                c.Mode == LengthMode.Fixed ? "fixed" : "variable", c.SumSeqLen.ToString(Inv), c.MaxSeqLen.ToString(Inv),
                Quote(r.Kernel), r.Splits.ToString(Inv), Quote(r.Status), (r.Ours?.Runs ?? 0).ToString(Inv),
                F(r.Ours?.MedianMs, "G6"), F(r.Ours?.MinMs, "G6"), F(r.Ours?.P90Ms, "G6"), F(r.OurGBps, "G6"), F(r.OurTflops, "G6"),
                F(r.CompileSeconds, "F3"), F(r.Check?.OutputRelL2, "E3"), F(r.Check?.LseRelL2, "E3"),
                F(r.TorchMs, "G6"), F(r.Torch?.MsMin, "G6"), F(r.Torch?.MsP90, "G6"), F(r.TorchGBps, "G6"), F(r.TorchTflops, "G6"),
                F(r.Torch?.CheckRelErr, "E3"), F(r.Speedup, "G6"), F(r.TimeRatio, "G6"), F(r.PercentOfCopy(run.Peer.CopyGBps), "G6"),
                F(run.Peer.CopyGBps, "G6"),
            };
            sb.AppendLine(string.Join(",", cells));
        }
        return sb.ToString();
    }


    public static string Json(RunSummary run)
    {
        var document = new
        {
            device = run.Device,
            device_reason = run.DeviceReason,
            kernel = run.Kernel,
            started = run.Started.ToString("o", Inv),
            total_seconds = run.TotalSeconds,
            phase_seconds = run.PhaseSeconds,
            command_line = run.CommandLine,
            part = run.Part,
            timing = new
            {
                runs = run.Runs,
                warmup_ms = run.WarmupMs,
                l2_flush_bytes = run.FlushBytes,
                method = "ILGPU profiling markers (CUDA events on a GPU) around the kernel's launches (split kernel + combine); all runs queued, "
                    + "one synchronisation; on CUDA a scratch buffer is overwritten before every run, outside the timed region (L2 flush)",
            },
            formulas = new
            {
                flop = "2 * s_q * sum(seqlen) * H * (latent + rope + latent)  [576 + 512 for DeepSeek]",
                bytes = "(sum(seqlen) * (latent + rope) + B*s_q*H*(latent + rope) + B*s_q*H*latent) * 2",
                copy_gbps = "2 * copy_bytes / time (read + write)",
            },
            seed = run.Seed,
            compile_seconds = run.CompileSeconds,
            layer_checks = run.LayerChecks,
            peer = new
            {
                ran = run.Peer.Ran,
                status = run.Peer.Status,
                torch_version = run.Peer.TorchVersion,
                device_name = run.Peer.DeviceName,
                cuda_version = run.Peer.CudaVersion,
                copy_bytes = run.Peer.CopyBytes,
                copy_ms = run.Peer.CopyMs,
                copy_gbps = run.Peer.CopyGBps,
            },
            configs = run.Configs.Select(r => new
            {
                id = r.Config.Id,
                shape = r.Config.Shape.Key,
                heads = r.Config.Heads,
                batch = r.Config.Batch,
                seq_len = r.Config.SeqLen,
                q_len = r.Config.QueryLen,
                lengths_mode = r.Config.Mode == LengthMode.Fixed ? "fixed" : "variable",
                sum_seqlen = r.Config.SumSeqLen,
                max_seqlen = r.Config.MaxSeqLen,
                lengths = r.Config.Lengths,
                flop = r.Config.Flop,
                bytes = r.Config.Bytes,
                kernel = r.Kernel,
                status = r.Status,
                splits = r.Splits,
                ours = r.Ours,
                gbps = r.OurGBps,
                tflops = r.OurTflops,
                compile_seconds = r.CompileSeconds,
                check = r.Check,
                torch = r.Torch,
                torch_gbps = r.TorchGBps,
                torch_tflops = r.TorchTflops,
                speedup = r.Speedup,
                time_ratio_ours_over_torch = r.TimeRatio,
                pct_copy = r.PercentOfCopy(run.Peer.CopyGBps),
            }),
        };
        return JsonSerializer.Serialize(document, Peer.Json);
    }

    public static string Markdown(RunSummary run)
    {
        var sb = new StringBuilder();
        sb.AppendLine("# MLA decode attention benchmark").AppendLine();
        sb.AppendLine(Inv, $"- device: {run.Device} ({run.DeviceReason})");
        sb.AppendLine(Inv, $"- kernel(s) timed: {run.Kernel} (per configuration in results.csv/json)");
        sb.AppendLine(Inv, $"- started {run.Started:yyyy-MM-dd HH:mm:ss zzz}, {run.TotalSeconds:F0} s in all ({string.Join(", ", run.PhaseSeconds.Select(p => string.Create(Inv, $"{p.Key} {p.Value:F0} s")))}){(run.Part is null ? "" : $", part {run.Part}")}; seed {run.Seed}");
        string flush = run.FlushBytes > 0 ? $"{run.FlushBytes >> 20} MiB overwritten before each run (L2 flush, untimed)" : "no L2 flush";
        sb.AppendLine(Inv, $"- timing: median of {run.Runs} runs after ~{run.WarmupMs} ms of warm-up; ILGPU profiling markers (CUDA events on a GPU) around the kernel's launches; {flush}");
        sb.AppendLine("- GB/s and TFLOP/s use FlashMLA's formulas: FLOP = 2·s_q·Σseqlen·H·(576+512), bytes = (Σseqlen·576 + B·s_q·H·576 + B·s_q·H·512)·2");
        string copy = run.Peer.CopyGBps is double g
            ? string.Create(Inv, $"{g:F0} GB/s ({run.Peer.CopyBytes / (double)(1L << 30):F2} GiB device-to-device copy, counting read + write)")
            : "not measured";
        sb.AppendLine(Inv, $"- PyTorch peer: {run.Peer.Status}{(run.Peer.TorchVersion is null ? "" : $" (torch {run.Peer.TorchVersion}, {run.Peer.DeviceName})")}; device copy: {copy}");
        sb.AppendLine("- speedup = torch ms / our ms (above 1: ours is faster); %copy = our GB/s / device-copy GB/s").AppendLine();

        sb.AppendLine("## Layer checks (float64 non-absorbed reference)").AppendLine();
        sb.AppendLine("| shape | result | sequences | queries | e2e out | e2e LSE | stage latent | stage LSE | stage out | compile s | seconds |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|");
        foreach (var l in run.LayerChecks)
        {
            sb.AppendLine(Inv,
                $"| {l.Shape} | {(l.Passed ? "pass" : "FAIL")} | {string.Join(" ", l.FinalLengths)} | {l.CheckedQueries} | {l.EndToEndOutput:E2} | {l.EndToEndLse:E2} | {l.StageLatent:E2} | {l.StageLse:E2} | {l.StageOutput:E2} | {run.CompileSeconds.GetValueOrDefault(l.Shape):F2} | {l.GpuSeconds + l.ReferenceSeconds:F1} |");
        }
        if (run.LayerChecks.Count == 0)
            sb.AppendLine("| (none run) | | | | | | | | | | |");
        sb.AppendLine();
        sb.AppendLine("Tolerances: end to end ≤ 2e-2 (BF16 cache); stages fed the cached BF16 rows ≤ 1e-5 on the general (fp32) kernel, ≤ 1e-2 on the tensor-core kernel (bf16 Q and P). The per-configuration `check` column uses the same stage bound.").AppendLine();

        sb.AppendLine("## Decode attention").AppendLine();
        sb.AppendLine("| config | Σseqlen | splits | ms (median) | min / p90 | GB/s | TFLOP/s | torch ms | torch GB/s | speedup | %copy | check | status |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        foreach (var r in run.Configs)
        {
            var o = r.Ours;
            sb.AppendLine(Inv,
                $"| {r.Config.Id} | {r.Config.SumSeqLen} | {r.Splits} | {F(o?.MedianMs, "F4")} | {F(o?.MinMs, "F4")} / {F(o?.P90Ms, "F4")} | {G(r.OurGBps)} | {T(r.OurTflops)} | {F(r.TorchMs, "F4")} | {G(r.TorchGBps)} | {F(r.Speedup, "F2")} | {F(r.PercentOfCopy(run.Peer.CopyGBps), "F1")} | {F(r.Check?.OutputRelL2, "E1")} | {r.Status}{(r.Torch?.Error is string e ? $"; torch failed: {e.Replace('|', '/')}" : "")} |");
        }
        return sb.ToString();
    }
}

/// <summary>CSV cells as RFC 4180 writes them, shared by the decode and the prefill reports.</summary>
internal static class CsvText
{
    /// <summary>The text, quoted (with doubled quotes) when it holds a comma or a quote; null is an empty cell.</summary>
    public static string Quote(string? s) => s is null ? "" : s.Contains(',') || s.Contains('"') ? "\"" + s.Replace("\"", "\"\"") + "\"" : s;
}
