using MlaGen;

namespace MlaGen.ServingSample;

/// <summary>
/// The attention of one DeepSeek-V3 (and R1) layer, all 128 heads: hidden 7168, latent 512, RoPE 64, q-LoRA 1536,
/// nope/v 128, YaRN factor 40 over 4096 original positions with mscale = mscale_all_dim = 1, 163840 positions.
/// </summary>
[MlaConfig(7168, 128, 512, 64, QLatentRank = 1536, YarnFactor = 40, MaxPositions = 163840)]
public partial class DeepSeekV3Attention { }
