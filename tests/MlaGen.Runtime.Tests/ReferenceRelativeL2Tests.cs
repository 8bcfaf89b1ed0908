using System;
using MlaGen.Reference;
using Xunit;

namespace MlaGen.Runtime.Tests;

public sealed class ReferenceRelativeL2Tests
{
    [Fact]
    public void RelativeL2IsErrorNormOverExpectedNorm()
    {
        // ||[1, 2] − [1, 1]|| / ||[1, 1]|| = 1/√2.
        Assert.Equal(1 / Math.Sqrt(2), NaiveMlaReference.RelativeL2(new float[] { 1, 2 }, new double[] { 1, 1 }), 1e-15);
        Assert.Equal(0.0, NaiveMlaReference.RelativeL2(new float[] { 0.5f, -3 }, new double[] { 0.5, -3 }));
    }

    [Theory]
    [InlineData(float.NaN)]
    [InlineData(float.PositiveInfinity)]
    [InlineData(float.NegativeInfinity)]
    public void NonFiniteActualFailsAnyTolerance(float bad)
    {
        double error = NaiveMlaReference.RelativeL2(new float[] { 1, bad, 3 }, new double[] { 1, 2, 3 });
        Assert.Equal(double.PositiveInfinity, error);
        Assert.False(error < 1e-2);
    }

    [Fact]
    public void ZeroExpectationAndBadInputs()
    {
        Assert.Equal(0.0, NaiveMlaReference.RelativeL2(new float[] { 0, 0 }, new double[] { 0, 0 }));
        Assert.Equal(double.PositiveInfinity, NaiveMlaReference.RelativeL2(new float[] { 0, 1e-30f }, new double[] { 0, 0 }));
        Assert.Throws<ArgumentException>(() => NaiveMlaReference.RelativeL2(new float[] { 1 }, new double[] { 1, 2 }));
        Assert.Throws<ArgumentException>(() => NaiveMlaReference.RelativeL2(new float[] { 1 }, new double[] { double.NaN }));
    }
}
