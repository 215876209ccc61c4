"""The knowledge base: files and ready Documents, embedded with MiniLM, stored in ChromaDB.

Public API (stable: the RAG lab L19 and Cyber-Sentinel build on it)::

    from mastery.retrieval.kb import KnowledgeBase

    kb = KnowledgeBase.open()                          # $MASTERY_CHROMA_URL, else $MASTERY_KB_DIR,
                                                       # else ~/.cache/mastery/kb (embedded, persistent)
    kb = KnowledgeBase.open("runs/kb")                 # a persistent folder
    kb = KnowledgeBase.open("http://127.0.0.1:8000")   # a `chroma run --path DIR` server (or "host:port")

    r = kb.ingest_files(["guide.pdf", "notes/"], "docs", chunk_size=1000, chunk_overlap=150)
    r.added, r.replaced, r.unchanged, r.chunks         # files new / changed / already stored; chunks written
    r.repaired, r.interrupted                          # files whose chunks were incomplete; a killed run finished
    kb.ingest_documents(technique_documents(), "attack", list_fields=("tactics",))  # ready Documents

    hits = kb.query("what is a DER encoding?", "docs", k=5, where={"source": "libtasn1.pdf"})
    hits[0].score, hits[0].citation()                  # cosine similarity (higher is better), "libtasn1.pdf p.3"

    search = kb.retriever("docs", kind="hybrid", where={"source": "libtasn1.pdf"})  # a Retriever
    search.search("what is a DER encoding?", 5)        # kinds: dense, bm25, hybrid, hybrid+rerank
    kb.collections(); kb.stats(); kb.sources("docs"); kb.delete_collection("docs")

Guarantees:

- Embeddings always come from our embedder (MiniLM by default) and are passed to Chroma explicitly;
  Chroma's own default embedding function (which would download a model) is never attached.
- A file's identity is its absolute path; its version (path, content hash, chunking) decides: the same
  version committed with all its chunks -> unchanged, nothing written; otherwise its chunks are (re)written.
- Ingest is crash-safe (:mod:`mastery.retrieval.ingest`): a manifest in the collection's metadata, written
  last in one atomic call, names each file's committed version; reads skip every other version's chunks.
  A ``kill -9`` at any point leaves the collection as it was before or as it is after; the next ingest
  repairs the rest. Files over ``MASTERY_KB_MAX_FILE_MB`` (default 20) are refused before anything is read.
- A retriever's BM25 index is built from the collection on its first search and rebuilt when the collection's
  size changes; its dense stage always asks Chroma, so it sees every write.
- User errors (unknown collection, empty query, bad filter, unreadable file, unreachable server) raise
  :class:`KnowledgeBaseError` or :class:`~mastery.retrieval.documents.DocumentError` (both MasteryErrors).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mastery.core.errors import MasteryError
from mastery.retrieval.chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE
from mastery.retrieval.hybrid import Scorer, SearchTuning, compose
from mastery.retrieval.types import RETRIEVAL_KINDS, Document, Hit, Retriever, check_query

if TYPE_CHECKING:
    from mastery.core.progress import Progress
    from mastery.retrieval.ingest import IngestResult

log = logging.getLogger(__name__)
# The manifest's keys in a collection's metadata and the chunk field it points at (see retrieval/ingest.py).
FILE_PREFIX = "kb:file:"  # + path key -> JSON {version, path, source, file_hash, chunking, chunks}
HIDDEN_KEY = "kb:hidden"  # JSON list of versions whose chunks reads skip (not committed, or replaced)
NEW_KEY = "kb:new"  # made by an ingest that has not committed yet: treated as absent
VERSION_FIELD = "version"
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$")
_HOST_PORT = re.compile(r"^(?P<host>[\w.-]+|\[[0-9a-fA-F:]+\]):(?P<port>\d+)$")


class KnowledgeBaseError(MasteryError):
    """The store, a collection, a query or a write went wrong in a way the user can act on."""


class Embedder(Protocol):
    """Anything that turns texts into (N, dim) float32 L2-normalised vectors."""

    name: str

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class SentenceEmbedder:
    """A registry sentence-transformers model (default all-MiniLM-L6-v2), loaded offline on first use."""

    def __init__(self, model: str = "all-minilm-l6-v2", device: str = "auto", batch_size: int = 32,
                 max_seq_length: int = 256) -> None:
        self.name = model
        self.requested_device = device
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length  # longer chunks are truncated to this many word pieces
        self._model: Any = None
        self.device = ""

    def _load(self) -> Any:
        if self._model is None:
            from mastery.core.runtime import set_torch_threads, torch_device
            from mastery.text.embed import load_sentence_model

            set_torch_threads()
            self.device = torch_device(self.requested_device)
            self._model = load_sentence_model(self.name, device=self.device, max_seq_length=self.max_seq_length)
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        from mastery.text.embed import encode_texts

        return encode_texts(self._load(), texts, self.batch_size)


@dataclass(frozen=True)
class CollectionStats:
    name: str
    chunks: int
    sources: int  # distinct files (or distinct `source` values for ready Documents)
    embedder: str


class KnowledgeBase:
    """Collections of embedded chunks in one Chroma store (see the module docstring)."""

    def __init__(self, client: Any, location: str, embedder: Embedder | None = None) -> None:
        self.client = client
        self.location = location
        self.embedder: Embedder = embedder or SentenceEmbedder()
        # Writes go in batches below Chroma's limit; a test lowers this to fail between batches.
        self.write_batch = min(1000, int(client.get_max_batch_size()))
        # Called with "intent", "batch N", "commit", "cleanup" as an ingest passes each step; the crash tests
        # stop the process there to kill it.
        self.checkpoint: Callable[[str], None] = lambda step: None

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, location: str | Path | None = None, embedder: Embedder | None = None) -> KnowledgeBase:
        """A persistent folder, or a server given as ``http(s)://host:port`` or ``host:port``."""
        if location is None:
            location = configured_location() or default_kb_dir()
        text = str(location)
        if text.startswith(("http://", "https://")) or _HOST_PORT.match(text):
            return cls(_http_client(text), text, embedder)
        return cls(_persistent_client(Path(text).expanduser()), str(Path(text).expanduser()), embedder)

    # -- collections -----------------------------------------------------------------------------
    def collections(self) -> list[str]:
        return sorted(c.name for c in self.client.list_collections() if not (c.metadata or {}).get(NEW_KEY))

    def _collection(self, name: str, create: bool = False) -> Any:
        if not _NAME.match(name or ""):
            raise KnowledgeBaseError(f"bad collection name {name!r}: use 3-512 letters, digits, '.', '_' or '-', "
                                     "starting and ending with a letter or digit")
        if create:
            # embedding_function=None: Chroma must never attach (and later download) its default model.
            meta = {"embedder": self.embedder.name, "created_by": "mastery", NEW_KEY: True}
            col = self.client.get_or_create_collection(name, embedding_function=None, metadata=meta,
                                                       configuration={"hnsw": {"space": "cosine"}})
            if (col.metadata or {}).get(NEW_KEY) and col.metadata.get("embedder") != self.embedder.name:
                # A first ingest with another model died before committing: nothing of it was ever visible.
                self.client.delete_collection(name)
                col = self.client.create_collection(name, embedding_function=None, metadata=meta,
                                                    configuration={"hnsw": {"space": "cosine"}})
        else:
            try:
                col = self.client.get_collection(name, embedding_function=None)
            except Exception as exc:  # NotFoundError (embedded) or ValueError/HTTP errors (server)
                if "does not exist" not in str(exc) and "not found" not in str(exc).lower():
                    raise KnowledgeBaseError(f"cannot open collection {name!r}: {exc}") from exc
                col = None
            if col is None or (col.metadata or {}).get(NEW_KEY):  # a first ingest that never committed
                known = ", ".join(self.collections()) or "none yet"
                raise KnowledgeBaseError(f"unknown collection {name!r} in {self.location}; known: {known}") from None
        built_with = (col.metadata or {}).get("embedder")
        if built_with and built_with != self.embedder.name:
            raise KnowledgeBaseError(f"collection {name!r} was embedded with {built_with}, not {self.embedder.name}; "
                                     "query it with the same model or re-ingest into a new collection")
        return col

    def delete_collection(self, name: str) -> None:
        self._collection(name)  # unknown -> KnowledgeBaseError
        self.client.delete_collection(name)

    def count(self, collection: str) -> int:
        col = self._collection(collection)
        if not _hidden(col):
            return int(col.count())
        return len(_get_all(col, include=[], where=_visible(col))["ids"])

    def stats(self, collection: str | None = None) -> list[CollectionStats]:
        out = []
        for name in [collection] if collection else self.collections():
            col = self._collection(name)
            metas = _get_all(col, include=["metadatas"], where=_visible(col))["metadatas"]
            keys = {m.get("path") or m.get("source") for m in metas if m}
            out.append(CollectionStats(name, len(metas), len(keys - {None}), (col.metadata or {}).get("embedder", "?")))
        return out

    def sources(self, collection: str) -> list[dict[str, Any]]:
        """One row per stored file: source, path, format, pages, chunks, file_hash (sorted by source)."""
        rows: dict[str, dict[str, Any]] = {}
        col = self._collection(collection)
        for m in _get_all(col, include=["metadatas"], where=_visible(col))["metadatas"]:
            key = m.get("path") or m.get("source", "?")
            row = rows.setdefault(key, {"source": m.get("source", "?"), "path": m.get("path", ""),
                                        "format": m.get("format", ""), "pages": set(), "chunks": 0,
                                        "file_hash": m.get("file_hash", "")})
            row["chunks"] += 1
            row["pages"].add(m.get("page", 0))
        return [{**r, "pages": len(r["pages"])} for _, r in sorted(rows.items(), key=lambda kv: kv[1]["source"])]

    def documents(self, collection: str, where: dict[str, Any] | None = None,
                  contains: str | None = None) -> list[Document]:
        """Stored chunks matching a metadata filter and/or containing a substring (no embedding), by id."""
        col = self._collection(collection)
        try:
            got = col.get(where=_visible(col, where), where_document={"$contains": contains} if contains else None,
                          include=["documents", "metadatas"])
        except Exception as exc:
            raise KnowledgeBaseError(f"bad filter {where!r}: {exc}") from None
        docs = [Document(i, t or "", dict(m or {})) for i, t, m in zip(got["ids"], got["documents"], got["metadatas"],
                                                                     strict=True)]
        return sorted(docs, key=lambda d: d.id)

    # -- ingest ----------------------------------------------------------------------------------
    def ingest_files(self, paths: Sequence[str | Path], collection: str, chunk_size: int = DEFAULT_CHUNK_SIZE,
                     chunk_overlap: int = DEFAULT_CHUNK_OVERLAP, skip_errors: bool = False,
                     max_file_mb: float | None = None, progress: Progress | None = None) -> IngestResult:
        """Load, chunk, embed and store files (folders are searched for supported files), crash-safely.

        A file already committed with the same content hash and chunking, all its chunks present, is left
        alone; otherwise its chunks are written and swapped in at the commit. Files over ``max_file_mb``
        (default ``MASTERY_KB_MAX_FILE_MB``) raise a DocumentError before anything is read. With
        ``skip_errors`` unreadable or oversized files are listed in ``result.skipped`` instead of aborting.
        ``progress`` gets one stage whose steps are chunks embedded and stored.
        """
        from mastery.retrieval.ingest import ingest_files

        return ingest_files(self, paths, collection, chunk_size, chunk_overlap, skip_errors, max_file_mb, progress)

    def ingest_documents(self, docs: Sequence[Document], collection: str,
                         list_fields: Sequence[str] = ()) -> IngestResult:
        """Store ready Documents (e.g. ATT&CK techniques) by id: new ids are added, ids whose content hash
        changed are replaced (upsert: each document atomically), the rest left alone. Each comma-separated
        string field named in ``list_fields`` is also stored as a list ``<field>_list``, so
        ``where={"tactics_list": {"$contains": "persistence"}}`` filters on one value."""
        from mastery.retrieval.ingest import ingest_documents

        return ingest_documents(self, docs, collection, list_fields)

    # -- retrievers --------------------------------------------------------------------------------
    def retriever(self, collection: str, kind: str = "hybrid", where: dict[str, Any] | None = None, *,
                  tuning: SearchTuning | None = None, scorer: Scorer | None = None) -> Retriever:
        """A :class:`~mastery.retrieval.types.Retriever` over ``collection`` (optionally filtered by ``where``).

        ``kind``: ``dense`` (MiniLM cosine through Chroma), ``bm25`` (keywords over the stored chunks),
        ``hybrid`` (both fused by RRF) or ``hybrid+rerank`` (the hybrid's top candidates re-ordered by ``scorer``,
        default :func:`mastery.retrieval.rerank.find_cross_encoder`). ``tuning``: a
        :class:`~mastery.retrieval.hybrid.SearchTuning` (default: the general-purpose one). An unknown
        collection fails here, not on the first search.
        """
        if kind not in RETRIEVAL_KINDS:
            raise KnowledgeBaseError(f"unknown retrieval kind {kind!r}; choose one of {', '.join(RETRIEVAL_KINDS)}")
        self._collection(collection)  # unknown -> KnowledgeBaseError now
        tuning = tuning or SearchTuning()
        if kind == "hybrid+rerank" and scorer is None:
            from mastery.retrieval.rerank import find_cross_encoder

            scorer = find_cross_encoder()
        dense = _CollectionDense(self, collection, where) if kind != "bm25" else None
        bm25 = _CollectionBM25(self, collection, where, tuning) if kind != "dense" else None
        return compose(kind, dense=dense, bm25=bm25, tuning=tuning, scorer=scorer)

    # -- query -----------------------------------------------------------------------------------
    def query(self, text: str, collection: str, k: int = 5, where: dict[str, Any] | None = None) -> list[Hit]:
        """The ``k`` chunks nearest to ``text`` (cosine), optionally filtered by Chroma metadata ``where``
        (e.g. ``{"source": "a.pdf"}``, ``{"page": {"$gte": 3}}``, ``{"$and": [...]}``), best first."""
        if not isinstance(text, str) or not text.strip():
            raise KnowledgeBaseError("empty query: give some text to search for")
        if k < 1:
            raise KnowledgeBaseError(f"k must be >= 1, got {k}")
        col = self._collection(collection)
        n = col.count()
        if n == 0:
            return []
        vector = self.embedder.embed([text])
        try:
            res = col.query(query_embeddings=vector, n_results=min(k, n), where=_visible(col, where),
                            include=["documents", "metadatas", "distances"])
        except Exception as exc:  # a malformed filter: ValueError / InvalidArgumentError / HTTP 400
            if where:
                raise KnowledgeBaseError(f"bad where filter {where!r}: {exc}") from None
            raise KnowledgeBaseError(f"query on {collection!r} failed: {exc}") from exc
        return [Hit(id=i, text=doc or "", score=1.0 - float(dist), rank=r + 1, metadata=dict(meta or {}))
                for r, (i, doc, meta, dist) in enumerate(zip(res["ids"][0], res["documents"][0],
                                                             res["metadatas"][0], res["distances"][0], strict=True))]


