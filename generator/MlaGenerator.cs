using Microsoft.CodeAnalysis;
using MlaGen.Generator.Emitting;
using MlaGen.Generator.Parsing;

namespace MlaGen.Generator;

/// <summary>
/// The pipeline only: [MlaConfig] targets → <see cref="MlaParser"/> → (spec → emitters, diagnostics → reporting).
/// The spec alone feeds emission, so a diagnostic never defeats caching.
/// </summary>
[Generator(LanguageNames.CSharp)]
public sealed class MlaGenerator : IIncrementalGenerator
{
    public void Initialize(IncrementalGeneratorInitializationContext context)
    {
        var parsed = context.SyntaxProvider
            .ForAttributeWithMetadataName(
                MlaParser.AttributeName,
                static (node, _) => node is Microsoft.CodeAnalysis.CSharp.Syntax.TypeDeclarationSyntax,
                static (ctx, ct) => MlaParser.Parse(ctx, ct))
            .WithTrackingName(TrackingNames.Parse);

        var diagnostics = parsed
            .Select(static (r, _) => r.Diagnostics)
            .WithTrackingName(TrackingNames.Diagnostics);
        context.RegisterSourceOutput(diagnostics, static (spc, list) =>
        {
            foreach (var d in list)
                spc.ReportDiagnostic(d.ToDiagnostic());
        });

        var specs = parsed
            .Where(static r => r.Spec is not null)
            .Select(static (r, _) => r.Spec!)
            .WithTrackingName(TrackingNames.Spec);
        context.RegisterSourceOutput(specs, static (spc, spec) =>
        {
            foreach (var file in MlaEmitter.Emit(spec))
                spc.AddSource(file.HintName, file.Text);
        });
    }
}

/// <summary>Names of the tracked pipeline steps (incrementality tests assert on them).</summary>
public static class TrackingNames
{
    public const string Parse = "MlaParse";
    public const string Diagnostics = "MlaDiagnostics";
    public const string Spec = "MlaSpec";
}
