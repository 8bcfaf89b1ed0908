using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using ScottPlot;

namespace MlaGen.DecodeBenchmark;

/// <summary>
/// prefill.png: attention TFLOP/s (causal FLOP) against S for plain prefill, one colour per (H, B): ours (attention
/// kernel) solid with circles, ours with the expansion dotted, SDPA dashed with squares. prefill_chunked.png: the same
/// against the prefix P for chunked prefill, one colour per (H, C).
/// </summary>
internal static class PrefillPlots
{
    public static IReadOnlyList<string> Write(PrefillSummary run, string outDir, Action<string> log)
    {
        Plots.EnsureFont(run.Peer.FontPath, log);
        var files = new List<string>();
        var plain = run.Results.Where(r => !r.Case.Chunked && (r.AttentionTflops is not null || r.SdpaTflops is not null)).ToList();
        if (plain.Count > 0)
        {
            string path = Path.Combine(outDir, "prefill.png");
            Save(plain, r => r.Case.Chunk, g => $"H{g.Item1} B{g.Item2}", r => (r.Case.Heads, r.Case.Batch),
                "sequence length S (log scale)", $"MLA prefill (causal): attention throughput — {run.Device}", path);
            files.Add(path);
        }
        var chunked = run.Results.Where(r => r.Case.Chunked && (r.AttentionTflops is not null || r.SdpaTflops is not null)).ToList();
        if (chunked.Count > 0)
        {
            string path = Path.Combine(outDir, "prefill_chunked.png");
            Save(chunked, r => r.Case.Prefix, g => $"H{g.Item1} C{g.Item2}", r => (r.Case.Heads, r.Case.Chunk),
                "cached prefix P (log scale)", $"MLA chunked prefill: attention throughput — {run.Device}", path);
            files.Add(path);
        }
        return files;
    }

    private static void Save(List<PrefillResult> results, Func<PrefillResult, int> x, Func<(int, int), string> name,
        Func<PrefillResult, (int, int)> key, string xLabel, string title, string path)
    {
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        int index = 0;
        foreach (var group in results.GroupBy(key).OrderBy(g => g.Key.Item1).ThenBy(g => g.Key.Item2))
        {
            var color = palette.GetColor(index++);
            string label = name(group.Key);
            var points = group.OrderBy(x).ToList();
            AddSeries(plot, points, x, r => r.AttentionTflops, $"ours {label}", color, LinePattern.Solid, MarkerShape.FilledCircle);
            AddSeries(plot, points, x, r => r.ExpandAttentionTflops, $"ours + expansion {label}", color, LinePattern.Dotted, MarkerShape.OpenCircle);
            AddSeries(plot, points, x, r => r.SdpaTflops, $"SDPA {label}", color, LinePattern.Dashed, MarkerShape.FilledSquare);
        }
        var xs = results.Select(x).Distinct().OrderBy(s => s).ToArray();
        plot.Axes.Bottom.SetTicks(xs.Select(s => Math.Log2(s)).ToArray(), xs.Select(s => s.ToString(CultureInfo.InvariantCulture)).ToArray());
        plot.Axes.Bottom.Label.Text = xLabel;
        plot.Axes.Left.Label.Text = "TFLOP/s (causal attention FLOP; with expansion: + its FLOP)";
        plot.Title(title);
        plot.Axes.Margins(0.1, 0.1);
        plot.Axes.SetLimitsY(0, plot.Axes.GetLimits().Top * 1.05);
        plot.ShowLegend(Edge.Right);
        plot.SavePng(path, 1400, 800);
    }

    private static void AddSeries(Plot plot, List<PrefillResult> points, Func<PrefillResult, int> x, Func<PrefillResult, double?> metric, string label,
        Color color, LinePattern pattern, MarkerShape marker)
    {
        var present = points.Where(p => metric(p) is not null).ToList();
        if (present.Count == 0)
            return;
        var scatter = plot.Add.Scatter(present.Select(p => Math.Log2(x(p))).ToArray(), present.Select(p => metric(p)!.Value).ToArray());
        scatter.LegendText = label;
        scatter.Color = color;
        scatter.LinePattern = pattern;
        scatter.LineWidth = 2;
        scatter.MarkerShape = marker;
        scatter.MarkerSize = 8;
    }
}
