using System;
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Linq;
using MlaGen;
using MlaGen.Devices;
using MlaGen.Sample;
using MlaGen.Weights;
using Spectre.Console;

// Runs one DeepSeek-V2-Lite attention layer: prefill a prompt, then decode token by token.
var device = new Option<string?>("--device") { Description = "cpu, cuda or cuda:N (default: MLAGEN_DEVICE, else the best GPU, else the CPU)" };
var prompt = new Option<int?>("--prompt") { Description = "Prompt tokens per sequence (default: 512 on a GPU, 24 on the CPU)" };
var decode = new Option<int?>("--decode") { Description = "Tokens to decode per sequence (default: 64 on a GPU, 8 on the CPU)" };
var batch = new Option<int?>("--batch") { Description = "Sequences decoded together (default: 8 on a GPU, 2 on the CPU)" };
var weightsPath = new Option<string?>("--weights") { Description = "A DeepSeek-V2-Lite checkpoint: model.safetensors, its index .json, or the folder holding them" };
var layerIndex = new Option<int>("--layer") { Description = "Which layer's attention weights to load with --weights", DefaultValueFactory = _ => 0 };
var seed = new Option<int>("--seed") { Description = "Seed of the random weights and hidden states", DefaultValueFactory = _ => 42 };
var verify = new Option<bool>("--verify") { Description = "Check the first sequence's outputs against the float64 non-absorbed reference" };
var noTensorCores = new Option<bool>("--no-tensor-cores") { Description = "Run attention on the general kernel even where the tensor-core kernel applies" };

var root = new RootCommand("MlaGen sample: a DeepSeek-V2-Lite-shaped MLA layer with a paged latent cache, on CUDA or the CPU accelerator.")
{
    device, prompt, decode, batch, weightsPath, layerIndex, seed, verify, noTensorCores,
};
root.SetAction(parse => Run(parse.GetValue(device), parse.GetValue(prompt), parse.GetValue(decode), parse.GetValue(batch),
    parse.GetValue(weightsPath), parse.GetValue(layerIndex), parse.GetValue(seed), parse.GetValue(verify), !parse.GetValue(noTensorCores)));
return root.Parse(args).Invoke();

