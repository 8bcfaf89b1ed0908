#!/usr/bin/env python3
"""PyTorch eager absorbed-MLA decode: the peer that MlaGen.DecodeBenchmark compares against.

    python3 peer_torch_mla.py grid.json peer.json

grid.json (written by the benchmark): device ("cuda" or "cpu"), runs, warmup_ms, flush_bytes, copy_bytes, seed, and
configs: id, batch, heads, q_len, page_size, latent, rope, softmax_scale, lengths (one per sequence, each including
its q_len new tokens).

Per configuration, on the same kind of paged cache as the benchmark (FlashMLA layout [num_blocks, page, 1, latent +
rope] in bf16, pages in shuffled order):
  gather every sequence's pages (padded to the longest, padding masked), scores = q . [c_kv | k_pe]^T as a bf16
  matmul, masked (lengths, and causal among the q_len new tokens), softmax in fp32, o = p . c_kv as a bf16 matmul.
Timed with torch.cuda.Event pairs around each call, a 256 MiB buffer zeroed before every call (outside the timed
region, as triton's do_bench does) so no call finds the previous one's data in L2; median of `runs` after ~warmup_ms.
The log-sum-exp is not computed (it would add one more pass).

Device copy: dst.copy_(src) of copy_bytes (2 GiB on CUDA); GB/s = 2 * copy_bytes / time / 1e9, i.e. bytes read
plus bytes written, the convention of the reference sheet's "device copy" figure.

peer.json: torch_version, device_name, cuda_version, copy {bytes, ms_median, gbps}, results [{id, ms_median, ms_min,
ms_p90, runs, warmup_runs, check_rel_err, error}], font_path (matplotlib's DejaVu Sans if installed, for the plots),
or {error} alone when PyTorch is missing. Written again after every configuration, so a timeout keeps what was done.
"""

import json
import math
import sys
import time

from peer_common import open_torch, stats, write  # beside this script






def bench(torch, fn, runs, warmup_ms, flush, cuda):
    """do_bench-style timing: one call to estimate, warm-up of about warmup_ms, then `runs` timed calls."""
    def sync():
        if cuda:
            torch.cuda.synchronize()

    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    estimate_ms = max(1e-3, (time.perf_counter() - t0) * 1e3)
    warmup = min(200, max(2, math.ceil(warmup_ms / estimate_ms)))
    for _ in range(warmup):
        if flush is not None:
            flush.zero_()
        fn()
    sync()
    times = []
    if cuda:
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
        for i in range(runs):
            if flush is not None:
                flush.zero_()
            starts[i].record()
            fn()
            ends[i].record()
        torch.cuda.synchronize()
        times = [s.elapsed_time(e) for s, e in zip(starts, ends)]
    else:
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return stats(times, warmup + 1)


def measure_copy(torch, dev, nbytes, cuda):
    src = torch.empty(nbytes, dtype=torch.uint8, device=dev).fill_(1)
    dst = torch.empty_like(src)
    result = bench(torch, lambda: dst.copy_(src), 20, 25.0, None, cuda)
    del src, dst
    ms = result["ms_median"]
    return {"bytes": nbytes, "ms_median": ms, "gbps": 2.0 * nbytes / (ms * 1e-3) / 1e9}


def bench_config(torch, cfg, grid, dev, cuda, flush):
    b, sq, h = cfg["batch"], cfg["q_len"], cfg["heads"]
    ps, latent, rope = cfg["page_size"], cfg["latent"], cfg["rope"]
    d = latent + rope
    scale = cfg["softmax_scale"]
    lengths = cfg["lengths"]
    pages = [(n + ps - 1) // ps for n in lengths]
    max_pages = max(pages)
    num_blocks = sum(pages)
    padded = max_pages * ps

    gen = torch.Generator().manual_seed(grid["seed"])
    order = torch.randperm(num_blocks, generator=gen)
    # Padding entries point at page 0: valid memory, and masked out below.
    block_table = torch.zeros(b, max_pages, dtype=torch.int64)
    start = 0
    for i, n in enumerate(pages):
        block_table[i, :n] = order[start:start + n]
        start += n
    block_table = block_table.to(dev)
    cache = torch.randn(num_blocks, ps, 1, d, dtype=torch.bfloat16, device=dev)
    q = torch.randn(b, sq, h, d, dtype=torch.bfloat16, device=dev)
    # Query j of sequence i sits at position L_i - sq + j and sees positions 0 .. L_i - sq + j.
    last = torch.tensor(lengths, device=dev)[:, None] - sq + torch.arange(sq, device=dev)[None, :]
    hidden = (torch.arange(padded, device=dev)[None, None, :] > last[:, :, None])[:, :, None, :]  # [b, sq, 1, padded]
    pool = cache.view(num_blocks, ps, d)

    def run_attention():
        kv = pool[block_table].view(b, padded, d)
        scores = torch.matmul(q.view(b, sq * h, d), kv.transpose(1, 2)).view(b, sq, h, padded)
        scores = scores.float().mul_(scale).masked_fill_(hidden, float("-inf"))
        p = torch.softmax(scores, dim=-1).to(torch.bfloat16).view(b, sq * h, padded)
        return torch.matmul(p, kv[..., :latent]).view(b, sq, h, latent)

    timing = bench(torch, run_attention, grid["runs"], grid["warmup_ms"], flush, cuda)

    # Self-check against fp32 on the longest sequence (bf16 scores and probabilities: expect ~1e-2).
    i = max(range(b), key=lambda k: lengths[k])
    out = run_attention()[i].float()
    kv = pool[block_table[i]].view(padded, d)[:lengths[i]].float()
    s = torch.matmul(q[i].float().view(sq * h, d), kv.T).view(sq, h, -1) * scale
    s = s.masked_fill(hidden[i][:, :, :lengths[i]], float("-inf"))
    expected = torch.matmul(torch.softmax(s, dim=-1).view(sq * h, -1), kv[:, :latent]).view(sq, h, latent)
    timing["check_rel_err"] = float(torch.linalg.norm(out - expected) / torch.linalg.norm(expected))
    timing["id"] = cfg["id"]
    timing["error"] = None
    return timing




def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        grid = json.load(f)
    out_path = argv[2]
    out = {"error": None, "results": []}
    opened = open_torch(grid, out, out_path)
    if isinstance(opened, int):
        return opened
    torch, dev, cuda = opened

    out["copy"] = measure_copy(torch, dev, grid["copy_bytes"], cuda)
    print(f"[torch] device copy of {grid['copy_bytes'] / 2**30:.2f} GiB: {out['copy']['ms_median']:.3f} ms, "
          f"{out['copy']['gbps']:.0f} GB/s (read + write)", flush=True)
    write(out_path, out)

    flush = torch.empty(grid["flush_bytes"], dtype=torch.uint8, device=dev) if grid["flush_bytes"] > 0 else None
    for cfg in grid["configs"]:
        try:
            result = bench_config(torch, cfg, grid, dev, cuda, flush)
            print(f"[torch] {cfg['id']}: {result['ms_median']:.3f} ms (min {result['ms_min']:.3f}, "
                  f"p90 {result['ms_p90']:.3f}), self-check rel err {result['check_rel_err']:.1e}", flush=True)
        except Exception as e:  # out of memory, or anything else: report it and go on
            result = {"id": cfg["id"], "error": f"{type(e).__name__}: {e}"[:500], "runs": 0, "warmup_runs": 0}
            print(f"[torch] {cfg['id']}: failed: {result['error']}", flush=True)
        out["results"].append(result)
        write(out_path, out)
        if cuda:
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
