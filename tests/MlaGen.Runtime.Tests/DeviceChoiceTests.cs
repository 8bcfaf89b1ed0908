using System;
using MlaGen.Devices;
using Xunit;

namespace MlaGen.Runtime.Tests;

/// <summary>The device-choice rule of <see cref="MlaDevice.Create"/>, checked without a GPU.</summary>
public sealed class DeviceChoiceTests
{
    private const long GiB = 1024L * 1024 * 1024;

    private static readonly CudaDeviceDescription[] NoGpus = [];

    // Index 1 has the most memory; index 2 ties index 0 on memory but has more SMs.
    private static readonly CudaDeviceDescription[] ThreeGpus =
    [
        new(0, "NVIDIA A100-SXM4-40GB", 40 * GiB, 108),
        new(1, "NVIDIA H100 80GB HBM3", 80 * GiB, 132),
        new(2, "NVIDIA A100-PCIE-40GB", 40 * GiB, 110),
    ];

    [Fact]
    public void Nothing_selected_and_no_gpu_falls_back_to_the_cpu_and_says_why()
    {
        var choice = MlaDevice.Choose(null, null, NoGpus);

        Assert.Equal(MlaDeviceKind.Cpu, choice.Kind);
        Assert.Null(choice.CudaIndex);
        Assert.Equal("cpu", choice.Selection);
        Assert.Contains("no CUDA GPU found", choice.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void Nothing_selected_takes_the_gpu_with_the_most_memory()
    {
        var choice = MlaDevice.Choose(null, null, ThreeGpus);

        Assert.Equal(MlaDeviceKind.Cuda, choice.Kind);
        Assert.Equal(1, choice.CudaIndex);
        Assert.Equal("cuda:1", choice.Selection);
        Assert.StartsWith("best of 3 CUDA GPU(s): cuda:1 NVIDIA H100 80GB HBM3 (80 GiB, 132 SMs)", choice.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void Equal_memory_is_decided_by_more_multiprocessors_then_by_the_lower_index()
    {
        var sameMemory = new CudaDeviceDescription[] { ThreeGpus[0], ThreeGpus[2] };
        Assert.Equal(2, MlaDevice.Choose(null, null, sameMemory).CudaIndex);

        var twins = new CudaDeviceDescription[] { new(0, "twin", 40 * GiB, 108), new(1, "twin", 40 * GiB, 108) };
        Assert.Equal(0, MlaDevice.Choose(null, null, [twins[1], twins[0]]).CudaIndex);
    }

    [Fact]
    public void Environment_variable_overrides_the_automatic_choice()
    {
        var choice = MlaDevice.Choose(null, "cpu", ThreeGpus);

        Assert.Equal(MlaDeviceKind.Cpu, choice.Kind);
        Assert.Equal("MLAGEN_DEVICE=cpu", choice.Reason);
    }

    [Fact]
    public void Environment_variable_can_name_a_gpu_by_index()
    {
        var choice = MlaDevice.Choose(null, "cuda:2", ThreeGpus);

        Assert.Equal(2, choice.CudaIndex);
        Assert.StartsWith("MLAGEN_DEVICE=cuda:2: cuda:2 NVIDIA A100-PCIE-40GB", choice.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void Argument_beats_the_environment_variable()
    {
        var choice = MlaDevice.Choose("cuda:0", "cpu", ThreeGpus);

        Assert.Equal(MlaDeviceKind.Cuda, choice.Kind);
        Assert.Equal(0, choice.CudaIndex);
        Assert.StartsWith("selection=cuda:0", choice.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void Cuda_without_index_takes_the_best_gpu()
    {
        var choice = MlaDevice.Choose("cuda", null, ThreeGpus);

        Assert.Equal(1, choice.CudaIndex);
        Assert.StartsWith("selection=cuda: best of 3 CUDA GPU(s)", choice.Reason, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("CPU")]
    [InlineData(" cpu ")]
    public void Selection_ignores_case_and_surrounding_blanks(string selection)
    {
        Assert.Equal(MlaDeviceKind.Cpu, MlaDevice.Choose(selection, null, ThreeGpus).Kind);
    }

    [Theory]
    [InlineData("")]
    [InlineData("   ")]
    public void Blank_environment_variable_counts_as_unset(string environmentValue)
    {
        var choice = MlaDevice.Choose(null, environmentValue, ThreeGpus);

        Assert.Equal(1, choice.CudaIndex);
        Assert.StartsWith("best of 3", choice.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void Cuda_index_out_of_range_in_the_argument_names_the_argument_and_the_valid_range()
    {
        var error = Assert.Throws<ArgumentException>(() => MlaDevice.Choose("cuda:3", null, ThreeGpus));

        Assert.Equal("selection", error.ParamName);
        Assert.Contains("CUDA device 3", error.Message, StringComparison.Ordinal);
        Assert.Contains("0..2", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Cuda_index_out_of_range_in_the_environment_names_the_variable()
    {
        var error = Assert.Throws<ArgumentException>(() => MlaDevice.Choose(null, "cuda:7", ThreeGpus));

        Assert.Equal("MLAGEN_DEVICE", error.ParamName);
        Assert.Contains("MLAGEN_DEVICE=\"cuda:7\"", error.Message, StringComparison.Ordinal);
        Assert.Contains("0..2", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("")]
    [InlineData("gpu")]
    [InlineData("cuda:")]
    [InlineData("cuda:-1")]
    [InlineData("cuda:+1")]
    [InlineData("cuda:x")]
    [InlineData("cuda:1:2")]
    [InlineData("cuda: 1")]
    [InlineData("cuda0")]
    [InlineData("cpu:0")]
    [InlineData("cuda:99999999999")]
    public void Garbage_selection_is_an_argument_error_that_shows_the_expected_syntax(string selection)
    {
        var error = Assert.Throws<ArgumentException>(() => MlaDevice.Choose(selection, null, ThreeGpus));

        Assert.Equal("selection", error.ParamName);
        Assert.Contains($"\"{selection}\"", error.Message, StringComparison.Ordinal);
        Assert.Contains("expected \"cpu\", \"cuda\" or \"cuda:N\"", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Garbage_environment_variable_is_an_argument_error_naming_the_variable()
    {
        var error = Assert.Throws<ArgumentException>(() => MlaDevice.Choose(null, "opencl", ThreeGpus));

        Assert.Equal("MLAGEN_DEVICE", error.ParamName);
        Assert.Contains("MLAGEN_DEVICE=\"opencl\"", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("cuda", null)]
    [InlineData("cuda:0", null)]
    [InlineData(null, "cuda")]
    [InlineData(null, "cuda:0")]
    public void Asking_for_cuda_without_a_gpu_is_a_clear_error(string? selection, string? environmentValue)
    {
        var error = Assert.Throws<InvalidOperationException>(() => MlaDevice.Choose(selection, environmentValue, NoGpus));

        Assert.Contains("no CUDA GPU was found", error.Message, StringComparison.Ordinal);
        Assert.Contains(selection ?? environmentValue!, error.Message, StringComparison.Ordinal);
    }
}
