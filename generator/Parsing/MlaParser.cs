using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using System.Threading;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using MlaGen.Generator.Diagnostics;
using MlaGen.Generator.Helpers;
using MlaGen.Generator.Model;

namespace MlaGen.Generator.Parsing;

/// <summary>What parsing one [MlaConfig] target gives: a spec when it is valid, and the diagnostics either way.</summary>
internal sealed record ParseResult(MlaClassSpec? Spec, EquatableArray<DiagnosticInfo> Diagnostics);

/// <summary>Turns the attributed symbol into a <see cref="MlaClassSpec"/>; every rule becomes a diagnostic, never an exception.</summary>
internal static class MlaParser
{
    public const string AttributeName = "MlaGen.MlaConfigAttribute";

    public static ParseResult Parse(GeneratorAttributeSyntaxContext context, CancellationToken cancellationToken)
    {
        var diagnostics = new List<DiagnosticInfo>();
        if (context.TargetSymbol is not INamedTypeSymbol type || context.TargetNode is not TypeDeclarationSyntax declaration)
            return new ParseResult(null, EquatableArray<DiagnosticInfo>.Empty);
        var attribute = context.Attributes.FirstOrDefault();
        // [MlaConfig] on several partial declarations is already a compiler error (CS0579); only the declaration that
        // holds the type's first [MlaConfig] is parsed, so the type gets one set of diagnostics and its files once
        // (emitting them per declaration would add the same hint names twice and make the generator throw).
        if (attribute is not null && !IsFirstOnType(type, attribute, declaration))
            return new ParseResult(null, EquatableArray<DiagnosticInfo>.Empty);
        // Likewise when declarations of one name do not merge into one type ('partial class C' beside 'partial record C',
        // CS0261/CS0101): the types share a full name and hint names, so only the first declared one is parsed.
        if (!IsFirstOfItsName(type))
            return new ParseResult(null, EquatableArray<DiagnosticInfo>.Empty);
        // A constructor that did not bind (wrong argument count or types) is already a compiler error; add nothing.
        if (attribute is null || attribute.AttributeConstructor is null || attribute.ConstructorArguments.Length != 4
            || attribute.ConstructorArguments.Any(a => a.Kind == TypedConstantKind.Error)
            || attribute.NamedArguments.Any(a => a.Value.Kind == TypedConstantKind.Error))
            return new ParseResult(null, EquatableArray<DiagnosticInfo>.Empty);

        var typeLocation = declaration.Identifier.GetLocation();
        string? keyword = CheckType(type, declaration, typeLocation, diagnostics, cancellationToken);
        var arguments = new AttributeArguments(attribute, cancellationToken);
        var shape = ReadShape(arguments, diagnostics);
        cancellationToken.ThrowIfCancellationRequested();

        string? whyNoTensorCore = shape is null ? null : KernelLimits.WhyNoTensorCoreDecode(shape);
        if (shape is not null && whyNoTensorCore is not null)
            diagnostics.Add(DiagnosticInfo.Create(DiagnosticDescriptors.NoTensorCorePath, arguments.AttributeLocation, type.Name, whyNoTensorCore));

        bool hasError = diagnostics.Any(d => d.Descriptor.DefaultSeverity == DiagnosticSeverity.Error);
        if (hasError || shape is null || keyword is null)
            return new ParseResult(null, diagnostics.ToEquatableArray());

        var containing = new List<ContainingTypeSpec>();
        for (var t = type.ContainingType; t is not null; t = t.ContainingType)
            containing.Insert(0, new ContainingTypeSpec(KeywordOf(t), t.Name));
        // Plain names (no '@'): they make hint names and the spec's name; the emitters escape keywords in code.
        string ns = NamespaceName(type.ContainingNamespace);
        var spec = new MlaClassSpec(ns, type.Name, keyword, containing.ToEquatableArray(), shape,
            LayoutMath.Derive(shape, whyNoTensorCore is null, KernelLimits.WhyNoTensorCorePrefill(shape) is null));
        return new ParseResult(spec, diagnostics.ToEquatableArray());
    }

    private static bool IsFirstOnType(INamedTypeSymbol type, AttributeData attribute, TypeDeclarationSyntax declaration)
    {
        foreach (var candidate in type.GetAttributes())
        {
            if (!SymbolEqualityComparer.Default.Equals(candidate.AttributeClass, attribute.AttributeClass))
                continue;
            var reference = candidate.ApplicationSyntaxReference;
            return reference is null
                || (reference.SyntaxTree == declaration.SyntaxTree && declaration.Span.Contains(reference.Span));
        }
        return true;
    }

