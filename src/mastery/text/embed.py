"""Sentence embeddings (a local MiniLM via sentence-transformers) and TF-IDF, each with a logistic-regression head."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
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


def embedding_cache_path(model_name: str, texts: Sequence[str], max_seq_length: int,
                         folder: Path | None = None) -> Path:
    """Where the embeddings of exactly these texts (in this order) by this model and length are cached;
    the default folder is ``<MASTERY_CACHE>/embeddings``."""
    if folder is None:
        from mastery.assets.store import cache_dir

        folder = cache_dir() / "embeddings"
    digest = hashlib.sha256(f"{model_name}\0{max_seq_length}\0".encode())
    for text in texts:
        digest.update(hashlib.sha256(text.encode("utf-8")).digest())
    return folder / f"{model_name}-{max_seq_length}-{len(texts)}-{digest.hexdigest()[:16]}.npy"


def cached_encode(texts: Sequence[str], model_name: str, max_seq_length: int, load_model: Callable[[], Any],
                  batch_size: int = 64, folder: Path | None = None) -> tuple[np.ndarray, float | None]:
    """(len(texts), dim) L2-normalised float32 embeddings, read from the cache when present, and the encode
    seconds (None when read from the cache). ``load_model`` is called only on a cache miss."""
    path = embedding_cache_path(model_name, texts, max_seq_length, folder)
    if path.is_file():
        emb = np.load(path)
        if emb.shape[0] == len(texts):
            log.info("embeddings from cache %s", path)
            return emb, None
        log.warning("ignoring cached embeddings %s with shape %s", path, emb.shape)
    model = load_model()
    start = time.perf_counter()
    emb = encode_texts(model, texts, batch_size)
    seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, emb)
    tmp.replace(path)  # atomic: an interrupted run never leaves a half-written cache entry
    log.info("encoded %d texts in %.1f s -> %s", len(texts), seconds, path)
    return emb, seconds


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
