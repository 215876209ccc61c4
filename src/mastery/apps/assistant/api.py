"""The Research Assistant's HTTP API: ``create_app(settings)`` serves any :class:`~.events.Brain`.

Routes (every one but ``/health`` needs ``Authorization: Bearer <key>``, see :mod:`mastery.serving.auth`):

- ``POST /sessions`` starts a session; ``GET /sessions`` lists the caller's; ``GET /sessions/{id}`` is one
  with its history (questions, answers, citations, passages, route, steps). Another owner's session answers
  the 404 a missing one does.
- ``POST /sessions/{id}/ask`` answers a question as server-sent events, as the brain emits them;
  ``POST /sessions/{id}/answer`` waits and returns the finished answer as JSON (the same record the history
  keeps).
- ``POST /documents`` uploads a PDF, Markdown, text or HTML file into the knowledge base (multipart field
  ``file``, or the raw bytes with ``?filename=``); ``GET /documents`` lists what the knowledge base holds;
  ``GET /documents/{source}/pages/{page}`` is one page's text (what a citation opens) and
  ``GET /documents/{source}/file`` the file itself.
- ``GET /health``: LLM reachability, knowledge-base size, which guards run, answers in progress.

The stream, one SSE message per brain event (``event:`` its kind, ``id:`` its number in the answer, ``data:``
its data as JSON), framed by the API's own ``turn`` (first: session, turn and request ids) and ``done`` (last:
the turn's final status)::

    turn, route, step..., passages, thought, token..., answer, usage, done      (error instead of answer)

The brain runs in a worker thread and its answer is stored when it finishes, whether or not the client is
still listening: closing the browser loses nothing from the history. At most ``max_running`` answers run at
once (the local LLM answers one at a time anyway); more get 429 with Retry-After.

Guards (:mod:`mastery.apps.assistant.guards`): the question passes the input guard before the brain starts
(a refusal answers 400 with the guard's reason) and the final answer the output guard before it is streamed
or stored, unless ``guards_in_brain`` says the brain does both itself (the ResearchBrain does, so that its
memory keeps the screened text; :func:`default_settings` wires it so, with the guard layer of
:func:`mastery.security.guardrails.build_guards`, which also drops retrieved passages that carry instructions).
The LLM calls inside the brain are screened by the same ``Guards`` wrapped around its ChatModel. A guard that
raises anything refuses.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint signatures at runtime.
import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from mastery.apps.assistant.events import Brain, Event, Question, event
from mastery.apps.assistant.guards import Guards
from mastery.apps.assistant.report_page import install_monitoring
from mastery.apps.assistant.schemas import (
    AskRequest,
    DocumentList,
    DocumentView,
    ErrorResponse,
    Health,
    KBHealth,
    LLMHealth,
    PageView,
    SessionCreate,
    SessionDetail,
    SessionList,
    SessionView,
    TurnView,
    UploadResult,
)
from mastery.apps.assistant.sessions import SessionStore, TurnRecord
from mastery.apps.assistant.uploads import Upload, UploadError, UploadTooLarge, clean_incoming, limit_text
from mastery.core.errors import require
from mastery.serving.auth import UNAUTHORIZED, KeyStore, TrustedHosts, owner_dependency, trusted_hosts
from mastery.serving.http import RequestContextMiddleware, error_response, install_error_handlers, request_id

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024  # a 2000-character question in JSON, with room to spare
MULTIPART_SLACK = 64 * 1024  # a multipart body is the file plus its boundaries and part headers
RETRY_AFTER_S = 5
LLM_PROBE_TTL_S = 5.0  # /health asks the LLM server at most this often
UPLOAD_PATH = "/documents"
DEFAULT_COLLECTION = "docs"  # the collection 'mastery kb ingest --collection docs' fills


@dataclass
class AssistantAPISettings:
    """What the API serves: the brain, the knowledge base it reads (uploads go there too), and where the
    history and uploaded files live."""

    brain: Brain
    kb: Any  # a mastery.retrieval.kb.KnowledgeBase: the one the brain's retriever reads
    collection: str
    db_path: str | Path
    uploads_dir: str | Path
    keys: KeyStore | None = None  # None: the key file from settings (MASTERY_API_KEYS_FILE)
    allowed_hosts: Sequence[str] = field(default_factory=trusted_hosts)
    guards: Guards = field(default_factory=Guards)
    guards_in_brain: bool = False  # the brain applies ``guards`` to the question and answer itself: don't repeat
    llm_url: str | None = None  # shown and probed by /health (None: not checked)
    llm_probe: Callable[[str], bool] | None = None  # default: mastery.llm.client.server_healthy
    max_upload_bytes: int | None = None  # None: MASTERY_KB_MAX_FILE_MB
    max_running: int = 2
    max_body_bytes: int = MAX_BODY_BYTES


class CollectionRetriever:
    """The knowledge base's retriever for ``collection``, opened on the first search after the collection exists:
    the service starts before the first upload, and an upload must be searchable without a restart."""

    def __init__(self, kb: Any, collection: str, opener: Callable[[Any, str], Any]) -> None:
        self.kb, self.collection, self._open = kb, collection, opener
        self._inner: Any = None
        self._lock = threading.Lock()
        self.name = "pending"

    def search(self, query: str, k: int = 10) -> list[Any]:
        with self._lock:
            if self._inner is None:
                if self.collection not in self.kb.collections():
                    return []
                self._inner = self._open(self.kb, self.collection)
                self.name = self._inner.name
        return self._inner.search(query, k)


def default_settings(llm_url: str, model: str, *, collection: str = DEFAULT_COLLECTION,
                     kb_location: str | None = None, assistant_dir: str | Path | None = None,
                     keys: KeyStore | None = None, allowed_hosts: Sequence[str] | None = None,
                     guards: Guards | None = None, web_backend: str | None = None,
                     llm_timeout_s: float | None = None, max_running: int = 2) -> AssistantAPISettings:
    """Settings for ``mastery assistant serve``: the ResearchBrain over the LLM at ``llm_url``, the knowledge
    base (``kb_location``, default as ``mastery kb``), web search as configured, and the history, uploads
    and checkpoints under ``assistant_dir`` (default ``MASTERY_ASSISTANT_DIR``, else ``<cache>/assistant``)."""
    from mastery.apps.assistant.graph import ResearchBrain, open_kb_retriever
    from mastery.apps.assistant.websearch import open_web_search
    from mastery.core.settings import get_settings
    from mastery.llm.client import LLMClient
    from mastery.llm.settings import load_settings
    from mastery.retrieval.kb import KnowledgeBase

    folder = Path(assistant_dir) if assistant_dir else (get_settings().assistant_dir
                                                         or get_settings().cache / "assistant")
    if guards is None:  # the guard layer (L38), on unless MASTERY_ASSISTANT_GUARDS=false
        from mastery.security.guardrails import build_guards

        guards = build_guards()
    llm = LLMClient(load_settings(backend="openai", base_url=llm_url, model=model, timeout_s=llm_timeout_s))
    kb = KnowledgeBase.open(kb_location)
    # The brain screens the question and the final answer (so its memory keeps the screened text), and every
    # LLM call it makes goes through the same guards around the ChatModel.
    brain = ResearchBrain(guards.wrap_chat(llm), CollectionRetriever(kb, collection, open_kb_retriever),
                          web=open_web_search(web_backend), memory=folder / "memory.sqlite",
                          input_guard=guards.check_input, output_guard=guards.check_output,
                          passage_guard=guards.check_passage)
    return AssistantAPISettings(brain=brain, kb=kb, collection=collection, db_path=folder / "sessions.db",
                                uploads_dir=folder / "uploads", keys=keys, guards=guards, guards_in_brain=True,
                                llm_url=llm_url,
                                allowed_hosts=list(allowed_hosts) if allowed_hosts is not None else trusted_hosts(),
                                max_running=max_running)


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    what = {400: "an unreadable body, a bad upload name, or a question the input guard refused",
            404: "no session of yours has this id",
            411: "no Content-Length header",
            413: "body or file larger than the limit (named in `error`)",
            415: "unsupported file type, or a body that is not JSON",
            422: "a field breaks the schema (`error` and `detail` name it), or an unreadable file",
            429: "too many answers in progress; retry after Retry-After seconds"}
    out: dict[int | str, dict[str, Any]] = {c: {"model": ErrorResponse, "description": what[c]} for c in codes}
    return {**out, 401: {"model": ErrorResponse, **UNAUTHORIZED[401]}}


def create_app(settings: AssistantAPISettings) -> Any:
    """A FastAPI app; close it with ``app.state.close()`` (stops the workers, closes the history)."""
    require("fastapi", "serve")
    require("sse_starlette", "serve")
    from fastapi import Depends, FastAPI, Query, Request
    from fastapi import Path as PathParam
    from fastapi.responses import FileResponse, JSONResponse
    from sse_starlette.sse import EventSourceResponse

    keys = settings.keys if settings.keys is not None else KeyStore.from_settings()
    if not keys.active_owners():
        log.warning("no active API key in %s: every request but /health will get 401 (create one with "
                    "'mastery keys create --owner NAME')", keys.path)
    if settings.max_upload_bytes is None:
        from mastery.retrieval.ingest import max_file_bytes

        settings.max_upload_bytes = max_file_bytes()
    upload_limit = int(settings.max_upload_bytes)
    Owner = Annotated[str, Depends(owner_dependency(keys))]
    store = SessionStore(settings.db_path)
    uploads_dir = Path(settings.uploads_dir)
    uploads_dir.mkdir(parents=True, exist_ok=True)
    clean_incoming(uploads_dir)
    pool = ThreadPoolExecutor(max_workers=settings.max_running, thread_name_prefix="assistant")
    slots = threading.BoundedSemaphore(settings.max_running)
    upload_lock = threading.Lock()  # uploads take turns: the knowledge base has one writer at a time
    running = [0]
    probe_cache: dict[str, tuple[float, bool]] = {}

    app = FastAPI(title="mastery research assistant API", version="1",
                  description="Ask questions answered from the knowledge base, the web or the model, with "
                              "citations, streamed as server-sent events; upload documents; read the history.")
    # added first, so it runs inside RequestContextMiddleware: a refused Host still gets an X-Request-ID
    app.add_middleware(TrustedHosts, allowed=settings.allowed_hosts)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_body_bytes,
                       raw_body_paths={UPLOAD_PATH: upload_limit + MULTIPART_SLACK})
    app.state.store, app.state.keys, app.state.settings = store, keys, settings
    install_monitoring(app, settings, keys)  # every answer traced; GET /monitoring (report_page)

    def close() -> None:
        pool.shutdown(wait=True, cancel_futures=True)
        store.close()
        if hasattr(settings.brain, "close"):
            settings.brain.close()

    app.state.close = close

    # -- answering --------------------------------------------------------------------------------
    api_guards = Guards(enabled=False) if settings.guards_in_brain else settings.guards

    def screen_answer(ev: Event) -> Event:
        """The output guard on the final answer: a refusal replaces the text and marks it refused."""
        try:
            text = api_guards.check_output(str(ev.data.get("text", "")))
        except Exception as exc:  # a guard that fails refuses: fail closed
            return Event("answer", {**ev.data, "text": f"(withheld by the output guard: {exc})", "citations": [],
                                    "refused": True, "guarded": True})
        return Event("answer", {**ev.data, "text": text})

    def run_turn(question: Question, turn_id: str, emit: Callable[[Event | None], None]) -> None:
        record = TurnRecord()
        # Streamed pieces pass the guards' stream screen (PII redaction) before they leave: it holds back the
        # last few dozen characters until no finding can grow into them, and is flushed when the step ends.
        screen, screen_step = settings.guards.new_stream(), None

        def send(ev: Event) -> None:
            record.add(ev)
            emit(ev)

        def flush_screen() -> None:
            nonlocal screen, screen_step
            if screen is not None and screen_step is not None:
                rest = screen.flush()
                if rest:
                    send(Event("token", {"text": rest, "step": screen_step}))
                screen, screen_step = settings.guards.new_stream(), None

        try:
            for ev in settings.brain.answer(question):
                if ev.kind == "token" and screen is not None:
                    step = ev.data.get("step")
                    if step != screen_step:
                        flush_screen()
                        screen_step = step
                    text = screen.feed(str(ev.data.get("text", "")))
                    if text:
                        send(Event("token", {**ev.data, "text": text}))
                    continue
                flush_screen()
                if ev.kind == "answer":
                    ev = screen_answer(ev)
                send(ev)
        except Exception as exc:  # the brain's bug must not take the turn's record with it
            rid = question.extra.get("request_id", "")
            log.exception("the brain failed on turn %s (request %s)", turn_id, rid)
            ev = event("error", message=f"the assistant failed ({type(exc).__name__}); the server log has "
                                        f"request id {rid}")
            record.add(ev)
            emit(ev)
        finally:
            try:
                store.finish_turn(turn_id, record)
            finally:
                running[0] -= 1
                slots.release()
                emit(None)

    def start(sid: str, owner: str, body: AskRequest, request: Request) -> tuple[str, "asyncio.Queue[Any]"] | Any:
        """Check the question, record the turn and start the brain: (turn id, event queue) or an error reply."""
        if not store.owns(owner, sid):
            return error_response(request, 404, f"no session {sid}")
        try:
            text = api_guards.check_input(body.question)
        except Exception as exc:  # a guard that fails refuses: fail closed
            return error_response(request, 400, f"question refused by the input guard: {exc}")
        if not slots.acquire(blocking=False):
            return error_response(request, 429, f"{settings.max_running} answers are in progress; retry shortly",
                                  {"Retry-After": str(RETRY_AFTER_S)})
        running[0] += 1
        rid = request_id(request)
        try:
            turn_id = store.start_turn(sid, owner, text, rid)
        except BaseException:
            running[0] -= 1
            slots.release()
            raise
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def emit(item: Event | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone (server stopping): nobody listens
                loop.call_soon_threadsafe(queue.put_nowait, item)

        question = Question(text=text, session_id=sid, owner=owner, route_hint=body.route,
                            extra={"request_id": rid, "turn_id": turn_id})
        pool.submit(run_turn, question, turn_id, emit)
        request.state.log_fields = {"session_id": sid, "turn_id": turn_id, "owner": owner}
        return turn_id, queue

    SessionId = Annotated[str, PathParam(pattern=r"^[0-9a-f]{32}$", description="a session id from POST /sessions")]

    @app.post("/sessions", response_model=SessionView, status_code=201, summary="start a session",
              responses=_responses(400, 411, 413, 415, 422))
    async def create_session(body: SessionCreate, owner: Owner) -> Any:
        sid = store.create_session(owner, body.title)
        found = store.session(owner, sid)
        assert found is not None
        return SessionView(**{k: v for k, v in found.items() if k != "history"})

    @app.get("/sessions", response_model=SessionList, summary="your sessions, the most recent first",
             responses=_responses())
    async def list_sessions(owner: Owner) -> SessionList:
        return SessionList(sessions=[SessionView(**s) for s in store.sessions(owner)])

    @app.get("/sessions/{session_id}", response_model=SessionDetail, summary="a session with its history",
             responses=_responses(404, 422))
    async def get_session(session_id: SessionId, request: Request, owner: Owner) -> Any:
        found = store.session(owner, session_id)
        if found is None:  # another owner's session reads exactly like a missing one
            return error_response(request, 404, f"no session {session_id}")
        return SessionDetail(**{**found, "history": [TurnView(**t) for t in found["history"]]})

    @app.post("/sessions/{session_id}/ask", summary="answer a question, streamed as server-sent events",
              responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                               "description": "`turn`, then the brain's events (route, step, passages, thought, "
                                              "token, answer, usage, or error), then `done`; `data` is JSON"},
                         **_responses(400, 404, 411, 413, 415, 422, 429)})
    async def ask(session_id: SessionId, body: AskRequest, request: Request, owner: Owner) -> Any:
        started = start(session_id, owner, body, request)
        if not isinstance(started, tuple):
            return started
        turn_id, queue = started
        return EventSourceResponse(_stream(session_id, turn_id, request_id(request), queue), ping=15)

    async def _stream(sid: str, turn_id: str, rid: str, queue: "asyncio.Queue[Any]") -> AsyncIterator[dict[str, Any]]:
        yield {"event": "turn", "id": "0", "data": json.dumps({"session_id": sid, "turn_id": turn_id,
                                                               "request_id": rid})}
        seq = 0
        while (item := await queue.get()) is not None:
            seq += 1
            yield {"event": item.kind, "id": str(seq), "data": json.dumps(item.data)}
        turn = store.turn_status(turn_id)
        yield {"event": "done", "id": str(seq + 1), "data": json.dumps({"turn_id": turn_id, "status": turn})}

    @app.post("/sessions/{session_id}/answer", response_model=TurnView,
              summary="answer a question and return the finished answer (no streaming)",
              responses=_responses(400, 404, 411, 413, 415, 422, 429))
    async def answer(session_id: SessionId, body: AskRequest, request: Request, owner: Owner) -> Any:
        started = start(session_id, owner, body, request)
        if not isinstance(started, tuple):
            return started
        turn_id, queue = started
        while await queue.get() is not None:
            pass
        found = store.turn(owner, turn_id)
        assert found is not None
        return TurnView(**found)

    # -- documents --------------------------------------------------------------------------------
    @app.post(UPLOAD_PATH, response_model=UploadResult, status_code=201,
              summary="upload a document into the knowledge base (PDF, Markdown, text, HTML)",
              openapi_extra={"requestBody": {"content": {
                  "multipart/form-data": {"schema": {"type": "object", "properties": {
                      "file": {"type": "string", "format": "binary"}}, "required": ["file"]}},
                  "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
              responses=_responses(400, 411, 413, 415, 422))
    async def upload(request: Request, owner: Owner,
                     filename: Annotated[str | None, Query(max_length=200, description="the file's name, for a "
                                                                                       "raw (non-multipart) body")]
                     = None) -> Any:
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        try:
            if media == "multipart/form-data":
                form = await request.form(max_files=1, max_fields=2)
                part = form.get("file")
                if part is None or isinstance(part, str):
                    return error_response(request, 422, "invalid request: file: send the document as the "
                                                        "multipart field 'file'")
                up = Upload(uploads_dir, part.filename, upload_limit)
                while chunk := await part.read(1 << 20):
                    up.write(chunk)
            else:
                length = int(request.headers.get("content-length", "0"))
                if length > upload_limit:
                    raise UploadTooLarge(f"{filename or 'the upload'}: {length / 1e6:.1f} MB is larger than the "
                                      f"upload limit of {limit_text(upload_limit)}")
                up = Upload(uploads_dir, filename, upload_limit)
                async for chunk in request.stream():
                    up.write(chunk)

            def ingest() -> dict[str, Any]:
                with upload_lock:
                    return up.ingest(settings.kb, settings.collection)

            result = await asyncio.to_thread(ingest)
        except UploadError as exc:
            return error_response(request, exc.status, str(exc))
        request.state.log_fields = {"owner": owner, "upload": result["source"], "status": result["status"]}
        return JSONResponse(UploadResult(**result).model_dump(), status_code=201)

    def kb_sources() -> list[dict[str, Any]]:
        if settings.collection not in settings.kb.collections():
            return []
        return settings.kb.sources(settings.collection)

    @app.get("/documents", response_model=DocumentList, summary="the documents in the knowledge base",
             responses=_responses())
    async def list_documents(owner: Owner) -> DocumentList:
        rows = await asyncio.to_thread(kb_sources)
        return DocumentList(collection=settings.collection,
                            documents=[DocumentView(**{k: r[k] for k in DocumentView.model_fields}) for r in rows])

    Source = Annotated[str, PathParam(min_length=1, max_length=200, description="a document's name (its `source`)")]

    @app.get("/documents/{source}/pages/{page}", response_model=PageView,
             summary="one page of a document: what a citation [n] opens", responses=_responses(404, 422))
    async def get_page(source: Source, page: Annotated[int, PathParam(ge=0, le=100_000)], request: Request,
                       owner: Owner) -> Any:
        def chunks() -> list[Any]:
            if settings.collection not in settings.kb.collections():
                return []
            return settings.kb.documents(settings.collection,
                                         where={"$and": [{"source": source}, {"page": page}]})

        docs = await asyncio.to_thread(chunks)
        if not docs:
            return error_response(request, 404, f"no page {page} of {source!r} in the knowledge base")
        return PageView(source=source, page=page, text=_stitch(docs), chunks=len(docs))

    @app.get("/documents/{source}/file", summary="the document itself (to open at a page)",
             responses={200: {"content": {"application/octet-stream": {}}}, **_responses(404, 422)})
    async def get_file(source: Source, request: Request, owner: Owner) -> Any:
        rows = await asyncio.to_thread(kb_sources)
        path = next((Path(r["path"]) for r in rows if r["source"] == source and r.get("path")), None)
        if path is None or not path.is_file():
            return error_response(request, 404, f"no file {source!r} in the knowledge base")
        return FileResponse(path, filename=source, content_disposition_type="inline")

    # -- health -----------------------------------------------------------------------------------
    def llm_reachable() -> bool | None:
        if not settings.llm_url:
            return None
        cached = probe_cache.get(settings.llm_url)
        if cached is not None and time.monotonic() - cached[0] < LLM_PROBE_TTL_S:
            return cached[1]
        if settings.llm_probe is not None:
            ok = settings.llm_probe(settings.llm_url)
        else:
            from mastery.llm.client import server_healthy

            ok = server_healthy(settings.llm_url)
        probe_cache[settings.llm_url] = (time.monotonic(), ok)
        return ok

    def kb_health() -> KBHealth:
        try:
            if settings.collection not in settings.kb.collections():
                return KBHealth(collection=settings.collection, chunks=0, sources=0,
                                error="no documents yet: upload some or ingest with 'mastery kb ingest'")
            stats = settings.kb.stats(settings.collection)[0]
            return KBHealth(collection=settings.collection, chunks=stats.chunks, sources=stats.sources)
        except Exception as exc:  # a Chroma server that went away: report it, /health must still answer
            return KBHealth(collection=settings.collection, chunks=0, sources=0, error=str(exc)[:200])

    @app.get("/health", response_model=Health, summary="liveness, LLM reachability, knowledge-base size")
    async def health() -> Health:
        reachable, kb = await asyncio.gather(asyncio.to_thread(llm_reachable), asyncio.to_thread(kb_health))
        return Health(status="degraded" if reachable is False else "ok",
                      llm=LLMHealth(url=settings.llm_url, reachable=reachable), kb=kb,
                      guards=settings.guards.active, running=running[0])

    install_error_handlers(app, log)
    return app


def _stitch(chunks: list[Any]) -> str:
    """A page's text from its overlapping chunks, in order of their offset in the page."""
    ordered = sorted(chunks, key=lambda d: (int(d.metadata.get("start", -1)), int(d.metadata.get("chunk", 0))))
    text = ""
    for doc in ordered:
        start = int(doc.metadata.get("start", -1))
        if 0 <= start <= len(text):
            text += doc.text[len(text) - start:]  # skip the part the previous chunk already gave
        else:
            text += ("\n" if text else "") + doc.text
    return text
