using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.Linq;
using System.Text;
using CsCheck;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using MlaGen.Generator.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace MlaGen.Generator.Tests;

/// <summary>
/// Property-based fuzzing of the generator with CsCheck generators: thousands of [MlaConfig] argument combinations
/// (zero, negatives, int.MinValue/MaxValue, NaN and ±∞, huge ranks, wrongly typed and missing arguments, duplicate
/// attributes) on every kind of target (structs, records, record structs, static, nested, generic and file-local
/// types, interfaces, enums, delegates) in global, file-scoped and block namespaces.
/// </summary>
/// <remarks>
/// Properties: the generator never throws (no run-result exception, no CS8785); every input the rules reject gets
/// exactly the MLA diagnostics an independent oracle of the rules predicts (<see cref="MlaRulesOracle"/>), each on
/// the offending syntax; every accepted input's generated files compile with no new error or warning and land on
/// the attributed type (checked on a bounded sample, compiling is costly).
/// Every case comes from one 64-bit seed. A failure prints the seed; replay one case with
/// <c>MLAGEN_FUZZ_REPLAY=&lt;seed&gt;</c>, run another master seed with <c>MLAGEN_FUZZ_SEED</c> and more cases with
/// <c>MLAGEN_FUZZ_CASES</c>.
/// </remarks>
public class GeneratorFuzzTests
{
    private const ulong RulesMasterSeed = 0x4D4C_4146_555A_5A01;
    private const ulong CompileMasterSeed = 0x4D4C_4146_555A_5A02;
    private const int DefaultRuleCases = 4000;
    private const int DefaultCompiledCases = 120;
    private const int MaxReportedFailures = 5;

    private readonly ITestOutputHelper _output;

    public GeneratorFuzzTests(ITestOutputHelper output) => _output = output;

    [Fact]
    public void FuzzGeneratorNeverThrowsAndReportsExactlyWhatTheRulesReject()
    {
        if (ReplaySeed() is { } replay)
        {
            var one = FuzzCases.Rules.Generate(new PCG(1, replay), null, out _);
            var problems = Check(one, compile: true);
            _output.WriteLine(Describe(replay, one, problems));
            Assert.True(problems.Count == 0, Describe(replay, one, problems));
            return;
        }

        ulong master = EnvironmentSeed() ?? RulesMasterSeed;
        int cases = EnvironmentInt("MLAGEN_FUZZ_CASES") ?? DefaultRuleCases;
        var stopwatch = Stopwatch.StartNew();
        var failures = new List<string>();
        var outcomes = new Dictionary<string, int>(StringComparer.Ordinal);
        var seeds = new PCG(1, master);
        for (int i = 0; i < cases; i++)
        {
            ulong seed = seeds.Next64();
            var fuzz = FuzzCases.Rules.Generate(new PCG(1, seed), null, out _);
            var problems = Check(fuzz, compile: false);
            string outcome = fuzz.Expected.Kind switch
            {
                ExpectationKind.Exact when fuzz.Expected.Accepted => "accepted",
                ExpectationKind.Exact when fuzz.Expected.Diagnostics.Count == 0 => "ignored (not a type the generator handles)",
                ExpectationKind.Exact => "rejected with MLA diagnostics",
                ExpectationKind.AttributeDoesNotBind => "attribute does not bind",
                _ => "named argument is a compiler error",
            };
            outcomes[outcome] = outcomes.GetValueOrDefault(outcome) + 1;
            if (problems.Count > 0 && failures.Count < MaxReportedFailures)
                failures.Add(Describe(seed, fuzz, problems));
            else if (problems.Count > 0)
                failures.Add("");
        }
        _output.WriteLine($"{cases} cases from master seed 0x{master:X16} in {stopwatch.Elapsed.TotalSeconds:F1} s: "
            + string.Join(", ", outcomes.OrderBy(o => o.Key, StringComparer.Ordinal).Select(o => $"{o.Value} {o.Key}")));
        Assert.True(failures.Count == 0,
            $"{failures.Count} of {cases} cases failed (master seed 0x{master:X16}); first ones:\n\n" + string.Join("\n\n", failures.Where(f => f.Length > 0)));
        // The generator must explore every outcome, or the properties above say little.
        Assert.True(outcomes.Count == 5, "outcomes seen: " + string.Join(", ", outcomes.Keys));
    }

    [Fact]
    public void FuzzAcceptedInputsCompileWithoutNewErrorsOrWarnings()
    {
        ulong master = (EnvironmentSeed() ?? CompileMasterSeed) ^ 0x5A5A;
        int wanted = EnvironmentInt("MLAGEN_FUZZ_COMPILED") ?? DefaultCompiledCases;
        var stopwatch = Stopwatch.StartNew();
        var failures = new List<string>();
        var seeds = new PCG(1, master);
        int compiled = 0, tried = 0;
        while (compiled < wanted && tried < 40 * wanted)
        {
            tried++;
            ulong seed = seeds.Next64();
            // Two in three from valid-leaning cases (every accepted target kind); one in three from the rules' own
            // stream, whose accepted cases carry odd values the rules allow (NaN in YaRN settings YarnFactor = 1 ignores).
            var fuzz = (compiled % 3 == 2 ? FuzzCases.Rules : FuzzCases.MostlyValid).Generate(new PCG(1, seed), null, out _);
            if (!fuzz.Expected.Accepted)
                continue;
            compiled++;
            var problems = Check(fuzz, compile: true);
            if (problems.Count > 0)
                failures.Add(failures.Count < MaxReportedFailures ? Describe(seed, fuzz, problems) : "");
        }
        _output.WriteLine($"compiled {compiled} accepted cases (of {tried} drawn) from master seed 0x{master:X16} in {stopwatch.Elapsed.TotalSeconds:F1} s");
        Assert.True(compiled == wanted, $"only {compiled} of {tried} drawn cases were accepted");
        Assert.True(failures.Count == 0,
            $"{failures.Count} of {compiled} compiled cases failed (master seed 0x{master:X16}); first ones:\n\n" + string.Join("\n\n", failures.Where(f => f.Length > 0)));
    }

