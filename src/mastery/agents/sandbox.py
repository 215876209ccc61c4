"""Run untrusted Python (the agent's ``python`` tool) in a sandbox whose boundary is the operating system.

    result = run_python("print(sum(range(10)))", timeout_s=5, memory_mb=256)
    result.stdout            # "45\\n"

The code runs under bubblewrap (:mod:`mastery.agents.sandbox_bwrap` builds the command line):

- as an unprivileged user (uid 65534 when the caller is root, else the caller's own uid), with no capabilities,
  no supplementary groups and ``no_new_privs``, in new user, mount, PID, IPC, UTS and network namespaces;
- seeing a read-only minimum: ``/usr``, the loader cache, the interpreter and the environment's site-packages
  (numpy and the other installed libraries import). Not the project, ``/root``, the home folder, ``/etc/shadow``
  or any other file of the host; ``/proc`` shows only the sandbox's own processes;
- writing only to a private, size-limited tmpfs (``/tmp``, with the working folder ``/tmp/work``) that vanishes
  with the run; the network namespace has no interface but a down loopback, so nothing is reachable, not even
  127.0.0.1 on the host;
- under limits that bind because the uid is not root: RLIMIT_AS (memory), RLIMIT_CPU, RLIMIT_FSIZE,
  RLIMIT_NPROC (by default no new process or thread), RLIMIT_NOFILE; core dumps off;
- until a wall-clock deadline, at which the namespace's init is killed and the kernel kills every process left
  in the namespace (``setsid`` and double forks included) before this function returns.

An audit hook (PEP 578) inside is a second line, there to give a confused model a clear message: it refuses
sockets, processes, ctypes and writes outside the working folder (``dir_fd`` paths resolved). CPython code can
get around such a hook, which is why the operating system is the boundary.

Where bubblewrap is missing or the host cannot create the namespaces (checked once per bwrap path), the tool
refuses to run code and says why; it never falls back to a weaker mode.

What this does not protect against: kernel vulnerabilities reachable from an unprivileged process (the sandbox
makes the kernel's system-call interface its boundary; there is no seccomp filter), CPU side channels, use of
resources within the limits (a run may use its CPU time, memory, 32 MB of tmpfs and its output budget), and
reading what is deliberately visible (``/usr``, the interpreter and the installed packages).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import IO

from mastery.agents import sandbox_bwrap
from mastery.agents.types import ToolError

log = logging.getLogger(__name__)

# Runs in the child (python -I -c) before the user's code.
# argv: memory bytes, cpu seconds, max file bytes, extra tasks, max open files, audit hook (0/1), site dirs...
_BOOTSTRAP = r'''
import os, resource, sys
mem, cpu, fsize, extra, nofile, audit = (int(a) for a in sys.argv[1:7])
sys.path.extend(sys.argv[7:])
# Fail closed: never run the code with root's uid or any capability, whatever the launcher did.
_status = open("/proc/self/status").read()
if os.getuid() == 0 or os.geteuid() == 0 or "CapEff:\t0000000000000000" not in _status:
    sys.exit("sandbox: refusing to run with root or capabilities")
# RLIMIT_NPROC counts this uid's tasks in the sandbox's user namespace: those already there plus `extra`.
_uid, _tasks = os.getuid(), 0
for _p in os.listdir("/proc"):
    if _p.isdigit():
        try:
            _tasks += os.stat("/proc/" + _p).st_uid == _uid
        except OSError:
            pass
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
resource.setrlimit(resource.RLIMIT_NPROC, (_tasks + extra, _tasks + extra))
resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
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
# Positions of the dir_fd arguments in each event (-1: none), so relative paths resolve against the right folder.
_DIR_FDS = {"os.remove": (1,), "os.rmdir": (1,), "os.mkdir": (2,), "os.chmod": (2,), "os.symlink": (2,),
            "os.chown": (3,), "os.utime": (3,), "os.rename": (2, 3), "os.link": (2, 3)}
_PATH_EVENTS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link", "os.symlink",
                "os.truncate", "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.move"}

def _resolve(path, dir_fd):
    p = os.fsdecode(path)
    if dir_fd is not None and dir_fd != -1 and not os.path.isabs(p):
        p = os.path.join(os.readlink("/proc/self/fd/%d" % dir_fd), p)
    return p

def _inside(path, dir_fd=None):
    try:
        return (os.path.realpath(_resolve(path, dir_fd)) + os.sep).startswith(_root)
    except Exception:
        return False

def _hook(event, args):
    if event in _BLOCKED:
        raise PermissionError(f"sandbox: {_BLOCKED[event]} is not allowed ({event})")
    if event == "open" and args and not isinstance(args[0], int):
        mode, flags = args[1], args[2] if len(args) > 2 else 0
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & _WRITE_FLAGS)
        if writing and not _inside(args[0]):
            raise PermissionError(f"sandbox: writing outside the working folder is not allowed ({args[0]})")
    elif event in _PATH_EVENTS and args:
        fds = [args[i] if i < len(args) else None for i in _DIR_FDS.get(event, ())]
        paths = [a for a in args[:2] if isinstance(a, (str, bytes))]
        if event in ("os.symlink", "shutil.copyfile"):
            paths = paths[1:]  # a link's target is only text, a copy's source is only read: where it lands matters
        for i, p in enumerate(paths):
            if not _inside(p, fds[i] if i < len(fds) else (fds[0] if fds else None)):
                raise PermissionError(f"sandbox: changing files outside the working folder is not allowed ({event})")

if audit:
    import _posixsubprocess, posix
    _os_open = os.open
    def _open(path, flags, mode=0o777, *, dir_fd=None):
        # The "open" audit event carries no dir_fd: check it here
        if flags & _WRITE_FLAGS and dir_fd is not None and not _inside(path, dir_fd):
            raise PermissionError(f"sandbox: writing outside the working folder is not allowed ({path})")
        return _os_open(path, flags, mode, dir_fd=dir_fd)
    def _no_fork_exec(*args, **kwargs):  # raises no audit event of its own
        raise PermissionError("sandbox: starting processes is not allowed (_posixsubprocess.fork_exec)")
    os.open = posix.open = _open
    _posixsubprocess.fork_exec = _no_fork_exec
    del _posixsubprocess, posix

import ast
_tree = ast.parse(_code, "main.py")
# Like the interactive prompt, a final bare expression is printed: models often end with `total` not `print(total)`.
_last = _tree.body.pop() if _tree.body and isinstance(_tree.body[-1], ast.Expr) else None
_globals = {"__name__": "__main__", "__builtins__": __builtins__}
if audit:
    sys.addaudithook(_hook)
del resource, _status
exec(compile(_tree, "main.py", "exec"), _globals)
if _last is not None:
    _value = eval(compile(ast.fix_missing_locations(ast.Expression(_last.value)), "main.py", "eval"), _globals)
    if _value is not None:
        print(repr(_value))
'''

_PROBES: dict[str, str] = {}  # bwrap path -> "" when the sandbox works, else why not


def sandbox_unavailable_reason(bwrap: str | None = None) -> str:
    """Why the OS sandbox cannot run here ("" when it can): checked once per bwrap path by a real trial run."""
    path = bwrap or sandbox_bwrap.default_bwrap()
    if path not in _PROBES:
        reason = ""
        if not os.path.isfile(path) or not os.access(path, os.X_OK):
            reason = f"bubblewrap is not installed ({path} not found)"
        else:
            try:
                result = _run("print(6 * 7)", path, timeout_s=20, memory_mb=256, max_output_chars=4000,
                              max_file_mb=1, max_disk_mb=1, max_processes=0, audit_hook=True)
                if result.stdout.strip() != "42":
                    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
                    reason = (lines[-1] if lines else f"exit code {result.returncode}").strip()[:200]
            except OSError as exc:
                reason = f"{type(exc).__name__}: {exc}"[:200]
        _PROBES[path] = reason
        log.info("sandbox: %s (%s)", "unavailable: " + reason if reason else "bubblewrap works", path)
    return _PROBES[path]


def sandbox_available(bwrap: str | None = None) -> bool:
    """True when code can run in the OS sandbox (bubblewrap and the namespaces work); checked once."""
    return not sandbox_unavailable_reason(bwrap)


def network_namespace_available() -> bool:
    """Kept for callers of the earlier sandbox: every run now has a private network namespace, when it runs."""
    return sandbox_available()


@dataclass(frozen=True)
class SandboxResult:
    stdout: str
    stderr: str
    returncode: int  # negative: killed by that signal
    wall_s: float
    truncated: bool  # stdout or stderr was longer than the limit
    network_namespace: bool = True  # always: kept for callers of the earlier sandbox
    timed_out: bool = False


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


def _env() -> dict[str, str]:
    # Only what Python needs: no credentials, proxies or MASTERY_* settings leak into the child.
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": sandbox_bwrap.WORKDIR, "TMPDIR": sandbox_bwrap.WORKDIR,
            "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8",
            "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_python(code: str, *, timeout_s: float = 10.0, memory_mb: int = 256, max_output_chars: int = 4000,
               max_file_mb: int = 8, max_disk_mb: int = 32, max_processes: int = 0, check: bool = True,
               bwrap: str | None = None, audit_hook: bool = True) -> SandboxResult:
    """Run ``code`` in the OS sandbox and return its output.

    ``max_processes`` is how many processes or threads the code may start besides itself; ``max_disk_mb`` is the
    size of its private tmpfs. ``bwrap`` overrides the bubblewrap binary and ``audit_hook=False`` leaves the
    in-process hook out (both for tests of the boundary itself).
    With ``check`` (the default), a run that did not end normally raises :class:`ToolError` naming the cause:
    the time limit, the memory limit, a blocked operation, or the exception that ended it."""
    if not isinstance(code, str) or not code.strip():
        raise ToolError("no code given; send e.g. {\"code\": \"print(2 + 2)\"}")
    if timeout_s <= 0 or memory_mb < 32 or max_processes < 0 or max_disk_mb < 1:
        raise ToolError(f"bad sandbox limits: timeout_s={timeout_s}, memory_mb={memory_mb}, "
                        f"max_processes={max_processes}, max_disk_mb={max_disk_mb} "
                        "(need > 0 s, >= 32 MB, >= 0 processes, >= 1 MB disk)")
    path = bwrap or sandbox_bwrap.default_bwrap()
    reason = sandbox_unavailable_reason(path)
    if reason:
        raise ToolError(f"python: refusing to run code without the OS sandbox: {reason}; "
                        f"{sandbox_bwrap.INSTALL_HINT}")
    try:
        result = _run(code, path, timeout_s=timeout_s, memory_mb=memory_mb, max_output_chars=max_output_chars,
                      max_file_mb=max_file_mb, max_disk_mb=max_disk_mb, max_processes=max_processes,
                      audit_hook=audit_hook)
    except OSError as exc:
        raise ToolError(f"python: could not start the sandbox: {exc}") from exc
    log.info("event=sandbox_run returncode=%d wall_s=%.3f timed_out=%s", result.returncode, result.wall_s,
             result.timed_out)
    if check:
        _raise_for(result, timeout_s, memory_mb, max_file_mb)
    return result


def _run(code: str, bwrap: str, *, timeout_s: float, memory_mb: int, max_output_chars: int, max_file_mb: int,
         max_disk_mb: int, max_processes: int, audit_hook: bool) -> SandboxResult:
    cpu_s = max(1, int(timeout_s + 0.999))
    code_fd = os.memfd_create("main.py")  # bwrap copies it into the sandbox: no host file to clean up
    try:
        os.write(code_fd, code.encode("utf-8"))
        os.lseek(code_fd, 0, os.SEEK_SET)
        args = ["-c", _BOOTSTRAP, str(memory_mb * 2**20), str(cpu_s), str(max_file_mb * 2**20), str(max_processes),
                "64", str(int(audit_hook)), *sandbox_bwrap.site_packages()]
        launch = sandbox_bwrap.build(bwrap, args, code_fd, disk_bytes=max_disk_mb * 2**20)
        try:
            start = time.perf_counter()
            proc = subprocess.Popen(launch.argv, env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, pass_fds=launch.pass_fds, start_new_session=True)
            launch.started()
            out = _Capped(proc.stdout, max_output_chars)  # type: ignore[arg-type]
            err = _Capped(proc.stderr, max_output_chars)  # type: ignore[arg-type]
            timed_out = False
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                if proc.poll() is None:
                    _kill_tree(proc, launch)
                out.thread.join(5)
                err.thread.join(5)
        finally:
            launch.close()
    finally:
        os.close(code_fd)
    rc = proc.returncode
    if 128 < rc < 128 + 65:  # bwrap reports a child killed by signal N as 128 + N
        rc = 128 - rc
    return SandboxResult(stdout=out.text(), stderr=err.text(), returncode=rc, wall_s=time.perf_counter() - start,
                         truncated=out.truncated or err.truncated, timed_out=timed_out)


def _kill_tree(proc: subprocess.Popen[bytes], launch: sandbox_bwrap.Launch) -> None:
    """Kill the namespace's init: the kernel then kills every process in the namespace, and bwrap, which waits
    for that init, exits only once they are all gone. bwrap itself is killed only if that did not happen."""
    child = launch.read_child_pid()
    if child is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # --die-with-parent takes the namespace down with it
        proc.wait()


def _last_error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip() and not line.startswith("...[output")]
    return lines[-1].strip()[:300] if lines else ""


def _raise_for(result: SandboxResult, timeout_s: float, memory_mb: int, max_file_mb: int) -> None:
    last = _last_error_line(result.stderr)
    if result.timed_out or result.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        raise ToolError(f"python: time limit of {timeout_s:g}s exceeded; make the code faster or the input smaller")
    if result.returncode == -signal.SIGXFSZ or "File too large" in last:  # Python ignores SIGXFSZ: errno 27
        raise ToolError(f"python: file size limit exceeded (files are limited to {max_file_mb} MB)")
    if "MemoryError" in last or (result.returncode != 0 and "Cannot allocate memory" in result.stderr):
        raise ToolError(f"python: memory limit of {memory_mb} MB exceeded")
    if "sandbox:" in last:
        raise ToolError(f"python: blocked operation: {last.split('sandbox:', 1)[1].strip().rstrip('>')}")
    if result.returncode != 0:
        raise ToolError(f"python: the code failed (exit code {result.returncode}): {last or 'no error message'}")
