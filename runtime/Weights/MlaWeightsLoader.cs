using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;

namespace MlaGen.Weights;

/// <summary>
/// Reads (and, for tests and tools, writes) one MLA layer of a Hugging Face DeepSeek checkpoint under the names
/// <c>model.layers.{layer}.self_attn.{short name}</c>, converting every tensor to BF16 (FP8 weights dequantised with
/// their block scales) and checking it with <see cref="MlaWeights.Create"/>.
/// </summary>
public static class MlaWeightsLoader
{
    /// <summary>"model.layers.{layer}.self_attn.", the prefix of a layer's attention tensors.</summary>
    public static string LayerPrefix(int layer)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(layer);
        return string.Create(CultureInfo.InvariantCulture, $"model.layers.{layer}.self_attn.");
    }

    /// <summary>The full checkpoint name of a short name such as <see cref="MlaWeights.KvBProjName"/>.</summary>
    public static string TensorName(int layer, string shortName)
    {
        ArgumentException.ThrowIfNullOrEmpty(shortName);
        return LayerPrefix(layer) + shortName;
    }

    /// <summary>Opens <paramref name="path"/> (see <see cref="SafeTensorsCheckpoint.Open"/>) and loads one layer.</summary>
    public static MlaWeights Load(string path, MlaSpec spec, int layer)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentOutOfRangeException.ThrowIfNegative(layer);
        using var checkpoint = SafeTensorsCheckpoint.Open(path);
        return Load(checkpoint, spec, layer);
    }

    /// <summary>
    /// Loads layer <paramref name="layer"/>: q_proj, or the q-LoRA trio when <c>spec.QLatentRank &gt; 0</c>, then
    /// kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj. A layer the checkpoint lacks throws
    /// <see cref="ArgumentOutOfRangeException"/> for <paramref name="layer"/>; a missing or mis-shaped tensor throws
    /// <see cref="ArgumentException"/> naming the full tensor name, the layer and the shapes.
    /// </summary>
    public static MlaWeights Load(SafeTensorsCheckpoint checkpoint, MlaSpec spec, int layer)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentOutOfRangeException.ThrowIfNegative(layer);
        string layerStart = string.Create(CultureInfo.InvariantCulture, $"model.layers.{layer}.");
        if (!checkpoint.TensorNames.Any(name => name.StartsWith(layerStart, StringComparison.Ordinal)))
            throw new ArgumentOutOfRangeException(nameof(layer), layer,
                $"Checkpoint '{checkpoint.Path}' has no layer {layer} (no '{layerStart}*' tensor); {DescribeLayers(checkpoint)}.");

        string prefix = LayerPrefix(layer);
        var tensors = new List<Bf16Tensor>();
        foreach (var (shortName, shape) in MlaWeights.ExpectedTensors(spec))
        {
            string fullName = prefix + shortName;
            string expected = ShapeText(shape);
            if (!checkpoint.TryGetInfo(fullName, out var info))
                throw new ArgumentException(
                    $"Layer {layer} of '{checkpoint.Path}' has no tensor '{fullName}'; {spec.Name} expects shape {expected}."
                    + QVariantHint(checkpoint, spec, prefix));
            // Checked on the header first so a wrong tensor is reported without reading (or dequantising) its data.
            if (!info.Shape.SequenceEqual(shape))
                throw new ArgumentException(
                    $"Layer {layer} of '{checkpoint.Path}': tensor '{fullName}' has shape {info.ShapeText}, "
                    + $"but {spec.Name} ({spec.ShapeText}) expects {expected}.");
            var read = checkpoint.ReadAsBf16(fullName);
            tensors.Add(new Bf16Tensor(shortName, shape, read.Data));
        }
        return MlaWeights.Create(spec, tensors);
    }

    /// <summary>Writes one layer as BF16 under its full Hugging Face names to a single file (replaced atomically).</summary>
    public static void Save(MlaWeights weights, string path, int layer)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentException.ThrowIfNullOrEmpty(path);
        var writer = new SafeTensorsWriter();
        writer.SetMetadata("format", "pt");
        AddLayer(writer, weights, layer);
        writer.Save(path);
    }

    /// <summary>Adds one layer's tensors as BF16 under their full names, e.g. to build a multi-layer or sharded checkpoint.</summary>
    public static void AddLayer(SafeTensorsWriter writer, MlaWeights weights, int layer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        ArgumentNullException.ThrowIfNull(weights);
        string prefix = LayerPrefix(layer);
        foreach (var tensor in weights.Tensors.Values)
            writer.AddBf16(prefix + tensor.Name, tensor.Shape, tensor.Data);
    }

    private static string QVariantHint(SafeTensorsCheckpoint checkpoint, MlaSpec spec, string prefix)
    {
        if (spec.HasQLatent && checkpoint.Contains(prefix + MlaWeights.QProjName))
            return $" The layer has '{prefix}{MlaWeights.QProjName}' instead: the checkpoint has no q-LoRA, but the spec's q-LoRA rank is {spec.QLatentRank}.";
        if (!spec.HasQLatent && checkpoint.Contains(prefix + MlaWeights.QAProjName))
            return $" The layer has '{prefix}{MlaWeights.QAProjName}' instead: the checkpoint uses q-LoRA, but the spec's q-LoRA rank is 0.";
        return "";
    }

    private static string DescribeLayers(SafeTensorsCheckpoint checkpoint)
    {
        const string Start = "model.layers.";
        var layers = new SortedSet<int>();
        foreach (string name in checkpoint.TensorNames)
        {
            if (!name.StartsWith(Start, StringComparison.Ordinal))
                continue;
            int end = name.IndexOf('.', Start.Length);
            if (end > Start.Length
                && int.TryParse(name.AsSpan(Start.Length, end - Start.Length), NumberStyles.None, CultureInfo.InvariantCulture, out int index))
                layers.Add(index);
        }
        if (layers.Count == 0)
            return "it has no 'model.layers.*' tensors at all";
        if (layers.Count == layers.Max - layers.Min + 1)
            return layers.Count == 1 ? $"it has layer {layers.Min} only" : $"it has layers {layers.Min} to {layers.Max}";
        return $"it has layers {string.Join(", ", layers)}";
    }

    private static string ShapeText(int[] shape) => "[" + string.Join(", ", shape) + "]";
}
