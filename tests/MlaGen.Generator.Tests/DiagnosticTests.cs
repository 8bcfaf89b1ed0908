using System.Linq;
using MlaGen.Generator.Tests.Infrastructure;
using Xunit;

namespace MlaGen.Generator.Tests;

/// <summary>One case per diagnostic; <c>[|…|]</c> marks where the diagnostic must point.</summary>
public class DiagnosticTests
{
    [Theory]
    [InlineData("MLA001", "[MlaConfig(64, 2, 32, 16)] public class [|C|] { }", "not partial")]
    [InlineData("MLA002", "public class Outer { [MlaConfig(64, 2, 32, 16)] public partial class [|C|] { } }", "Outer")]
    [InlineData("MLA003", "[MlaConfig(64, 2, 32, 16)] public partial class [|C|]<T> { }", "generic")]
    [InlineData("MLA003", "public partial class Outer<T> { [MlaConfig(64, 2, 32, 16)] public partial class [|C|] { } }", "generic")]
    [InlineData("MLA004", "[MlaConfig(64, 2, 32, 16)] public partial struct [|C|] { }", "struct")]
    [InlineData("MLA005", "[MlaConfig([|0|], 2, 32, 16)] public partial class C { }", "dModel is 0")]
    [InlineData("MLA005", "[MlaConfig(64, [|-3|], 32, 16)] public partial class C { }", "heads is -3")]
    [InlineData("MLA005", "[MlaConfig(64, 2, 32, 16, [|VHeadDim = 0|])] public partial class C { }", "VHeadDim is 0")]
    [InlineData("MLA005", "[MlaConfig(64, 2, 32, 16, [|QLatentRank = -1|])] public partial class C { }", "QLatentRank is -1")]
    [InlineData("MLA006", "[MlaConfig(64, 2, 32, [|15|])] public partial class C { }", "ropeDim is 15")]
    [InlineData("MLA007", "[MlaConfig(64, 2, [|2048|], 16)] public partial class C { }", "at most 1024")]
    [InlineData("MLA007", "[MlaConfig(64, 2, 32, 16, [|NopeHeadDim = 1000|])] public partial class C { }", "NopeHeadDim is 1000")]
    [InlineData("MLA008", "[MlaConfig(64, 2, 32, 16, [|PageSize = 48|])] public partial class C { }", "PageSize is 48")]
    [InlineData("MLA008", "[MlaConfig(64, 2, 32, 16, [|PageSize = 8|])] public partial class C { }", "PageSize is 8")]
    [InlineData("MLA009", "[MlaConfig(64, 2, 32, 16, [|YarnFactor = 0.5|])] public partial class C { }", "YarnFactor is 0.5")]
    [InlineData("MLA009", "[MlaConfig(64, 2, 32, 16, YarnFactor = 4, [|YarnOriginalMaxPositions = 8192|], MaxPositions = 4096)] public partial class C { }", "less than MaxPositions")]
    [InlineData("MLA009", "[MlaConfig(64, 2, 32, 16, YarnFactor = 4, [|YarnBetaFast = -1|])] public partial class C { }", "YarnBetaFast is -1")]
    [InlineData("MLA010", "[MlaConfig(64, 2, 32, 16, [|RmsNormEpsilon = 0|])] public partial class C { }", "RmsNormEpsilon is 0")]
    [InlineData("MLA010", "[MlaConfig(64, 2, 32, 16, [|RmsNormEpsilon = double.NaN|])] public partial class C { }", "NaN")]
    [InlineData("MLA011", "[MlaConfig(64, 2, 32, 16, [|RopeTheta = 1|])] public partial class C { }", "RopeTheta is 1")]
    [InlineData("MLA012", "[MlaConfig(64, 2, 32, 16, [|MaxPositions = 100000000|])] public partial class C { }", "MaxPositions is 100000000")]
    [InlineData("MLA013", "[MlaConfig(64, 2, 32, 16, [|RopeStyle = (RopeStyle)7|])] public partial class C { }", "RopeStyle is 7")]
    [InlineData("MLA015", "[MlaConfig(64, 2, 64, 16)] public partial class [|Spec|] { }", "Class 'Spec' would get a generated member of its own name")]
    [InlineData("MLA015", "[MlaConfig(64, 2, 64, 16)] public partial class [|Heads|] { }", "CS0542")]
    [InlineData("MLA014", "[[|MlaConfig(64, 2, 40, 16)|]] public partial class C { }", "latentRank a multiple of 64")]
    public void ReportsDiagnosticOnTheOffendingSyntax(string id, string markedSource, string messagePart)
    {
        string source = "using MlaGen;\nnamespace N;\n" + markedSource;
        int start = source.IndexOf("[|", System.StringComparison.Ordinal);
        int end = source.IndexOf("|]", System.StringComparison.Ordinal) - 2;
        source = source.Replace("[|", "").Replace("|]", "");

        var run = GeneratorHarness.Run(source);
        Assert.Null(run.GeneratorException);
        var diagnostic = Assert.Single(run.MlaDiagnostics, d => d.Id == id);
        Assert.Contains(messagePart, diagnostic.GetMessage(System.Globalization.CultureInfo.InvariantCulture), System.StringComparison.Ordinal);
        Assert.Equal(start, diagnostic.Location.SourceSpan.Start);
        Assert.Equal(end, diagnostic.Location.SourceSpan.End);
        if (diagnostic.Severity == Microsoft.CodeAnalysis.DiagnosticSeverity.Error)
            Assert.Empty(run.Sources);
        else
            Assert.NotEmpty(run.Sources);
    }

