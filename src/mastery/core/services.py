"""Helpers for the local services the project starts as child processes (LLM server, prediction API)."""

from __future__ import annotations

import subprocess
import time


def wait_until_healthy(url: str, proc: subprocess.Popen, deadline: float, poll_s: float = 0.05) -> str | None:
    """Poll ``GET url`` until it answers 200. Returns None once healthy; otherwise why not: "exited" when
    ``proc`` ended first, or the last status or error when ``time.monotonic()`` passes ``deadline``."""
    import httpx

    last = "no answer"
    # trust_env=False: a proxy from the environment must never sit between us and 127.0.0.1.
    with httpx.Client(trust_env=False, timeout=2.0) as client:
        while True:
            if proc.poll() is not None:
                return "exited"
            try:
                response = client.get(url)
                if response.status_code == 200:
                    return None
                last = f"HTTP {response.status_code}"  # e.g. llama.cpp's 503 while the model loads
            except httpx.HTTPError as exc:
                last = str(exc) or type(exc).__name__
            if time.monotonic() > deadline:
                return last
            time.sleep(poll_s)  # /health answers in microseconds once the service is up
