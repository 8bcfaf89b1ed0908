#!/usr/bin/env python3
"""PyTorch peer of MlaGen.DecodeBenchmark --prefill: causal attention on non-absorbed tensors.

    python3 peer_torch_prefill.py prefill_grid.json peer_prefill.json

prefill_grid.json (written by the benchmark): device ("cuda" or "cpu"), runs, min_runs, measure_budget_ms, warmup_ms,
flush_bytes, seed, and cases: id, batch, heads, q_len (C), prefix (P), qk_dim (nope + rope = 192), v_dim (128),
softmax_scale, attention_flop, eager (bool).

Per case: q [B, H, C, qk], k [B, H, P + C, qk], v [B, H, P + C, v] random bf16 (the same shapes as the benchmark's
expanded form; contents need not match). Query i sits at position P + i and sees keys 0 .. P + i: is_causal=True for
P = 0, a bottom-right-aligned causal mask for P > 0 (torch.nn.attention.bias.causal_lower_right where available, else
an explicit boolean mask).
  SDPA: torch.nn.functional.scaled_dot_product_attention. Candidates: for P = 0, is_causal=True under
  torch.nn.attention.sdpa_kernel with each backend (FLASH_ATTENTION, CUDNN_ATTENTION, EFFICIENT_ATTENTION, MATH); for
  P > 0, causal_lower_right with its own dispatch (it picks flash or memory-efficient itself; sdpa_kernel does not
  steer it) and each backend with an explicit boolean mask. Each is tried and estimated (median of 3 calls); the
  fastest that works is timed in full and self-checked against fp32 on the last query rows of batch 0, head 0. What
  failed, and why, is reported. For information only: FLASH_ATTENTION with v zero-padded to qk (what vLLM/SGLang do
  for MLA prefill), estimated, never chosen.
  Eager: per head group, scores = q k^T (bf16 matmul), fp32 scale + mask + softmax, probabilities to bf16, p v (bf16
  matmul); head groups keep the fp32 scores under 4 GiB. Only where the grid says eager (the benchmark leaves out
  plain prefills with more than 2^34 score elements: they would dominate the run's time).
Timing as the decode peer (triton do_bench style): one call to estimate, ~warmup_ms of warm-up, then the runs, each
after zeroing a 256 MiB buffer outside the timed region (L2 flush), torch.cuda.Event pairs; runs = `runs`, reduced to
fit ~measure_budget_ms but never below min_runs. Median, min, p90 reported.

peer_prefill.json: torch_version, device_name, cuda_version, font_path, results [{id, sdpa_backend, sdpa_ms_median,
sdpa_ms_min, sdpa_ms_p90, sdpa_runs, sdpa_check_rel_err, sdpa_backends {name: "x ms" | "failed: ..."}, eager_ms_median,
eager_ms_min, eager_ms_p90, eager_runs, eager_head_group, eager_skipped, error}] — rewritten after every case; each
result is also printed as one JSON line. {error} alone when PyTorch is missing.
"""

import json
import math
import statistics
import sys
import time

from peer_common import open_torch, stats, write  # beside this script






def sync(torch, cuda):
    if cuda:
        torch.cuda.synchronize()


def quick(torch, fn, cuda, calls=3):
    """Median of a few calls after one untimed call (which also surfaces errors)."""
    fn()
    sync(torch, cuda)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        sync(torch, cuda)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench(torch, fn, grid, flush, cuda, estimate_ms=None):
    """do_bench-style timing: warm-up of about warmup_ms, then the runs (fewer for slow calls, never below min_runs)."""
    if estimate_ms is None:
        sync(torch, cuda)
        t0 = time.perf_counter()
        fn()
        sync(torch, cuda)
        estimate_ms = (time.perf_counter() - t0) * 1e3
    estimate_ms = max(1e-3, estimate_ms)
    runs = grid["runs"]
    if estimate_ms * runs > grid["measure_budget_ms"]:
        runs = max(grid["min_runs"], int(grid["measure_budget_ms"] / estimate_ms))
    warmup = min(200, max(2, math.ceil(grid["warmup_ms"] / estimate_ms)))
    for _ in range(warmup):
        if flush is not None:
            flush.zero_()
        fn()
    sync(torch, cuda)
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
    return stats(times, warmup)


