"""Writing to the knowledge base so that a crash at any point loses nothing and shows nothing half-done.

The problem: Chroma makes each write call atomic, but an ingest is many calls (one per batch of chunks,
plus deleting a changed file's old chunks). A ``kill -9`` between them used to leave a file with 1,000 of
its 3,014 chunks, and the next ingest called it "unchanged" because it compared only the hash.

The design: a **manifest** in the collection's own metadata, replaced in one atomic call, says which version
of each file is *committed*; chunks are written first, hidden, and become visible only when the manifest
names them. Chroma's ``collection.modify(metadata=...)`` replaces the whole metadata in one transaction, in the
embedded store and on a server alike, so the manifest needs no second file and no lock beside the store.

- A file's **version** is a hash of (path, content hash, chunking). Every chunk carries it in its metadata and
  in its id (``<path key>:<page>:<chunk>:<version>``), so ids are deterministic: an interrupted ingest's chunks
  are found again, not duplicated, and two versions of one file can sit side by side until the swap.
- The manifest holds one entry per file (``kb:file:<path key>`` -> version, hash, chunking, chunk count) and
  ``kb:hidden``: versions whose chunks readers must skip. Every read (query, retriever, documents, count,
  stats) adds ``version $nin hidden``; when nothing is hidden (the normal state) reads carry no extra filter.
- One ingest: (1) read, size-check and chunk every file; nothing is written if any fails. (2) **intent**: add
  the new versions to ``hidden``. (3) embed and ``add`` the chunks in batches, skipping ids already stored by
  an interrupted run (it resumes instead of re-embedding). (4) **commit**, one atomic metadata write: the new
  entries, the new versions un-hidden, the replaced versions hidden. (5) delete every hidden version's chunks.
  (6) empty ``hidden``.
- "Unchanged" means the manifest entry has the same version AND the store holds exactly its chunk count;
  anything else (chunks lost, chunks from before manifests existed) is rewritten and reported as repaired.
- A collection made by an ingest is marked ``kb:new`` until its first commit; :meth:`collections` and
  readers treat it as absent, so a first ingest killed early leaves no visible collection.

What a ``kill -9`` leaves, by the step it lands in (visible = what every read returns):

- before (2): nothing written. During (2)-(3): hidden chunks only; visible state = before the ingest.
- after (4): visible state = after the ingest; old chunks linger hidden until deleted.
- The next ingest deletes every hidden version it does not itself commit, re-uses an interrupted run's
  chunks of the same version, and reports it (``interrupted``, ``resumed_chunks``, ``cleaned_chunks``).

A query running *during* an ingest sees the state before it until the commit, then the state after it; one
whose manifest read falls just before the commit and whose search falls after step 5 may miss the replaced
files for that one query. Ingests into one folder take turns (an ``flock`` on ``<folder>/mastery-ingest.lock``,
released by the kernel when a process dies); ingests into one *server* collection at once are not supported:
the manifest is read-modify-write, so the later commit drops the earlier one's entries and those chunks show
until their files are ingested again (the next ingest of a file removes every version it does not commit).
An embedded store (a folder) belongs to one process at a time: Chroma keeps its
vector index in memory, so a process that had the folder open does not see another process's writes in its
searches (use a ``chroma run`` server for that). Ready documents (:func:`ingest_documents`) are written with
``upsert``: each document is replaced atomically, but an ingest cut short leaves some documents new and some
old until it is rerun.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mastery.core.progress import NullProgress, Progress
from mastery.retrieval.chunking import check_sizes, chunk_file, chunking_label, source_key
from mastery.retrieval.documents import DocumentError, SourceFile, expand_paths, load_file
from mastery.retrieval.kb import (
    FILE_PREFIX,
    HIDDEN_KEY,
    NEW_KEY,
    VERSION_FIELD,
    KnowledgeBaseError,
    _batches,
    _get_records,
)
from mastery.retrieval.types import Document

if TYPE_CHECKING:
    from mastery.retrieval.kb import KnowledgeBase

log = logging.getLogger(__name__)
EMBED_STEP = 64  # chunks embedded and written per batch: bounded memory, and a progress step every few seconds on a CPU


@dataclass
class IngestResult:
    """What an ingest did. For files the counts are files; for ``ingest_documents`` they are documents."""

    added: int = 0  # new files (documents)
    replaced: int = 0  # files whose content or chunking changed: old chunks replaced
    unchanged: int = 0  # committed with the same version and every chunk present: nothing written
    repaired: int = 0  # same version committed but chunks missing (or stored before manifests): rewritten
    chunks: int = 0  # chunks (documents) written by this ingest
    deleted_chunks: int = 0  # old chunks removed by replacements
    interrupted: bool = False  # an earlier ingest into this collection stopped before finishing
    resumed_chunks: int = 0  # chunks an interrupted ingest had written that this one kept
    cleaned_chunks: int = 0  # chunks an interrupted ingest left that were removed
    skipped: list[str] = field(default_factory=list)  # "file: reason" (only with skip_errors=True)
    load_seconds: float = 0.0
    embed_seconds: float = 0.0
    write_seconds: float = 0.0


@dataclass
class _Manifest:
    """The collection's metadata, parsed: its own keys, the committed files and the hidden versions."""

    base: dict[str, Any]
    files: dict[str, dict[str, Any]]
    hidden: set[str]
    new: bool

    @classmethod
    def read(cls, metadata: dict[str, Any] | None) -> _Manifest:
        meta = dict(metadata or {})
        files = {k[len(FILE_PREFIX):]: json.loads(v) for k, v in meta.items() if k.startswith(FILE_PREFIX)}
        base = {k: v for k, v in meta.items() if not k.startswith("kb:")}
        return cls(base, files, set(json.loads(meta.get(HIDDEN_KEY, "[]"))), bool(meta.get(NEW_KEY, False)))

    def save(self, col: Any) -> None:
        meta: dict[str, Any] = {**self.base, **{FILE_PREFIX + k: json.dumps(v, sort_keys=True)
                                                for k, v in sorted(self.files.items())}}
        if self.hidden:
            meta[HIDDEN_KEY] = json.dumps(sorted(self.hidden))
        if self.new:
            meta[NEW_KEY] = True
        col.modify(metadata=meta)  # one atomic replace of the whole metadata: this is the commit


