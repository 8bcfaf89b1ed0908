using System;
using System.Reflection;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace MlaGen.Kernels;

/// <summary>
/// Loads the kernels written for Hopper's warpgroup MMA (wgmma). ILGPU 1.5.3 writes <c>.target sm_80</c>, where wgmma
/// does not exist, so these kernels go through <see cref="PtxKernelLoader"/> retargeted to <c>sm_90a</c>, whose code runs
/// on compute capability 9.0 only. Everywhere else the callers keep their mma.sync kernels.
/// </summary>
public static class WarpgroupKernels
{
    /// <summary>Setting this environment variable to <c>0</c> keeps the mma.sync kernels on Hopper too (for comparisons).</summary>
    public const string EnvironmentSwitch = "MLAGEN_WGMMA";

    /// <summary>True on a CUDA device of compute capability 9.0 unless <see cref="EnvironmentSwitch"/> is <c>0</c>.</summary>
    public static bool IsAvailable(Accelerator accelerator)
    {
        ArgumentNullException.ThrowIfNull(accelerator);
        return accelerator is CudaAccelerator cuda
            && cuda.Architecture is { Major: 9, Minor: 0 }
            && Environment.GetEnvironmentVariable(EnvironmentSwitch) != "0";
    }

    /// <summary>
    /// The kernel retargeted to sm_90a, or null where <see cref="IsAvailable"/> is false. A PTX or driver error is not
    /// swallowed: a kernel that should load and does not is a bug to see.
    /// </summary>
    /// <param name="accelerator">Where to load it.</param>
    /// <param name="kernel">The explicitly grouped kernel method.</param>
    /// <param name="dynamicSharedBytes">Dynamic shared memory its launches ask for; above 48 KB the function opts in here.</param>
    public static PtxKernel<TParams>? TryLoad<TParams>(Accelerator accelerator, MethodInfo kernel, int dynamicSharedBytes = 0)
        where TParams : struct
    {
        ArgumentNullException.ThrowIfNull(kernel);
        ArgumentOutOfRangeException.ThrowIfNegative(dynamicSharedBytes);
        if (!IsAvailable(accelerator))
            return null;
        var loaded = PtxKernelLoader.Load<TParams>(accelerator, kernel, (ptx, _) => PtxKernelLoader.WithTarget(ptx, "sm_90a"));
        try
        {
            if (dynamicSharedBytes > 0)
                loaded.AllowDynamicSharedMemory(dynamicSharedBytes);
            return loaded;
        }
        catch
        {
            loaded.Dispose();
            throw;
        }
    }
}