class _CollectionDense:
    """Dense stage: Chroma's nearest chunks by cosine; each hit carries it as ``similarity``."""

    name = "dense"

    def __init__(self, kb: KnowledgeBase, collection: str, where: dict[str, Any] | None) -> None:
        self.kb, self.collection, self.where = kb, collection, where

    def search(self, query: str, k: int = 10) -> list[Hit]:
        check_query(query, k)
        return [Hit(h.id, h.text, h.score, h.rank, {**h.metadata, "similarity": h.score})
                for h in self.kb.query(query, self.collection, k=k, where=self.where)]


class _CollectionBM25:
    """BM25 stage over the collection's stored chunks, indexed on first use and again when the size changes."""

    name = "bm25"

    def __init__(self, kb: KnowledgeBase, collection: str, where: dict[str, Any] | None,
                 tuning: SearchTuning) -> None:
        self.kb, self.collection, self.where, self.tuning = kb, collection, where, tuning
        self._index: Any = None
        self._size = -1

    def search(self, query: str, k: int = 10) -> list[Hit]:
        from mastery.retrieval.bm25 import BM25Retriever

        check_query(query, k)
        size = self.kb.count(self.collection)
        if size == 0:
            return []
        if self._index is None or size != self._size:
            docs = self.kb.documents(self.collection, where=self.where)
            if not docs:
                return []  # the filter matches nothing
            self._index = BM25Retriever(docs, heading_boost=self.tuning.heading_boost,
                                        id_weight=self.tuning.id_weight)
            self._size = size
        return self._index.search(query, k)


