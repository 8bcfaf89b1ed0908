using MlaGen;

namespace PackageConsumer;

/// <summary>A small shape (q-LoRA, YaRN) that the CPU accelerator runs in well under a second and that the tensor-core
/// decode kernel covers, so the build sees no MLA014.</summary>
[MlaConfig(64, 4, 64, 16, QLatentRank = 48, NopeHeadDim = 32, VHeadDim = 32, PageSize = 16,
    YarnFactor = 4, YarnOriginalMaxPositions = 1024)]
public partial class PackageSmokeAttention { }
