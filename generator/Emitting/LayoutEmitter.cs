using MlaGen.Generator.Helpers;
using MlaGen.Generator.Model;
using static MlaGen.Generator.Helpers.LiteralFormat;

namespace MlaGen.Generator.Emitting;

/// <summary>The shape constants, the derived layout and the runtime <c>MlaSpec</c> of one class.</summary>
internal static class LayoutEmitter
{
    public static void Emit(SourceWriter w, MlaClassSpec spec)
    {
        var s = spec.Shape;
        var l = spec.Layout;
        w.Line("// Shape, exactly as the attribute says (defaults filled in).");
        Const(w, "int", "DModel", Int(s.DModel));
        Const(w, "int", "Heads", Int(s.Heads));
        Const(w, "int", "LatentRank", Int(s.LatentRank));
        Const(w, "int", "RopeDim", Int(s.RopeDim));
        Const(w, "int", "QLatentRank", Int(s.QLatentRank));
        Const(w, "int", "NopeHeadDim", Int(s.NopeHeadDim));
        Const(w, "int", "VHeadDim", Int(s.VHeadDim));
        Const(w, "int", "MaxPositions", Int(s.MaxPositions));
        Const(w, "int", "PageSize", Int(s.PageSize));
        Const(w, "global::MlaGen.RopeStyle", "RopeStyle", s.IsRotateHalf ? "global::MlaGen.RopeStyle.RotateHalf" : "global::MlaGen.RopeStyle.Interleaved");
        w.Line();
        w.Line("// Layout derived at build time.");
        Const(w, "int", "QHeadDim", Int(s.QHeadDim), "nope + rope: one query head");
        Const(w, "int", "CacheRowValues", Int(s.CacheRowValues), "[c_kv | k_pe] per cached token");
        Const(w, "int", "CacheRowBytes", Int(s.CacheRowValues * 2), "BF16");
        Const(w, "int", "PageValues", Int(s.CacheRowValues * s.PageSize));
        Const(w, "int", "PageBytes", Int(s.CacheRowValues * s.PageSize * 2));
        Const(w, "float", "SoftmaxScale", Float(l.SoftmaxScale),
            s.YarnEnabled ? "(nope + rope)^-0.5 · mscale(factor, mscale_all_dim)²" : "(nope + rope)^-0.5");
        Const(w, "float", "RopeAttentionFactor", Float(l.RopeAttentionFactor), "mscale(factor, mscale) / mscale(factor, mscale_all_dim) on cos and sin");
        Const(w, "bool", "HasTensorCoreDecode", l.TensorCoreDecode ? "true" : "false");
        Const(w, "bool", "HasTensorCorePrefill", l.TensorCorePrefill ? "true" : "false", "the expanded form's tensor-core kernels (CUDA)");
        w.Line();
        w.Line("/// <summary>RoPE inverse frequency per rotated pair" + (s.YarnEnabled ? ", YaRN-corrected" : "") + ".</summary>");
        w.Line("public static global::System.Collections.Generic.IReadOnlyList<float> InverseFrequencies => Spec.InverseFrequencies;");
        w.Line();
        w.Line("/// <summary>The shape and derived layout for the runtime (caches, weights, layers).</summary>");
        w.Line(MlaEmitter.GeneratedCodeAttribute);
        w.Line("public static global::MlaGen.MlaSpec Spec { get; } = new global::MlaGen.MlaSpec(");
        w.Indent++;
        w.Line($"name: {String(spec.FullName)},");
        w.Line($"dModel: {Int(s.DModel)}, heads: {Int(s.Heads)}, latentRank: {Int(s.LatentRank)}, ropeDim: {Int(s.RopeDim)},");
        w.Line($"qLatentRank: {Int(s.QLatentRank)}, nopeHeadDim: {Int(s.NopeHeadDim)}, vHeadDim: {Int(s.VHeadDim)},");
        w.Line($"ropeStyle: {(s.IsRotateHalf ? "global::MlaGen.RopeStyle.RotateHalf" : "global::MlaGen.RopeStyle.Interleaved")}, ropeTheta: {Double(s.RopeTheta)},");
        w.Line($"yarnFactor: {Double(s.YarnFactor)}, yarnOriginalMaxPositions: {Int(s.YarnOriginalMaxPositions)}, yarnBetaFast: {Double(s.YarnBetaFast)}, yarnBetaSlow: {Double(s.YarnBetaSlow)},");
        w.Line($"yarnMscale: {Double(s.YarnMscale)}, yarnMscaleAllDim: {Double(s.YarnMscaleAllDim)},");
        w.Line($"maxPositions: {Int(s.MaxPositions)}, pageSize: {Int(s.PageSize)}, rmsNormEpsilon: {Double(s.RmsNormEpsilon)},");
        w.Line("softmaxScale: SoftmaxScale, ropeAttentionFactor: RopeAttentionFactor,");
        w.Line("inverseFrequencies: new float[]");
        w.Open();
        var freqs = l.InverseFrequencies;
        for (int i = 0; i < freqs.Count; i += 4)
        {
            var line = new System.Text.StringBuilder();
            for (int j = i; j < System.Math.Min(i + 4, freqs.Count); j++)
                line.Append(Float((float)freqs[j])).Append(", ");
            w.Line(line.ToString().TrimEnd());
        }
        w.Close(");");
        w.Indent--;
    }

    private static void Const(SourceWriter w, string type, string name, string value, string? why = null)
    {
        if (why is not null)
            w.Line($"/// <summary>{why}</summary>");
        w.Line($"public const {type} {name} = {value};");
    }
}
