using System;

namespace MlaGen.ServingSample;

/// <summary>What one run serves; every value has a CPU default (tiny: DeepSeek-V3's layer is ~190 M weights, and
/// ILGPU's CPU accelerator runs a kernel thread per OS thread) and a GPU default (a realistic mix).</summary>
internal sealed record ServingSettings
{
    public int Requests { get; init; }
    public int MaxBatch { get; init; }
    public int PromptMin { get; init; }
    public int PromptMax { get; init; }
    public int DecodeMin { get; init; }
    public int DecodeMax { get; init; }

    /// <summary>Tokens one Forward may carry: every decoding sequence's token first, prefill chunks fill the rest.</summary>
    public int StepTokens { get; init; }

    /// <summary>Steps between two arrivals.</summary>
    public int ArrivalInterval { get; init; }

    /// <summary>Cache pages; 0 sizes the cache to three quarters (rounded up) of what MaxBatch requests of the longest length need,
    /// so long requests sometimes wait for pages as they would on a busy server.</summary>
    public int Pages { get; init; }

    public int Seed { get; init; }

    /// <summary>Let attention use the tensor-core decode kernel where the device and shape have it (CUDA).</summary>
    public bool TensorCores { get; init; } = true;

    /// <summary>Recompute the shortest request with the float64 reference afterwards.</summary>
    public bool Verify { get; init; }

    public static ServingSettings CpuDefaults { get; } = new()
    {
        Requests = 4, MaxBatch = 3, PromptMin = 2, PromptMax = 8, DecodeMin = 2, DecodeMax = 3,
        StepTokens = 8, ArrivalInterval = 2, Seed = 42, Verify = true,
    };

    public static ServingSettings GpuDefaults { get; } = new()
    {
        Requests = 16, MaxBatch = 8, PromptMin = 256, PromptMax = 8192, DecodeMin = 16, DecodeMax = 128,
        StepTokens = 2048, ArrivalInterval = 4, Seed = 42, Verify = false,
    };

    /// <summary>Null when the settings are usable, else what is wrong.</summary>
    public string? Problem(MlaSpec spec)
    {
        if (Requests < 1 || MaxBatch < 1 || StepTokens < 1)
            return "--requests, --max-batch and --step-tokens must be at least 1.";
        if (PromptMin < 1 || PromptMax < PromptMin)
            return "--prompt-min must be at least 1 and at most --prompt-max.";
        if (DecodeMin < 0 || DecodeMax < DecodeMin)
            return "--decode-min must be at least 0 and at most --decode-max.";
        if (ArrivalInterval < 0 || Pages < 0)
            return "--arrival-interval and --pages must be 0 or more.";
        if ((long)PromptMax + DecodeMax > spec.MaxPositions)
            return FormattableString.Invariant($"--prompt-max + --decode-max is {(long)PromptMax + DecodeMax}; {spec.Name} holds at most {spec.MaxPositions} positions.");
        return null;
    }
}