    /// <summary>
    /// Minimal forms of what the fuzzer found in the generator as it was (each threw, or emitted code that did not
    /// compile or that joined another type); kept as plain cases so a regression names itself.
    /// </summary>
    [Theory]
    [InlineData("[MlaConfig(64, 2, 64, 16)] public partial class C { }\n[MlaConfig(64, 2, 64, 16)] public partial class C { }", "", "N.C")]
    [InlineData("[MlaConfig(64, 2, 64, 0)] public partial class C { }\n[MlaConfig(64, 2, 64, 16)] public partial class C { }", "MLA005", "")]
    [InlineData("[MlaConfig(64, 2, 64, 16)] public partial class C { }\n[MlaConfig(64, 2, 64, 16)] public partial record C { }", "", "N.C")]
    [InlineData("}\nnamespace @class.@namespace { [MlaConfig(64, 2, 64, 16)] public partial record @record { } }\nnamespace N {", "", "class.namespace.record")]
    [InlineData("[MlaConfig(64, 2, 64, 16, YarnBetaFast = double.NaN, YarnMscale = double.PositiveInfinity)] public partial class C { }", "", "N.C")]
    [InlineData("[MlaConfig(64, 2, 64, 16, RmsNormEpsilon = 1e300)] public partial class C { }", "MLA010", "")]
    [InlineData("[MlaConfig(64, 2, 64, 16, RmsNormEpsilon = 1e-50)] public partial class C { }", "MLA010", "")]
    [InlineData("[MlaConfig(64, 2, 64, 16, YarnFactor = 40, YarnMscaleAllDim = 1e300)] public partial class C { }", "MLA009", "")]
    [InlineData("[MlaConfig(64, 2, 64, 16, YarnFactor = 40, YarnMscale = 1e300)] public partial class C { }", "MLA009", "")]
    [InlineData("[MlaConfig(64, 2, 64, 16, YarnFactor = 40, YarnBetaFast = 1e-320, YarnBetaSlow = 1e-321)] public partial class C { }", "MLA009", "")]
    [InlineData("[MlaConfig(64, 2, 64, 16)] file partial class C { }", "MLA004", "")]
    [InlineData("file partial class Outer { [MlaConfig(64, 2, 64, 16)] public partial class C { } }", "MLA004", "")]
    public void FuzzFoundCaseStaysFixed(string declarations, string expectedIds, string generatedFor)
    {
        string source = "using MlaGen;\nnamespace N {\n" + declarations + "\n}\n";
        var run = GeneratorHarness.Run(source);
        Assert.Null(run.GeneratorException);
        Assert.DoesNotContain(run.Result.Diagnostics, d => d.Id == "CS8785");
        Assert.Equal(expectedIds, string.Join(",", run.MlaDiagnostics.Where(d => d.Severity == DiagnosticSeverity.Error).Select(d => d.Id)));
        if (generatedFor.Length == 0)
        {
            Assert.Empty(run.Sources);
            return;
        }
        Assert.Equal(new[] { generatedFor + ".Kernels.g.cs", generatedFor + ".Layout.g.cs" },
            run.Sources.Select(s => s.HintName).OrderBy(n => n, StringComparer.Ordinal));
        var generated = run.Output.SyntaxTrees.Skip(1).ToList();
        var problems = run.Output.GetDiagnostics().Where(d => d.Location.SourceTree is { } t && generated.Contains(t)).ToList();
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    /// <summary>Runs the generator over one case and returns every property it breaks (empty when it passes).</summary>
    private static List<string> Check(FuzzCase fuzz, bool compile)
    {
        var problems = new List<string>();
        var compilation = GeneratorHarness.CreateCompilation(fuzz.Source);
        compilation = compilation.WithOptions(compilation.Options.WithWarningLevel(9999));
        var driver = GeneratorHarness.CreateDriver().RunGeneratorsAndUpdateCompilation(compilation, out var output, out var generatorDiagnostics);
        var result = driver.GetRunResult();

        foreach (var r in result.Results)
            if (r.Exception is not null)
                problems.Add("the generator threw " + r.Exception);
        foreach (var d in result.Diagnostics.Concat(generatorDiagnostics).Where(d => d.Id == "CS8785"))
            problems.Add("CS8785: " + d.GetMessage(CultureInfo.InvariantCulture));
        if (problems.Count > 0)
            return problems;

        var actual = result.Diagnostics.Where(d => d.Id.StartsWith("MLA", StringComparison.Ordinal))
            .Select(d => new ExpectedDiagnostic(d.Id, TextAt(compilation, d.Location)))
            .OrderBy(d => d.ToString(), StringComparer.Ordinal).ToList();
        var sources = result.Results.SelectMany(r => r.GeneratedSources).ToList();
        var expected = fuzz.Expected;
        switch (expected.Kind)
        {
            case ExpectationKind.Exact:
                var wanted = expected.Diagnostics.OrderBy(d => d.ToString(), StringComparer.Ordinal).ToList();
                if (!wanted.SequenceEqual(actual))
                    problems.Add($"MLA diagnostics differ from the oracle:\n  expected: {string.Join("; ", wanted)}\n  actual:   {string.Join("; ", actual)}");
                int wantedSources = expected.Accepted ? 2 : 0;
                if (sources.Count != wantedSources)
                    problems.Add($"expected {wantedSources} generated files, got {sources.Count}: {string.Join(", ", sources.Select(s => s.HintName))}");
                break;
            case ExpectationKind.AttributeDoesNotBind:
                if (actual.Count > 0 || sources.Count > 0)
                    problems.Add($"the attribute does not bind, so the generator must add nothing, but it reported {string.Join("; ", actual)} and {sources.Count} files");
                if (!compilation.GetDiagnostics().Any(d => d.Severity == DiagnosticSeverity.Error))
                    problems.Add("the attribute does not bind, yet the compiler reports no error");
                break;
            case ExpectationKind.CompilerError:
                // The compiler rejects a named argument; the generator only has to stay quiet about it, not crash.
                if (!compilation.GetDiagnostics().Any(d => d.Severity == DiagnosticSeverity.Error))
                    problems.Add("a named argument should be a compiler error, yet the compiler reports none");
                break;
        }

        if (compile && expected.Accepted && problems.Count == 0)
            problems.AddRange(CompileProblems(compilation, output, fuzz));
        return problems;
    }

    /// <summary>Generated code may add no diagnostic (warning level 9999) and must land on the attributed type.</summary>
    private static IEnumerable<string> CompileProblems(Compilation user, Compilation output, FuzzCase fuzz)
    {
        static string Key(Diagnostic d) => d.Id + " " + d.Location.GetLineSpan() + " " + d.GetMessage(CultureInfo.InvariantCulture);
        var before = user.GetDiagnostics().Where(d => d.Severity >= DiagnosticSeverity.Warning).Select(Key).ToHashSet(StringComparer.Ordinal);
        foreach (var d in output.GetDiagnostics().Where(d => d.Severity >= DiagnosticSeverity.Warning))
        {
            if (!before.Contains(Key(d)))
                yield return "generated code adds " + d;
        }

        var tree = output.SyntaxTrees.First();
        var declaration = tree.GetRoot().DescendantNodes().OfType<TypeDeclarationSyntax>()
            .First(t => t.Identifier.Text == fuzz.TargetIdentifier && t.AttributeLists.Count > 0);
        var symbol = output.GetSemanticModel(tree).GetDeclaredSymbol(declaration);
        foreach (var member in new[] { "Spec", "CreateLayer", "LoadKernels", "DModel" })
        {
            if (symbol is null || symbol.GetMembers(member).Length == 0)
                yield return $"the attributed type {symbol?.ToDisplayString() ?? fuzz.TargetIdentifier} has no generated member '{member}'";
        }
    }

    /// <summary>The source text a diagnostic points at (the generator reports plain file locations, so look the file up).</summary>
    private static string TextAt(Compilation compilation, Location location)
    {
        string? path = location.GetLineSpan().Path;
        var tree = location.SourceTree ?? compilation.SyntaxTrees.FirstOrDefault(t => t.FilePath == path);
        return tree is null ? "<no location>" : tree.GetText().ToString(location.SourceSpan);
    }

    private static string Describe(ulong seed, FuzzCase fuzz, List<string> problems) =>
        $"case seed {seed:X16} (replay: MLAGEN_FUZZ_REPLAY={seed:X16}), expectation {fuzz.Expected.Kind}"
        + (fuzz.Expected.Accepted ? " accepted" : "")
        + $"\n--- source ---\n{fuzz.Source}\n--- problems ---\n" + string.Join("\n", problems);

    private static ulong? ReplaySeed() =>
        Environment.GetEnvironmentVariable("MLAGEN_FUZZ_REPLAY") is { Length: > 0 } text
            ? ulong.Parse(text.Replace("0x", "", StringComparison.OrdinalIgnoreCase), NumberStyles.HexNumber, CultureInfo.InvariantCulture)
            : null;

    private static ulong? EnvironmentSeed() =>
        Environment.GetEnvironmentVariable("MLAGEN_FUZZ_SEED") is { Length: > 0 } text
            ? ulong.Parse(text.Replace("0x", "", StringComparison.OrdinalIgnoreCase), NumberStyles.HexNumber, CultureInfo.InvariantCulture)
            : null;

    private static int? EnvironmentInt(string name) =>
        Environment.GetEnvironmentVariable(name) is { Length: > 0 } text ? int.Parse(text, CultureInfo.InvariantCulture) : null;
}

internal enum ExpectationKind
{
    /// <summary>The MLA diagnostics must be exactly these; files are generated exactly when accepted.</summary>
    Exact,