    private static bool IsFirstOfItsName(INamedTypeSymbol type)
    {
        if (type.ContainingSymbol is not INamespaceOrTypeSymbol container)
            return true;
        var mine = FirstDeclaration(type);
        foreach (var other in container.GetTypeMembers(type.Name))
        {
            // File-local types may share a name by design (and never generate: MLA004).
            if (SymbolEqualityComparer.Default.Equals(other, type) || other.Arity != type.Arity || other.IsFileLocal || type.IsFileLocal)
                continue;
            var theirs = FirstDeclaration(other);
            int byFile = string.CompareOrdinal(theirs.Path, mine.Path);
            if (byFile < 0 || (byFile == 0 && theirs.Start < mine.Start))
                return false;
        }
        return true;
    }

    private static (string Path, int Start) FirstDeclaration(INamedTypeSymbol type)
    {
        (string Path, int Start) first = (Path: "\uffff", Start: int.MaxValue);
        foreach (var reference in type.DeclaringSyntaxReferences)
        {
            var here = (reference.SyntaxTree.FilePath, reference.Span.Start);
            int byFile = string.CompareOrdinal(here.FilePath, first.Path);
            if (byFile < 0 || (byFile == 0 && here.Start < first.Start))
                first = here;
        }
        return first;
    }

    private static string NamespaceName(INamespaceSymbol? ns)
    {
        var parts = new List<string>();
        for (var n = ns; n is { IsGlobalNamespace: false }; n = n.ContainingNamespace)
            parts.Insert(0, n.Name);
        return string.Join(".", parts);
    }

    /// <summary>Checks the target's kind, partial-ness and genericity; returns the keyword to emit, or null after an error.</summary>
    private static string? CheckType(INamedTypeSymbol type, TypeDeclarationSyntax declaration, Location location,
        List<DiagnosticInfo> diagnostics, CancellationToken cancellationToken)
    {
        if (type.TypeKind != TypeKind.Class)
        {
            string kind = type.IsRecord ? "record struct" : type.TypeKind.ToString().ToLowerInvariant();
            diagnostics.Add(DiagnosticInfo.Create(DiagnosticDescriptors.NotAClass, location, type.Name, WithArticle(kind)));
            return null;
        }
        // A file-local type cannot be extended from the generator's file: a 'partial class' there declares another type.
        for (var t = type; t is not null; t = t.ContainingType)
        {
            if (t.IsFileLocal)
            {
                string kind = ReferenceEquals(t, type)
                    ? "a file-local class (generated members cannot join it from another file)"
                    : $"a class inside file-local type '{t.Name}' (generated members cannot join it from another file)";
                diagnostics.Add(DiagnosticInfo.Create(DiagnosticDescriptors.NotAClass, location, type.Name, kind));
                return null;
            }
        }
        bool ok = true;
        if (GeneratedMembers.Names.Contains(type.Name))
        {
            diagnostics.Add(DiagnosticInfo.Create(DiagnosticDescriptors.NameCollidesWithGeneratedMember, location, type.Name));
            ok = false;
        }
        if (!declaration.Modifiers.Any(SyntaxKind.PartialKeyword))
        {
            diagnostics.Add(DiagnosticInfo.Create(DiagnosticDescriptors.ClassNotPartial, location, type.Name));
            ok = false;
        }
        for (var t = type.ContainingType; t is not null; t = t.ContainingType)
        {
            cancellationToken.ThrowIfCancellationRequested();
            bool partial = t.DeclaringSyntaxReferences.All(r =>
                r.GetSyntax(cancellationToken) is TypeDeclarationSyntax d && d.Modifiers.Any(SyntaxKind.PartialKeyword));
            if (!partial)
            {
                diagnostics.Add(DiagnosticInfo.Create(DiagnosticDescriptors.ContainingTypeNotPartial, location, t.Name, type.Name));
                ok = false;
            }
        }
        for (var t = type; t is not null; t = t.ContainingType)
        {
            if (t.TypeParameters.Length > 0)
            {
                diagnostics.Add(DiagnosticInfo.Create(DiagnosticDescriptors.GenericClass, location, type.Name));
                ok = false;
                break;
            }
        }
        return ok ? KeywordOf(type) : null;
    }

