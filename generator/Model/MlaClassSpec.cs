using MlaGen.Generator.Helpers;

namespace MlaGen.Generator.Model;

/// <summary>Everything the emitters need about one [MlaConfig] class: plain values only, so it caches by value.</summary>
internal sealed record MlaClassSpec(
    string Namespace,
    string ClassName,
    string TypeKeyword,
    EquatableArray<ContainingTypeSpec> ContainingTypes,
    MlaShapeSpec Shape,
    DerivedLayout Layout)
{
    /// <summary>Dotted name without namespace for nested classes: Outer.Inner.</summary>
    public string NestedName
    {
        get
        {
            string name = ClassName;
            for (int i = ContainingTypes.Count - 1; i >= 0; i--)
                name = ContainingTypes[i].Name + "." + name;
            return name;
        }
    }

    public string FullName => Namespace.Length == 0 ? NestedName : Namespace + "." + NestedName;
}

/// <summary>A type that contains the [MlaConfig] class, outermost first.</summary>
internal sealed record ContainingTypeSpec(string Keyword, string Name);

/// <summary>The attribute's values after defaults and derivations (MaxPositions resolved).</summary>
internal sealed record MlaShapeSpec(
    int DModel,
    int Heads,
    int LatentRank,
    int RopeDim,
    int QLatentRank,
    int NopeHeadDim,
    int VHeadDim,
    double RopeTheta,
    int RopeStyle,
    double YarnFactor,
    int YarnOriginalMaxPositions,
    double YarnBetaFast,
    double YarnBetaSlow,
    double YarnMscale,
    double YarnMscaleAllDim,
    int MaxPositions,
    int PageSize,
    double RmsNormEpsilon)
{
    public bool HasQLatent => QLatentRank > 0;
    public int QHeadDim => NopeHeadDim + RopeDim;
    public int CacheRowValues => LatentRank + RopeDim;
    public bool YarnEnabled => YarnFactor > 1;
    public bool IsRotateHalf => RopeStyle == 1;
}

/// <summary>Values derived from the shape at build time: softmax scale, RoPE frequencies, which kernels apply.</summary>
internal sealed record DerivedLayout(
    float SoftmaxScale,
    float RopeAttentionFactor,
    EquatableArray<double> InverseFrequencies,
    bool TensorCoreDecode,
    bool TensorCorePrefill);
