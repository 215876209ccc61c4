"""The compose stack as local processes: ``mastery stack up|status|logs|down``.

``deploy/compose.yaml`` runs two containers, the prediction API (``mastery predict serve``) and a Chroma
server. Where no container engine can build or pull images, this module runs the same two services from
the same commands as processes on this machine, bound to 127.0.0.1, under one supervisor::

    mastery stack up --model titanic-logreg --kb-collection docs   # returns once both answer their health check
    mastery stack status          # pids, URLs, health now
    mastery stack logs api        # logs/<service>.log
    mastery stack down            # SIGTERM, a grace period, then SIGKILL

The state folder (default ``runs/stack``) holds ``spec.json`` (what to run), ``state.json`` (pids, URLs,
start-up times, status), ``supervisor.pid``, ``logs/`` and Chroma's data (``chroma-data/``).

Why nothing outlives the stack:

- ``up`` starts the supervisor in a new session, so it and its services form one process group that no
  terminal signal reaches by accident, and waits for ``state.json`` to say ``ready`` (or why not).
- The supervisor starts each service with ``PR_SET_PDEATHSIG=SIGKILL`` (Linux): when the supervisor dies,
  even by SIGKILL, the kernel kills its services. Services start in dependency order (Chroma, then the API,
  as compose's ``depends_on: service_healthy``), each health-checked against a deadline.
- ``down`` sends SIGTERM to the supervisor, which stops each service in turn (the API, then Chroma): SIGTERM,
  ``grace`` seconds to exit, then SIGKILL; then it exits; a supervisor that does not exit in time, or is already gone,
  gets its whole recorded process group SIGKILLed by ``down`` itself.
- A service that exits on its own makes the supervisor stop the other one and exit with the reason in
  ``state.json``: a half stack never reports healthy.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mastery.core.errors import MasteryError

log = logging.getLogger(__name__)

DEFAULT_DIR = Path("runs/stack")
LOCALHOST = "127.0.0.1"
DEFAULT_API_PORT = 8000
DEFAULT_CHROMA_PORT = 8001
CHROMA_HEARTBEAT = "/api/v2/heartbeat"  # Chroma 1.x; /api/v1 answers 410 Gone since 1.5
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class StackError(MasteryError):
    """The stack could not start, is not running, or did not stop as asked."""


@dataclass(frozen=True)
class StackSpec:
    """What ``up`` runs: the API's model (a registry name or a skops file), the KB collection its
    ``/kb/query`` searches, and where everything listens."""

    model: str | None = None  # registry NAME[@VERSION], e.g. titanic-logreg
    artifact: str | None = None  # a .skops file with its sidecar
    kb_collection: str | None = None
    host: str = LOCALHOST
    api_port: int = DEFAULT_API_PORT
    chroma_port: int = DEFAULT_CHROMA_PORT
    chroma_path: str | None = None  # Chroma's data folder (default <dir>/chroma-data)
    start_timeout: float = 120.0  # seconds for each service to answer its health check
    stop_grace: float = 10.0  # seconds each service has between SIGTERM and SIGKILL

    def __post_init__(self) -> None:
        if (self.model is None) == (self.artifact is None):
            raise StackError("give exactly one of --model (a registry name) and --artifact (a .skops file)")
        for name, port in (("--api-port", self.api_port), ("--chroma-port", self.chroma_port)):
            if not 1 <= port <= 65535:
                raise StackError(f"{name} must be a port between 1 and 65535, got {port}")
        if not (self.start_timeout > 0 and self.stop_grace >= 0):
            raise StackError("the start timeout must be > 0 s and the stop grace period >= 0 s")
        if self.api_port == self.chroma_port:
            raise StackError(f"--api-port and --chroma-port are both {self.api_port}")


@dataclass(frozen=True)
class Service:
    name: str
    argv: tuple[str, ...]
    url: str  # http://host:port
    health_path: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def health_url(self) -> str:
        return self.url + self.health_path


def chroma_executable() -> str:
    """The chromadb package's ``chroma`` CLI beside this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "chroma"
    found = str(beside) if beside.exists() else shutil.which("chroma")
    if not found:
        raise StackError("the 'chroma' command is not installed (pip install the 'rag' extra, which has chromadb)")
    return found


