using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Runtime.InteropServices;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace MlaGen.Weights;

/// <summary>
/// Collects tensors and writes them as one safetensors file the way the reference implementation does: tensors sorted by
/// descending dtype (so each starts aligned to its element size), then by name; the JSON header padded with spaces to a
/// multiple of 8 bytes. Data given to the Add methods is copied at once.
/// </summary>
public sealed class SafeTensorsWriter
{
    public const string IndexFileName = "model.safetensors.index.json";
    public const string SingleFileName = "model.safetensors";

    private static readonly JsonWriterOptions HeaderJson = new()
    {
        // Names are written as they are (e.g. '+'), not \u-escaped; still valid JSON.
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    private readonly List<Entry> _tensors = new();
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);
    private readonly SortedDictionary<string, string> _metadata = new(StringComparer.Ordinal);

    /// <summary>Names added so far, in the order they were added.</summary>
    public IReadOnlyList<string> TensorNames => _tensors.Select(t => t.Name).ToArray();

    /// <summary>The <c>__metadata__</c> entries to write (written sorted by key).</summary>
    public IReadOnlyDictionary<string, string> Metadata => _metadata;

    /// <summary>Bytes of tensor data (what an index's <c>total_size</c> counts).</summary>
    public long DataLength { get; private set; }

