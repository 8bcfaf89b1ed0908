using System;
using System.Collections.Generic;
using System.Collections.Immutable;
using System.Linq;
using System.Reflection;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using MlaGen.Generator.Tests.Infrastructure;
using Xunit;

namespace MlaGen.Generator.Tests;

public class IncrementalityTests
{
    private static readonly string[] TrackedSteps = { TrackingNames.Parse, TrackingNames.Diagnostics, TrackingNames.Spec };

    private static (GeneratorDriver Driver, Compilation Compilation) FirstRun(string source)
    {
        var compilation = GeneratorHarness.CreateCompilation(source, "namespace Other; public class Unrelated { public int A; }");
        var driver = GeneratorHarness.CreateDriver(trackSteps: true).RunGenerators(compilation);
        return (driver, compilation);
    }

    [Fact]
    public void UnrelatedEditLeavesEveryStepCached()
    {
        var (driver, compilation) = FirstRun(Shapes.SmallQLora);
        var unrelated = compilation.SyntaxTrees.Last();
        var edited = compilation.ReplaceSyntaxTree(unrelated,
            CSharpSyntaxTree.ParseText("namespace Other; public class Unrelated { public int A; public int B; }", GeneratorHarness.ParseOptions, unrelated.FilePath));
        var result = driver.RunGenerators(edited).GetRunResult().Results.Single();

        foreach (var step in TrackedSteps)
        {
            var outputs = result.TrackedSteps[step].SelectMany(s => s.Outputs).ToList();
            Assert.NotEmpty(outputs);
            Assert.All(outputs, o => Assert.True(o.Reason is IncrementalStepRunReason.Cached or IncrementalStepRunReason.Unchanged,
                $"{step} was {o.Reason}"));
        }
        Assert.All(result.TrackedOutputSteps.SelectMany(s => s.Value).SelectMany(s => s.Outputs),
            o => Assert.Equal(IncrementalStepRunReason.Cached, o.Reason));
    }

    [Fact]
    public void ChangingTheAttributeRerunsTheSpec()
    {
        var (driver, compilation) = FirstRun(Shapes.SmallQLora);
        var user = compilation.SyntaxTrees.First();
        var edited = compilation.ReplaceSyntaxTree(user,
            CSharpSyntaxTree.ParseText(Shapes.SmallQLora.Replace("PageSize = 16", "PageSize = 32"), GeneratorHarness.ParseOptions, user.FilePath));
        var result = driver.RunGenerators(edited).GetRunResult().Results.Single();
        var spec = result.TrackedSteps[TrackingNames.Spec].SelectMany(s => s.Outputs).Single();
        Assert.Equal(IncrementalStepRunReason.Modified, spec.Reason);
        Assert.Contains("PageSize = 32", string.Concat(result.GeneratedSources.Select(s => s.SourceText.ToString())), StringComparison.Ordinal);
    }

    [Fact]
    public void SpecHoldsNoRoslynObjects()
    {
        var compilation = GeneratorHarness.CreateCompilation(Shapes.V3, "using MlaGen; [MlaConfig(64, 2, 40, 16)] public partial class Warned { }");
        var driver = GeneratorHarness.CreateDriver(trackSteps: true).RunGenerators(compilation);
        var result = driver.GetRunResult().Results.Single();
        var values = result.TrackedSteps[TrackingNames.Parse].SelectMany(s => s.Outputs).Select(o => o.Value).ToList();
        Assert.Equal(2, values.Count);
        foreach (var value in values)
            Walk(value, new HashSet<object>(ReferenceEqualityComparer.Instance), "ParseResult");
    }

    private static readonly Type[] Forbidden =
        { typeof(ISymbol), typeof(SyntaxNode), typeof(Compilation), typeof(Location), typeof(Diagnostic), typeof(SemanticModel), typeof(SyntaxTree) };

    /// <summary>Fails on any Roslyn object reachable from the value (except the static DiagnosticDescriptor, which is immutable and shared).</summary>
    private static void Walk(object? value, HashSet<object> seen, string path)
    {
        if (value is null || value is string || value.GetType().IsPrimitive || value is Enum || value is DiagnosticDescriptor)
            return;
        var type = value.GetType();
        Assert.False(Forbidden.Any(f => f.IsAssignableFrom(type)), $"{path} holds a {type.FullName}");
        if (!type.IsValueType && !seen.Add(value))
            return;
        if (value is System.Collections.IEnumerable items)
        {
            int i = 0;
            foreach (var item in items)
                Walk(item, seen, $"{path}[{i++}]");
        }
        foreach (var field in type.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic))
        {
            if (field.FieldType.IsPointer)
                continue;
            Walk(field.GetValue(value), seen, $"{path}.{field.Name}");
        }
    }
}
