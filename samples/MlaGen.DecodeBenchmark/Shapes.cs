using System;
using System.Collections.Generic;
using System.Linq;
using MlaGen;
using MlaGen.Devices;
using MlaGen.Kernels;
using MlaGen.Weights;

namespace MlaGen.DecodeBenchmark;

// The shapes the benchmark times. The decode attention only depends on heads, latent (512), rope (64) and the page
// size (64, FlashMLA's): dModel and the query path only matter for the end-to-end correctness check.

/// <summary>16 heads: DeepSeek-V2-Lite / Moonlight (and V3 at tensor parallelism 8); plain q_proj keeps the long reference check cheap.</summary>
[MlaConfig(2048, 16, 512, 64, YarnFactor = 40, YarnMscale = 0.707, YarnMscaleAllDim = 0.707, MaxPositions = 163840)]
internal sealed partial class Heads16Attention { }

/// <summary>32 heads: DeepSeek-V3 at tensor parallelism 4.</summary>
[MlaConfig(7168, 32, 512, 64, QLatentRank = 1536, YarnFactor = 40, MaxPositions = 163840)]
internal sealed partial class Heads32Attention { }

/// <summary>64 heads: DeepSeek-V3 at tensor parallelism 2.</summary>
[MlaConfig(7168, 64, 512, 64, QLatentRank = 1536, YarnFactor = 40, MaxPositions = 163840)]
internal sealed partial class Heads64Attention { }

/// <summary>128 heads: DeepSeek-V3 / R1 on one GPU.</summary>
[MlaConfig(7168, 128, 512, 64, QLatentRank = 1536, YarnFactor = 40, MaxPositions = 163840)]
internal sealed partial class Heads128Attention { }

/// <summary>A tiny shape for the CPU accelerator: seconds instead of hours; pages of 16 so short sequences span many pages.</summary>
[MlaConfig(64, 4, 64, 16, NopeHeadDim = 32, VHeadDim = 32, PageSize = 16, MaxPositions = 65536)]
internal sealed partial class TinyAttention { }

/// <summary>One shape the benchmark can run: its spec and the generated entry points.</summary>
internal sealed record BenchShape(
    string Key,
    MlaSpec Spec,
    Func<MlaDevice, MlaWeights, MlaKernelPath, MlaLayer> CreateLayer,
    Func<MlaDevice, MlaKernelPath, MlaKernelSet> LoadKernels)
{
    public int Heads => Spec.Heads;

    /// <summary>True for the tiny CPU shape (heads 4, latent 64, rope 16).</summary>
    public bool IsTiny => Spec.LatentRank != 512;

    /// <summary>Every shape, fewest heads first: the CPU one, then 16, 32, 64, 128 heads.</summary>
    public static IReadOnlyList<BenchShape> All { get; } = new[]
    {
        new BenchShape("tiny", TinyAttention.Spec, TinyAttention.CreateLayer, TinyAttention.LoadKernels),
        new BenchShape("H16", Heads16Attention.Spec, Heads16Attention.CreateLayer, Heads16Attention.LoadKernels),
        new BenchShape("H32", Heads32Attention.Spec, Heads32Attention.CreateLayer, Heads32Attention.LoadKernels),
        new BenchShape("H64", Heads64Attention.Spec, Heads64Attention.CreateLayer, Heads64Attention.LoadKernels),
        new BenchShape("H128", Heads128Attention.Spec, Heads128Attention.CreateLayer, Heads128Attention.LoadKernels),
    };

    public static BenchShape ForHeads(int heads)
    {
        foreach (var shape in All)
            if (shape.Heads == heads)
                return shape;
        throw new ArgumentException(
            $"No benchmark shape has {heads} heads; choose from {string.Join(", ", All.Select(s => s.Heads))} (4 is the tiny CPU shape).");
    }
}
