using System.Linq;
using MlaGen.Generator.Tests.Infrastructure;
using Xunit;

namespace MlaGen.Generator.Tests;

public class SnapshotTests
{
    [Theory]
    [InlineData("V2Lite")]
    [InlineData("V3")]
    [InlineData("SmallQLora")]
    [InlineData("RotateHalfYarn")]
    public void GeneratedFilesMatchSnapshots(string shape)
    {
        var source = Shapes.All.Single(s => s.Name == shape).Source;
        var run = GeneratorHarness.Run(source);
        Assert.Null(run.GeneratorException);
        var sources = run.Sources.OrderBy(s => s.HintName, System.StringComparer.Ordinal).ToList();
        Assert.Equal(2, sources.Count);
        var failures = new System.Collections.Generic.List<string>();
        foreach (var file in sources)
        {
            try
            {
                Snapshot.Verify($"{nameof(SnapshotTests)}.{shape}#{file.HintName.Replace(".g.cs", "")}", file.SourceText.ToString());
            }
            catch (Xunit.Sdk.XunitException e)
            {
                failures.Add(e.Message);
            }
        }
        Assert.True(failures.Count == 0, string.Join("\n\n", failures));
    }

    [Fact]
    public void MismatchProducesReadableDiff()
    {
        string diff = Snapshot.UnifiedDiff("a\nb\nc\n", "a\nB\nc\n");
        Assert.Contains("-0002 b", diff);
        Assert.Contains("+0002 B", diff);
    }
}
