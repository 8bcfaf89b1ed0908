using System;
using System.IO;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.RegularExpressions;
using DiffPlex.DiffBuilder;
using DiffPlex.DiffBuilder.Model;
using Xunit.Sdk;

namespace MlaGen.Generator.Tests.Infrastructure;

/// <summary>
/// Snapshot files in Verify's convention: <c>Snapshots/{Class}.{Test}#{HintName}.verified.cs</c> committed,
/// <c>.received.cs</c> written beside it on a mismatch, with a unified diff in the failure message.
/// Set MLAGEN_ACCEPT_SNAPSHOTS=1 to accept the received text as the new verified one.
/// </summary>
internal static class Snapshot
{
    public const string AcceptVariable = "MLAGEN_ACCEPT_SNAPSHOTS";

    public static void Verify(string name, string actual, [CallerFilePath] string callerFile = "")
    {
        string directory = Path.Combine(Path.GetDirectoryName(callerFile)!, "Snapshots");
        string stem = Path.Combine(directory, name);
        string verifiedPath = stem + ".verified.cs";
        string receivedPath = stem + ".received.cs";
        string scrubbed = Scrub(actual);
        string? verified = File.Exists(verifiedPath) ? File.ReadAllText(verifiedPath).Replace("\r\n", "\n") : null;
        if (verified == scrubbed)
        {
            if (File.Exists(receivedPath))
                File.Delete(receivedPath);
            return;
        }
        if (Environment.GetEnvironmentVariable(AcceptVariable) == "1")
        {
            Directory.CreateDirectory(directory);
            File.WriteAllText(verifiedPath, scrubbed);
            if (File.Exists(receivedPath))
                File.Delete(receivedPath);
            return;
        }
        Directory.CreateDirectory(directory);
        File.WriteAllText(receivedPath, scrubbed);
        throw new XunitException(
            (verified is null ? $"No verified snapshot {Path.GetFileName(verifiedPath)} yet." : $"Snapshot {Path.GetFileName(verifiedPath)} differs.")
            + $"\nReceived: {receivedPath}\nAccept with {AcceptVariable}=1 after reading the diff.\n"
            + UnifiedDiff(verified ?? "", scrubbed));
    }

    /// <summary>The generator's version changes with every release; snapshots should not.</summary>
    public static string Scrub(string text) =>
        Regex.Replace(text.Replace("\r\n", "\n"), "GeneratedCode\\(\"MlaGen.Generator\", \"[^\"]*\"\\)", "GeneratedCode(\"MlaGen.Generator\", \"{version}\")");

    public static string UnifiedDiff(string expected, string actual, int maxLines = 80)
    {
        var diff = InlineDiffBuilder.Diff(expected, actual, ignoreWhiteSpace: false);
        var sb = new StringBuilder("--- verified\n+++ received\n");
        int shown = 0, oldLine = 0, newLine = 0;
        foreach (var line in diff.Lines)
        {
            if (line.Type != ChangeType.Inserted)
                oldLine++;
            if (line.Type != ChangeType.Deleted)
                newLine++;
            if (line.Type is ChangeType.Unchanged)
                continue;
            if (shown++ >= maxLines)
            {
                sb.Append("... (more differences)\n");
                break;
            }
            bool deleted = line.Type == ChangeType.Deleted;
            sb.Append(deleted ? "-" : "+").Append((deleted ? oldLine : newLine).ToString("D4")).Append(' ').Append(line.Text).Append('\n');
        }
        return sb.ToString();
    }
}
