using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Text;
using System.Text.Json;
using static MlaGen.DecodeBenchmark.CsvText;

namespace MlaGen.DecodeBenchmark;

/// <summary>The prefill run as a whole, for the report files.</summary>
internal sealed record PrefillSummary(
    string Device, string DeviceReason, DateTimeOffset Started, double TotalSeconds, string CommandLine,
    int Runs, int MinRuns, double MeasureBudgetMs, double WarmupMs, long FlushBytes, int Seed,
    IReadOnlyDictionary<string, string> ExpandedKinds, IReadOnlyList<PrefillLayerCheckResult> LayerChecks,
    IReadOnlyDictionary<string, double> CompileSeconds, PrefillPeerReport Peer, IReadOnlyList<PrefillResult> Results,
    IReadOnlyDictionary<string, double> PhaseSeconds);

internal static class PrefillReports
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public const string Formulas =
        "attention FLOP (expanded) = 2·Σ_queries visible(q)·H·((nope+rope) + v), visible(q) = position + 1 (causal: about half the square); "
        + "expansion FLOP = 2·Keys·latent·H·(nope + v), Keys = B·(P + C); absorbed FLOP = 2·Σ_queries visible(q)·H·((latent+rope) + latent)";

    public static void WriteAll(PrefillSummary run, string outDir)
    {
        File.WriteAllText(Path.Combine(outDir, "prefill.csv"), Csv(run));
        File.WriteAllText(Path.Combine(outDir, "prefill.json"), Json(run));
        File.WriteAllText(Path.Combine(outDir, "prefill.md"), Markdown(run));
    }

    private static string F(double? value, string format) => value is double v && double.IsFinite(v) ? v.ToString(format, Inv) : "";


    public static string Csv(PrefillSummary run)
    {
        var sb = new StringBuilder();
        sb.AppendLine("case,kind,shape,heads,batch,prefix,chunk,tokens,keys,attention_flop,expansion_flop,absorbed_flop,expanded_kind,tiles,status,"
            + "check_out_rel_l2,check_lse_rel_l2,attn_runs,attn_ms,attn_ms_min,attn_ms_p90,attn_tflops,exp_attn_runs,exp_attn_ms,exp_attn_ms_min,exp_attn_ms_p90,exp_attn_tflops,"
            + "expansion_ms,query_ms,expanded_full_ms,absorbed_status,absorbed_kernel,absorbed_check_out_rel_l2,absorbed_runs,absorbed_ms,absorbed_ms_min,absorbed_ms_p90,absorbed_tflops,"
            + "absorbed_extras_ms,absorbed_full_ms,faster_form,absorbed_over_expanded,auto_form,auto_agrees,plain_status,plain_tokens,plain_exp_attn_ms,chunk_speedup,"
            + "sdpa_backend,sdpa_mask,sdpa_runs,sdpa_ms,sdpa_ms_min,sdpa_ms_p90,sdpa_tflops,sdpa_check_rel_err,sdpa_backends,eager_runs,eager_ms,eager_ms_min,eager_ms_p90,eager_head_group,eager_skipped,"
            + "ours_over_sdpa,ours_with_expansion_over_sdpa,eager_over_ours,eager_over_ours_with_expansion,torch_error");
        foreach (var r in run.Results)
        {
            var c = r.Case;
            var t = r.Torch;
            var cells = new[]
            {
                c.Id, c.Chunked ? "chunked" : "prefill", c.Shape.Key, c.Heads.ToString(Inv), c.Batch.ToString(Inv), c.Prefix.ToString(Inv),
                c.Chunk.ToString(Inv), c.Tokens.ToString(Inv), c.Keys.ToString(Inv), F(c.AttentionFlop, "G6"), F(c.ExpansionFlop, "G6"), F(c.AbsorbedFlop, "G6"),
                r.ExpandedKind, r.Tiles.ToString(Inv), Quote(r.Status), F(r.ExpandedCheck?.OutputRelL2, "E3"), F(r.ExpandedCheck?.LseRelL2, "E3"),
                (r.Attention?.Runs ?? 0).ToString(Inv), F(r.AttentionMs, "G6"), F(r.Attention?.MinMs, "G6"), F(r.Attention?.P90Ms, "G6"), F(r.AttentionTflops, "G6"),
                (r.ExpandAttention?.Runs ?? 0).ToString(Inv), F(r.ExpandAttentionMs, "G6"), F(r.ExpandAttention?.MinMs, "G6"), F(r.ExpandAttention?.P90Ms, "G6"), F(r.ExpandAttentionTflops, "G6"),
                F(r.ExpansionMs, "G6"), F(r.Query?.MedianMs, "G6"), F(r.ExpandedFullMs, "G6"),
                Quote(r.AbsorbedStatus), r.Absorbed is null ? "" : r.AbsorbedTensorCores ? "tensor-core" : "general", F(r.AbsorbedCheck?.OutputRelL2, "E3"),
                (r.Absorbed?.Runs ?? 0).ToString(Inv), F(r.AbsorbedMs, "G6"), F(r.Absorbed?.MinMs, "G6"), F(r.Absorbed?.P90Ms, "G6"), F(r.AbsorbedTflops, "G6"),
                F(r.AbsorbedExtras?.MedianMs, "G6"), F(r.AbsorbedFullMs, "G6"), r.FasterForm ?? "", F(r.AbsorbedOverExpanded, "G6"),
                r.AutoForm, r.AutoAgrees is bool agrees ? (agrees ? "yes" : "no") : "",
                Quote(r.PlainStatus), c.PlainEquivalent is { } p ? p.Tokens.ToString(Inv) : "", F(r.PlainMs, "G6"), F(r.ChunkSpeedup, "G6"),
                t?.SdpaBackend ?? "", Quote(t?.Mask), (t?.SdpaRuns ?? 0).ToString(Inv), F(r.SdpaMs, "G6"), F(t?.SdpaMsMin, "G6"), F(t?.SdpaMsP90, "G6"), F(r.SdpaTflops, "G6"),
                F(t?.SdpaCheckRelErr, "E3"), Quote(BackendText(t)), (t?.EagerRuns ?? 0).ToString(Inv), F(r.EagerMs, "G6"), F(t?.EagerMsMin, "G6"), F(t?.EagerMsP90, "G6"),
                t?.EagerHeadGroup?.ToString(Inv) ?? "", Quote(t?.EagerSkipped),
                F(r.OursOverSdpa, "G6"), F(r.OursWithExpansionOverSdpa, "G6"), F(r.EagerOverOurs, "G6"), F(r.EagerOverOursWithExpansion, "G6"), Quote(t?.Error),
            };
            sb.AppendLine(string.Join(",", cells));
        }
        return sb.ToString();
    }

    private static string BackendText(PrefillPeerResult? t) =>
        t?.SdpaBackends is null ? "" : string.Join("; ", t.SdpaBackends.Select(kv => $"{kv.Key}: {kv.Value}"));

    public static string Json(PrefillSummary run)
    {
        var document = new
        {
            device = run.Device,
            device_reason = run.DeviceReason,
            expanded_kinds = run.ExpandedKinds,
            started = run.Started.ToString("o", Inv),
            total_seconds = run.TotalSeconds,
            phase_seconds = run.PhaseSeconds,
            command_line = run.CommandLine,
            timing = new
            {
                runs = run.Runs,
                min_runs = run.MinRuns,
                measure_budget_ms = run.MeasureBudgetMs,
                warmup_ms = run.WarmupMs,
                l2_flush_bytes = run.FlushBytes,
                method = "ILGPU profiling markers (CUDA events on a GPU) around the launches; all runs queued, one synchronisation; on CUDA a "
                    + "scratch buffer is overwritten before every run, outside the timed region (L2 flush); runs reduced to fit the measure budget, never below min_runs",
            },
            formulas = Formulas,
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
            },
            cases = run.Results.Select(r => new
            {
                id = r.Case.Id,
                kind = r.Case.Chunked ? "chunked" : "prefill",
                shape = r.Case.Shape.Key,
                heads = r.Case.Heads,
                batch = r.Case.Batch,
                prefix = r.Case.Prefix,
                chunk = r.Case.Chunk,
                tokens = r.Case.Tokens,
                keys = r.Case.Keys,
                attention_flop = r.Case.AttentionFlop,
                expansion_flop = r.Case.ExpansionFlop,
                absorbed_flop = r.Case.AbsorbedFlop,
                status = r.Status,
                expanded_kind = r.ExpandedKind,
                tiles = r.Tiles,
                expanded_check = r.ExpandedCheck,
                attention = r.Attention,
                attention_tflops = r.AttentionTflops,
                expand_attention = r.ExpandAttention,
                expand_attention_tflops = r.ExpandAttentionTflops,
                expansion_ms = r.ExpansionMs,
                query = r.Query,
                expanded_full_ms = r.ExpandedFullMs,
                absorbed_status = r.AbsorbedStatus,
                absorbed_kernel = r.Absorbed is null ? null : r.AbsorbedTensorCores ? "tensor-core" : "general",
                absorbed_check = r.AbsorbedCheck,
                absorbed = r.Absorbed,
                absorbed_tflops = r.AbsorbedTflops,
                absorbed_extras = r.AbsorbedExtras,
                absorbed_full_ms = r.AbsorbedFullMs,
                faster_form = r.FasterForm,
                absorbed_over_expanded = r.AbsorbedOverExpanded,
                auto_form = r.AutoForm,
                auto_agrees = r.AutoAgrees,
                plain_status = r.PlainStatus,
                plain_check = r.PlainCheck,
                plain_expand_attention = r.PlainExpandAttention,
                chunk_speedup = r.ChunkSpeedup,
                torch = r.Torch,
                sdpa_tflops = r.SdpaTflops,
                ours_over_sdpa = r.OursOverSdpa,
                ours_with_expansion_over_sdpa = r.OursWithExpansionOverSdpa,
                eager_over_ours = r.EagerOverOurs,
                eager_over_ours_with_expansion = r.EagerOverOursWithExpansion,
            }),
        };
        return JsonSerializer.Serialize(document, Peer.Json);
    }

    public static string Markdown(PrefillSummary run)
    {
        var sb = new StringBuilder();
        sb.AppendLine("# MLA prefill benchmark (expanded form on tensor cores)").AppendLine();
        sb.AppendLine(Inv, $"- device: {run.Device} ({run.DeviceReason}); expanded kernels: {string.Join(", ", run.ExpandedKinds.Select(k => $"{k.Key} {k.Value}"))}");
        sb.AppendLine(Inv, $"- started {run.Started:yyyy-MM-dd HH:mm:ss zzz}, {run.TotalSeconds:F0} s in all ({string.Join(", ", run.PhaseSeconds.Select(p => string.Create(Inv, $"{p.Key} {p.Value:F0} s")))}); seed {run.Seed}; command line: `{run.CommandLine}`");
        string flush = run.FlushBytes > 0 ? $"{run.FlushBytes >> 20} MiB overwritten before each run (L2 flush, untimed)" : "no L2 flush";
        sb.AppendLine(Inv, $"- timing: median of {run.Runs} runs after ~{run.WarmupMs} ms of warm-up (fewer where one run is long: ~{run.MeasureBudgetMs / 1000:F1} s per measurement, never below {run.MinRuns}; the run counts are in prefill.csv); ILGPU profiling markers (CUDA events); {flush}");
        sb.AppendLine(Inv, $"- {Formulas}");
        sb.AppendLine(Inv, $"- PyTorch peer: {run.Peer.Status}{(run.Peer.TorchVersion is null ? "" : $" (torch {run.Peer.TorchVersion}, CUDA {run.Peer.CudaVersion}, {run.Peer.DeviceName})")}: SDPA on q [B,H,C,192], k [B,H,P+C,192], v [B,H,P+C,128] bf16, causal (bottom-right for P > 0), fastest backend that works; eager = bf16 matmul, fp32 masked softmax, bf16 matmul");
        sb.AppendLine("- attn = our expanded attention kernel alone (LaunchAttention; like SDPA it takes K and V already expanded); exp+attn = kv_b expansion of every key + attention; "
            + "absorbed = the absorbed form's attention + combine (PlanAttention's Launch); full forms add the query kernels: expanded = HeadQuery + exp+attn, absorbed = QueryAbsorb + attention + combine + W_UV (sums of medians)").AppendLine();

        sb.AppendLine("## Layer checks (expanded form end to end, float64 NaiveMlaReference.Forward)").AppendLine();
        sb.AppendLine("| shape | result | new tokens per call (sequences 0..3) | tokens | output | LSE | GPU s | reference s | detail |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|---|");
        foreach (var l in run.LayerChecks)
            sb.AppendLine(Inv, $"| {l.Shape} | {(l.Passed ? "pass" : "FAIL")} | {l.Calls} | {l.CheckedTokens} | {l.Output:E2} | {l.Lse:E2} | {l.GpuSeconds:F1} | {l.ReferenceSeconds:F1} | {l.Detail.Replace('|', '/')} |");
        if (run.LayerChecks.Count == 0)
            sb.AppendLine("| (none run) | | | | | | | | |");
        sb.AppendLine().AppendLine("Tolerance: relative L2 ≤ 2e-2 per call and sequence (output after o_proj, and LSE). Per case, the timed launch is checked on sampled (token, head) rows against float64 over the same BF16 cache rows and kv_b weights (≤ 1e-2: bf16 operands), with its outputs poisoned before and scanned for unwritten values.").AppendLine();

        AppendTargets(sb, run);
        var plain = run.Results.Where(r => !r.Case.Chunked).ToList();
        var chunked = run.Results.Where(r => r.Case.Chunked).ToList();
        if (plain.Count > 0)
        {
            sb.AppendLine("## Prefill (P = 0, causal over S = C tokens)").AppendLine();
            sb.AppendLine("| case | attn ms | attn TFLOP/s | exp+attn ms | exp+attn TFLOP/s | absorbed ms | expanded full / absorbed full ms | SDPA ms (backend) | SDPA TFLOP/s | eager ms | ours/SDPA | eager/ours | check | status |");
            sb.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
            foreach (var r in plain)
                sb.AppendLine(Inv, $"| {r.Case.Id} | {F(r.AttentionMs, "F3")} | {T(r.AttentionTflops)} | {F(r.ExpandAttentionMs, "F3")} | {T(r.ExpandAttentionTflops)} | {AbsorbedCell(r)} | {FullCell(r)} | {SdpaCell(r)} | {T(r.SdpaTflops)} | {EagerCell(r)} | {F(r.OursOverSdpa, "F2")} | {F(r.EagerOverOurs, "F2")} | {F(r.ExpandedCheck?.OutputRelL2, "E1")} | {StatusCell(r)} |");
            sb.AppendLine();
        }
        if (chunked.Count > 0)
        {
            sb.AppendLine("## Chunked prefill (C new tokens after a cached prefix of P, B = 1)").AppendLine();
            sb.AppendLine("| case | attn ms | attn TFLOP/s | exp+attn ms | plain P+C exp+attn ms | chunk speedup | absorbed ms | expanded full / absorbed full ms | SDPA ms (backend) | SDPA TFLOP/s | eager ms | ours/SDPA | eager/ours | check | status |");
            sb.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
            foreach (var r in chunked)
                sb.AppendLine(Inv, $"| {r.Case.Id} | {F(r.AttentionMs, "F3")} | {T(r.AttentionTflops)} | {F(r.ExpandAttentionMs, "F3")} | {F(r.PlainMs, "F3")} | {F(r.ChunkSpeedup, "F2")} | {AbsorbedCell(r)} | {FullCell(r)} | {SdpaCell(r)} | {T(r.SdpaTflops)} | {EagerCell(r)} | {F(r.OursOverSdpa, "F2")} | {F(r.EagerOverOurs, "F2")} | {F(r.ExpandedCheck?.OutputRelL2, "E1")} | {StatusCell(r)} |");
            sb.AppendLine();
            sb.AppendLine("chunk speedup = plain prefill of all P + C tokens (ours, expansion + attention) over the chunk's expansion + attention: above 1, chunking wins.").AppendLine();
        }

        sb.AppendLine("## Absorbed or expanded: where the crossover lies").AppendLine();
        var both = run.Results.Where(r => r.FasterForm is not null).ToList();
        if (both.Count == 0)
            sb.AppendLine("No case has both forms timed.");
        else
        {
            sb.AppendLine("| case | queries per sequence C | prefix P | expanded full ms | absorbed full ms | absorbed/expanded | faster | Auto rule picks |");
            sb.AppendLine("|---|---|---|---|---|---|---|---|");
            foreach (var r in both.OrderBy(r => r.Case.Heads).ThenBy(r => r.Case.Prefix).ThenBy(r => r.Case.Chunk).ThenBy(r => r.Case.Batch))
                sb.AppendLine(Inv, $"| {r.Case.Id} | {r.Case.Chunk} | {r.Case.Prefix} | {F(r.ExpandedFullMs, "F3")} | {F(r.AbsorbedFullMs, "F3")} | {F(r.AbsorbedOverExpanded, "F2")} | {r.FasterForm} | {r.AutoForm}{(r.AutoAgrees == false ? " (disagrees)" : "")} |");
            sb.AppendLine();
            foreach (var group in both.GroupBy(r => (r.Case.Heads, r.Case.Prefix, r.Case.Batch)).OrderBy(g => g.Key.Heads).ThenBy(g => g.Key.Prefix))
            {
                var ordered = group.OrderBy(r => r.Case.Chunk).ToList();
                var firstExpanded = ordered.FirstOrDefault(r => r.FasterForm == "expanded");
                string text = firstExpanded is null
                    ? $"absorbed is faster up to C = {ordered[^1].Case.Chunk}"
                    : firstExpanded == ordered[0] ? $"expanded is faster from the smallest C timed ({ordered[0].Case.Chunk})"
                    : $"expanded is faster from C = {firstExpanded.Case.Chunk} (absorbed at C = {ordered.Last(r => r.Case.Chunk < firstExpanded.Case.Chunk).Case.Chunk})";
                sb.AppendLine(Inv, $"- H{group.Key.Heads}, B{group.Key.Batch}, P = {group.Key.Prefix}: {text}");
            }
            sb.AppendLine();
        }
        sb.AppendLine("Auto rule = AttentionFormRule.Choose for the call (what MlaLayer.Forward runs with Form = Auto); the serial (CPU) kernels never compete, so there it is always absorbed.");
        return sb.ToString();
    }

    /// <summary>The issue's targets, where the run has the cases: met, missed, or not measured.</summary>
    private static void AppendTargets(StringBuilder sb, PrefillSummary run)
    {
        static string Verdict(bool? met) => met switch { true => "met", false => "MISSED", null => "not measured" };
        var lines = new List<string>();
        foreach (var r in run.Results.Where(r => !r.Case.Chunked && r.Case.Heads == 128 && r.Case.Batch == 1 && r.Case.Chunk == 4096))
        {
            lines.Add(string.Create(Inv, $"| {r.Case.Id}: attention ≥ 300 TFLOP/s (causal FLOP) | {T(r.AttentionTflops)} TFLOP/s | {Verdict(r.AttentionTflops is double tflops ? tflops >= 300 : null)} |"));
            lines.Add(string.Create(Inv, $"| {r.Case.Id}: within 1.5× of SDPA's time | ours/SDPA {F(r.OursOverSdpa, "F2")} (with expansion {F(r.OursWithExpansionOverSdpa, "F2")}) | {Verdict(r.OursOverSdpa is double ratio ? ratio <= 1.5 : null)} |"));
        }
        foreach (var r in run.Results.Where(r => r.Case.Chunked && r.Case.Chunk == 512 && r.Case.Prefix == 16384))
        {
            lines.Add(string.Create(Inv, $"| {r.Case.Id}: faster than a plain prefill of P + C | {F(r.ExpandAttentionMs, "F3")} ms vs {F(r.PlainMs, "F3")} ms ({F(r.ChunkSpeedup, "F2")}×) | {Verdict(r.ChunkSpeedup is double speedup ? speedup > 1 : null)} |"));
            lines.Add(string.Create(Inv, $"| {r.Case.Id}: ≥ 2× PyTorch eager | eager/ours {F(r.EagerOverOurs, "F2")} (with expansion {F(r.EagerOverOursWithExpansion, "F2")}) | {Verdict(r.EagerOverOurs is double eager ? eager >= 2 : null)} |"));
        }
        if (lines.Count == 0)
            return;
        sb.AppendLine("## The issue's targets").AppendLine();
        sb.AppendLine("| target | measured | verdict |");
        sb.AppendLine("|---|---|---|");
        foreach (var line in lines)
            sb.AppendLine(line);
        sb.AppendLine().AppendLine("Attention-only figures compare like with like (SDPA and eager get K and V already expanded); the figures with expansion include building K and V from the latent cache.").AppendLine();
    }

    private static string T(double? value) => Reports.T(value) is { Length: > 0 } s ? s : "";

    private static string AbsorbedCell(PrefillResult r) =>
        r.AbsorbedMs is double a ? string.Create(Inv, $"{a:F3} ({T(r.AbsorbedTflops)} TF/s)") : r.AbsorbedStatus.Replace('|', '/');

    private static string FullCell(PrefillResult r) =>
        r.ExpandedFullMs is null && r.AbsorbedFullMs is null ? "" : $"{F(r.ExpandedFullMs, "F3")} / {F(r.AbsorbedFullMs, "F3")}";

    private static string SdpaCell(PrefillResult r) =>
        r.SdpaMs is double s ? string.Create(Inv, $"{s:F3} ({r.Torch?.SdpaBackend})") : r.Torch?.Error is string e ? "failed: " + e.Replace('|', '/') : "";

    private static string EagerCell(PrefillResult r) =>
        r.EagerMs is double e ? e.ToString("F3", Inv) : r.Torch?.EagerSkipped?.Replace('|', '/') ?? "";

    private static string StatusCell(PrefillResult r)
    {
        var parts = new List<string> { r.Status };
        if (r.ExpandedKind.Length > 0)
            parts.Add(r.ExpandedKind);
        if (r.AbsorbedStatus.StartsWith("refused", StringComparison.Ordinal))
            parts.Add("absorbed " + r.AbsorbedStatus);
        if (r.PlainStatus.StartsWith("refused", StringComparison.Ordinal))
            parts.Add("plain P+C " + r.PlainStatus);
        return string.Join("; ", parts).Replace('|', '/');
    }
}
