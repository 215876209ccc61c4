"""Load benchmark of the agent API under faults: N runs at concurrency C, local only and bounded.

Starts two scripted LLM servers and the agent API (uvicorn threads on 127.0.0.1). The primary LLM answers
late (past the client timeout) on every ``--timeout-every``-th call, so those calls are retried and, when
the retries also time out, answered by the fallback; every other question calls ``lookup``, a tool that
always fails (retried once, then the agent answers from the error). ``--concurrency`` clients each POST a
run (retrying on 429 after Retry-After) and follow its SSE stream to the result. Prints one JSON object:
runs started/finished/lost (lost must be 0), status counts, retries, fallbacks, p50/p99 run latency, runs/s.

Usage: flock /tmp/mastery-cpu.lock .venv/bin/python benchmarks/agent_api_load.py [--runs 200] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from mastery.agents.resilience import RetryPolicy, parse_price_table
from mastery.eval.agent_api_fixtures import (
    EXAMPLE_PRICES,
    FALLBACK_MODEL,
    PRIMARY_MODEL,
    demo_keys,
    demo_script,
    demo_tools,
)
from mastery.llm.scripted import Fault, ScriptedLLM, create_scripted_app
from mastery.serving.agent_api import AgentAPISettings, create_app
from mastery.serving.agent_runs import BackendSpec, RunnerSettings
from mastery.serving.server import ServerThread


async def _one(client: Any, i: int, deadline: float) -> dict[str, Any]:
    question = f"What is 17 * 23? [bench {i}]" if i % 2 == 0 else f"Look it up [lookup] [bench {i}]"
    start = time.perf_counter()
    refused = 0
    while True:
        r = await client.post("/runs", json={"question": question, "max_steps": 4})
        if r.status_code != 429 or time.perf_counter() > deadline:
            break
        refused += 1
        await asyncio.sleep(float(r.headers.get("retry-after", "1")))
    if r.status_code != 202:
        return {"started": False, "status": f"http_{r.status_code}", "refused": refused}
    run_id = r.json()["id"]
    result: dict[str, Any] = {}
    async with client.stream("GET", f"/runs/{run_id}/events") as stream:
        event = None
        async for line in stream.aiter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "result":
                result = json.loads(line.split(":", 1)[1])
    return {"started": True, "status": result.get("status", "lost"), "latency_s": time.perf_counter() - start,
            "llm_retries": result.get("llm_retries", 0), "fallbacks": result.get("fallbacks", 0),
            "tool_retries": result.get("tool_retries", 0), "backend": result.get("backend", ""),
            "refused": refused, "id": run_id}


async def _load(url: str, token: str, runs: int, concurrency: int,
                max_seconds: float) -> tuple[list[dict[str, Any]], float]:
    import httpx

    deadline = time.perf_counter() + max_seconds
    out: list[dict[str, Any]] = []
    state = {"next": 0}
    limits = httpx.Limits(max_connections=2 * concurrency)
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=120.0, limits=limits,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        start = time.perf_counter()

        async def worker() -> None:
            while state["next"] < runs and time.perf_counter() < deadline:
                i = state["next"]
                state["next"] += 1
                out.append(await _one(client, i, deadline))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=4, help="the API's worker threads")
    parser.add_argument("--queue", type=int, default=8, help="the API's queue limit (more runs get 429)")
    parser.add_argument("--timeout-every", type=int, default=4, help="the primary times out on every Nth call")
    parser.add_argument("--timeout", dest="llm_timeout", type=float, default=0.3,
                        help="client timeout per LLM call (s)")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="stop starting runs after this long")
    args = parser.parse_args(argv)
    if not (1 <= args.runs <= 5000 and 1 <= args.concurrency <= 128 and args.timeout_every >= 1):
        parser.error("--runs must be in 1..5000, --concurrency in 1..128, --timeout-every >= 1")
    for name in ("httpx", "httpcore", "uvicorn.error", "mastery"):
        logging.getLogger(name).setLevel(logging.CRITICAL)

    primary = ScriptedLLM(demo_script(), model=PRIMARY_MODEL,
                          faults=[Fault("delay", every=args.timeout_every, delay_s=args.llm_timeout * 3)])
    fallback = ScriptedLLM(demo_script(), model=FALLBACK_MODEL)
    with tempfile.TemporaryDirectory(prefix="agent-load-") as tmp, \
            ServerThread(create_scripted_app(primary)) as p_srv, ServerThread(create_scripted_app(fallback)) as f_srv:
        backends = [BackendSpec("primary", p_srv.url + "/v1", PRIMARY_MODEL, timeout_s=args.llm_timeout),
                    BackendSpec("fallback", f_srv.url + "/v1", FALLBACK_MODEL, timeout_s=args.llm_timeout)]
        runner = RunnerSettings(backends=backends, tools=demo_tools(), agent_mode="native",
                                prices=parse_price_table(EXAMPLE_PRICES),
                                workers=args.workers, queue_limit=args.queue,
                                llm_retry=RetryPolicy(attempts=2, base_s=0.05, max_s=0.5),
                                tool_retry=RetryPolicy(attempts=2, base_s=0.05, max_s=0.5))
        keys, tokens = demo_keys(tmp, ("bench",))
        app = create_app(AgentAPISettings(db_path=Path(tmp) / "runs.db", runner=runner, default_timeout_s=60.0,
                                          keys=keys))
        with ServerThread(app) as api:
            results, seconds = asyncio.run(_load(api.url, tokens["bench"], args.runs, args.concurrency,
                                                 args.max_seconds))
            stored = app.state.store.counts()
        app.state.close()
    started = [r for r in results if r["started"]]
    finished = [r for r in started if r["status"] not in ("lost", "queued", "running")]
    latencies = np.array([r["latency_s"] for r in finished]) if finished else np.zeros(1)
    report = {
        "benchmark": "agent API under faults (scripted LLMs, uvicorn threads on 127.0.0.1)",
        "machine": f"{platform.machine()}, {os.cpu_count()} logical cores, python {platform.python_version()}",
        "settings": {"runs": args.runs, "concurrency": args.concurrency, "workers": args.workers,
                     "queue_limit": args.queue, "primary_times_out_every": args.timeout_every,
                     "llm_timeout_s": args.llm_timeout, "llm_attempts": 2, "failing_tool": "lookup (every odd run)"},
        "runs_started": len(started), "runs_finished": len(finished), "runs_lost": len(started) - len(finished),
        "not_started": len(results) - len(started) + (args.runs - len(results)),
        "statuses": dict(Counter(r["status"] for r in results)), "stored_statuses": stored,
        "answered_by": dict(Counter(r.get("backend", "") for r in finished)),
        "llm_retries": sum(r.get("llm_retries", 0) for r in finished),
        "fallback_calls": sum(r.get("fallbacks", 0) for r in finished),
        "tool_retries": sum(r.get("tool_retries", 0) for r in finished),
        "post_refused_429": sum(r["refused"] for r in results),
        "primary_calls": dict(primary.outcomes), "fallback_calls_served": dict(fallback.outcomes),
        "p50_run_latency_s": round(float(np.percentile(latencies, 50)), 3),
        "p99_run_latency_s": round(float(np.percentile(latencies, 99)), 3),
        "max_run_latency_s": round(float(latencies.max()), 3),
        "runs_per_s": round(len(finished) / max(seconds, 1e-9), 2), "seconds": round(seconds, 2),
    }
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    ok = report["runs_lost"] == 0 and len(started) == args.runs
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