    /// <summary>The constructor call does not bind (count or types): a compiler error, and the generator adds nothing.</summary>
    AttributeDoesNotBind,

    /// <summary>A named argument is a compiler error (wrong type, repeated, unknown): the generator only must not throw.</summary>
    CompilerError,
}

/// <summary>One expected MLA diagnostic: its ID and the source text it must point at.</summary>
internal sealed record ExpectedDiagnostic(string Id, string At)
{
    public override string ToString() => $"{Id} at '{At}'";
}

internal sealed record Expectation(ExpectationKind Kind, IReadOnlyList<ExpectedDiagnostic> Diagnostics, bool Accepted);

/// <summary>An attribute argument as written, the value C# gives it, and whether it converts to the parameter's type.</summary>
internal sealed record ArgValue(string Text, double Value, bool WellTyped)
{
    public int Int => (int)Value;
}

internal enum TargetKind
{
    PartialClass, Class, StaticPartialClass, SealedPartialClass, AbstractPartialClass, PartialRecord, PartialRecordClass,
    Record, PartialRecordStruct, PartialStruct, ReadonlyStruct, PartialInterface, FilePartialClass, Enum, Delegate,
}

internal enum ContainerKind
{
    PartialClass, Class, StaticPartialClass, PartialStruct, PartialRecord, PartialRecordStruct, PartialInterface, Record, FilePartialClass,
}

internal enum NamespaceStyle { Global, FileScoped, Block, NestedBlocks, KeywordFileScoped }

/// <summary>
/// A second [MlaConfig]: in the same attribute list, in another list, on another partial declaration of the type,
/// or on a declaration of the same name that does not merge with it (a struct beside a class: CS0101/CS0261).
/// </summary>
internal enum DuplicateStyle { None, SameList, SeparateLists, OtherPartialDeclaration, ConflictingDeclaration }

internal sealed record Container(ContainerKind Kind, bool Generic);

internal sealed record NamedArg(string Name, ArgValue Value);

/// <summary>One [MlaConfig] application: the constructor arguments as written (possibly too few, too many or named) and the named properties.</summary>
internal sealed record AttributeCase(
    string Form, bool TypeTarget, IReadOnlyList<ArgValue> Positional, int NamedColonFrom, IReadOnlyList<int> NamedColonOrder,
    IReadOnlyList<NamedArg> Named, bool UnknownNamed)
{
    private static readonly string[] ParameterNames = { "dModel", "heads", "latentRank", "ropeDim" };

    /// <summary>The attribute's syntax text (what diagnostics on the whole attribute point at), and each argument's text.</summary>
    public (string Text, string[] PositionalText, Dictionary<string, string> NamedText) Render()
    {
        var args = new List<string>();
        var positionalText = new string[Positional.Count];
        for (int i = 0; i < Math.Min(NamedColonFrom, Positional.Count); i++)
        {
            positionalText[i] = Positional[i].Text;
            args.Add(positionalText[i]);
        }
        foreach (int i in NamedColonOrder)
        {
            positionalText[i] = ParameterNames[i] + ": " + Positional[i].Text;
            args.Add(positionalText[i]);
        }
        var namedText = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var n in Named)
        {
            string argument = n.Name + " = " + n.Value.Text;
            namedText.TryAdd(n.Name, argument);
            args.Add(argument);
        }
        if (UnknownNamed)
            args.Add("Foo = 1");
        // [MlaConfig] without parentheses when there is nothing to pass.
        string text = args.Count == 0 ? Form : Form + "(" + string.Join(", ", args) + ")";
        return (text, positionalText, namedText);
    }
}

/// <summary>A whole fuzz case: the user's source, the oracle's expectation, and the identifier of the attributed type.</summary>
internal sealed record FuzzCase(string Source, Expectation Expected, string TargetIdentifier);

