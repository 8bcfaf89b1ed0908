namespace MlaGen;

/// <summary>Which elements of the RoPE part of a query or key are rotated together.</summary>
public enum RopeStyle
{
    /// <summary>Adjacent pairs (2i, 2i+1): DeepSeek's own code, HF DeepseekV2, HF V3 with rope_interleave=true.</summary>
    Interleaved = 0,

    /// <summary>Pairs (i, i + d/2), Llama style: HF with rope_interleave=false.</summary>
    RotateHalf = 1,
}
