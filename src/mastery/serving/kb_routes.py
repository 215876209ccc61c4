"""``POST /kb/query`` on the prediction API: a knowledge-base lookup beside ``/predict``, so one service
answers with both the model and the documents (the compose stack and ``mastery stack`` run it against a
Chroma server).

The route exists when a collection is named (``MASTERY_KB_COLLECTION``, or ``collection=`` here); the
store is the configured one (``MASTERY_CHROMA_URL``, else ``MASTERY_KB_DIR``), opened on the first query
rather than at start-up, so the API and the Chroma server may start in either order. Searches go through
the retrieval contract, :meth:`mastery.retrieval.kb.KnowledgeBase.retriever`, one retriever per kind,
kept for the life of the app. A store that cannot be reached is a 503 naming it, an unknown collection
a 404; neither is cached, so the next request tries again.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint signatures at runtime.
import logging
import threading
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mastery.serving.http import request_id
from mastery.serving.schemas import ErrorResponse

log = logging.getLogger(__name__)

MAX_K = 20
MAX_QUERY_CHARS = 2000
KB_KINDS = ("dense", "bm25", "hybrid")  # hybrid+rerank is left out: a cross-encoder per request is too slow here


class KBQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, pattern=r"\S",
                       description="what to look for", examples=["how do I contain ransomware?"])
    k: int = Field(default=3, ge=1, le=MAX_K, description="hits to return")
    kind: Literal["dense", "bm25", "hybrid"] = Field(
        default="hybrid", description="dense (MiniLM cosine via Chroma), bm25 (keywords) or hybrid (both, fused)")


class KBHit(BaseModel):
    id: str
    rank: int
    score: float
    source: str = Field(description="the file (or document source) the chunk came from")
    citation: str = Field(description="source and page, e.g. 'guide.pdf p.3'")
    text: str


class KBAnswer(BaseModel):
    collection: str
    kind: str
    hits: list[KBHit]
    request_id: str


def mount_kb_routes(app: Any, collection: str | None = None, open_kb: Callable[[], Any] | None = None) -> bool:
    """Add ``POST /kb/query`` to ``app`` when a collection is named (argument, else ``MASTERY_KB_COLLECTION``).

    ``open_kb`` returns the :class:`~mastery.retrieval.kb.KnowledgeBase` (default: the configured store
    with the MiniLM embedder). Returns whether the route was added.
    """
    from fastapi import HTTPException, Request

    if collection is None:
        from mastery.core.settings import get_settings

        collection = get_settings().kb_collection
    if not collection:
        return False
    opener = open_kb or _open_configured
    cache: dict[str, Any] = {}
    lock = threading.Lock()  # two first requests in two threads must not open the store twice

    def retriever(kind: str) -> Any:
        from mastery.retrieval.kb import KnowledgeBaseError

        with lock:
            if kind in cache:
                return cache[kind]
            try:
                kb = cache.get("kb") or opener()
                cache["kb"] = kb
                cache[kind] = kb.retriever(collection, kind=kind)
            except KnowledgeBaseError as exc:
                text = str(exc)
                status = 404 if text.startswith("unknown collection") else 503
                log.warning("kb/query: %s", text)
                raise HTTPException(status, text) from None
            return cache[kind]

    def search(body: KBQuery) -> list[Any]:
        return retriever(body.kind).search(body.query, body.k)

    responses: dict[int | str, dict[str, Any]] = {
        404: {"model": ErrorResponse, "description": "the collection does not exist (yet) in the store"},
        422: {"model": ErrorResponse, "description": "a bad query, k or kind; `error` names the field"},
        503: {"model": ErrorResponse, "description": "the knowledge-base store (the Chroma server) cannot be reached"},
    }

    @app.post("/kb/query", response_model=KBAnswer, responses=responses,
              summary=f"search the knowledge base (collection {collection!r})")
    async def kb_query(body: KBQuery, request: Request) -> KBAnswer:
        import anyio

        # Embedding and BM25 hold the GIL: off the event loop, so /health keeps answering meanwhile.
        hits = await anyio.to_thread.run_sync(search, body)
        request.state.log_fields = {"kb_collection": collection, "kind": body.kind, "n": len(hits)}
        return KBAnswer(collection=collection, kind=body.kind, request_id=request_id(request), hits=[
            KBHit(id=h.id, rank=h.rank, score=float(h.score), source=str(h.metadata.get("source", "")),
                  citation=h.citation(), text=h.text) for h in hits])

    log.info("POST /kb/query searches collection %r", collection)
    return True


def _open_configured() -> Any:
    from mastery.retrieval.kb import KnowledgeBase

    return KnowledgeBase.open()