@dataclass
class _Plan:
    """One file to write: its chunks (stored ids), its version and the versions of it to retire."""

    file: SourceFile
    version: str
    docs: list[Document]
    old_versions: set[str]
    status: str  # added, replaced or repaired


def file_version(path: str, file_hash: str, chunking: str) -> str:
    """16 hex digits naming one version of one file: its path, its bytes and how it was chunked."""
    return hashlib.sha256(f"{path}\0{file_hash}\0{chunking}".encode()).hexdigest()[:16]


def max_file_bytes(max_file_mb: float | None = None) -> int:
    """The size cap in bytes: ``max_file_mb`` when given, else ``MASTERY_KB_MAX_FILE_MB``."""
    if max_file_mb is None:
        from mastery.core.settings import get_settings

        max_file_mb = get_settings().kb_max_file_mb
    if not (max_file_mb > 0 and math.isfinite(max_file_mb)):
        raise KnowledgeBaseError(f"the file size limit must be > 0 MB, got {max_file_mb}")
    return int(max_file_mb * 1_000_000)


def check_file_size(path: Path, limit: int) -> None:
    size = path.stat().st_size
    if size > limit:
        raise DocumentError(f"{path}: {size / 1e6:.1f} MB is over the knowledge-base limit of {limit / 1e6:g} MB "
                            "per file (raise MASTERY_KB_MAX_FILE_MB or --max-file-mb, or split the file)")


