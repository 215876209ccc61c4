"""Sentence embeddings (a local MiniLM via sentence-transformers) and TF-IDF, each with a logistic-regression head."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def load_sentence_model(name: str = "all-minilm-l6-v2", device: str = "cpu", max_seq_length: int = 256) -> Any:
    """Load a registry sentence-transformers model from its local folder (never downloads)."""
    from sentence_transformers import SentenceTransformer

    from mastery.assets.store import resolve

    path = resolve(name)
    model = SentenceTransformer(str(path), device=device, local_files_only=True)
    model.max_seq_length = max_seq_length  # longer reviews are truncated to this many word pieces
    return model


def encode_texts(model: Any, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """(N, dim) L2-normalised float32 embeddings."""
    emb = model.encode(list(texts), batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True,
                       normalize_embeddings=True)
    return np.asarray(emb, dtype=np.float32)


def throughput(model: Any, texts: Sequence[str], batch_size: int = 64) -> float:
    """Texts per second for encoding ``texts`` once."""
    start = time.perf_counter()
    encode_texts(model, texts, batch_size)
    return len(texts) / max(time.perf_counter() - start, 1e-9)


@dataclass
class HeadResult:
    f1: float
    accuracy: float
    fit_seconds: float
    predictions: np.ndarray


def logreg_head(x_train: Any, y_train: np.ndarray, x_test: Any, y_test: np.ndarray, c: float = 1.0,
                seed: int = 0) -> HeadResult:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    start = time.perf_counter()
    clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    clf.fit(x_train, y_train)
    pred = clf.predict(x_test)
    return HeadResult(float(f1_score(y_test, pred)), float(accuracy_score(y_test, pred)),
                      time.perf_counter() - start, pred)


def tfidf_logreg(train_texts: Sequence[str], y_train: np.ndarray, test_texts: Sequence[str], y_test: np.ndarray,
                 seed: int = 0, max_features: int = 50_000) -> tuple[HeadResult, float]:
    """Word 1-2-gram TF-IDF (sublinear tf) + logistic regression; returns the result and total seconds."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    start = time.perf_counter()
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=max_features, sublinear_tf=True)
    x_train = vec.fit_transform(train_texts)
    x_test = vec.transform(test_texts)
    result = logreg_head(x_train, y_train, x_test, y_test, c=4.0, seed=seed)
    return result, time.perf_counter() - start
