"""The embedded LLM server: llama.cpp's OpenAI-compatible HTTP server (via xllamacpp) in a child process.

Why a child process: ``xllamacpp.Server`` starts llama.cpp's server inside the calling process and only
stops when the object is destroyed; llama.cpp also writes its own logs to stdout/stderr. A child keeps
the caller's output clean (its logs go to a file), stops for sure (terminate, then kill), and dies with
its parent (it exits when its stdin, a pipe from the parent, closes).

    with EmbeddedServer(threads=1) as server:   # 127.0.0.1, a free port, the registry GGUF
        print(server.url)                       # http://127.0.0.1:PORT/v1

The child is ``python -m mastery.llm.server --model-path ... --port 0``: it prints one JSON line
``{"url": ..., "device": ...}`` on a private pipe once the model is loaded and the port is listening.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from mastery.llm.errors import LLMServerError
from mastery.llm.settings import EMBEDDED_MODEL

log = logging.getLogger(__name__)


def model_path(name: str = EMBEDDED_MODEL) -> Path:
    """The registry GGUF's local path; never downloads (``mastery models pull NAME`` does)."""
    from mastery.assets.store import resolve

    return resolve(name, fetch=False)


class EmbeddedServer:
    """llama.cpp's server on 127.0.0.1 in a child process; a context manager that always stops it."""

    def __init__(self, model: str | Path | None = None, *, port: int = 0, threads: int | None = None,
                 ctx: int = 4096, alias: str = EMBEDDED_MODEL, startup_timeout_s: float = 120.0,
                 log_path: str | Path | None = None) -> None:
        self.model = model  # a GGUF path, a registry name, or None for the registry default
        self.port = port  # 0: the OS picks a free port
        self.threads = threads
        self.ctx = ctx
        self.alias = alias
        self.startup_timeout_s = startup_timeout_s
        self._log_path = Path(log_path) if log_path else None
        self._own_log = log_path is None
        self._proc: subprocess.Popen[bytes] | None = None
        self.root_url = ""  # http://127.0.0.1:PORT
        self.device = ""
        self.load_seconds = 0.0

    @property
    def url(self) -> str:
        """OpenAI-compatible base URL (ends in /v1)."""
        return f"{self.root_url}/v1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    def wait(self) -> int | None:
        """Block until the child exits (e.g. `mastery llm serve` in the foreground); its exit code."""
        return self._proc.wait() if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- start / stop ---------------------------------------------------------------------
    def start(self) -> EmbeddedServer:
        if self.running():
            return self
        path = Path(self.model) if self.model and Path(self.model).suffix == ".gguf" else model_path(
            str(self.model) if self.model else EMBEDDED_MODEL)
        if not path.is_file():
            raise LLMServerError(f"GGUF model file not found: {path}")
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="mastery-llm-server-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        ready_r, ready_w = os.pipe()
        cmd = [sys.executable, "-m", "mastery.llm.server", "--model-path", str(path), "--port", str(self.port),
               "--ctx", str(self.ctx), "--alias", self.alias, "--ready-fd", str(ready_w)]
        if self.threads:
            cmd += ["--threads", str(self.threads)]
        start = time.perf_counter()
        with open(self._log_path, "ab") as log_file:
            # stdin is a pipe we never write: the child exits when it closes (we stopped or died).
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=log_file, stderr=log_file,
                                          pass_fds=(ready_w,), start_new_session=True)
        os.close(ready_w)
        log.info("event=llm_server_starting pid=%d model=%s port=%s threads=%s ctx=%d log=%s", self._proc.pid,
                 path.name, self.port or "auto", self.threads or "default", self.ctx, self._log_path)
        try:
            info = self._wait_ready(ready_r, time.monotonic() + self.startup_timeout_s)
        except BaseException:
            self.stop()
            raise
        finally:
            os.close(ready_r)
        self.root_url, self.device = info["url"].rstrip("/"), info.get("device", "cpu")
        self._wait_healthy(time.monotonic() + self.startup_timeout_s)
        self.load_seconds = time.perf_counter() - start
        log.info("event=llm_server_ready pid=%d url=%s device=%r load_s=%.2f", self._proc.pid, self.url,
                 self.device, self.load_seconds)
        return self

    def _log_tail(self) -> str:
        """The first llama.cpp error line (``<time> E <message>``) and the log's last line."""
        try:
            text = self._log_path.read_text(errors="replace") if self._log_path else ""
        except OSError:
            return ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        errors = [line.split(" E ", 1)[1].strip() for line in lines if " E " in line[:20]]
        picked = ([errors[0]] if errors else []) + lines[-1:]
        return " | ".join(dict.fromkeys(picked))

    def _wait_ready(self, ready_fd: int, deadline: float) -> dict[str, Any]:
        assert self._proc is not None
        buf = b""
        while b"\n" not in buf:
            if self._proc.poll() is not None:
                raise LLMServerError(f"embedded LLM server exited with code {self._proc.returncode} while "
                                     f"starting: {self._log_tail()} (log: {self._log_path})")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LLMServerError(f"embedded LLM server not ready after {self.startup_timeout_s:.0f}s "
                                     f"(log: {self._log_path})")
            readable, _, _ = select.select([ready_fd], [], [], min(remaining, 0.5))
            if readable:
                chunk = os.read(ready_fd, 4096)
                if not chunk:  # the child closed the pipe without a line: it is exiting
                    self._proc.wait(timeout=max(1.0, deadline - time.monotonic()))
                    continue
                buf += chunk
        return json.loads(buf.split(b"\n", 1)[0])

    def _wait_healthy(self, deadline: float) -> None:
        from mastery.core.services import wait_until_healthy

        if self._proc is None:
            return
        problem = wait_until_healthy(f"{self.root_url}/health", self._proc, deadline)
        if problem is None:
            return
        self.stop()
        raise LLMServerError(f"embedded LLM server at {self.root_url} never became healthy ({problem}); "
                             f"log: {self._log_path}")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the child: SIGTERM, then SIGKILL after ``timeout_s``. Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("event=llm_server_kill pid=%d reason='no exit %ss after SIGTERM'", proc.pid, timeout_s)
                proc.kill()
                proc.wait()
        if proc.stdin:
            proc.stdin.close()
        log.info("event=llm_server_stopped pid=%d code=%s", proc.pid, proc.returncode)
        if self._own_log and self._log_path and proc.returncode in (0, -signal.SIGTERM):
            self._log_path.unlink(missing_ok=True)

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the child process ---------------------------------------------------------------------------
def device_info() -> tuple[str, int]:
    """(description, n_gpu_layers): offload every layer when llama.cpp sees a GPU, else run on the CPU."""
    import xllamacpp

    gpus = [d for d in xllamacpp.get_device_info() if str(d.get("name", "")).upper() != "CPU"]
    if gpus:
        return f"{gpus[0]['name']} ({gpus[0].get('description', '')})", 999
    cpu = next(iter(xllamacpp.get_device_info()), {})
    return f"cpu ({os.cpu_count()} cores, {cpu.get('description', 'llama.cpp')})", 0


