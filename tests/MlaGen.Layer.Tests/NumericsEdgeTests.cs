using MlaGen;

namespace MlaGen.Layer.Tests;

/// <summary>MaxPositions past 131,072 so one sequence can hold 131,072 tokens; small dims keep the float64 reference quick.</summary>
[MlaConfig(32, 2, 32, 8, NopeHeadDim = 16, VHeadDim = 16, PageSize = 64, MaxPositions = 262144)]
internal partial class LongContextAttention { }