# -- helpers -------------------------------------------------------------------------------------
def configured_location() -> str | None:
    """The store the settings name (``MASTERY_CHROMA_URL``, else ``MASTERY_KB_DIR``), or None."""
    from mastery.core.settings import get_settings

    return get_settings().kb_location


def open_existing(embedder: Embedder | None = None) -> KnowledgeBase | None:
    """The configured knowledge base, or the default folder when it exists; None when there is none.

    Unlike :meth:`KnowledgeBase.open`, it never creates an empty store just to find nothing in it."""
    location = configured_location()
    if location is None and not default_kb_dir().exists():
        return None
    return KnowledgeBase.open(location, embedder)


def default_kb_dir() -> Path:
    from mastery.core.settings import get_settings

    return Path(get_settings().cache).expanduser() / "kb"


def _settings() -> Any:
    from chromadb.config import Settings

    return Settings(anonymized_telemetry=False, allow_reset=False)


def _persistent_client(path: Path) -> Any:
    import chromadb

    if path.exists() and not path.is_dir():
        raise KnowledgeBaseError(f"{path} is a file, not a knowledge-base folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(path), settings=_settings())
    except Exception as exc:
        raise KnowledgeBaseError(f"cannot open the knowledge base at {path}: {exc}") from exc


def _http_client(url: str) -> Any:
    from urllib.parse import urlparse

    import chromadb

    parsed = urlparse(url if "://" in url else f"http://{url}")
    host, port = parsed.hostname or "127.0.0.1", parsed.port or (443 if parsed.scheme == "https" else 8000)
    try:
        client = chromadb.HttpClient(host=host, port=port, ssl=parsed.scheme == "https", settings=_settings())
        client.heartbeat()
        return client
    except Exception as exc:
        raise KnowledgeBaseError(f"cannot reach a Chroma server at {url} ({type(exc).__name__}); start one with "
                                 "'chroma run --path DIR --port PORT' or use a local folder") from None


def _batches(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _hidden(col: Any) -> list[str]:
    """Versions whose chunks reads skip, from the manifest in the collection's metadata."""
    return list(json.loads((col.metadata or {}).get(HIDDEN_KEY, "[]")))


def _visible(col: Any, where: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """``where`` restricted to committed chunks; unchanged (no extra filter) when nothing is hidden."""
    hidden = _hidden(col)
    if not hidden:
        return where or None
    skip = {VERSION_FIELD: {"$nin": hidden}}  # chunks without a version (ready documents) pass
    return {"$and": [where, skip]} if where else skip


def _get_all(col: Any, include: list[str], where: dict[str, Any] | None = None) -> dict[str, list[Any]]:
    """Everything in a collection (matching ``where``), paged (Chroma caps one get)."""
    out: dict[str, list[Any]] = {"ids": [], **{k: [] for k in include}}
    offset, page = 0, 5000
    while True:
        got = col.get(include=include, limit=page, offset=offset, where=where)
        for key in out:
            out[key].extend(got[key] if got[key] is not None else [])
        if len(got["ids"]) < page:
            return out
        offset += page


def _get_records(col: Any, ids: list[str], batch: int) -> dict[str, Any]:
    """ids, embeddings, documents and metadatas of ``ids`` (for restoring them after a failed write)."""
    out: dict[str, list[Any]] = {"ids": [], "embeddings": [], "documents": [], "metadatas": []}
    for part in _batches(ids, batch):
        got = col.get(ids=list(part), include=["embeddings", "documents", "metadatas"])
        for key in out:
            out[key].extend(list(got[key]))
    if out["embeddings"]:
        out["embeddings"] = np.asarray(out["embeddings"], dtype=np.float32)  # (N, dim)
    return out


ATTACK_LIST_FIELDS = ("tactics", "platforms")


def ingest_attack(kb: KnowledgeBase, collection: str = "attack", max_chars: int | None = None) -> IngestResult:
    """The ATT&CK techniques (registry STIX copy) as one document each, filterable by
    ``{"tactics_list": {"$contains": "persistence"}}`` and ``{"technique_id": "T1055"}``."""
    from mastery.retrieval.attack import technique_documents

    return kb.ingest_documents(technique_documents(max_chars=max_chars), collection, list_fields=ATTACK_LIST_FIELDS)
