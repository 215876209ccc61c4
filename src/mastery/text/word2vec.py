"""Skip-gram word2vec with negative sampling (Mikolov et al., 2013) in PyTorch.

Each (centre, context) pair from a sliding window is a positive example; ``negatives`` words drawn
from the unigram distribution raised to 3/4 are negatives. With input vectors v (centre) and output
vectors u (context) the loss per pair is -log s(u_o . v_c) - sum_k log s(-u_k . v_c).
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def tokenize_words(text: str) -> list[str]:
    return WORD.findall(text.lower())


@dataclass
class Corpus:
    words: list[str]  # id -> word, most frequent first
    ids: np.ndarray  # (N,) token ids of the running text (rare words dropped)
    counts: np.ndarray  # (V,) occurrences per id

    @property
    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}


def build_corpus(text: str, min_count: int = 5) -> Corpus:
    tokens = tokenize_words(text)
    counts = Counter(tokens)
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    if len(words) < 2:
        raise ValueError(f"fewer than 2 words occur at least {min_count} times")
    index = {w: i for i, w in enumerate(words)}
    ids = np.array([index[t] for t in tokens if t in index], dtype=np.int64)
    return Corpus(words, ids, np.array([counts[w] for w in words], dtype=np.int64))


def skipgram_pairs(ids: np.ndarray, counts: np.ndarray, window: int, rng: np.random.Generator,
                   subsample: float = 1e-3) -> np.ndarray:
    """(P, 2) [centre, context] pairs: frequent words randomly dropped (Mikolov's subsampling), then
    for each centre a window size drawn from 1..window, as in the original C code."""
    freq = counts / counts.sum()
    keep_p = np.minimum(1.0, np.sqrt(subsample / freq) + subsample / freq)  # per word id
    kept = ids[rng.random(len(ids)) < keep_p[ids]]  # (N',)
    spans = rng.integers(1, window + 1, len(kept))  # (N',)
    out = []
    for offset in range(1, window + 1):
        ok = spans[: len(kept) - offset] >= offset  # centre i uses context i + offset
        left = np.stack([kept[: len(kept) - offset], kept[offset:]], axis=1)[ok]
        ok_r = spans[offset:] >= offset  # centre i + offset uses context i
        right = np.stack([kept[offset:], kept[: len(kept) - offset]], axis=1)[ok_r]
        out += [left, right]
    return np.concatenate(out)


@dataclass
class Word2VecResult:
    embeddings: np.ndarray  # (V, dim) input vectors, the ones usually kept
    losses: list[float] = field(default_factory=list)  # mean loss per logging interval
    loss_batches: list[int] = field(default_factory=list)  # batches seen at the end of each interval
    n_pairs: int = 0
    seconds: float = 0.0


def train_word2vec(corpus: Corpus, *, dim: int = 100, window: int = 5, negatives: int = 5, epochs: int = 3,
                   batch_size: int = 1024, lr: float = 3e-3, subsample: float = 1e-3, seed: int = 0,
                   device: Any = "cpu", progress: Any = None) -> Word2VecResult:
    """Train skip-gram vectors; ``subsample`` is Mikolov's t (1.0 keeps every word)."""
    import torch
    from torch import nn

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    v_size = len(corpus.words)
    centre_emb = nn.Embedding(v_size, dim).to(device)  # v: (V, dim)
    context_emb = nn.Embedding(v_size, dim).to(device)  # u: (V, dim)
    nn.init.uniform_(centre_emb.weight, -0.5 / dim, 0.5 / dim)
    nn.init.zeros_(context_emb.weight)
    params = [*centre_emb.parameters(), *context_emb.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    noise = torch.tensor(corpus.counts ** 0.75, dtype=torch.float32)
    noise = (noise / noise.sum()).to(device)  # (V,) negative-sampling distribution
    gen = torch.Generator(device=device).manual_seed(seed)
    result = Word2VecResult(embeddings=np.empty(0))
    start = time.perf_counter()
    for epoch in range(epochs):
        pairs = skipgram_pairs(corpus.ids, corpus.counts, window, rng, subsample)
        pairs = pairs[rng.permutation(len(pairs))]
        result.n_pairs += len(pairs)
        n_batches = (len(pairs) + batch_size - 1) // batch_size
        if progress is not None:
            progress.stage(f"word2vec epoch {epoch + 1}/{epochs}", n_batches)
        pairs_t = torch.from_numpy(pairs).to(device)
        running, n_run = 0.0, 0
        log_every = max(1, min(100, n_batches // 10))
        for b in range(n_batches):
            batch = pairs_t[b * batch_size:(b + 1) * batch_size]  # (B, 2)
            v = centre_emb(batch[:, 0])  # (B, dim)
            u_pos = context_emb(batch[:, 1])  # (B, dim)
            neg_ids = torch.multinomial(noise, len(batch) * negatives, replacement=True, generator=gen)
            u_neg = context_emb(neg_ids.view(len(batch), negatives))  # (B, K, dim)
            pos = nn.functional.logsigmoid((u_pos * v).sum(-1))  # (B,)
            neg = nn.functional.logsigmoid(-(u_neg @ v.unsqueeze(-1)).squeeze(-1)).sum(-1)  # (B,)
            loss = -(pos + neg).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += float(loss.item())
            n_run += 1
            if n_run == log_every or b == n_batches - 1:
                result.losses.append(running / n_run)
                result.loss_batches.append(epoch * n_batches + b + 1)
                if progress is not None:
                    progress.step(n_run, loss=running / n_run)
                running, n_run = 0.0, 0
        log.info("word2vec epoch %d: loss %.4f", epoch + 1, result.losses[-1])
    result.embeddings = centre_emb.weight.detach().cpu().numpy()
    result.seconds = time.perf_counter() - start
    return result


def nearest_neighbours(embeddings: np.ndarray, words: list[str], query: str, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` words with the highest cosine similarity to ``query`` (itself excluded)."""
    index = {w: i for i, w in enumerate(words)}
    if query not in index:
        raise KeyError(f"{query!r} is not in the vocabulary")
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)  # (V, dim)
    sims = unit @ unit[index[query]]  # (V,)
    sims[index[query]] = -np.inf
    top = np.argsort(-sims, kind="stable")[:k]
    return [(words[i], float(sims[i])) for i in top]
