"""L1 · Linear algebra with NumPy: a dense layer forward pass, ReLU, and loops vs vectors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from annotated_types import Interval

from mastery.core.labs import new_report
from mastery.core.progress import Progress
from mastery.core.report import Report
from mastery.core.runtime import best_of
from mastery.nn.dense import dense_forward, dense_forward_broadcast, dense_forward_dot, dense_forward_loops, relu

REQUIRES: tuple[str, ...] = ()  # registered assets the tiny preset reads


@dataclass(frozen=True)
class Config:
    in_features: Annotated[int, Interval(ge=1, le=16_384)] = 64
    out_features: Annotated[int, Interval(ge=1, le=16_384)] = 64
    max_batch: Annotated[int, Interval(ge=1, le=1_000_000)] = 10_000
    n_sizes: Annotated[int, Interval(ge=1, le=100)] = 9  # log-spaced batch sizes from 1 to max_batch
    repeats: Annotated[int, Interval(ge=1, le=1000)] = 3  # best-of timing repeats for the fast methods
    # the naive loop is timed up to this batch size
    loop_max_batch: Annotated[int, Interval(ge=1, le=1_000_000)] = 10_000
    seed: int = 0


# The numbers that summarise a run: the README table and the conformance test read them from here.
HEADLINE = ("speedup_at_max_batch",)

PRESETS = {
    "tiny": Config(in_features=16, out_features=8, max_batch=200, n_sizes=4, repeats=1, loop_max_batch=200),
    "full": Config(),
}

METHODS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "python loops": dense_forward_loops,
    "numpy broadcasting": dense_forward_broadcast,
    "np.dot": dense_forward_dot,
}


def run(config: Config, progress: Progress) -> Report:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = new_report("l01", config)
    rng = np.random.default_rng(config.seed)
    w = rng.standard_normal((config.in_features, config.out_features)) / np.sqrt(config.in_features)
    b = rng.standard_normal(config.out_features)

    # Correctness first: every method computes the same Y, and ReLU zeroes exactly the negatives.
    x = rng.standard_normal((7, config.in_features))
    y = dense_forward(x, w, b)
    errors = {name: float(np.max(np.abs(fn(x, w, b) - y))) for name, fn in METHODS.items()}
    report.metric("max_abs_diff_loops_vs_dot", errors["python loops"])
    report.metric("max_abs_diff_broadcast_vs_dot", errors["numpy broadcasting"])
    report.check("methods_agree", max(errors.values()) < 1e-9, "all three methods give the same Y (< 1e-9)",
                 max(errors.values()))
    activated = relu(y)
    report.check("relu", bool(np.all(activated == np.where(y > 0, y, 0.0))), "ReLU(y) = max(0, y) elementwise")
    report.metric("output_mean", float(activated.mean()))
    w_bad = w[:-1]  # one input row short: X (N, D) no longer aligns with W (D-1, H)
    try:
        dense_forward(x, w_bad, b)
        shape_error = ""
    except ValueError as exc:
        shape_error = str(exc)
    report.check("shape_error_names_shapes", str(x.shape) in shape_error and str(w_bad.shape) in shape_error,
                 "a wrong shape raises an error naming both shapes", shape_error)

    sizes = np.unique(np.logspace(0, np.log10(config.max_batch), config.n_sizes).round().astype(int))
    times: dict[str, list[float]] = {name: [] for name in METHODS}
    progress.stage("benchmark", total=len(sizes))
    rows = []
    for n in sizes:
        xb = rng.standard_normal((int(n), config.in_features))
        row = {"batch": int(n)}
        for name, fn in METHODS.items():
            if name == "python loops" and n > config.loop_max_batch:
                t = float("nan")
            else:
                t = best_of(lambda fn=fn, xb=xb: fn(xb, w, b), 1 if name == "python loops" else config.repeats)
            times[name].append(t)
            row[f"{name} (ms)"] = t * 1e3
        rows.append(row)
        progress.step(batch=float(n))
    report.table("Forward-pass time by batch size", rows)

    largest = int(sizes[-1])
    loop_t, bcast_t, dot_t = (times[m][-1] for m in METHODS)
    if np.isfinite(loop_t):
        report.timing(f"speedup_at_{largest}", loop_t / dot_t)
        report.timing("speedup_at_max_batch", loop_t / dot_t)  # the headline, whatever max_batch is
        report.timing(f"broadcast_speedup_at_{largest}", loop_t / bcast_t)
    report.timing(f"dot_vs_broadcast_at_{largest}", bcast_t / dot_t)
    report.timing(f"dot_seconds_at_{largest}", dot_t)
    if largest >= 10_000 and np.isfinite(loop_t):
        report.check("dot_100x_faster_at_10000", loop_t / dot_t >= 100, "np.dot >= 100x faster than loops",
                     loop_t / dot_t)

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, series in times.items():
        ax.loglog(sizes, np.asarray(series) * 1e3, marker="o", label=name)
    ax.set_xlabel("batch size N")
    ax.set_ylabel(f"forward time (ms), D={config.in_features}, H={config.out_features}")
    ax.set_title("Dense layer Y = XW + b: loops vs vectorised")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    report.figure("time_vs_batch", fig)
    report.note(
        "The loop pays Python's interpreter cost for each of the N*D*H multiply-adds; broadcasting moves "
        "the loop into C but materialises an (N, D, H) temporary; np.dot hands the whole product to BLAS, "
        "which blocks it for the cache and uses SIMD and every core."
    )
    report.device = "cpu (NumPy)"
    return report
