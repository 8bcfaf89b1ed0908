using System;
using System.CommandLine;
using System.Globalization;
using System.IO;
using System.Linq;
using MlaGen.Kernels;

namespace MlaGen.DecodeBenchmark;

/// <summary>Everything the command line chose.</summary>
internal sealed record BenchOptions(
    string? Device, int[] Heads, int[] SeqLens, int[] Batches, int[] QueryLens, LengthMode[] Modes, bool Quick, int? Runs,
    double WarmupMs, int Splits, string Out, string? Part, string Python, bool NoPeer, bool NoLayerCheck, int? Seed,
    double PeerTimeoutSeconds, MlaKernelPath KernelPath, bool TensorCores);

internal static class Program
{
    public static int Main(string[] args)
    {
        CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
        CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
        if (Console.IsOutputRedirected)
            Spectre.Console.AnsiConsole.Profile.Width = 160; // a log file, not an 80-column terminal

        var device = new Option<string?>("--device") { Description = "\"cpu\", \"cuda\" or \"cuda:N\"; default: MLAGEN_DEVICE, else the best CUDA GPU, else the CPU accelerator." };
        var heads = IntList("--heads", "Head counts: 16 32 64 128 (4 is the tiny CPU shape). Default: all four on CUDA, 4 on the CPU.");
        var seq = IntList("--seq", "Sequence lengths S. Giving --seq or --batch replaces the default grid by the cross product of the given values.");
        var batch = IntList("--batch", "Batch sizes B (see --seq).");
        var sq = IntList("--sq", "New tokens per sequence s_q (1 = plain decode, 2 = e.g. speculative decoding). Default: 1 2.");
        var lengths = new Option<string>("--lengths")
        {
            Description = "fixed, variable (normal, mean S, sd S/2, fixed seed) or both.",
            DefaultValueFactory = _ => "both",
        };
        lengths.AcceptOnlyFromAmong("fixed", "variable", "both");
        var quick = new Option<bool>("--quick") { Description = "A small grid: on CUDA B=128 S=4096 H=16,128 s_q=1; on the CPU the tiny shape in seconds." };
        var runs = new Option<int?>("--runs") { Description = "Timed runs per configuration (median, min, p90 reported). Default 50 (10 on the CPU accelerator)." };
        var warmup = new Option<double>("--warmup-ms") { Description = "Warm-up time per configuration before the timed runs.", DefaultValueFactory = _ => 25.0 };
        var splits = new Option<int>("--splits") { Description = "Force the split-KV count (0: MlaLayer's automatic choice).", DefaultValueFactory = _ => 0 };
        var output = new Option<string>("--out") { Description = "Output folder for results.csv/.json/.md, the PNG plots and the peer's files.", DefaultValueFactory = _ => "bench-out" };
        var part = new Option<string?>("--part") { Description = "Run part i of n of the grid (\"1/2\"), split by estimated cost; layer checks only for the shapes in the part." };
        var python = new Option<string>("--python") { Description = "Python interpreter for the PyTorch peer.", DefaultValueFactory = _ => "python3" };
        var noPeer = new Option<bool>("--no-peer") { Description = "Do not run the PyTorch peer." };
        var noLayerCheck = new Option<bool>("--no-layer-check") { Description = "Skip the end-to-end layer check (the per-configuration attention check still runs). For development only." };
        var seed = new Option<int?>("--seed") { Description = "Seed of weights, hidden states, queries and page order (default: fresh each run, printed)." };
        var peerTimeout = new Option<double>("--peer-timeout") { Description = "Seconds the PyTorch peer may take.", DefaultValueFactory = _ => 300.0 };
        var soak = new Option<int>("--soak") { Description = "Instead of the grid: this many decode steps with sequences joining and leaving (reliability soak; 10000 on a GPU)." };
        var decodeVariants = new Option<bool>("--decode-variants")
        {
            Description = "Instead of the grid (CUDA only): the tensor-core attention kernel as compiled and with .maxnreg 168 / 128 "
                + "inserted into its PTX, each checked then timed at H16 and H128, B=128, S=4096 and B=1, S=32768, s_q=1; writes variants.csv/.md. "
                + "Uses --device, --runs, --warmup-ms, --seed, --out.",
        };
        var noTensorCores = new Option<bool>("--no-tensor-cores") { Description = "Time (and check) the general kernel even where the tensor-core kernel applies." };
        var prefill = new Option<bool>("--prefill")
        {
            Description = "Instead of decode: the prefill benchmark (expanded form on tensor cores; plain prefill S ∈ {1024, 4096, 16384} × B ∈ {1, 8}, "
                + "chunked C ∈ {64, 512, 2048} after P ∈ {4096, 16384, 32768}; H ∈ {16, 128}) against PyTorch SDPA and eager; writes prefill.csv/.json/.md and plots. "
                + "Uses --device, --heads, --quick, --runs, --warmup-ms, --out, --python, --no-peer, --peer-timeout, --seed, --no-layer-check, --kernel-path.",
        };
        var prefillQuick = new Option<bool>("--prefill-quick") { Description = "--prefill on two cases only: S=4096 B=1 H=128 and C=512 P=16384 H=128 (the issue's targets)." };
        var kernelPath = new Option<MlaKernelPath>("--kernel-path")
        {
            Description = "Auto (warp kernels on CUDA, serial on the CPU), Warp or Serial: Warp on the CPU accelerator runs the GPU's kernels there (slowly).",
            DefaultValueFactory = _ => MlaKernelPath.Auto,
        };

        var root = new RootCommand(
            "Checks and times MlaGen's MLA decode attention (split-KV kernel + combine) on a FlashMLA-style paged cache, "
            + "against a PyTorch eager peer, and writes results.csv/.json/.md and plots.");
        foreach (var option in new Option[] { device, heads, seq, batch, sq, lengths, quick, runs, warmup, splits, output, part, python, noPeer, noLayerCheck, seed, peerTimeout, kernelPath, noTensorCores, soak, decodeVariants, prefill, prefillQuick })
            root.Options.Add(option);

        root.SetAction(result =>
        {
            var modes = result.GetValue(lengths) switch
            {
                "fixed" => new[] { LengthMode.Fixed },
                "variable" => new[] { LengthMode.Variable },
                _ => Array.Empty<LengthMode>(),
            };
            if (result.GetValue(prefill) || result.GetValue(prefillQuick))
            {
                return PrefillRunner.Run(new PrefillOptions(
                    result.GetValue(device), result.GetValue(heads) ?? [], result.GetValue(quick) || result.GetValue(prefillQuick), result.GetValue(runs),
                    result.GetValue(warmup), Path.GetFullPath(result.GetValue(output)!), result.GetValue(python)!, result.GetValue(noPeer),
                    result.GetValue(noLayerCheck), result.GetValue(seed), result.GetValue(peerTimeout), result.GetValue(kernelPath)), string.Join(' ', args));
            }
            if (result.GetValue(soak) > 0)
            {
                using var soakDevice = MlaGen.Devices.MlaDevice.Create(result.GetValue(device));
                var shape = BenchShape.ForHeads(soakDevice.IsCuda ? 16 : 4);
                return Soak.Run(soakDevice, shape, result.GetValue(soak), result.GetValue(seed) ?? Random.Shared.Next(),
                    Path.GetFullPath(result.GetValue(output)!));
            }
            if (result.GetValue(decodeVariants))
            {
                return DecodeVariants.Run(result.GetValue(device), result.GetValue(runs), result.GetValue(warmup), result.GetValue(seed),
                    Path.GetFullPath(result.GetValue(output)!));
            }
            var options = new BenchOptions(
                result.GetValue(device), result.GetValue(heads) ?? [], result.GetValue(seq) ?? [], result.GetValue(batch) ?? [],
                result.GetValue(sq) ?? [], modes, result.GetValue(quick), result.GetValue(runs), result.GetValue(warmup),
                result.GetValue(splits), Path.GetFullPath(result.GetValue(output)!), result.GetValue(part), result.GetValue(python)!,
                result.GetValue(noPeer), result.GetValue(noLayerCheck), result.GetValue(seed), result.GetValue(peerTimeout), result.GetValue(kernelPath),
                !result.GetValue(noTensorCores));
            return BenchmarkRunner.Run(options, string.Join(' ', args));
        });
        return root.Parse(args).Invoke();
    }

    private static Option<int[]> IntList(string name, string description) => new(name)
    {
        Description = description,
        AllowMultipleArgumentsPerToken = true,
        Arity = ArgumentArity.OneOrMore,
    };
}
