using System.Linq;
using MlaGen.Generator.Tests.Infrastructure;
using Xunit;

namespace MlaGen.Generator.Tests;

public class CompilationTests
{
    [Fact]
    public void EveryShapeCompilesWithZeroErrorsAndWarnings()
    {
        var run = GeneratorHarness.Run(Shapes.All.Select(s => s.Source).ToArray());
        Assert.Null(run.GeneratorException);
        Assert.Equal(2 * Shapes.All.Length, run.Sources.Count());
        var problems = run.CompilerDiagnostics.Where(d => !d.Id.StartsWith("MLA", System.StringComparison.Ordinal)).ToList();
        Assert.True(problems.Count == 0, string.Join("\n", problems));
        var errors = run.MlaDiagnostics.Where(d => d.Severity == Microsoft.CodeAnalysis.DiagnosticSeverity.Error).ToList();
        Assert.True(errors.Count == 0, string.Join("\n", errors));
    }

    [Fact]
    public void HintNamesAreStable()
    {
        var run = GeneratorHarness.Run(Shapes.V3, Shapes.Moonlight);
        var names = run.Sources.Select(s => s.HintName).OrderBy(n => n, System.StringComparer.Ordinal).ToArray();
        Assert.Equal(new[]
        {
            "Models.DeepSeekV3Attention.Kernels.g.cs", "Models.DeepSeekV3Attention.Layout.g.cs",
            "Models.Holder.MoonlightAttention.Kernels.g.cs", "Models.Holder.MoonlightAttention.Layout.g.cs",
        }, names);
    }
}
