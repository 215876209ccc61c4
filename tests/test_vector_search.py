"""L17: exact search and IVF in NumPy, checked against brute force and FAISS; the benchmark sweep."""

import numpy as np
import pytest

from mastery.core.errors import ConfigError, MasteryError
from mastery.retrieval import vector_bench as vb
from mastery.retrieval.vector import (
    ExactIndex,
    IVFIndex,
    VectorSearchError,
    exact_search,
    faiss_nbytes,
    kmeans,
    nn_recall,
    normalize,
    recall_at_k,
)


def _data(n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32)


def _blobs(n: int, d: int, centres: int, seed: int = 0) -> np.ndarray:
    """Clustered data (like real embeddings), where IVF works well."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((centres, d)).astype(np.float32) * 4
    return (means[rng.integers(centres, size=n)] + rng.standard_normal((n, d))).astype(np.float32)


def _brute_force(x: np.ndarray, q: np.ndarray, k: int, metric: str) -> np.ndarray:
    x64, q64 = x.astype(np.float64), q.astype(np.float64)
    if metric == "l2":
        d = ((q64[:, None, :] - x64[None, :, :]) ** 2).sum(-1)
    elif metric == "ip":
        d = -q64 @ x64.T
    else:
        d = -(q64 / np.linalg.norm(q64, axis=1, keepdims=True)) @ (x64 / np.linalg.norm(x64, axis=1, keepdims=True)).T
    return np.argsort(d, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_exact_search_equals_brute_force(metric):
    x, q = _data(1500, 24), _data(40, 24, seed=1)
    result = exact_search(x, q, 10, metric)
    np.testing.assert_array_equal(result.ids, _brute_force(x, q, 10, metric))
    assert result.scores.shape == (40, 10) and result.ids.dtype == np.int64
    # best first: distances ascend for l2, similarities descend for ip/cosine
    steps = np.diff(result.scores, axis=1)
    assert (steps >= 0).all() if metric == "l2" else (steps <= 0).all()


def test_exact_search_equals_faiss_index_flat():
    import faiss

    x, q = _data(5000, 32), _data(100, 32, seed=1)
    flat = faiss.IndexFlatL2(32)
    flat.add(x)
    dist, ids = flat.search(q, 10)
    ours = exact_search(x, q, 10, "l2")
    np.testing.assert_array_equal(ours.ids, ids)
    np.testing.assert_allclose(ours.scores, dist, rtol=1e-4, atol=1e-3)
    flat_ip = faiss.IndexFlatIP(32)
    flat_ip.add(x)
    sims, ids_ip = flat_ip.search(q, 10)
    ours_ip = exact_search(x, q, 10, "ip")
    np.testing.assert_array_equal(ours_ip.ids, ids_ip)
    np.testing.assert_allclose(ours_ip.scores, sims, rtol=1e-4, atol=1e-3)


def test_exact_search_merges_chunks_of_a_large_index():
    # 70,000 rows is more than one 65,536-row data chunk, so the running top-k merge is exercised
    x, q = _data(70_000, 4), _data(8, 4, seed=1)
    np.testing.assert_array_equal(exact_search(x, q, 5).ids, _brute_force(x, q, 5, "l2"))


def test_cosine_and_euclidean_rankings_agree_after_normalisation():
    rng = np.random.default_rng(2)
    x = rng.random((2000, 16), dtype=np.float32) * rng.random((2000, 1), dtype=np.float32) * 10  # varied norms
    q = rng.random((50, 16), dtype=np.float32)
    cosine = exact_search(x, q, 10, "cosine")
    on_unit = exact_search(normalize(x), normalize(q), 10, "l2")
    np.testing.assert_array_equal(cosine.ids, on_unit.ids)
    np.testing.assert_allclose(on_unit.scores, 2 - 2 * cosine.scores, atol=1e-5)  # ||q-x||^2 = 2 - 2 cos
    assert recall_at_k(exact_search(x, q, 10, "l2").ids, cosine.ids) < 0.5  # raw norms change the ranking


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_ivf_with_every_cell_probed_equals_exact_search(metric):
    x, q = _blobs(3000, 16, centres=20), _blobs(60, 16, centres=20, seed=1)
    ivf = IVFIndex(16, nlist=32, metric=metric, seed=0).train(x)
    ivf.add(x)
    full = ivf.search(q, 10, nprobe=32)
    exact = exact_search(x, q, 10, metric)
    np.testing.assert_array_equal(full.ids, exact.ids)
    np.testing.assert_allclose(full.scores, exact.scores, atol=1e-4)
    assert ivf.list_sizes.sum() == 3000 and len(ivf.list_sizes) == 32


def test_ivf_recall_grows_with_nprobe_and_tracks_faiss():
    import faiss

    x, q = _blobs(6000, 16, centres=40), _blobs(200, 16, centres=40, seed=1)
    truth = exact_search(x, q, 10).ids
    ivf = IVFIndex(16, nlist=64, seed=0).train(x[:3000])
    ivf.add(x)
    quantizer = faiss.IndexFlatL2(16)
    fivf = faiss.IndexIVFFlat(quantizer, 16, 64)
    fivf.cp.seed, fivf.cp.niter = 0, 10
    fivf.train(x[:3000])
    fivf.add(x)
    ours, theirs = [], []
    for nprobe in (1, 2, 4, 8, 16, 64):
        ours.append(recall_at_k(ivf.search(q, 10, nprobe=nprobe).ids, truth))
        fivf.nprobe = nprobe
        theirs.append(recall_at_k(fivf.search(q, 10)[1], truth))
    assert ours == sorted(ours) and ours[0] < 0.9 and ours[-1] == 1.0
    assert max(abs(a - b) for a, b in zip(ours, theirs, strict=True)) < 0.1


def test_ivf_keeps_given_ids_and_pads_missing_results():
    x = _blobs(500, 8, centres=5)
    ivf = IVFIndex(8, nlist=50, seed=0).train(x)
    ivf.add(x, ids=np.arange(1000, 1500))
    result = ivf.search(x[:5], 30, nprobe=1)  # one small cell may hold fewer than 30 vectors
    found = result.ids[result.ids >= 0]
    assert found.min() >= 1000 and found.max() < 1500
    assert result.ids[:, 0].tolist() == list(range(1000, 1005))  # each point finds itself first
    assert np.isinf(result.scores[result.ids < 0]).all()
    ivf.add(_blobs(100, 8, centres=5, seed=3))  # a second add keeps the lists consistent
    assert ivf.ntotal == 600 and ivf.list_sizes.sum() == 600


def test_kmeans_lowers_inertia_and_refills_empty_clusters():
    x = _blobs(2000, 8, centres=10)
    for init in ("random", "kmeans++"):
        result = kmeans(x, 10, niter=8, init=init, seed=0)
        assert result.centroids.shape == (10, 8)
        assert all(b <= a * (1 + 1e-6) for a, b in zip(result.inertia, result.inertia[1:], strict=False))
    dup = np.repeat(_data(3, 4), 100, axis=0)  # only 3 distinct points for 6 clusters: some start empty
    centroids = kmeans(dup, 6, niter=5, seed=0).centroids
    assert np.isfinite(centroids).all()


def test_recall_helpers():
    truth = np.array([[1, 2, 3], [4, 5, 6]])
    found = np.array([[3, 2, 9], [7, 8, 4]])
    assert recall_at_k(found, truth, 3) == pytest.approx(3 / 6)
    assert recall_at_k(truth, truth, 3) == 1.0
    assert nn_recall(found, truth, 1) == 0.0 and nn_recall(found, truth, 3) == 0.5
    with pytest.raises(VectorSearchError, match="id arrays"):
        recall_at_k(found[:, :2], truth, 3)


def test_memory_accounting():
    x = _data(1000, 16)
    flat = ExactIndex(16)
    flat.add(x)
    assert flat.nbytes == 1000 * 16 * 4 + 1000 * 4  # vectors + squared norms
    ivf = IVFIndex(16, nlist=10).train(x)
    ivf.add(x)
    assert ivf.nbytes == 1000 * (16 * 4 + 8 + 4) + 10 * 16 * 4 + 11 * 8
    import faiss

    index = faiss.IndexFlatL2(16)
    index.add(x)
    assert 1000 * 16 * 4 <= faiss_nbytes(index) < 1000 * 16 * 4 + 1024


def _bad_calls():
    x = _data(20, 4)
    nan = x.copy()
    nan[3, 1] = np.nan
    trained = IVFIndex(4, nlist=2).train(x)
    trained.add(x)
    return [
        ("empty index", lambda: ExactIndex(4).search(x[:1], 1), "index is empty"),
        ("wrong dimension", lambda: exact_search(x, _data(2, 5), 1), "dimension 5"),
        ("k > n", lambda: exact_search(x, x[:1], 21), "larger than the 20"),
        ("k = 0", lambda: exact_search(x, x[:1], 0), "positive integer"),
        ("NaN data", lambda: exact_search(nan, x[:1], 1), "NaN"),
        ("NaN query", lambda: exact_search(x, nan, 1), "NaN"),
        ("empty data", lambda: exact_search(np.empty((0, 4)), x[:1], 1), "empty"),
        ("3-D", lambda: exact_search(x[None], x[:1], 1), "2-D"),
        ("strings", lambda: exact_search(np.array([["a", "b"]]), x[:1], 1), "real numbers"),
        ("metric", lambda: ExactIndex(4, "manhattan"), "metric"),
        ("zero vector", lambda: exact_search(np.zeros((3, 4)), x[:1], 1, "cosine"), "zero vector"),
        ("untrained add", lambda: IVFIndex(4, nlist=2).add(x), "not trained"),
        ("untrained search", lambda: IVFIndex(4, nlist=2).search(x, 1), "not trained"),
        ("too few to train", lambda: IVFIndex(4, nlist=50).train(x), "at least nlist"),
        ("nprobe", lambda: trained.search(x, 1, nprobe=3), "nprobe"),
        ("ivf k > n", lambda: trained.search(x, 21, nprobe=1), "larger than"),
        ("ivf dim", lambda: trained.search(_data(1, 3), 1), "dimension 3"),
    ]


@pytest.mark.parametrize("case", range(17))
def test_bad_input_gives_a_clear_error(case):
    name, call, match = _bad_calls()[case]
    with pytest.raises(VectorSearchError, match=match) as info:
        call()
    assert isinstance(info.value, MasteryError) and isinstance(info.value, ValueError), name
    assert "\n" not in str(info.value)


def test_sweep_measures_every_index_and_plots():
    x, q = _blobs(3000, 16, centres=30), _blobs(50, 16, centres=30, seed=1)
    spec = vb.SweepSpec(nlist=32, n_train=1500, nprobes=(1, 4, 32), ef_searches=(16, 64), timing_repeats=1)
    with vb.limited_threads(1):
        res = vb.sweep("blobs", x, q, spec)
    assert res.exact_agreement == 1.0
    assert set(res.build_seconds) == set(res.memory_bytes) == {"exact", "faiss_flat", "ivf", "faiss_ivf",
                                                                "faiss_hnsw"}
    assert res.point("exact")["recall_at_10"] == 1.0 and res.point("ivf", 32)["recall_at_10"] == 1.0
    assert [p["param"] for p in res.curve("faiss_hnsw")] == [16, 64]
    assert all(p["qps"] > 0 for p in res.points)
    assert res.memory_bytes["faiss_hnsw"] > res.memory_bytes["faiss_flat"]
    for fig in (vb.plot_recall_vs_qps([res]), vb.plot_recall_vs_nprobe([res]), vb.plot_build_and_memory([res])):
        assert len(fig.axes) >= 1


def test_embedding_cache_is_keyed_and_reused(monkeypatch):
    import mastery.text.embed as embed

    calls = []
    monkeypatch.setattr(embed, "load_sentence_model", lambda name, device, max_seq_length: max_seq_length)
    monkeypatch.setattr(embed, "encode_texts", lambda model, texts, batch: calls.append(model) or np.full(
        (len(texts), 3), model, dtype=np.float32))
    first, seconds = vb.cached_embeddings(["a", "b"], "fake-model", max_seq_length=8)
    again, cached = vb.cached_embeddings(["a", "b"], "fake-model", max_seq_length=8)
    other, _ = vb.cached_embeddings(["a", "b"], "fake-model", max_seq_length=16)
    assert seconds is not None and cached is None and calls == [8, 16]
    np.testing.assert_array_equal(first, again)
    assert other[0, 0] == 16
    assert embed.embedding_cache_path("m", ["a", "b"], 8) != embed.embedding_cache_path("m", ["b", "a"], 8)


def test_lab_config_validation():
    from mastery.core.config import validate_config
    from mastery.core.labs import load_lab

    lab = load_lab("l17").module  # through the lab registry: only it and the CLI import mastery.labs
    PRESETS, Config = lab.PRESETS, lab.Config
    PRESETS["tiny"].validate()
    PRESETS["full"].validate()
    assert PRESETS["full"].nlist(1_000_000) == 4000
    for bad in (Config(nprobe=3), Config(sizes=()), Config(hnsw_ef=7), Config(dim=0), Config(sizes=(50,))):
        with pytest.raises(ConfigError):
            validate_config(bad)  # declared ranges, then the relations in Config.validate
