using System;
using System.Linq;
using System.Threading;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using MlaGen.Devices;
using Xunit;

namespace MlaGen.Runtime.Tests;

/// <summary><see cref="MlaDevice"/> on a real accelerator: what Create gives, the kernel-load cache, disposal.</summary>
[Collection(DeviceCollection.Name)]
public sealed class DeviceTests(DeviceFixture fixture)
{
    private readonly MlaDevice _device = fixture.Device;

    [Fact]
    public void Cpu_selection_gives_the_cpu_accelerator_with_32_wide_warps_and_64_thread_groups()
    {
        using var device = MlaDevice.Create("cpu");

        Assert.Equal(MlaDeviceKind.Cpu, device.Kind);
        Assert.False(device.IsCuda);
        Assert.Equal("cpu", device.Selection);
        Assert.Equal("selection=cpu", device.Reason);
        var accelerator = Assert.IsType<CPUAccelerator>(device.Accelerator);
        Assert.Equal(AcceleratorType.CPU, accelerator.AcceleratorType);
        Assert.Equal(32, accelerator.WarpSize);
        Assert.Equal(64, accelerator.MaxNumThreadsPerGroup);
        Assert.Same(MlaDevice.SharedContext, accelerator.Context);
    }

    [Fact]
    public void Cuda_selection_gives_a_cuda_device_or_a_clear_error_when_this_machine_has_none()
    {
        if (MlaDevice.CudaDevices.Count == 0)
        {
            var error = Assert.Throws<InvalidOperationException>(() => MlaDevice.Create("cuda"));
            Assert.Contains("no CUDA GPU was found", error.Message, StringComparison.Ordinal);
            return;
        }
        using var device = MlaDevice.Create("cuda");
        Assert.True(device.IsCuda);
        Assert.Equal(AcceleratorType.Cuda, device.Accelerator.AcceleratorType);
        Assert.Equal(32, device.Accelerator.WarpSize);
    }

    [Fact]
    public void Cuda_index_beyond_the_gpus_of_this_machine_is_rejected_before_any_accelerator_starts()
    {
        int count = MlaDevice.CudaDevices.Count;
        string selection = $"cuda:{count}";
        if (count == 0)
        {
            Assert.Throws<InvalidOperationException>(() => MlaDevice.Create(selection));
            return;
        }
        var error = Assert.Throws<ArgumentException>(() => MlaDevice.Create(selection));
        Assert.Equal("selection", error.ParamName);
    }

    [Fact]
    public void Shared_device_follows_the_documented_default_rule()
    {
        var expected = MlaDevice.Choose(null, Environment.GetEnvironmentVariable(MlaDevice.EnvironmentVariable), MlaDevice.CudaDevices);

        Assert.Equal(expected.Kind, _device.Kind);
        Assert.Equal(expected.Selection, _device.Selection);
        Assert.Equal(expected.Reason, _device.Reason);
        Assert.Equal(expected.Kind == MlaDeviceKind.Cuda ? AcceleratorType.Cuda : AcceleratorType.CPU, _device.Accelerator.AcceleratorType);
    }

    [Fact]
    public void GetOrLoad_calls_the_loader_once_per_key_and_records_its_time()
    {
        string key = NewKey();
        int calls = 0;
        object Load(Accelerator accelerator)
        {
            Assert.Same(_device.Accelerator, accelerator);
            Interlocked.Increment(ref calls);
            Thread.Sleep(30);
            return new object();
        }

        var first = _device.GetOrLoad(key, Load);
        var totalAfterFirst = _device.TotalLoadTime;
        var second = _device.GetOrLoad(key, Load);

        Assert.Same(first, second);
        Assert.Equal(1, calls);
        Assert.True(_device.LoadTimes[key] >= TimeSpan.FromMilliseconds(25), $"recorded {_device.LoadTimes[key]}");
        Assert.Equal(totalAfterFirst, _device.TotalLoadTime);

        var other = _device.GetOrLoad(NewKey(), Load);
        Assert.NotSame(first, other);
        Assert.Equal(2, calls);
    }

