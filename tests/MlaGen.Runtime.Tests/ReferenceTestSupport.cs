using System;
using System.Collections.Generic;
using MlaGen.Numerics;
using MlaGen.Weights;
using Xunit;

namespace MlaGen.Runtime.Tests;

/// <summary>Specs, weights and comparisons shared by the Reference* tests.</summary>
internal static class ReferenceTestSupport
{
    /// <summary>
    /// An MlaSpec from raw attributes. The derived values (softmax scale, RoPE factor, inverse frequencies) are NaN:
    /// the reference must never read them, and a NaN would spread into every result if it did.
    /// </summary>
    public static MlaSpec Spec(
        int dModel = 48, int heads = 4, int latent = 32, int rope = 16, int qLatent = 0, int nope = 16, int v = 16,
        RopeStyle style = RopeStyle.Interleaved, double theta = 1e4, double yarnFactor = 1, int originalPositions = 4096,
        double betaFast = 32, double betaSlow = 1, double mscale = 1, double mscaleAllDim = 1, double epsilon = 1e-6)
    {
        var frequencies = new float[rope / 2];
        Array.Fill(frequencies, float.NaN);
        return new MlaSpec(
            "ReferenceTest", dModel, heads, latent, rope, qLatent, nope, v, style, theta, yarnFactor, originalPositions,
            betaFast, betaSlow, mscale, mscaleAllDim, maxPositions: 163840, pageSize: 64, epsilon,
            softmaxScale: float.NaN, ropeAttentionFactor: float.NaN, inverseFrequencies: frequencies);
    }

    /// <summary>The same spec with another RoPE style.</summary>
    public static MlaSpec WithStyle(MlaSpec spec, RopeStyle style) =>
        Spec(spec.DModel, spec.Heads, spec.LatentRank, spec.RopeDim, spec.QLatentRank, spec.NopeHeadDim, spec.VHeadDim, style,
            spec.RopeTheta, spec.YarnFactor, spec.YarnOriginalMaxPositions, spec.YarnBetaFast, spec.YarnBetaSlow,
            spec.YarnMscale, spec.YarnMscaleAllDim, spec.RmsNormEpsilon);

    /// <summary>A YaRN spec like DeepSeek-V2-Lite's RoPE (factor 40, original 4096) but small, with a non-trivial RoPE factor.</summary>
    public static MlaSpec SmallYarnSpec(int qLatent = 0, RopeStyle style = RopeStyle.Interleaved) =>
        Spec(qLatent: qLatent, style: style, yarnFactor: 40, mscale: 1, mscaleAllDim: 0.707);

    /// <summary>Weights from float values (each must be BF16-exact), shapes taken from the spec.</summary>
    public static MlaWeights Weights(MlaSpec spec, IReadOnlyDictionary<string, float[]> values)
    {
        var tensors = new List<Bf16Tensor>();
        foreach (var (name, shape) in MlaWeights.ExpectedTensors(spec))
        {
            float[] data = values[name];
            ushort[] bits = Bf16.FromFloats(data);
            for (int i = 0; i < data.Length; i++)
                Assert.Equal(data[i], Bf16.ToFloat(bits[i]));
            tensors.Add(new Bf16Tensor(name, shape, bits));
        }
        return MlaWeights.Create(spec, tensors);
    }

    /// <summary>
    /// The weights with every RoPE output row reordered by [0, 2, 4, …, 1, 3, 5, …] (q rope rows of each head and the
    /// k_pe rows of kv_a_proj_with_mqa): interleaved pairs (2i, 2i+1) become rotate-half pairs (i, i + d/2).
    /// </summary>
    public static MlaWeights WithRopeRowsDeinterleaved(MlaSpec spec, MlaWeights weights)
    {
        int rope = spec.RopeDim;
        var tensors = new List<Bf16Tensor>();
        foreach (var tensor in weights.Tensors.Values)
        {
            var firstRopeRows = new List<int>();
            if (tensor.Name is MlaWeights.QProjName or MlaWeights.QBProjName)
            {
                for (int h = 0; h < spec.Heads; h++)
                    firstRopeRows.Add(h * spec.QHeadDim + spec.NopeHeadDim);
            }
            else if (tensor.Name == MlaWeights.KvAProjWithMqaName)
            {
                firstRopeRows.Add(spec.LatentRank);
            }
            if (firstRopeRows.Count == 0)
            {
                tensors.Add(tensor);
                continue;
            }

            int columns = tensor.Shape[1];
            var data = (ushort[])tensor.Data.Clone();
            foreach (int first in firstRopeRows)
            {
                for (int j = 0; j < rope; j++)
                {
                    int source = j < rope / 2 ? 2 * j : 2 * (j - rope / 2) + 1;
                    Array.Copy(tensor.Data, (first + source) * columns, data, (first + j) * columns, columns);
                }
            }
            tensors.Add(new Bf16Tensor(tensor.Name, new[] { tensor.Shape[0], columns }, data));
        }
        return MlaWeights.Create(spec, tensors);
    }

    /// <summary>Token inputs [count · dModel], uniform in ±1, reproducible.</summary>
    public static float[] RandomInput(int count, int dModel, int seed)
    {
        var random = new Random(seed);
        var x = new float[count * dModel];
        for (int i = 0; i < x.Length; i++)
            x[i] = (float)(random.NextDouble() * 2 - 1);
        return x;
    }

    /// <summary>W·x for an [out, in] BF16 matrix, written again here so tests do not lean on the reference's own helper.</summary>
    public static double[] MatVec(Bf16Tensor matrix, ReadOnlySpan<double> x)
    {
        int rows = matrix.Shape[0];
        int columns = matrix.Shape[1];
        var result = new double[rows];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < columns; c++)
                result[r] += Bf16.ToFloat(matrix.Data[r * columns + c]) * x[c];
        return result;
    }

    public static double[] ToDoubles(ReadOnlySpan<float> x)
    {
        var result = new double[x.Length];
        for (int i = 0; i < x.Length; i++)
            result[i] = x[i];
        return result;
    }

    public static double Dot(ReadOnlySpan<double> a, ReadOnlySpan<double> b)
    {
        Assert.Equal(a.Length, b.Length);
        double sum = 0;
        for (int i = 0; i < a.Length; i++)
            sum += a[i] * b[i];
        return sum;
    }

    /// <summary>|actual − expected| ≤ tolerance · max(1, |expected|) for every element.</summary>
    public static void AssertClose(ReadOnlySpan<double> expected, ReadOnlySpan<double> actual, double tolerance, string what)
    {
        Assert.True(expected.Length == actual.Length, $"{what}: length {actual.Length}, expected {expected.Length}.");
        for (int i = 0; i < expected.Length; i++)
            AssertClose(expected[i], actual[i], tolerance, $"{what}[{i}]");
    }

    public static void AssertClose(double expected, double actual, double tolerance, string what)
    {
        double allowed = tolerance * Math.Max(1.0, Math.Abs(expected));
        Assert.True(
            Math.Abs(actual - expected) <= allowed,
            $"{what}: got {actual:R}, expected {expected:R} (difference {Math.Abs(actual - expected):E3}, allowed {allowed:E3}).");
    }
}
