"""Load benchmark of ``POST /predict``, the old serving path against the new one in the same run, local only.

Trains the Titanic model (or uses ``--model``, a registry name such as ``titanic-logreg``, or ``--artifact``)
and serves it three ways, one after the other, each as ``mastery predict serve`` in its own processes on
127.0.0.1 (its own interpreters, so the client does not share their GIL):

1. ``old``: ``--engine sklearn --workers 1``, the path before the compiled one (a one-row DataFrame through
   the scikit-learn pipeline, scored in a thread);
2. ``onnx``: ``--engine onnx --workers 1``, the compiled path alone;
3. ``new``: ``--engine onnx --workers W`` (``--workers``, default 2: one per core here).

Each gets a sequential warm-up pass, then ``--requests`` POSTs (``--old-requests`` for the old path, which
is some 30x slower: the same wall time per path) from ``--concurrency`` asyncio workers over
one keep-alive client (aiohttp by default: about half httpx's CPU per request, which matters because the
client runs on the same cores as the server). Prints a side-by-side table on stderr and one JSON object
on stdout (also written to ``--out``): requests/s, p50/p99 latency (ms, client-side, queueing included),
errors, the CPU seconds the client and the server processes used, the load average before and after
(the machine is shared: other jobs' CPU shows up there), and the speed-up of each path over ``old``.
Bounded: at most ``--max-seconds`` of sending per path.

Usage: flock /tmp/mastery-cpu.lock .venv/bin/python benchmarks/predict_load.py [--model titanic-logreg]
       [--requests 10000] [--old-requests 1000] [--concurrency 32] [--workers 2] [--out predict_load.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

from mastery.eval.predict_fixtures import PASSENGERS
from mastery.serving.load import concurrent_load, sequential_latency
from mastery.serving.server import ServerProcess


def _server_cpu(pid: int) -> float:
    """CPU seconds used so far by the server process and its workers (psutil; 0 where it is missing)."""
    try:
        import psutil
    except ImportError:
        return 0.0
    total = 0.0
    parent = psutil.Process(pid)
    for proc in [parent, *parent.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


def _run_path(name: str, model: Path, extra: tuple[str, ...], args: argparse.Namespace,
              tmp: Path) -> dict[str, Any]:
    payloads = list(PASSENGERS.values())
    load_before = os.getloadavg()
    with ServerProcess(model, tmp / f"{name}.log", start_timeout=180.0, extra_args=extra) as server:
        server_args = ["--artifact", model.name, *extra]
        url = server.url + "/predict"
        seq = sequential_latency(url, payloads, args.sequential)
        cpu0 = _server_cpu(server.pid or 0)
        n = args.old_requests if name == "old" else args.requests
        conc = concurrent_load(url, payloads, n, args.concurrency, max_seconds=args.max_seconds, client=args.client)
        server_cpu = _server_cpu(server.pid or 0) - cpu0
    return {"server": "mastery predict serve " + " ".join(server_args), "sequential": _rounded(seq.summary()),
            "concurrent": _rounded({**conc.summary(), "server_cpu_s": server_cpu,
                                    "server_cpu_share": server_cpu / max(conc.seconds, 1e-9),
                                    # CPU per request barely depends on what else the machine runs; req/s does
                                    "server_cpu_ms_per_request": 1000 * server_cpu / max(conc.n_sent, 1),
                                    "client_cpu_ms_per_request": 1000 * conc.client_cpu_s / max(conc.n_sent, 1)}),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000, help="concurrent-phase POSTs of the onnx paths")
    parser.add_argument("--old-requests", type=int, default=1000, help="concurrent-phase POSTs of the old path")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sequential", type=int, default=200, help="requests sent one at a time first")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop sending after this long, per path")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the new path")
    parser.add_argument("--client", choices=("aiohttp", "httpx"), default="aiohttp")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", default=None, help="a registry name, e.g. titanic-logreg")
    which.add_argument("--artifact", default=None, help="a saved .skops model (default: train one now)")
    parser.add_argument("--paths", default="old,onnx,new", help="which paths to run, comma-separated")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if not (1 <= args.requests <= 100_000 and 1 <= args.old_requests <= 100_000 and 1 <= args.concurrency <= 256
            and 1 <= args.workers <= 16):
        parser.error("--requests must be in 1..100000, --concurrency in 1..256, --workers in 1..16")
    paths = {"old": ("--engine", "sklearn", "--workers", "1"), "onnx": ("--engine", "onnx", "--workers", "1"),
             "new": ("--engine", "onnx", "--workers", str(args.workers))}
    chosen = [p.strip() for p in args.paths.split(",") if p.strip()]
    if not chosen or set(chosen) - set(paths):
        parser.error(f"--paths takes a comma-separated subset of {', '.join(paths)}")

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="predict-load-") as tmp:
        if args.model:  # the registered files, verified here; each server checks the sha256 again
            from mastery.serving.titanic_model import load_registered

            loaded = load_registered(args.model)
            model, source = loaded.path, f"{loaded.meta['registry_ref']} (version {loaded.version})"
        else:
            model = Path(args.artifact) if args.artifact else _train(Path(tmp) / "titanic.skops")
            source = str(args.artifact) if args.artifact else "trained now (train_titanic(folds=2))"
        for name in chosen:
            results[name] = _run_path(name, model, paths[name], args, Path(tmp))
    base = results.get("old", {}).get("concurrent", {}).get("requests_per_s")
    if base:
        for res in results.values():
            res["speedup_vs_old"] = round(res["concurrent"]["requests_per_s"] / base, 2)
    report = {
        "endpoint": "POST /predict",
        "machine": f"{platform.machine()}, {os.cpu_count()} logical cores, python {platform.python_version()}",
        "model": source,
        "client": f"{args.client}, HTTP/1.1 keep-alive, {args.concurrency} connections, in this process",
        "settings": {"requests": args.requests, "old_requests": args.old_requests, "concurrency": args.concurrency,
                     "sequential": args.sequential, "workers": args.workers},
        "load_average_note": "1-minute load average of the whole machine around each path (2 cores, shared with "
                             "other jobs: anything above ~2 means the server and client queued for CPU)",
        "paths": results,
    }
    _table(results)
    text = json.dumps(report, indent=2)
    sys.stdout.write(text + "\n")
    if args.out:
        Path(args.out).write_text(text + "\n")
    ok = all(r["concurrent"]["errors"] == 0 and not r["concurrent"]["stopped_early"] for r in results.values())
    return 0 if ok else 1


def _table(results: dict[str, Any]) -> None:
    head = f"{'path':<6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'client CPU':>11} " \
           f"{'server CPU':>11} {'server CPU/req':>15} {'x old':>6}  server"
    lines = [head]
    for name, r in results.items():
        c = r["concurrent"]
        lines.append(f"{name:<6} {c['requests_per_s']:>8.0f} {c['p50_ms']:>8.1f} {c['p99_ms']:>8.1f} "
                     f"{c['errors']:>7d} {c['client_cpu_share']:>10.0%} {c['server_cpu_share']:>10.0%} "
                     f"{c['server_cpu_ms_per_request']:>12.2f} ms "
                     f"{r.get('speedup_vs_old', float('nan')):>6.1f}  {r['server']}")
    sys.stderr.write("\n".join(lines) + "\n(CPU shares are of one core, over the concurrent phase)\n")


def _train(path: Path) -> Path:
    from mastery.serving.titanic_model import save_titanic, train_titanic

    save_titanic(train_titanic(folds=2), path)
    return path


def _rounded(summary: dict) -> dict:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in summary.items()}


if __name__ == "__main__":
    sys.exit(main())