    [Fact]
    public void TotalLoadTime_is_the_sum_of_the_recorded_load_times()
    {
        _device.GetOrLoad(NewKey(), _ => { Thread.Sleep(5); return new object(); });

        var times = _device.LoadTimes;
        Assert.Equal(times.Values.Aggregate(TimeSpan.Zero, (sum, t) => sum + t), _device.TotalLoadTime);
    }

    [Fact]
    public void Racing_threads_load_a_key_once_and_all_get_the_same_value()
    {
        string key = NewKey();
        int calls = 0;
        const int Threads = 8;
        using var start = new Barrier(Threads);
        var results = new object[Threads];

        // Dedicated threads: the thread pool on a 2-core machine would start them seconds apart.
        var threads = Enumerable.Range(0, Threads).Select(i => new Thread(() =>
        {
            start.SignalAndWait();
            results[i] = _device.GetOrLoad(key, _ =>
            {
                Interlocked.Increment(ref calls);
                Thread.Sleep(50);
                return new object();
            });
        })).ToArray();
        foreach (var thread in threads)
            thread.Start();
        foreach (var thread in threads)
            thread.Join();

        Assert.Equal(1, calls);
        Assert.All(results, r => Assert.Same(results[0], r));
    }

    [Fact]
    public void A_failed_load_is_not_cached_and_the_next_call_retries()
    {
        string key = NewKey();
        int calls = 0;

        Assert.Throws<InvalidProgramException>(() => _device.GetOrLoad<object>(key, _ =>
        {
            calls++;
            throw new InvalidProgramException("compile failed");
        }));
        Assert.False(_device.LoadTimes.ContainsKey(key));

        var value = _device.GetOrLoad(key, _ => { calls++; return "loaded"; });
        Assert.Equal("loaded", value);
        Assert.Equal(2, calls);
    }

    [Fact]
    public void Asking_for_a_key_as_another_type_is_an_error_naming_both_types()
    {
        string key = NewKey();
        _device.GetOrLoad(key, _ => "a string");

        var error = Assert.Throws<InvalidOperationException>(() => _device.GetOrLoad(key, _ => new object[1]));

        Assert.Contains("System.String", error.Message, StringComparison.Ordinal);
        Assert.Contains("System.Object[]", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void GetOrLoad_compiles_and_caches_a_real_kernel()
    {
        string key = NewKey();
        var fill = _device.GetOrLoad(key, a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, int>(FillKernel));
        Assert.Same(fill, _device.GetOrLoad(key, a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, int>(FillKernel)));

        using var buffer = _device.Accelerator.Allocate1D<int>(100);
        fill((int)buffer.Length, buffer.View, 7);

        Assert.All(buffer.GetAsArray1D(), (value, i) => Assert.Equal(7 * i, value));
        Assert.True(_device.LoadTimes[key] > TimeSpan.Zero);
    }

    [Fact]
    public void Disposed_device_refuses_use_and_disposes_loaded_values()
    {
        var device = MlaDevice.Create("cpu");
        var accelerator = device.Accelerator;
        var loaded = device.GetOrLoad(NewKey(), _ => new DisposeProbe());

        device.Dispose();
        device.Dispose();

        Assert.True(device.IsDisposed);
        Assert.True(accelerator.IsDisposed);
        Assert.True(loaded.Disposed);
        Assert.Throws<ObjectDisposedException>(() => device.Accelerator);
        Assert.Throws<ObjectDisposedException>(() => device.GetOrLoad(NewKey(), _ => new object()));
        Assert.Equal("cpu", device.Selection);
    }

    private static void FillKernel(Index1D index, ArrayView<int> output, int factor) => output[index] = factor * index;

    private static string NewKey() => "test-" + Guid.NewGuid().ToString("N");

    private sealed class DisposeProbe : IDisposable
    {
        public bool Disposed { get; private set; }

        public void Dispose() => Disposed = true;
    }
}
