using System.Linq;
using Microsoft.CodeAnalysis.CSharp;

namespace MlaGen.Generator.Helpers;

/// <summary>Names as code: a type or namespace called like a keyword (<c>@class</c>, <c>@record</c>) needs its '@' back.</summary>
internal static class Identifier
{
    public static string Escape(string name) =>
        SyntaxFacts.GetKeywordKind(name) != SyntaxKind.None || SyntaxFacts.GetContextualKeywordKind(name) != SyntaxKind.None
            ? "@" + name
            : name;

    /// <summary>Escapes every part of a dotted name such as a namespace.</summary>
    public static string EscapeDotted(string dotted) => string.Join(".", dotted.Split('.').Select(Escape));
}
