using System;
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Linq;
using MlaGen;
using MlaGen.Devices;
using MlaGen.Reference;
using MlaGen.ServingSample;
using MlaGen.Weights;
using Spectre.Console;

// Serves a stream of requests through one DeepSeek-V3 attention layer (all 128 heads) and one paged latent cache.
var cpu = ServingSettings.CpuDefaults;
var gpu = ServingSettings.GpuDefaults;
string Defaults(Func<ServingSettings, object> pick) => string.Create(CultureInfo.InvariantCulture, $"default: {pick(gpu)} on a GPU, {pick(cpu)} on the CPU");

var device = new Option<string?>("--device") { Description = "cpu, cuda or cuda:N (default: the MLAGEN_DEVICE variable, else the best GPU, else the CPU)" };
var requests = new Option<int?>("--requests") { Description = "Requests to serve; request 0 has the longest prompt (" + Defaults(s => s.Requests) + ")" };
var maxBatch = new Option<int?>("--max-batch") { Description = "Sequences in the cache at once (" + Defaults(s => s.MaxBatch) + ")" };
var promptMin = new Option<int?>("--prompt-min") { Description = "Shortest prompt, tokens (" + Defaults(s => s.PromptMin) + ")" };
var promptMax = new Option<int?>("--prompt-max") { Description = "Longest prompt, tokens: request 0's long context (" + Defaults(s => s.PromptMax) + ")" };
var decodeMin = new Option<int?>("--decode-min") { Description = "Fewest tokens generated per request (" + Defaults(s => s.DecodeMin) + ")" };
var decodeMax = new Option<int?>("--decode-max") { Description = "Most tokens generated per request (" + Defaults(s => s.DecodeMax) + ")" };
var stepTokens = new Option<int?>("--step-tokens") { Description = "Token budget of one Forward: decodes first, prefill chunks fill the rest (" + Defaults(s => s.StepTokens) + ")" };
var arrival = new Option<int?>("--arrival-interval") { Description = "Steps between two arrivals (" + Defaults(s => s.ArrivalInterval) + ")" };
var pages = new Option<int?>("--pages") { Description = "Pages of 64 tokens in the cache (default: 3/4 of what --max-batch requests of the longest length need)" };
var verify = new Option<bool?>("--verify") { Description = "Recompute the shortest request with the float64 reference, ~0.3 s per token on a CPU (" + Defaults(s => s.Verify) + ")" };
var noTensorCores = new Option<bool>("--no-tensor-cores") { Description = "Run attention on the general kernel even where the tensor-core decode kernel applies (CUDA)" };
var seed = new Option<int>("--seed") { Description = "Seed of the weights, the hidden states and the workload", DefaultValueFactory = _ => 42 };

var root = new RootCommand(
    "MlaGen serving sample: a DeepSeek-V3 attention layer ([MlaConfig(7168, 128, 512, 64, QLatentRank = 1536, YarnFactor = 40, "
    + "MaxPositions = 163840)]) serving requests of different lengths that join and leave over time, continuous batching "
    + "with chunked prefill through MlaLayer.Forward on one paged LatentCache. Weights and hidden states are random.")
{
    device, requests, maxBatch, promptMin, promptMax, decodeMin, decodeMax, stepTokens, arrival, pages, verify, noTensorCores, seed,
};
root.SetAction(parse =>
{
    MlaDevice mlaDevice;
    try
    {
        mlaDevice = MlaDevice.Create(parse.GetValue(device));
    }
    catch (Exception e) when (e is ArgumentException or InvalidOperationException)
    {
        Console.Error.WriteLine(e.Message); // a malformed selection, or CUDA asked for without a GPU
        return 2;
    }
    using var owned = mlaDevice;
    var d = mlaDevice.IsCuda ? gpu : cpu;
    var settings = new ServingSettings
    {
        Requests = parse.GetValue(requests) ?? d.Requests,
        MaxBatch = parse.GetValue(maxBatch) ?? d.MaxBatch,
        PromptMin = parse.GetValue(promptMin) ?? d.PromptMin,
        PromptMax = parse.GetValue(promptMax) ?? d.PromptMax,
        DecodeMin = parse.GetValue(decodeMin) ?? d.DecodeMin,
        DecodeMax = parse.GetValue(decodeMax) ?? d.DecodeMax,
        StepTokens = parse.GetValue(stepTokens) ?? d.StepTokens,
        ArrivalInterval = parse.GetValue(arrival) ?? d.ArrivalInterval,
        Pages = parse.GetValue(pages) ?? 0,
        Verify = parse.GetValue(verify) ?? d.Verify,
        Seed = parse.GetValue(seed),
        TensorCores = !parse.GetValue(noTensorCores),
    };
    return Serve(mlaDevice, settings);
});
return root.Parse(args).Invoke();

