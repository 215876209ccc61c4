"""``mastery assistant``: the whole stack up with the fake LLM, a real question over HTTP, then down with no
process left; the plan, the fake LLM's replies and the CLI's refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mastery.apps.assistant.supervisor import AssistantStack, assistant_plan, fake_responder
from mastery.core.errors import ConfigError
from mastery.llm.settings import QUALITY_MODEL
from mastery.ops.stack import alive, listening, read_state
from mastery.serving.agent_client import api_client
from mastery.serving.auth import KeyStore
from mastery.serving.server import free_port


def _mastery(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "mastery.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_up_with_the_fake_llm_answers_a_question_and_down_leaves_nothing(tmp_path):
    token = KeyStore(tmp_path / "keys.json").create("alice")[1]
    env = {"MASTERY_API_KEYS_FILE": str(tmp_path / "keys.json"), "MASTERY_KB_DIR": str(tmp_path / "kb")}
    state_dir = tmp_path / "stack"
    api_port, llm_port = free_port(), free_port()
    up = _mastery("assistant", "up", "--llm", "fake", "--no-ui", "--dir", str(state_dir), "--port", str(api_port),
                  "--llm-port", str(llm_port), "--data-dir", str(tmp_path / "data"), "--timeout", "120", env=env)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "assistant ready" in up.stdout
        state = read_state(state_dir)
        assert list(state["services"]) == ["llm", "api"] and state["status"] == "ready"
        status = _mastery("assistant", "status", "--dir", str(state_dir), "--json", env=env)
        assert status.returncode == 0 and all(s["healthy"] for s in json.loads(status.stdout)["services"].values())

        with api_client(f"http://127.0.0.1:{api_port}", token, timeout=120.0) as client:
            health = client.get("/health").json()
            assert health["llm"] == {"url": f"http://127.0.0.1:{llm_port}/v1", "reachable": True}
            sid = client.post("/sessions", json={}).json()["id"]
            kinds, answer = [], None
            with client.stream("POST", f"/sessions/{sid}/ask", json={"question": "Hello, who are you?",
                                                                     "route": "direct"}) as stream:
                assert stream.status_code == 200
                name = None
                for line in stream.iter_lines():
                    if line.startswith("event:"):
                        name = line.split(":", 1)[1].strip()
                        kinds.append(name)
                    elif line.startswith("data:") and name == "answer":
                        answer = json.loads(line.split(":", 1)[1])
            assert kinds[0] == "turn" and kinds[-1] == "done" and "token" in kinds
            assert answer is not None and "scripted assistant model" in answer["text"], kinds
            history = client.get(f"/sessions/{sid}").json()["history"]
            assert history[0]["status"] == "done" and history[0]["route"]["route"] == "direct"
            assert any(call["model"] == "scripted" for call in history[0]["usage"])
    finally:
        down = _mastery("assistant", "down", "--dir", str(state_dir), env=env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "no process left" in down.stdout
    final = read_state(state_dir)
    assert final["status"] == "stopped"
    assert [name for name, s in final["services"].items() if alive(s["pid"], s["ticks"])] == []
    assert not alive(final["supervisor_pid"], final["supervisor_ticks"])
    assert not listening("127.0.0.1", api_port, final["pgid"]) and not listening("127.0.0.1", llm_port, final["pgid"])
    # every service stopped on SIGTERM within the grace period (none needed SIGKILL)
    assert {name: s["exit_code"] for name, s in final["services"].items()} == {"llm": 0, "api": 0}
    again = _mastery("assistant", "status", "--dir", str(state_dir), env=env)
    assert again.returncode == 1 and "stopped" in again.stdout


def test_the_plan_runs_the_llm_the_api_and_the_ui_when_there_is_one(tmp_path, monkeypatch):
    from mastery.apps.assistant import supervisor

    ui = tmp_path / "ui.py"
    ui.write_text("import streamlit\n")
    monkeypatch.setattr(supervisor, "ui_script", lambda: ui)
    monkeypatch.delenv("MASTERY_LLM_MODEL", raising=False)
    monkeypatch.delenv("MASTERY_LLM_BACKEND", raising=False)
    plan = assistant_plan(AssistantStack(llm="embedded", api_port=9100, llm_port=9101, ui_port=9102,
                                         collection="docs", keys_file="k.json"), tmp_path)
    names = [s.name for s in plan.services]
    assert names == ["llm", "api", "ui"]
    llm, api, web = plan.services
    assert llm.argv[-8:-4] == ("llm", "serve", "--port", "9101") and llm.health_url == "http://127.0.0.1:9101/health"
    # no --model and no MASTERY_LLM_MODEL: the 1.5B that L30 chose, for the LLM server and the API alike
    assert llm.argv[-2:] == ("--model", QUALITY_MODEL)
    assert api.argv[api.argv.index("--model") + 1] == QUALITY_MODEL
    monkeypatch.setenv("MASTERY_LLM_MODEL", "my-model")
    chosen = assistant_plan(AssistantStack(llm="embedded", api_port=9100, llm_port=9101, ui=False), tmp_path)
    assert "--model" not in chosen.services[0].argv  # the server reads MASTERY_LLM_MODEL itself
    assert "--llm-url" in api.argv and api.argv[api.argv.index("--llm-url") + 1] == "http://127.0.0.1:9101/v1"
    assert api.argv[api.argv.index("--collection") + 1] == "docs" and api.health_path == "/health"
    assert web.argv[1:4] == ("-m", "streamlit", "run") and str(ui) in web.argv
    for flag, value in (("--server.address", "127.0.0.1"), ("--server.headless", "true"),
                        ("--server.port", "9102"), ("--api-url", "http://127.0.0.1:9100")):
        assert web.argv[web.argv.index(flag) + 1] == value
    assert web.health_url == "http://127.0.0.1:9102/_stcore/health"

    external = assistant_plan(AssistantStack(llm_url="http://127.0.0.1:9999/v1", ui=False), tmp_path)
    assert [s.name for s in external.services] == ["api"]
    with pytest.raises(ConfigError, match="ports must differ"):
        AssistantStack(api_port=9000, llm_port=9000)
    with pytest.raises(ConfigError, match="--llm must be one of"):
        AssistantStack(llm="gpt")


def test_the_fake_llm_answers_the_router_the_draft_and_the_critic():
    from mastery.llm.rag import build_prompt
    from mastery.retrieval.types import Hit

    route = json.loads(fake_responder([{"role": "user", "content": "Where?"}],
                                      "You route a user's question to where its answer is."))
    assert route["route"] == "kb"
    hits = [Hit(id="a", text="Kiwis grow in New Zealand. They are green.", score=1.0, rank=1,
                metadata={"source": "kiwis.md", "page": 0}),
            Hit(id="b", text="Apples grow in Kent.", score=0.5, rank=2, metadata={"source": "apples.md", "page": 0})]
    messages = build_prompt("Where do kiwis grow?", hits[::-1])  # as the brain lists them: the best-ranked last
    assert fake_responder(messages[1:], messages[0]["content"]) == "Kiwis grow in New Zealand [2]."
    empty = build_prompt("Where do kiwis grow?", [])
    assert fake_responder(empty[1:], empty[0]["content"]) == "I don't know."
    assert json.loads(fake_responder([{"role": "user", "content": "x"}], "You check an answer ..."))["ok"] is True


def test_serve_refuses_to_start_without_a_key_and_the_parser_knows_every_verb(tmp_path):
    from mastery.cli import build_parser

    result = _mastery("assistant", "serve", "--llm", "fake", "--keys-file", str(tmp_path / "none.json"))
    assert result.returncode == 2 and "no API key" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    parser = build_parser()
    args = parser.parse_args(["assistant", "up", "--llm", "fake", "--no-ui", "--port", "9001"])
    assert args.llm == "fake" and args.no_ui and args.port == 9001 and args.dir == "runs/assistant"
    for verb in ("serve", "status", "down", "logs", "fake-llm", "ui"):
        assert parser.parse_args(["assistant", verb]).func.__name__.startswith("cmd_")


def test_compose_runs_the_same_three_services():
    from pathlib import Path

    import yaml

    from mastery.core.settings import Settings

    compose = yaml.safe_load((Path(__file__).parents[1] / "deploy" / "compose.yaml").read_text())
    llm, api, ui = (compose["services"][name] for name in ("llm", "assistant-api", "assistant-ui"))
    assert api["command"][:2] == ["assistant", "serve"] and ui["command"][:2] == ["assistant", "ui"]
    assert api["command"][api["command"].index("--llm-url") + 1] == "http://llm:8080/v1"
    assert ui["command"][ui["command"].index("--api-url") + 1] == "http://assistant-api:8000"
    assert api["depends_on"]["llm"]["condition"] == "service_healthy"
    assert ui["depends_on"]["assistant-api"]["condition"] == "service_healthy"
    assert "/health" in " ".join(llm["healthcheck"]["test"])
    assert "/_stcore/health" in " ".join(ui["healthcheck"]["test"])
    assert set(api["environment"]) <= {"MASTERY_" + f.upper() for f in Settings.model_fields}
    for service in (llm, api, ui):
        assert all(p.startswith("127.0.0.1:") for p in service["ports"]), "publish on this machine only"
    assert api["volumes"][0].split(":")[0] in compose["volumes"]  # the history outlives the container


def test_up_refuses_before_starting_anything_without_a_key(tmp_path):
    result = _mastery("assistant", "up", "--llm", "fake", "--no-ui", "--dir", str(tmp_path / "stack"),
                      "--keys-file", str(tmp_path / "none.json"))
    assert result.returncode == 2 and "no API key" in result.stderr
    assert not (tmp_path / "stack").exists()  # no supervisor, no state