/// <summary>
/// The target and attribute of one case, before rendering. Rendering and the oracle both read it, so the expected
/// diagnostics can name the exact argument text they must point at.
/// </summary>
internal sealed record CaseShape(
    NamespaceStyle Namespace, IReadOnlyList<Container> Containers, TargetKind Target, bool Generic, string Name,
    AttributeCase Attribute, DuplicateStyle Duplicate, AttributeCase Second)
{
    private static readonly string[] ContainerNames = { "Outer", "Holder", "@event" };

    public FuzzCase ToCase()
    {
        var (attributeText, positionalText, namedText) = Attribute.Render();
        var (secondText, _, _) = Second.Render();
        string Wrap(string text, AttributeCase a) => (a.TypeTarget ? "type: " : "") + text;

        var body = new StringBuilder();
        string attributeLists = Duplicate switch
        {
            DuplicateStyle.SameList => $"[{Wrap(attributeText, Attribute)}, {secondText}]",
            DuplicateStyle.SeparateLists => $"[{Wrap(attributeText, Attribute)}][{Wrap(secondText, Second)}]",
            _ => $"[{Wrap(attributeText, Attribute)}]",
        };
        string typeParameters = Generic ? "<T9>" : "";
        body.Append(attributeLists).Append(' ').Append(Declaration(Target, Name, typeParameters));
        if (Duplicate == DuplicateStyle.OtherPartialDeclaration)
            body.Append('\n').Append($"[{Wrap(secondText, Second)}] ").Append(Declaration(Target, Name, typeParameters));
        if (Duplicate == DuplicateStyle.ConflictingDeclaration)
        {
            var other = Target is TargetKind.PartialRecordStruct or TargetKind.PartialStruct or TargetKind.ReadonlyStruct or TargetKind.PartialInterface
                ? TargetKind.PartialClass : TargetKind.PartialStruct;
            body.Append('\n').Append($"[{Wrap(secondText, Second)}] ").Append(Declaration(other, Name, typeParameters));
        }

        string inner = body.ToString();
        for (int i = Containers.Count - 1; i >= 0; i--)
        {
            var c = Containers[i];
            string generic = c.Generic ? $"<T{i}>" : "";
            inner = $"{ContainerKeyword(c.Kind)} {ContainerNames[i]}{generic}\n{{\n{Indent(inner)}\n}}";
        }

        var source = new StringBuilder("using MlaGen;\nusing Cfg = MlaGen.MlaConfigAttribute;\n");
        switch (Namespace)
        {
            case NamespaceStyle.Global: source.Append(inner).Append('\n'); break;
            case NamespaceStyle.FileScoped: source.Append("namespace Fuzz.Models;\n").Append(inner).Append('\n'); break;
            case NamespaceStyle.KeywordFileScoped: source.Append("namespace @class.@namespace;\n").Append(inner).Append('\n'); break;
            case NamespaceStyle.Block: source.Append("namespace Fuzz\n{\n").Append(Indent(inner)).Append("\n}\n"); break;
            default: source.Append("namespace A\n{\n    namespace B\n    {\n").Append(Indent(Indent(inner))).Append("\n    }\n}\n"); break;
        }

        var expected = MlaRulesOracle.Expect(this, attributeText, positionalText, namedText);
        return new FuzzCase(source.ToString(), expected, Name);
    }

    private static string Indent(string text) => "    " + text.Replace("\n", "\n    ", StringComparison.Ordinal).Replace("\n    \n", "\n\n", StringComparison.Ordinal);

    private static string Declaration(TargetKind kind, string name, string typeParameters) => kind switch
    {
        TargetKind.PartialClass => $"public partial class {name}{typeParameters} {{ }}",
        TargetKind.Class => $"public class {name}{typeParameters} {{ }}",
        TargetKind.StaticPartialClass => $"public static partial class {name}{typeParameters} {{ }}",
        TargetKind.SealedPartialClass => $"public sealed partial class {name}{typeParameters} {{ }}",
        TargetKind.AbstractPartialClass => $"public abstract partial class {name}{typeParameters} {{ }}",
        TargetKind.PartialRecord => $"public partial record {name}{typeParameters} {{ }}",
        TargetKind.PartialRecordClass => $"public partial record class {name}{typeParameters} {{ }}",
        TargetKind.Record => $"public record {name}{typeParameters} {{ }}",
        TargetKind.PartialRecordStruct => $"public partial record struct {name}{typeParameters} {{ }}",
        TargetKind.PartialStruct => $"public partial struct {name}{typeParameters} {{ }}",
        TargetKind.ReadonlyStruct => $"public readonly struct {name}{typeParameters} {{ }}",
        TargetKind.PartialInterface => $"public partial interface {name}{typeParameters} {{ }}",
        TargetKind.FilePartialClass => $"file partial class {name}{typeParameters} {{ }}",
        TargetKind.Enum => $"public enum {name} {{ A }}",
        _ => $"public delegate void {name}{typeParameters}();",
    };

    private static string ContainerKeyword(ContainerKind kind) => kind switch
    {
        ContainerKind.PartialClass => "public partial class",
        ContainerKind.Class => "public class",
        ContainerKind.StaticPartialClass => "public static partial class",
        ContainerKind.PartialStruct => "public partial struct",
        ContainerKind.PartialRecord => "public partial record",
        ContainerKind.PartialRecordStruct => "public partial record struct",
        ContainerKind.PartialInterface => "public partial interface",
        ContainerKind.Record => "public record",
        _ => "file partial class",
    };
}

/// <summary>
/// An independent statement of the [MlaConfig] rules, written from DiagnosticDescriptors' messages, KernelLimits and
/// the attribute's documentation, not from the parser's code: which MLA diagnostics a case must get and where.
/// </summary>
internal static class MlaRulesOracle
{
    private const int MaxLatentRank = 1024, MaxRopeDim = 256, MaxHeadDim = 512, MaxHeads = 1024, MaxModelDim = 65536;
    private const int MaxPositionsLimit = 1 << 24;

    public static Expectation Expect(CaseShape c, string attributeText, string[] positionalText, Dictionary<string, string> namedText)
    {
        var a = c.Attribute;
        // AttributeTargets.Class is enforced by the compiler; the generator only looks at type declarations.
        bool typeDeclaration = c.Target is not (TargetKind.Enum or TargetKind.Delegate);
        if (a.Positional.Count != 4 || a.Positional.Any(p => !p.WellTyped))
            return new Expectation(ExpectationKind.AttributeDoesNotBind, Array.Empty<ExpectedDiagnostic>(), false);
        if (a.UnknownNamed || a.Named.Any(n => !n.Value.WellTyped) || a.Named.Select(n => n.Name).Distinct().Count() != a.Named.Count)
            return new Expectation(ExpectationKind.CompilerError, Array.Empty<ExpectedDiagnostic>(), false);
        if (!typeDeclaration)
            return new Expectation(ExpectationKind.Exact, Array.Empty<ExpectedDiagnostic>(), false);

        var list = new List<ExpectedDiagnostic>();
        string identifier = c.Name;
        bool typeOk = TypeRules(c, identifier, list);

        string AtNamed(string name) => namedText.TryGetValue(name, out var t) ? t : attributeText;
        bool shapeOk = ShapeRules(a, positionalText, AtNamed, attributeText, list, out bool tensorCore);
        if (shapeOk && !tensorCore)
            list.Add(new ExpectedDiagnostic("MLA014", attributeText));
        return new Expectation(ExpectationKind.Exact, list, typeOk && shapeOk);
    }

