"""The knowledge base: files and ready Documents, embedded with MiniLM, stored in ChromaDB.

Public API (stable: the RAG lab L19 and Cyber-Sentinel build on it)::

    from mastery.retrieval.kb import KnowledgeBase

    kb = KnowledgeBase.open()                          # $MASTERY_CHROMA_URL, else $MASTERY_KB_DIR,
                                                       # else ~/.cache/mastery/kb (embedded, persistent)
    kb = KnowledgeBase.open("runs/kb")                 # a persistent folder
    kb = KnowledgeBase.open("http://127.0.0.1:8000")   # a `chroma run --path DIR` server (or "host:port")

    r = kb.ingest_files(["guide.pdf", "notes/"], "docs", chunk_size=1000, chunk_overlap=150)
    r.added, r.replaced, r.unchanged, r.chunks         # files new / changed / already stored; chunks written
    kb.ingest_documents(technique_documents(), "attack", list_fields=("tactics",))  # ready Documents

    hits = kb.query("what is a DER encoding?", "docs", k=5, where={"source": "libtasn1.pdf"})
    hits[0].score, hits[0].citation()                  # cosine similarity (higher is better), "libtasn1.pdf p.3"

    search = kb.retriever("docs", kind="hybrid", where={"source": "libtasn1.pdf"})  # a Retriever
    search.search("what is a DER encoding?", 5)        # kinds: dense, bm25, hybrid, hybrid+rerank
    kb.collections(); kb.stats(); kb.sources("docs"); kb.delete_collection("docs")

Guarantees:

- Embeddings always come from our embedder (MiniLM by default) and are passed to Chroma explicitly;
  Chroma's own default embedding function (which would download a model) is never attached.
- A file's identity is its absolute path; its content hash decides: same hash (and chunking) already
  stored -> unchanged, nothing written; same path, new hash -> its old chunks are replaced.
- Ingest is all-or-nothing: files are read, chunked and embedded before anything is written; if a write
  fails half-way, the chunks deleted so far are put back and the ones added are removed.
- A retriever's BM25 index is built from the collection on its first search and rebuilt when the collection's
  size changes; its dense stage always asks Chroma, so it sees every write.
- User errors (unknown collection, empty query, bad filter, unreadable file, unreachable server) raise
  :class:`KnowledgeBaseError` or :class:`~mastery.retrieval.documents.DocumentError` (both MasteryErrors).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mastery.core.errors import MasteryError
from mastery.retrieval.chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE, check_sizes, chunk_file
from mastery.retrieval.documents import DocumentError, SourceFile, expand_paths, load_file
from mastery.retrieval.hybrid import Scorer, SearchTuning, compose
from mastery.retrieval.types import RETRIEVAL_KINDS, Document, Hit, Retriever, check_query

log = logging.getLogger(__name__)
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


@dataclass
class IngestResult:
    """What an ingest did. For files the counts are files; for ``ingest_documents`` they are documents."""

    added: int = 0  # new files (documents)
    replaced: int = 0  # files whose content changed: old chunks replaced
    unchanged: int = 0  # already stored with the same content hash: nothing written
    chunks: int = 0  # chunks (documents) written
    deleted_chunks: int = 0  # old chunks removed by replacements
    skipped: list[str] = field(default_factory=list)  # "file: reason" (only with skip_errors=True)
    load_seconds: float = 0.0
    embed_seconds: float = 0.0
    write_seconds: float = 0.0


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
        return sorted(c.name for c in self.client.list_collections())

    def _collection(self, name: str, create: bool = False) -> Any:
        if not _NAME.match(name or ""):
            raise KnowledgeBaseError(f"bad collection name {name!r}: use 3-512 letters, digits, '.', '_' or '-', "
                                     "starting and ending with a letter or digit")
        if create:
            # embedding_function=None: Chroma must never attach (and later download) its default model.
            col = self.client.get_or_create_collection(
                name, embedding_function=None, configuration={"hnsw": {"space": "cosine"}},
                metadata={"embedder": self.embedder.name, "created_by": "mastery"})
        else:
            try:
                col = self.client.get_collection(name, embedding_function=None)
            except Exception as exc:  # NotFoundError (embedded) or ValueError/HTTP errors (server)
                if "does not exist" not in str(exc) and "not found" not in str(exc).lower():
                    raise KnowledgeBaseError(f"cannot open collection {name!r}: {exc}") from exc
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
        return int(self._collection(collection).count())

    def stats(self, collection: str | None = None) -> list[CollectionStats]:
        out = []
        for name in [collection] if collection else self.collections():
            col = self._collection(name)
            metas = _get_all(col, include=["metadatas"])["metadatas"]
            keys = {m.get("path") or m.get("source") for m in metas if m}
            out.append(CollectionStats(name, len(metas), len(keys - {None}), (col.metadata or {}).get("embedder", "?")))
        return out

    def sources(self, collection: str) -> list[dict[str, Any]]:
        """One row per stored file: source, path, format, pages, chunks, file_hash (sorted by source)."""
        rows: dict[str, dict[str, Any]] = {}
        for m in _get_all(self._collection(collection), include=["metadatas"])["metadatas"]:
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
            got = col.get(where=where or None, where_document={"$contains": contains} if contains else None,
                          include=["documents", "metadatas"])
        except Exception as exc:
            raise KnowledgeBaseError(f"bad filter {where!r}: {exc}") from None
        docs = [Document(i, t or "", dict(m or {})) for i, t, m in zip(got["ids"], got["documents"], got["metadatas"],
                                                                     strict=True)]
        return sorted(docs, key=lambda d: d.id)

    # -- ingest ----------------------------------------------------------------------------------
    def ingest_files(self, paths: Sequence[str | Path], collection: str, chunk_size: int = DEFAULT_CHUNK_SIZE,
                     chunk_overlap: int = DEFAULT_CHUNK_OVERLAP, skip_errors: bool = False) -> IngestResult:
        """Load, chunk, embed and store files (folders are searched for supported files).

        A file whose content hash and chunking are already stored is left alone; a stored path with a
        new hash has its chunks replaced. With ``skip_errors`` unreadable files are listed in
        ``result.skipped`` instead of aborting the whole ingest.
        """
        check_sizes(chunk_size, chunk_overlap)
        result = IngestResult()
        start = time.perf_counter()
        files: list[SourceFile] = []
        for path in expand_paths(paths):
            try:
                files.append(load_file(path))
            except DocumentError as exc:
                if not skip_errors:
                    raise
                result.skipped.append(str(exc))
        existed = collection in self.collections()
        col = self._collection(collection, create=True)
        chunking = f"{chunk_size}/{chunk_overlap}"
        delete_ids: list[str] = []
        new_docs: list[Document] = []
        for f in files:
            old = col.get(where={"path": f.path}, include=["metadatas"])
            stored = {(m.get("file_hash"), m.get("chunking")) for m in old["metadatas"]}
            if stored == {(f.file_hash, chunking)}:
                result.unchanged += 1
                continue
            if old["ids"]:
                result.replaced += 1
                delete_ids.extend(old["ids"])
            else:
                result.added += 1
            new_docs.extend(Document(d.id, d.text, {**d.metadata, "chunking": chunking})
                            for d in chunk_file(f, chunk_size, chunk_overlap))
        result.load_seconds = time.perf_counter() - start
        self._write(col, delete_ids, new_docs, result, drop_if_empty=not existed)
        log.info("ingest into %s: %d added, %d replaced, %d unchanged files; %d chunks", collection, result.added,
                 result.replaced, result.unchanged, result.chunks)
        return result

    def ingest_documents(self, docs: Sequence[Document], collection: str,
                         list_fields: Sequence[str] = ()) -> IngestResult:
        """Store ready Documents (e.g. ATT&CK techniques) by id: new ids are added, ids whose content hash
        changed are replaced, the rest left alone. Each comma-separated string field named in ``list_fields``
        is also stored as a list ``<field>_list``, so ``where={"tactics_list": {"$contains": "persistence"}}``
        filters on one value."""
        ids = [d.id for d in docs]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise KnowledgeBaseError(f"duplicate document id {dup!r}; ids must be unique")
        if empty := [d.id for d in docs if not d.text.strip()]:
            raise KnowledgeBaseError(f"document {empty[0]!r} has no text")
        existed = collection in self.collections()
        col = self._collection(collection, create=True)
        result = IngestResult()
        stored: dict[str, str] = {}
        for batch in _batches(ids, self.write_batch):
            got = col.get(ids=batch, include=["metadatas"])
            stored.update({i: (m or {}).get("content_hash", "") for i, m in zip(got["ids"], got["metadatas"],
                                                                                strict=True)})
        new_docs, delete_ids = [], []
        for d in docs:
            meta = {**d.metadata, "content_hash": d.content_hash}
            for name in list_fields:
                values = [v.strip() for v in str(d.metadata.get(name, "")).split(",") if v.strip()]
                if values:
                    meta[f"{name}_list"] = values
            if d.id not in stored:
                result.added += 1
            elif stored[d.id] == d.content_hash:
                result.unchanged += 1
                continue
            else:
                result.replaced += 1
                delete_ids.append(d.id)
            new_docs.append(Document(d.id, d.text, meta))
        self._write(col, delete_ids, new_docs, result, drop_if_empty=not existed)
        return result

    def _write(self, col: Any, delete_ids: list[str], docs: list[Document], result: IngestResult,
               drop_if_empty: bool = False) -> None:
        """Embed ``docs``, then delete ``delete_ids`` and add ``docs``, undoing everything if a write fails
        (``drop_if_empty``: the collection was created for this ingest, so a failure removes it again)."""
        try:
            self._embed_and_apply(col, delete_ids, docs, result)
        except BaseException:
            if drop_if_empty and col.count() == 0:
                self.client.delete_collection(col.name)
            raise

    def _embed_and_apply(self, col: Any, delete_ids: list[str], docs: list[Document], result: IngestResult) -> None:
        start = time.perf_counter()
        vectors = self.embedder.embed([d.text for d in docs]) if docs else np.zeros((0, 0), np.float32)
        result.embed_seconds = time.perf_counter() - start
        start = time.perf_counter()
        backup = _get_records(col, delete_ids, self.write_batch)
        attempted: list[str] = []  # every id we tried to add; none existed before (see _rollback)
        deleted = False
        try:
            for batch in _batches(delete_ids, self.write_batch):
                col.delete(ids=batch)
                deleted = True
            for lo in range(0, len(docs), self.write_batch):
                part = docs[lo:lo + self.write_batch]
                attempted.extend(d.id for d in part)
                col.add(ids=[d.id for d in part], embeddings=vectors[lo:lo + len(part)],
                        documents=[d.text for d in part], metadatas=[d.metadata for d in part])
        except Exception as exc:
            self._rollback(col, attempted, backup if deleted else None)
            raise KnowledgeBaseError(f"writing to collection {col.name!r} failed ({type(exc).__name__}: {exc}); "
                                     "the collection was restored to its previous state") from exc
        result.chunks += len(docs)
        result.deleted_chunks += len(delete_ids)
        result.write_seconds = time.perf_counter() - start

    def _rollback(self, col: Any, attempted: list[str], backup: dict[str, Any] | None) -> None:
        # The ids we tried to add were all absent before this write (new files' ids derive from their
        # new path; replaced ids were deleted first), so removing them cannot remove older data.
        try:
            for batch in _batches(attempted, self.write_batch):
                col.delete(ids=batch)
            if backup and backup["ids"]:
                for lo in range(0, len(backup["ids"]), self.write_batch):
                    hi = lo + self.write_batch
                    col.add(ids=backup["ids"][lo:hi], embeddings=backup["embeddings"][lo:hi],
                            documents=backup["documents"][lo:hi], metadatas=backup["metadatas"][lo:hi])
        except Exception as exc:  # pragma: no cover - the store itself is failing
            raise KnowledgeBaseError(f"writing to collection {col.name!r} failed and so did restoring it ({exc}); "
                                     "re-ingest the files to repair it") from exc

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
            res = col.query(query_embeddings=vector, n_results=min(k, n), where=where or None,
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


def _get_all(col: Any, include: list[str]) -> dict[str, list[Any]]:
    """Everything in a collection, paged (Chroma caps one get)."""
    out: dict[str, list[Any]] = {"ids": [], **{k: [] for k in include}}
    offset, page = 0, 5000
    while True:
        got = col.get(include=include, limit=page, offset=offset)
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
