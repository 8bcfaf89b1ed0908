using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using ScottPlot;
using SkiaSharp;

namespace MlaGen.DecodeBenchmark;

/// <summary>
/// bandwidth.png (GB/s) and compute.png (TFLOP/s) against sequence length S: one line per (H, B, s_q), ours solid
/// with circles, PyTorch dashed with squares, the device copy as a dotted line. Fixed-length configurations only
/// (variable lengths are in the tables), unless the run had none.
/// </summary>
internal static class Plots
{
    public static IReadOnlyList<string> Write(RunSummary run, string outDir, Action<string> log)
    {
        EnsureFont(run.Peer.FontPath, log);
        var timed = run.Configs.Where(r => r.Timed).ToList();
        if (timed.Count == 0)
            return Array.Empty<string>();
        var mode = timed.Any(r => r.Config.Mode == LengthMode.Fixed) ? LengthMode.Fixed : LengthMode.Variable;
        var shown = timed.Where(r => r.Config.Mode == mode).ToList();
        string lengths = mode == LengthMode.Fixed ? "fixed lengths" : "variable lengths (mean S)";
        var files = new List<string>();

        string bandwidth = Path.Combine(outDir, "bandwidth.png");
        Save(shown, r => r.OurGBps, r => r.TorchGBps, "GB/s (FlashMLA byte count)",
            $"MLA decode: memory throughput, {lengths} — {run.Device}", run.Peer.CopyGBps, bandwidth);
        files.Add(bandwidth);

        string compute = Path.Combine(outDir, "compute.png");
        Save(shown, r => r.OurTflops, r => r.TorchTflops, "TFLOP/s (FlashMLA FLOP count)",
            $"MLA decode: compute throughput, {lengths} — {run.Device}", null, compute);
        files.Add(compute);
        return files;
    }

    private static void Save(List<ConfigResult> results, Func<ConfigResult, double?> ours, Func<ConfigResult, double?> torch,
        string yLabel, string title, double? copyGBps, string path)
    {
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        var headsOrder = results.Select(r => r.Config.Heads).Distinct().OrderBy(h => h).ToList();
        var groups = results
            .GroupBy(r => (r.Config.Heads, r.Config.Batch, r.Config.QueryLen))
            .OrderBy(g => g.Key.Batch == 128 ? 0 : 1).ThenBy(g => g.Key.Heads).ThenBy(g => g.Key.Batch).ThenBy(g => g.Key.QueryLen);
        foreach (var group in groups)
        {
            var (heads, batch, sq) = group.Key;
            var color = palette.GetColor(headsOrder.IndexOf(heads) * 2 + (batch == 128 ? 0 : 1));
            string label = string.Create(CultureInfo.InvariantCulture, $"H{heads} B{batch} s_q={sq}");
            var points = group.OrderBy(r => r.Config.SeqLen).ToList();
            AddSeries(plot, points, ours, $"ours {label}", color, LinePattern.Solid, sq == 1 ? MarkerShape.FilledCircle : MarkerShape.OpenCircle);
            AddSeries(plot, points, torch, $"torch {label}", color, LinePattern.Dashed, sq == 1 ? MarkerShape.FilledSquare : MarkerShape.OpenSquare);
        }
        if (copyGBps is double copy)
        {
            var line = plot.Add.HorizontalLine(copy);
            line.LinePattern = LinePattern.Dotted;
            line.Color = Colors.Black;
            line.LegendText = string.Create(CultureInfo.InvariantCulture, $"device copy {copy:F0} GB/s");
        }

        var seqs = results.Select(r => r.Config.SeqLen).Distinct().OrderBy(s => s).ToArray();
        plot.Axes.Bottom.SetTicks(seqs.Select(s => Math.Log2(s)).ToArray(), seqs.Select(s => s.ToString(CultureInfo.InvariantCulture)).ToArray());
        plot.Axes.Bottom.Label.Text = "sequence length S (log scale)";
        plot.Axes.Left.Label.Text = yLabel;
        plot.Title(title);
        plot.Axes.Margins(0.1, 0.1);
        plot.Axes.SetLimitsY(0, plot.Axes.GetLimits().Top * 1.05);
        plot.ShowLegend(Edge.Right);
        plot.SavePng(path, 1400, 800);
    }

    private static void AddSeries(Plot plot, List<ConfigResult> points, Func<ConfigResult, double?> metric, string label, Color color,
        LinePattern pattern, MarkerShape marker)
    {
        var present = points.Where(p => metric(p) is not null).ToList();
        if (present.Count == 0)
            return;
        var xs = present.Select(p => Math.Log2(p.Config.SeqLen)).ToArray();
        var ys = present.Select(p => metric(p)!.Value).ToArray();
        var scatter = plot.Add.Scatter(xs, ys);
        scatter.LegendText = label;
        scatter.Color = color;
        scatter.LinePattern = pattern;
        scatter.LineWidth = 2;
        scatter.MarkerShape = marker;
        scatter.MarkerSize = 8;
    }

    /// <summary>
    /// ScottPlot draws text with SkiaSharp's Linux build without fontconfig: it finds the system's fonts only where a
    /// machine has them. With none, register a TTF: the one copied beside the program at build time, matplotlib's (as
    /// the peer reported), or any found on disk; else warn.
    /// </summary>
    internal static void EnsureFont(string? peerFont, Action<string> log)
    {
        // Without any font SkiaSharp still lists one family, named "", whose typeface has no glyphs.
        var families = SKFontManager.Default.GetFontFamilies().Where(f => !string.IsNullOrWhiteSpace(f)).ToArray();
        if (families.Length > 0)
        {
            string? sans = new[] { "DejaVu Sans", "Liberation Sans", "Noto Sans", "Arial", "Helvetica" }
                .FirstOrDefault(f => families.Contains(f, StringComparer.OrdinalIgnoreCase));
            if (sans is not null)
                Fonts.Default = sans;
            return;
        }
        var candidates = new List<string> { Path.Combine(AppContext.BaseDirectory, "fonts", "DejaVuSans.ttf") };
        if (peerFont is not null)
            candidates.Add(peerFont);
        foreach (string dir in new[] { "/usr/share/fonts", "/usr/local/share/fonts", Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".fonts") })
        {
            if (Directory.Exists(dir))
                candidates.AddRange(Directory.EnumerateFiles(dir, "*.ttf", SearchOption.AllDirectories).OrderBy(f => f.Contains("Sans", StringComparison.Ordinal) ? 0 : 1));
        }
        foreach (string file in candidates.Where(File.Exists))
        {
            // Titles and axis labels are bold: register a bold face too (the file's "-Bold" sibling, else the same file).
            string bold = Path.Combine(Path.GetDirectoryName(file)!, Path.GetFileNameWithoutExtension(file) + "-Bold.ttf");
            Fonts.AddFontFile("BenchmarkSans", file, bold: false, italic: false);
            Fonts.AddFontFile("BenchmarkSans", File.Exists(bold) ? bold : file, bold: true, italic: false);
            Fonts.Default = "BenchmarkSans";
            log($"plots: no system fonts visible to SkiaSharp, using {file}");
            return;
        }
        log("plots: no font found (install fonts-dejavu-core, or matplotlib for the peer's python): the PNGs will have no text");
    }
}
