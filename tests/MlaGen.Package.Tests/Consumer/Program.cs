using System;
using System.Globalization;
using System.Linq;
using MlaGen;
using MlaGen.Devices;
using MlaGen.Reference;
using MlaGen.Weights;
using PackageConsumer;

// Written by MlaGen.Package.Tests into a fresh project that references only the packed MlaGen package: one prefill and
// one decode step through the generated kernels, checked against the float64 reference. The last line is what the
// test asserts on.
const double Tolerance = 2e-2;
const int PromptTokens = 17; // crosses a page boundary (PageSize 16)

var spec = PackageSmokeAttention.Spec;
using var device = MlaDevice.Create();
var weights = MlaWeights.Random(spec, seed: 20260501);
using var layer = PackageSmokeAttention.CreateLayer(device, weights);
using var cache = layer.CreateCache(numPages: 4, maxSequences: 2, maxPagesPerSequence: 2);
var sequence = cache.CreateSequence();

var random = new Random(7);
float[] Hidden(int tokens) => Enumerable.Range(0, tokens * spec.DModel).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
var prompt = Hidden(PromptTokens);
var next = Hidden(1);

var prefill = layer.Prefill(cache, sequence, prompt);
var decode = layer.Decode(cache, new[] { sequence }, next);

var reference = NaiveMlaReference.Forward(spec, weights, prompt.Concat(next).ToArray(), PromptTokens + 1);
double prefillError = NaiveMlaReference.RelativeL2(prefill.Output, reference.Output.AsSpan(0, PromptTokens * spec.DModel));
double decodeError = NaiveMlaReference.RelativeL2(decode.Output, reference.Output.AsSpan(PromptTokens * spec.DModel, spec.DModel));
bool pass = prefill.Tokens == PromptTokens && decode.Tokens == 1 && cache.GetLength(sequence) == PromptTokens + 1
    && prefillError <= Tolerance && decodeError <= Tolerance;

Console.WriteLine($"spec {spec}");
Console.WriteLine($"device {device} kernels {layer.Kernels.Path}, loaded in {device.TotalLoadTime.TotalMilliseconds:F0} ms");
Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
    $"MLAGEN_PACKAGE_CHECK {(pass ? "PASS" : "FAIL")} device={device.Selection} prefill_tokens={prefill.Tokens} decode_tokens={decode.Tokens} cached={cache.GetLength(sequence)} prefill_rel_l2={prefillError:E3} decode_rel_l2={decodeError:E3} tolerance={Tolerance:E1}"));
return pass ? 0 : 1;
