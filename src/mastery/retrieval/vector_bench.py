"""The L17 sweep: build our indexes and FAISS's on one dataset, then measure recall@10 against queries/s.

Datasets are random vectors (uniform in the unit cube, the worst case for IVF) and MiniLM embeddings of
IMDb reviews (cached as .npy, keyed by model, text and sequence length, so a re-run skips the slow encode).
Every index is searched with the same query batch; the exact result of FAISS ``IndexFlatL2`` is the
ground truth. Recall values are deterministic for a seed (one thread, seeded k-means); build seconds and
queries/s are timings.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from mastery.retrieval.vector import (
    ExactIndex,
    IVFIndex,
    VectorSearchError,
    faiss_nbytes,
    nn_recall,
    recall_at_k,
)

log = logging.getLogger(__name__)


# -- threads -------------------------------------------------------------------------------------
def thread_count() -> int:
    """MASTERY_THREADS when set, else every core: NumPy's BLAS and FAISS's OpenMP both get this many."""
    from mastery.core.settings import get_settings

    return get_settings().threads or max(1, os.cpu_count() or 1)


@contextmanager
def limited_threads(n: int) -> Iterator[None]:
    """Give NumPy's BLAS and FAISS the same thread count, so the speed comparison is fair."""
    import faiss
    from threadpoolctl import threadpool_limits

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        faiss.omp_set_num_threads(before)


# -- data ----------------------------------------------------------------------------------------
def random_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """(n, dim) float32 uniform in [0, 1): no clusters, no low-dimensional structure."""
    return np.random.default_rng(seed).random((n, dim), dtype=np.float32)


def imdb_reviews(n_index: int, n_queries: int, seed: int) -> tuple[list[str], list[str]]:
    """Distinct IMDb reviews (both splits) in a seeded order: the first n_index to index, the next n_queries
    as held-out queries (never in the index)."""
    from mastery.assets.loaders import load_imdb

    texts = list(dict.fromkeys(load_imdb().text.tolist()))  # the corpus has ~400 exact duplicates
    if n_index + n_queries > len(texts):
        raise VectorSearchError(f"IMDb has {len(texts)} distinct reviews; asked for {n_index} + {n_queries}")
    order = np.random.default_rng(seed).permutation(len(texts))[: n_index + n_queries]
    chosen = [texts[i] for i in order]
    return chosen[:n_index], chosen[n_index:]


def cached_embeddings(texts: Sequence[str], model_name: str = "all-minilm-l6-v2", max_seq_length: int = 128,
                      batch_size: int = 64, device: str = "cpu") -> tuple[np.ndarray, float | None]:
    """(len(texts), dim) L2-normalised float32 embeddings and the encode seconds (None when read from cache)."""
    from mastery.text import embed

    return embed.cached_encode(texts, model_name, max_seq_length, batch_size=batch_size, load_model=lambda: (
        embed.load_sentence_model(model_name, device=device, max_seq_length=max_seq_length)))


# -- the sweep -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepSpec:
    nlist: int
    n_train: int  # k-means trains on this many sampled vectors (both ours and FAISS's, the same sample)
    nprobes: tuple[int, ...]
    niter: int = 10
    k: int = 10
    hnsw_m: int = 16
    hnsw_ef_construction: int = 40
    ef_searches: tuple[int, ...] = (16, 32, 64, 128, 256)
    include_hnsw: bool = True
    timing_repeats: int = 3
    seed: int = 0


@dataclass
class SweepResult:
    name: str
    n: int
    dim: int
    nlist: int
    n_train: int
    build_seconds: dict[str, float] = field(default_factory=dict)  # method -> seconds (train + add)
    memory_bytes: dict[str, int] = field(default_factory=dict)
    points: list[dict] = field(default_factory=list)  # one per (method, param): recall@10, R@1, qps
    exact_agreement: float = 0.0  # fraction of our exact ids equal to FAISS IndexFlatL2's
    ivf_inertia: list[float] = field(default_factory=list)

    def point(self, method: str, param: int | None = None) -> dict:
        for p in self.points:
            if p["method"] == method and (param is None or p["param"] == param):
                return p
        raise KeyError(f"{self.name}: no point for {method} {param}")

    def curve(self, method: str) -> list[dict]:
        return [p for p in self.points if p["method"] == method]


def timed_search(fn: Callable[[], object], repeats: int, budget_s: float = 2.0) -> tuple[object, float]:
    """The result of fn() and its fastest wall time over up to ``repeats`` runs (stopping once
    ``budget_s`` is spent, so slow exact scans at 1M run once)."""
    best, spent, result = float("inf"), 0.0, None
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
        if spent > budget_s:
            break
    return result, best