    public void SetMetadata(string key, string value)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(value);
        _metadata[key] = value;
    }

    /// <summary>Adds a tensor of any dtype from its stored bytes (little-endian, row-major).</summary>
    public void Add(string name, SafeTensorsDType dtype, IReadOnlyList<int> shape, ReadOnlySpan<byte> littleEndianData)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(shape);
        if (name == SafeTensorsFile.MetadataKey)
            throw new ArgumentException($"'{SafeTensorsFile.MetadataKey}' is reserved for metadata.", nameof(name));
        long elements = 1;
        foreach (int extent in shape)
        {
            if (extent < 0)
                throw new ArgumentException($"Tensor '{name}': dimension {extent} is negative.", nameof(shape));
            elements = checked(elements * extent);
        }
        long bits = checked(elements * dtype.BitSize());
        if (bits % 8 != 0 || bits / 8 != littleEndianData.Length)
            throw new ArgumentException(
                $"Tensor '{name}': {dtype.Name()} [{string.Join(", ", shape)}] needs {bits / 8.0} bytes but {littleEndianData.Length} were given.",
                nameof(littleEndianData));
        if (!_names.Add(name))
            throw new ArgumentException($"Tensor '{name}' is added twice.", nameof(name));
        _tensors.Add(new Entry(name, dtype, shape.ToArray(), littleEndianData.ToArray()));
        DataLength += littleEndianData.Length;
    }

    public void AddBf16(string name, IReadOnlyList<int> shape, ReadOnlySpan<ushort> bits) =>
        Add(name, SafeTensorsDType.BF16, shape, LittleEndianBytes(bits));

    public void AddF16(string name, IReadOnlyList<int> shape, ReadOnlySpan<Half> values) =>
        Add(name, SafeTensorsDType.F16, shape, LittleEndianBytes(MemoryMarshal.Cast<Half, ushort>(values)));

    public void AddF32(string name, IReadOnlyList<int> shape, ReadOnlySpan<float> values)
    {
        var bytes = new byte[checked(values.Length * 4)];
        for (int i = 0; i < values.Length; i++)
            BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(4 * i), values[i]);
        Add(name, SafeTensorsDType.F32, shape, bytes);
    }

    /// <summary>Adds FP8 e4m3fn bytes as they are; see <see cref="AddF8E4M3WithBlockScales"/> for a weight readers can dequantise.</summary>
    public void AddF8E4M3(string name, IReadOnlyList<int> shape, ReadOnlySpan<byte> bits) =>
        Add(name, SafeTensorsDType.F8E4M3, shape, bits);

    /// <summary>
    /// Adds a DeepSeek-V3 style FP8 weight [R, C] and its F32 <c>{name}_scale_inv</c> [ceil(R/128), ceil(C/128)]:
    /// value = fp8(bits[r, c]) · scaleInv[r / 128, c / 128].
    /// </summary>
    public void AddF8E4M3WithBlockScales(string name, IReadOnlyList<int> shape, ReadOnlySpan<byte> bits, ReadOnlySpan<float> scaleInv)
    {
        ArgumentNullException.ThrowIfNull(shape);
        if (shape.Count != 2)
            throw new ArgumentException($"Tensor '{name}': block-scaled FP8 weights are 2-D, not [{string.Join(", ", shape)}].", nameof(shape));
        int[] scaleShape = [CeilDiv(shape[0], Fp8BlockScales.BlockSize), CeilDiv(shape[1], Fp8BlockScales.BlockSize)];
        if (scaleInv.Length != scaleShape[0] * scaleShape[1])
            throw new ArgumentException(
                $"Tensor '{name}' [{string.Join(", ", shape)}] needs {scaleShape[0]}x{scaleShape[1]} block scales but {scaleInv.Length} were given.",
                nameof(scaleInv));
        string scaleName = Fp8BlockScales.ScaleName(name);
        if (_names.Contains(scaleName))
            throw new ArgumentException($"Tensor '{scaleName}' is added twice.", nameof(name));
        AddF8E4M3(name, shape, bits);
        AddF32(scaleName, scaleShape, scaleInv);
    }

    /// <summary>The whole file: 8-byte header length, padded JSON header, tensor data.</summary>
    public void WriteTo(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        var layout = Layout();
        byte[] header = Header(layout);
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
        stream.Write(length);
        stream.Write(header);
        foreach (var tensor in layout)
            stream.Write(tensor.Data);
    }

    public byte[] ToArray()
    {
        using var memory = new MemoryStream();
        WriteTo(memory);
        return memory.ToArray();
    }

    /// <summary>Writes the file through a temporary sibling, so a failure leaves no partial file at <paramref name="path"/>.</summary>
    public void Save(string path) => AtomicFile.Write(path, WriteTo);

    /// <summary>
    /// Writes a sharded checkpoint as Hugging Face does: <c>model-00001-of-0000N.safetensors</c>, ... and
    /// <c>model.safetensors.index.json</c> (<c>{"metadata": {"total_size": ...}, "weight_map": {...}}</c>), the index last.
    /// Returns the shard file names in order.
    /// </summary>
    public static IReadOnlyList<string> SaveSharded(string directory, IReadOnlyList<SafeTensorsWriter> shards)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        ArgumentNullException.ThrowIfNull(shards);
        if (shards.Count == 0)
            throw new ArgumentException("A sharded checkpoint needs at least one shard.", nameof(shards));
        var fileNames = new string[shards.Count];
        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        long totalSize = 0;
        for (int i = 0; i < shards.Count; i++)
        {
            fileNames[i] = $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors";
            foreach (var entry in shards[i]._tensors)
            {
                if (!weightMap.TryAdd(entry.Name, fileNames[i]))
                    throw new ArgumentException(
                        $"Tensor '{entry.Name}' is in both {weightMap[entry.Name]} and {fileNames[i]}.", nameof(shards));
            }
            totalSize += shards[i].DataLength;
        }
        for (int i = 0; i < shards.Count; i++)
            shards[i].Save(Path.Combine(directory, fileNames[i]));
        AtomicFile.Write(Path.Combine(directory, IndexFileName), stream =>
        {
            using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true, Encoder = HeaderJson.Encoder });
            json.WriteStartObject();
            json.WriteStartObject("metadata");
            json.WriteNumber("total_size", totalSize);
            json.WriteEndObject();
            json.WriteStartObject("weight_map");
            foreach (var (name, file) in weightMap)
                json.WriteString(name, file);
            json.WriteEndObject();
            json.WriteEndObject();
        });
        return fileNames;
    }

    private List<Entry> Layout()
    {
        var layout = new List<Entry>(_tensors);
        layout.Sort((a, b) =>
        {
            int byDType = b.DType.CompareTo(a.DType);
            return byDType != 0 ? byDType : string.CompareOrdinal(a.Name, b.Name);
        });
        return layout;
    }

    private byte[] Header(List<Entry> layout)
    {
        using var memory = new MemoryStream();
        using (var json = new Utf8JsonWriter(memory, HeaderJson))
        {
            json.WriteStartObject();
            if (_metadata.Count > 0)
            {
                json.WriteStartObject(SafeTensorsFile.MetadataKey);
                foreach (var (key, value) in _metadata)
                    json.WriteString(key, value);
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (var tensor in layout)
            {
                json.WriteStartObject(tensor.Name);
                json.WriteString("dtype", tensor.DType.Name());
                json.WriteStartArray("shape");
                foreach (int extent in tensor.Shape)
                    json.WriteNumberValue(extent);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset + tensor.Data.Length);
                json.WriteEndArray();
                json.WriteEndObject();
                offset += tensor.Data.Length;
            }
            json.WriteEndObject();
        }
        int padding = (int)((8 - memory.Length % 8) % 8);
        for (int i = 0; i < padding; i++)
            memory.WriteByte((byte)' ');
        return memory.ToArray();
    }

    private static byte[] LittleEndianBytes(ReadOnlySpan<ushort> values)
    {
        var bytes = new byte[checked(values.Length * 2)];
        for (int i = 0; i < values.Length; i++)
            BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(2 * i), values[i]);
        return bytes;
    }

    private static int CeilDiv(int extent, int block) => (int)(((long)extent + block - 1) / block);

    private sealed record Entry(string Name, SafeTensorsDType DType, int[] Shape, byte[] Data);
}