def ingest_files(kb: KnowledgeBase, paths: Sequence[str | Path], collection: str, chunk_size: int,
                 chunk_overlap: int, skip_errors: bool = False, max_file_mb: float | None = None,
                 progress: Progress | None = None) -> IngestResult:
    """See :meth:`mastery.retrieval.kb.KnowledgeBase.ingest_files` and the module docstring."""
    check_sizes(chunk_size, chunk_overlap)
    limit = max_file_bytes(max_file_mb)
    progress = progress or NullProgress()
    result = IngestResult()
    start = time.perf_counter()
    files: list[SourceFile] = []
    for path in expand_paths(paths):
        try:
            check_file_size(path, limit)  # before reading: a huge file is never loaded
            files.append(load_file(path))
        except DocumentError as exc:
            if not skip_errors:
                raise
            result.skipped.append(str(exc))
    with _ingest_lock(kb):
        return _ingest_loaded(kb, files, collection, chunk_size, chunk_overlap, result, start, progress)


@contextlib.contextmanager
def _ingest_lock(kb: KnowledgeBase) -> Iterator[None]:
    """One ingest at a time per store folder (a server store has no folder here: no lock)."""
    folder = Path(kb.location)
    if kb.location.startswith(("http://", "https://")) or not folder.is_dir():
        yield
        return
    with open(folder / "mastery-ingest.lock", "a+b") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another ingest into %s to finish", folder)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _ingest_loaded(kb: KnowledgeBase, files: list[SourceFile], collection: str, chunk_size: int,
                   chunk_overlap: int, result: IngestResult, start: float, progress: Progress) -> IngestResult:
    col = kb._collection(collection, create=True)
    manifest = _Manifest.read(col.metadata)
    original = copy.deepcopy(manifest)  # what an error puts back
    leftovers = set(manifest.hidden)  # versions an interrupted ingest left behind
    result.interrupted = bool(leftovers)
    plans = _plan(col, manifest, files, chunking_label(chunk_size, chunk_overlap), chunk_size, chunk_overlap, result)
    result.load_seconds = time.perf_counter() - start
    if not plans and not leftovers and not manifest.new:
        return _done(result, collection)  # nothing to write, nothing to repair: not one write call

    committed = {e["version"] for e in manifest.files.values()}
    writing = {p.version for p in plans} - committed  # a repair rewrites a committed version in place
    try:
        if writing - manifest.hidden:
            manifest.hidden |= writing
            manifest.save(col)
        kb.checkpoint("intent")
        _write_chunks(kb, col, plans, collection, leftovers, result, progress)
        for p in plans:
            manifest.files[source_key(p.file.path)] = {
                "version": p.version, "path": p.file.path, "source": p.file.source, "file_hash": p.file.file_hash,
                "chunking": chunking_label(chunk_size, chunk_overlap), "chunks": len(p.docs)}
        retired = set().union(*(p.old_versions for p in plans)) if plans else set()
        manifest.hidden = (manifest.hidden - writing) | retired
        manifest.new = False
        manifest.save(col)
    except Exception as exc:
        _abandon(kb, col, original, writing - leftovers)
        raise KnowledgeBaseError(f"writing to collection {col.name!r} failed ({type(exc).__name__}: {exc}); "
                                 "the collection was restored to its previous state") from exc
    kb.checkpoint("commit")
    _cleanup(kb, col, manifest, leftovers, result)
    return _done(result, collection)


def _done(result: IngestResult, collection: str) -> IngestResult:
    log.info("ingest into %s: %d added, %d replaced, %d repaired, %d unchanged files; %d chunks written%s",
             collection, result.added, result.replaced, result.repaired, result.unchanged, result.chunks,
             " (finished an interrupted ingest)" if result.interrupted else "")
    return result


def _plan(col: Any, manifest: _Manifest, files: list[SourceFile], chunking: str, chunk_size: int,
          chunk_overlap: int, result: IngestResult) -> list[_Plan]:
    plans = []
    for f in files:
        version = file_version(f.path, f.file_hash, chunking)
        entry = manifest.files.get(source_key(f.path))
        if entry and entry["version"] == version:
            stored = len(col.get(where={VERSION_FIELD: version}, include=[])["ids"])
            if stored == entry["chunks"]:
                result.unchanged += 1
                continue
            log.warning("%s: %d of %d chunks stored; rewriting them", f.source, stored, entry["chunks"])
        old = _stray_versions(col, f.path, version)
        status = ("repaired" if entry and entry["version"] == version else
                  "replaced" if entry or old else "added")
        setattr(result, status, getattr(result, status) + 1)
        docs = [Document(f"{d.id}:{version}", d.text, {**d.metadata, "chunking": chunking, VERSION_FIELD: version})
                for d in chunk_file(f, chunk_size, chunk_overlap)]
        if entry and entry["version"] != version:
            old.add(entry["version"])
        plans.append(_Plan(f, version, docs, old, status))
    return plans