    private static bool TypeRules(CaseShape c, string identifier, List<ExpectedDiagnostic> list)
    {
        bool notAClass = c.Target is TargetKind.PartialRecordStruct or TargetKind.PartialStruct or TargetKind.ReadonlyStruct or TargetKind.PartialInterface;
        bool fileLocal = c.Target == TargetKind.FilePartialClass || c.Containers.Any(k => k.Kind == ContainerKind.FilePartialClass);
        // A file-local class cannot receive members from the generator's file (a partial declaration there would be another type).
        if (notAClass || fileLocal)
        {
            list.Add(new ExpectedDiagnostic("MLA004", identifier));
            return false;
        }
        bool ok = true;
        if (c.Target is TargetKind.Class or TargetKind.Record)
        {
            list.Add(new ExpectedDiagnostic("MLA001", identifier));
            ok = false;
        }
        foreach (var container in c.Containers)
        {
            if (container.Kind is ContainerKind.Class or ContainerKind.Record)
            {
                list.Add(new ExpectedDiagnostic("MLA002", identifier));
                ok = false;
            }
        }
        if (c.Generic || c.Containers.Any(k => k.Generic))
        {
            list.Add(new ExpectedDiagnostic("MLA003", identifier));
            ok = false;
        }
        return ok;
    }

    private static bool ShapeRules(AttributeCase a, string[] positionalText, Func<string, string> at, string attributeText,
        List<ExpectedDiagnostic> list, out bool tensorCore)
    {
        tensorCore = false;
        int before = list.Count;
        int Int(string name, int fallback) => a.Named.FirstOrDefault(n => n.Name == name)?.Value.Int ?? fallback;
        double Double(string name, double fallback) => a.Named.FirstOrDefault(n => n.Name == name)?.Value.Value ?? fallback;
        void Add(string id, string where) => list.Add(new ExpectedDiagnostic(id, where));

        int dModel = a.Positional[0].Int, heads = a.Positional[1].Int, latent = a.Positional[2].Int, rope = a.Positional[3].Int;
        int qLatent = Int("QLatentRank", 0), nope = Int("NopeHeadDim", 128), v = Int("VHeadDim", 128), ropeStyle = Int("RopeStyle", 0);
        int original = Int("YarnOriginalMaxPositions", 4096), maxPositions = Int("MaxPositions", 0), pageSize = Int("PageSize", 64);
        double theta = Double("RopeTheta", 10000), factor = Double("YarnFactor", 1), betaFast = Double("YarnBetaFast", 32);
        double betaSlow = Double("YarnBetaSlow", 1), mscale = Double("YarnMscale", 1), mscaleAllDim = Double("YarnMscaleAllDim", 1);
        double epsilon = Double("RmsNormEpsilon", 1e-6);

        // MLA005: every dimension at least 1; QLatentRank 0 (plain q_proj) or more.
        int[] positional = { dModel, heads, latent, rope };
        for (int i = 0; i < 4; i++)
            if (positional[i] < 1)
                Add("MLA005", positionalText[i]);
        if (qLatent < 0)
            Add("MLA005", at("QLatentRank"));
        if (nope < 1)
            Add("MLA005", at("NopeHeadDim"));
        if (v < 1)
            Add("MLA005", at("VHeadDim"));
        // MLA006: RoPE rotates pairs.
        if (rope > 0 && rope % 2 == 1)
            Add("MLA006", positionalText[3]);
        // MLA007: KernelLimits.
        if (dModel > MaxModelDim) Add("MLA007", positionalText[0]);
        if (heads > MaxHeads) Add("MLA007", positionalText[1]);
        if (latent > MaxLatentRank) Add("MLA007", positionalText[2]);
        if (rope > MaxRopeDim) Add("MLA007", positionalText[3]);
        if (qLatent > MaxModelDim) Add("MLA007", at("QLatentRank"));
        if (nope > MaxHeadDim) Add("MLA007", at("NopeHeadDim"));
        if (v > MaxHeadDim) Add("MLA007", at("VHeadDim"));
        // MLA008: a power of two from 16 to 4096.
        if (!(pageSize >= 16 && pageSize <= 4096 && (pageSize & (pageSize - 1)) == 0))
            Add("MLA008", at("PageSize"));
        // MLA010: finite and positive, as the float the kernels use.
        float epsilonAsFloat = (float)epsilon;
        if (!(epsilonAsFloat > 0 && float.IsFinite(epsilonAsFloat)))
            Add("MLA010", at("RmsNormEpsilon"));
        // MLA011: finite and greater than 1.
        if (!(theta > 1 && double.IsFinite(theta)))
            Add("MLA011", at("RopeTheta"));
        // MLA013: Interleaved (0) or RotateHalf (1).
        if (ropeStyle is not (0 or 1))
            Add("MLA013", at("RopeStyle"));
        // MLA009: YarnFactor finite and at least 1; the other YaRN settings only matter when it is above 1.
        bool yarn = double.IsFinite(factor) && factor > 1;
        if (!(double.IsFinite(factor) && factor >= 1))
            Add("MLA009", at("YarnFactor"));
        if (yarn)
        {
            if (original < 1)
                Add("MLA009", at("YarnOriginalMaxPositions"));
            bool fastOk = double.IsFinite(betaFast) && betaFast >= 0;
            bool slowOk = double.IsFinite(betaSlow) && betaSlow > 0;
            if (!fastOk)
                Add("MLA009", at("YarnBetaFast"));
            if (!slowOk)
                Add("MLA009", at("YarnBetaSlow"));
            else if (fastOk && betaFast <= betaSlow)
                Add("MLA009", at("YarnBetaFast"));
            if (!(double.IsFinite(mscale) && mscale >= 0))
                Add("MLA009", at("YarnMscale"));
            if (!(double.IsFinite(mscaleAllDim) && mscaleAllDim >= 0))
                Add("MLA009", at("YarnMscaleAllDim"));
            if (maxPositions > 0 && original >= maxPositions)
                Add("MLA009", at("YarnOriginalMaxPositions"));
        }
        // MLA012: 0 (derived) or 1 .. 2^24; the derived value must be in range too.
        if (maxPositions < 0 || maxPositions > MaxPositionsLimit)
            Add("MLA012", at("MaxPositions"));
        else if (maxPositions == 0 && Math.Max(1, original) * (yarn ? factor : 1) > MaxPositionsLimit)
            Add("MLA012", at("MaxPositions"));
        if (list.Count > before)
            return false;

        // MLA007 again: every weight's element count must fit a 32-bit index.
        long qIn = qLatent > 0 ? qLatent : dModel;
        long[] counts =
        {
            heads * (long)(nope + rope) * qIn, heads * (long)(nope + v) * latent, (long)dModel * heads * v,
            (long)qLatent * dModel, (long)(latent + rope) * dModel,
        };
        foreach (long count in counts)
            if (count > int.MaxValue)
                Add("MLA007", attributeText);
        if (list.Count > before)
            return false;

        // MLA009 again: the constants YaRN derives must be finite floats in the generated kernels.
        if (yarn)
        {
            double Mscale(double m) => 0.1 * m * Math.Log(factor) + 1;
            double scale = Math.Pow(nope + rope, -0.5) * Mscale(mscaleAllDim) * Mscale(mscaleAllDim);
            float scale32 = (float)scale;
            if (!float.IsFinite(scale32) || !float.IsFinite((float)(scale32 * 1.4426950408889634)))
                Add("MLA009", at("YarnMscaleAllDim"));
            if (!float.IsFinite((float)Mscale(mscale)))
                Add("MLA009", at("YarnMscale"));
            // DeepSeek's yarn_find_correction_range: floor/ceil of the β dimensions, clamped to [0, d − 1].
            double Dimension(double beta) => rope * Math.Log(original / (beta * 2 * Math.PI)) / (2 * Math.Log(theta));
            double low = Math.Max(Math.Floor(Dimension(betaFast)), 0), high = Math.Min(Math.Ceiling(Dimension(betaSlow)), rope - 1);
            if (low == high)
                high += 0.001;
            bool finite = true;
            for (int i = 0; i < rope / 2; i++)
            {
                double ramp = (i - low) / (high - low);
                double smooth = 1 - (ramp < 0 ? 0 : ramp > 1 ? 1 : ramp);
                double frequency = Math.Pow(theta, -2.0 * i / rope) * (smooth + (1 - smooth) / factor);
                finite &= double.IsFinite(frequency) && !double.IsNaN(ramp);
            }
            if (!finite)
                Add("MLA009", at("YarnBetaFast"));
        }
        if (list.Count > before)
            return false;

        // MLA014 (warning): the tensor-core decode kernel tiles the latent by 64 up to 512 and RoPE by 16 up to 64.
        tensorCore = latent % 64 == 0 && latent <= 512 && rope % 16 == 0 && rope <= 64;
        return true;
    }
}

