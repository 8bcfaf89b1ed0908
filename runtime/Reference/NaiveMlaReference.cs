using System;
using System.Collections.Generic;
using MlaGen.Numerics;
using MlaGen.Weights;

namespace MlaGen.Reference;

/// <summary>
/// Float64 reference of one DeepSeek MLA attention layer, computed the NON-absorbed way (per-head K and V
/// materialised from c_kv), as Hugging Face DeepseekV2/V3 and DeepSeek's "naive" inference path do.
/// Every generated kernel is checked against it, so it is written for clarity, not speed.
/// The stages are public so a test can feed one exactly the inputs a GPU kernel saw.
/// </summary>
public static partial class NaiveMlaReference
{
    /// <summary>
    /// q of one token at <paramref name="position"/>: q_proj·x, or q_b_proj·(RMSNorm(q_a_proj·x)·q_a_layernorm)
    /// with q-LoRA; each head's rows split into [nope | rope], the rope part rotated.
    /// </summary>
    public static ReferenceQuery QueryPath(MlaSpec spec, MlaWeights weights, ReadOnlySpan<float> x, int position)
    {
        ValidateLayer(spec, weights);
        double[] input = ToDoubles(x, spec.DModel, nameof(x));
        double[] q;
        if (spec.HasQLatent)
        {
            double[] qLatent = MatVec(weights.QAProj!, input);
            q = MatVec(weights.QBProj!, RmsNorm(qLatent, weights.QALayerNorm!, spec.RmsNormEpsilon));
        }
        else
        {
            q = MatVec(weights.QProj!, input);
        }

        int nope = spec.NopeHeadDim;
        int rope = spec.RopeDim;
        var qNope = new double[spec.Heads * nope];
        var qPe = new double[spec.Heads * rope];
        var rotation = RopeRotation.At(spec, position);
        for (int h = 0; h < spec.Heads; h++)
        {
            int headStart = h * spec.QHeadDim;
            Array.Copy(q, headStart, qNope, h * nope, nope);
            rotation.Rotate(q.AsSpan(headStart + nope, rope), qPe.AsSpan(h * rope, rope));
        }
        return new ReferenceQuery(qNope, qPe);
    }

    /// <summary>
    /// The cache row of one token at <paramref name="position"/>: kv_a = kv_a_proj_with_mqa·x; c_kv = RMSNorm(first
    /// LatentRank values)·kv_a_layernorm; k_pe = the last RopeDim values, rotated.
    /// </summary>
    public static ReferenceCacheRow KvPath(MlaSpec spec, MlaWeights weights, ReadOnlySpan<float> x, int position)
    {
        ValidateLayer(spec, weights);
        double[] kvA = MatVec(weights.KvAProjWithMqa, ToDoubles(x, spec.DModel, nameof(x)));
        double[] cKv = RmsNorm(kvA.AsSpan(0, spec.LatentRank), weights.KvALayerNorm, spec.RmsNormEpsilon);
        var kPe = new double[spec.RopeDim];
        RopeRotation.At(spec, position).Rotate(kvA.AsSpan(spec.LatentRank, spec.RopeDim), kPe);
        return new ReferenceCacheRow(cKv, kPe);
    }

    /// <summary>
    /// Attention of one query over the first <paramref name="visibleTokens"/> cache rows, non-absorbed: for every
    /// visible token and head K_h = [W_UK·c_kv | k_pe] and V_h = W_UV·c_kv are built, then
    /// softmax(scale·Q_h·K_h) weighs V_h.
    /// </summary>
    /// <param name="spec">The layer shape; RoPE and scales are derived from its raw attributes.</param>
    /// <param name="weights">BF16 weights shaped for <paramref name="spec"/>.</param>
    /// <param name="qNope">[Heads · NopeHeadDim], as <see cref="QueryPath"/> returns it.</param>
    /// <param name="qPe">[Heads · RopeDim], already rotated.</param>
    /// <param name="cKv">Per token [LatentRank].</param>
    /// <param name="kPe">Per token [RopeDim], already rotated.</param>
    /// <param name="visibleTokens">How many leading rows the query sees (at least 1).</param>
    public static ReferenceAttention Attention(
        MlaSpec spec, MlaWeights weights, ReadOnlySpan<double> qNope, ReadOnlySpan<double> qPe,
        IReadOnlyList<double[]> cKv, IReadOnlyList<double[]> kPe, int visibleTokens)
    {
        ValidateLayer(spec, weights);
        ArgumentNullException.ThrowIfNull(cKv);
        ArgumentNullException.ThrowIfNull(kPe);
        ValidateVisible(visibleTokens, Math.Min(cKv.Count, kPe.Count));
        var rows = new ReferenceCacheRow[visibleTokens];
        var keys = new double[visibleTokens][];
        var values = new double[visibleTokens][];
        for (int t = 0; t < visibleTokens; t++)
        {
            rows[t] = new ReferenceCacheRow(cKv[t], kPe[t]);
            ValidateCacheRow(spec, rows[t], t);
            (keys[t], values[t]) = MaterialiseKeyAndValue(spec, weights, rows[t]);
        }
        return Attend(spec, AssembleQuery(spec, qNope, qPe), rows, keys, values, visibleTokens);
    }

