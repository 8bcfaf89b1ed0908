using System.Reflection;
using System.Text.RegularExpressions;
using Xunit;
using Xunit.Abstractions;

namespace MlaGen.Layer.Tests;

/// <summary>DeepSeek-V2-Lite's attention shape (latent 512, nope = v = 128, 16 heads): only compiled to PTX here.</summary>
[MlaConfig(2048, 16, 512, 64, MaxPositions = 8192)]
internal partial class ExpandPtxDeepSeekShape { }

/// <summary>
/// The tensor-core kv_b_proj expansion compiled to PTX without a GPU (see <see cref="TensorCorePtxTests"/>): it compiles
/// for SM_90, runs on mma.sync / ldmatrix / cp.async, and touches local memory only for the epilogue's register reads.
/// The lead checks its results on the GPU.
/// </summary>
public class KeyValueExpandPtxTests
{
    private readonly ITestOutputHelper _output;

    public KeyValueExpandPtxTests(ITestOutputHelper output) => _output = output;

    public static TheoryData<string> Shapes => new() { nameof(SmallQLoraAttention), nameof(ExpandPtxDeepSeekShape) };

    private static (MethodInfo Kernel, int Latent, int OutputRows) Kernel(string shape) => shape switch
    {
        nameof(SmallQLoraAttention) => (typeof(SmallQLoraAttention.MlaKernels).GetMethod(nameof(SmallQLoraAttention.MlaKernels.KeyValueExpandTensorCoreKernel))!,
            SmallQLoraAttention.LatentRank, SmallQLoraAttention.MlaKernels.KvOutputRows),
        _ => (typeof(ExpandPtxDeepSeekShape.MlaKernels).GetMethod(nameof(ExpandPtxDeepSeekShape.MlaKernels.KeyValueExpandTensorCoreKernel))!,
            ExpandPtxDeepSeekShape.LatentRank, ExpandPtxDeepSeekShape.MlaKernels.KvOutputRows),
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void KernelCompilesToMmaWithoutLocalMemory(string shape)
    {
        var (kernel, latent, outputRows) = Kernel(shape);
        string ptx = TensorCorePtxTests.CompileToPtx(kernel);
        int mma = Regex.Matches(ptx, @"mma\.sync\.aligned\.m16n8k16\.row\.col\.f32\.bf16\.bf16\.f32").Count;
        int ldmatrix = Regex.Matches(ptx, @"ldmatrix\.sync\.aligned\.m8n8\.x4\.shared\.b16").Count;
        int copies = Regex.Matches(ptx, @"cp\.async\.cg\.shared\.global").Count;
        _output.WriteLine($"{shape}: latent {latent}, {outputRows} kv_b_proj rows; {ptx.Length} chars, {mma} mma, {ldmatrix} ldmatrix, {copies} cp.async");
        _output.WriteLine(ptx);

        // The stage loop is a runtime loop, so the PTX holds one stage per warp: (32 / 16) k-steps x (32 keys / 16) m-tiles
        // x (64 outputs / 8) n-tiles = 32 mma, whatever the latent (KvStages = latent / 32 iterations of it).
        Assert.Equal(2 * 2 * 8, mma);
        // Per k-step 2 ldmatrix.x4 for A (one per m-tile) and 4 for B (two n-tiles each).
        Assert.Equal(2 * (2 + 4), ldmatrix);
        // Per stage copy 2 key-row and 4 weight-row 16-byte chunks per thread; one copy before the loop, one inside it.
        Assert.Equal(2 * (2 + 4), copies);
        Assert.Contains(".reg .f32 acc<64>;", ptx);
        Assert.Contains($".shared .align 16 .b8 kv_tiles[{2 * (64 + 128) * 80}];", ptx);
        Assert.Contains("cp.async.wait_group 0;", ptx);
        Assert.Contains("cvt.rn.bf16x2.f32", ptx);
        Assert.Contains("bar.sync", ptx);
        // Reading a named register back into C# costs a 4-byte .local slot (ILGPU's `out` operand); only the epilogue
        // does: one packed bf16 pair per (m-tile, n-tile, row half) = 2 x 8 x 2 = 32. Nothing else may touch .local.
        int slots = Regex.Matches(ptx, @"\.local \.align 4 \.b8 __local_depot\d+\[4\];").Count;
        Assert.Equal(32, slots);
        Assert.Equal(slots, Regex.Matches(ptx, @"\.local \.align").Count);
    }

    [Fact]
    public void GroupsCoverKeyTilesTimesOutputTiles()
    {
        Assert.Equal(128, SmallQLoraAttention.MlaKernels.KvThreads);
        Assert.Equal(Kernels.MlaKernelSet.ExpandedKeyTile, SmallQLoraAttention.MlaKernels.KvKeys);
        // 4 heads x (32 + 32) rows = 256 = 2 output tiles of 128.
        Assert.Equal(2, SmallQLoraAttention.MlaKernels.KvOutputTiles);
        Assert.Equal(0, SmallQLoraAttention.MlaKernels.KeyValueExpandGroups(0));
        Assert.Equal(2, SmallQLoraAttention.MlaKernels.KeyValueExpandGroups(1));
        Assert.Equal(2, SmallQLoraAttention.MlaKernels.KeyValueExpandGroups(64));
        Assert.Equal(4, SmallQLoraAttention.MlaKernels.KeyValueExpandGroups(65));
        Assert.Equal(64 / 32, SmallQLoraAttention.MlaKernels.KvStages);
        Assert.Equal(512 / 32, ExpandPtxDeepSeekShape.MlaKernels.KvStages);
        // 16 heads x 256 rows / 128 = 32 output tiles.
        Assert.Equal(32 * 64, ExpandPtxDeepSeekShape.MlaKernels.KeyValueExpandGroups(4096));
    }
}