/// <summary>CsCheck generators of fuzz cases.</summary>
internal static class FuzzCases
{
    // A class named like a generated member (Spec, Heads, DModel, ...) is MLA015, covered by DiagnosticTests; the
    // oracle here does not model it, so those names are left out. 'var' must work: the emitters never write 'var'.
    private static readonly string[] Names = { "C", "Attention", "MlaLayerConfig", "Ätt", "@class", "Set", "_x1", "var" };

    // Edge values every integer argument is tried with.
    private static readonly int[] IntEdges = { 0, -1, 1, 2, 3, int.MinValue, int.MaxValue, int.MaxValue - 1, 1 << 30, -65536 };
    private static readonly double[] DoubleEdges =
    {
        double.NaN, double.PositiveInfinity, double.NegativeInfinity, 0, -0.0, -1, 1, 0.5, double.Epsilon, double.MaxValue,
        -double.MaxValue, 1e300, 1e-300, 1e-320, 1e39, 1e-46, 3.4028235677973366e38,
    };

    private sealed record Property(string Name, bool IsDouble, bool IsEnum, Gen<double> Valid, double[] Edges);

    private static readonly Property[] Properties =
    {
        new("QLatentRank", false, false, Ints(0, 0, 1, 48, 1536), new double[] { 65536, 65537, -1 }),
        new("NopeHeadDim", false, false, Ints(1, 16, 32, 128, 512), new double[] { 512, 513 }),
        new("VHeadDim", false, false, Ints(1, 16, 24, 128, 512), new double[] { 512, 513 }),
        new("RopeTheta", true, false, Doubles(10000, 50000, 1.5, 1e6, 1.0000001, 1e300), new[] { 1.0, 0.999 }),
        new("RopeStyle", false, true, Ints(0, 1), new double[] { 2, 7 }),
        new("YarnFactor", true, false, Doubles(1, 4, 40, 1.5, 1e6), new[] { 0.999, 1e308 }),
        new("YarnOriginalMaxPositions", false, false, Ints(1, 32, 64, 4096), new double[] { 1 << 24, 1 << 23 }),
        new("YarnBetaFast", true, false, Doubles(32, 8, 2), new[] { 1e-310, 1e-306, 1e308 }),
        new("YarnBetaSlow", true, false, Doubles(1, 0.5, 1e-9), new[] { 32.0, 1e-320 }),
        new("YarnMscale", true, false, Doubles(0, 0.707, 1), new[] { 1e38, 1e300 }),
        new("YarnMscaleAllDim", true, false, Doubles(0, 0.707, 1), new[] { 1e18, 1e19, 1e300 }),
        new("MaxPositions", false, false, Ints(0, 0, 1, 4096, 163840, 1 << 24), new double[] { (1 << 24) + 1, 1 << 23 }),
        new("PageSize", false, false, Ints(16, 32, 64, 4096), new double[] { 8, 15, 17, 48, 4097, 8192, 2048 }),
        new("RmsNormEpsilon", true, false, Doubles(1e-6, 1e-5, 0.5, 1e-30, 1e30), new[] { 1e-50, 1e39 }),
    };

    private static readonly Gen<double>[] ValidPositional =
    {
        Ints(1, 8, 32, 48, 64, 100, 128, 2048, 7168, 65536),
        Ints(1, 2, 3, 4, 16, 128, 1024),
        Ints(1, 16, 31, 32, 40, 64, 128, 512, 1024),
        Ints(2, 8, 16, 32, 64, 256),
    };

    private static readonly double[][] PositionalEdges =
    {
        new double[] { 65536, 65537 }, new double[] { 1024, 1025 }, new double[] { 1024, 1025, 2048 }, new double[] { 255, 256, 257, 258, 15 },
    };

    /// <summary>Cases for the rules: about a quarter of values are edges or invalid, with compiler-error variants.</summary>
    public static readonly Gen<FuzzCase> Rules = Case(edgePercent: 22, errorPercent: 8, odd: true);

    /// <summary>Cases that the rules mostly accept, for the compile check: valid values, yet every kind of accepted target.</summary>
    public static readonly Gen<FuzzCase> MostlyValid = Case(edgePercent: 2, errorPercent: 0, odd: false);

    private static Gen<double> Ints(params int[] values) => Gen.OneOfConst(values.Select(v => (double)v).ToArray());

    private static Gen<double> Doubles(params double[] values) => Gen.OneOfConst(values);

