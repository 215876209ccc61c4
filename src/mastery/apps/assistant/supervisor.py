"""``mastery assistant up``: the LLM server, the API and the UI as one supervised stack of local processes.

The supervision is :mod:`mastery.ops.stack`'s (one supervisor process in its own session, services started in
order and health-checked, logs to files, SIGTERM then SIGKILL, every service killed with the supervisor);
this module only says which services the assistant needs::

    plan = assistant_plan(AssistantStack(llm="fake"), state_dir)   # llm, api (and ui when ui.py exists)
    stack.up(plan, state_dir); stack.status(state_dir); stack.down(state_dir)

``llm="fake"`` serves :func:`fake_responder` through the scripted OpenAI-compatible server
(:mod:`mastery.llm.scripted`), so tests and CI run the whole stack without a model. It answers the brain's
three kinds of prompt as a careful model would: the router's JSON, the draft (the first sentence of
passage [1], cited; "I don't know." without passages) and the critic's JSON verdict.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mastery.core.errors import ConfigError

DEFAULT_DIR = Path("runs/assistant")
DEFAULT_API_PORT = 8020
DEFAULT_LLM_PORT = 8765  # where `mastery llm serve` listens by default (mastery.llm.settings.EMBEDDED_PORT)
DEFAULT_UI_PORT = 8501  # Streamlit's own default
UI_HEALTH = "/_stcore/health"  # Streamlit's health endpoint
FAKE_MODEL = "scripted"
LLM_CHOICES = ("embedded", "fake")


def ui_script() -> Path:
    return Path(__file__).with_name("ui.py")


def ui_argv(host: str, port: int, api_url: str) -> tuple[str, ...]:
    """Streamlit serving the UI headless on ``host:port``; the script gets ``--api-url URL`` in its argv."""
    return (sys.executable, "-m", "streamlit", "run", str(ui_script()), "--server.address", host,
            "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--", "--api-url", api_url)


@dataclass(frozen=True)
class AssistantStack:
    """What ``up`` runs: the LLM (``embedded``: ``mastery llm serve``; ``fake``: the scripted server; or an
    existing server at ``llm_url``), the API, and the UI when it is installed."""

    llm: str = "embedded"
    llm_url: str | None = None  # an OpenAI-compatible server already running: no LLM service is started
    model: str | None = None
    host: str = "127.0.0.1"
    api_port: int = DEFAULT_API_PORT
    llm_port: int = DEFAULT_LLM_PORT
    ui_port: int = DEFAULT_UI_PORT
    collection: str | None = None
    keys_file: str | None = None
    assistant_dir: str | None = None
    ui: bool = True
    start_timeout: float = 180.0
    stop_grace: float = 10.0

    def __post_init__(self) -> None:
        if self.llm not in LLM_CHOICES:
            raise ConfigError(f"--llm must be one of {', '.join(LLM_CHOICES)}, got {self.llm!r}")
        ports = {"--api-port": self.api_port, "--llm-port": self.llm_port, "--ui-port": self.ui_port}
        for name, port in ports.items():
            if not 1 <= port <= 65535:
                raise ConfigError(f"{name} must be a port between 1 and 65535, got {port}")
        if len(set(ports.values())) < len(ports):
            raise ConfigError(f"the ports must differ: {ports}")


def assistant_plan(spec: AssistantStack, state_dir: Path) -> Any:
    """The :class:`mastery.ops.stack.ServicePlan` for ``spec``: llm (unless ``llm_url``), api, ui (if present)."""
    from mastery.ops.stack import Service, ServicePlan

    cli = (sys.executable, "-m", "mastery.cli")
    one_thread = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = []
    llm_url = spec.llm_url
    model = spec.model
    if llm_url is None:
        root = f"http://{spec.host}:{spec.llm_port}"
        if spec.llm == "fake":
            argv = (*cli, "assistant", "fake-llm", "--host", spec.host, "--port", str(spec.llm_port))
            model = FAKE_MODEL
        else:
            from mastery.llm.settings import assistant_model

            model = model or assistant_model()
            argv = (*cli, "llm", "serve", "--port", str(spec.llm_port), "--log",
                    str((state_dir / "logs" / "llama.log").absolute()), *(("--model", model) if model else ()))
        out.append(Service("llm", argv, root, "/health"))
        llm_url = root + "/v1"
    api = [*cli, "assistant", "serve", "--host", spec.host, "--port", str(spec.api_port), "--llm-url", llm_url]
    for flag, value in (("--model", model), ("--collection", spec.collection), ("--keys-file", spec.keys_file),
                        ("--dir", spec.assistant_dir)):
        if value:
            api += [flag, str(value)]
    api_url = f"http://{spec.host}:{spec.api_port}"
    out.append(Service("api", tuple(api), api_url, "/health", one_thread))
    if spec.ui and ui_script().is_file():
        out.append(Service("ui", ui_argv(spec.host, spec.ui_port, api_url), f"http://{spec.host}:{spec.ui_port}",
                           UI_HEALTH))
    return ServicePlan(tuple(out), host=spec.host, start_timeout=spec.start_timeout, stop_grace=spec.stop_grace)


# -- the fake LLM ------------------------------------------------------------------------------------
# Every "[n] (source) text" block; the prompt lists the best-ranked passage last (see llm.rag.build_prompt).
_PASSAGE = re.compile(r"\[(\d+)\] \([^)]*\) (.+?)(?=\n\n\[\d+\] |\n\nQuestion:|$)", re.DOTALL)
_SENTENCE = re.compile(r"(.+?[.!?])(?:\s|$)", re.DOTALL)


def fake_responder(messages: list[dict[str, Any]], system: str) -> str:
    """Replies for the brain's prompts without a model (see the module docstring)."""
    system = system or ""
    if "route a user's question" in system:
        return '{"route": "kb", "reason": "scripted: look in the documents"}'
    if "You check an answer" in system:
        return '{"ok": true, "problem": ""}'
    last = next((str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"), "")
    if "Context:" not in last:
        return "Hello! This is the scripted assistant model."
    context = last.split("Context:", 1)[1]
    found = _PASSAGE.findall(context)
    if not found:
        return "I don't know."
    number, passage = found[-1]  # the best-ranked passage, as a good model would cite it
    passage = " ".join(passage.split())
    sentence = _SENTENCE.match(passage)
    text = (sentence.group(1) if sentence else passage).rstrip(".!? ")
    return f"{text} [{number}]."


def fake_llm_app() -> Any:
    """The scripted OpenAI-compatible server answering with :func:`fake_responder`."""
    from mastery.llm.scripted import ScriptedLLM, create_scripted_app

    return create_scripted_app(ScriptedLLM(fake_responder, model=FAKE_MODEL))
