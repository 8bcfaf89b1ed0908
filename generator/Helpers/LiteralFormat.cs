using System.Globalization;

namespace MlaGen.Generator.Helpers;

/// <summary>Numeric literals written under the invariant culture so no locale's minus sign or comma leaks into code.</summary>
internal static class LiteralFormat
{
    public static string Float(float value)
    {
        if (float.IsNaN(value) || float.IsInfinity(value))
            return NonFinite("global::System.Single", value);
        string text = value.ToString("R", CultureInfo.InvariantCulture);
        if (float.Parse(text, CultureInfo.InvariantCulture) != value)
            text = value.ToString("G9", CultureInfo.InvariantCulture);
        return WithDecimalPoint(text) + "f";
    }

    public static string Double(double value)
    {
        // "R" writes NaN and infinities as words that are no C# literal; the parser rejects them wherever the kernels
        // would use them, but a YaRN setting that YarnFactor = 1 ignores is still carried into the spec verbatim.
        if (double.IsNaN(value) || double.IsInfinity(value))
            return NonFinite("global::System.Double", value);
        string text = value.ToString("R", CultureInfo.InvariantCulture);
        if (double.Parse(text, CultureInfo.InvariantCulture) != value)
            text = value.ToString("G17", CultureInfo.InvariantCulture);
        return WithDecimalPoint(text);
    }

    public static string Int(int value) => value.ToString(CultureInfo.InvariantCulture);

    public static string String(string value) => "\"" + value.Replace("\\", "\\\\").Replace("\"", "\\\"") + "\"";

    private static string NonFinite(string type, double value) =>
        type + (double.IsNaN(value) ? ".NaN" : value > 0 ? ".PositiveInfinity" : ".NegativeInfinity");

    private static string WithDecimalPoint(string text) =>
        text.IndexOf('.') >= 0 || text.IndexOf('E') >= 0 || text.IndexOf('e') >= 0 ? text : text + ".0";
}
