"""What the two PyTorch peers of MlaGen.DecodeBenchmark share: result files, timing statistics, the plot font, and
opening PyTorch on the grid's device (or writing why not)."""

import json
import math
import os
import statistics
import sys


def write(path, data):
    """Writes the result file atomically: a reader (the benchmark, after a timeout) never sees half of it."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def stats(times_ms, warmup_runs):
    ordered = sorted(times_ms)
    n = len(ordered)
    p90 = ordered[min(n - 1, max(0, math.ceil(0.9 * n) - 1))]
    return {"ms_median": statistics.median(ordered), "ms_min": ordered[0], "ms_p90": p90,
            "runs": n, "warmup_runs": warmup_runs}


def font_path():
    try:
        import matplotlib  # noqa: only to find its bundled DejaVu Sans
        path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
        return path if os.path.exists(path) else None
    except Exception:
        return None


def open_torch(grid, out, out_path):
    """(torch, device, cuda) with out's torch_version, cuda_version, device_name and font_path filled in (the caller
    writes out when it is ready); or an exit code (3: no PyTorch, 4: no CUDA device) with out's error written."""
    try:
        import torch
    except Exception as e:  # ImportError, or a broken install
        out["error"] = f"PyTorch is not available to {sys.executable}: {e}"
        write(out_path, out)
        print(out["error"], file=sys.stderr)
        return 3
    cuda = grid["device"] == "cuda"
    if cuda and not torch.cuda.is_available():
        out["error"] = f"PyTorch {torch.__version__} sees no CUDA device"
        write(out_path, out)
        print(out["error"], file=sys.stderr)
        return 4
    dev = torch.device("cuda" if cuda else "cpu")
    torch.manual_seed(grid["seed"])
    out["torch_version"] = torch.__version__
    out["cuda_version"] = torch.version.cuda
    out["device_name"] = torch.cuda.get_device_name(dev) if cuda else "cpu"
    out["font_path"] = font_path()
    print(f"[torch] PyTorch {torch.__version__} on {out['device_name']}", flush=True)
    return torch, dev, cuda
