"""Load benchmark of ``POST /predict``: a bounded number of requests at a fixed concurrency, local only.

Trains the Titanic model (or uses ``--model``), starts ``mastery predict serve`` as a separate process on
127.0.0.1 (its own interpreter, so the client does not share its GIL), sends ``--requests`` POSTs from
``--concurrency`` asyncio workers over one httpx.AsyncClient, stops the server and prints one JSON object:
p50/p90/p99/mean/max latency (ms, client-side, queueing included), requests/s and the error rate, for a
sequential warm-up pass and for the concurrent load. Bounded: at most ``--max-seconds`` of sending.

Usage: flock /tmp/mastery-cpu.lock .venv/bin/python benchmarks/predict_load.py [--requests 2000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

from mastery.eval.predict_fixtures import PASSENGERS
from mastery.serving.load import concurrent_load, sequential_latency
from mastery.serving.server import ServerProcess


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sequential", type=int, default=200, help="requests sent one at a time first")
    parser.add_argument("--max-seconds", type=float, default=180.0, help="stop sending after this long")
    parser.add_argument("--model", default=None, help="a saved .skops model (default: train one now)")
    parser.add_argument("--scoring-threads", type=int, default=1, help="the server's --scoring-threads")
    args = parser.parse_args(argv)
    if not (1 <= args.requests <= 100_000 and 1 <= args.concurrency <= 256):
        parser.error("--requests must be in 1..100000 and --concurrency in 1..256")

    with tempfile.TemporaryDirectory(prefix="predict-load-") as tmp:
        model = Path(args.model) if args.model else _train(Path(tmp) / "titanic.skops")
        payloads = list(PASSENGERS.values())
        extra = ("--scoring-threads", str(args.scoring_threads))
        with ServerProcess(model, Path(tmp) / "server.log", extra_args=extra) as server:
            url = server.url + "/predict"
            seq = sequential_latency(url, payloads, args.sequential)
            conc = concurrent_load(url, payloads, args.requests, args.concurrency, max_seconds=args.max_seconds)
    result = {
        "endpoint": "POST /predict",
        "server": f"mastery predict serve (1 uvicorn process, {args.scoring_threads} scoring thread(s)) on 127.0.0.1",
        "machine": f"{platform.machine()}, {os.cpu_count()} logical cores, python {platform.python_version()}",
        "sequential": _rounded(seq.summary()),
        "concurrent": _rounded(conc.summary()),
    }
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0 if conc.error_rate == 0 and not conc.stopped_early else 1


def _train(path: Path) -> Path:
    from mastery.serving.titanic_model import save_titanic, train_titanic

    save_titanic(train_titanic(folds=2), path)
    return path


def _rounded(summary: dict) -> dict:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in summary.items()}


if __name__ == "__main__":
    sys.exit(main())