    private static string WithArticle(string noun) => ("aeiou".IndexOf(noun[0]) >= 0 ? "an " : "a ") + noun;

    private static string KeywordOf(INamedTypeSymbol t) => (t.IsRecord, t.TypeKind) switch
    {
        (true, TypeKind.Struct) => "record struct",
        (true, _) => "record",
        (_, TypeKind.Struct) => "struct",
        (_, TypeKind.Interface) => "interface",
        _ => "class",
    };

    private static MlaShapeSpec? ReadShape(AttributeArguments a, List<DiagnosticInfo> diagnostics)
    {
        int errorsBefore = diagnostics.Count;
        int dModel = a.Int(0, "dModel");
        int heads = a.Int(1, "heads");
        int latent = a.Int(2, "latentRank");
        int rope = a.Int(3, "ropeDim");
        int qLatent = a.Int("QLatentRank", 0);
        int nope = a.Int("NopeHeadDim", 128);
        int v = a.Int("VHeadDim", 128);
        double theta = a.Double("RopeTheta", 10000);
        int ropeStyle = a.Int("RopeStyle", 0);
        double yarnFactor = a.Double("YarnFactor", 1);
        int yarnOriginal = a.Int("YarnOriginalMaxPositions", 4096);
        double betaFast = a.Double("YarnBetaFast", 32);
        double betaSlow = a.Double("YarnBetaSlow", 1);
        double mscale = a.Double("YarnMscale", 1);
        double mscaleAllDim = a.Double("YarnMscaleAllDim", 1);
        int maxPositions = a.Int("MaxPositions", 0);
        int pageSize = a.Int("PageSize", 64);
        double eps = a.Double("RmsNormEpsilon", 1e-6);

        void Positive(int value, string name, Location? at, string rule = "at least 1")
        {
            if (value <= 0)
                diagnostics.Add(DiagnosticInfo.Create(DiagnosticDescriptors.DimensionNotPositive, at, name, value, rule));
        }
        void AtMost(int value, string name, Location? at, int limit, string reason)
        {
            if (value > limit)
                diagnostics.Add(DiagnosticInfo.Create(DiagnosticDescriptors.DimensionTooLarge, at, name, value, limit, reason));
        }

        Positive(dModel, "dModel", a.At(0));
        Positive(heads, "heads", a.At(1));
        Positive(latent, "latentRank", a.At(2));
        Positive(rope, "ropeDim", a.At(3));
        if (qLatent < 0)
            diagnostics.Add(DiagnosticInfo.Create(DiagnosticDescriptors.DimensionNotPositive, a.At("QLatentRank"),
                "QLatentRank", qLatent, "0 (plain q_proj) or at least 1"));
        Positive(nope, "NopeHeadDim", a.At("NopeHeadDim"));
        Positive(v, "VHeadDim", a.At("VHeadDim"));
        if (rope > 0 && rope % 2 != 0)
            diagnostics.Add(DiagnosticInfo.Create(DiagnosticDescriptors.RopeDimOdd, a.At(3), rope));

        AtMost(dModel, "dModel", a.At(0), KernelLimits.MaxModelDim, KernelLimits.ModelDimReason);
        AtMost(heads, "heads", a.At(1), KernelLimits.MaxHeads, KernelLimits.HeadsReason);
        AtMost(latent, "latentRank", a.At(2), KernelLimits.MaxLatentRank, KernelLimits.LatentReason);
        AtMost(rope, "ropeDim", a.At(3), KernelLimits.MaxRopeDim, KernelLimits.RopeReason);
        AtMost(qLatent, "QLatentRank", a.At("QLatentRank"), KernelLimits.MaxModelDim, KernelLimits.ModelDimReason);
        AtMost(nope, "NopeHeadDim", a.At("NopeHeadDim"), KernelLimits.MaxHeadDim, KernelLimits.HeadDimReason);
        AtMost(v, "VHeadDim", a.At("VHeadDim"), KernelLimits.MaxHeadDim, KernelLimits.HeadDimReason);

        if (pageSize < 16 || pageSize > 4096 || (pageSize & (pageSize - 1)) != 0)
            diagnostics.Add(DiagnosticInfo.Create(DiagnosticDescriptors.InvalidPageSize, a.At("PageSize"), pageSize));
        // The kernels use it as a float: 1e300 would become infinity there, and 1e-50 zero.
        if (!((float)eps > 0) || float.IsInfinity((float)eps))
            diagnostics.Add(DiagnosticInfo.Create(DiagnosticDescriptors.InvalidEpsilon, a.At("RmsNormEpsilon"), Text(eps)));
        if (!(theta > 1) || double.IsInfinity(theta))
            diagnostics.Add(DiagnosticInfo.Create(DiagnosticDescriptors.InvalidRopeTheta, a.At("RopeTheta"), Text(theta)));
        if (ropeStyle != 0 && ropeStyle != 1)
            diagnostics.Add(DiagnosticInfo.Create(DiagnosticDescriptors.UnknownRopeStyle, a.At("RopeStyle"), ropeStyle));

        void Yarn(string name, object value, string rule) =>
            diagnostics.Add(DiagnosticInfo.Create(DiagnosticDescriptors.InconsistentYarn, a.At(name), name, value, rule));
        if (!(yarnFactor >= 1) || double.IsInfinity(yarnFactor))
            Yarn("YarnFactor", Text(yarnFactor), "it must be a finite number of at least 1 (1 turns YaRN off)");
        bool yarn = yarnFactor > 1 && !double.IsInfinity(yarnFactor);
        if (yarn)
        {
            if (yarnOriginal <= 0)
                Yarn("YarnOriginalMaxPositions", yarnOriginal, "it must be at least 1 when YarnFactor > 1");
            if (!(betaFast >= 0) || double.IsInfinity(betaFast))
                Yarn("YarnBetaFast", Text(betaFast), "it must be a finite number of at least 0");
            if (!(betaSlow > 0) || double.IsInfinity(betaSlow))
                Yarn("YarnBetaSlow", Text(betaSlow), "it must be a finite number greater than 0");
            else if (betaFast >= 0 && !double.IsInfinity(betaFast) && betaFast <= betaSlow)
                Yarn("YarnBetaFast", Text(betaFast), $"it must be greater than YarnBetaSlow ({Text(betaSlow)}), or the ramp runs backwards");
            if (!(mscale >= 0) || double.IsInfinity(mscale))
                Yarn("YarnMscale", Text(mscale), "it must be a finite number of at least 0");
            if (!(mscaleAllDim >= 0) || double.IsInfinity(mscaleAllDim))
                Yarn("YarnMscaleAllDim", Text(mscaleAllDim), "it must be a finite number of at least 0");
            if (maxPositions > 0 && yarnOriginal >= maxPositions)
                Yarn("YarnOriginalMaxPositions", yarnOriginal,
                    $"it must be less than MaxPositions ({maxPositions}) when YarnFactor > 1, or YaRN has nothing to extend");
        }

        int resolvedMax = maxPositions;
        if (maxPositions < 0 || maxPositions > KernelLimits.MaxPositions)
            diagnostics.Add(DiagnosticInfo.Create(DiagnosticDescriptors.InvalidMaxPositions, a.At("MaxPositions"), maxPositions));
        else if (maxPositions == 0)
        {
            double derived = Math.Max(1, yarnOriginal) * (yarn ? yarnFactor : 1);
            if (derived > KernelLimits.MaxPositions)
                diagnostics.Add(DiagnosticInfo.Create(DiagnosticDescriptors.InvalidMaxPositions, a.At("MaxPositions"),
                    "0, derived as " + Text(derived)));
            else
                resolvedMax = (int)derived;
        }

        if (diagnostics.Count > errorsBefore)
            return null;

        // Weight element counts must fit the 32-bit indices kernels use.
        int qIn = qLatent > 0 ? qLatent : dModel;
        CheckCount("q_b_proj/q_proj", (long)heads * (nope + rope) * qIn, a.AttributeLocation, diagnostics);
        CheckCount("kv_b_proj", (long)heads * (nope + v) * latent, a.AttributeLocation, diagnostics);
        CheckCount("o_proj", (long)dModel * heads * v, a.AttributeLocation, diagnostics);
        CheckCount("q_a_proj", (long)qLatent * dModel, a.AttributeLocation, diagnostics);
        CheckCount("kv_a_proj_with_mqa", (long)(latent + rope) * dModel, a.AttributeLocation, diagnostics);
        if (diagnostics.Count > errorsBefore)
            return null;

        var shape = new MlaShapeSpec(dModel, heads, latent, rope, qLatent, nope, v, theta, ropeStyle, yarnFactor, yarnOriginal,
            betaFast, betaSlow, mscale, mscaleAllDim, resolvedMax, pageSize, eps);

        // The constants YaRN derives are emitted as float and double literals; each must be finite, or the kernels
        // would compute with infinities (or the generated file would not compile).
        if (shape.YarnEnabled)
        {
            float scale = (float)LayoutMath.SoftmaxScale(shape);
            if (float.IsInfinity(scale) || float.IsInfinity((float)(scale * 1.4426950408889634)))
                Yarn("YarnMscaleAllDim", Text(mscaleAllDim), "it makes the softmax scale (nope + rope)^-0.5 · mscale(YarnFactor, YarnMscaleAllDim)² overflow single precision");
            if (float.IsInfinity((float)LayoutMath.Mscale(yarnFactor, mscale)))
                Yarn("YarnMscale", Text(mscale), "it makes mscale(YarnFactor, YarnMscale), the RoPE cos/sin factor, overflow single precision");
            foreach (double frequency in LayoutMath.InverseFrequencies(shape))
            {
                if (double.IsNaN(frequency) || double.IsInfinity(frequency))
                {
                    Yarn("YarnBetaFast", Text(betaFast), "it is so small that the YaRN correction range is not finite");
                    break;
                }
            }
            if (diagnostics.Count > errorsBefore)
                return null;
        }
        return shape;
    }

