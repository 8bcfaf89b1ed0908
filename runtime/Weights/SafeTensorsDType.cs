using System;
using System.Collections.Generic;

namespace MlaGen.Weights;

/// <summary>
/// The element types of the safetensors format, spelled in headers as the comment on each says; declared in the
/// reference implementation's order, which is also its layout rank (its writer sorts tensors by descending dtype).
/// </summary>
public enum SafeTensorsDType
{
    /// <summary>"BOOL"</summary>
    Bool,
    /// <summary>"F4": 4-bit float (MXF4), two per byte.</summary>
    F4,
    /// <summary>"F6_E2M3": 6-bit float (MXF6), packed.</summary>
    F6E2M3,
    /// <summary>"F6_E3M2": 6-bit float (MXF6), packed.</summary>
    F6E3M2,
    /// <summary>"U8"</summary>
    U8,
    /// <summary>"I8"</summary>
    I8,
    /// <summary>"F8_E5M2"</summary>
    F8E5M2,
    /// <summary>"F8_E4M3": OCP e4m3fn: bias 7, no infinities, S.1111.111 is NaN, max 448.</summary>
    F8E4M3,
    /// <summary>"F8_E8M0": exponent-only scale type.</summary>
    F8E8M0,
    /// <summary>"F8_E4M3FNUZ": AMD e4m3 variant (bias 8, one NaN, no -0).</summary>
    F8E4M3Fnuz,
    /// <summary>"F8_E5M2FNUZ": AMD e5m2 variant.</summary>
    F8E5M2Fnuz,
    /// <summary>"I16"</summary>
    I16,
    /// <summary>"U16"</summary>
    U16,
    /// <summary>"F16": IEEE binary16.</summary>
    F16,
    /// <summary>"BF16": bfloat16.</summary>
    BF16,
    /// <summary>"I32"</summary>
    I32,
    /// <summary>"U32"</summary>
    U32,
    /// <summary>"F32": IEEE binary32.</summary>
    F32,
    /// <summary>"C64": complex of two F32.</summary>
    C64,
    /// <summary>"F64"</summary>
    F64,
    /// <summary>"I64"</summary>
    I64,
    /// <summary>"U64"</summary>
    U64,
}

/// <summary>Header spellings and sizes of <see cref="SafeTensorsDType"/>.</summary>
public static class SafeTensorsDTypes
{
    private static readonly (SafeTensorsDType DType, string Name, int Bits)[] All =
    [
        (SafeTensorsDType.Bool, "BOOL", 8),
        (SafeTensorsDType.F4, "F4", 4),
        (SafeTensorsDType.F6E2M3, "F6_E2M3", 6),
        (SafeTensorsDType.F6E3M2, "F6_E3M2", 6),
        (SafeTensorsDType.U8, "U8", 8),
        (SafeTensorsDType.I8, "I8", 8),
        (SafeTensorsDType.F8E5M2, "F8_E5M2", 8),
        (SafeTensorsDType.F8E4M3, "F8_E4M3", 8),
        (SafeTensorsDType.F8E8M0, "F8_E8M0", 8),
        (SafeTensorsDType.F8E4M3Fnuz, "F8_E4M3FNUZ", 8),
        (SafeTensorsDType.F8E5M2Fnuz, "F8_E5M2FNUZ", 8),
        (SafeTensorsDType.I16, "I16", 16),
        (SafeTensorsDType.U16, "U16", 16),
        (SafeTensorsDType.F16, "F16", 16),
        (SafeTensorsDType.BF16, "BF16", 16),
        (SafeTensorsDType.I32, "I32", 32),
        (SafeTensorsDType.U32, "U32", 32),
        (SafeTensorsDType.F32, "F32", 32),
        (SafeTensorsDType.C64, "C64", 64),
        (SafeTensorsDType.F64, "F64", 64),
        (SafeTensorsDType.I64, "I64", 64),
        (SafeTensorsDType.U64, "U64", 64),
    ];

    private static readonly Dictionary<string, SafeTensorsDType> ByName = BuildByName();

    /// <summary>The spelling in a header, e.g. "F8_E4M3".</summary>
    public static string Name(this SafeTensorsDType dtype) => Entry(dtype).Name;

    /// <summary>Bits per element; the sub-byte types (F4, F6_*) are packed.</summary>
    public static int BitSize(this SafeTensorsDType dtype) => Entry(dtype).Bits;

    /// <summary>Parses a header spelling (case-sensitive, as the format is).</summary>
    public static bool TryParse(string name, out SafeTensorsDType dtype) => ByName.TryGetValue(name, out dtype);

    /// <summary>Every spelling, for messages that list what is allowed.</summary>
    public static IEnumerable<string> Names
    {
        get
        {
            foreach (var entry in All)
                yield return entry.Name;
        }
    }

    private static (SafeTensorsDType DType, string Name, int Bits) Entry(SafeTensorsDType dtype)
    {
        int index = (int)dtype;
        if ((uint)index >= (uint)All.Length)
            throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "Not a safetensors dtype.");
        return All[index];
    }

    private static Dictionary<string, SafeTensorsDType> BuildByName()
    {
        var byName = new Dictionary<string, SafeTensorsDType>(StringComparer.Ordinal);
        for (int i = 0; i < All.Length; i++)
        {
            // The table is indexed by enum value; this keeps the two in step.
            if ((int)All[i].DType != i)
                throw new InvalidOperationException($"dtype table entry {i} is {All[i].DType}.");
            byName.Add(All[i].Name, All[i].DType);
        }
        return byName;
    }
}