    private static Gen<FuzzCase> Case(int edgePercent, int errorPercent, bool odd)
    {
        var targets = odd
            ? Gen.Frequency(
                (30, Gen.Const(TargetKind.PartialClass)), (4, Gen.Const(TargetKind.Class)), (4, Gen.Const(TargetKind.StaticPartialClass)),
                (3, Gen.Const(TargetKind.SealedPartialClass)), (3, Gen.Const(TargetKind.AbstractPartialClass)), (4, Gen.Const(TargetKind.PartialRecord)),
                (3, Gen.Const(TargetKind.PartialRecordClass)), (3, Gen.Const(TargetKind.Record)), (4, Gen.Const(TargetKind.PartialRecordStruct)),
                (4, Gen.Const(TargetKind.PartialStruct)), (2, Gen.Const(TargetKind.ReadonlyStruct)), (4, Gen.Const(TargetKind.PartialInterface)),
                (3, Gen.Const(TargetKind.FilePartialClass)), (2, Gen.Const(TargetKind.Enum)), (2, Gen.Const(TargetKind.Delegate)))
            : Gen.OneOfConst(TargetKind.PartialClass, TargetKind.PartialClass, TargetKind.PartialClass, TargetKind.StaticPartialClass,
                TargetKind.SealedPartialClass, TargetKind.AbstractPartialClass, TargetKind.PartialRecord, TargetKind.PartialRecordClass);
        var containerKinds = odd
            ? Gen.Frequency(
                (10, Gen.Const(ContainerKind.PartialClass)), (3, Gen.Const(ContainerKind.Class)), (3, Gen.Const(ContainerKind.StaticPartialClass)),
                (3, Gen.Const(ContainerKind.PartialStruct)), (2, Gen.Const(ContainerKind.PartialRecord)), (2, Gen.Const(ContainerKind.PartialRecordStruct)),
                (2, Gen.Const(ContainerKind.PartialInterface)), (2, Gen.Const(ContainerKind.Record)), (2, Gen.Const(ContainerKind.FilePartialClass)))
            : Gen.OneOfConst(ContainerKind.PartialClass, ContainerKind.StaticPartialClass, ContainerKind.PartialStruct, ContainerKind.PartialRecord,
                ContainerKind.PartialRecordStruct, ContainerKind.PartialInterface);
        var containerGen =
            from kind in containerKinds
            from generic in Gen.Int[0, 99].Select(p => odd && p < 6)
            select new Container(kind, generic);
        var containers =
            from count in Gen.Frequency((6, Gen.Const(0)), (3, Gen.Const(1)), (1, Gen.Const(2)))
            from list in containerGen.Array[count]
            select (IReadOnlyList<Container>)list
                // 'file' is allowed on top-level types only.
                .Select((k, i) => i > 0 && k.Kind == ContainerKind.FilePartialClass ? k with { Kind = ContainerKind.PartialClass } : k).ToArray();
        var namespaces = Gen.OneOfConst(NamespaceStyle.Global, NamespaceStyle.FileScoped, NamespaceStyle.FileScoped, NamespaceStyle.Block,
            NamespaceStyle.NestedBlocks, NamespaceStyle.KeywordFileScoped);
        var duplicates = odd
            ? Gen.Frequency((88, Gen.Const(DuplicateStyle.None)), (3, Gen.Const(DuplicateStyle.SameList)),
                (3, Gen.Const(DuplicateStyle.SeparateLists)), (3, Gen.Const(DuplicateStyle.OtherPartialDeclaration)),
                (3, Gen.Const(DuplicateStyle.ConflictingDeclaration)))
            : Gen.Const(DuplicateStyle.None);
        var attribute = Attribute(edgePercent, errorPercent);

        return
            from ns in namespaces
            from containerList in containers
            from target in targets
            from generic in Gen.Int[0, 99].Select(p => odd && p < 6 && target is not TargetKind.Enum)
            from name in Gen.OneOfConst(Names)
            from attr in attribute
            from duplicate in duplicates
            from second in Attribute(edgePercent, 0)
            let fixedTarget = target == TargetKind.FilePartialClass && containerList.Count > 0 ? TargetKind.PartialClass : target
            // A second partial declaration only makes sense for partial targets.
            let fixedDuplicate = duplicate == DuplicateStyle.OtherPartialDeclaration
                && fixedTarget is not (TargetKind.PartialClass or TargetKind.StaticPartialClass or TargetKind.PartialRecord or TargetKind.PartialStruct)
                ? DuplicateStyle.SeparateLists
                // A file-local type may share its name with another type: that one would be a second, valid target.
                : duplicate == DuplicateStyle.ConflictingDeclaration && fixedTarget == TargetKind.FilePartialClass ? DuplicateStyle.None
                : duplicate
            select new CaseShape(ns, containerList, fixedTarget, generic, name, attr, fixedDuplicate, second).ToCase();
    }

    /// <summary>
    /// One attribute application. With probability <paramref name="errorPercent"/> the constructor call does not bind
    /// (too few or too many arguments, or one of the wrong type), and with the same probability a named argument is a
    /// compiler error (wrong type, repeated, or unknown); otherwise everything converts and only the values are odd.
    /// </summary>
    private static Gen<AttributeCase> Attribute(int edgePercent, int errorPercent)
    {
        var forms = Gen.OneOfConst("MlaConfig", "MlaConfigAttribute", "MlaGen.MlaConfig", "global::MlaGen.MlaConfigAttribute", "Cfg");
        var positional = Combine(new[]
        {
            PositionalValue(0, edgePercent), PositionalValue(1, edgePercent), PositionalValue(2, edgePercent), PositionalValue(3, edgePercent),
        });
        var named =
            from present in Gen.Int[0, 99].Array[Properties.Length]
            from values in Combine(Properties.Select(p => PropertyValue(p, edgePercent)).ToArray())
            from order in Gen.Shuffle(Enumerable.Range(0, Properties.Length).ToArray())
            select order.Where(i => present[i] < 35).Select(i => new NamedArg(Properties[i].Name, values[i])).ToList();

        return
            from form in forms
            from typeTarget in Gen.Int[0, 99].Select(p => p < 5)
            from values in positional
            from style in Gen.Int[0, 9]
            from namedFrom in Gen.Int[0, 4]
            from shuffled in Gen.Shuffle(new[] { 0, 1, 2, 3 })
            from namedArgs in named
            from errorRoll in Gen.Int[0, 99]
            from errorKind in Gen.Int[0, 5]
            from illTypedInt in IllTypedInt
            from illTypedProperty in Gen.Int[0, Properties.Length - 1].SelectMany(i => IllTyped(Properties[i]).Select(v => new NamedArg(Properties[i].Name, v)))
            let bindError = errorRoll < errorPercent
            let namedError = !bindError && errorRoll < 2 * errorPercent
            let args = bindError ? BreakConstructor(values, errorKind, illTypedInt, namedFrom % 4) : values
            let colonFrom = args.Count != 4 || style < 6 ? args.Count : style < 8 ? 0 : namedFrom
            let order = (IReadOnlyList<int>)shuffled.Where(i => i >= colonFrom && i < args.Count).ToArray()
            let finalNamed = (IReadOnlyList<NamedArg>)(!namedError ? namedArgs
                : errorKind < 3 ? namedArgs.Append(illTypedProperty).ToList()
                : errorKind < 5 && namedArgs.Count > 0 ? namedArgs.Append(namedArgs[0]).ToList()
                : namedArgs)
            let unknown = namedError && (errorKind == 5 || (errorKind >= 3 && namedArgs.Count == 0))
            select new AttributeCase(form, typeTarget, args, colonFrom, order, finalNamed, unknown);
    }

