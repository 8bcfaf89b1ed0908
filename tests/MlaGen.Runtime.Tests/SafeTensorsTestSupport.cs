using System;
using System.Collections.Generic;
using System.IO;
using System.Text;
using MlaGen;

namespace MlaGen.Runtime.Tests;

/// <summary>A fresh directory per test, deleted afterwards.</summary>
internal sealed class SafeTensorsTempDirectory : IDisposable
{
    public SafeTensorsTempDirectory() => Path = Directory.CreateTempSubdirectory("mlagen-safetensors-").FullName;

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public string Write(string name, byte[] bytes)
    {
        string path = File(name);
        System.IO.File.WriteAllBytes(path, bytes);
        return path;
    }

    public string[] Entries() => Directory.GetFileSystemEntries(Path);

    public void Dispose() => Directory.Delete(Path, recursive: true);
}

/// <summary>Packs safetensors files by hand from the format's definition, without the library's writer.</summary>
internal static class SafeTensorsBytes
{
    /// <summary>8-byte little-endian header length, the header (padded with spaces to 8 bytes if asked), the data.</summary>
    public static byte[] File(string headerJson, byte[] data, bool padHeader = true)
    {
        var header = new List<byte>(Encoding.UTF8.GetBytes(headerJson));
        while (padHeader && header.Count % 8 != 0)
            header.Add((byte)' ');
        return WithHeaderLength((ulong)header.Count, header.ToArray(), data);
    }

    /// <summary>Any declared header length, true or not, followed by the given bytes.</summary>
    public static byte[] WithHeaderLength(ulong declaredHeaderLength, byte[] header, byte[] data)
    {
        var bytes = new List<byte>();
        for (int i = 0; i < 8; i++)
            bytes.Add((byte)(declaredHeaderLength >> (8 * i)));
        bytes.AddRange(header);
        bytes.AddRange(data);
        return bytes.ToArray();
    }
}

/// <summary>Finds this process's file descriptors and memory mappings of a file (Linux; none found elsewhere).</summary>
internal static class SafeTensorsHandles
{
    public static List<string> OpenReferencesTo(string path)
    {
        var found = new List<string>();
        if (!Directory.Exists("/proc/self/fd"))
            return found;
        foreach (string descriptor in Directory.GetFileSystemEntries("/proc/self/fd"))
        {
            string? target = null;
            try
            {
                target = new FileInfo(descriptor).LinkTarget;
            }
            catch (IOException)
            {
                // The descriptor closed while we looked.
            }
            catch (UnauthorizedAccessException)
            {
                // Not ours to read.
            }
            if (target == path)
                found.Add("descriptor " + descriptor);
        }
        foreach (string line in System.IO.File.ReadLines("/proc/self/maps"))
        {
            if (line.EndsWith(path, StringComparison.Ordinal))
                found.Add("mapping " + line);
        }
        return found;
    }
}

internal static class SafeTensorsTestSpecs
{
    /// <summary>dModel=64, heads=2, latent=32, rope=16, nope=16, v=16, with q-LoRA rank <paramref name="qLatentRank"/> (0 = none).</summary>
    public static MlaSpec Small(int qLatentRank) => new(
        name: qLatentRank > 0 ? "Tests.SmallMlaQLora" : "Tests.SmallMla",
        dModel: 64, heads: 2, latentRank: 32, ropeDim: 16, qLatentRank: qLatentRank, nopeHeadDim: 16, vHeadDim: 16,
        ropeStyle: RopeStyle.Interleaved, ropeTheta: 10000, yarnFactor: 1, yarnOriginalMaxPositions: 4096,
        yarnBetaFast: 32, yarnBetaSlow: 1, yarnMscale: 1, yarnMscaleAllDim: 1, maxPositions: 256, pageSize: 16,
        rmsNormEpsilon: 1e-6, softmaxScale: 1f / MathF.Sqrt(32), ropeAttentionFactor: 1f,
        inverseFrequencies: [1f, 0.5f, 0.25f, 0.125f, 0.0625f, 0.03125f, 0.015625f, 0.0078125f]);
}
