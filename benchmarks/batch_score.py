"""Batch-scoring throughput: the Titanic model over a large synthetic CSV, in one process vs Ray Data.

Builds a Titanic-like CSV (real passengers resampled, ages and fares jittered, fresh ids), trains the
served pipeline, then scores the file with ``mastery.ops.batch_score`` twice: ``local`` (one process)
and ``ray`` with N one-CPU workers on a private local Ray. Ray's start-up is timed apart from the
scoring; both runs include reading, scoring and writing the CSV. Checks that both files agree.
Prints a side-by-side table on stderr and one JSON object on stdout (and to --json-out).

Usage: flock /tmp/mastery-cpu.lock python benchmarks/batch_score.py [--rows 1000000] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


def synthetic_titanic(rows: int, path: Path, seed: int = 0) -> None:
    import numpy as np

    from mastery.assets.loaders import load_titanic

    rng = np.random.default_rng(seed)
    base = load_titanic()
    frame = base.iloc[rng.integers(0, len(base), rows)].reset_index(drop=True)
    frame["PassengerId"] = np.arange(1, rows + 1)
    frame["Age"] = (frame["Age"] + rng.normal(0, 2, rows)).clip(0.2, 90).round(1)  # NaN stays NaN
    frame["Fare"] = (frame["Fare"] * rng.uniform(0.8, 1.2, rows)).round(4)
    frame.to_csv(path, index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2, help="Ray workers (1 CPU each)")
    parser.add_argument("--batch-size", type=int, default=65_536)
    parser.add_argument("--dir", default=None, help="working folder (default: a temporary one, removed)")
    parser.add_argument("--json-out", default=None, help="also write the JSON here")
    args = parser.parse_args()

    import numpy as np
    import pandas as pd

    from mastery.ops.batch_score import batch_score, titanic_scorer
    from mastery.ops.ray_runtime import init_ray
    from mastery.serving.artifacts import load_artifact
    from mastery.serving.titanic_model import save_titanic, train_titanic

    with tempfile.TemporaryDirectory(prefix="mastery-bench-", dir=args.dir) as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        synthetic_titanic(args.rows, work / "in.csv")
        make_s = time.perf_counter() - t0
        save_titanic(train_titanic(seed=0, folds=2), work / "titanic.skops")
        scorer = titanic_scorer(load_artifact(work / "titanic.skops"))

        local = batch_score(work / "in.csv", work / "local.csv", scorer, batch_size=args.batch_size)
        t0 = time.perf_counter()
        ray = init_ray(num_cpus=args.workers)
        startup_s = time.perf_counter() - t0
        try:
            on_ray = batch_score(work / "in.csv", work / "ray.csv", scorer, engine="ray",
                                 batch_size=args.batch_size, workers=args.workers)
        finally:
            ray.shutdown()
        a = pd.read_csv(work / "local.csv", usecols=["probability", "label"])
        b = pd.read_csv(work / "ray.csv", usecols=["probability", "label"])
        agree = bool((a["label"] == b["label"]).all() and np.allclose(a["probability"], b["probability"],
                                                                       rtol=0, atol=1e-9))
        size_mb = (work / "in.csv").stat().st_size / 1e6

    result = {
        "rows": args.rows, "input_mb": round(size_mb, 1), "batch_size": args.batch_size,
        "csv_build_s": round(make_s, 2),
        "local": {"seconds": local["seconds"], "rows_per_s": round(local["rows_per_s"])},
        "ray": {"workers": args.workers, "seconds": on_ray["seconds"], "rows_per_s": round(on_ray["rows_per_s"]),
                "startup_s": round(startup_s, 2),
                "rows_per_s_with_startup": round(args.rows / (on_ray["seconds"] + startup_s))},
        "ray_vs_local": round(on_ray["rows_per_s"] / local["rows_per_s"], 3),
        "outputs_agree": agree,
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
                    "python": platform.python_version()},
    }
    sys.stderr.write(f"{'':<22}{'local (1 process)':>20}{f'ray ({args.workers} workers)':>20}\n")
    sys.stderr.write(f"{'seconds':<22}{local['seconds']:>20.2f}{on_ray['seconds']:>20.2f}\n")
    sys.stderr.write(f"{'rows/s':<22}{local['rows_per_s']:>20,.0f}{on_ray['rows_per_s']:>20,.0f}\n")
    sys.stderr.write(f"{'ray start-up (s)':<22}{'-':>20}{startup_s:>20.2f}\n")
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")


if __name__ == "__main__":
    main()