def sweep(name: str, data: np.ndarray, queries: np.ndarray, spec: SweepSpec,
          on_step: Callable[[str], None] | None = None) -> SweepResult:
    """Build flat, IVF and HNSW indexes (ours and FAISS's) on ``data`` and measure every search setting.

    All distances are squared L2 (for normalised embeddings that is the cosine ranking). FAISS's exact
    IndexFlatL2 result is the ground truth for recall.
    """
    step = on_step or (lambda _msg: None)
    n, dim = data.shape
    res = SweepResult(name=name, n=n, dim=dim, nlist=spec.nlist, n_train=spec.n_train)
    # exact: FAISS IndexFlatL2 first, its result is the ground truth for everything else
    truth = _measure(res, "faiss_flat", lambda: _faiss_flat(data), queries, spec, [None], None)
    found = _measure(res, "exact", lambda: _exact(data), queries, spec, [None], truth)
    res.exact_agreement = float(np.mean(found == truth))
    step("exact")
    # IVF: ours and FAISS's, trained on the same sample with the same number of k-means iterations
    sample = data[np.sort(np.random.default_rng(spec.seed).choice(n, size=spec.n_train, replace=False))]
    _measure(res, "ivf", lambda: _ivf(data, sample, spec), queries, spec, list(spec.nprobes), truth)
    step("ivf")
    _measure(res, "faiss_ivf", lambda: _faiss_ivf(data, sample, spec), queries, spec, list(spec.nprobes), truth)
    step("faiss_ivf")
    if spec.include_hnsw:
        _measure(res, "faiss_hnsw", lambda: _faiss_hnsw(data, spec), queries, spec, list(spec.ef_searches), truth)
        step("faiss_hnsw")
    return res


def _search(index: object, queries: np.ndarray, k: int, param: int | None) -> np.ndarray:
    """(nq, k) ids from any of the five index kinds, with nprobe / efSearch set to ``param``."""
    if isinstance(index, IVFIndex):
        return index.search(queries, k, nprobe=param or 1).ids
    if isinstance(index, ExactIndex):
        return index.search(queries, k).ids
    if param is not None:
        if hasattr(index, "hnsw"):
            index.hnsw.efSearch = param
        else:
            index.nprobe = param
    return index.search(queries, k)[1]


def _measure(res: SweepResult, method: str, build: Callable[[], object], queries: np.ndarray, spec: SweepSpec,
             params: list[int | None], truth: np.ndarray | None) -> np.ndarray:
    """Build one index (timed), record its memory, search it at every param (timed); returns the last ids."""
    start = time.perf_counter()
    index = build()
    res.build_seconds[method] = time.perf_counter() - start
    if isinstance(index, (ExactIndex, IVFIndex)):
        res.memory_bytes[method] = index.nbytes
        if isinstance(index, IVFIndex):
            res.ivf_inertia = index.inertia
    else:
        res.memory_bytes[method] = faiss_nbytes(index)
    ids = np.empty(0)
    for param in params:
        ids, seconds = timed_search(lambda p=param: _search(index, queries, spec.k, p), spec.timing_repeats)
        gold = ids if truth is None else truth
        res.points.append({"method": method, "param": param, "recall_at_10": recall_at_k(ids, gold, spec.k),
                           "recall_at_1": nn_recall(ids, gold, 1), "qps": queries.shape[0] / max(seconds, 1e-9)})
    return ids


def _faiss_flat(data: np.ndarray) -> object:
    import faiss

    index = faiss.IndexFlatL2(data.shape[1])
    index.add(data)
    return index


def _exact(data: np.ndarray) -> ExactIndex:
    index = ExactIndex(data.shape[1], "l2")
    index.add(data)
    return index


def _ivf(data: np.ndarray, sample: np.ndarray, spec: SweepSpec) -> IVFIndex:
    index = IVFIndex(data.shape[1], spec.nlist, "l2", niter=spec.niter, init="random", seed=spec.seed)
    index.train(sample)
    index.add(data)
    return index


def _faiss_ivf(data: np.ndarray, sample: np.ndarray, spec: SweepSpec) -> object:
    import faiss

    quantizer = faiss.IndexFlatL2(data.shape[1])
    index = faiss.IndexIVFFlat(quantizer, data.shape[1], spec.nlist, faiss.METRIC_L2)
    index.cp.niter = spec.niter
    index.cp.seed = spec.seed
    index.cp.max_points_per_centroid = 1 << 30  # train on the whole given sample, as ours does
    index.cp.min_points_per_centroid = 1  # and don't warn about small samples in the tiny preset
    index.train(sample)
    index.add(data)
    return index