    [Fact]
    public void EveryDescriptorIsTestedAndDocumented()
    {
        var ids = typeof(MlaGen.Generator.MlaGenerator).Assembly.GetType("MlaGen.Generator.Diagnostics.DiagnosticDescriptors")!
            .GetFields(System.Reflection.BindingFlags.Static | System.Reflection.BindingFlags.Public)
            .Select(f => ((Microsoft.CodeAnalysis.DiagnosticDescriptor)f.GetValue(null)!).Id)
            .OrderBy(i => i, System.StringComparer.Ordinal)
            .ToArray();
        var tested = typeof(DiagnosticTests).GetMethod(nameof(ReportsDiagnosticOnTheOffendingSyntax))!
            .GetCustomAttributes(typeof(InlineDataAttribute), false).Cast<InlineDataAttribute>()
            .Select(a => (string)a.GetData(null!).First()[0]).Distinct().OrderBy(i => i, System.StringComparer.Ordinal).ToArray();
        Assert.Equal(ids, tested);

        string root = RepositoryRoot();
        string docs = System.IO.File.ReadAllText(System.IO.Path.Combine(root, "docs", "diagnostics.md"));
        string unshipped = System.IO.File.ReadAllText(System.IO.Path.Combine(root, "generator", "AnalyzerReleases.Unshipped.md"));
        foreach (var id in ids)
        {
            Assert.Contains("## " + id, docs, System.StringComparison.Ordinal);
            Assert.Contains(id + " |", unshipped, System.StringComparison.Ordinal);
        }
    }

    [Fact]
    public void GeneratedMembersListMatchesWhatTheEmittersWrite()
    {
        var run = GeneratorHarness.Run(Shapes.V3);
        var type = run.Output.GetTypeByMetadataName("Models.DeepSeekV3Attention")!;
        var generated = type.GetMembers()
            .Where(m => !m.IsImplicitlyDeclared && m.Locations.All(l => l.SourceTree?.FilePath.EndsWith(".g.cs", System.StringComparison.Ordinal) == true))
            .Select(m => m.Name)
            .Concat(type.GetTypeMembers().Select(t => t.Name))
            .Where(n => !n.StartsWith("get_", System.StringComparison.Ordinal))
            .ToHashSet();
        Assert.True(generated.SetEquals(MlaGen.Generator.Model.GeneratedMembers.Names),
            "generated: " + string.Join(", ", generated.OrderBy(n => n)) + "\nlisted: " + string.Join(", ", MlaGen.Generator.Model.GeneratedMembers.Names.OrderBy(n => n)));
    }

    internal static string RepositoryRoot([System.Runtime.CompilerServices.CallerFilePath] string file = "") =>
        System.IO.Path.GetFullPath(System.IO.Path.Combine(System.IO.Path.GetDirectoryName(file)!, "..", ".."));
}