    private static void CheckCount(string tensor, long count, Location? at, List<DiagnosticInfo> diagnostics)
    {
        if (count > int.MaxValue)
            diagnostics.Add(DiagnosticInfo.Create(DiagnosticDescriptors.DimensionTooLarge, at,
                "the " + tensor + " weight", count.ToString(CultureInfo.InvariantCulture) + " values",
                int.MaxValue, KernelLimits.WeightReason));
    }

    private static string Text(double value) => value.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>Attribute values by position or name, with the syntax location of each argument for diagnostics.</summary>
    private sealed class AttributeArguments
    {
        private static readonly string[] ParameterNames = { "dModel", "heads", "latentRank", "ropeDim" };
        private readonly AttributeData _data;
        private readonly AttributeSyntax? _syntax;

        public AttributeArguments(AttributeData data, CancellationToken cancellationToken)
        {
            _data = data;
            _syntax = data.ApplicationSyntaxReference?.GetSyntax(cancellationToken) as AttributeSyntax;
            AttributeLocation = _syntax?.GetLocation();
        }

        public Location? AttributeLocation { get; }

        public int Int(int position, string name) => ToInt(_data.ConstructorArguments[position].Value);

        public int Int(string name, int fallback)
        {
            foreach (var pair in _data.NamedArguments)
                if (pair.Key == name)
                    return ToInt(pair.Value.Value);
            return fallback;
        }

