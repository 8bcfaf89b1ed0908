using System;
using System.Collections.Generic;
using System.Globalization;
using ILGPU;
using ILGPU.Runtime;
using MlaGen.Devices;

namespace MlaGen.Cache;

/// <summary>
/// The paged latent KV cache of one MLA layer, on one device, in FlashMLA's layout: pages of
/// <see cref="MlaSpec.PageSize"/> token rows <c>[c_kv (latent) | k_pe (rope)]</c> in BF16, a block table
/// <c>[MaxSequences, MaxPagesPerSequence]</c> mapping each sequence slot's logical pages to physical pages, and
/// the token count of every slot. The host keeps the free lists and a mirror of both tables; the device copies
/// are only written from that mirror, and only the entries that changed.
/// </summary>
/// <remarks>
/// Not thread-safe: one owner (a scheduler) drives it. Every method fails before changing anything, host or
/// device, when its arguments are invalid. Device transfers use the accelerator's default stream and wait for it.
/// Reserved rows hold whatever their page held before (zero for a page never used) until written.
/// Any use after <see cref="Dispose"/>, or after the device is disposed, throws <see cref="ObjectDisposedException"/>.
/// </remarks>
public sealed class LatentCache : IDisposable
{
    /// <summary>Block-table entry of a logical page a sequence does not hold: -1, so a kernel that reads past a sequence's pages faults instead of reading page 0.</summary>
    public const int UnusedBlock = -1;

    private readonly MlaDevice _device;
    private readonly MlaSpec _spec;
    private readonly MemoryBuffer1D<ushort, Stride1D.Dense> _pages;
    private readonly MemoryBuffer1D<int, Stride1D.Dense> _blockTable;
    private readonly MemoryBuffer1D<int, Stride1D.Dense> _lengths;

    // Host mirror of the device block table and lengths.
    private readonly int[] _hostBlockTable;
    private readonly int[] _hostLengths;
    private readonly int[] _pageCounts;
    private readonly int[] _generations;
    private readonly bool[] _active;
    private readonly Stack<int> _freePages;
    private readonly Stack<int> _freeSlots;
    private readonly int _numPages;
    private readonly int _maxSequences;
    private readonly int _maxPagesPerSequence;
    private readonly int _maxTokensPerSequence;
    private long _tokensStored;
    private bool _disposed;

    /// <param name="device">The device whose memory holds the cache; it must outlive the cache.</param>
    /// <param name="spec">The layer shape: row width (latent + rope), page size, maximum positions.</param>
    /// <param name="numPages">Physical pages shared by all sequences.</param>
    /// <param name="maxSequences">Sequence slots: rows of the block table.</param>
    /// <param name="maxPagesPerSequence">Block-table columns; at most MaxPositions rounded up to whole pages.</param>
    public LatentCache(MlaDevice device, MlaSpec spec, int numPages, int maxSequences, int maxPagesPerSequence)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(spec);
        ObjectDisposedException.ThrowIf(device.IsDisposed, device);
        if (spec.PageSize <= 0 || spec.CacheRowValues <= 0 || spec.MaxPositions <= 0)
        {
            throw new ArgumentException(
                Invariant($"Spec {spec.Name} has page size {spec.PageSize}, row width {spec.CacheRowValues} and {spec.MaxPositions} positions; all must be > 0."),
                nameof(spec));
        }
        RequirePositive(numPages, nameof(numPages));
        RequirePositive(maxSequences, nameof(maxSequences));
        RequirePositive(maxPagesPerSequence, nameof(maxPagesPerSequence));
        int pagesForMaxPositions = (int)(((long)spec.MaxPositions + spec.PageSize - 1) / spec.PageSize);
        if (maxPagesPerSequence > pagesForMaxPositions)
        {
            throw new ArgumentOutOfRangeException(nameof(maxPagesPerSequence), maxPagesPerSequence,
                Invariant($"Expected maxPagesPerSequence <= {pagesForMaxPositions} (MaxPositions {spec.MaxPositions} rounded up to pages of {spec.PageSize} tokens), got {maxPagesPerSequence}."));
        }
        long blockTableEntries = (long)maxSequences * maxPagesPerSequence;
        if (blockTableEntries > Array.MaxLength)
        {
            throw new ArgumentOutOfRangeException(nameof(maxSequences), maxSequences,
                Invariant($"Expected maxSequences × maxPagesPerSequence <= {Array.MaxLength} block-table entries, got {maxSequences} × {maxPagesPerSequence} = {blockTableEntries}."));
        }

