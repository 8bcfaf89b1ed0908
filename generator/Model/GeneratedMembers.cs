using System.Collections.Generic;

namespace MlaGen.Generator.Model;

/// <summary>
/// The members the emitters add to an [MlaConfig] class. A class of one of these names cannot hold them (CS0542), so
/// MLA015 reports it; a test checks this list against the generated code.
/// </summary>
internal static class GeneratedMembers
{
    public static readonly HashSet<string> Names = new(System.StringComparer.Ordinal)
    {
        "DModel", "Heads", "LatentRank", "RopeDim", "QLatentRank", "NopeHeadDim", "VHeadDim", "MaxPositions", "PageSize",
        "RopeStyle", "QHeadDim", "CacheRowValues", "CacheRowBytes", "PageValues", "PageBytes", "SoftmaxScale",
        "RopeAttentionFactor", "HasTensorCoreDecode", "HasTensorCorePrefill", "InverseFrequencies", "Spec", "LoadKernels", "CreateLayer", "MlaKernels",
    };
}
