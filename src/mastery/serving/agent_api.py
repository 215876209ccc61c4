"""The agent API: ``create_app(settings)`` serves the ReAct agent (L21) over HTTP.

``POST /runs`` starts a run (``Idempotency-Key`` makes a retried POST return the same run), ``GET /runs/{id}``
is its state (steps, answer, tokens, cost, which backend answered, retries, errors), ``GET /runs/{id}/events``
streams its steps as server-sent events (a reconnect with ``Last-Event-ID`` resumes), ``GET /health`` and
``GET /pricing``. Runs execute on a bounded worker pool (full: 429 with Retry-After) and live in SQLite, so
a finished run survives a restart and one cut short by a restart reads ``interrupted``.

The LLM is a fallback chain of retried backends; tools are retried when idempotent and bounded by their
own timeouts; each run has a deadline. Requests share the prediction API's middleware: a request id
(``X-Request-ID`` honoured), JSON access logs, body-size limits, and 4xx bodies that name the field.

Security (:mod:`mastery.serving.auth`): every route but ``/health`` needs an API key (``Authorization:
Bearer <token>``, 401 without one); a run belongs to the key's owner and any other owner gets the 404 a
missing run gets; Idempotency-Keys are scoped per owner and a conflicting reuse answers a 409 that names
nothing of the earlier request; a ``Host`` header other than the allowed names is refused (400). The tools a
request may name are the server's; the ``python`` tool exists only when the server is configured with
``allow_python`` (``mastery agent serve --allow-python``), never because a request asks for it.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint signatures at runtime.
import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from mastery.agents.resilience import PriceTable
from mastery.agents.types import Tool
from mastery.core.errors import ConfigError, require
from mastery.serving.agent_runs import (
    BackendSpec,
    IdempotencyConflict,
    QueueFull,
    RunManager,
    RunnerSettings,
    RunStore,
    body_hash,
    openai_chat,
)
from mastery.serving.agent_schemas import (
    FINAL_STATES,
    MAX_KEY_CHARS,
    MAX_STEPS,
    MAX_TIMEOUT_S,
    ErrorResponse,
    Health,
    Pricing,
    RunCreated,
    RunView,
    StepView,
    run_request_model,
)
from mastery.serving.auth import UNAUTHORIZED, KeyStore, TrustedHosts, owner_dependency, trusted_hosts
from mastery.serving.http import RequestContextMiddleware, error_response, install_error_handlers, request_id

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024  # a 2000-character question in JSON, with room to spare
PYTHON_TOOL = "python"
SAFE_TOOLS = ("calculator", "kb_search")  # the tools `mastery agent serve` offers without --allow-python
RETRY_AFTER_S = 2


@dataclass
class AgentAPISettings:
    db_path: str | Path
    runner: RunnerSettings
    default_max_steps: int = 6
    default_timeout_s: float = 120.0
    sse_poll_s: float = 0.05  # how often an open stream checks its run's change counter
    max_body_bytes: int = MAX_BODY_BYTES
    title_note: str = ""  # appended to the OpenAPI description
    keys: KeyStore | None = None  # the API keys; None: the key file from settings (MASTERY_API_KEYS_FILE)
    allowed_hosts: Sequence[str] = field(default_factory=trusted_hosts)  # Host names answered (DNS rebinding)
    allow_python: bool = False  # the server's decision to offer the python tool; a request can never enable it

    def validate(self) -> "AgentAPISettings":
        names = [t.name for t in self.runner.tools]
        if PYTHON_TOOL in names and not self.allow_python:
            raise ConfigError("the python tool runs code sent by clients: the server offers it only when "
                              "configured to (allow_python / 'mastery agent serve --allow-python')")
        if not 1 <= self.default_max_steps <= MAX_STEPS:
            raise ConfigError(f"default_max_steps must be in 1..{MAX_STEPS}")
        if not 1.0 <= self.default_timeout_s <= MAX_TIMEOUT_S:
            raise ConfigError(f"default_timeout_s must be in 1..{MAX_TIMEOUT_S:g}")
        self.runner.validate()
        return self


def default_settings(db_path: str | Path, primary_url: str, primary_model: str, *, fallback_url: str | None = None,
                     fallback_model: str | None = None, prices: PriceTable | None = None,
                     tools: Sequence[Tool] | None = None, llm_timeout_s: float = 60.0, workers: int = 2,
                     queue_limit: int = 16, agent_mode: str = "text", allow_python: bool = False,
                     keys: KeyStore | None = None, allowed_hosts: Sequence[str] | None = None) -> AgentAPISettings:
    """Settings for ``mastery agent serve``: the primary backend, an optional fallback, the default tools
    (calculator and kb_search; python too only with ``allow_python``)."""
    backends = [BackendSpec("primary", primary_url, primary_model, timeout_s=llm_timeout_s)]
    if fallback_url:
        backends.append(BackendSpec("fallback", fallback_url, fallback_model or primary_model, timeout_s=llm_timeout_s))
    if tools is None:
        from mastery.agents.tools import default_tools

        tools = default_tools([*SAFE_TOOLS, PYTHON_TOOL] if allow_python else list(SAFE_TOOLS))
    runner = RunnerSettings(backends=backends, tools=list(tools), prices=prices or PriceTable(), workers=workers,
                            queue_limit=queue_limit, agent_mode=agent_mode)
    return AgentAPISettings(db_path=db_path, runner=runner, keys=keys, allow_python=allow_python,
                            allowed_hosts=list(allowed_hosts) if allowed_hosts is not None else trusted_hosts())


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    what = {404: "no run of yours has this id", 409: "you used this Idempotency-Key for a different body",
            411: "no Content-Length header", 413: "body too large",
            400: "unreadable body or Content-Length, or a Host header this server does not answer to",
            422: "the body or a parameter breaks the schema; `error` and `detail` name the fields",
            429: "every worker is busy and the queue is full; retry after the Retry-After seconds"}
    out: dict[int | str, dict[str, Any]] = {c: {"model": ErrorResponse, "description": what[c]} for c in codes}
    return {**out, 401: {"model": ErrorResponse, **UNAUTHORIZED[401]}}


def create_app(settings: AgentAPISettings) -> Any:
    """A FastAPI app over a RunStore at ``settings.db_path``; close it with ``app.state.close()``."""
    require("fastapi", "serve")
    require("sse_starlette", "serve")
    from fastapi import Depends, FastAPI, Header, Request
    from fastapi import Path as PathParam
    from fastapi.responses import JSONResponse
    from sse_starlette.sse import EventSourceResponse

    settings.validate()
    if settings.runner.chat_factory is openai_chat:
        import openai  # noqa: F401 - imported now, so the first run does not pay for it (about a second)
    keys = settings.keys if settings.keys is not None else KeyStore.from_settings()
    if not keys.active_owners():
        log.warning("no active API key in %s: every request but /health will get 401 (create one with "
                    "'mastery keys create --owner NAME')", keys.path)
    Owner = Annotated[str, Depends(owner_dependency(keys))]
    store = RunStore(settings.db_path)
    manager = RunManager(store, settings.runner)
    tool_names = [t.name for t in settings.runner.tools]
    RunRequest = run_request_model(tool_names)
    backends = [b.name for b in settings.runner.backends]
    app = FastAPI(title="mastery agent API", version="1",
                  description="Start ReAct agent runs, stream their steps (SSE), read their results and cost. "
                              + settings.title_note)
    # added first, so it runs inside RequestContextMiddleware: a refused Host still gets an X-Request-ID
    app.add_middleware(TrustedHosts, allowed=settings.allowed_hosts)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_body_bytes)
    app.state.store, app.state.manager, app.state.keys = store, manager, keys

    def close() -> None:
        manager.shutdown(wait=True)
        store.close()

    app.state.close = close

    def view(run_id: str, owner: str) -> RunView | None:
        run = store.get(run_id, owner=owner)
        if run is None:
            return None
        return RunView(**{k: v for k, v in run.items() if k in RunView.model_fields and k != "steps"},
                       steps=[StepView(**s) for s in store.steps(run_id)])

    @app.post("/runs", response_model=RunCreated, status_code=202, summary="start an agent run",
              responses={200: {"model": RunCreated, "description": "the run an earlier request with this "
                                                                      "Idempotency-Key started"},
                         **_responses(400, 409, 411, 413, 422, 429)})
    async def start_run(body: RunRequest, request: Request, owner: Owner,  # type: ignore[valid-type]
                        idempotency_key: Annotated[str | None, Header(
                            min_length=1, max_length=MAX_KEY_CHARS,
                            description="retry-safe: the same key and body give the same run")] = None) -> Any:
        params = {"max_steps": body.max_steps or settings.default_max_steps,
                  "timeout_s": float(body.timeout_s or settings.default_timeout_s),
                  "tools": [t.value for t in body.tools] if body.tools else tool_names}
        params["tools"] = list(dict.fromkeys(params["tools"]))  # a tool named twice is still one tool
        digest = body_hash({"question": body.question, **params})
        try:
            run_id, created = store.create(body.question, params, request_id(request), idempotency_key, digest,
                                           owner=owner)
        except IdempotencyConflict as exc:
            return error_response(request, 409, str(exc))
        if created:
            try:
                manager.submit(run_id)
            except QueueFull as exc:
                store.delete(run_id)
                return error_response(request, 429, str(exc), {"Retry-After": str(RETRY_AFTER_S)})
        request.state.log_fields = {"run_id": run_id, "created": created, "owner": owner}
        run = store.get(run_id)
        assert run is not None
        out = RunCreated(id=run_id, status=run["status"], created=created, request_id=request_id(request),
                         links={"self": f"/runs/{run_id}", "events": f"/runs/{run_id}/events"})
        return JSONResponse(out.model_dump(), status_code=202 if created else 200,
                            headers={"Location": f"/runs/{run_id}"})

    RunId = Annotated[str, PathParam(max_length=64, description="the id POST /runs returned (32 hex digits)")]

    @app.get("/runs/{run_id}", response_model=RunView, responses=_responses(404, 422),
             summary="a run's state, steps, answer, tokens and cost")
    async def get_run(run_id: RunId, request: Request, owner: Owner) -> Any:
        found = view(run_id, owner)
        if found is None:  # another owner's run reads exactly like a missing one
            return error_response(request, 404, f"no run {run_id}")
        request.state.log_fields = {"run_id": run_id, "run_status": found.status, "owner": owner}
        return found

    @app.get("/runs/{run_id}/events", summary="the run's steps as server-sent events, then its result",
             responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                              "description": "`step` events (id = step seq, data = the step as JSON), then one "
                                             "`result` event (id `result`, data = the run). Send `Last-Event-ID` "
                                             "to resume after a step."},
                        **_responses(404, 422)})
    async def run_events(run_id: RunId, request: Request, owner: Owner,
                         last_event_id: Annotated[str | None, Header(max_length=64)] = None) -> Any:
        if store.get(run_id, owner=owner) is None:
            return error_response(request, 404, f"no run {run_id}")
        after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
        request.state.log_fields = {"run_id": run_id, "resume_after": after, "owner": owner}
        return EventSourceResponse(_events(run_id, owner, after, request), ping=15)

    async def _events(run_id: str, owner: str, after: int, request: Request) -> AsyncIterator[dict[str, Any]]:
        seen = -1
        while True:
            version = manager.version(run_id)
            if version != seen:
                seen = version
                run = store.get(run_id)  # read the status before the steps: a final run has all its steps stored
                for step in store.steps(run_id, after):
                    after = step["seq"]
                    yield {"event": "step", "id": str(after), "data": StepView(**step).model_dump_json()}
                if run is not None and run["status"] in FINAL_STATES:
                    final = view(run_id, owner)
                    yield {"event": "result", "id": "result", "data": final.model_dump_json() if final else "{}"}
                    return
            if await request.is_disconnected():
                return
            await asyncio.sleep(settings.sse_poll_s)

    @app.get("/health", response_model=Health, summary="liveness, workers and queue")
    async def health() -> Health:
        queued, running = manager.load()
        return Health(status="ok", workers=settings.runner.workers, queued=queued, running=running,
                      queue_limit=settings.runner.queue_limit, backends=backends, tools=tool_names)

    @app.get("/pricing", response_model=Pricing, summary="the price table runs are costed with",
             responses=_responses())
    async def pricing(owner: Owner) -> Pricing:
        return Pricing(**settings.runner.prices.to_dict(),
                       backends={b.name: b.model for b in settings.runner.backends})

    install_error_handlers(app, log)
    return app