def _stray_versions(col: Any, path: str, version: str) -> set[str]:
    """Versions of ``path`` in the store other than ``version``. Chunks stored before manifests existed carry
    none: they are stamped ``legacy-<key>`` here (a metadata-only update that changes no read), so the commit
    can hide them and the clean-up remove them like any replaced version."""
    got = col.get(where={"path": path}, include=["metadatas"])
    versions = {(m or {}).get(VERSION_FIELD) for m in got["metadatas"]}
    legacy = [(i, m) for i, m in zip(got["ids"], got["metadatas"], strict=True) if not (m or {}).get(VERSION_FIELD)]
    if legacy:
        tag = f"legacy-{source_key(path)}"
        for part in _batches(legacy, 1000):
            col.update(ids=[i for i, _ in part], metadatas=[{**(m or {}), VERSION_FIELD: tag} for _, m in part])
        versions.add(tag)
    return {v for v in versions if v and v != version}


def _write_chunks(kb: KnowledgeBase, col: Any, plans: list[_Plan], collection: str, leftovers: set[str],
                  result: IngestResult, progress: Progress) -> None:
    """Add every chunk not yet stored (deterministic ids: an interrupted run's chunks are kept), in batches."""
    todo: list[Document] = []
    for p in plans:
        present: set[str] = set()
        for part in _batches([d.id for d in p.docs], 1000):
            present.update(col.get(ids=list(part), include=[])["ids"])
        if p.version in leftovers:
            result.resumed_chunks += len(present)
        todo.extend(d for d in p.docs if d.id not in present)
    step = max(1, min(kb.write_batch, EMBED_STEP))
    progress.stage(f"embed {collection}", total=len(todo))
    for n, lo in enumerate(range(0, len(todo), step), start=1):
        part = todo[lo:lo + step]
        start = time.perf_counter()
        vectors = kb.embedder.embed([d.text for d in part])  # (len(part), dim)
        result.embed_seconds += time.perf_counter() - start
        start = time.perf_counter()
        col.add(ids=[d.id for d in part], embeddings=np.asarray(vectors, np.float32),
                documents=[d.text for d in part], metadatas=[d.metadata for d in part])
        result.write_seconds += time.perf_counter() - start
        result.chunks += len(part)
        progress.step(len(part))
        log.debug("%s: %d/%d chunks embedded and stored", collection, lo + len(part), len(todo))
        kb.checkpoint(f"batch {n}")


def _abandon(kb: KnowledgeBase, col: Any, original: _Manifest, ours: set[str]) -> None:
    """A write raised (the store is up): remove the versions this run started and put the manifest back."""
    try:
        if original.new:
            kb.client.delete_collection(col.name)  # never committed, so never visible: gone again
            return
        for version in sorted(ours):
            col.delete(where={VERSION_FIELD: version})
        original.save(col)
    except Exception as exc:  # pragma: no cover - the store itself is failing
        raise KnowledgeBaseError(f"writing to collection {col.name!r} failed and so did undoing it ({exc}); "
                                 "its reads are unaffected and the next ingest removes the rest") from exc


