"""``mastery assistant serve|up|status|logs|down``: the Research Assistant as a service.

:func:`register` only builds parsers; FastAPI, LangGraph, Chroma and the LLM load when a command runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from mastery.apps.assistant.supervisor import (
    DEFAULT_API_PORT,
    DEFAULT_DIR,
    DEFAULT_LLM_PORT,
    DEFAULT_UI_PORT,
    FAKE_MODEL,
    LLM_CHOICES,
)
from mastery.core.errors import MasteryError

log = logging.getLogger(__name__)


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _model_of(url: str, given: str | None) -> str:
    """The model to ask for: ``--model``, else MASTERY_LLM_MODEL, else the first one the server lists."""
    import httpx

    from mastery.core.settings import get_settings

    if given or get_settings().llm_model:
        return str(given or get_settings().llm_model)
    try:
        listed = httpx.get(url.rstrip("/") + "/models", timeout=5.0, trust_env=False).json()["data"]
        return str(listed[0]["id"])
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
        raise MasteryError(f"cannot list the models of {url}: pass --model NAME") from None


def cmd_serve(args: argparse.Namespace) -> int:
    import contextlib

    import uvicorn

    from mastery.apps.assistant.api import DEFAULT_COLLECTION, create_app, default_settings
    from mastery.serving.auth import KeyStore, trusted_hosts
    from mastery.serving.cli import _sigterm_unwinds, _Terminated
    from mastery.serving.logs import use_json_logs

    use_json_logs(logging.getLogger().level or logging.INFO)
    keys = KeyStore(args.keys_file) if args.keys_file else KeyStore.from_settings()
    if not keys.active_owners():  # refuse rather than serve an API nobody can use
        raise MasteryError(f"no API key in {keys.path}: create one with 'mastery keys create --owner NAME"
                           + (f" --keys-file {args.keys_file}'" if args.keys_file else "'"))
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding to %s: API keys travel in clear text (no TLS); put a TLS proxy in front", args.host)
    with contextlib.ExitStack() as stack, _sigterm_unwinds():
        llm_url, model = _llm(args, stack)
        settings = default_settings(llm_url, model, collection=args.collection or DEFAULT_COLLECTION,
                                    kb_location=args.kb, assistant_dir=args.dir, keys=keys,
                                    allowed_hosts=trusted_hosts(args.host, args.allowed_host),
                                    web_backend=args.web, max_running=args.workers)
        app = create_app(settings)
        stack.callback(app.state.close)
        log.info("assistant API on http://%s:%d: LLM %s (%s), collection %r, history in %s; keys %s (owners: %s)",
                 args.host, args.port, llm_url, model, settings.collection, settings.db_path, keys.path,
                 ", ".join(keys.active_owners()))
        try:
            uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False,
                        timeout_graceful_shutdown=5)
        except _Terminated:
            log.info("stopped by SIGTERM")
    # Everything is closed above (history, memory, workers, LLM). Measured: once an upload has loaded the
    # embedder, interpreter shutdown can hang in a C-level finalizer ("Garbage-collecting", no Python frame)
    # until the supervisor's SIGKILL; so leave without running finalizers.
    logging.shutdown()
    sys.stdout.flush()
    os._exit(0)


def _llm(args: argparse.Namespace, stack: Any) -> tuple[str, str]:
    """(base URL, model) of the LLM: --llm-url, the fake in this process, or the embedded server (a running
    `mastery llm serve`, else one started for as long as this command runs)."""
    if args.llm_url:
        return args.llm_url.rstrip("/"), _model_of(args.llm_url, args.model)
    if args.llm == "fake":
        from mastery.apps.assistant.supervisor import fake_llm_app
        from mastery.serving.server import ServerThread

        server = stack.enter_context(ServerThread(fake_llm_app()))
        return server.url + "/v1", FAKE_MODEL
    from mastery.llm.client import embedded_alias, server_healthy
    from mastery.llm.settings import assistant_model, load_settings

    settings = load_settings(model=args.model or assistant_model())
    if server_healthy(settings.url):
        return settings.url, embedded_alias(settings)
    from mastery.llm.server import EmbeddedServer

    log.info("no LLM server at %s: starting llama.cpp for as long as the API runs", settings.url)
    server = stack.enter_context(EmbeddedServer(settings.model_name, threads=settings.threads, ctx=settings.ctx,
                                                alias=embedded_alias(settings)))
    return server.url, embedded_alias(settings)


def cmd_fake_llm(args: argparse.Namespace) -> int:
    import uvicorn

    from mastery.apps.assistant.supervisor import fake_llm_app
    from mastery.serving.cli import _sigterm_unwinds, _Terminated

    try:
        with _sigterm_unwinds():
            uvicorn.run(fake_llm_app(), host=args.host, port=args.port, log_config=None, access_log=False)
    except _Terminated:
        pass
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from mastery.apps.assistant.supervisor import ui_argv, ui_script

    if not ui_script().is_file():
        raise MasteryError(f"the assistant UI is not installed ({ui_script()} is missing)")
    argv = ui_argv(args.host, args.port, args.api_url)
    sys.stdout.flush()
    os.execv(argv[0], list(argv))  # streamlit takes this process over: signals reach it directly


def cmd_up(args: argparse.Namespace) -> int:
    from mastery.apps.assistant.supervisor import AssistantStack, assistant_plan
    from mastery.ops.stack import up
    from mastery.serving.auth import KeyStore

    keys = KeyStore(args.keys_file) if args.keys_file else KeyStore.from_settings()
    if not keys.active_owners():  # the API would refuse to start: say so before starting anything
        raise MasteryError(f"no API key in {keys.path}: create one with 'mastery keys create --owner NAME"
                           + (f" --keys-file {args.keys_file}'" if args.keys_file else "'"))
    spec = AssistantStack(llm=args.llm, llm_url=args.llm_url, model=args.model, host=args.host,
                          api_port=args.port, llm_port=args.llm_port, ui_port=args.ui_port,
                          collection=args.collection, keys_file=args.keys_file, assistant_dir=args.data_dir,
                          ui=not args.no_ui, start_timeout=args.timeout, stop_grace=args.grace)
    state_dir = Path(args.dir)
    state = up(assistant_plan(spec, state_dir), state_dir)
    for name, svc in state["services"].items():
        _out(f"{name:<5} {svc['url']:<28} pid {svc['pid']:<8} healthy after {svc['start_seconds']:.2f} s")
    ui = state["services"].get("ui")
    _out(f"assistant ready in {state['start_seconds']:.2f} s" + (f"; open {ui['url']}" if ui else "")
         + f"; logs: mastery assistant logs --dir {args.dir}; stop: mastery assistant down --dir {args.dir}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from mastery.ops.stack_cli import cmd_status as stack_status

    return stack_status(args)


def cmd_down(args: argparse.Namespace) -> int:
    from mastery.ops.stack_cli import cmd_down as stack_down

    return stack_down(args)


def cmd_logs(args: argparse.Namespace) -> int:
    from mastery.ops.stack import log_tail, read_state

    names = [args.service] if args.service else ["supervisor", *((read_state(Path(args.dir)) or {})
                                                                 .get("services", {}))]
    for name in names:
        text = log_tail(Path(args.dir), name, args.lines)[name]
        if len(names) > 1:
            _out(f"==> {name} <==")
        _out(text)
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    import json

    from mastery.apps.assistant.monitoring import TraceStore, default_traces_path, summarize
    from mastery.apps.assistant.report_page import text_report

    path = default_traces_path(args.dir)
    if not path.is_file():
        raise MasteryError(f"no traces at {path}: the API writes them as it answers ('mastery assistant serve')")
    store = TraceStore(path)
    try:
        summary = summarize(store.answers(), store.calls())
    finally:
        store.close()
    _out(json.dumps(summary, indent=2) if args.json else text_report(summary).rstrip())
    return 0


def register(subparsers: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    assistant = subparsers.add_parser("assistant", help="the Research Assistant: serve its API, or bring up the "
                                                       "LLM, API and UI together")
    sub = assistant.add_subparsers(dest="action", required=True, parser_class=parser_class)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
        p.add_argument("--port", type=int, default=DEFAULT_API_PORT, help="the API's port (default %(default)s)")
        p.add_argument("--llm", choices=LLM_CHOICES, default="embedded",
                       help="embedded (default): llama.cpp with the registry model; fake: scripted replies, no "
                            "model (tests, CI)")
        p.add_argument("--llm-url", default=None, help="an OpenAI-compatible server already running (…/v1): "
                                                       "use it instead of --llm")
        p.add_argument("--model", default=None, help="the model to ask for (default: MASTERY_LLM_MODEL, else the "
                                                     "1.5B shelf model for the embedded server, else the server's)")
        p.add_argument("--collection", default=None, help="the knowledge-base collection answers come from and "
                                                          "uploads go to (default docs)")
        p.add_argument("--keys-file", default=None, help="API key file (default MASTERY_API_KEYS_FILE, else "
                                                         "<cache>/api-keys.json); see 'mastery keys create'")

    p = sub.add_parser("serve", help="serve the assistant API (SSE answers, sessions, uploads) until Ctrl+C")
    common(p)
    p.add_argument("--dir", default=None, help="history, uploads and memory (default MASTERY_ASSISTANT_DIR, else "
                                               "<cache>/assistant)")
    p.add_argument("--kb", default=None, help="knowledge base: a folder or a Chroma server URL (default: as "
                                              "'mastery kb')")
    p.add_argument("--web", choices=("none", "searxng", "duckduckgo"), default=None,
                   help="web search backend (default MASTERY_ASSISTANT_WEB, else none)")
    p.add_argument("--workers", type=int, default=2, choices=range(1, 17), metavar="N",
                   help="answers at once (default 2); more get 429")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="another Host name to answer to (repeatable; default: 127.0.0.1, localhost, ::1 and --host)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("up", help="start the LLM server, the API and the UI, health-checked; returns when ready")
    common(p)
    p.add_argument("--llm-port", type=int, default=DEFAULT_LLM_PORT, help="the LLM server's port (default "
                                                                          "%(default)s)")
    p.add_argument("--ui-port", type=int, default=DEFAULT_UI_PORT, help="the UI's port (default %(default)s)")
    p.add_argument("--no-ui", action="store_true", help="start the LLM server and the API only")
    p.add_argument("--data-dir", default=None, help="the API's --dir (history, uploads, memory)")
    p.add_argument("--dir", default=str(DEFAULT_DIR), help="state, pid files and logs (default %(default)s)")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds each service has to become healthy")
    p.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL when stopping")
    p.set_defaults(func=cmd_up)

    for name, func, text in (("status", cmd_status, "each service's pid, URL and health now (exit 1 unless all "
                                                     "are healthy)"),
                             ("down", cmd_down, "stop every service started by 'up'; no process is left behind")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--dir", default=str(DEFAULT_DIR), help="the folder 'up' used (default %(default)s)")
        if name == "status":
            p.add_argument("--json", action="store_true", help="the full state as JSON")
        p.set_defaults(func=func)

    p = sub.add_parser("ui", help="run the Streamlit UI in the foreground, talking to the API at --api-url")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_UI_PORT, help="port (default %(default)s)")
    p.add_argument("--api-url", default=f"http://127.0.0.1:{DEFAULT_API_PORT}",
                   help="the assistant API (default %(default)s)")
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("monitor", help="p50/p95 latency, first token, tokens and cost per answer, per route and "
                                       "model, from the API's traces (also GET /monitoring)")
    p.add_argument("--dir", default=None, help="the API's --dir (default MASTERY_ASSISTANT_DIR, else "
                                               "<cache>/assistant)")
    p.add_argument("--json", action="store_true", help="the summary as JSON")
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser("logs", help="the last lines of each service's log")
    p.add_argument("service", nargs="?", default=None, help="supervisor, llm, api or ui (default: all)")
    p.add_argument("--lines", type=int, default=40)
    p.add_argument("--dir", default=str(DEFAULT_DIR), help="the folder 'up' used (default %(default)s)")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("fake-llm", help="a scripted OpenAI-compatible LLM server (no model): what 'up --llm fake' "
                                        "runs")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_LLM_PORT)
    p.set_defaults(func=cmd_fake_llm)
