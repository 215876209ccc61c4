"""BM25 keyword search over Documents with the ``bm25s`` package.

The tokeniser matters more than the scoring formula here: ATT&CK questions often name a
technique by its ID ("T1055.004"), which a generic tokeniser splits into "t1055" and "004" and
so matches every sub-technique of T1055. IDs are kept as one token, everything else is
lower-cased alphanumeric words minus English stop words, with light plural stripping so that
"credentials" matches "credential".

An ID in a query is also weighted (``id_weight``): it names exactly one technique, yet BM25 scores it
like any rare word, so filler such as "How do attackers carry out T1112?" let two generic words
("carry", "out") outscore the one identifier and put another technique first.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import numpy as np

from mastery.retrieval.types import Document, Hit, RetrievalError, check_query

__all__ = ["BM25Retriever", "RetrievalError", "check_query", "tokenize"]  # the error and check live in types

log = logging.getLogger(__name__)

# An ATT&CK technique ID (T1055, T1055.004) or a plain alphanumeric word.
_TOKEN = re.compile(r"t\d{4}(?:\.\d{3})?(?![\d.]*\d)|[a-z0-9]+")
_STOPWORDS_TEXT = (
    "a an and are as at be but by for from has have how i if in into is it its may of on or such that the "
    "their them then there these they this to was were what when where which who why will with would can "
    "do does did you your we our use used using via also other than"
)
_STOPWORDS = frozenset(_STOPWORDS_TEXT.split())
_ID = re.compile(r"t\d{4}(?:\.\d{3})?")


def _stem(word: str) -> str:
    """Light plural stripping: 'credentials' -> 'credential', 'policies' -> 'policy' (not a full stemmer)."""
    if len(word) <= 4 or not word.isalpha():  # short words, numbers and technique IDs stay as they are
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith("sses"):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens, technique IDs kept whole, stop words dropped."""
    return [_stem(t) for t in _TOKEN.findall(text.lower()) if t not in _STOPWORDS]


class BM25Retriever:
    """Okapi BM25 (Lucene variant, k1=1.5, b=0.75) over a fixed list of Documents.

    ``heading_boost`` repeats each document's first line (for ATT&CK: "T1055.004 Process Injection:
    Asynchronous Procedure Call") that many times, a poor man's BM25F field weight: a single ID
    token in a 300-word description otherwise loses to two common words that repeat.
    """

    name = "bm25"

    def __init__(self, documents: Sequence[Document], k1: float = 1.5, b: float = 0.75,
                 heading_boost: int = 1, id_weight: float = 1.0) -> None:
        import bm25s

        if not documents:
            raise RetrievalError("BM25 needs at least one document to index")
        if heading_boost < 1:
            raise RetrievalError(f"heading_boost must be >= 1, got {heading_boost}")
        if id_weight < 1.0:
            raise RetrievalError(f"id_weight must be >= 1, got {id_weight}")
        self.id_weight = id_weight
        self.documents = list(documents)
        tokens = [tokenize(d.text.split("\n", 1)[0]) * (heading_boost - 1) + tokenize(d.text) for d in self.documents]
        self._index = bm25s.BM25(k1=k1, b=b)
        self._index.index(tokens, show_progress=False)
        self._vocab = set(self._index.vocab_dict)
        log.info("BM25 index: %d documents, %d terms", len(self.documents), len(self._vocab))

    def scores(self, query: str) -> np.ndarray:
        """(N,) BM25 score of every document for the query; zeros when no query term is indexed."""
        terms = [t for t in tokenize(query) if t in self._vocab]
        if not terms:
            return np.zeros(len(self.documents), dtype=np.float32)
        ids = [t for t in terms if _ID.fullmatch(t)]
        words = [t for t in terms if not _ID.fullmatch(t)]
        # Score = BM25(words) + id_weight * BM25(IDs): an exact identifier outranks incidental word matches.
        scores = np.zeros(len(self.documents), dtype=np.float64)
        if words:
            scores += self._index.get_scores(words)
        if ids:
            scores += self.id_weight * np.asarray(self._index.get_scores(ids), dtype=np.float64)
        return scores.astype(np.float32)

    def search(self, query: str, k: int = 10) -> list[Hit]:
        check_query(query, k)
        scores = self.scores(query)
        # Stable sort: equal scores keep corpus order, so results are deterministic.
        order = np.argsort(-scores, kind="stable")[: min(k, len(self.documents))]
        return [_hit(self.documents[i], float(scores[i]), rank) for rank, i in enumerate(order, start=1)
                if scores[i] > 0]


def _hit(doc: Document, score: float, rank: int) -> Hit:
    return Hit(id=doc.id, text=doc.text, score=score, rank=rank, metadata=dict(doc.metadata))
