using System;
using System.Collections.Generic;
using System.ComponentModel;
using System.Diagnostics;
using System.IO;

namespace MlaGen.DecodeBenchmark;

/// <summary>
/// Runs one PyTorch peer script, <c>python script grid.json result.json</c>, with every output line in its log file,
/// stdout lines passed to the console, and a time limit; then reads the result file, keeping partial results when the
/// script timed out or failed after writing some. Shared by the decode and the prefill peer.
/// </summary>
internal static class PeerScript
{
    /// <param name="read">Parses the result file, or null when there is none yet.</param>
    /// <param name="notRun">A report that says why nothing ran.</param>
    /// <param name="ran">Whether a report holds measurements.</param>
    /// <param name="withStatus">The report with its status replaced.</param>
    public static TReport Run<TReport>(string python, string script, string gridPath, string resultPath, string logPath, TimeSpan timeout,
        Action<string> consoleLine, Func<string, TReport?> read, Func<string, TReport> notRun, Func<TReport, bool> ran,
        Func<TReport, string, TReport> withStatus)
        where TReport : class
    {
        var start = new ProcessStartInfo(python)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(script);
        start.ArgumentList.Add(gridPath);
        start.ArgumentList.Add(resultPath);
        start.Environment["PYTHONUNBUFFERED"] = "1";

        using var logFile = new StreamWriter(logPath) { AutoFlush = true };
        var tail = new Queue<string>();
        void OnLine(string? line, bool isError)
        {
            if (line is null)
                return;
            lock (tail)
            {
                logFile.WriteLine(line);
                tail.Enqueue(line);
                if (tail.Count > 8)
                    tail.Dequeue();
            }
            if (!isError)
                consoleLine(line);
        }

        Process process;
        try
        {
            process = Process.Start(start) ?? throw new InvalidOperationException("Process.Start returned null");
        }
        catch (Win32Exception e)
        {
            return notRun($"'{python}' could not be started ({e.Message}): no Python, so no PyTorch peer");
        }
        using (process)
        {
            process.OutputDataReceived += (_, e) => OnLine(e.Data, false);
            process.ErrorDataReceived += (_, e) => OnLine(e.Data, true);
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            if (!process.WaitForExit(timeout))
            {
                process.Kill(entireProcessTree: true);
                process.WaitForExit();
                var partial = read(resultPath);
                string why = $"timed out after {timeout.TotalSeconds:F0} s (see {Path.GetFileName(logPath)})";
                return partial is null ? notRun(why) : withStatus(partial, why + "; partial results kept");
            }
            process.WaitForExit(); // drains the redirected streams
            var report = read(resultPath);
            string last;
            lock (tail)
                last = string.Join(" | ", tail);
            if (report is null)
                return notRun($"exited with code {process.ExitCode} without results: {last}");
            if (process.ExitCode != 0 && ran(report))
                return withStatus(report, $"exited with code {process.ExitCode}: {last}");
            return report;
        }
    }
}
