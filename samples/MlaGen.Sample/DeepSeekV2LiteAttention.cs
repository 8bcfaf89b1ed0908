using MlaGen;

namespace MlaGen.Sample;

/// <summary>
/// The attention of one DeepSeek-V2-Lite layer: hidden 2048, 16 heads, latent 512, RoPE 64, no q-LoRA (plain q_proj),
/// YaRN factor 40 with mscale = mscale_all_dim = 0.707 over 4096 original positions, as its config.json says.
/// </summary>
[MlaConfig(2048, 16, 512, 64, YarnFactor = 40, YarnMscale = 0.707, YarnMscaleAllDim = 0.707, MaxPositions = 163840)]
public partial class DeepSeekV2LiteAttention { }