def services(spec: StackSpec, state_dir: Path) -> list[Service]:
    """The two services in start order, with the commands compose runs (host and ports from ``spec``)."""
    chroma_url = f"http://{spec.host}:{spec.chroma_port}"
    chroma_path = Path(spec.chroma_path) if spec.chroma_path else state_dir / "chroma-data"
    chroma = Service("chroma", (chroma_executable(), "run", "--path", str(chroma_path.absolute()), "--host",
                                spec.host, "--port", str(spec.chroma_port)),
                     chroma_url, CHROMA_HEARTBEAT, {"NO_COLOR": "1"})
    which = ("--model", spec.model) if spec.model else ("--artifact", str(Path(str(spec.artifact)).absolute()))
    # The API finds Chroma through the same variables compose sets; one BLAS thread, as in the image.
    api_env = {"MASTERY_CHROMA_URL": chroma_url, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1"}
    if spec.kb_collection:
        api_env["MASTERY_KB_COLLECTION"] = spec.kb_collection
    api = Service("api", (sys.executable, "-m", "mastery.cli", "predict", "serve", *which, "--host", spec.host,
                          "--port", str(spec.api_port)),
                  f"http://{spec.host}:{spec.api_port}", "/health", api_env)
    return [chroma, api]


@dataclass(frozen=True)
class ServicePlan:
    """Any services, started in this order by the same supervisor (``mastery assistant up`` runs one)."""

    services: tuple[Service, ...]
    host: str = LOCALHOST
    start_timeout: float = 120.0
    stop_grace: float = 10.0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServicePlan:
        svcs = tuple(Service(**{**s, "argv": tuple(s["argv"])}) for s in data["services"])
        return cls(svcs, **{k: v for k, v in data.items() if k != "services"})


def planned(spec: StackSpec | ServicePlan, state_dir: Path) -> list[Service]:
    return list(spec.services) if isinstance(spec, ServicePlan) else services(spec, state_dir)


def _read_spec(state_dir: Path) -> StackSpec | ServicePlan:
    data = json.loads((state_dir / "spec.json").read_text())
    return ServicePlan.from_json(data) if "services" in data else StackSpec(**data)


# -- processes -----------------------------------------------------------------------------------
def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) from /proc, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[19])


def start_ticks(pid: int) -> int | None:
    stat = _proc_stat(pid)
    return stat[1] if stat else None


def alive(pid: int | None, ticks: int | None = None) -> bool:
    """Whether ``pid`` runs (zombies count as dead) and, given ``ticks``, is the process that started then
    (not a later one that reused the number)."""
    if not pid:
        return False
    stat = _proc_stat(pid)
    if stat is None:
        if Path("/proc/self/stat").exists():
            return False
        try:  # no /proc (not Linux): existence only
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    state, started = stat
    return state not in ("Z", "X") and (ticks is None or started == ticks)


