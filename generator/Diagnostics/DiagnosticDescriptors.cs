using Microsoft.CodeAnalysis;

namespace MlaGen.Generator.Diagnostics;

/// <summary>Every diagnostic MlaGen reports. IDs are stable; docs/diagnostics.md (shipped in the package) explains each with an example and the fix.</summary>
internal static class DiagnosticDescriptors
{
    private const string Category = "MlaGen";

    public static readonly DiagnosticDescriptor ClassNotPartial = Error(
        "MLA001", "[MlaConfig] class must be partial",
        "Class '{0}' has [MlaConfig] but is not partial; declare it 'partial' so MlaGen can add the generated members");

    public static readonly DiagnosticDescriptor ContainingTypeNotPartial = Error(
        "MLA002", "Types containing an [MlaConfig] class must be partial",
        "Type '{0}' contains [MlaConfig] class '{1}' but is not partial; declare '{0}' partial too");

    public static readonly DiagnosticDescriptor GenericClass = Error(
        "MLA003", "[MlaConfig] class cannot be generic",
        "'{0}' is generic (or nested in a generic type); kernels are specialised to one shape, so the class must not have type parameters");

    public static readonly DiagnosticDescriptor NotAClass = Error(
        "MLA004", "[MlaConfig] applies to classes only",
        "'{0}' is {1}; [MlaConfig] must be placed on a partial class");

    public static readonly DiagnosticDescriptor DimensionNotPositive = Error(
        "MLA005", "Dimension must be positive",
        "{0} is {1}; it must be {2}");

    public static readonly DiagnosticDescriptor RopeDimOdd = Error(
        "MLA006", "ropeDim must be even",
        "ropeDim is {0}; RoPE rotates pairs of values, so it must be even");

    public static readonly DiagnosticDescriptor DimensionTooLarge = Error(
        "MLA007", "Dimension beyond what the kernels support",
        "{0} is {1}; the kernels support at most {2} ({3})");

    public static readonly DiagnosticDescriptor InvalidPageSize = Error(
        "MLA008", "PageSize must be a power of two from 16 to 4096",
        "PageSize is {0}; it must be a power of two from 16 to 4096 (pages are addressed by shift and mask, and tiles of 16 tokens)");

    public static readonly DiagnosticDescriptor InconsistentYarn = Error(
        "MLA009", "YaRN settings are inconsistent",
        "{0} is {1}; {2}");

    public static readonly DiagnosticDescriptor InvalidEpsilon = Error(
        "MLA010", "RmsNormEpsilon must be finite and positive",
        "RmsNormEpsilon is {0}; it must be a finite number greater than 0 (DeepSeek uses 1e-6)");

    public static readonly DiagnosticDescriptor InvalidRopeTheta = Error(
        "MLA011", "RopeTheta must be finite and greater than 1",
        "RopeTheta is {0}; it must be a finite number greater than 1 (DeepSeek uses 10000)");

    public static readonly DiagnosticDescriptor InvalidMaxPositions = Error(
        "MLA012", "MaxPositions out of range",
        "MaxPositions is {0}; it must be 0 (derived from YaRN) or from 1 to 16777216 (positions enter RoPE as exact float integers)");

    public static readonly DiagnosticDescriptor UnknownRopeStyle = Error(
        "MLA013", "Unknown RopeStyle",
        "RopeStyle is {0}; it must be RopeStyle.Interleaved or RopeStyle.RotateHalf");

    public static readonly DiagnosticDescriptor NoTensorCorePath = new(
        "MLA014", "Shape not covered by the tensor-core decode kernel",
        "Shape of '{0}' runs on the general kernel only, not the tensor-core decode kernel: {1}",
        Category, DiagnosticSeverity.Warning, isEnabledByDefault: true);

    public static readonly DiagnosticDescriptor NameCollidesWithGeneratedMember = Error(
        "MLA015", "Class name collides with a generated member",
        "Class '{0}' would get a generated member of its own name ({0}); C# forbids a member named like its type (CS0542), so rename the class, e.g. '{0}Attention'");

    private static DiagnosticDescriptor Error(string id, string title, string message) =>
        new(id, title, message, Category, DiagnosticSeverity.Error, isEnabledByDefault: true);
}