def short(e):
    text = f"{type(e).__name__}: {e}".strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def sdpa_backends(torch):
    """(name, context factory) per SDPA backend this PyTorch knows; a single 'default' on old versions."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        import contextlib
        return [("default", contextlib.nullcontext)]
    names = ["FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION", "MATH"]
    return [(n, (lambda b: (lambda: sdpa_kernel(b)))(getattr(SDPBackend, n))) for n in names if hasattr(SDPBackend, n)]


def bench_case(torch, cfg, grid, dev, cuda, flush):
    F = torch.nn.functional
    b, h, c, p = cfg["batch"], cfg["heads"], cfg["q_len"], cfg["prefix"]
    dqk, dv, scale = cfg["qk_dim"], cfg["v_dim"], cfg["softmax_scale"]
    length = p + c
    bf16 = torch.bfloat16
    q = torch.randn(b, h, c, dqk, dtype=bf16, device=dev)
    k = torch.randn(b, h, length, dqk, dtype=bf16, device=dev)
    v = torch.randn(b, h, length, dv, dtype=bf16, device=dev)
    # Query i (position p + i) must not see keys after p + i.
    hidden = torch.ones(c, length, dtype=torch.bool, device=dev).triu_(diagonal=p + 1)

    import contextlib
    allowed = ~hidden
    lower_right = None
    if p > 0:
        try:
            from torch.nn.attention.bias import causal_lower_right
            lower_right = causal_lower_right(c, length)
        except ImportError:
            pass

    def sdpa(values, mask):
        if mask is None:
            return F.scaled_dot_product_attention(q, k, values, is_causal=True, scale=scale)
        return F.scaled_dot_product_attention(q, k, values, attn_mask=mask, scale=scale)

    # Candidates (name, context, mask). P = 0: every backend with is_causal=True. P > 0: causal_lower_right with its own
    # dispatch (flash or memory-efficient where they apply, else a materialised mask: sdpa_kernel does not steer it), and
    # every backend with an explicit boolean mask (True = attend).
    backends = sdpa_backends(torch)
    candidates = []
    if p == 0:
        candidates = [(name, context, None) for name, context in backends]
    else:
        if lower_right is not None:
            candidates.append(("causal_lower_right (own dispatch)", contextlib.nullcontext, lower_right))
        candidates += [(name + " + bool mask", context, allowed) for name, context in backends]

    result = {"id": cfg["id"], "sdpa_backend": None, "sdpa_ms_median": None, "sdpa_ms_min": None, "sdpa_ms_p90": None,
              "sdpa_runs": 0, "sdpa_check_rel_err": None, "sdpa_backends": {}, "eager_ms_median": None, "eager_ms_min": None,
              "eager_ms_p90": None, "eager_runs": 0, "eager_head_group": None, "eager_skipped": None, "error": None,
              "mask": "is_causal=True" if p == 0 else "bottom-right causal"}
    scores = float(b) * h * c * length
    estimates = {}
    for name, context, mask in candidates:
        if name.startswith("MATH") and scores > 2 ** 31:
            result["sdpa_backends"][name] = "skipped: materialises the B*H*C*(P+C) scores"
            continue
        try:
            with context():
                ms = quick(torch, lambda: sdpa(v, mask), cuda)
            estimates[name] = (ms, context, mask)
            result["sdpa_backends"][name] = f"{ms:.4f} ms"
        except Exception as e:  # not supported for these shapes/mask, or out of memory
            result["sdpa_backends"][name] = "failed: " + short(e)
        if cuda:
            torch.cuda.empty_cache()
    flash = dict(backends).get("FLASH_ATTENTION")
    if flash is not None and dv < dqk and (p == 0 or lower_right is not None):
        label = "FLASH_ATTENTION, v padded to qk (not chosen)"
        try:
            padded = F.pad(v, (0, dqk - dv))
            with flash():
                ms = quick(torch, lambda: sdpa(padded, lower_right)[..., :dv], cuda)
            result["sdpa_backends"][label] = f"{ms:.4f} ms"
            del padded
        except Exception as e:
            result["sdpa_backends"][label] = "failed: " + short(e)
        if cuda:
            torch.cuda.empty_cache()

    if estimates:
        best = min(estimates, key=lambda n: estimates[n][0])
        ms, context, mask = estimates[best]
        with context():
            timing = bench(torch, lambda: sdpa(v, mask), grid, flush, cuda, ms)
            out = sdpa(v, mask)
        result.update({"sdpa_backend": best, "sdpa_ms_median": timing["ms_median"], "sdpa_ms_min": timing["ms_min"],
                       "sdpa_ms_p90": timing["ms_p90"], "sdpa_runs": timing["runs"]})
        # Self-check: the last n queries of batch 0, head 0 against fp32 (a wrong mask alignment shows here).
        n = min(c, 64)
        s = (q[0, 0, -n:].float() @ k[0, 0].float().T) * scale
        s = s.masked_fill(hidden[-n:], float("-inf"))
        expected = torch.softmax(s, dim=-1) @ v[0, 0].float()
        got = out[0, 0, -n:].float()
        result["sdpa_check_rel_err"] = float(torch.linalg.norm(got - expected) / torch.linalg.norm(expected))
        del out

    if not cfg["eager"]:
        result["eager_skipped"] = "more than 2^34 score elements (time budget)"
    else:
        group = max(1, min(h, int(2 ** 30 // (b * c * length))))
        result["eager_head_group"] = group

        def eager():
            out = torch.empty(b, h, c, dv, dtype=bf16, device=dev)
            for h0 in range(0, h, group):
                s = torch.matmul(q[:, h0:h0 + group], k[:, h0:h0 + group].transpose(-1, -2))
                s = s.float().mul_(scale).masked_fill_(hidden, float("-inf"))
                probabilities = torch.softmax(s, dim=-1).to(bf16)
                del s
                out[:, h0:h0 + group] = torch.matmul(probabilities, v[:, h0:h0 + group])
            return out

        try:
            timing = bench(torch, eager, grid, flush, cuda)
            result.update({"eager_ms_median": timing["ms_median"], "eager_ms_min": timing["ms_min"],
                           "eager_ms_p90": timing["ms_p90"], "eager_runs": timing["runs"]})
        except Exception as e:
            result["eager_skipped"] = "failed: " + short(e)
    del q, k, v, hidden, allowed
    return result




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
    write(out_path, out)

    flush = torch.empty(grid["flush_bytes"], dtype=torch.uint8, device=dev) if grid["flush_bytes"] > 0 else None
    for cfg in grid["cases"]:
        try:
            result = bench_case(torch, cfg, grid, dev, cuda, flush)
            sdpa = "-" if result["sdpa_ms_median"] is None else f"{result['sdpa_ms_median']:.4f} ms ({result['sdpa_backend']})"
            tflops = "" if result["sdpa_ms_median"] is None else f", {cfg['attention_flop'] / (result['sdpa_ms_median'] * 1e-3) / 1e12:.1f} TFLOP/s"
            eager = result["eager_skipped"] if result["eager_ms_median"] is None else f"{result['eager_ms_median']:.4f} ms"
            failed = [k for k, v in result["sdpa_backends"].items() if v.startswith("failed")]
            print(f"[torch] {cfg['id']}: SDPA {sdpa}{tflops}; eager {eager}"
                  f"{'; failed: ' + ', '.join(failed) if failed else ''}", flush=True)
        except Exception as e:  # out of memory, or anything else: report it and go on
            result = {"id": cfg["id"], "error": short(e), "sdpa_runs": 0, "eager_runs": 0}
            print(f"[torch] {cfg['id']}: failed: {result['error']}", flush=True)
        print(json.dumps(result), flush=True)
        out["results"].append(result)
        write(out_path, out)
        if cuda:
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
