"""Latency of a live endpoint: sequential requests (one client, one at a time) and a bounded concurrent
load (an asyncio pool of ``concurrency`` workers over one keep-alive client: httpx.AsyncClient, or aiohttp,
which spends about half the CPU per request and so steals less from a server on the same machine).

Every result records the CPU seconds the load generator itself used (``client_cpu_s``): on a small
machine the client competes with the server for the same cores, and a reader needs to know how much."""

from __future__ import annotations

import asyncio
import json
import resource
import time
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LoadResult:
    latencies_ms: np.ndarray  # (n_sent,) wall-clock ms of every request, failed ones included
    n_sent: int
    n_errors: int  # transport errors and non-2xx answers
    seconds: float
    concurrency: int
    stopped_early: bool  # max_seconds ran out before n_requests were sent
    client_cpu_s: float = 0.0  # CPU (user + system) this process spent while sending, all threads

    @property
    def error_rate(self) -> float:
        return self.n_errors / max(1, self.n_sent)

    @property
    def requests_per_second(self) -> float:
        return self.n_sent / max(self.seconds, 1e-9)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.n_sent else float("nan")

    def summary(self) -> dict[str, float | int | bool]:
        return {"requests": self.n_sent, "concurrency": self.concurrency, "errors": self.n_errors,
                "error_rate": self.error_rate, "p50_ms": self.percentile(50), "p90_ms": self.percentile(90),
                "p99_ms": self.percentile(99), "max_ms": float(self.latencies_ms.max()) if self.n_sent else 0.0,
                "mean_ms": float(self.latencies_ms.mean()) if self.n_sent else 0.0,
                "requests_per_s": self.requests_per_second, "seconds": self.seconds,
                "stopped_early": self.stopped_early, "client_cpu_s": self.client_cpu_s,
                "client_cpu_share": self.client_cpu_s / max(self.seconds, 1e-9)}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sequential_latency(url: str, payloads: list[dict[str, Any]], n_requests: int, timeout: float = 10.0,
                       warmup: int = 5) -> LoadResult:
    """``n_requests`` POSTs one after another over a keep-alive connection (payloads cycled)."""
    import httpx

    latencies, errors = [], 0
    with httpx.Client(trust_env=False, timeout=timeout) as client:
        for i in range(warmup):
            client.post(url, json=payloads[i % len(payloads)])
        start = time.perf_counter()
        for i in range(n_requests):
            t0 = time.perf_counter()
            try:
                ok = client.post(url, json=payloads[i % len(payloads)]).is_success
            except httpx.HTTPError:
                ok = False
            latencies.append((time.perf_counter() - t0) * 1000)
            errors += not ok
        seconds = time.perf_counter() - start
    return LoadResult(np.asarray(latencies), len(latencies), errors, seconds, 1, False)


def concurrent_load(url: str, payloads: list[dict[str, Any]], n_requests: int, concurrency: int,
                    timeout: float = 10.0, max_seconds: float = 120.0, client: str = "httpx") -> LoadResult:
    """``n_requests`` POSTs from ``concurrency`` workers at once; stops sending after ``max_seconds``.
    ``client``: ``httpx`` or ``aiohttp`` (both HTTP/1.1 keep-alive, one connection per worker)."""
    if client == "aiohttp":
        return asyncio.run(_concurrent_aiohttp(url, payloads, n_requests, concurrency, timeout, max_seconds))
    if client != "httpx":
        raise ValueError(f"client must be httpx or aiohttp, not {client!r}")
    return asyncio.run(_concurrent(url, payloads, n_requests, concurrency, timeout, max_seconds))


async def _concurrent(url: str, payloads: list[dict[str, Any]], n_requests: int, concurrency: int,
                      timeout: float, max_seconds: float) -> LoadResult:
    import httpx

    latencies: list[float] = []
    state = {"next": 0, "errors": 0}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(trust_env=False, timeout=timeout, limits=limits) as client:
        for payload in payloads[:concurrency]:  # open some connections before the clock starts
            await client.post(url, json=payload)
        start = time.perf_counter()
        deadline = start + max_seconds

        async def worker() -> None:
            while state["next"] < n_requests and time.perf_counter() < deadline:
                i = state["next"]
                state["next"] += 1  # no await between read and write: asyncio workers cannot interleave here
                t0 = time.perf_counter()
                try:
                    ok = (await client.post(url, json=payloads[i % len(payloads)])).is_success
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - t0) * 1000)
                state["errors"] += not ok

        cpu = _cpu_seconds()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - start
        cpu = _cpu_seconds() - cpu
    return LoadResult(np.asarray(latencies), len(latencies), state["errors"], seconds, concurrency,
                      len(latencies) < n_requests, cpu)


async def _concurrent_aiohttp(url: str, payloads: list[dict[str, Any]], n_requests: int, concurrency: int,
                              timeout: float, max_seconds: float) -> LoadResult:
    import aiohttp

    bodies = [json.dumps(p).encode() for p in payloads]  # encoded once: the client's CPU is the server's too
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    state = {"next": 0, "errors": 0}
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:

        async def post(i: int) -> bool:
            async with session.post(url, data=bodies[i % len(bodies)], headers=headers) as r:
                await r.read()
                return 200 <= r.status < 300

        await asyncio.gather(*(post(i) for i in range(concurrency)))  # open the connections first
        start = time.perf_counter()
        deadline = start + max_seconds

        async def worker() -> None:
            while state["next"] < n_requests and time.perf_counter() < deadline:
                i = state["next"]
                state["next"] += 1
                t0 = time.perf_counter()
                try:
                    ok = await post(i)
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                latencies.append((time.perf_counter() - t0) * 1000)
                state["errors"] += not ok

        cpu = _cpu_seconds()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - start
        cpu = _cpu_seconds() - cpu
    return LoadResult(np.asarray(latencies), len(latencies), state["errors"], seconds, concurrency,
                      len(latencies) < n_requests, cpu)
