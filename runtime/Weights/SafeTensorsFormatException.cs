using System;
using System.IO;

namespace MlaGen.Weights;

/// <summary>
/// A safetensors file or index that breaks the format, or lacks what a tensor needs (FP8 block scales). An
/// <see cref="IOException"/> because <see cref="InvalidDataException"/> is sealed and loading code already catches I/O failures.
/// </summary>
public sealed class SafeTensorsFormatException : IOException
{
    public SafeTensorsFormatException(string path, string problem)
        : base($"'{path}': {problem}")
    {
        Path = path;
        Problem = problem;
    }

    public SafeTensorsFormatException(string path, string problem, Exception innerException)
        : base($"'{path}': {problem}", innerException)
    {
        Path = path;
        Problem = problem;
    }

    /// <summary>The file that is at fault.</summary>
    public string Path { get; }

    /// <summary>What is wrong, without the path.</summary>
    public string Problem { get; }
}
