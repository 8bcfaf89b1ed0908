namespace MlaGen.Generator.Tests.Infrastructure;

/// <summary>User sources for the shapes the docs promise: real models and the small ones tests use.</summary>
internal static class Shapes
{
    public const string V2Lite = """
        using MlaGen;
        namespace Models;
        [MlaConfig(2048, 16, 512, 64, YarnFactor = 40, YarnMscale = 0.707, YarnMscaleAllDim = 0.707, MaxPositions = 163840)]
        public partial class DeepSeekV2LiteAttention { }
        """;

    public const string V3 = """
        using MlaGen;
        namespace Models;
        [MlaConfig(7168, 128, 512, 64, QLatentRank = 1536, YarnFactor = 40, MaxPositions = 163840)]
        public partial class DeepSeekV3Attention { }
        """;

    public const string SmallQLora = """
        using MlaGen;
        namespace Tests.Small;
        [MlaConfig(64, 4, 64, 16, QLatentRank = 48, NopeHeadDim = 32, VHeadDim = 32, PageSize = 16, MaxPositions = 4096)]
        internal partial class SmallQLoraAttention { }
        """;

    public const string RotateHalfYarn = """
        using MlaGen;
        namespace Tests.Small;
        [MlaConfig(64, 2, 40, 16, NopeHeadDim = 16, VHeadDim = 24, RopeStyle = RopeStyle.RotateHalf,
            YarnFactor = 8, YarnOriginalMaxPositions = 256, YarnMscale = 0.707, YarnMscaleAllDim = 0.707, PageSize = 16)]
        internal partial class RotateHalfYarnAttention { }
        """;

    public const string MiniCpm3 = """
        using MlaGen;
        [MlaConfig(2560, 40, 256, 32, QLatentRank = 768, NopeHeadDim = 64, VHeadDim = 64, RopeStyle = RopeStyle.RotateHalf, MaxPositions = 32768)]
        public partial class MiniCpm3Attention { }
        """;

    public const string Moonlight = """
        using MlaGen;
        namespace Models
        {
            public static partial class Holder
            {
                [MlaConfig(2048, 16, 512, 64, RopeTheta = 50000, MaxPositions = 8192)]
                public partial record MoonlightAttention;
            }
        }
        """;

    public static readonly (string Name, string Source)[] All =
    {
        ("V2Lite", V2Lite), ("V3", V3), ("SmallQLora", SmallQLora), ("RotateHalfYarn", RotateHalfYarn),
        ("MiniCpm3", MiniCpm3), ("Moonlight", Moonlight),
    };
}
