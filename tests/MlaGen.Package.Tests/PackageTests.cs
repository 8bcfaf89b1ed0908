using System;
using System.Collections.Generic;
using System.IO;
using System.IO.Compression;
using System.Linq;
using System.Text.RegularExpressions;
using System.Xml.Linq;
using Xunit;

namespace MlaGen.Package.Tests;

/// <summary>
/// The MlaGen package as a user gets it: packed from the repository, installed by exact version into a fresh console
/// project outside the solution, built (the generator runs from analyzers/dotnet/cs), and run on the CPU accelerator.
/// </summary>
public sealed class PackageTests : IClassFixture<PackageFixture>
{
    private static readonly TimeSpan BuildTimeout = TimeSpan.FromMinutes(4);
    private static readonly TimeSpan RunTimeout = TimeSpan.FromMinutes(2);
    private readonly PackageFixture _package;

    public PackageTests(PackageFixture package) => _package = package;

    [Fact]
    public void PackageHoldsRuntimeInLibAndGeneratorAsAnalyzerOnly()
    {
        RequirePacked();
        using var zip = ZipFile.OpenRead(_package.PackagePath);
        var entries = zip.Entries.Select(e => e.FullName).OrderBy(n => n, StringComparer.Ordinal).ToList();
        string listing = string.Join("\n", entries);

        Assert.True(entries.Contains("lib/net10.0/MlaGen.dll"), "The runtime must be in lib/net10.0:\n" + listing);
        Assert.True(entries.Contains("analyzers/dotnet/cs/MlaGen.Generator.dll"), "The generator must be under analyzers/dotnet/cs:\n" + listing);
        var generatorCopies = entries.Where(e => e.EndsWith("MlaGen.Generator.dll", StringComparison.OrdinalIgnoreCase)).ToList();
        Assert.True(generatorCopies.Count == 1, "The generator must not also be a lib/ reference:\n" + listing);
        Assert.DoesNotContain(entries, e => e.Contains("Microsoft.CodeAnalysis", StringComparison.OrdinalIgnoreCase));
        Assert.Contains("README.md", entries);
        Assert.Contains("docs/diagnostics.md", entries);

        var nuspecEntry = zip.Entries.Single(e => e.FullName == "MlaGen.nuspec");
        using var stream = nuspecEntry.Open();
        var nuspec = XDocument.Load(stream);
        XNamespace ns = nuspec.Root!.Name.Namespace;
        var metadata = nuspec.Root.Element(ns + "metadata")!;
        Assert.Equal("MlaGen", metadata.Element(ns + "id")?.Value);
        Assert.Equal(_package.Version, metadata.Element(ns + "version")?.Value);
        Assert.Equal("README.md", metadata.Element(ns + "readme")?.Value);
        var license = metadata.Element(ns + "license");
        Assert.Equal("expression", (string?)license?.Attribute("type"));
        Assert.Equal("MIT", license?.Value);
        Assert.False(string.IsNullOrWhiteSpace(metadata.Element(ns + "description")?.Value), "The package needs a description.");
        Assert.Contains("deepseek", metadata.Element(ns + "tags")?.Value ?? "", StringComparison.Ordinal);

        var dependencies = metadata.Descendants(ns + "dependency")
            .Select(d => $"{(string?)d.Attribute("id")} {(string?)d.Attribute("version")}")
            .OrderBy(d => d, StringComparer.Ordinal)
            .ToArray();
        Assert.Equal(new[]
        {
            "ILGPU " + _package.PinnedVersion("ILGPU"),
            "ILGPU.Algorithms " + _package.PinnedVersion("ILGPU.Algorithms"),
        }, dependencies);
    }