def _serve(args: argparse.Namespace) -> int:
    import xllamacpp

    ready = os.fdopen(args.ready_fd, "w")
    os.dup2(2, 1)  # llama.cpp prints to stdout too: send it to the log with stderr
    description, gpu_layers = device_info()
    params = xllamacpp.CommonParams()
    params.model.path = args.model_path
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.n_ctx = args.ctx
    params.n_parallel = 1  # one slot: the whole context for one request, and reproducible outputs
    params.n_gpu_layers = gpu_layers
    params.model_alias = {args.alias}
    if args.threads:
        params.cpuparams.n_threads = args.threads
        params.cpuparams_batch.n_threads = args.threads
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def watch_parent() -> None:
        # os.read on the raw fd, not sys.stdin: a daemon thread blocked inside a buffered reader's lock
        # aborts the interpreter at shutdown.
        while os.read(0, 4096):
            pass  # EOF: the parent closed the pipe or died
        stop.set()

    threading.Thread(target=watch_parent, daemon=True).start()
    server = xllamacpp.Server(params)  # returns once the model is loaded and the port listens
    ready.write(json.dumps({"url": server.listening_address, "device": description}) + "\n")
    ready.close()
    while not stop.wait(1.0):
        pass
    del server  # llama.cpp's ~Server stops the HTTP listener and frees the model
    sys.stdout.flush()
    os._exit(0)  # skip interpreter finalisation: the stdin watcher may still be blocked in read()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run llama.cpp's server (child process of EmbeddedServer)")
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--alias", default=EMBEDDED_MODEL)
    parser.add_argument("--ready-fd", type=int, required=True)
    return _serve(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover - the child process
    sys.exit(main())
