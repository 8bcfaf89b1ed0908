using System.Linq;

namespace MlaGen.Runtime.Tests;

/// <summary>Small MLA shapes for cache tests: the cache only reads latent, rope, page size and max positions.</summary>
internal static class LatentCacheTestSpecs
{
    public const int Latent = 32;
    public const int Rope = 16;
    public const int RowValues = Latent + Rope;
    public const int PageSize = 16;

    public static MlaSpec Small(int maxPositions = 256, int latent = Latent, int rope = Rope, int pageSize = PageSize, string name = "Tests.SmallMla") =>
        new(
            name, dModel: 64, heads: 2, latentRank: latent, ropeDim: rope, qLatentRank: 0, nopeHeadDim: 16, vHeadDim: 16,
            RopeStyle.Interleaved, ropeTheta: 10000, yarnFactor: 1, yarnOriginalMaxPositions: maxPositions, yarnBetaFast: 32,
            yarnBetaSlow: 1, yarnMscale: 1, yarnMscaleAllDim: 1, maxPositions, pageSize, rmsNormEpsilon: 1e-6,
            softmaxScale: 0.18f, ropeAttentionFactor: 1,
            Enumerable.Range(0, rope / 2).Select(i => 1f / (float)System.Math.Pow(10000, 2.0 * i / rope)).ToArray());

    /// <summary>Distinct rows for tokens [start, start + count) of the sequence tagged <paramref name="tag"/>.</summary>
    public static ushort[] Rows(int tag, int start, int count, int rowValues = RowValues)
    {
        var rows = new ushort[count * rowValues];
        for (int t = 0; t < count; t++)
        {
            for (int v = 0; v < rowValues; v++)
                rows[t * rowValues + v] = (ushort)(tag * 12289 + (start + t) * rowValues + v + 1);
        }
        return rows;
    }
}
