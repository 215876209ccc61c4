"""L9 benchmark: 2-D convolution by sliding-window loops vs im2col (NumPy) vs torch.nn.functional.conv2d.

Prints one JSON object with, for a few layer shapes, the best-of-N seconds of each implementation
and their ratios measured in the same run (so the ratios hold on any machine), plus the max abs
difference between the NumPy results and torch's.
Usage: python benchmarks/l09_conv.py [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F

from mastery.vision.conv import conv2d_im2col, conv2d_loops

# (name, N, C, H, W, O, K, stride, padding)
SHAPES = [
    ("cifar_stem", 8, 3, 32, 32, 16, 3, 1, 1),
    ("mid_layer", 8, 32, 16, 16, 32, 3, 1, 1),
    ("strided_5x5", 8, 16, 32, 32, 32, 5, 2, 2),
    ("deep_small", 8, 64, 8, 8, 64, 3, 1, 1),
]


def best_of(repeats: int, fn, *args, **kwargs) -> float:
    fn(*args, **kwargs)  # warm-up: allocations, kernel selection
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (0 = torch's default; 1 avoids thread-sync noise on a shared CPU)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    rows = []
    for name, n, c, h, w, o, k, s, p in SHAPES:
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        weight = rng.standard_normal((o, c, k, k)).astype(np.float32)
        bias = rng.standard_normal(o).astype(np.float32)
        xt, wt, bt = torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias)
        ref = F.conv2d(xt, wt, bt, stride=s, padding=p).numpy()
        start = time.perf_counter()
        out_loops = conv2d_loops(x, weight, bias, s, p)  # one run: it is the slow one
        loops_s = time.perf_counter() - start
        im2col_s = best_of(args.repeats, conv2d_im2col, x, weight, bias, s, p)
        with torch.no_grad():
            torch_s = best_of(args.repeats, F.conv2d, xt, wt, bt, stride=s, padding=p)
        err = max(float(np.abs(out_loops - ref).max()),
                  float(np.abs(conv2d_im2col(x, weight, bias, s, p) - ref).max()))
        macs = n * o * ref.shape[2] * ref.shape[3] * c * k * k
        rows.append({
            "layer": name, "input": [n, c, h, w], "weight": [o, c, k, k], "stride": s, "padding": p,
            "output": list(ref.shape), "macs": macs,
            "loops_s": loops_s, "im2col_s": im2col_s, "torch_s": torch_s,
            "im2col_speedup_vs_loops": loops_s / im2col_s, "torch_speedup_vs_im2col": im2col_s / torch_s,
            "torch_speedup_vs_loops": loops_s / torch_s, "max_abs_error_vs_torch": err,
        })
    print(json.dumps({
        "benchmark": "l09_conv2d_forward", "dtype": "float32", "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(), "layers": rows,
        "machine": f"{platform.machine()} python {platform.python_version()} torch {torch.__version__}",
    }, indent=2))


if __name__ == "__main__":
    main()
