using System;
using System.Threading.Tasks;
using ILGPU;
using ILGPU.Runtime;
using MlaGen.Devices;
using MlaGen.Numerics;

namespace MlaGen.DecodeBenchmark;

/// <summary>
/// Random inputs written on the device: element i of a buffer is <c>amplitude · u(seed, i)</c> with u uniform in
/// [-1, 1) from SplitMix64 (24 random bits, exact in float), so a check recomputes any element on the host with
/// <see cref="ValueAt"/> instead of keeping a copy of a many-gigabyte query buffer.
/// </summary>
internal static class DeviceFill
{
    private const int Threads = 1 << 20;

    public static void Uniform(MlaDevice device, AcceleratorStream stream, ArrayView<float> target, ulong seed, float amplitude)
    {
        if (target.Length == 0)
            return;
        var kernel = device.GetOrLoad("benchmark:uniform-fill",
            a => a.LoadAutoGroupedKernel<Index1D, ArrayView<float>, long, ulong, float>(FillKernel));
        long threads = Math.Min(target.Length, device.IsCuda ? Threads : 64);
        kernel(stream, (int)threads, target, threads, seed, amplitude);
    }

    /// <summary>What <see cref="Uniform"/> writes at <paramref name="index"/>.</summary>
    public static float ValueAt(ulong seed, long index, float amplitude) => Unit(seed, index) * amplitude;

    /// <summary>BF16 random rows for the cache: the same draw, rounded to BF16, in parallel on the host.</summary>
    public static ushort[] Bf16Rows(ulong seed, long count)
    {
        var values = new ushort[count];
        Parallel.For(0, (count + 65535) / 65536, block =>
        {
            long begin = block * 65536;
            long end = Math.Min(count, begin + 65536);
            for (long i = begin; i < end; i++)
                values[i] = Bf16.FromFloat(Unit(seed, i));
        });
        return values;
    }

    private static float Unit(ulong seed, long index)
    {
        ulong z = seed + (ulong)index * 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        z ^= z >> 31;
        int mantissa = (int)(z >> 40); // 24 random bits
        return (mantissa - (1 << 23)) * (1f / (1 << 23));
    }

    private static void FillKernel(Index1D index, ArrayView<float> target, long stride, ulong seed, float amplitude)
    {
        for (long i = index; i < target.Length; i += stride)
            target[i] = Unit(seed, i) * amplitude;
    }
}