static int Serve(MlaDevice device, ServingSettings s)
{
    var spec = DeepSeekV3Attention.Spec;
    if (s.Problem(spec) is { } problem)
    {
        Console.Error.WriteLine(problem);
        return 2;
    }
    static string I(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);

    int maxTokens = s.PromptMax + s.DecodeMax;
    int pagesPerSequence = (maxTokens + spec.PageSize - 1) / spec.PageSize;
    int numPages = s.Pages > 0 ? s.Pages : Math.Max(pagesPerSequence, (s.MaxBatch * pagesPerSequence * 3 + 3) / 4);
    if (numPages < pagesPerSequence)
    {
        Console.Error.WriteLine(I($"--pages {numPages} cannot hold the longest request ({maxTokens} tokens = {pagesPerSequence} pages)."));
        return 2;
    }

    Console.WriteLine($"Layer      {spec}");
    Console.WriteLine(I($"Device     {device.Name} ({device.Kind}, {device.Selection}; {device.Reason})"));

    var clock = Stopwatch.StartNew();
    var weights = MlaWeights.Random(spec, s.Seed);
    long weightValues = weights.Tensors.Values.Sum(t => (long)t.Data.Length);
    Console.WriteLine(I($"Weights    random BF16, {weightValues:N0} values ({weightValues * 2 / 1e6:F0} MB), seed {s.Seed}, made in {clock.Elapsed.TotalSeconds:F1} s"));

    clock.Restart();
    using var layer = DeepSeekV3Attention.CreateLayer(device, weights);
    Console.WriteLine(I($"Kernels    loaded in {device.TotalLoadTime.TotalMilliseconds:F0} ms (MlaDevice.TotalLoadTime; {layer.Kernels.Path} path), layer ready in {clock.Elapsed.TotalSeconds:F1} s"));

    using var cache = layer.CreateCache(numPages, s.MaxBatch, pagesPerSequence);
    Console.WriteLine(I($"Cache      {numPages} pages × {spec.PageSize} tokens × {spec.CacheRowBytes} B = {numPages * spec.PageBytes / 1e6:F1} MB, {s.MaxBatch} sequence slots, at most {pagesPerSequence} page(s) per sequence"));

    var random = new Random(s.Seed + 1);
    var workload = Workload.Create(s, random);
    var hidden = new HiddenStates(Math.Min(1024, Math.Max(16, s.StepTokens)), spec.DModel, random);
    int verified = s.Verify ? workload.OrderBy(r => r.TotalTokens).ThenBy(r => r.Index).First().Index : -1;
    Console.WriteLine(I($"Workload   {s.Requests} requests, one every {s.ArrivalInterval} steps: prompts {s.PromptMin}..{s.PromptMax} tokens (request 0: {workload[0].PromptTokens}, the long context), {s.DecodeMin}..{s.DecodeMax} generated; at most {s.MaxBatch} at once, {s.StepTokens} tokens per step"));

    var engine = new ServingEngine(layer, cache, hidden, s, verified);
    ServingStats stats = null!;
    long promptTotal = workload.Sum(r => (long)r.PromptTokens);
    long decodeTotal = workload.Sum(r => (long)r.DecodeTokens);
    AnsiConsole.Progress()
        .AutoClear(false)
        .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
        .Start(progress =>
        {
            var prefillTask = progress.AddTask("prefill tokens", maxValue: Math.Max(1, promptTotal));
            var decodeTask = progress.AddTask("decode tokens", maxValue: Math.Max(1, decodeTotal));
            var doneTask = progress.AddTask("requests done", maxValue: s.Requests);
            stats = engine.Run(workload, report =>
            {
                prefillTask.Increment(report.PrefillTokens);
                decodeTask.Increment(report.DecodeTokens);
                doneTask.Increment(report.Left);
                doneTask.Description = I($"requests done ({report.Running} running)");
            });
            if (decodeTotal == 0)
                decodeTask.Value = decodeTask.MaxValue;
        });

    var table = new Table().AddColumns("request", "prompt", "generated", "arrived", "joined", "left");
    foreach (var r in workload)
        table.AddRow(r.Index.ToString(CultureInfo.InvariantCulture), r.PromptTokens.ToString(CultureInfo.InvariantCulture),
            r.DecodeTokens.ToString(CultureInfo.InvariantCulture), r.ArrivalStep.ToString(CultureInfo.InvariantCulture),
            r.JoinedStep.ToString(CultureInfo.InvariantCulture), r.LeftStep.ToString(CultureInfo.InvariantCulture));
    AnsiConsole.Write(table);

    long tokens = stats.PrefillTokens + stats.DecodeTokens;
    var sortedSteps = stats.StepMilliseconds.OrderBy(t => t).ToArray();
    Console.WriteLine(I($"Served     {s.Requests} requests in {stats.Steps} steps: {stats.PrefillTokens} prompt + {stats.DecodeTokens} generated tokens, {stats.ForwardTime.TotalSeconds:F2} s in Forward"));
    Console.WriteLine(I($"Throughput {tokens / stats.ForwardTime.TotalSeconds:F1} tokens/s; median step {sortedSteps[sortedSteps.Length / 2]:F1} ms, slowest {sortedSteps[^1]:F1} ms"));
    Console.WriteLine(stats.TensorCoreSteps > 0
        ? I($"Attention  tensor-core decode kernel in {stats.TensorCoreSteps} of {stats.Steps} steps")
        : I($"Attention  general kernel ({layer.Kernels.Path} path{(device.IsCuda ? (s.TensorCores ? "" : ", --no-tensor-cores") : "; the tensor-core kernel needs CUDA")})"));
    Console.WriteLine(I($"Pages      peak {stats.PeakPagesUsed} of {numPages} used ({stats.PeakRunning} sequence(s) at once); {stats.PagesUsedAtEnd} used, {stats.TokensStoredAtEnd} tokens stored after the last request left"));
    Console.WriteLine(I($"Checksum   sum {stats.Sum:R}, sum of |x| {stats.AbsoluteSum:R} over {tokens} × {spec.DModel} outputs"));

    if (verified < 0)
        return 0;
    var request = workload[verified];
    clock.Restart();
    int count = request.TotalTokens;
    var reference = NaiveMlaReference.Forward(spec, weights, stats.VerifiedHidden.ToArray(), count);
    double error = NaiveMlaReference.RelativeL2(stats.VerifiedOutput.ToArray(), reference.Output);
    const double Tolerance = 2e-2;
    bool ok = error <= Tolerance;
    Console.WriteLine(I($"Verify     request {verified} ({count} tokens, steps {request.JoinedStep}..{request.LeftStep}): relative L2 {error:E2} against the float64 reference (tolerance {Tolerance:E0}) {(ok ? "OK" : "FAILED")}, {clock.Elapsed.TotalSeconds:F1} s"));
    return ok ? 0 : 1;
}