def _faiss_hnsw(data: np.ndarray, spec: SweepSpec) -> object:
    import faiss

    index = faiss.IndexHNSWFlat(data.shape[1], spec.hnsw_m, faiss.METRIC_L2)
    index.hnsw.efConstruction = spec.hnsw_ef_construction
    # FAISS inserts in parallel when it has several threads, and the graph then depends on thread timing;
    # one thread gives the same graph (and the same recall) every run.
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        index.add(data)
    finally:
        faiss.omp_set_num_threads(before)
    return index


# -- plots ---------------------------------------------------------------------------------------
LABELS = {"exact": "ours: exact (NumPy)", "ivf": "ours: IVF (NumPy)", "faiss_flat": "FAISS IndexFlatL2",
          "faiss_ivf": "FAISS IndexIVFFlat", "faiss_hnsw": "FAISS IndexHNSWFlat"}
_STYLE = {"exact": ("tab:blue", "*", "-"), "ivf": ("tab:blue", "o", "-"), "faiss_flat": ("tab:orange", "*", "-"),
          "faiss_ivf": ("tab:orange", "s", "--"), "faiss_hnsw": ("tab:green", "^", ":")}


def plot_recall_vs_qps(results: Sequence[SweepResult]) -> object:
    """One panel per dataset: recall@10 against queries/s (log x), each index's parameter sweep as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 4.4), squeeze=False)
    for ax, res in zip(axes[0], results, strict=True):
        for method, (color, marker, line) in _STYLE.items():
            pts = res.curve(method)
            if not pts:
                continue
            qps, rec = [p["qps"] for p in pts], [p["recall_at_10"] for p in pts]
            ax.plot(qps, rec, color=color, marker=marker, linestyle=line if len(pts) > 1 else "none",
                    markersize=10 if marker == "*" else 5, label=LABELS[method])
            if method in ("ivf", "faiss_hnsw"):
                for p in pts:  # label the sweep points with their nprobe / efSearch
                    ax.annotate(str(p["param"]), (p["qps"], p["recall_at_10"]), fontsize=7, color=color,
                                textcoords="offset points", xytext=(3, -9 if method == "ivf" else 4))
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.03)
        ax.set_xlabel("queries / s (log; one batch of all queries)")
        ax.set_title(f"{res.name}: N={res.n:,}, d={res.dim}, nlist={res.nlist}", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("recall@10 (vs exact top-10)")
    axes[0][0].legend(fontsize=8, loc="lower left")
    fig.suptitle("Recall@10 vs throughput (IVF labels: nprobe; HNSW labels: efSearch)")
    fig.tight_layout()
    return fig


def plot_recall_vs_nprobe(results: Sequence[SweepResult]) -> object:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for i, res in enumerate(results):
        color = f"C{i}"
        for method, line in (("ivf", "-"), ("faiss_ivf", "--")):
            pts = res.curve(method)
            ax.plot([p["param"] for p in pts], [p["recall_at_10"] for p in pts], line,
                    marker="o" if method == "ivf" else "s", markersize=3,
                    color=color, label=f"{res.name} ({'ours' if method == 'ivf' else 'FAISS'})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("nprobe (cells searched, log2)")
    ax.set_ylabel("recall@10")
    ax.set_title("IVF recall grows with nprobe: ours (solid) vs FAISS (dashed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_build_and_memory(results: Sequence[SweepResult]) -> object:
    """Build seconds and memory against N (log-log), per index, for the random datasets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.4))
    sizes = [r.n for r in results]
    for method, (color, marker, line) in _STYLE.items():
        if not all(method in r.build_seconds for r in results):
            continue
        ax_t.plot(sizes, [max(r.build_seconds[method], 1e-4) for r in results], color=color, marker=marker,
                  linestyle=line, label=LABELS[method])
        ax_m.plot(sizes, [r.memory_bytes[method] / 2**20 for r in results], color=color, marker=marker,
                  linestyle=line, label=LABELS[method])
    for ax, title, ylabel in ((ax_t, "build time (train + add)", "seconds"), (ax_m, "index memory", "MiB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"N (random vectors, d={results[0].dim})")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
    ax_t.legend(fontsize=8)
    fig.tight_layout()
    return fig
