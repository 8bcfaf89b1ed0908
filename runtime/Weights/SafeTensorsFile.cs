using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.Collections.ObjectModel;
using System.IO;
using System.IO.MemoryMappedFiles;
using System.Linq;
using System.Text.Json;
using System.Text.Unicode;
using System.Threading;
using Microsoft.Win32.SafeHandles;

namespace MlaGen.Weights;

/// <summary>
/// One <c>.safetensors</c> file, memory-mapped: the header is parsed and checked when the file is opened, tensor bytes are
/// read only when a tensor is asked for. Layout: 8-byte little-endian header length N, N bytes of UTF-8 JSON, then the
/// data section that every tensor's <c>data_offsets</c> index into (raw little-endian, row-major).
/// Reads may run in parallel; do not dispose while a read is in flight.
/// </summary>
public sealed unsafe class SafeTensorsFile : IDisposable
{
    /// <summary>The reference implementation refuses larger headers; so do we.</summary>
    public const long MaxHeaderBytes = 100_000_000;

    public const string MetadataKey = "__metadata__";

    // Elements per span handed to a converter, so a tensor of more than 2 GiB never needs a span that long.
    private const int ChunkElements = 1 << 20;

    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private readonly SafeMemoryMappedViewHandle _viewHandle;
    private readonly byte* _data;
    private readonly Dictionary<string, SafeTensorInfo> _tensors;
    private int _disposed;

    private SafeTensorsFile(
        string path, MemoryMappedFile map, MemoryMappedViewAccessor view, byte* data, long headerLength, long dataLength,
        Dictionary<string, SafeTensorInfo> tensors, IReadOnlyList<string> names, IReadOnlyDictionary<string, string> metadata)
    {
        Path = path;
        _map = map;
        _view = view;
        _viewHandle = view.SafeMemoryMappedViewHandle;
        _data = data;
        HeaderLength = headerLength;
        DataLength = dataLength;
        _tensors = tensors;
        TensorNames = names;
        Metadata = metadata;
    }

    ~SafeTensorsFile() => ReleaseMapping();

    /// <summary>Full path of the file.</summary>
    public string Path { get; }

    /// <summary>N, the header's length in bytes (padding included).</summary>
    public long HeaderLength { get; }

    /// <summary>Bytes after the header; every tensor lies inside.</summary>
    public long DataLength { get; }

    /// <summary>Tensor names in the order of their data.</summary>
    public IReadOnlyList<string> TensorNames { get; }

