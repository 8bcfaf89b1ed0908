using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text.Json;

namespace MlaGen.DecodeBenchmark;

/// <summary>One prefill case as the PyTorch peer measured it (SDPA with its fastest backend, and eager).</summary>
internal sealed record PrefillPeerResult(
    string Id, string? SdpaBackend, double? SdpaMsMedian, double? SdpaMsMin, double? SdpaMsP90, int SdpaRuns, double? SdpaCheckRelErr,
    Dictionary<string, string>? SdpaBackends, double? EagerMsMedian, double? EagerMsMin, double? EagerMsP90, int EagerRuns, int? EagerHeadGroup,
    string? EagerSkipped, string? Error, string? Mask);

/// <summary>What the peer script reported, or why it did not run.</summary>
internal sealed record PrefillPeerReport(
    bool Ran, string Status, string? TorchVersion, string? DeviceName, string? CudaVersion, string? FontPath,
    IReadOnlyDictionary<string, PrefillPeerResult> Results)
{
    public static PrefillPeerReport NotRun(string status) =>
        new(false, status, null, null, null, null, new Dictionary<string, PrefillPeerResult>());
}

/// <summary>
/// Runs <c>peer_torch_prefill.py</c> (beside the program) on the same cases: the program writes
/// <c>prefill_grid.json</c>, the script writes <c>peer_prefill.json</c> (rewritten after every case) and prints one
/// JSON line per case; its output goes to <c>peer_prefill.log</c>.
/// </summary>
internal static class PrefillPeer
{
    public const string ScriptName = "peer_torch_prefill.py";

    /// <summary>Eager attention materialises B·H·C·(P+C) fp32 scores several times over: beyond this many it would dominate the run's time.</summary>
    public const double EagerScoreLimit = 17_179_869_184; // 2^34

    public static PrefillPeerReport Run(string python, IReadOnlyList<PrefillCase> cases, bool cuda, int runs, double warmupMs, string outDir,
        TimeSpan timeout, Action<string> log)
    {
        string script = Path.Combine(AppContext.BaseDirectory, ScriptName);
        if (!File.Exists(script))
            return PrefillPeerReport.NotRun($"{ScriptName} not found beside the program ({AppContext.BaseDirectory})");
        if (cases.Count == 0)
            return PrefillPeerReport.NotRun("no case to run");

        string gridPath = Path.Combine(outDir, "prefill_grid.json");
        string resultPath = Path.Combine(outDir, "peer_prefill.json");
        string logPath = Path.Combine(outDir, "peer_prefill.log");
        File.Delete(resultPath);
        var grid = new Grid(
            Device: cuda ? "cuda" : "cpu",
            Runs: runs,
            MinRuns: Math.Min(runs, 20),
            MeasureBudgetMs: 1500,
            WarmupMs: warmupMs,
            FlushBytes: cuda ? StreamTimer.CudaFlushBytes : 0,
            Seed: 1234,
            Cases: cases.Select(c => new Case(
                c.Id, c.Batch, c.Heads, c.Chunk, c.Prefix, c.QkDim, c.VDim, Reference.NaiveMlaReference.SoftmaxScale(c.Shape.Spec),
                c.AttentionFlop, c.Chunked || c.ScoreElements <= EagerScoreLimit)).ToArray());
        File.WriteAllText(gridPath, JsonSerializer.Serialize(grid, Peer.Json));

        // The JSON lines are for the log file and for parsing; the console gets the human-readable ones.
        return PeerScript.Run(python, script, gridPath, resultPath, logPath, timeout, line => { if (!line.StartsWith('{')) log(line); },
            Read, PrefillPeerReport.NotRun, report => report.Ran, (report, status) => report with { Status = status });
    }

    private static PrefillPeerReport? Read(string path)
    {
        if (!File.Exists(path))
            return null;
        var output = JsonSerializer.Deserialize<Output>(File.ReadAllText(path), Peer.Json);
        if (output is null)
            return null;
        if (output.Error is not null)
            return PrefillPeerReport.NotRun(output.Error);
        var results = (output.Results ?? Array.Empty<PrefillPeerResult>()).ToDictionary(r => r.Id, StringComparer.Ordinal);
        return new PrefillPeerReport(true, "ok", output.TorchVersion, output.DeviceName, output.CudaVersion, output.FontPath, results);
    }

    private sealed record Grid(string Device, int Runs, int MinRuns, double MeasureBudgetMs, double WarmupMs, long FlushBytes, int Seed, Case[] Cases);

    private sealed record Case(string Id, int Batch, int Heads, int QLen, int Prefix, int QkDim, int VDim, double SoftmaxScale, double AttentionFlop, bool Eager);

    private sealed record Output(string? Error, string? TorchVersion, string? DeviceName, string? CudaVersion, string? FontPath, PrefillPeerResult[]? Results);
}
