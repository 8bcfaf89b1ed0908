using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace MlaGen.DecodeBenchmark;

/// <summary>One configuration as the PyTorch peer measured it.</summary>
internal sealed record PeerResult(
    string Id, double? MsMedian, double? MsMin, double? MsP90, int Runs, int WarmupRuns, double? CheckRelErr, string? Error);

/// <summary>What the peer script reported, or why it did not run.</summary>
internal sealed record PeerReport(
    bool Ran, string Status, string? TorchVersion, string? DeviceName, string? CudaVersion,
    long CopyBytes, double? CopyMs, double? CopyGBps, string? FontPath, IReadOnlyDictionary<string, PeerResult> Results)
{
    public static PeerReport NotRun(string status) =>
        new(false, status, null, null, null, 0, null, null, null, new Dictionary<string, PeerResult>());
}

/// <summary>
/// Runs <c>peer_torch_mla.py</c> (beside the program) on the same configurations: the program writes them to
/// <c>grid.json</c>, the script writes <c>peer.json</c>; its output goes to <c>peer.log</c>.
/// </summary>
internal static class Peer
{
    public const string ScriptName = "peer_torch_mla.py";

    internal static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    public static PeerReport Run(
        string python, IReadOnlyList<BenchConfig> configs, bool cuda, int runs, double warmupMs, string outDir,
        TimeSpan timeout, Action<string> log)
    {
        string script = Path.Combine(AppContext.BaseDirectory, ScriptName);
        if (!File.Exists(script))
            return PeerReport.NotRun($"{ScriptName} not found beside the program ({AppContext.BaseDirectory})");
        if (configs.Count == 0)
            return PeerReport.NotRun("no configuration to run");

        string gridPath = Path.Combine(outDir, "grid.json");
        string resultPath = Path.Combine(outDir, "peer.json");
        string logPath = Path.Combine(outDir, "peer.log");
        File.Delete(resultPath);
        var grid = new PeerGrid(
            Device: cuda ? "cuda" : "cpu",
            Runs: runs,
            WarmupMs: warmupMs,
            FlushBytes: cuda ? StreamTimer.CudaFlushBytes : 0,
            CopyBytes: cuda ? 2L << 30 : 256L << 20,
            Seed: 1234,
            Configs: configs.Select(c => new PeerConfig(
                c.Id, c.Batch, c.Heads, c.QueryLen, c.PageSize, c.Latent, c.RowValues - c.Latent,
                Reference.NaiveMlaReference.SoftmaxScale(c.Shape.Spec), c.Lengths)).ToArray());
        File.WriteAllText(gridPath, JsonSerializer.Serialize(grid, Json));

        return PeerScript.Run(python, script, gridPath, resultPath, logPath, timeout, log, Read, PeerReport.NotRun,
            report => report.Ran, (report, status) => report with { Status = status });
    }

    private static PeerReport? Read(string path)
    {
        if (!File.Exists(path))
            return null;
        var output = JsonSerializer.Deserialize<PeerOutput>(File.ReadAllText(path), Json);
        if (output is null)
            return null;
        if (output.Error is not null)
            return PeerReport.NotRun(output.Error);
        var results = (output.Results ?? Array.Empty<PeerResult>()).ToDictionary(r => r.Id, StringComparer.Ordinal);
        return new PeerReport(true, "ok", output.TorchVersion, output.DeviceName, output.CudaVersion,
            output.Copy?.Bytes ?? 0, output.Copy?.MsMedian, output.Copy?.Gbps, output.FontPath, results);
    }

    private sealed record PeerGrid(string Device, int Runs, double WarmupMs, long FlushBytes, long CopyBytes, int Seed, PeerConfig[] Configs);

    private sealed record PeerConfig(
        string Id, int Batch, int Heads, int QLen, int PageSize, int Latent, int Rope, double SoftmaxScale, int[] Lengths);

    private sealed record PeerCopy(long Bytes, double? MsMedian, double? Gbps);

    private sealed record PeerOutput(
        string? Error, string? TorchVersion, string? DeviceName, string? CudaVersion, string? FontPath, PeerCopy? Copy,
        PeerResult[]? Results);
}
