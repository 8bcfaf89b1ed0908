using System;
using MlaGen.Devices;
using Xunit;

namespace MlaGen.Runtime.Tests;

/// <summary>
/// One <see cref="MlaDevice"/> shared by every test class of <see cref="DeviceCollection"/>: starting the CPU
/// accelerator spawns a thread per simulated lane, too slow to repeat per test. Chosen like production code
/// (argument none → MLAGEN_DEVICE → best GPU → CPU), so the same tests run on a GPU machine.
/// </summary>
public sealed class DeviceFixture : IDisposable
{
    public MlaDevice Device { get; } = MlaDevice.Create();

    public void Dispose() => Device.Dispose();
}

[CollectionDefinition(Name)]
public sealed class DeviceCollection : ICollectionFixture<DeviceFixture>
{
    public const string Name = "Shared MlaDevice";
}
