using System.Globalization;

namespace MlaGen.Cache;

/// <summary>
/// Names one sequence of a <see cref="LatentCache"/>: its slot (row of the block table and of the lengths) and
/// the generation of that slot. Every CreateSequence on a slot starts a new generation, so an id kept after
/// FreeSequence is recognised as stale once the slot is reused. Generations start at 1: <c>default</c> is never valid.
/// </summary>
/// <remarks>
/// Ids are not tied to one cache instance: caches of several layers driven in lockstep hand out equal ids.
/// </remarks>
public readonly record struct SequenceId(int Slot, int Generation)
{
    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"sequence {Slot}#{Generation}");
}
