using System;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Runtime.CompilerServices;
using System.Xml.Linq;

namespace MlaGen.Package.Tests;

/// <summary>
/// Packs runtime/MlaGen.csproj once per test run into a temporary folder feed, under a version no earlier run used,
/// with bin/obj in a temporary artifacts folder (so it never races a solution build over the repository's obj/).
/// </summary>
public sealed class PackageFixture : IDisposable
{
    public PackageFixture()
    {
        RepositoryRoot = FindRepositoryRoot();
        Root = Path.Combine(Path.GetTempPath(), "mlagen-package-tests-" + Guid.NewGuid().ToString("N")[..12]);
        Feed = Path.Combine(Root, "feed");
        Directory.CreateDirectory(Feed);
        // e.g. 0.1.0-pkgtest.20261123150102.4242: a version no restore has seen, so no cached package can stand in.
        Version = string.Create(CultureInfo.InvariantCulture,
            $"{RepositoryVersion()}-pkgtest.{DateTime.UtcNow:yyyyMMddHHmmss}.{Environment.ProcessId}");
        Pack = ChildProcess.Run(RepositoryRoot, TimeSpan.FromMinutes(4), null,
            "pack", Path.Combine(RepositoryRoot, "runtime", "MlaGen.csproj"),
            "-c", "Release",
            "-o", Feed,
            "--artifacts-path", Path.Combine(Root, "artifacts"),
            "--disable-build-servers",
            "-p:Version=" + Version);
        PackagePath = Path.Combine(Feed, $"MlaGen.{Version}.nupkg");
    }

    public string RepositoryRoot { get; }

    /// <summary>Temporary folder holding the feed, the pack's artifacts and the consumer project.</summary>
    public string Root { get; }

    public string Feed { get; }

    public string Version { get; }

    public ProcessResult Pack { get; }

    public string PackagePath { get; }

    /// <summary>Set MLAGEN_KEEP_PACKAGE_TEST=1 to keep the temporary folder for a post-mortem.</summary>
    public void Dispose()
    {
        if (Environment.GetEnvironmentVariable("MLAGEN_KEEP_PACKAGE_TEST") == "1")
            return;
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    /// <summary>The base version every project gets from Directory.Build.props.</summary>
    private string RepositoryVersion()
    {
        var props = XDocument.Load(Path.Combine(RepositoryRoot, "Directory.Build.props"));
        return props.Descendants("Version").Single().Value.Trim();
    }

    /// <summary>Package versions pinned in Directory.Packages.props.</summary>
    public string PinnedVersion(string package)
    {
        var props = XDocument.Load(Path.Combine(RepositoryRoot, "Directory.Packages.props"));
        return props.Descendants("PackageVersion").Single(e => (string?)e.Attribute("Include") == package).Attribute("Version")!.Value;
    }

    private static string FindRepositoryRoot([CallerFilePath] string file = "") =>
        Path.GetFullPath(Path.Combine(Path.GetDirectoryName(file)!, "..", ".."));
}