def _cleanup(kb: KnowledgeBase, col: Any, manifest: _Manifest, leftovers: set[str], result: IngestResult) -> None:
    """Delete every hidden version's chunks, then empty ``hidden`` (readers skip them meanwhile)."""
    try:
        for version in sorted(manifest.hidden):
            n = len(col.get(where={VERSION_FIELD: version}, include=[])["ids"])
            col.delete(where={VERSION_FIELD: version})
            if version in leftovers:
                result.cleaned_chunks += n
            else:
                result.deleted_chunks += n
        kb.checkpoint("cleanup")
        if manifest.hidden:
            manifest.hidden = set()
            manifest.save(col)
    except Exception as exc:
        raise KnowledgeBaseError(f"the ingest into {col.name!r} is committed but removing old chunks failed ({exc}); "
                                 "reads already skip them and the next ingest removes them") from exc


# -- ready documents -------------------------------------------------------------------------------
def ingest_documents(kb: KnowledgeBase, docs: Sequence[Document], collection: str,
                     list_fields: Sequence[str] = ()) -> IngestResult:
    """See :meth:`mastery.retrieval.kb.KnowledgeBase.ingest_documents`."""
    ids = [d.id for d in docs]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise KnowledgeBaseError(f"duplicate document id {dup!r}; ids must be unique")
    if empty := [d.id for d in docs if not d.text.strip()]:
        raise KnowledgeBaseError(f"document {empty[0]!r} has no text")
    col = kb._collection(collection, create=True)
    manifest = _Manifest.read(col.metadata)
    result = IngestResult()
    stored: dict[str, str] = {}
    for batch in _batches(ids, kb.write_batch):
        got = col.get(ids=list(batch), include=["metadatas"])
        stored.update({i: (m or {}).get("content_hash", "") for i, m in zip(got["ids"], got["metadatas"],
                                                                            strict=True)})
    new_docs, replaced = [], []
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
            replaced.append(d.id)
        new_docs.append(Document(d.id, d.text, meta))
    _upsert_documents(kb, col, manifest, new_docs, replaced, result)
    return result


def _upsert_documents(kb: KnowledgeBase, col: Any, manifest: _Manifest, docs: list[Document],
                      replaced: list[str], result: IngestResult) -> None:
    """Upsert in batches (each document replaced atomically); on an error put the replaced ones back."""
    start = time.perf_counter()
    vectors = kb.embedder.embed([d.text for d in docs]) if docs else np.zeros((0, 0), np.float32)  # (N, dim)
    result.embed_seconds = time.perf_counter() - start
    start = time.perf_counter()
    backup = _get_records(col, replaced, kb.write_batch)
    attempted: list[str] = []
    try:
        for lo in range(0, len(docs), kb.write_batch):
            part = docs[lo:lo + kb.write_batch]
            attempted.extend(d.id for d in part)
            col.upsert(ids=[d.id for d in part], embeddings=vectors[lo:lo + len(part)],
                       documents=[d.text for d in part], metadatas=[d.metadata for d in part])
        if manifest.new:
            manifest.new = False
            manifest.save(col)
    except Exception as exc:
        _restore_documents(kb, col, manifest, attempted, backup)
        raise KnowledgeBaseError(f"writing to collection {col.name!r} failed ({type(exc).__name__}: {exc}); "
                                 "the collection was restored to its previous state") from exc
    result.chunks += len(docs)
    result.deleted_chunks += len(replaced)
    result.write_seconds = time.perf_counter() - start


def _restore_documents(kb: KnowledgeBase, col: Any, manifest: _Manifest, attempted: list[str],
                       backup: dict[str, Any]) -> None:
    try:
        if manifest.new:
            kb.client.delete_collection(col.name)
            return
        keep = set(backup["ids"])
        for part in _batches([i for i in attempted if i not in keep], kb.write_batch):
            col.delete(ids=list(part))
        for lo in range(0, len(backup["ids"]), kb.write_batch):
            hi = lo + kb.write_batch
            col.upsert(ids=backup["ids"][lo:hi], embeddings=backup["embeddings"][lo:hi],
                       documents=backup["documents"][lo:hi], metadatas=backup["metadatas"][lo:hi])
    except Exception as exc:  # pragma: no cover - the store itself is failing
        raise KnowledgeBaseError(f"writing to collection {col.name!r} failed and so did restoring it ({exc}); "
                                 "re-ingest the documents to repair it") from exc