    /// <summary>
    /// <see cref="Attention"/> fed from cache rows as the GPU stores them: BF16 bits of [c_kv | k_pe]
    /// (CacheRowValues each), converted exactly to double.
    /// </summary>
    public static ReferenceAttention AttentionFromCache(
        MlaSpec spec, MlaWeights weights, ReadOnlySpan<double> qNope, ReadOnlySpan<double> qPe,
        IReadOnlyList<ushort[]> cacheRows, int visibleTokens)
    {
        ValidateLayer(spec, weights);
        ArgumentNullException.ThrowIfNull(cacheRows);
        ValidateVisible(visibleTokens, cacheRows.Count);
        var cKv = new double[visibleTokens][];
        var kPe = new double[visibleTokens][];
        for (int t = 0; t < visibleTokens; t++)
        {
            ushort[] row = cacheRows[t];
            if (row.Length != spec.CacheRowValues)
                throw new ArgumentException(
                    $"Cache row {t} has {row.Length} values, expected {spec.CacheRowValues} (latent + rope).", nameof(cacheRows));
            cKv[t] = Bf16ToDoubles(row.AsSpan(0, spec.LatentRank));
            kPe[t] = Bf16ToDoubles(row.AsSpan(spec.LatentRank, spec.RopeDim));
        }
        return Attention(spec, weights, qNope, qPe, cKv, kPe, visibleTokens);
    }

    /// <summary>o_proj·heads: [Heads · VHeadDim] → [DModel].</summary>
    public static double[] OutputProjection(MlaSpec spec, MlaWeights weights, ReadOnlySpan<double> heads)
    {
        ValidateLayer(spec, weights);
        if (heads.Length != spec.Heads * spec.VHeadDim)
            throw new ArgumentException($"Head outputs have {spec.Heads * spec.VHeadDim} values, got {heads.Length}.", nameof(heads));
        return MatVec(weights.OProj, heads);
    }

    /// <summary>
    /// The whole layer, causal, for ONE sequence of <paramref name="tokenCount"/> tokens at positions 0 .. T-1
    /// (<paramref name="x"/> is [T · DModel] row-major). Token t sees tokens 0 .. t.
    /// </summary>
    public static ReferenceForward Forward(MlaSpec spec, MlaWeights weights, ReadOnlySpan<float> x, int tokenCount)
    {
        ValidateLayer(spec, weights);
        ArgumentOutOfRangeException.ThrowIfNegative(tokenCount);
        if (x.Length != tokenCount * spec.DModel)
            throw new ArgumentException(
                $"Input has {x.Length} values, expected {tokenCount} tokens × {spec.DModel}.", nameof(x));

        var rows = new ReferenceCacheRow[tokenCount];
        var keys = new double[tokenCount][];
        var values = new double[tokenCount][];
        var queries = new double[tokenCount][];
        for (int t = 0; t < tokenCount; t++)
        {
            ReadOnlySpan<float> token = x.Slice(t * spec.DModel, spec.DModel);
            rows[t] = KvPath(spec, weights, token, t);
            // K and V are built once per token here; Attention() rebuilds them per call for callers with raw rows.
            (keys[t], values[t]) = MaterialiseKeyAndValue(spec, weights, rows[t]);
            var query = QueryPath(spec, weights, token, t);
            queries[t] = AssembleQuery(spec, query.Nope, query.Rope);
        }

        var output = new double[tokenCount * spec.DModel];
        var lse = new double[tokenCount * spec.Heads];
        for (int t = 0; t < tokenCount; t++)
        {
            var attention = Attend(spec, queries[t], rows, keys, values, t + 1);
            MatVec(weights.OProj, attention.Heads).CopyTo(output, t * spec.DModel);
            attention.Lse.CopyTo(lse, t * spec.Heads);
        }
        return new ReferenceForward(tokenCount, output, lse, rows);
    }

