using System;
using ILGPU;
using ILGPU.Runtime;

namespace MlaGen;

/// <summary>A device buffer that grows to the largest request and is reused across calls.</summary>
internal sealed class DeviceScratch<T> : IDisposable
    where T : unmanaged
{
    private readonly Accelerator _accelerator;
    private MemoryBuffer1D<T, Stride1D.Dense>? _buffer;

    public DeviceScratch(Accelerator accelerator) => _accelerator = accelerator;

    /// <summary>A view of exactly <paramref name="length"/> elements (at least one element is allocated).</summary>
    public ArrayView<T> Get(long length)
    {
        if (_buffer is null || _buffer.Length < length)
        {
            _buffer?.Dispose();
            _buffer = _accelerator.Allocate1D<T>(Math.Max(1, length));
        }
        return _buffer.View.SubView(0, Math.Max(1, length));
    }

    /// <summary>A view of at least <paramref name="values"/>' length with them copied to its start, on <paramref name="stream"/>.</summary>
    public ArrayView<T> Upload(AcceleratorStream stream, T[] values)
    {
        var view = Get(values.Length);
        if (values.Length > 0)
            view.SubView(0, values.Length).CopyFromCPU(stream, values);
        return view;
    }

    public void Dispose()
    {
        _buffer?.Dispose();
        _buffer = null;
    }
}
