"""Vector search from scratch in NumPy: exact (brute-force) top-k and an IVF index with a k-means quantiser.

Conventions follow FAISS so the two can be compared result for result: a search returns ``(nq, k)`` ids
(best first, ``-1`` where fewer than k candidates were seen) and scores, which are squared L2 distances for
``metric="l2"`` (smaller is better) and similarities for ``"ip"`` / ``"cosine"`` (larger is better).
Internally every metric becomes a distance to minimise, so one top-k kernel serves all three:

- l2:     ||q - x||^2 = ||q||^2 - 2 q.x + ||x||^2   (one GEMM plus precomputed norms; ||q||^2 is the same
          for every x, so it is added only to the k winners)
- ip:     -q.x
- cosine: -q.x on L2-normalised rows. For unit vectors ||q - x||^2 = 2 - 2 cos(q, x), so after
          normalisation euclidean and cosine rankings are the same ranking.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from mastery.core.errors import MasteryError

log = logging.getLogger(__name__)

METRICS = ("l2", "ip", "cosine")
# Elements in one (queries x data) score tile: 2^24 float32 = 64 MiB, whatever N is.
_TILE_ELEMENTS = 1 << 24


class VectorSearchError(MasteryError, ValueError):
    """Bad input to a vector index: empty, wrong shape or dimension, NaN/inf, k out of range."""


@dataclass(frozen=True)
class SearchResult:
    ids: np.ndarray  # (nq, k) int64, best first; -1 pads when fewer than k candidates exist
    scores: np.ndarray  # (nq, k) float32: squared L2 distance (l2) or similarity (ip, cosine)


# -- input checks ------------------------------------------------------------------------------
def as_matrix(x: object, name: str = "vectors", dim: int | None = None) -> np.ndarray:
    """A non-empty, finite, C-contiguous float32 (n, d) array, or a VectorSearchError saying what is wrong."""
    arr = np.asarray(x)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise VectorSearchError(f"{name} must be a 2-D (n, dim) array, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise VectorSearchError(f"{name} is empty (shape {arr.shape})")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise VectorSearchError(f"{name} must be real numbers, got dtype {arr.dtype}")
    if dim is not None and arr.shape[1] != dim:
        raise VectorSearchError(f"{name} have dimension {arr.shape[1]}, the index has dimension {dim}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise VectorSearchError(f"{name} contain NaN or inf ({bad} of {arr.shape[0]} rows)")
    return arr


def _check_metric(metric: str, allowed: tuple[str, ...] = METRICS) -> None:
    if metric not in allowed:
        raise VectorSearchError(f"metric must be one of {', '.join(allowed)}, got {metric!r}")


def _check_k(k: int, n: int) -> None:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise VectorSearchError(f"k must be a positive integer, got {k!r}")
    if k > n:
        raise VectorSearchError(f"k={k} is larger than the {n} vectors in the index")


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32). A zero row has no direction, so it is an error."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise VectorSearchError(f"{int((norms == 0).sum())} zero vector(s) cannot be normalised for cosine")
    return x / norms


def sq_norms(x: np.ndarray) -> np.ndarray:
    """(n,) float32 squared L2 norms."""
    return np.einsum("ij,ij->i", x, x)


# -- the kernel --------------------------------------------------------------------------------
def _rank_keys(q: np.ndarray, x: np.ndarray, x_sq: np.ndarray | None) -> np.ndarray:
    """(nq, n) keys to minimise: ||x||^2 - 2 q.x when norms are given (squared L2 minus the per-row constant
    ||q||^2, added back only to the k winners), else -q.x. Scaling the small q instead of the (nq, n) result
    saves a pass over the big matrix."""
    if x_sq is None:
        return (-q) @ x.T
    keys = (-2.0 * q) @ x.T  # (nq, n): the one GEMM that does all the work
    keys += x_sq[None, :]
    return keys


def _finish_l2(keys: np.ndarray, q_sq: np.ndarray) -> np.ndarray:
    """Squared L2 distances from the k winning keys; rounding can make a zero distance slightly negative."""
    return np.maximum(keys + q_sq[:, None], 0.0)


def topk_smallest(d: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k smallest values of d (nq, n) and their column indices, sorted ascending.

    argpartition finds the k smallest in O(n) per row; only those k are then sorted (O(k log k)),
    instead of sorting all n.
    """
    n = d.shape[1]
    if k >= n:
        idx = np.broadcast_to(np.arange(n), d.shape).copy()
    elif k == 1:
        idx = d.argmin(axis=1)[:, None]
    else:
        idx = np.argpartition(d, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(d, idx, axis=1)
    order = np.argsort(vals, axis=1, kind="stable")
    return np.take_along_axis(vals, order, axis=1), np.take_along_axis(idx, order, axis=1)


def _search_l2_or_ip(data: np.ndarray, data_sq: np.ndarray | None, queries: np.ndarray, k: int,
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Tiled exact top-k of the distance kernel: (nq, k) distances and row indices into ``data``.

    Queries go in batches of B and the data in chunks of C with B*C <= 2^24, so memory stays bounded
    at any N; each chunk's top-k is merged into a running (B, k) best list.
    """
    n, nq = data.shape[0], queries.shape[0]
    chunk = min(n, 65_536)
    batch = max(16, min(nq, _TILE_ELEMENTS // chunk))
    out_d = np.empty((nq, k), dtype=np.float32)
    out_i = np.empty((nq, k), dtype=np.int64)
    for q0 in range(0, nq, batch):
        q = queries[q0:q0 + batch]
        best_d = np.full((q.shape[0], k), np.inf, dtype=np.float32)
        best_i = np.full((q.shape[0], k), -1, dtype=np.int64)
        for c0 in range(0, n, chunk):
            part = data[c0:c0 + chunk]
            d = _rank_keys(q, part, None if data_sq is None else data_sq[c0:c0 + chunk])
            top_d, top_i = topk_smallest(d, min(k, part.shape[0]))
            if c0 == 0:
                best_d[:, :top_d.shape[1]], best_i[:, :top_i.shape[1]] = top_d, top_i
                continue
            cand_d = np.concatenate([best_d, top_d], axis=1)  # (B, 2k): running best + this chunk's best
            cand_i = np.concatenate([best_i, top_i + c0], axis=1)
            best_d, j = topk_smallest(cand_d, k)
            best_i = np.take_along_axis(cand_i, j, axis=1)
        out_d[q0:q0 + batch] = best_d if data_sq is None else _finish_l2(best_d, sq_norms(q))
        out_i[q0:q0 + batch] = best_i
    return out_d, out_i


def exact_search(data: object, queries: object, k: int, metric: str = "l2") -> SearchResult:
    """Brute-force top-k of every query against every data row (batched GEMM + argpartition)."""
    index = ExactIndex(as_matrix(data, "data").shape[1], metric)
    index.add(data)
    return index.search(queries, k)


class ExactIndex:
    """A flat index: all vectors in one array, every search scans them all (FAISS ``IndexFlat``)."""

    def __init__(self, dim: int, metric: str = "l2") -> None:
        _check_metric(metric)
        if dim < 1:
            raise VectorSearchError(f"dim must be >= 1, got {dim}")
        self.dim, self.metric = dim, metric
        self._data = np.empty((0, dim), dtype=np.float32)
        self._sq: np.ndarray | None = np.empty(0, dtype=np.float32) if metric == "l2" else None

    @property
    def ntotal(self) -> int:
        return self._data.shape[0]

    @property
    def nbytes(self) -> int:
        """Memory held: the float32 vectors (+ their squared norms for l2)."""
        return self._data.nbytes + (0 if self._sq is None else self._sq.nbytes)

    def add(self, x: object) -> None:
        x = as_matrix(x, "vectors", self.dim)
        if self.metric == "cosine":
            x = normalize(x)
        self._data = x if self.ntotal == 0 else np.concatenate([self._data, x])
        if self._sq is not None:
            self._sq = sq_norms(self._data)

    def search(self, queries: object, k: int) -> SearchResult:
        if self.ntotal == 0:
            raise VectorSearchError("the index is empty; add vectors before searching")
        q = as_matrix(queries, "queries", self.dim)
        _check_k(k, self.ntotal)
        if self.metric == "cosine":
            q = normalize(q)
        d, i = _search_l2_or_ip(self._data, self._sq, q, k)
        return SearchResult(ids=i, scores=d if self.metric == "l2" else -d)


# -- k-means -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class KMeansResult:
    centroids: np.ndarray  # (k, d) float32
    inertia: list[float]  # sum of squared distances to the assigned centroid, per iteration


def assign(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every row (batched): (n,) labels and (n,) squared distances."""
    d, i = _search_l2_or_ip(centroids, sq_norms(centroids), x, 1)
    return i[:, 0], d[:, 0]


def kmeans(x: object, k: int, niter: int = 10, init: str = "random", seed: int = 0) -> KMeansResult:
    """Lloyd's k-means: ``init`` "random" (k distinct points, as FAISS does) or "kmeans++" (D^2 sampling).

    An empty cluster is refilled by splitting the largest one (its centroid nudged by +/- 1/1024), as
    FAISS does, so every one of the k lists can hold vectors.
    """
    x = as_matrix(x, "training vectors")
    n = x.shape[0]
    if not 1 <= k <= n:
        raise VectorSearchError(f"k-means needs 1 <= k <= n training points, got k={k}, n={n}")
    if niter < 0 or init not in ("random", "kmeans++"):
        raise VectorSearchError(f"need niter >= 0 and init 'random' or 'kmeans++', got {niter}, {init!r}")
    rng = np.random.default_rng(seed)
    if init == "random":
        centroids = x[np.sort(rng.choice(n, size=k, replace=False))].copy()
    else:
        centroids = np.empty((k, x.shape[1]), dtype=np.float32)
        centroids[0] = x[rng.integers(n)]
        d2 = sq_norms(x - centroids[0]).astype(np.float64)
        for j in range(1, k):  # each next centroid is drawn with probability proportional to D(x)^2
            total = d2.sum()
            pick = rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)
            centroids[j] = x[pick]
            d2 = np.minimum(d2, sq_norms(x - centroids[j]))
    inertia: list[float] = []
    for _ in range(niter):
        labels, d2 = assign(x, centroids)
        inertia.append(float(d2.astype(np.float64).sum()))
        counts = np.bincount(labels, minlength=k)
        order = np.argsort(labels, kind="stable")
        filled = np.flatnonzero(counts)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[filled]
        sums = np.add.reduceat(x[order].astype(np.float64), starts, axis=0)  # (len(filled), d) per-cluster sums
        centroids[filled] = (sums / counts[filled, None]).astype(np.float32)
        for empty in np.flatnonzero(counts == 0):
            big = int(np.argmax(counts))
            centroids[empty] = centroids[big] * (1 + 1 / 1024)
            centroids[big] = centroids[big] * (1 - 1 / 1024)
            counts[empty] = counts[big] // 2
            counts[big] -= counts[empty]
    return KMeansResult(centroids=centroids, inertia=inertia)


# -- IVF ---------------------------------------------------------------------------------------
class IVFIndex:
    """Inverted-file index: k-means cells, one inverted list per cell, search only ``nprobe`` cells.

    Vectors are stored sorted by cell, so list c is the slice ``offsets[c]:offsets[c+1]`` of one array
    (no per-list Python objects). ``metric="cosine"`` normalises vectors and queries and then works in L2,
    which gives the same ranking (see the module docstring).
    """

    def __init__(self, dim: int, nlist: int, metric: str = "l2", niter: int = 10, init: str = "random",
                 seed: int = 0) -> None:
        _check_metric(metric, ("l2", "cosine"))
        if dim < 1 or nlist < 1:
            raise VectorSearchError(f"dim and nlist must be >= 1, got dim={dim}, nlist={nlist}")
        self.dim, self.nlist, self.metric = dim, nlist, metric
        self.niter, self.init, self.seed = niter, init, seed
        self.centroids: np.ndarray | None = None
        self.inertia: list[float] = []
        self._data = np.empty((0, dim), dtype=np.float32)
        self._sq = np.empty(0, dtype=np.float32)
        self._ids = np.empty(0, dtype=np.int64)
        self._offsets = np.zeros(nlist + 1, dtype=np.int64)

    @property
    def is_trained(self) -> bool:
        return self.centroids is not None

    @property
    def ntotal(self) -> int:
        return self._data.shape[0]

    @property
    def list_sizes(self) -> np.ndarray:
        return np.diff(self._offsets)

    @property
    def nbytes(self) -> int:
        """Memory held: vectors, their ids (int64) and squared norms, the centroids and list offsets."""
        cent = 0 if self.centroids is None else self.centroids.nbytes
        return self._data.nbytes + self._ids.nbytes + self._sq.nbytes + cent + self._offsets.nbytes

    def _prepare(self, x: object, name: str) -> np.ndarray:
        x = as_matrix(x, name, self.dim)
        return normalize(x) if self.metric == "cosine" else x

    def train(self, x: object) -> IVFIndex:
        """Learn the nlist centroids with k-means on ``x`` (a sample of the data is enough)."""
        x = self._prepare(x, "training vectors")
        if x.shape[0] < self.nlist:
            raise VectorSearchError(f"training needs at least nlist={self.nlist} vectors, got {x.shape[0]}")
        result = kmeans(x, self.nlist, niter=self.niter, init=self.init, seed=self.seed)
        self.centroids, self.inertia = result.centroids, result.inertia
        return self

    def add(self, x: object, ids: np.ndarray | None = None) -> None:
        """Assign every vector to its nearest centroid and store it in that cell's list."""
        if self.centroids is None:
            raise VectorSearchError("the IVF index is not trained; call train() before add()")
        x = self._prepare(x, "vectors")
        ids = np.arange(self.ntotal, self.ntotal + x.shape[0]) if ids is None else np.asarray(ids, np.int64)
        if ids.shape != (x.shape[0],):
            raise VectorSearchError(f"ids must have shape ({x.shape[0]},), got {ids.shape}")
        labels, _ = assign(x, self.centroids)
        old_labels = np.repeat(np.arange(self.nlist), self.list_sizes)
        labels = np.concatenate([old_labels, labels])
        order = np.argsort(labels, kind="stable")  # cell-major; insertion order kept inside a cell
        self._data = np.concatenate([self._data, x])[order]
        self._ids = np.concatenate([self._ids, ids])[order]
        self._sq = sq_norms(self._data)
        self._offsets = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=self.nlist))])

    def search(self, queries: object, k: int, nprobe: int = 1) -> SearchResult:
        """Top-k among the vectors of the ``nprobe`` cells nearest each query.

        Work is grouped by cell, not by query: every probed cell's vectors are scored against all the
        queries that probe it in one GEMM, and each (query, cell) pair keeps its own top-k in a
        (nq, nprobe * k) candidate buffer, from which the final top-k is taken.
        """
        if self.centroids is None:
            raise VectorSearchError("the IVF index is not trained; call train() and add() first")
        if self.ntotal == 0:
            raise VectorSearchError("the index is empty; add vectors before searching")
        if not isinstance(nprobe, (int, np.integer)) or not 1 <= nprobe <= self.nlist:
            raise VectorSearchError(f"nprobe must be between 1 and nlist={self.nlist}, got {nprobe!r}")
        q = self._prepare(queries, "queries")
        _check_k(k, self.ntotal)
        _, probe = _search_l2_or_ip(self.centroids, sq_norms(self.centroids), q, nprobe)  # (nq, nprobe)
        out_d = np.empty((q.shape[0], k), dtype=np.float32)
        out_i = np.empty((q.shape[0], k), dtype=np.int64)
        batch = max(1, min(q.shape[0], (1 << 22) // (nprobe * k)))  # bounds the (batch, nprobe * k) buffers
        for q0 in range(0, q.shape[0], batch):
            d, i = self._search_batch(q[q0:q0 + batch], probe[q0:q0 + batch], k)
            out_d[q0:q0 + batch], out_i[q0:q0 + batch] = d, i
        scores = out_d if self.metric == "l2" else np.where(out_i >= 0, 1.0 - out_d / 2.0, -np.inf)
        return SearchResult(ids=out_i, scores=scores.astype(np.float32))

    def _search_batch(self, q: np.ndarray, probe: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        nq, nprobe = probe.shape
        cand_d = np.full((nq, nprobe * k), np.inf, dtype=np.float32)
        cand_i = np.full((nq, nprobe * k), -1, dtype=np.int64)
        flat = probe.ravel()  # entry e = (query e // nprobe, slot e % nprobe) probes cell flat[e]
        order = np.argsort(flat, kind="stable")
        cells, first = np.unique(flat[order], return_index=True)
        bounds = np.append(first, len(order))
        for cell, a, b in zip(cells, bounds[:-1], bounds[1:], strict=True):
            lo, hi = self._offsets[cell], self._offsets[cell + 1]
            if hi == lo:
                continue
            entries = order[a:b]
            rows, slots = entries // nprobe, entries % nprobe
            d = _rank_keys(q[rows], self._data[lo:hi], self._sq[lo:hi])  # (len(rows), list size)
            top_d, top_j = topk_smallest(d, min(k, hi - lo))
            cols = slots[:, None] * k + np.arange(top_d.shape[1])[None, :]
            cand_d[rows[:, None], cols] = top_d
            cand_i[rows[:, None], cols] = self._ids[lo + top_j]
        best_d, j = topk_smallest(cand_d, k)
        return _finish_l2(best_d, sq_norms(q)), np.take_along_axis(cand_i, j, axis=1)


# -- evaluation --------------------------------------------------------------------------------
def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    """Mean over queries of |found top-k ∩ true top-k| / k (the "10-recall@10" of the ANN benchmarks)."""
    found, truth = np.asarray(found)[:, :k], np.asarray(truth)[:, :k]
    if found.shape != truth.shape or found.shape[1] < k:
        raise VectorSearchError(f"need (nq, >= {k}) id arrays of equal shape, got {found.shape}, {truth.shape}")
    hits = sum(len(np.intersect1d(f[f >= 0], t)) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def nn_recall(found: np.ndarray, truth: np.ndarray, r: int = 1) -> float:
    """FAISS's R@r: the fraction of queries whose true nearest neighbour is among the first r results."""
    found, truth = np.asarray(found), np.asarray(truth)
    return float(np.mean((found[:, :r] == truth[:, :1]).any(axis=1)))


def faiss_nbytes(index: object) -> int:
    """Bytes of a FAISS index, measured as the size of its serialisation (vectors, ids, graph links)."""
    import faiss

    return int(faiss.serialize_index(index).size)
