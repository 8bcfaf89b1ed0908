using System;
using System.Collections.Generic;
using System.Collections.ObjectModel;
using System.Diagnostics.CodeAnalysis;
using System.IO;
using System.Linq;
using System.Text.Json;

namespace MlaGen.Weights;

/// <summary>
/// A Hugging Face checkpoint: one <c>.safetensors</c> file, or shards listed by <c>model.safetensors.index.json</c>
/// (<c>{"metadata": {...}, "weight_map": {"tensor": "model-00001-of-00002.safetensors", ...}}</c>). Shards are opened
/// on first use and all closed by <see cref="Dispose"/>. FP8 weights find their block scales in whichever shard holds them.
/// </summary>
public sealed class SafeTensorsCheckpoint : IDisposable
{
    private readonly IReadOnlyDictionary<string, string> _shardOfTensor;
    private readonly Dictionary<string, SafeTensorsFile> _openShards = new(StringComparer.Ordinal);
    private readonly object _gate = new();
    private bool _disposed;

    private SafeTensorsCheckpoint(
        string path, bool isSharded, IReadOnlyDictionary<string, string> shardOfTensor, IReadOnlyList<string> tensorNames,
        IReadOnlyList<string> shardPaths, IReadOnlyDictionary<string, string> metadata)
    {
        Path = path;
        IsSharded = isSharded;
        _shardOfTensor = shardOfTensor;
        TensorNames = tensorNames;
        ShardPaths = shardPaths;
        Metadata = metadata;
    }

    /// <summary>The file opened: the single <c>.safetensors</c> file or the index.</summary>
    public string Path { get; }

    public bool IsSharded { get; }

    /// <summary>Every tensor of the checkpoint (index order for a sharded one, data order for a single file).</summary>
    public IReadOnlyList<string> TensorNames { get; }

    /// <summary>Full paths of the data files, each once.</summary>
    public IReadOnlyList<string> ShardPaths { get; }

