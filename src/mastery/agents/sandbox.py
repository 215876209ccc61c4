"""Run untrusted Python (the agent's ``python`` tool) in a separate, limited process.

    result = run_python("print(sum(range(10)))", timeout_s=5, memory_mb=256)
    result.stdout            # "45\\n"

Layers, each cheap and each covering another's gaps:

- a separate ``python -I`` process (isolated mode: no PYTHON* variables, no user site) in a fresh temporary
  folder, with a stripped environment (no API keys, no proxies), in its own process group;
- resource limits set in the child before the code runs: RLIMIT_AS (memory), RLIMIT_CPU, RLIMIT_FSIZE
  (largest file it may write), RLIMIT_NPROC (no new processes; not enforced for root, hence the hook);
- an audit hook (PEP 578) in the child that refuses sockets, subprocesses, exec/fork/system, ctypes, and
  writes outside the temporary folder;
- where ``unshare -rn`` works, a private network namespace with no interfaces at all;
- like Python's interactive prompt, a final bare expression is printed;
- a wall-clock timeout in the parent that kills the whole process group; output is captured and truncated.

The audit hook is a guard rail against a confused model, not a security boundary against a determined attacker
(CPython code can reach the interpreter's internals); the namespace and the limits are what bound the damage.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import IO

from mastery.agents.types import ToolError

log = logging.getLogger(__name__)

# Runs in the child (python -I -c) before the user's code; argv: memory bytes, cpu seconds, max file bytes.
_BOOTSTRAP = r'''
import os, resource, sys
mem, cpu, fsize = (int(a) for a in sys.argv[1:4])
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
sys.dont_write_bytecode = True
_root = os.path.realpath(os.getcwd()) + os.sep
_code = open("main.py", encoding="utf-8").read()
_BLOCKED = {"socket.__new__": "network access", "socket.connect": "network access", "socket.bind": "network access",
            "socket.getaddrinfo": "network access", "socket.sendto": "network access",
            "subprocess.Popen": "starting processes", "os.system": "starting processes",
            "os.exec": "starting processes",
            "os.posix_spawn": "starting processes", "os.spawn": "starting processes", "os.fork": "starting processes",
            "os.forkpty": "starting processes", "os.kill": "signalling processes", "ctypes.dlsym": "ctypes",
            "ctypes.cdata": "ctypes"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PATH_EVENTS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link", "os.symlink",
                "os.truncate", "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.move"}

def _inside(path):
    try:
        p = os.fsdecode(path) if not isinstance(path, int) else None
    except Exception:
        return False
    return p is not None and (os.path.realpath(p) + os.sep).startswith(_root)

def _hook(event, args):
    if event in _BLOCKED:
        raise PermissionError(f"sandbox: {_BLOCKED[event]} is not allowed ({event})")
    if event == "open" and args and not isinstance(args[0], int):
        mode, flags = args[1], args[2] if len(args) > 2 else 0
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & _WRITE_FLAGS)
        if writing and not _inside(args[0]):
            raise PermissionError(f"sandbox: writing outside the working folder is not allowed ({args[0]})")
    elif event in _PATH_EVENTS and args and not all(_inside(a) for a in args[:2] if isinstance(a, (str, bytes))):
        raise PermissionError(f"sandbox: changing files outside the working folder is not allowed ({event})")

import ast
_tree = ast.parse(_code, "main.py")
# Like the interactive prompt, a final bare expression is printed: models often end with `total` not `print(total)`.
_last = _tree.body.pop() if _tree.body and isinstance(_tree.body[-1], ast.Expr) else None
_globals = {"__name__": "__main__", "__builtins__": __builtins__}
sys.addaudithook(_hook)
del resource
exec(compile(_tree, "main.py", "exec"), _globals)
if _last is not None:
    _value = eval(compile(ast.fix_missing_locations(ast.Expression(_last.value)), "main.py", "eval"), _globals)
    if _value is not None:
        print(repr(_value))
'''

_NETNS: dict[str, bool] = {}


def network_namespace_available() -> bool:
    """True when ``unshare -rn`` can give a child its own empty network namespace (checked once)."""
    if "ok" not in _NETNS:
        ok = False
        if shutil.which("unshare"):
            try:
                ok = subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=5).returncode == 0
            except (OSError, subprocess.SubprocessError):
                ok = False
        _NETNS["ok"] = ok
        log.info("sandbox: private network namespace %s", "available" if ok else "unavailable (audit hook only)")
    return _NETNS["ok"]


@dataclass(frozen=True)
class SandboxResult:
    stdout: str
    stderr: str
    returncode: int
    wall_s: float
    truncated: bool  # stdout or stderr was longer than the limit
    network_namespace: bool  # ran in a private network namespace


class _Capped:
    """Drains a pipe in a thread, keeping the first ``limit`` bytes (a print loop must not fill our memory)."""

    def __init__(self, pipe: IO[bytes], limit: int) -> None:
        self.data = bytearray()
        self.truncated = False
        self._pipe, self._limit = pipe, limit
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while chunk := self._pipe.read(65536):
            room = self._limit - len(self.data)
            if room > 0:
                self.data.extend(chunk[:room])
            if len(chunk) > room:
                self.truncated = True

    def text(self) -> str:
        out = self.data.decode("utf-8", errors="replace")
        return out + "\n...[output truncated]" if self.truncated else out


def _env(workdir: str) -> dict[str, str]:
    # Only what Python needs: no credentials, proxies or MASTERY_* settings leak into the child.
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8", "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_python(code: str, *, timeout_s: float = 10.0, memory_mb: int = 256, max_output_chars: int = 4000,
               max_file_mb: int = 8, network_namespace: bool | None = None, check: bool = True) -> SandboxResult:
    """Run ``code`` in a sandboxed child process and return its output.

    With ``check`` (the default), a run that did not end normally raises :class:`ToolError` naming the cause:
    the time limit, the memory limit, a blocked operation, or the exception that ended it."""
    if not isinstance(code, str) or not code.strip():
        raise ToolError("no code given; send e.g. {\"code\": \"print(2 + 2)\"}")
    if timeout_s <= 0 or memory_mb < 32:
        raise ToolError(f"bad sandbox limits: timeout_s={timeout_s}, memory_mb={memory_mb} (need > 0 s and >= 32 MB)")
    use_ns = network_namespace_available() if network_namespace is None else network_namespace
    cpu_s = max(1, int(timeout_s + 0.999))
    with tempfile.TemporaryDirectory(prefix="mastery-sandbox-") as workdir:
        with open(os.path.join(workdir, "main.py"), "w", encoding="utf-8") as fh:
            fh.write(code)
        argv = [sys.executable, "-I", "-c", _BOOTSTRAP, str(memory_mb * 2**20), str(cpu_s), str(max_file_mb * 2**20)]
        if use_ns:
            argv = ["unshare", "-rn", *argv]
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=workdir, env=_env(workdir), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        out, err = _Capped(proc.stdout, max_output_chars), _Capped(proc.stderr, max_output_chars)  # type: ignore[arg-type]
        timed_out = False
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
        finally:
            if proc.poll() is None:
                _kill_group(proc)
            out.thread.join(5)
            err.thread.join(5)
        result = SandboxResult(stdout=out.text(), stderr=err.text(), returncode=proc.returncode,
                               wall_s=time.perf_counter() - start, truncated=out.truncated or err.truncated,
                               network_namespace=use_ns)
    log.info("event=sandbox_run returncode=%d wall_s=%.3f timed_out=%s netns=%s", result.returncode, result.wall_s,
             timed_out, use_ns)
    if check:
        _raise_for(result, timed_out, timeout_s, memory_mb, max_file_mb)
    return result


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the child's session: anything it managed to start dies with it
    proc.wait()


def _last_error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip() and not line.startswith("...[output")]
    return lines[-1].strip()[:300] if lines else ""


def _raise_for(result: SandboxResult, timed_out: bool, timeout_s: float, memory_mb: int, max_file_mb: int) -> None:
    last = _last_error_line(result.stderr)
    if timed_out or result.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        raise ToolError(f"python: time limit of {timeout_s:g}s exceeded; make the code faster or the input smaller")
    if result.returncode == -signal.SIGXFSZ or "File too large" in last:  # Python ignores SIGXFSZ: errno 27
        raise ToolError(f"python: file size limit exceeded (files are limited to {max_file_mb} MB)")
    if "MemoryError" in last or (result.returncode != 0 and "Cannot allocate memory" in result.stderr):
        raise ToolError(f"python: memory limit of {memory_mb} MB exceeded")
    if "sandbox:" in last:
        raise ToolError(f"python: blocked operation: {last.split('sandbox:', 1)[1].strip().rstrip('>')}")
    if result.returncode != 0:
        raise ToolError(f"python: the code failed (exit code {result.returncode}): {last or 'no error message'}")