static int Run(string? deviceName, int? promptTokens, int? decodeTokens, int? batchSize, string? weightsPath, int layer, int seed,
    bool verify, bool tensorCores)
{
    var spec = DeepSeekV2LiteAttention.Spec;
    Console.WriteLine($"Layer     {spec}");
    Console.WriteLine(FormattableString.Invariant(
        $"Layout    cache row {spec.CacheRowValues} values ({spec.CacheRowBytes} B), page {spec.PageSize} rows ({spec.PageBytes} B), softmax scale {spec.SoftmaxScale:G7} (YaRN mscale² applied), RoPE {spec.RopeStyle}, inverse frequencies {spec.InverseFrequencies[0]:G4} … {spec.InverseFrequencies[^1]:G4}"));

    using var mlaDevice = MlaDevice.Create(deviceName);
    Console.WriteLine($"Device    {mlaDevice.Name} ({mlaDevice.Kind}; {mlaDevice.Reason})");
    int promptLength = promptTokens ?? (mlaDevice.IsCuda ? 512 : 24);
    int steps = decodeTokens ?? (mlaDevice.IsCuda ? 64 : 8);
    int sequences = batchSize ?? (mlaDevice.IsCuda ? 8 : 2);
    if (promptLength < 1 || steps < 0 || sequences < 1)
    {
        Console.Error.WriteLine("--prompt and --batch must be at least 1, --decode at least 0.");
        return 2;
    }

    var clock = Stopwatch.StartNew();
    var weights = weightsPath is null
        ? MlaWeights.Random(spec, seed)
        : MlaWeightsLoader.Load(weightsPath, spec, layer);
    Console.WriteLine(weightsPath is null
        ? $"Weights   random (seed {seed}), {clock.ElapsedMilliseconds} ms"
        : $"Weights   {weightsPath}, layer {layer}, {clock.ElapsedMilliseconds} ms");

    using var attention = DeepSeekV2LiteAttention.CreateLayer(mlaDevice, weights);
    Console.WriteLine(FormattableString.Invariant($"Kernels   compiled in {mlaDevice.TotalLoadTime.TotalMilliseconds:F0} ms ({attention.Kernels.Path} path)"));

    int maxLength = promptLength + steps;
    int pagesPerSequence = (maxLength + spec.PageSize - 1) / spec.PageSize;
    using var cache = attention.CreateCache(sequences * pagesPerSequence, sequences, pagesPerSequence);
    var ids = Enumerable.Range(0, sequences).Select(_ => cache.CreateSequence()).ToArray();
    var random = new Random(seed + 1);
    float[] Hidden(int tokens) => Enumerable.Range(0, tokens * spec.DModel).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
    var options = new MlaForwardOptions { TensorCores = tensorCores, PoisonBuffers = verify };
    var history = new System.Collections.Generic.List<float>(); // the first sequence's hidden states, for --verify
    float[]? lastOutput = null;

    double checksum = 0;
    clock.Restart();
    var promptHidden = Hidden(sequences * promptLength);
    history.AddRange(promptHidden.AsSpan(0, promptLength * spec.DModel).ToArray());
    var prefill = attention.Forward(cache, ids, ids.Select(_ => promptLength).ToArray(), promptHidden, options);
    double prefillSeconds = clock.Elapsed.TotalSeconds;
    checksum += prefill.Output.Sum(v => (double)v);

    var stepTimes = new double[steps];
    bool usedTensorCores = prefill.UsedTensorCores;
    AnsiConsole.Progress().AutoClear(true).Start(progress =>
    {
        var task = progress.AddTask("decoding", maxValue: Math.Max(1, steps));
        for (int step = 0; step < steps; step++)
        {
            var x = Hidden(sequences);
            history.AddRange(x.AsSpan(0, spec.DModel).ToArray());
            var t = Stopwatch.StartNew();
            var result = attention.Decode(cache, ids, x, options);
            stepTimes[step] = t.Elapsed.TotalMilliseconds;
            lastOutput = result.Output;
            usedTensorCores = result.UsedTensorCores;
            checksum += result.Output.Sum(v => (double)v);
            task.Increment(1);
        }
    });

    Console.WriteLine(FormattableString.Invariant(
        $"Prefill   {sequences} × {promptLength} tokens in {prefillSeconds * 1000:F1} ms ({sequences * promptLength / prefillSeconds:F0} tokens/s)"));
    if (steps > 0)
    {
        var sorted = stepTimes.OrderBy(t => t).ToArray();
        double median = sorted[sorted.Length / 2];
        Console.WriteLine(FormattableString.Invariant(
            $"Decode    {steps} steps × {sequences} sequences: median {median:F2} ms/step ({sequences * 1000 / median:F0} tokens/s), first {stepTimes[0]:F2} ms"));
    }
    Console.WriteLine($"Cache     {cache.PagesUsed}/{cache.NumPages} pages, {cache.TokensStored} tokens");
    Console.WriteLine($"Attention prefill {prefill.Form} form{(prefill.UsedTensorCores ? " on tensor cores" : "")}; decode {(usedTensorCores ? "tensor-core decode kernel" : "general kernel")}");
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Checksum  {checksum:R}"));
    if (verify)
    {
        clock.Restart();
        int length = history.Count / spec.DModel;
        var reference = MlaGen.Reference.NaiveMlaReference.Forward(spec, weights, history.ToArray(), length);
        var actual = lastOutput ?? prefill.Output.AsSpan(0, promptLength * spec.DModel).ToArray();
        int rows = lastOutput is null ? promptLength : 1;
        var expected = reference.Output.AsSpan((length - rows) * spec.DModel, rows * spec.DModel);
        double error = MlaGen.Reference.NaiveMlaReference.RelativeL2(actual.AsSpan(0, rows * spec.DModel), expected);
        bool ok = error <= 2e-2;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"Verify    position {length - 1} of sequence 0 vs float64 non-absorbed reference: relative L2 {error:E3} ({(ok ? "ok" : "FAILED")}, ≤ 2e-2; reference took {clock.Elapsed.TotalSeconds:F1} s)"));
        if (!ok)
            return 1;
    }
    return 0;
}