    [Fact]
    public void FreshConsoleProjectBuildsFromThePackageAndMatchesTheReference()
    {
        RequirePacked();
        string project = Path.Combine(_package.Root, "consumer");
        string packages = Path.Combine(_package.Root, "packages");
        WriteConsumerProject(project);
        // A global packages folder of its own (nothing cached can stand in for the package under test), with the
        // machine's folder as a read-only fallback so ILGPU does not have to be downloaded again.
        var environment = new Dictionary<string, string?> { ["NUGET_PACKAGES"] = packages, ["MLAGEN_DEVICE"] = "cpu" };

        var build = ChildProcess.Run(project, BuildTimeout, environment, "build", "-c", "Release", "--disable-build-servers");
        Assert.True(build.Succeeded, "The consumer project did not build against the package.\n" + build.Describe());
        Assert.True(Directory.Exists(Path.Combine(packages, "mlagen", _package.Version.ToLowerInvariant())),
            $"MlaGen {_package.Version} was not restored from the test feed into {packages}.\n" + build.Describe());
        string assets = File.ReadAllText(Path.Combine(project, "obj", "project.assets.json"));
        Assert.True(assets.Contains("analyzers/dotnet/cs/MlaGen.Generator.dll", StringComparison.Ordinal),
            "The restored package does not give the consumer the generator as an analyzer (project.assets.json).");

        string program = Path.Combine(project, "bin", "Release", "net10.0", "PackageConsumer.dll");
        var run = ChildProcess.Run(project, RunTimeout, environment, program);
        var check = Regex.Match(run.Output, @"^MLAGEN_PACKAGE_CHECK (PASS|FAIL) .*$", RegexOptions.Multiline);
        Assert.True(check.Success, "The consumer program printed no MLAGEN_PACKAGE_CHECK line.\n" + run.Describe());
        Assert.True(check.Groups[1].Value == "PASS" && run.Succeeded,
            $"The packaged layer does not match the float64 reference: {check.Value}\n" + run.Describe());
        Assert.Contains("device=cpu", check.Value, StringComparison.Ordinal);
        Console.WriteLine($"[package] {_package.Pack.Elapsed.TotalSeconds:F1} s pack, {build.Elapsed.TotalSeconds:F1} s restore+build, {run.Elapsed.TotalSeconds:F1} s run: {check.Value}");
    }

    private void RequirePacked() =>
        Assert.True(_package.Pack.Succeeded && File.Exists(_package.PackagePath),
            $"dotnet pack did not produce {_package.PackagePath}.\n" + _package.Pack.Describe());

    /// <summary>
    /// A console project that sees nothing of the repository: empty Directory.Build.props/.targets and
    /// Directory.Packages.props stop MSBuild's upward search, and its nuget.config adds the test feed to the machine's
    /// sources (no &lt;clear/&gt;).
    /// </summary>
    private void WriteConsumerProject(string project)
    {
        Directory.CreateDirectory(project);
        File.WriteAllText(Path.Combine(project, "Directory.Build.props"), "<Project />\n");
        File.WriteAllText(Path.Combine(project, "Directory.Build.targets"), "<Project />\n");
        File.WriteAllText(Path.Combine(project, "Directory.Packages.props"), "<Project />\n");

        string machinePackages = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } configured
            ? configured
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        var config = new XElement("configuration",
            new XElement("packageSources",
                new XElement("add", new XAttribute("key", "mlagen-package-test"), new XAttribute("value", _package.Feed))));
        if (Directory.Exists(machinePackages))
        {
            config.Add(new XElement("fallbackPackageFolders",
                new XElement("add", new XAttribute("key", "machine-global-packages"), new XAttribute("value", machinePackages))));
        }
        new XDocument(new XDeclaration("1.0", "utf-8", null), config).Save(Path.Combine(project, "nuget.config"));

        File.WriteAllText(Path.Combine(project, "PackageConsumer.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <Nullable>enable</Nullable>
                <!-- CS8032/CS9057 (generator not loadable) and MLA014 are warnings: any of them fails this build. -->
                <TreatWarningsAsErrors>true</TreatWarningsAsErrors>
                <NuGetAudit>false</NuGetAudit>
                <!-- MlaGen comes from the local feed and ILGPU from the fallback folder: an unreachable machine source must not fail the test. -->
                <RestoreIgnoreFailedSources>true</RestoreIgnoreFailedSources>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="MlaGen" Version="[{_package.Version}]" />
              </ItemGroup>
            </Project>
            """);
        string sources = Path.Combine(_package.RepositoryRoot, "tests", "MlaGen.Package.Tests", "Consumer");
        foreach (var file in Directory.GetFiles(sources, "*.cs"))
            File.Copy(file, Path.Combine(project, Path.GetFileName(file)), overwrite: true);
    }
}