def _die_with_parent(parent: int) -> Any:
    """A preexec_fn: SIGKILL this child when the supervisor dies (Linux), even by SIGKILL."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:  # no libc to ask (not Linux): down's process-group kill is the only net
        return None

    def hook() -> None:
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the supervisor died between fork and prctl
            os._exit(1)

    return hook


def port_free(host: str, port: int) -> bool:
    """Whether a server could bind host:port now (SO_REUSEADDR, as uvicorn and Chroma bind: a closed
    connection's TIME_WAIT does not count, a listening socket does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def listening(host: str, port: int, pgid: int | None = None) -> bool:
    """Whether something accepts TCP connections on host:port; with ``pgid``, only a listener owned by a
    process of that process group counts.

    Why the owner matters: once our services are gone, the kernel may hand their ports to any other
    process asking for an ephemeral port (a test server, a busy CI machine), and that is not a leftover
    of ours. Where /proc cannot say who owns the socket, any listener counts.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        if s.connect_ex((host, port)) != 0:
            return False
    if pgid is None:
        return True
    owners = _listener_pids(port)
    if owners is None:
        return True
    groups = set()
    for pid in owners:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            groups.add(os.getpgid(pid))
    return pgid in groups


def _listener_pids(port: int) -> set[int] | None:
    """Pids holding a listening TCP socket on ``port`` (from /proc/net/tcp*), or None when unreadable."""
    inodes = set()
    try:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(FileNotFoundError), open(table, encoding="ascii") as f:
                for line in f.readlines()[1:]:
                    fields = line.split()
                    # local_address is HEXIP:HEXPORT; state 0A is LISTEN; field 9 is the socket inode
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(f"socket:[{fields[9]}]")
        if not inodes:
            return None
        pids = set()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError):
                if any(os.readlink(f"/proc/{entry}/fd/{fd}") in inodes for fd in os.listdir(f"/proc/{entry}/fd")):
                    pids.add(int(entry))
        return pids
    except OSError:
        return None


# -- state files ---------------------------------------------------------------------------------
def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)  # readers never see half a file


def read_state(state_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((state_dir / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _supervisor_alive(state: dict[str, Any] | None) -> bool:
    return bool(state) and alive(state.get("supervisor_pid"), state.get("supervisor_ticks"))


# -- up ------------------------------------------------------------------------------------------
def up(spec: StackSpec | ServicePlan, state_dir: Path = DEFAULT_DIR, timeout: float | None = None) -> dict[str, Any]:
    """Start the supervisor and return its state once every service is healthy (StackError otherwise)."""
    state_dir = Path(state_dir)
    current = read_state(state_dir)
    if _supervisor_alive(current):
        raise StackError(f"a stack is already running from {state_dir} (supervisor pid "
                         f"{current['supervisor_pid']}); stop it with 'mastery stack down'")
    for svc in planned(spec, state_dir):  # fails here, in the caller, on a missing chroma CLI
        if not port_free(spec.host, svc.port):
            raise StackError(f"port {svc.port} on {spec.host} is in use ({svc.name}); pick another with "
                             f"--{svc.name}-port")
    (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    (state_dir / "state.json").unlink(missing_ok=True)
    _write_json(state_dir / "spec.json", asdict(spec))
    with open(state_dir / "logs" / "supervisor.log", "ab") as out:
        # A new session: the supervisor leads its own process group, out of reach of the caller's terminal.
        proc = subprocess.Popen([sys.executable, "-m", "mastery.ops.stack", str(state_dir.absolute())],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    timeout = timeout if timeout is not None else 2 * spec.start_timeout + 30
    deadline = time.monotonic() + timeout
    while True:
        state = read_state(state_dir)
        if state and state.get("status") == "ready":
            return state
        if state and state.get("status") in ("failed", "stopped"):
            raise StackError(f"the stack did not start: {state.get('reason', 'unknown')}; see "
                             f"'mastery stack logs --dir {state_dir}'")
        if proc.poll() is not None:
            raise StackError(f"the supervisor exited with code {proc.returncode} before the stack was ready; see "
                             f"{state_dir / 'logs' / 'supervisor.log'}")
        if time.monotonic() > deadline:
            down(state_dir)
            raise StackError(f"the stack was not ready within {timeout:.0f} s; stopped it")
        time.sleep(0.05)  # the supervisor writes state.json within milliseconds of each change


# -- status, logs, down --------------------------------------------------------------------------
def status(state_dir: Path = DEFAULT_DIR) -> dict[str, Any]:
    """The recorded state with, for each service, whether its process runs and its health check answers now."""
    import httpx

    state = read_state(Path(state_dir))
    if state is None:
        return {"status": "absent", "running": False, "services": {}}
    state["running"] = _supervisor_alive(state)
    with httpx.Client(trust_env=False, timeout=2.0) as client:
        for svc in state.get("services", {}).values():
            svc["alive"] = alive(svc.get("pid"), svc.get("ticks"))
            try:
                svc["healthy"] = svc["alive"] and client.get(svc["health_url"]).status_code == 200
            except httpx.HTTPError:
                svc["healthy"] = False
    if not state["running"] and state.get("status") not in ("stopped", "failed"):
        state["status"] = "dead"  # the supervisor was killed without writing its last word
    return state


def log_tail(state_dir: Path = DEFAULT_DIR, service: str | None = None, lines: int = 40) -> dict[str, str]:
    """The last ``lines`` lines of each log (``service``: api, chroma or supervisor; default all)."""
    folder = Path(state_dir) / "logs"
    names = [service] if service else ["supervisor", "chroma", "api"]
    out = {}
    for name in names:
        path = folder / f"{name}.log"
        if not path.is_file():
            if service:
                raise StackError(f"no log for {service!r} in {folder} (has the stack been started there?)")
            continue
        out[name] = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return out


def down(state_dir: Path = DEFAULT_DIR) -> dict[str, Any]:
    """Stop the stack: SIGTERM to the supervisor (which stops its services, each with the grace period given
    to ``up``), SIGKILL to the whole process group when it overstays; then check that no recorded process
    runs and no recorded port listens."""
    state_dir = Path(state_dir)
    state = read_state(state_dir)
    if state is None:
        return {"stopped": [], "was_running": False, "left": []}
    was_running = _supervisor_alive(state)
    pid, pgid = state.get("supervisor_pid"), state.get("pgid")
    if was_running:
        os.kill(pid, signal.SIGTERM)
        # The supervisor stops the services one after the other, each with its grace period, then writes state.json.
        wait_dead([(pid, state.get("supervisor_ticks"))], 2 * float(state.get("stop_grace", 10.0)) + 5.0)
    recorded = [(s.get("pid"), s.get("ticks")) for s in state.get("services", {}).values()]
    if pgid and (alive(pid, state.get("supervisor_ticks")) or any(alive(*p) for p in recorded)):
        log.warning("the supervisor did not stop its services in time: SIGKILL to process group %s", pgid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        wait_dead([(pid, state.get("supervisor_ticks")), *recorded], 5.0)
    left = [p for p, t in recorded if alive(p, t)]
    host = state.get("host", LOCALHOST)
    ports = [s["port"] for s in state.get("services", {}).values() if listening(host, s["port"], pgid)]
    final = read_state(state_dir) or state
    if final.get("status") not in ("stopped", "failed"):
        final["status"] = "stopped"
        _write_json(state_dir / "state.json", final)
    (state_dir / "supervisor.pid").unlink(missing_ok=True)
    if left or ports:
        raise StackError(f"after down, processes {left} still run and ports {ports} still listen")
    return {"stopped": sorted(state.get("services", {})), "was_running": was_running, "left": []}


def wait_dead(procs: list[tuple[int | None, int | None]], timeout: float) -> bool:
    """Wait until none of the (pid, start ticks) runs; False when some still do after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while any(alive(p, t) for p, t in procs):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# -- the supervisor ------------------------------------------------------------------------------
class _Stop(BaseException):
    """Raised by the signal handler so that every ``finally`` on the way runs (services stopped)."""


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop(signal.Signals(signum).name)


def supervise(state_dir: Path) -> int:
    """The supervisor's body (``python -m mastery.ops.stack DIR``): start, watch, stop. Returns the exit code."""
    from mastery.core.services import wait_until_healthy

    state_dir = Path(state_dir)
    spec = _read_spec(state_dir)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _raise_stop)
    me = os.getpid()
    state: dict[str, Any] = {"status": "starting", "supervisor_pid": me, "supervisor_ticks": start_ticks(me),
                             "pgid": os.getpgid(0), "host": spec.host, "stop_grace": spec.stop_grace,
                             "started_at": time.time(), "services": {}}
    (state_dir / "supervisor.pid").write_text(f"{me}\n")
    _write_json(state_dir / "state.json", state)
    procs: dict[str, subprocess.Popen] = {}
    logs: list[Any] = []
    code = 0
    try:
        t0 = time.monotonic()
        for svc in planned(spec, state_dir):
            start = time.monotonic()
            out = open(state_dir / "logs" / f"{svc.name}.log", "wb")  # noqa: SIM115 - closed in finally
            logs.append(out)
            proc = subprocess.Popen(svc.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, **svc.env}, preexec_fn=_die_with_parent(me))
            procs[svc.name] = proc
            state["services"][svc.name] = {"pid": proc.pid, "ticks": start_ticks(proc.pid), "port": svc.port,
                                           "url": svc.url, "health_url": svc.health_url, "command": list(svc.argv),
                                           "log": str(state_dir / "logs" / f"{svc.name}.log")}
            _write_json(state_dir / "state.json", state)
            problem = wait_until_healthy(svc.health_url, proc, time.monotonic() + spec.start_timeout, poll_s=0.1)
            if problem is not None:
                why = f"exited with code {proc.returncode}" if problem == "exited" else \
                    f"no healthy answer within {spec.start_timeout:.0f} s ({problem})"
                raise StackError(f"{svc.name} {why}")
            state["services"][svc.name]["start_seconds"] = round(time.monotonic() - start, 3)
            log.info("%s healthy after %.2f s (pid %d)", svc.name, time.monotonic() - start, proc.pid)
        state.update(status="ready", start_seconds=round(time.monotonic() - t0, 3))
        _write_json(state_dir / "state.json", state)
        while True:  # sleep until a service exits (or a signal raises _Stop)
            os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
            gone = [name for name, p in procs.items() if p.poll() is not None]
            if gone:
                raise StackError(f"{gone[0]} exited on its own with code {procs[gone[0]].returncode}")
    except _Stop as stop:
        log.info("stopping on %s", stop)
        state.update(status="stopped", reason=f"stopped by {stop}")
    except StackError as exc:
        log.error("%s", exc)
        state.update(status="failed", reason=str(exc))
        code = 1
    finally:
        # Signals now would interrupt the clean-up itself: the stack is going down anyway.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        _stop_services(procs, grace=spec.stop_grace)
        for name, proc in procs.items():
            state["services"][name]["exit_code"] = proc.returncode
        for out in logs:
            out.close()
        if state["status"] not in ("stopped", "failed"):
            state["status"] = "stopped"
        _write_json(state_dir / "state.json", state)
        (state_dir / "supervisor.pid").unlink(missing_ok=True)
    return code


def _stop_services(procs: dict[str, subprocess.Popen], grace: float) -> None:
    """Stop the services in reverse start order (the API before the Chroma it calls, as compose does): SIGTERM,
    up to ``grace`` seconds to exit, then SIGKILL."""
    for name, proc in reversed(procs.items()):
        if proc.poll() is not None:
            continue
        log.info("SIGTERM to %s (pid %d)", name, proc.pid)
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s of SIGTERM: SIGKILL", name, grace)
            proc.kill()
            proc.wait()
        log.info("%s exited with code %s", name, proc.returncode)


def _main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health poll otherwise
    return supervise(Path(argv[0]))


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