    /// <summary>Too few (0, 2, 3) or too many (5) constructor arguments, or one that does not convert to int.</summary>
    private static IReadOnlyList<ArgValue> BreakConstructor(ArgValue[] values, int kind, ArgValue illTyped, int which) => kind switch
    {
        0 => Array.Empty<ArgValue>(),
        1 => values.Take(2).ToArray(),
        2 => values.Take(3).ToArray(),
        3 => values.Append(values[1]).ToArray(),
        _ => values.Select((v, i) => i == which ? illTyped : v).ToArray(),
    };

    /// <summary>Many generators into one generator of an array.</summary>
    private static Gen<ArgValue[]> Combine(Gen<ArgValue>[] gens) =>
        gens.Aggregate(Gen.Const(Array.Empty<ArgValue>()), (acc, g) => acc.SelectMany(list => g.Select(v => list.Append(v).ToArray())));

    private static Gen<ArgValue> PositionalValue(int index, int edgePercent) =>
        Gen.Int[0, 99].SelectMany(p => p < edgePercent
            ? Gen.OneOfConst(IntEdges.Select(e => (double)e).Concat(PositionalEdges[index]).ToArray()).SelectMany(IntText)
            : ValidPositional[index].SelectMany(IntText));

    private static Gen<ArgValue> PropertyValue(Property p, int edgePercent)
    {
        Gen<ArgValue> text(double v) => p.IsEnum ? EnumText(v) : p.IsDouble ? DoubleText(v) : IntText(v);
        var edges = p.IsDouble ? DoubleEdges.Concat(p.Edges).ToArray() : IntEdges.Select(e => (double)e).Concat(p.Edges).ToArray();
        return Gen.Int[0, 99].SelectMany(r => r < edgePercent ? Gen.OneOfConst(edges).SelectMany(text) : p.Valid.SelectMany(text));
    }

    /// <summary>Constants that do not convert to the property's type (compiler errors CS0029, CS0266, CS0037).</summary>
    private static Gen<ArgValue> IllTyped(Property p) =>
        p.IsEnum ? Gen.OneOfConst(new ArgValue("1", 1, false), new ArgValue("\"RotateHalf\"", 0, false))
        : p.IsDouble ? Gen.OneOfConst(new ArgValue("\"abc\"", 0, false), new ArgValue("1m", 1, false), new ArgValue("true", 0, false))
        : IllTypedInt;

    private static readonly Gen<ArgValue> IllTypedInt = Gen.OneOfConst(
        new ArgValue("\"64\"", 0, false), new ArgValue("64L", 64, false), new ArgValue("64.0", 64, false), new ArgValue("true", 0, false),
        new ArgValue("null", 0, false), new ArgValue("2147483648", 0, false), new ArgValue("64u", 64, false), new ArgValue("1.5", 1, false));

    /// <summary>Ways to write an int constant C# converts to int.</summary>
    private static Gen<ArgValue> IntText(double value)
    {
        int v = (int)value;
        string plain = v.ToString(CultureInfo.InvariantCulture);
        var forms = new List<string> { plain, plain };
        if (v == int.MinValue)
            forms.Add("int.MinValue");
        if (v == int.MaxValue)
            forms.Add("int.MaxValue");
        if (v >= 0)
            forms.Add("0x" + v.ToString("X", CultureInfo.InvariantCulture));
        if (v > 0 && (v & (v - 1)) == 0)
            forms.Add("1 << " + BitOperationsLog2(v).ToString(CultureInfo.InvariantCulture));
        if (v == 65)
            forms.Add("'A'");
        if (v > int.MinValue && v < 0)
            forms.Add("-(" + (-v).ToString(CultureInfo.InvariantCulture) + ")");
        return Gen.OneOfConst(forms.ToArray()).Select(t => new ArgValue(t, v, true));
    }

    private static int BitOperationsLog2(int v) => System.Numerics.BitOperations.Log2((uint)v);

    private static Gen<ArgValue> EnumText(double value)
    {
        int v = (int)value;
        string text = v switch
        {
            0 => "global::MlaGen.RopeStyle.Interleaved",
            1 => "global::MlaGen.RopeStyle.RotateHalf",
            _ => "(global::MlaGen.RopeStyle)(" + v.ToString(CultureInfo.InvariantCulture) + ")",
        };
        return Gen.Const(new ArgValue(text, v, true));
    }

    /// <summary>Ways to write a constant C# converts to double: literals, named constants, int and float constants, constant arithmetic.</summary>
    private static Gen<ArgValue> DoubleText(double v)
    {
        var forms = new List<(string, double)>();
        if (double.IsNaN(v))
        {
            forms.Add(("double.NaN", v));
            forms.Add(("0.0 / 0", v));
            forms.Add(("float.NaN", v));
        }
        else if (double.IsPositiveInfinity(v))
        {
            forms.Add(("double.PositiveInfinity", v));
            forms.Add(("1.0 / 0", v));
            forms.Add(("float.PositiveInfinity", v));
        }
        else if (double.IsNegativeInfinity(v))
        {
            forms.Add(("double.NegativeInfinity", v));
            forms.Add(("-double.PositiveInfinity", v));
        }
        else
        {
            string r = v.ToString("R", CultureInfo.InvariantCulture);
            if (r == "-0")
                r = "-0.0";
            forms.Add((r, v));
            if (v == double.Epsilon)
                forms.Add(("double.Epsilon", v));
            if (v == double.MaxValue)
                forms.Add(("double.MaxValue", v));
            if (v == Math.Floor(v) && Math.Abs(v) < 1e9)
                forms.Add((((long)v).ToString(CultureInfo.InvariantCulture), v));
            float f = (float)v;
            if (float.IsFinite(f) && f != 0)
                forms.Add((f.ToString("R", CultureInfo.InvariantCulture) + "f", f));
        }
        return Gen.OneOfConst(forms.ToArray()).Select(t => new ArgValue(t.Item1, t.Item2, true));
    }
}
