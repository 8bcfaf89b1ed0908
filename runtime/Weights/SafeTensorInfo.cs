using System;
using System.Collections.Generic;

namespace MlaGen.Weights;

/// <summary>One tensor's header entry: dtype, shape and where its bytes lie in the data section.</summary>
public sealed class SafeTensorInfo
{
    internal SafeTensorInfo(string name, SafeTensorsDType dtype, int[] shape, long elementCount, long dataBegin, long dataEnd)
    {
        Name = name;
        DType = dtype;
        Shape = Array.AsReadOnly(shape);
        ElementCount = elementCount;
        DataBegin = dataBegin;
        DataEnd = dataEnd;
    }

    public string Name { get; }
    public SafeTensorsDType DType { get; }
    public IReadOnlyList<int> Shape { get; }
    public long ElementCount { get; }

    /// <summary>First byte, relative to the byte right after the header (the header's data_offsets[0]).</summary>
    public long DataBegin { get; }

    /// <summary>One past the last byte, relative to the data section (data_offsets[1]).</summary>
    public long DataEnd { get; }

    public long ByteLength => DataEnd - DataBegin;

    public string ShapeText => "[" + string.Join(", ", Shape) + "]";

    public override string ToString() => $"{Name}: {DType.Name()} {ShapeText} @ [{DataBegin}, {DataEnd})";
}
