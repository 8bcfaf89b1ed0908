using System;
using System.Collections.Generic;

namespace MlaGen;

/// <summary>
/// The shape of one MLA layer and the layout derived from it, as the generator computed it at build time.
/// Every generated class exposes one as <c>Spec</c>; the runtime (cache, weights, layer) is driven by it.
/// </summary>
public sealed class MlaSpec
{
    public MlaSpec(
        string name, int dModel, int heads, int latentRank, int ropeDim, int qLatentRank, int nopeHeadDim, int vHeadDim,
        RopeStyle ropeStyle, double ropeTheta, double yarnFactor, int yarnOriginalMaxPositions, double yarnBetaFast,
        double yarnBetaSlow, double yarnMscale, double yarnMscaleAllDim, int maxPositions, int pageSize,
        double rmsNormEpsilon, float softmaxScale, float ropeAttentionFactor, float[] inverseFrequencies)
    {
        Name = name;
        DModel = dModel;
        Heads = heads;
        LatentRank = latentRank;
        RopeDim = ropeDim;
        QLatentRank = qLatentRank;
        NopeHeadDim = nopeHeadDim;
        VHeadDim = vHeadDim;
        RopeStyle = ropeStyle;
        RopeTheta = ropeTheta;
        YarnFactor = yarnFactor;
        YarnOriginalMaxPositions = yarnOriginalMaxPositions;
        YarnBetaFast = yarnBetaFast;
        YarnBetaSlow = yarnBetaSlow;
        YarnMscale = yarnMscale;
        YarnMscaleAllDim = yarnMscaleAllDim;
        MaxPositions = maxPositions;
        PageSize = pageSize;
        RmsNormEpsilon = rmsNormEpsilon;
        SoftmaxScale = softmaxScale;
        RopeAttentionFactor = ropeAttentionFactor;
        InverseFrequencies = Array.AsReadOnly((float[])inverseFrequencies.Clone());
    }

    /// <summary>Full name of the class the spec was generated for.</summary>
    public string Name { get; }
    public int DModel { get; }
    public int Heads { get; }
    public int LatentRank { get; }
    public int RopeDim { get; }
    public int QLatentRank { get; }
    public int NopeHeadDim { get; }
    public int VHeadDim { get; }
    public RopeStyle RopeStyle { get; }
    public double RopeTheta { get; }
    public double YarnFactor { get; }
    public int YarnOriginalMaxPositions { get; }
    public double YarnBetaFast { get; }
    public double YarnBetaSlow { get; }
    public double YarnMscale { get; }
    public double YarnMscaleAllDim { get; }
    /// <summary>Positions 0 .. MaxPositions-1 are valid.</summary>
    public int MaxPositions { get; }
    public int PageSize { get; }
    public double RmsNormEpsilon { get; }

    /// <summary>(nope + rope)^-0.5 · mscale(factor, mscale_all_dim)².</summary>
    public float SoftmaxScale { get; }

    /// <summary>Factor on cos/sin: mscale(factor, mscale) / mscale(factor, mscale_all_dim).</summary>
    public float RopeAttentionFactor { get; }

    /// <summary>RoPE inverse frequency of each rotated pair (ropeDim / 2 values), YaRN-corrected.</summary>
    public IReadOnlyList<float> InverseFrequencies { get; }

    public bool HasQLatent => QLatentRank > 0;
    public int QHeadDim => NopeHeadDim + RopeDim;
    /// <summary>Values per cached token: [c_kv (latent) | k_pe (rope)].</summary>
    public int CacheRowValues => LatentRank + RopeDim;
    public int CacheRowBytes => CacheRowValues * sizeof(ushort);
    public int PageValues => PageSize * CacheRowValues;
    public long PageBytes => (long)PageValues * sizeof(ushort);

    /// <summary>True when <paramref name="other"/> describes the same layer shape (so caches and weights are interchangeable).</summary>
    public bool IsSameShape(MlaSpec other) =>
        other.DModel == DModel && other.Heads == Heads && other.LatentRank == LatentRank && other.RopeDim == RopeDim
        && other.QLatentRank == QLatentRank && other.NopeHeadDim == NopeHeadDim && other.VHeadDim == VHeadDim
        && other.PageSize == PageSize;

    /// <summary>A one-line description: "dModel=2048 heads=16 latent=512 rope=64 ...".</summary>
    public string ShapeText =>
        FormattableString.Invariant(
            $"dModel={DModel} heads={Heads} latent={LatentRank} rope={RopeDim} qLatent={QLatentRank} nope={NopeHeadDim} v={VHeadDim} page={PageSize}");

    public override string ToString() => $"{Name} ({ShapeText})";
}
