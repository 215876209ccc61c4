"""Run an ASGI app under uvicorn on 127.0.0.1: in a background thread (tests) or a subprocess (lab,
benchmark: the server then has its own interpreter and GIL, so client load does not slow it down)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from mastery.core.errors import MasteryError

log = logging.getLogger(__name__)

LOCALHOST = "127.0.0.1"


class ServerError(MasteryError):
    """A local server did not start (or did not stop) as expected."""


def free_port(host: str = LOCALHOST) -> int:
    """A port the OS reports free right now (another process could still take it before we bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServerThread:
    """``with ServerThread(app) as server: httpx.get(server.url + "/health")`` - uvicorn in a daemon thread.

    The socket is bound here (port 0: the OS picks a free one) and handed to uvicorn, so there is no race
    for the port. Leaving the block asks uvicorn to exit and joins the thread.
    """

    def __init__(self, app: Any, host: str = LOCALHOST, port: int = 0, start_timeout: float = 30.0) -> None:
        self.app, self.host, self.port, self.start_timeout = app, host, port, start_timeout
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ServerThread:
        import uvicorn

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.host, self.port))
        self.port = int(self._sock.getsockname()[1])
        # log_config=None: leave logging to the caller; our middleware writes the access log.
        config = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name=f"uvicorn-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"uvicorn did not start on {self.url} within {self.start_timeout:.0f} s")
            time.sleep(0.01)
        log.info("serving on %s (thread)", self.url)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(timeout)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ServerProcess:
    """``mastery predict serve --artifact PATH`` in a child process on 127.0.0.1; its stderr (JSON log lines)
    goes to ``log_path``. Ready once ``GET /health`` answers 200."""

    def __init__(self, model: str | Path, log_path: str | Path, port: int | None = None, host: str = LOCALHOST,
                 start_timeout: float = 90.0, extra_args: tuple[str, ...] = ()) -> None:
        self.model, self.log_path, self.host = Path(model), Path(log_path), host
        self.port = port or free_port(host)
        self.start_timeout, self.extra_args = start_timeout, extra_args
        self._proc: subprocess.Popen | None = None
        self._log_file: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> ServerProcess:
        from mastery.core.services import wait_until_healthy

        cmd = [sys.executable, "-m", "mastery.cli", "predict", "serve", "--artifact", str(self.model),
               "--host", self.host, "--port", str(self.port), *self.extra_args]
        # One BLAS/OpenMP thread: a one-row logistic regression gains nothing from more, and idle spinning
        # threads would steal the cores the client and other jobs need.
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "OMP_WAIT_POLICY": "PASSIVE"}
        self._log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=subprocess.STDOUT, env=env)
        problem = wait_until_healthy(self.url + "/health", self._proc, time.monotonic() + self.start_timeout)
        if problem == "exited":
            self.stop()
            raise ServerError(f"the server exited with code {self._proc.returncode}: {self._tail()}")
        if problem is not None:
            self.stop()
            raise ServerError(f"no answer from {self.url}/health within {self.start_timeout:.0f} s")
        log.info("serving on %s (pid %d)", self.url, self._proc.pid)
        return self

    def _tail(self, n: int = 400) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:].strip().replace("\n", " | ")
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()  # uvicorn shuts down gracefully on SIGTERM
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