        public double Double(string name, double fallback)
        {
            foreach (var pair in _data.NamedArguments)
                if (pair.Key == name)
                    return pair.Value.Value switch
                    {
                        double d => d,
                        float f => f,
                        IConvertible c => c.ToDouble(CultureInfo.InvariantCulture),
                        _ => double.NaN,
                    };
            return fallback;
        }

        /// <summary>Location of the positional argument (by position or by 'name:').</summary>
        public Location? At(int position)
        {
            if (_syntax?.ArgumentList is null)
                return AttributeLocation;
            int index = 0;
            foreach (var arg in _syntax.ArgumentList.Arguments)
            {
                if (arg.NameEquals is not null)
                    continue;
                if (arg.NameColon is not null)
                {
                    if (arg.NameColon.Name.Identifier.ValueText == ParameterNames[position])
                        return arg.GetLocation();
                }
                else if (index == position)
                    return arg.GetLocation();
                index++;
            }
            return AttributeLocation;
        }

        /// <summary>Location of the named argument, or the attribute when the default applies.</summary>
        public Location? At(string name)
        {
            if (_syntax?.ArgumentList is not null)
                foreach (var arg in _syntax.ArgumentList.Arguments)
                    if (arg.NameEquals?.Name.Identifier.ValueText == name)
                        return arg.GetLocation();
            return AttributeLocation;
        }

        private static int ToInt(object? value) => value switch
        {
            int i => i,
            IConvertible c => (int)Math.Max(int.MinValue, Math.Min(int.MaxValue, c.ToInt64(CultureInfo.InvariantCulture))),
            _ => 0,
        };
    }
}