    /// <summary>
    /// A single file's <c>__metadata__</c>, or the index's <c>metadata</c> (a value that is not a JSON string is given as
    /// its JSON text, e.g. <c>total_size</c>).
    /// </summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>
    /// Opens <paramref name="path"/>: a <c>.safetensors</c> file, an index <c>.json</c> file, or a directory holding
    /// <c>model.safetensors</c> or <c>model.safetensors.index.json</c> (the single file first, as transformers looks).
    /// </summary>
    public static SafeTensorsCheckpoint Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string fullPath = System.IO.Path.GetFullPath(path);
        if (Directory.Exists(fullPath))
        {
            string single = System.IO.Path.Combine(fullPath, SafeTensorsWriter.SingleFileName);
            string index = System.IO.Path.Combine(fullPath, SafeTensorsWriter.IndexFileName);
            if (File.Exists(single))
                return OpenSingle(single);
            if (File.Exists(index))
                return OpenIndex(index);
            throw new FileNotFoundException(
                $"Directory '{fullPath}' holds neither {SafeTensorsWriter.SingleFileName} nor {SafeTensorsWriter.IndexFileName}.", single);
        }
        if (!File.Exists(fullPath))
            throw new FileNotFoundException($"No safetensors checkpoint at '{fullPath}'.", fullPath);
        return fullPath.EndsWith(".json", StringComparison.OrdinalIgnoreCase) ? OpenIndex(fullPath) : OpenSingle(fullPath);
    }

    public bool Contains(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return _shardOfTensor.ContainsKey(name);
    }

    /// <summary>The shard file that holds <paramref name="name"/>, or null.</summary>
    public string? ShardPathOf(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return _shardOfTensor.GetValueOrDefault(name);
    }

    /// <summary>The tensor's header entry; opens its shard if needed.</summary>
    public bool TryGetInfo(string name, [NotNullWhen(true)] out SafeTensorInfo? info)
    {
        if (TryLocate(name, out _, out info))
            return true;
        info = null;
        return false;
    }

    public SafeTensorInfo GetInfo(string name) => Locate(name).Info;

    /// <summary>As <see cref="SafeTensorsFile.ReadAsBf16(string)"/>, with FP8 block scales looked up across shards.</summary>
    public Bf16Tensor ReadAsBf16(string name)
    {
        var (file, info) = Locate(name);
        return file.ReadAsBf16(info, info.DType == SafeTensorsDType.F8E4M3 ? Scales(file, info) : null);
    }

    /// <summary>As <see cref="SafeTensorsFile.ReadAsFloat32(string)"/>, with FP8 block scales looked up across shards.</summary>
    public float[] ReadAsFloat32(string name)
    {
        var (file, info) = Locate(name);
        return file.ReadAsFloat32(info, info.DType == SafeTensorsDType.F8E4M3 ? Scales(file, info) : null);
    }

    public byte[] ReadBytes(string name)
    {
        var (file, info) = Locate(name);
        return file.ReadBytes(info.Name);
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed)
                return;
            _disposed = true;
            foreach (var file in _openShards.Values)
                file.Dispose();
            _openShards.Clear();
        }
    }

    private static SafeTensorsCheckpoint OpenSingle(string path)
    {
        var file = SafeTensorsFile.Open(path);
        var shardOf = file.TensorNames.ToDictionary(name => name, _ => file.Path, StringComparer.Ordinal);
        var checkpoint = new SafeTensorsCheckpoint(
            file.Path, isSharded: false, shardOf, file.TensorNames, Array.AsReadOnly(new[] { file.Path }), file.Metadata);
        checkpoint._openShards.Add(file.Path, file);
        return checkpoint;
    }

    private static SafeTensorsCheckpoint OpenIndex(string indexPath)
    {
        string directory = System.IO.Path.GetDirectoryName(indexPath)!;
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(File.ReadAllBytes(indexPath));
        }
        catch (JsonException e)
        {
            throw new SafeTensorsFormatException(indexPath, $"the index is not valid JSON: {e.Message}", e);
        }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new SafeTensorsFormatException(indexPath, "the index must be a JSON object with a \"weight_map\".");
            if (!root.TryGetProperty("weight_map", out var weightMap) || weightMap.ValueKind != JsonValueKind.Object)
                throw new SafeTensorsFormatException(indexPath, "the index has no \"weight_map\" object.");

            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            if (root.TryGetProperty("metadata", out var metadataElement) && metadataElement.ValueKind != JsonValueKind.Null)
            {
                if (metadataElement.ValueKind != JsonValueKind.Object)
                    throw new SafeTensorsFormatException(indexPath, "the index's \"metadata\" must be an object.");
                foreach (var entry in metadataElement.EnumerateObject())
                    metadata[entry.Name] = entry.Value.ValueKind == JsonValueKind.String ? entry.Value.GetString()! : entry.Value.GetRawText();
            }

            var shardOf = new Dictionary<string, string>(StringComparer.Ordinal);
            var names = new List<string>();
            var shardPaths = new List<string>();
            foreach (var entry in weightMap.EnumerateObject())
            {
                if (entry.Value.ValueKind != JsonValueKind.String)
                    throw new SafeTensorsFormatException(indexPath,
                        $"weight_map maps '{entry.Name}' to {entry.Value.GetRawText()}, not to a file name.");
                string shardPath = ShardPath(indexPath, directory, entry.Name, entry.Value.GetString()!);
                if (!shardOf.TryAdd(entry.Name, shardPath))
                    throw new SafeTensorsFormatException(indexPath, $"weight_map lists '{entry.Name}' twice.");
                names.Add(entry.Name);
                if (!shardPaths.Contains(shardPath, StringComparer.Ordinal))
                {
                    if (!File.Exists(shardPath))
                        throw new SafeTensorsFormatException(indexPath,
                            $"weight_map names shard '{System.IO.Path.GetFileName(shardPath)}' (for '{entry.Name}'), which does not exist.");
                    shardPaths.Add(shardPath);
                }
            }
            return new SafeTensorsCheckpoint(
                indexPath, isSharded: true, shardOf, names.AsReadOnly(), shardPaths.AsReadOnly(),
                new ReadOnlyDictionary<string, string>(metadata));
        }
    }

    private static string ShardPath(string indexPath, string directory, string tensor, string fileName)
    {
        // Shards live beside the index; a path that leads elsewhere is refused rather than followed.
        string shardPath = System.IO.Path.GetFullPath(System.IO.Path.Combine(directory, fileName));
        if (fileName.Length == 0 || System.IO.Path.IsPathRooted(fileName)
            || !string.Equals(System.IO.Path.GetDirectoryName(shardPath), directory, StringComparison.Ordinal))
            throw new SafeTensorsFormatException(indexPath,
                $"weight_map puts '{tensor}' in '{fileName}', which is not a file beside the index.");
        return shardPath;
    }

    private (SafeTensorsFile File, SafeTensorInfo Info) Locate(string name)
    {
        if (!TryLocate(name, out var file, out var info))
            throw new KeyNotFoundException($"Checkpoint '{Path}' has no tensor '{name}'.");
        return (file, info);
    }

    private bool TryLocate(string name, [NotNullWhen(true)] out SafeTensorsFile? file, [NotNullWhen(true)] out SafeTensorInfo? info)
    {
        ArgumentNullException.ThrowIfNull(name);
        file = null;
        info = null;
        if (!_shardOfTensor.TryGetValue(name, out var shardPath))
            return false;
        file = Shard(shardPath);
        if (!file.TryGetInfo(name, out info))
            throw new SafeTensorsFormatException(Path,
                $"the index puts '{name}' in '{System.IO.Path.GetFileName(shardPath)}', but that shard has no such tensor.");
        return true;
    }

    private SafeTensorsFile Shard(string shardPath)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!_openShards.TryGetValue(shardPath, out var file))
            {
                file = SafeTensorsFile.Open(shardPath);
                _openShards.Add(shardPath, file);
            }
            return file;
        }
    }

    private Fp8BlockScales Scales(SafeTensorsFile weightFile, SafeTensorInfo weight)
    {
        string scaleName = Fp8BlockScales.ScaleName(weight.Name);
        if (!TryLocate(scaleName, out var scaleFile, out var scale))
            throw new SafeTensorsFormatException(weightFile.Path,
                $"tensor '{weight.Name}' is F8_E4M3 but the checkpoint has no '{scaleName}' block-scale tensor to dequantise it with.");
        Fp8BlockScales.Validate(weight, weightFile.Path, scale, scaleFile.Path);
        return Fp8BlockScales.Create(weight, scaleFile.ReadAsFloat32(scale, null));
    }
}
