using System;
using System.Collections.Generic;
using MlaGen.Numerics;

namespace MlaGen.Weights;

/// <summary>One weight tensor as BF16 bits, row-major, with its Hugging Face name and shape.</summary>
public sealed class Bf16Tensor
{
    public Bf16Tensor(string name, int[] shape, ushort[] data)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(data);
        long count = 1;
        foreach (int d in shape)
        {
            if (d < 0)
                throw new ArgumentException($"Tensor '{name}': dimension {d} is negative.", nameof(shape));
            count *= d;
        }
        if (count != data.Length)
            throw new ArgumentException(
                $"Tensor '{name}': shape [{string.Join(", ", shape)}] holds {count} values but data has {data.Length}.", nameof(data));
        Name = name;
        Shape = (int[])shape.Clone();
        Data = data;
    }

    /// <summary>Short Hugging Face name without the layer prefix, e.g. "kv_b_proj.weight".</summary>
    public string Name { get; }
    public IReadOnlyList<int> Shape { get; }
    public ushort[] Data { get; }

    public string ShapeText => "[" + string.Join(", ", Shape) + "]";
}

/// <summary>
/// The weights of one MLA attention layer, named and shaped as Hugging Face writes DeepSeek checkpoints
/// (<c>[out, in]</c> row-major, BF16). Exactly one of <see cref="QProj"/> or the q-LoRA trio is present.
/// </summary>
public sealed class MlaWeights
{
    public const string QProjName = "q_proj.weight";
    public const string QAProjName = "q_a_proj.weight";
    public const string QALayerNormName = "q_a_layernorm.weight";
    public const string QBProjName = "q_b_proj.weight";
    public const string KvAProjWithMqaName = "kv_a_proj_with_mqa.weight";
    public const string KvALayerNormName = "kv_a_layernorm.weight";
    public const string KvBProjName = "kv_b_proj.weight";
    public const string OProjName = "o_proj.weight";

    private MlaWeights(MlaSpec spec, IReadOnlyDictionary<string, Bf16Tensor> tensors)
    {
        Spec = spec;
        Tensors = tensors;
    }

    public MlaSpec Spec { get; }

    /// <summary>Every tensor by short name (see the *Name constants).</summary>
    public IReadOnlyDictionary<string, Bf16Tensor> Tensors { get; }

    public Bf16Tensor? QProj => Tensors.GetValueOrDefault(QProjName);
    public Bf16Tensor? QAProj => Tensors.GetValueOrDefault(QAProjName);
    public Bf16Tensor? QALayerNorm => Tensors.GetValueOrDefault(QALayerNormName);
    public Bf16Tensor? QBProj => Tensors.GetValueOrDefault(QBProjName);
    public Bf16Tensor KvAProjWithMqa => Tensors[KvAProjWithMqaName];
    public Bf16Tensor KvALayerNorm => Tensors[KvALayerNormName];
    public Bf16Tensor KvBProj => Tensors[KvBProjName];
    public Bf16Tensor OProj => Tensors[OProjName];

    /// <summary>The tensors a layer of <paramref name="spec"/> needs, with their expected shapes.</summary>
    public static IReadOnlyList<(string Name, int[] Shape)> ExpectedTensors(MlaSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        int qOut = spec.Heads * spec.QHeadDim;
        var list = new List<(string, int[])>();
        if (spec.HasQLatent)
        {
            list.Add((QAProjName, new[] { spec.QLatentRank, spec.DModel }));
            list.Add((QALayerNormName, new[] { spec.QLatentRank }));
            list.Add((QBProjName, new[] { qOut, spec.QLatentRank }));
        }
        else
        {
            list.Add((QProjName, new[] { qOut, spec.DModel }));
        }
        list.Add((KvAProjWithMqaName, new[] { spec.LatentRank + spec.RopeDim, spec.DModel }));
        list.Add((KvALayerNormName, new[] { spec.LatentRank }));
        list.Add((KvBProjName, new[] { spec.Heads * (spec.NopeHeadDim + spec.VHeadDim), spec.LatentRank }));
        list.Add((OProjName, new[] { spec.DModel, spec.Heads * spec.VHeadDim }));
        return list;
    }

    /// <summary>
    /// Checks every tensor against <paramref name="spec"/>: a missing, extra or mis-shaped tensor throws an
    /// <see cref="ArgumentException"/> naming the tensor, the expected and the actual shape.
    /// </summary>
    public static MlaWeights Create(MlaSpec spec, IEnumerable<Bf16Tensor> tensors)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(tensors);
        var byName = new Dictionary<string, Bf16Tensor>(StringComparer.Ordinal);
        foreach (var t in tensors)
        {
            if (!byName.TryAdd(t.Name, t))
                throw new ArgumentException($"Tensor '{t.Name}' is given twice.", nameof(tensors));
        }
        var expected = ExpectedTensors(spec);
        foreach (var (name, shape) in expected)
        {
            if (!byName.TryGetValue(name, out var t))
                throw new ArgumentException(
                    $"Tensor '{name}' is missing: {spec.Name} expects shape [{string.Join(", ", shape)}].", nameof(tensors));
            if (!ShapeEquals(t.Shape, shape))
                throw new ArgumentException(
                    $"Tensor '{name}' has shape {t.ShapeText}, but {spec.Name} expects [{string.Join(", ", shape)}].", nameof(tensors));
        }
        if (byName.Count != expected.Count)
        {
            foreach (var name in byName.Keys)
            {
                bool known = false;
                foreach (var (n, _) in expected)
                    known |= n == name;
                if (!known)
                    throw new ArgumentException(
                        $"Tensor '{name}' does not belong to {spec.Name} (q-LoRA rank {spec.QLatentRank}).", nameof(tensors));
            }
        }
        return new MlaWeights(spec, byName);
    }

    /// <summary>
    /// Random weights for tests and samples: projections uniform in ±1/sqrt(fan-in), norms near 1.
    /// Same seed, same weights.
    /// </summary>
    public static MlaWeights Random(MlaSpec spec, int seed)
    {
        ArgumentNullException.ThrowIfNull(spec);
        var rng = new Random(seed);
        var tensors = new List<Bf16Tensor>();
        foreach (var (name, shape) in ExpectedTensors(spec))
        {
            var data = new ushort[shape.Length == 1 ? shape[0] : shape[0] * shape[1]];
            bool isNorm = shape.Length == 1;
            float bound = isNorm ? 0.25f : 1f / MathF.Sqrt(shape[1]);
            for (int i = 0; i < data.Length; i++)
            {
                float u = (float)(rng.NextDouble() * 2 - 1) * bound;
                data[i] = Bf16.FromFloat(isNorm ? 1f + u : u);
            }
            tensors.Add(new Bf16Tensor(name, shape, data));
        }
        return Create(spec, tensors);
    }

    internal static bool ShapeEquals(IReadOnlyList<int> actual, int[] expected)
    {
        if (actual.Count != expected.Length)
            return false;
        for (int i = 0; i < expected.Length; i++)
            if (actual[i] != expected[i])
                return false;
        return true;
    }
}