    /// <summary>A cache row as the GPU stores it: BF16 bits of [c_kv | k_pe], rounded through float as a kernel does.</summary>
    public static ushort[] ToCacheRowBf16(MlaSpec spec, ReferenceCacheRow row)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(row);
        ValidateCacheRow(spec, row, 0);
        var bits = new ushort[spec.CacheRowValues];
        for (int i = 0; i < spec.LatentRank; i++)
            bits[i] = Bf16.FromFloat((float)row.CKv[i]);
        for (int i = 0; i < spec.RopeDim; i++)
            bits[spec.LatentRank + i] = Bf16.FromFloat((float)row.KPe[i]);
        return bits;
    }

    /// <summary>BF16 bits to double; exact.</summary>
    public static double[] Bf16ToDoubles(ReadOnlySpan<ushort> bits)
    {
        var values = new double[bits.Length];
        for (int i = 0; i < bits.Length; i++)
            values[i] = Bf16.ToFloat(bits[i]);
        return values;
    }

    /// <summary>
    /// ||actual − expected||₂ / ||expected||₂. Any NaN or infinity in <paramref name="actual"/> gives +∞, so a
    /// tolerance check fails; an all-zero expectation gives 0 for an all-zero actual and +∞ otherwise.
    /// </summary>
    public static double RelativeL2(ReadOnlySpan<float> actual, ReadOnlySpan<double> expected)
    {
        if (actual.Length != expected.Length)
            throw new ArgumentException($"Lengths differ: actual {actual.Length}, expected {expected.Length}.", nameof(actual));
        double errorSquared = 0;
        double expectedSquared = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            if (!double.IsFinite(expected[i]))
                throw new ArgumentException($"Expected value {i} is {expected[i]}: the reference itself is broken.", nameof(expected));
            if (!float.IsFinite(actual[i]))
                return double.PositiveInfinity;
            double error = actual[i] - expected[i];
            errorSquared += error * error;
            expectedSquared += expected[i] * expected[i];
        }
        if (expectedSquared == 0)
            return errorSquared == 0 ? 0 : double.PositiveInfinity;
        return Math.Sqrt(errorSquared / expectedSquared);
    }

    /// <summary>Q_h = [q_nope_h | q_pe_h] for every head: [Heads · QHeadDim].</summary>
    private static double[] AssembleQuery(MlaSpec spec, ReadOnlySpan<double> qNope, ReadOnlySpan<double> qPe)
    {
        int nope = spec.NopeHeadDim;
        int rope = spec.RopeDim;
        if (qNope.Length != spec.Heads * nope)
            throw new ArgumentException($"q_nope has {spec.Heads * nope} values, got {qNope.Length}.", nameof(qNope));
        if (qPe.Length != spec.Heads * rope)
            throw new ArgumentException($"q_pe has {spec.Heads * rope} values, got {qPe.Length}.", nameof(qPe));
        var query = new double[spec.Heads * spec.QHeadDim];
        for (int h = 0; h < spec.Heads; h++)
        {
            qNope.Slice(h * nope, nope).CopyTo(query.AsSpan(h * spec.QHeadDim, nope));
            qPe.Slice(h * rope, rope).CopyTo(query.AsSpan(h * spec.QHeadDim + nope, rope));
        }
        return query;
    }

    /// <summary>
    /// kv = kv_b_proj·c_kv, per head rows [nope | v]: K_h = [k_nope_h | k_pe] ([Heads · QHeadDim], k_pe copied
    /// into every head) and V_h ([Heads · VHeadDim]).
    /// </summary>
    private static (double[] Key, double[] Value) MaterialiseKeyAndValue(MlaSpec spec, MlaWeights weights, ReferenceCacheRow row)
    {
        double[] kv = MatVec(weights.KvBProj, row.CKv);
        int nope = spec.NopeHeadDim;
        int v = spec.VHeadDim;
        var key = new double[spec.Heads * spec.QHeadDim];
        var value = new double[spec.Heads * v];
        for (int h = 0; h < spec.Heads; h++)
        {
            int kvStart = h * (nope + v);
            Array.Copy(kv, kvStart, key, h * spec.QHeadDim, nope);
            Array.Copy(row.KPe, 0, key, h * spec.QHeadDim + nope, spec.RopeDim);
            Array.Copy(kv, kvStart + nope, value, h * v, v);
        }
        return (key, value);
    }

    /// <summary>Max-subtracted softmax of scale·Q_h·K_h over the visible tokens, per head.</summary>
    private static ReferenceAttention Attend(
        MlaSpec spec, double[] query, IReadOnlyList<ReferenceCacheRow> rows, double[][] keys, double[][] values, int visibleTokens)
    {
        double scale = SoftmaxScale(spec);
        int qk = spec.QHeadDim;
        int v = spec.VHeadDim;
        int latent = spec.LatentRank;
        var heads = new double[spec.Heads * v];
        var lse = new double[spec.Heads];
        var latentOut = new double[spec.Heads * latent];
        var scores = new double[visibleTokens];
        for (int h = 0; h < spec.Heads; h++)
        {
            double max = double.NegativeInfinity;
            for (int t = 0; t < visibleTokens; t++)
            {
                double[] key = keys[t];
                double dot = 0;
                for (int i = 0; i < qk; i++)
                    dot += query[h * qk + i] * key[h * qk + i];
                scores[t] = scale * dot;
                max = Math.Max(max, scores[t]);
            }

            double sum = 0;
            for (int t = 0; t < visibleTokens; t++)
            {
                double weight = Math.Exp(scores[t] - max);
                sum += weight;
                double[] value = values[t];
                for (int i = 0; i < v; i++)
                    heads[h * v + i] += weight * value[h * v + i];
                double[] cKv = rows[t].CKv;
                for (int i = 0; i < latent; i++)
                    latentOut[h * latent + i] += weight * cKv[i];
            }
            for (int i = 0; i < v; i++)
                heads[h * v + i] /= sum;
            for (int i = 0; i < latent; i++)
                latentOut[h * latent + i] /= sum;
            lse[h] = max + Math.Log(sum);
        }
        return new ReferenceAttention(heads, lse, latentOut);
    }

    /// <summary>x / sqrt(mean(x²) + eps) · weight.</summary>
    private static double[] RmsNorm(ReadOnlySpan<double> x, Bf16Tensor weight, double epsilon)
    {
        double sumSquares = 0;
        for (int i = 0; i < x.Length; i++)
            sumSquares += x[i] * x[i];
        double inverseRms = 1.0 / Math.Sqrt(sumSquares / x.Length + epsilon);
        var normed = new double[x.Length];
        for (int i = 0; i < x.Length; i++)
            normed[i] = x[i] * inverseRms * Bf16.ToFloat(weight.Data[i]);
        return normed;
    }

    /// <summary>Every BF16 bit pattern as double (exact); a table look-up keeps unoptimised Debug test runs fast.</summary>
    private static readonly double[] Bf16Values = CreateBf16Values();

    private static double[] CreateBf16Values()
    {
        var values = new double[ushort.MaxValue + 1];
        for (int bits = 0; bits < values.Length; bits++)
            values[bits] = Bf16.ToFloat((ushort)bits);
        return values;
    }

    /// <summary>W·x for an [out, in] row-major BF16 matrix; each weight converts exactly to double.</summary>
    private static double[] MatVec(Bf16Tensor matrix, ReadOnlySpan<double> x)
    {
        int rows = matrix.Shape[0];
        int columns = matrix.Shape[1];
        if (x.Length != columns)
            throw new ArgumentException($"'{matrix.Name}' {matrix.ShapeText} cannot multiply a vector of {x.Length}.", nameof(x));
        ushort[] data = matrix.Data;
        double[] input = x.ToArray();
        var result = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            double sum = 0;
            for (int c = 0; c < columns; c++)
                sum += Bf16Values[data[r * columns + c]] * input[c];
            result[r] = sum;
        }
        return result;
    }

    private static double[] ToDoubles(ReadOnlySpan<float> x, int expectedLength, string parameterName)
    {
        if (x.Length != expectedLength)
            throw new ArgumentException($"Expected {expectedLength} values, got {x.Length}.", parameterName);
        var values = new double[x.Length];
        for (int i = 0; i < x.Length; i++)
            values[i] = x[i];
        return values;
    }

    /// <summary>The weights must have exactly the shapes <paramref name="spec"/> implies (the spec may differ in RoPE style or scales).</summary>
    private static void ValidateLayer(MlaSpec spec, MlaWeights weights)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(weights);
        ValidateRope(spec);
        foreach (var (name, shape) in MlaWeights.ExpectedTensors(spec))
        {
            if (!weights.Tensors.TryGetValue(name, out var tensor) || !MlaWeights.ShapeEquals(tensor.Shape, shape))
                throw new ArgumentException(
                    $"Weights do not fit {spec.Name}: '{name}' should be [{string.Join(", ", shape)}].", nameof(weights));
        }
    }

    private static void ValidateVisible(int visibleTokens, int available)
    {
        if (visibleTokens < 1 || visibleTokens > available)
            throw new ArgumentOutOfRangeException(
                nameof(visibleTokens), visibleTokens, $"A query sees between 1 and {available} tokens here.");
    }

    private static void ValidateCacheRow(MlaSpec spec, ReferenceCacheRow row, int token)
    {
        if (row.CKv is null || row.CKv.Length != spec.LatentRank)
            throw new ArgumentException($"c_kv of token {token} must have {spec.LatentRank} values.");
        if (row.KPe is null || row.KPe.Length != spec.RopeDim)
            throw new ArgumentException($"k_pe of token {token} must have {spec.RopeDim} values.");
    }
}
