"""Retrievers that compose: dense (MiniLM + FAISS), reciprocal rank fusion, and re-ranking.

Every retriever speaks :class:`~mastery.retrieval.types.Retriever` (``search(query, k) -> list[Hit]``, best
first, 1-based ranks), so fusion and re-ranking wrap any first stage:
``RerankRetriever(HybridRetriever([dense, bm25]), scorer)``. :func:`compose` builds one of the four kinds the
project names (``dense``, ``bm25``, ``hybrid``, ``hybrid+rerank``) from a dense and a BM25 stage and a
:class:`SearchTuning`; the knowledge base and the in-memory ATT&CK index both build through it, so a kind
means the same pipeline wherever the documents live.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mastery.retrieval.types import RETRIEVAL_KINDS, Document, Hit, RetrievalError, Retriever, check_query

log = logging.getLogger(__name__)

RRF_K = 60  # Cormack et al. 2009: 1 / (60 + rank) damps the top ranks without ignoring the tail


@dataclass(frozen=True)
class SearchTuning:
    """How a kind is put together: each first stage's depth into fusion, and the re-ranker's depth and fusion.

    The defaults are the knowledge base's general-purpose settings (L19 measured them on PDFs and Markdown);
    :data:`ATTACK_TUNING` holds what L20 found best on ATT&CK techniques.
    """

    depth: int = 20  # each first stage's top-k fed to reciprocal rank fusion
    rrf_k: int = RRF_K
    heading_boost: int = 1  # BM25: the first line counted this many times (1 = plain BM25)
    id_weight: float = 1.0  # BM25: a technique ID in the query weighs this many words
    rerank_depth: int = 20  # fused candidates the re-ranker re-orders
    fuse_k: int | None = RRF_K  # re-ranker order fused with the first-stage order (None: re-ranker alone)


# L20's full run (docs/results/l20.json): headings x3 and IDs x3.0 lift BM25 to recall@1 1.0 on "What is
# T1234?" questions; fusion depth 50; the cross-encoder re-orders the hybrid top-20 and its order is fused
# with the hybrid order (recall@3 0.762 vs 0.646 for the cross-encoder's order alone).
ATTACK_TUNING = SearchTuning(depth=50, heading_boost=3, id_weight=3.0, rerank_depth=20, fuse_k=RRF_K)


@runtime_checkable
class Scorer(Protocol):
    """Scores (query, passage) pairs; higher = more relevant. Returns an (N,) array for N texts."""

    name: str

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray: ...


def _hit(doc: Document, score: float, rank: int, **extra: Any) -> Hit:
    return Hit(id=doc.id, text=doc.text, score=score, rank=rank, metadata={**doc.metadata, **extra})


# -- dense -----------------------------------------------------------------------------------
def embed_documents(model: Any, documents: Sequence[Document], batch_size: int = 32,
                    cache_dir: Path | None = None, model_name: str = "all-minilm-l6-v2") -> np.ndarray:
    """(N, dim) normalised document embeddings; with ``cache_dir``, cached as .npy keyed by model, max length
    and content (:func:`mastery.text.embed.cached_encode`)."""
    from mastery.text.embed import cached_encode, encode_texts

    texts = [d.text for d in documents]
    if cache_dir is None:
        return encode_texts(model, texts, batch_size)
    emb, _ = cached_encode(texts, model_name, model.max_seq_length, load_model=lambda: model,
                           batch_size=batch_size, folder=cache_dir)
    return emb


class DenseRetriever:
    """Exact inner-product search (``faiss.IndexFlatIP``) over normalised sentence embeddings = cosine."""

    name = "vector"

    def __init__(self, documents: Sequence[Document], model: Any, embeddings: np.ndarray | None = None,
                 batch_size: int = 32) -> None:
        import faiss

        if not documents:
            raise RetrievalError("the dense retriever needs at least one document")
        self.documents = list(documents)
        self.model = model
        emb = embed_documents(model, self.documents, batch_size) if embeddings is None else embeddings
        emb = np.ascontiguousarray(emb, dtype=np.float32)  # (N, dim)
        if emb.shape[0] != len(self.documents):
            raise RetrievalError(f"{emb.shape[0]} embeddings for {len(self.documents)} documents")
        self.index = faiss.IndexFlatIP(emb.shape[1])
        self.index.add(emb)

    def encode(self, queries: Sequence[str]) -> np.ndarray:
        from mastery.text.embed import encode_texts

        return encode_texts(self.model, queries)  # (Q, dim)

    def search(self, query: str, k: int = 10) -> list[Hit]:
        check_query(query, k)
        scores, ids = self.index.search(self.encode([query]), min(k, len(self.documents)))  # (1, k) each
        return [_hit(self.documents[i], float(s), rank, similarity=float(s))
                for rank, (s, i) in enumerate(zip(scores[0], ids[0], strict=True), start=1) if i >= 0]


# -- fusion ------------------------------------------------------------------------------------
def reciprocal_rank_fusion(rankings: Sequence[Sequence[Hit]], k: int = RRF_K,
                           limit: int | None = None) -> list[Hit]:
    """Fuse ranked lists: score(d) = sum over lists of 1 / (k + rank of d in that list).

    Only ranks matter, so BM25 scores (unbounded) and cosines (-1..1) need no normalising. Ties are
    broken by the best single rank, then by id, so the fused order is deterministic.
    """
    if k < 0:
        raise RetrievalError(f"the RRF constant k must be >= 0, got {k}")
    fused: dict[str, float] = {}
    best_rank: dict[str, int] = {}
    first: dict[str, Hit] = {}
    for hits in rankings:
        for hit in hits:
            fused[hit.id] = fused.get(hit.id, 0.0) + 1.0 / (k + hit.rank)
            best_rank[hit.id] = min(best_rank.get(hit.id, hit.rank), hit.rank)
            first.setdefault(hit.id, hit)
    order = sorted(fused, key=lambda i: (-fused[i], best_rank[i], i))[:limit]
    return [Hit(id=i, text=first[i].text, score=fused[i], rank=r, metadata=dict(first[i].metadata))
            for r, i in enumerate(order, start=1)]


class HybridRetriever:
    """Reciprocal rank fusion of several retrievers, each asked for its top ``depth``."""

    def __init__(self, retrievers: Sequence[Retriever], depth: int = 50, rrf_k: int = RRF_K,
                 name: str = "hybrid") -> None:
        if not retrievers:
            raise RetrievalError("hybrid search needs at least one retriever")
        if depth < 1:
            raise RetrievalError(f"depth must be >= 1, got {depth}")
        self.retrievers, self.depth, self.rrf_k, self.name = list(retrievers), depth, rrf_k, name

    def search(self, query: str, k: int = 10) -> list[Hit]:
        check_query(query, k)
        rankings = [r.search(query, max(k, self.depth)) for r in self.retrievers]
        return reciprocal_rank_fusion(rankings, self.rrf_k, limit=k)


def technique_search(documents: Sequence[Document], model: Any = None, cache_dir: Path | None = None,
                     tuning: SearchTuning = ATTACK_TUNING, scorer: Scorer | None = None) -> Retriever:
    """An in-memory search over ATT&CK-style documents as tuned in L20 (:data:`ATTACK_TUNING`): BM25 with headings
    counted 3 times and exact technique IDs weighted 3.0 (an ID or a technique name in the query should win over
    one incidental word in a long description), fused by RRF with MiniLM cosine search when ``model`` is given
    (embeddings cached under ``cache_dir`` when given), re-ranked by ``scorer`` when given."""
    from mastery.retrieval.bm25 import BM25Retriever

    bm25 = BM25Retriever(documents, heading_boost=tuning.heading_boost, id_weight=tuning.id_weight)
    dense = None
    if model is not None:
        dense = DenseRetriever(documents, model, embed_documents(model, documents, cache_dir=cache_dir))
    kind = "hybrid+rerank" if scorer is not None else "hybrid" if dense is not None else "bm25"
    return compose(kind, dense=dense, bm25=bm25, tuning=tuning, scorer=scorer)


def compose(kind: str, *, dense: Retriever | None = None, bm25: Retriever | None = None,
            tuning: SearchTuning = SearchTuning(), scorer: Scorer | None = None) -> Retriever:
    """One of :data:`RETRIEVAL_KINDS` from its stages.

    ``dense`` / ``bm25``: that stage alone. ``hybrid``: both fused by RRF (dense first, so a fused hit keeps
    the dense stage's ``similarity``); with one stage missing it is that stage. ``hybrid+rerank``: the hybrid's
    top ``tuning.rerank_depth`` re-ordered by ``scorer`` and, with ``tuning.fuse_k``, fused with the hybrid order.
    """
    if kind not in RETRIEVAL_KINDS:
        raise RetrievalError(f"unknown retrieval kind {kind!r}; choose one of {', '.join(RETRIEVAL_KINDS)}")
    if kind in ("dense", "bm25"):
        stage = dense if kind == "dense" else bm25
        if stage is None:
            raise RetrievalError(f"no {kind} stage to search with")
        return stage
    stages = [r for r in (dense, bm25) if r is not None]
    first: Retriever = HybridRetriever(stages, depth=tuning.depth, rrf_k=tuning.rrf_k)
    if kind == "hybrid":
        return first
    if scorer is None:
        raise RetrievalError("hybrid+rerank needs a re-ranker and none was given or found; train and register "
                             "one ('mastery labs run l20 --preset full') or use kind hybrid")
    return RerankRetriever(first, scorer, depth=tuning.rerank_depth, fuse_k=tuning.fuse_k, name="hybrid+rerank")


# -- re-ranking --------------------------------------------------------------------------------
class RerankRetriever:
    """Take a first stage's top ``depth`` candidates and re-order them by a (slower, better) scorer.

    ``fuse_k``: None re-orders by the scorer alone; an int fuses the scorer's order with the first
    stage's order by reciprocal rank fusion (see :func:`fuse_with_first_stage`), which keeps a noisy
    re-ranker from throwing away what the first stage got right.
    """

    def __init__(self, first_stage: Retriever, scorer: Scorer, depth: int = 20, name: str | None = None,
                 fuse_k: int | None = None) -> None:
        if depth < 1:
            raise RetrievalError(f"depth must be >= 1, got {depth}")
        if fuse_k is not None and fuse_k < 0:
            raise RetrievalError(f"the fusion constant must be >= 0, got {fuse_k}")
        self.first_stage, self.scorer, self.depth, self.fuse_k = first_stage, scorer, depth, fuse_k
        self.name = name or f"rerank-{scorer.name}"

    def search(self, query: str, k: int = 10) -> list[Hit]:
        check_query(query, k)
        candidates = self.first_stage.search(query, max(k, self.depth))
        # Only the top ``depth`` are re-scored; any deeper hits keep the first stage's order behind them.
        head = self.rerank(query, candidates[: self.depth])
        if self.fuse_k is not None:
            head = fuse_with_first_stage(head, self.fuse_k)
        tail = [Hit(id=h.id, text=h.text, score=h.score, rank=len(head) + i, metadata={**h.metadata,
                    "first_stage_rank": h.rank}) for i, h in enumerate(candidates[self.depth:], start=1)]
        return (head + tail)[:k]

    def rerank(self, query: str, candidates: Sequence[Hit]) -> list[Hit]:
        if not candidates:
            return []
        scores = np.asarray(self.scorer.score(query, [h.text for h in candidates]), dtype=np.float64)  # (N,)
        # Sort by score; equal scores keep the first stage's order (stable), so a tie never shuffles.
        order = np.argsort(-scores, kind="stable")
        return [Hit(id=candidates[i].id, text=candidates[i].text, score=float(scores[i]), rank=r,
                    metadata={**candidates[i].metadata, "first_stage_rank": candidates[i].rank})
                for r, i in enumerate(order, start=1)]


def fuse_with_first_stage(reranked: Sequence[Hit], k: int = RRF_K) -> list[Hit]:
    """RRF of a re-ranked list with the first stage's order (each hit's ``first_stage_rank`` metadata).

    score = 1 / (k + re-ranker rank) + 1 / (k + first-stage rank); ties go to the better re-ranker rank.
    """
    fused = [(1.0 / (k + h.rank) + 1.0 / (k + int(h.metadata.get("first_stage_rank", h.rank))), h.rank, h)
             for h in reranked]
    fused.sort(key=lambda t: (-t[0], t[1]))
    return [Hit(id=h.id, text=h.text, score=score, rank=r, metadata={**h.metadata, "rerank_rank": h.rank})
            for r, (score, _, h) in enumerate(fused, start=1)]
