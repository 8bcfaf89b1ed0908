using System;
using MlaGen.Reference;
using Xunit;
using static MlaGen.Runtime.Tests.ReferenceTestSupport;

namespace MlaGen.Runtime.Tests;

/// <summary>Softmax scale, RoPE attention factor and inverse frequencies, against values worked out by hand.</summary>
public sealed class ReferenceScaleTests
{
    private static MlaSpec DeepSeekV3Like() =>
        Spec(nope: 128, rope: 64, v: 128, yarnFactor: 40, originalPositions: 4096, betaFast: 32, betaSlow: 1, mscale: 1, mscaleAllDim: 1);

    private static MlaSpec DeepSeekV2LiteLike() =>
        Spec(nope: 128, rope: 64, v: 128, yarnFactor: 40, originalPositions: 4096, betaFast: 32, betaSlow: 1, mscale: 0.707, mscaleAllDim: 0.707);

    [Fact]
    public void SoftmaxScaleOfDeepSeekV3Is0_1352338()
    {
        // 192^-0.5 · (0.1·1·ln 40 + 1)² = 0.0721688 · 1.3688879² = 0.1352338
        Assert.Equal(0.1352338, NaiveMlaReference.SoftmaxScale(DeepSeekV3Like()), 1e-6);
    }

    [Fact]
    public void SoftmaxScaleOfDeepSeekV2LiteIs0_1147214()
    {
        // 192^-0.5 · (0.1·0.707·ln 40 + 1)² = 0.0721688 · 1.2608037² = 0.1147214
        Assert.Equal(0.1147214, NaiveMlaReference.SoftmaxScale(DeepSeekV2LiteLike()), 1e-6);
    }

    [Fact]
    public void SoftmaxScaleWithoutYarnIsInverseSqrtOfQkDim()
    {
        var spec = Spec(nope: 128, rope: 64, v: 128, yarnFactor: 1, mscale: 0.707, mscaleAllDim: 0.707);
        Assert.Equal(1 / Math.Sqrt(192), NaiveMlaReference.SoftmaxScale(spec), 1e-15);
        Assert.Equal(0.07216878364870322, NaiveMlaReference.SoftmaxScale(spec), 1e-15);
    }

    [Fact]
    public void RopeAttentionFactorIsOneForDeepSeekAndTheMscaleRatioOtherwise()
    {
        Assert.Equal(1.0, NaiveMlaReference.RopeAttentionFactor(DeepSeekV3Like()), 1e-15);
        Assert.Equal(1.0, NaiveMlaReference.RopeAttentionFactor(DeepSeekV2LiteLike()), 1e-15);
        // (0.1·1·ln 40 + 1) / (0.1·0.707·ln 40 + 1) = 1.3688879 / 1.2608037
        Assert.Equal(1.0857263992561355, NaiveMlaReference.RopeAttentionFactor(SmallYarnSpec()), 1e-12);
        Assert.Equal(1.0, NaiveMlaReference.RopeAttentionFactor(Spec(yarnFactor: 1, mscale: 1, mscaleAllDim: 0.5)), 1e-15);
    }

    [Fact]
    public void InverseFrequenciesWithoutYarnAreThetaToTheMinus2iOverD()
    {
        double[] frequencies = NaiveMlaReference.InverseFrequencies(Spec(rope: 64, theta: 1e4));
        Assert.Equal(32, frequencies.Length);
        Assert.Equal(1.0, frequencies[0], 1e-15);
        Assert.Equal(0.7498942093324559, frequencies[1], 1e-15);          // 1e4^(-1/32)
        Assert.Equal(0.01, frequencies[16], 1e-15);                       // 1e4^(-1/2)
        Assert.Equal(1.333521432163324e-4, frequencies[31], 1e-17);       // 1e4^(-31/32)
        for (int i = 0; i < 32; i++)
            Assert.Equal(Math.Pow(1e4, -2.0 * i / 64), frequencies[i], 1e-15);

        double[] moonlight = NaiveMlaReference.InverseFrequencies(Spec(rope: 64, theta: 5e4));
        Assert.Equal(Math.Pow(5e4, -0.5), moonlight[16], 1e-15);
    }

    [Fact]
    public void YarnCorrectionRangeForDeepSeekIs10To23()
    {
        // d·ln(4096 / (β·2π)) / (2·ln 1e4): β_fast = 32 → 10.47 (floor 10), β_slow = 1 → 22.51 (ceil 23).
        Assert.Equal((10, 23), NaiveMlaReference.YarnCorrectionRange(DeepSeekV3Like()));
    }

    [Fact]
    public void YarnCorrectionRangeFloorsLowCeilsHighAndClamps()
    {
        // β 16 → 12.88 and β 2 → 20.11: floor/ceil give (12, 21) where rounding would give (13, 20).
        Assert.Equal((12, 21), NaiveMlaReference.YarnCorrectionRange(Spec(rope: 64, yarnFactor: 40, betaFast: 16, betaSlow: 2)));
        // β 1e6 → −25.5 (raised to 0) and β 1e-6 → 70.5 (lowered to d − 1 = 63).
        Assert.Equal((0, 63), NaiveMlaReference.YarnCorrectionRange(Spec(rope: 64, yarnFactor: 40, betaFast: 1e6, betaSlow: 1e-6)));
    }

    [Fact]
    public void YarnKeepsHighFrequenciesAndDividesLowOnesByTheFactor()
    {
        double[] f = NaiveMlaReference.InverseFrequencies(DeepSeekV3Like());
        Assert.Equal(32, f.Length);
        // i ≤ 10: ramp 0, unchanged.
        Assert.Equal(1.0, f[0], 1e-15);
        Assert.Equal(0.7498942093324559, f[1], 1e-15);
        Assert.Equal(0.05623413251903491, f[10], 1e-15);
        // i = 11: ramp 1/13 → f·(12/13 + 1/(13·40)) = f·0.925.
        Assert.Equal(0.042169650342858224 * 0.925, f[11], 1e-15);
        // i = 16: ramp 6/13 → 0.01·(7/13 + 6/520) = 0.0055.
        Assert.Equal(0.0055, f[16], 1e-15);
        // i = 22: ramp 12/13 → f·(1/13 + 12/520) = f·0.1.
        Assert.Equal(0.0017782794100389228 * 0.1, f[22], 1e-17);
        // i ≥ 23: ramp 1, divided by 40.
        Assert.Equal(0.001333521432163324 / 40, f[23], 1e-17);
        Assert.Equal(1.333521432163324e-4 / 40, f[31], 1e-18);
    }

    [Fact]
    public void YarnZeroWidthRampDoesNotProduceNaN()
    {
        // β_slow puts its correction dimension at −0.5 (ceil → 0) and β_fast below it (floor → 0 after the clamp):
        // low == high == 0, so only DeepSeek's +0.001 guard keeps i = 0 from 0/0.
        double betaSlow = 4096 / (2 * Math.PI) * Math.Pow(1e4, 1.0 / 64);
        var spec = Spec(rope: 64, theta: 1e4, yarnFactor: 40, originalPositions: 4096, betaFast: 2 * betaSlow, betaSlow: betaSlow);
        Assert.Equal((0, 0), NaiveMlaReference.YarnCorrectionRange(spec));
        double[] f = NaiveMlaReference.InverseFrequencies(spec);
        Assert.Equal(1.0, f[0], 1e-15);
        Assert.Equal(0.7498942093324559 / 40, f[1], 1e-15);
        Assert.Equal(0.01 / 40, f[16], 1e-15);
    }
}
