using MlaGen;

namespace MlaGen.Layer.Tests;

// Small shapes: quick on ILGPU's CPU accelerator, yet each exercises a different branch of the generator.

/// <summary>q-LoRA, interleaved RoPE, no YaRN; latent spans two lane chunks.</summary>
[MlaConfig(64, 4, 64, 16, QLatentRank = 48, NopeHeadDim = 32, VHeadDim = 32, PageSize = 16, MaxPositions = 4096)]
internal partial class SmallQLoraAttention { }

/// <summary>Plain q_proj, rotate-half RoPE with YaRN (original 64 positions, so tests go far past it); ragged latent 40.</summary>
[MlaConfig(48, 2, 40, 16, NopeHeadDim = 16, VHeadDim = 24, RopeStyle = RopeStyle.RotateHalf,
    YarnFactor = 8, YarnOriginalMaxPositions = 64, YarnMscale = 0.707, YarnMscaleAllDim = 0.707, PageSize = 16)]
internal partial class RotateHalfYarnAttention { }

/// <summary>Plain q_proj, interleaved RoPE with YaRN; DeepSeek-V3-like mscale = 1 so only mscale² differs from no-YaRN.</summary>
[MlaConfig(32, 2, 32, 8, NopeHeadDim = 16, VHeadDim = 16, YarnFactor = 40, YarnOriginalMaxPositions = 32, PageSize = 16)]
internal partial class InterleavedYarnAttention { }

/// <summary>DeepSeek's decode shape (latent 512, rope 64, 16 heads): the tensor-core kernel as the benchmark runs it.</summary>
[MlaConfig(2048, 16, 512, 64)]
internal partial class DeepSeekDecodeShape { }
