"""L1 benchmark: naive Python loops vs NumPy broadcasting vs np.dot for a dense layer.

Prints one JSON object. The goal (np.dot >= 100x faster than loops at batch 10,000) is
compared against the loop measured in the same run, so the ratio holds on any machine.
Usage: python benchmarks/l01_dense.py [--batch 10000] [--features 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform

import numpy as np

from mastery.core.runtime import best_of
from mastery.nn.dense import dense_forward_broadcast, dense_forward_dot, dense_forward_loops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, args.features))
    w = rng.standard_normal((args.features, args.features))
    b = rng.standard_normal(args.features)
    loop_s = best_of(lambda: dense_forward_loops(x, w, b), 1)
    bcast_s = best_of(lambda: dense_forward_broadcast(x, w, b), args.repeats)
    dot_s = best_of(lambda: dense_forward_dot(x, w, b), args.repeats)
    speedup = loop_s / dot_s
    print(json.dumps({
        "benchmark": "l01_dense_forward",
        "batch": args.batch, "in_features": args.features, "out_features": args.features,
        "loop_s": loop_s, "broadcast_s": bcast_s, "dot_s": dot_s,
        "dot_speedup_vs_loop": speedup, "broadcast_speedup_vs_loop": loop_s / bcast_s,
        "goal": "dot_speedup_vs_loop >= 100", "goal_met": speedup >= 100,
        "machine": f"{platform.machine()} {platform.python_version()}",
    }, indent=2))


if __name__ == "__main__":
    main()