    /// <summary>The header's <c>__metadata__</c> (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Opens and validates a file; throws <see cref="SafeTensorsFormatException"/> naming the file and the problem.</summary>
    public static SafeTensorsFile Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string fullPath = System.IO.Path.GetFullPath(path);
        FileStream? stream = null;
        MemoryMappedFile? map = null;
        MemoryMappedViewAccessor? view = null;
        bool pointerAcquired = false;
        try
        {
            stream = new FileStream(fullPath, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete, bufferSize: 1);
            long fileLength = stream.Length;
            if (fileLength < 8)
                throw new SafeTensorsFormatException(fullPath,
                    $"the file is {fileLength} bytes long; a safetensors file starts with an 8-byte header length.");
            map = MemoryMappedFile.CreateFromFile(stream, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
            stream = null; // the map owns and closes it now
            view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* fileStart = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref fileStart);
            pointerAcquired = true;
            fileStart += view.PointerOffset;

            ulong declared = BinaryPrimitives.ReadUInt64LittleEndian(new ReadOnlySpan<byte>(fileStart, 8));
            if (declared > MaxHeaderBytes)
                throw new SafeTensorsFormatException(fullPath,
                    $"the header length {declared} exceeds the {MaxHeaderBytes}-byte limit (is this a safetensors file?).");
            if (declared > (ulong)(fileLength - 8))
                throw new SafeTensorsFormatException(fullPath,
                    $"the header length {declared} runs past the end of the file ({fileLength} bytes, so at most {fileLength - 8}).");
            int headerLength = (int)declared;
            long dataLength = fileLength - 8 - headerLength;
            var header = new ReadOnlySpan<byte>(fileStart + 8, headerLength);
            var (tensors, names, metadata) = ParseHeader(fullPath, header, dataLength);
            return new SafeTensorsFile(fullPath, map, view, fileStart + 8 + headerLength, headerLength, dataLength, tensors, names, metadata);
        }
        catch
        {
            if (pointerAcquired)
                view!.SafeMemoryMappedViewHandle.ReleasePointer();
            view?.Dispose();
            map?.Dispose();
            stream?.Dispose();
            throw;
        }
    }

    public bool Contains(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return _tensors.ContainsKey(name);
    }

    public bool TryGetInfo(string name, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out SafeTensorInfo? info)
    {
        ArgumentNullException.ThrowIfNull(name);
        return _tensors.TryGetValue(name, out info);
    }

    /// <summary>The header entry of <paramref name="name"/>; <see cref="KeyNotFoundException"/> naming file and tensor when absent.</summary>
    public SafeTensorInfo GetInfo(string name)
    {
        if (!TryGetInfo(name, out var info))
            throw new KeyNotFoundException($"'{Path}' has no tensor '{name}'.");
        return info;
    }

    /// <summary>The tensor's bytes exactly as stored (little-endian), whatever its dtype.</summary>
    public byte[] ReadBytes(string name)
    {
        var info = GetInfo(name);
        ThrowIfDisposed();
        if (info.ByteLength > Array.MaxLength)
            throw new NotSupportedException($"'{Path}': tensor '{name}' is {info.ByteLength} bytes, more than an array holds.");
        var bytes = new byte[info.ByteLength];
        new ReadOnlySpan<byte>(_data + info.DataBegin, bytes.Length).CopyTo(bytes);
        return bytes;
    }

    /// <summary>
    /// The tensor as BF16: BF16 copied, F16 and F32 rounded to nearest even, F8_E4M3 dequantised with its
    /// <c>{name}_scale_inv</c> block scales from this file (then rounded). Other dtypes throw <see cref="NotSupportedException"/>.
    /// </summary>
    public Bf16Tensor ReadAsBf16(string name)
    {
        var info = GetInfo(name);
        return ReadAsBf16(info, info.DType == SafeTensorsDType.F8E4M3 ? ScalesFromThisFile(info) : null);
    }

    /// <summary>The tensor as float: BF16, F16, F32 exactly; F8_E4M3 dequantised with its block scales from this file.</summary>
    public float[] ReadAsFloat32(string name)
    {
        var info = GetInfo(name);
        return ReadAsFloat32(info, info.DType == SafeTensorsDType.F8E4M3 ? ScalesFromThisFile(info) : null);
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        ReleaseMapping();
        _view.Dispose();
        _map.Dispose();
        GC.SuppressFinalize(this);
    }

    internal Bf16Tensor ReadAsBf16(SafeTensorInfo info, Fp8BlockScales? scales)
    {
        ushort[] data = info.DType switch
        {
            SafeTensorsDType.BF16 => Convert<ushort>(info, 2, TensorConversions.Bf16FromBf16),
            SafeTensorsDType.F16 => Convert<ushort>(info, 2, TensorConversions.Bf16FromF16),
            SafeTensorsDType.F32 => Convert<ushort>(info, 4, TensorConversions.Bf16FromF32),
            SafeTensorsDType.F8E4M3 => Convert<ushort>(info, 1, (scales ?? throw new ArgumentNullException(nameof(scales))).ToBf16),
            _ => throw Unsupported(info, "BF16"),
        };
        return new Bf16Tensor(info.Name, info.Shape.ToArray(), data);
    }

    internal float[] ReadAsFloat32(SafeTensorInfo info, Fp8BlockScales? scales) => info.DType switch
    {
        SafeTensorsDType.F32 => Convert<float>(info, 4, TensorConversions.F32FromF32),
        SafeTensorsDType.BF16 => Convert<float>(info, 2, TensorConversions.F32FromBf16),
        SafeTensorsDType.F16 => Convert<float>(info, 2, TensorConversions.F32FromF16),
        SafeTensorsDType.F8E4M3 => Convert<float>(info, 1, (scales ?? throw new ArgumentNullException(nameof(scales))).ToF32),
        _ => throw Unsupported(info, "F32"),
    };

    private Fp8BlockScales ScalesFromThisFile(SafeTensorInfo weight)
    {
        string scaleName = Fp8BlockScales.ScaleName(weight.Name);
        if (!_tensors.TryGetValue(scaleName, out var scale))
            throw new SafeTensorsFormatException(Path,
                $"tensor '{weight.Name}' is F8_E4M3 but the file has no '{scaleName}' block-scale tensor to dequantise it with.");
        Fp8BlockScales.Validate(weight, Path, scale, Path);
        return Fp8BlockScales.Create(weight, ReadAsFloat32(scale, null));
    }

    private T[] Convert<T>(SafeTensorInfo info, int bytesPerElement, ChunkConverter<T> converter)
    {
        ThrowIfDisposed();
        long count = info.ElementCount;
        if (count > Array.MaxLength)
            throw new NotSupportedException($"'{Path}': tensor '{info.Name}' has {count} elements, more than an array holds.");
        var result = new T[count];
        byte* start = _data + info.DataBegin;
        for (long first = 0; first < count; first += ChunkElements)
        {
            int n = (int)Math.Min(ChunkElements, count - first);
            converter(new ReadOnlySpan<byte>(start + first * bytesPerElement, n * bytesPerElement), result.AsSpan((int)first, n), first);
        }
        return result;
    }

    private NotSupportedException Unsupported(SafeTensorInfo info, string target) =>
        new($"'{Path}': tensor '{info.Name}' is {info.DType.Name()}, which cannot be read as {target} "
            + "(BF16, F16, F32 and block-scaled F8_E4M3 can).");

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);

    private void ReleaseMapping()
    {
        // AcquirePointer holds a reference on the view; without this release the mapping would outlive Dispose.
        if (!_viewHandle.IsClosed)
            _viewHandle.ReleasePointer();
    }

    private static (Dictionary<string, SafeTensorInfo> Tensors, IReadOnlyList<string> Names, IReadOnlyDictionary<string, string> Metadata)
        ParseHeader(string path, ReadOnlySpan<byte> header, long dataLength)
    {
        if (!Utf8.IsValid(header))
            throw new SafeTensorsFormatException(path, "the header is not valid UTF-8.");
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(header.ToArray());
        }
        catch (JsonException e)
        {
            throw new SafeTensorsFormatException(path, $"the header is not valid JSON: {e.Message}", e);
        }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new SafeTensorsFormatException(path, $"the header must be a JSON object, but it is {Describe(root.ValueKind)}.");
            var tensors = new Dictionary<string, SafeTensorInfo>(StringComparer.Ordinal);
            IReadOnlyDictionary<string, string>? metadata = null;
            foreach (var property in root.EnumerateObject())
            {
                if (property.Name == MetadataKey)
                {
                    if (metadata is not null)
                        throw new SafeTensorsFormatException(path, $"'{MetadataKey}' appears twice in the header.");
                    metadata = ParseMetadata(path, property.Value);
                    continue;
                }
                var info = ParseTensor(path, property.Name, property.Value, dataLength);
                if (!tensors.TryAdd(info.Name, info))
                    throw new SafeTensorsFormatException(path, $"tensor '{info.Name}' appears twice in the header.");
            }
            var ordered = CheckLayout(path, tensors.Values, dataLength);
            return (tensors, Array.AsReadOnly(ordered), metadata ?? new ReadOnlyDictionary<string, string>(new Dictionary<string, string>()));
        }
    }

    private static IReadOnlyDictionary<string, string> ParseMetadata(string path, JsonElement value)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw new SafeTensorsFormatException(path,
                $"'{MetadataKey}' must be an object of strings, but it is {Describe(value.ValueKind)}.");
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var entry in value.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.String)
                throw new SafeTensorsFormatException(path,
                    $"'{MetadataKey}' must map strings to strings, but '{entry.Name}' holds {Describe(entry.Value.ValueKind)}.");
            if (!metadata.TryAdd(entry.Name, entry.Value.GetString()!))
                throw new SafeTensorsFormatException(path, $"'{MetadataKey}' has the key '{entry.Name}' twice.");
        }
        return new ReadOnlyDictionary<string, string>(metadata);
    }

    private static SafeTensorInfo ParseTensor(string path, string name, JsonElement entry, long dataLength)
    {
        if (entry.ValueKind != JsonValueKind.Object)
            throw new SafeTensorsFormatException(path,
                $"tensor '{name}' must be an object with dtype, shape and data_offsets, but it is {Describe(entry.ValueKind)}.");

        var dtypeElement = Member(path, name, entry, "dtype", JsonValueKind.String);
        string dtypeName = dtypeElement.GetString()!;
        if (!SafeTensorsDTypes.TryParse(dtypeName, out var dtype))
            throw new SafeTensorsFormatException(path,
                $"tensor '{name}' has unknown dtype \"{dtypeName}\" (known: {string.Join(", ", SafeTensorsDTypes.Names)}).");

        var shapeElement = Member(path, name, entry, "shape", JsonValueKind.Array);
        var shape = new int[shapeElement.GetArrayLength()];
        long elementCount = 1;
        int axis = 0;
        foreach (var dimension in shapeElement.EnumerateArray())
        {
            if (dimension.ValueKind != JsonValueKind.Number || !dimension.TryGetInt64(out long extent) || extent < 0)
                throw new SafeTensorsFormatException(path,
                    $"tensor '{name}': shape[{axis}] is {dimension.GetRawText()}, not a non-negative integer.");
            if (extent > int.MaxValue)
                throw new SafeTensorsFormatException(path, $"tensor '{name}': shape[{axis}] = {extent} is larger than supported.");
            shape[axis++] = (int)extent;
            try
            {
                elementCount = checked(elementCount * extent);
            }
            catch (OverflowException e)
            {
                throw new SafeTensorsFormatException(path, $"tensor '{name}': shape [{string.Join(", ", shape)}] overflows.", e);
            }
        }

        var offsetsElement = Member(path, name, entry, "data_offsets", JsonValueKind.Array);
        if (offsetsElement.GetArrayLength() != 2)
            throw new SafeTensorsFormatException(path,
                $"tensor '{name}': data_offsets must be [begin, end], but it is {offsetsElement.GetRawText()}.");
        long begin = Offset(path, name, offsetsElement[0]);
        long end = Offset(path, name, offsetsElement[1]);
        if (begin > end)
            throw new SafeTensorsFormatException(path, $"tensor '{name}': data_offsets [{begin}, {end}] begin after they end.");
        if (end > dataLength)
            throw new SafeTensorsFormatException(path,
                $"tensor '{name}': data_offsets [{begin}, {end}] are out of range; the data section has {dataLength} bytes.");

        long bits;
        try
        {
            bits = checked(elementCount * dtype.BitSize());
        }
        catch (OverflowException e)
        {
            throw new SafeTensorsFormatException(path, $"tensor '{name}': shape [{string.Join(", ", shape)}] overflows.", e);
        }
        if (bits % 8 != 0)
            throw new SafeTensorsFormatException(path,
                $"tensor '{name}': {elementCount} elements of {dtype.Name()} are not a whole number of bytes.");
        if (bits / 8 != end - begin)
            throw new SafeTensorsFormatException(path,
                $"tensor '{name}': {dtype.Name()} [{string.Join(", ", shape)}] needs {bits / 8} bytes, "
                + $"but data_offsets [{begin}, {end}] hold {end - begin}.");
        return new SafeTensorInfo(name, dtype, shape, elementCount, begin, end);
    }

    private static JsonElement Member(string path, string tensor, JsonElement entry, string key, JsonValueKind kind)
    {
        if (!entry.TryGetProperty(key, out var value))
            throw new SafeTensorsFormatException(path, $"tensor '{tensor}' has no \"{key}\".");
        if (value.ValueKind != kind)
            throw new SafeTensorsFormatException(path,
                $"tensor '{tensor}': \"{key}\" must be {Describe(kind)}, but it is {Describe(value.ValueKind)}.");
        return value;
    }

    private static long Offset(string path, string tensor, JsonElement element)
    {
        if (element.ValueKind != JsonValueKind.Number || !element.TryGetInt64(out long offset) || offset < 0)
            throw new SafeTensorsFormatException(path,
                $"tensor '{tensor}': data offset {element.GetRawText()} is not a non-negative integer (or is too large).");
        return offset;
    }

    /// <summary>
    /// As the reference implementation requires: tensors tile the data section exactly, with no overlap, no hole and
    /// nothing after the last one.
    /// </summary>
    private static string[] CheckLayout(string path, IEnumerable<SafeTensorInfo> tensors, long dataLength)
    {
        var ordered = tensors
            .OrderBy(t => t.DataBegin)
            .ThenBy(t => t.DataEnd)
            .ThenBy(t => t.Name, StringComparer.Ordinal)
            .ToArray();
        long covered = 0;
        SafeTensorInfo? previous = null;
        foreach (var tensor in ordered)
        {
            if (tensor.DataBegin < covered)
                throw new SafeTensorsFormatException(path,
                    $"tensor '{tensor.Name}' bytes [{tensor.DataBegin}, {tensor.DataEnd}) overlap tensor '{previous!.Name}' "
                    + $"bytes [{previous.DataBegin}, {previous.DataEnd}).");
            if (tensor.DataBegin > covered)
                throw new SafeTensorsFormatException(path,
                    $"data bytes [{covered}, {tensor.DataBegin}) before tensor '{tensor.Name}' belong to no tensor.");
            covered = tensor.DataEnd;
            previous = tensor;
        }
        if (covered != dataLength)
            throw new SafeTensorsFormatException(path,
                $"the data section has {dataLength} bytes but the tensors cover only {covered}; bytes [{covered}, {dataLength}) belong to no tensor.");
        return ordered.Select(t => t.Name).ToArray();
    }

    private static string Describe(JsonValueKind kind) => kind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Null => "null",
        _ => kind.ToString(),
    };
}
