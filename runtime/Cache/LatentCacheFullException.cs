using System;

namespace MlaGen.Cache;

/// <summary>
/// A <see cref="LatentCache"/> has no room left: not enough free pages for a Reserve, or no free sequence slot.
/// The cache is unchanged; freeing sequences makes room.
/// </summary>
public sealed class LatentCacheFullException : InvalidOperationException
{
    public LatentCacheFullException()
    {
    }

    public LatentCacheFullException(string message)
        : base(message)
    {
    }

    public LatentCacheFullException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
