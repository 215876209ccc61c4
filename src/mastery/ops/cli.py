"""``mastery labs sweep`` and ``mastery predict batch-score``: the scale-out verbs.

The nouns live elsewhere (``labs`` in :mod:`mastery.cli`, ``predict`` in :mod:`mastery.serving.cli`);
each adds its verb here with one call. Building the parsers imports nothing heavy: Ray, MLflow and
scikit-learn load when a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _add_engine_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help=f"local: {what} in this process (default); ray: on Ray (a private local Ray unless "
                        "--ray-address is given)")
    p.add_argument("--workers", type=int, default=None, choices=range(1, 257), metavar="N",
                   help="CPUs of the local Ray started for --engine ray (default: all of this machine's)")
    p.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                   help="join a running Ray cluster (e.g. started with 'ray start --head --node-ip-address "
                        "127.0.0.1 --include-dashboard=false') instead of starting one")


# -- labs sweep ----------------------------------------------------------------------------------
def cmd_labs_sweep(args: argparse.Namespace) -> int:
    from mastery.ops.batch_score import atomic_output
    from mastery.ops.sweep import parse_params, sweep, table

    result = sweep(args.lab, parse_params(args.param or []), preset=args.preset, base=args.set or [],
                   engine=args.engine, metric=args.metric, mode=args.mode, tracking_uri=args.tracking_uri,
                   out=args.out, workers=args.workers, address=args.ray_address)
    path = _sweep_json_path(args.out, result.sweep_id)
    with atomic_output(path, "w") as f:
        f.write(json.dumps(result.to_dict(), indent=2) + "\n")
    if args.json:
        _out(json.dumps(result.to_dict(), indent=2))
    else:
        _out(f"sweep {result.sweep_id}: {len(result.trials)} trial(s) of {result.lab} [{result.preset}] on "
             f"{result.engine} in {result.wall_time_s:.1f}s; MLflow experiment {result.experiment} at "
             f"{result.tracking_uri}\n")
        _out(table(result))
        _out(f"results: {path}")
    failed = [t for t in result.trials if t.error]
    for t in failed:
        sys.stderr.write(f"trial {' '.join(f'{k}={v}' for k, v in t.params.items())} failed: {t.error}\n")
    return 1 if failed or result.best is None else 0


def _sweep_json_path(out: str, sweep_id: str) -> Any:
    from pathlib import Path

    return Path(out) / "sweeps" / f"{sweep_id}.json"


def add_sweep_command(lsub: Any) -> None:
    """``mastery labs sweep``, added to the ``labs`` group."""
    p = lsub.add_parser("sweep", help="run a lab over a grid of --set values, log every trial to MLflow, "
                                      "report the best config")
    p.add_argument("lab", help="lab id, e.g. l05")
    p.add_argument("--param", action="append", metavar="KEY=V1,V2,...",
                   help="a swept field and its values (repeatable: the grid is every combination); for a tuple "
                        "field separate the values with ';', e.g. hidden='256,128;512'")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="a field fixed for every trial")
    p.add_argument("--preset", default="tiny", help="the preset every trial starts from (default tiny)")
    _add_engine_options(p, "trials one after another")
    p.add_argument("--metric", default=None, help="the metric that picks the best trial (default: the lab's "
                                                   "first headline metric)")
    p.add_argument("--mode", choices=("max", "min"), default=None,
                   help="best = highest or lowest (default: min for losses and errors, else max)")
    p.add_argument("--out", default="runs", help="runs folder: MLflow store and sweeps/<id>.json (default runs)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default sqlite:///<out>/mlflow.db)")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of the table")
    p.set_defaults(func=cmd_labs_sweep)


# -- predict batch-score -------------------------------------------------------------------------------
def cmd_batch_score(args: argparse.Namespace) -> int:
    import tempfile

    from mastery.ops.batch_score import batch_score, titanic_scorer
    from mastery.serving.cli import _load

    if args.ray_address is not None:
        from mastery.ops.ray_runtime import check_address

        check_address(args.ray_address)  # before the model loads
    with tempfile.TemporaryDirectory(prefix="mastery-batch-") as tmp:
        artifact = _load(args, tmp)
        stats = batch_score(args.input, args.output, titanic_scorer(artifact), engine=args.engine,
                            batch_size=args.batch_size, workers=args.workers, address=args.ray_address)
    _out(f"{stats['rows']:,} rows scored by {artifact.meta['name']} {artifact.version} on {stats['engine']} in "
         f"{stats['seconds']:.2f}s ({stats['rows_per_s']:,.0f} rows/s) -> {args.output}")
    return 0


def add_batch_score_command(sub: Any) -> None:
    """``mastery predict batch-score``, added to the ``predict`` group."""
    p = sub.add_parser("batch-score", help="score a CSV of passengers: the input rows plus probability and label")
    from mastery.serving.cli import add_model_source

    add_model_source(p)  # the options serving.cli._load reads, as `predict serve` has them
    p.add_argument("--input", required=True, help="CSV with the Kaggle columns (Pclass, Sex, SibSp, Parch, Fare; "
                                                  "Age, Embarked, Name optional; others are kept as they are)")
    p.add_argument("--output", required=True, help="CSV to write (atomically: complete or not at all)")
    p.add_argument("--batch-size", type=int, default=65_536, choices=range(1, 10_000_001), metavar="N",
                   help="rows per scored batch (default %(default)s)")
    _add_engine_options(p, "batches scored")
    p.set_defaults(func=cmd_batch_score)

