using System;
using System.Text;

namespace MlaGen.Generator.Helpers;

/// <summary>A string builder that tracks indentation, like the one in System.Text.Json's generator.</summary>
internal sealed class SourceWriter
{
    private readonly StringBuilder _builder = new();
    private int _indent;

    public void Line() => _builder.Append('\n');

    public void Line(string text)
    {
        if (text.Length > 0)
            _builder.Append(' ', _indent * 4).Append(text);
        _builder.Append('\n');
    }

    /// <summary>Writes several lines (split on '\n'), each at the current indentation.</summary>
    public void Lines(string text)
    {
        foreach (var line in text.Replace("\r\n", "\n").Split('\n'))
            Line(line);
    }

    public void Open(string header)
    {
        Line(header);
        Line("{");
        _indent++;
    }

    public void Open() { Line("{"); _indent++; }

    public void Close(string suffix = "")
    {
        if (_indent == 0)
            throw new InvalidOperationException("Unbalanced Close.");
        _indent--;
        Line("}" + suffix);
    }

    public int Indent { get => _indent; set => _indent = value; }

    public override string ToString() => _builder.ToString();
}
