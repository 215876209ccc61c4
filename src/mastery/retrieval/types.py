"""The retrieval contract: a Document to index, a Hit it returns, and the Retriever that returns them.

Every search in the project speaks one protocol::

    class Retriever(Protocol):
        name: str                                         # "dense", "bm25", "hybrid", "hybrid+rerank", ...
        def search(self, query: str, k: int = 10) -> list[Hit]: ...

- ``search`` returns at most ``k`` hits, best first, with 1-based ``rank`` and a ``score`` where higher is
  better (its scale depends on the retriever: a cosine, a BM25 score, a fused RRF score, a re-ranker logit).
- A bad query or ``k`` raises :class:`RetrievalError` (a MasteryError: the CLI prints one line) through
  :func:`check_query`, the one input check every retriever shares.
- A hit's ``metadata`` is the document's own (source, page, technique_id, ...) plus what a stage adds:
  ``similarity`` (the cosine a dense stage measured), ``first_stage_rank`` and ``rerank_rank`` (re-ranking).

Because the contract is this small, retrievers compose: fusion and re-ranking wrap any first stage
(:mod:`mastery.retrieval.hybrid`), the knowledge base hands out retrievers by kind
(:meth:`mastery.retrieval.kb.KnowledgeBase.retriever`), RAG takes one (:func:`mastery.llm.rag.ask`), and the
ATT&CK search that agents call is one (:func:`mastery.retrieval.attack.open_attack_search`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from mastery.core.errors import MasteryError

# Chroma (and most vector stores) accept only these metadata value types.
MetadataValue = str | int | float | bool
# The kinds of retriever the knowledge base hands out (see mastery.retrieval.hybrid.compose).
RETRIEVAL_KINDS = ("dense", "bm25", "hybrid", "hybrid+rerank")


class RetrievalError(MasteryError):
    """A retriever was given bad input: an empty query, no documents, or k < 1."""


@dataclass(frozen=True)
class Document:
    """A unit of text to index: a chunk of a file, or one ATT&CK technique.

    ``id`` is stable across runs (a re-ingest of the same content yields the same ids);
    ``metadata`` holds flat values only (source, page, chunk, content_hash, technique_id, ...).
    """

    id: str
    text: str
    metadata: dict[str, MetadataValue] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        return content_hash(self.text)


@dataclass(frozen=True)
class Hit:
    """One retrieved document with its score (higher is better) and 1-based rank."""

    id: str
    text: str
    score: float
    rank: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def citation(self) -> str:
        """How an answer cites this hit: the technique ID, or [source p.N], or the source."""
        meta = self.metadata
        if meta.get("technique_id"):
            return str(meta["technique_id"])
        source = str(meta.get("source", self.id))
        return f"{source} p.{meta['page']}" if meta.get("page") else source


@runtime_checkable
class Retriever(Protocol):
    """Anything that answers ``search(query, k)`` with hits, best first (see the module docstring)."""

    name: str

    def search(self, query: str, k: int = 10) -> list[Hit]: ...


def check_query(query: str, k: int) -> None:
    """The shared input contract of every retriever's ``search``."""
    if not isinstance(query, str) or not query.strip():
        raise RetrievalError("the query is empty; ask a question or give some keywords")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise RetrievalError(f"k must be a positive integer, got {k!r}")


def content_hash(text: str) -> str:
    """sha256 of the UTF-8 text: equal content, equal hash, whatever the file is called."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