        _device = device;
        _spec = spec;
        _numPages = numPages;
        _maxSequences = maxSequences;
        _maxPagesPerSequence = maxPagesPerSequence;
        _maxTokensPerSequence = (int)Math.Min((long)maxPagesPerSequence * spec.PageSize, spec.MaxPositions);

        _hostBlockTable = new int[blockTableEntries];
        Array.Fill(_hostBlockTable, UnusedBlock);
        _hostLengths = new int[maxSequences];
        _pageCounts = new int[maxSequences];
        _generations = new int[maxSequences];
        _active = new bool[maxSequences];
        // Pushed in reverse so that pages and slots are handed out lowest first.
        _freePages = new Stack<int>(numPages);
        for (int page = numPages - 1; page >= 0; page--)
            _freePages.Push(page);
        _freeSlots = new Stack<int>(maxSequences);
        for (int slot = maxSequences - 1; slot >= 0; slot--)
            _freeSlots.Push(slot);

        var accelerator = device.Accelerator;
        MemoryBuffer1D<ushort, Stride1D.Dense>? pages = null;
        MemoryBuffer1D<int, Stride1D.Dense>? blockTable = null;
        MemoryBuffer1D<int, Stride1D.Dense>? lengths = null;
        try
        {
            pages = accelerator.Allocate1D<ushort>((long)numPages * spec.PageValues);
            blockTable = accelerator.Allocate1D<int>(blockTableEntries);
            lengths = accelerator.Allocate1D<int>(maxSequences);
            // Zeroed so that contents never depend on what the allocator handed out.
            pages.View.MemSetToZero();
            lengths.View.MemSetToZero();
            blockTable.View.BaseView.CopyFromCPU(_hostBlockTable);
            accelerator.Synchronize();
        }
        catch
        {
            pages?.Dispose();
            blockTable?.Dispose();
            lengths?.Dispose();
            throw;
        }
        _pages = pages;
        _blockTable = blockTable;
        _lengths = lengths;
    }

    public MlaSpec Spec
    {
        get
        {
            ThrowIfDisposed();
            return _spec;
        }
    }

    public MlaDevice Device
    {
        get
        {
            ThrowIfDisposed();
            return _device;
        }
    }

    public int NumPages => Checked(_numPages);

    public int MaxSequences => Checked(_maxSequences);

    public int MaxPagesPerSequence => Checked(_maxPagesPerSequence);

    /// <summary>The most tokens one sequence can hold: MaxPagesPerSequence × PageSize, capped at MaxPositions.</summary>
    public int MaxTokensPerSequence => Checked(_maxTokensPerSequence);

    public int PagesFree => Checked(_freePages.Count);

    public int PagesUsed => Checked(_numPages - _freePages.Count);

    public long TokensStored => Checked(_tokensStored);

    /// <summary>NumPages × PageSize: tokens the pages hold when every page is full.</summary>
    public long CapacityTokens => Checked((long)_numPages * _spec.PageSize);

    public int ActiveSequences => Checked(_maxSequences - _freeSlots.Count);

    /// <summary>The page buffer as one flat view of BF16 bits; shape <see cref="PagesShape"/>.</summary>
    public ArrayView<ushort> PagesView => Checked(_pages.View.BaseView);

    /// <summary>[NumPages, PageSize, 1, CacheRowValues], FlashMLA's k-cache shape (the 1 is the single latent KV head).</summary>
    public IReadOnlyList<int> PagesShape => Checked(new[] { _numPages, _spec.PageSize, 1, _spec.CacheRowValues });

    /// <summary>Int32 [MaxSequences, MaxPagesPerSequence], row-major; entries a sequence does not hold are <see cref="UnusedBlock"/>.</summary>
    public ArrayView<int> BlockTableView => Checked(_blockTable.View.BaseView);

    public IReadOnlyList<int> BlockTableShape => Checked(new[] { _maxSequences, _maxPagesPerSequence });

    /// <summary>Int32 [MaxSequences]: tokens stored per slot, 0 for free slots.</summary>
    public ArrayView<int> LengthsView => Checked(_lengths.View.BaseView);

    /// <summary>Everything a kernel needs to read the cache, in one kernel-argument struct.</summary>
    public LatentCacheView View => Checked(new LatentCacheView(
        _pages.View.BaseView, _blockTable.View.BaseView, _lengths.View.BaseView, _maxPagesPerSequence, _spec.PageSize, _spec.CacheRowValues));

    /// <summary>Takes a free slot and starts a new, empty sequence in it.</summary>
    /// <exception cref="LatentCacheFullException">All <see cref="MaxSequences"/> slots hold sequences.</exception>
    public SequenceId CreateSequence()
    {
        ThrowIfDisposed();
        if (_freeSlots.Count == 0)
            throw new LatentCacheFullException(Invariant($"All {_maxSequences} sequence slots are in use; free a sequence first."));
        int slot = _freeSlots.Pop();
        _generations[slot]++;
        _active[slot] = true;
        return new SequenceId(slot, _generations[slot]);
    }

    /// <summary>Ends a sequence: its pages return to the free list, its slot to the free slots, its block-table row and length are cleared on the device.</summary>
    /// <exception cref="KeyNotFoundException"><paramref name="id"/> is not a live sequence (already freed, stale, or never created).</exception>
    public void FreeSequence(SequenceId id)
    {
        ThrowIfDisposed();
        RequireLive(id, "FreeSequence");
        int slot = id.Slot;
        int rowStart = slot * _maxPagesPerSequence;
        int pageCount = _pageCounts[slot];
        // Pushed last page first so that the sequence's first page is the next one handed out.
        for (int p = pageCount - 1; p >= 0; p--)
        {
            _freePages.Push(_hostBlockTable[rowStart + p]);
            _hostBlockTable[rowStart + p] = UnusedBlock;
        }
        _tokensStored -= _hostLengths[slot];
        _hostLengths[slot] = 0;
        _pageCounts[slot] = 0;
        _active[slot] = false;
        _freeSlots.Push(slot);
        Upload(_blockTable, _hostBlockTable, rowStart, pageCount);
        Upload(_lengths, _hostLengths, slot, 1);
    }

    public bool Contains(SequenceId id)
    {
        ThrowIfDisposed();
        return (uint)id.Slot < (uint)_maxSequences && _active[id.Slot] && _generations[id.Slot] == id.Generation;
    }

    /// <summary>Tokens reserved for the sequence.</summary>
    public int GetLength(SequenceId id)
    {
        ThrowIfDisposed();
        RequireLive(id, "GetLength");
        return _hostLengths[id.Slot];
    }

    /// <summary>The sequence's row in the block table and in the lengths.</summary>
    public int GetSlot(SequenceId id)
    {
        ThrowIfDisposed();
        RequireLive(id, "GetSlot");
        return id.Slot;
    }

    /// <summary>The physical pages of the sequence in token order (a copy of the host view of its block-table row).</summary>
    public int[] GetPages(SequenceId id)
    {
        ThrowIfDisposed();
        RequireLive(id, "GetPages");
        return _hostBlockTable.AsSpan(id.Slot * _maxPagesPerSequence, _pageCounts[id.Slot]).ToArray();
    }

    /// <summary>
    /// Grows sequence <c>ids[i]</c> by <c>newTokens[i]</c> tokens, taking pages from the free list as needed, then
    /// uploads the block-table entries and lengths that changed. All or nothing: every argument is checked first,
    /// and a failed call leaves host and device exactly as they were.
    /// </summary>
    /// <exception cref="KeyNotFoundException">An id is not a live sequence (freed, stale, or never created).</exception>
    /// <exception cref="ArgumentException">The spans differ in length, or an id appears twice.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A count is negative, or a sequence would exceed <see cref="MaxTokensPerSequence"/>.</exception>
    /// <exception cref="LatentCacheFullException">The whole request needs more pages than are free.</exception>
    public void Reserve(ReadOnlySpan<SequenceId> ids, ReadOnlySpan<int> newTokens)
    {
        ThrowIfDisposed();
        if (ids.Length != newTokens.Length)
        {
            throw new ArgumentException(
                Invariant($"Reserve got {ids.Length} sequence id(s) but {newTokens.Length} token count(s); expected one count per id."), nameof(newTokens));
        }
        int pageSize = _spec.PageSize;
        Span<bool> listed = _maxSequences <= 1024 ? stackalloc bool[_maxSequences] : new bool[_maxSequences];
        long pagesNeeded = 0;
        for (int i = 0; i < ids.Length; i++)
        {
            var id = ids[i];
            RequireLive(id, "Reserve", i);
            if (listed[id.Slot])
                throw new ArgumentException(Invariant($"Reserve: ids[{i}] repeats {id}; list each sequence once."), nameof(ids));
            listed[id.Slot] = true;
            int count = newTokens[i];
            if (count < 0)
            {
                throw new ArgumentOutOfRangeException(nameof(newTokens), count,
                    Invariant($"Reserve: newTokens[{i}] for {id} is {count}; expected a count >= 0."));
            }
            int length = _hostLengths[id.Slot];
            long newLength = (long)length + count;
            if (newLength > _maxTokensPerSequence)
            {
                throw new ArgumentOutOfRangeException(nameof(newTokens), count,
                    Invariant($"Reserve: {id} holds {length} tokens and newTokens[{i}] = {count} would make {newLength}, beyond its limit of {_maxTokensPerSequence} ")
                    + Invariant($"(MaxPositions {_spec.MaxPositions}, {_maxPagesPerSequence} pages × {pageSize} tokens)."));
            }
            pagesNeeded += PagesFor(newLength) - _pageCounts[id.Slot];
        }
        if (pagesNeeded > _freePages.Count)
        {
            throw new LatentCacheFullException(
                Invariant($"Reserve needs {pagesNeeded} new page(s) of {pageSize} tokens for {ids.Length} sequence(s), but only {_freePages.Count} of {_numPages} pages are free ")
                + Invariant($"({_tokensStored} tokens stored in {(_maxSequences - _freeSlots.Count)} sequence(s)). Nothing was reserved; free sequences first."));
        }

        int firstChangedSlot = int.MaxValue;
        int lastChangedSlot = -1;
        for (int i = 0; i < ids.Length; i++)
        {
            int count = newTokens[i];
            if (count == 0)
                continue;
            int slot = ids[i].Slot;
            int rowStart = slot * _maxPagesPerSequence;
            int oldPageCount = _pageCounts[slot];
            int newLength = _hostLengths[slot] + count;
            int newPageCount = PagesFor(newLength);
            for (int p = oldPageCount; p < newPageCount; p++)
                _hostBlockTable[rowStart + p] = _freePages.Pop();
            _pageCounts[slot] = newPageCount;
            _hostLengths[slot] = newLength;
            _tokensStored += count;
            Upload(_blockTable, _hostBlockTable, rowStart + oldPageCount, newPageCount - oldPageCount);
            firstChangedSlot = Math.Min(firstChangedSlot, slot);
            lastChangedSlot = Math.Max(lastChangedSlot, slot);
        }
        // One copy of the slot range that changed: cheaper than one transfer per sequence.
        if (lastChangedSlot >= 0)
            Upload(_lengths, _hostLengths, firstChangedSlot, lastChangedSlot - firstChangedSlot + 1);
    }

    /// <summary>Copies the sequence's rows to the host in token order: GetLength(id) × CacheRowValues values.</summary>
    public ushort[] ReadRows(SequenceId id)
    {
        ThrowIfDisposed();
        RequireLive(id, "ReadRows");
        int length = _hostLengths[id.Slot];
        var rows = new ushort[checked(length * _spec.CacheRowValues)];
        var pages = _pages.View.BaseView;
        int hostStart = 0;
        for (int token = 0; token < length;)
        {
            var (deviceStart, values) = NextRun(id.Slot, ref token, length);
            pages.SubView(deviceStart, values).CopyToCPU(rows.AsSpan(hostStart, values));
            hostStart += values;
        }
        return rows;
    }

    /// <summary>
    /// Uploads rows for tokens <paramref name="startToken"/> .. startToken + rows.Length / CacheRowValues - 1, which
    /// must already be reserved. Each row is <c>[c_kv (latent) | k_pe (rope)]</c> in BF16 bits.
    /// </summary>
    public void WriteRows(SequenceId id, int startToken, ReadOnlySpan<ushort> rows)
    {
        ThrowIfDisposed();
        RequireLive(id, "WriteRows");
        int rowValues = _spec.CacheRowValues;
        if (rows.Length % rowValues != 0)
        {
            throw new ArgumentException(
                Invariant($"WriteRows: {rows.Length} values is not a whole number of rows of {rowValues} (latent {_spec.LatentRank} + rope {_spec.RopeDim})."), nameof(rows));
        }
        int tokenCount = rows.Length / rowValues;
        int length = _hostLengths[id.Slot];
        if (startToken < 0 || (long)startToken + tokenCount > length)
        {
            throw new ArgumentOutOfRangeException(nameof(startToken), startToken,
                Invariant($"WriteRows: tokens {startToken}..{(long)startToken + tokenCount - 1} of {id}, but it has tokens 0..{length - 1} reserved; Reserve first."));
        }
        var pages = _pages.View.BaseView;
        int hostStart = 0;
        int end = startToken + tokenCount;
        for (int token = startToken; token < end;)
        {
            var (deviceStart, values) = NextRun(id.Slot, ref token, end);
            pages.SubView(deviceStart, values).CopyFromCPU(rows.Slice(hostStart, values));
            hostStart += values;
        }
    }

    /// <summary>Throws unless <paramref name="spec"/> has this cache's shape (caches and buffers of such a spec are interchangeable).</summary>
    public void EnsureCompatible(MlaSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ThrowIfDisposed();
        if (!_spec.IsSameShape(spec))
        {
            throw new ArgumentException(
                $"Spec {spec.Name} ({spec.ShapeText}) does not match the cache's spec {_spec.Name} ({_spec.ShapeText}).", nameof(spec));
        }
    }

    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        _pages.Dispose();
        _blockTable.Dispose();
        _lengths.Dispose();
    }

    public override string ToString() =>
        Invariant($"LatentCache({_spec.Name}: {_numPages} pages × {_spec.PageSize} tokens × {_spec.CacheRowValues} values, {_maxSequences} slots)");

    private int PagesFor(long tokens) => (int)((tokens + _spec.PageSize - 1) / _spec.PageSize);

    // One transfer per run of physically consecutive pages: the next run of tokens [token, end) as a device range.
    private (long DeviceStart, int Values) NextRun(int slot, ref int token, int end)
    {
        int pageSize = _spec.PageSize;
        int rowValues = _spec.CacheRowValues;
        int rowStart = slot * _maxPagesPerSequence;
        int runStart = token;
        long deviceStart = ((long)_hostBlockTable[rowStart + token / pageSize] * pageSize + token % pageSize) * rowValues;
        token = Math.Min(end, (token / pageSize + 1) * pageSize);
        while (token < end && _hostBlockTable[rowStart + token / pageSize] == _hostBlockTable[rowStart + token / pageSize - 1] + 1)
            token = Math.Min(end, token + pageSize);
        return (deviceStart, (token - runStart) * rowValues);
    }

    private static void Upload(MemoryBuffer1D<int, Stride1D.Dense> buffer, int[] host, int start, int count)
    {
        if (count > 0)
            buffer.View.BaseView.SubView(start, count).CopyFromCPU(new ReadOnlySpan<int>(host, start, count));
    }

    // listIndex >= 0 names the position of the id in a Reserve list.
    private void RequireLive(SequenceId id, string operation, int listIndex = -1)
    {
        if ((uint)id.Slot < (uint)_maxSequences && _active[id.Slot] && _generations[id.Slot] == id.Generation)
            return;
        string where = listIndex >= 0 ? Invariant($"{operation}: ids[{listIndex}]") : operation;
        if ((uint)id.Slot >= (uint)_maxSequences)
        {
            throw new KeyNotFoundException(
                Invariant($"{where}: {id} is not a sequence of this cache: slot {id.Slot} is outside 0..{_maxSequences - 1}."));
        }
        int current = _generations[id.Slot];
        bool active = _active[id.Slot];
        string problem = id.Generation == current
            ? "was freed (its slot holds no sequence now)"
            : id.Generation > 0 && id.Generation < current
                ? Invariant($"is stale: slot {id.Slot} was freed and reused since (now generation {current}, {(active ? "live" : "free")})")
                : Invariant($"was never created by this cache (slot {id.Slot} is at generation {current})");
        throw new KeyNotFoundException(Invariant($"{where}: {id} {problem}."));
    }

    private static void RequirePositive(int value, string paramName)
    {
        if (value <= 0)
            throw new ArgumentOutOfRangeException(paramName, value, Invariant($"Expected {paramName} > 0, got {value}."));
    }

    private T Checked<T>(T value)
    {
        ThrowIfDisposed();
        return value;
    }

    private void ThrowIfDisposed()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_device.IsDisposed)
            throw new ObjectDisposedException(nameof(MlaDevice), $"The device {_device.Selection} this cache lives on was disposed.");
    }

    private static string Invariant(FormattableString text) => FormattableString.Invariant(text);
}
