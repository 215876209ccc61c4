"""L20: BM25, reciprocal rank fusion, re-ranking, the ATT&CK question set and retrieval metrics."""

import numpy as np
import pytest

from mastery.core.errors import ConfigError, MasteryError
from mastery.retrieval.attack import Technique
from mastery.retrieval.bm25 import BM25Retriever, RetrievalError, tokenize
from mastery.retrieval.hybrid import (
    HybridRetriever,
    RerankRetriever,
    fuse_with_first_stage,
    reciprocal_rank_fusion,
)
from mastery.retrieval.questions import (
    STYLES,
    QuestionSources,
    build_question_set,
    first_relevant_rank,
    mean_reciprocal_rank,
    paraphrase,
    question_sources,
    recall_at_k,
    stratified_sample,
)
from mastery.retrieval.types import Document, Hit, Retriever
from tests.conftest import needs_mirror

DOCS = [
    Document("attack:T1055", "T1055 Process Injection\nAdversaries may inject code into processes to evade defenses.",
             {"technique_id": "T1055"}),
    Document("attack:T1055.004", "T1055.004 Process Injection: Asynchronous Procedure Call\nAdversaries may inject "
             "malicious code into processes via the APC queue using QueueUserAPC.", {"technique_id": "T1055.004"}),
    Document("attack:T1003", "T1003 OS Credential Dumping\nAdversaries may dump credentials such as password hashes "
             "from LSASS memory.", {"technique_id": "T1003"}),
    Document("attack:T1566", "T1566 Phishing\nAdversaries may send phishing messages with malicious attachments "
             "or links to gain access.", {"technique_id": "T1566"}),
]


def _hits(ids: list[str]) -> list[Hit]:
    return [Hit(id=i, text=i, score=0.0, rank=r) for r, i in enumerate(ids, start=1)]


class _Fixed:
    """A retriever that returns a fixed ranking (for fusion and re-ranking tests)."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids

    def search(self, query: str, k: int = 10) -> list[Hit]:
        return _hits(self.ids)[:k]


class _LengthScorer:
    name = "length"

    def score(self, query: str, texts):
        return np.array([len(t) for t in texts], dtype=float)


# -- tokenisation and BM25 -------------------------------------------------------------------------
def test_tokenizer_keeps_technique_ids_whole_and_drops_stop_words():
    assert tokenize("What is T1055.004 and T1003?") == ["t1055.004", "t1003"]
    assert tokenize("Dumping credentials from policies") == ["dumping", "credential", "policy"]
    assert "t1055" not in tokenize("T1055.004")  # a sub-technique ID must not match its parent


def test_bm25_finds_an_exact_technique_id():
    bm25 = BM25Retriever(DOCS)
    hits = bm25.search("What is T1055.004?", k=3)
    assert hits[0].id == "attack:T1055.004" and hits[0].rank == 1 and hits[0].score > 0
    assert len(hits) == 1  # only one document contains the ID token; zero-score documents are not hits
    assert bm25.search("T1055", k=1)[0].id == "attack:T1055"
    assert bm25.search("password hashes LSASS", k=1)[0].citation() == "T1003"
    assert bm25.search("zzz unknown words", k=3) == []


def test_bm25_heading_boost_lifts_the_title_match():
    plain, boosted = BM25Retriever(DOCS), BM25Retriever(DOCS, heading_boost=3)
    q = "process injection"
    assert boosted.scores(q)[0] / boosted.scores(q)[2:].max(initial=1e-9) >= plain.scores(q)[0] / max(
        plain.scores(q)[2:].max(), 1e-9)
    with pytest.raises(RetrievalError, match="heading_boost"):
        BM25Retriever(DOCS, heading_boost=0)


def test_bm25_id_weight_beats_filler_words():
    # "carry out" matches a document that is not T1055.004; the ID must still win when weighted.
    docs = [*DOCS, Document("attack:T1505", "T1505 Server Software Component\nAttackers carry out commands "
                            "and carry data out of the server.", {"technique_id": "T1505"})]
    q = "How do attackers carry out T1055.004?"
    assert BM25Retriever(docs, heading_boost=3).search(q, 1)[0].id == "attack:T1505"  # the defect, unweighted
    assert BM25Retriever(docs, heading_boost=3, id_weight=3).search(q, 1)[0].id == "attack:T1055.004"
    with pytest.raises(RetrievalError, match="id_weight"):
        BM25Retriever(DOCS, id_weight=0.5)


@pytest.mark.parametrize("query, k, match", [("", 3, "empty"), ("   ", 3, "empty"), ("phishing", 0, "positive"),
                                             (None, 3, "empty")])
def test_bad_queries_give_a_clear_error(query, k, match):
    bm25 = BM25Retriever(DOCS)
    hybrid = HybridRetriever([bm25, _Fixed(["attack:T1566"])])
    for retriever in (bm25, hybrid, RerankRetriever(hybrid, _LengthScorer())):
        with pytest.raises(RetrievalError, match=match) as info:
            retriever.search(query, k)
        assert isinstance(info.value, MasteryError)
    with pytest.raises(RetrievalError, match="at least one document"):
        BM25Retriever([])


# -- fusion and re-ranking -------------------------------------------------------------------------
def test_rrf_on_hand_made_lists():
    fused = reciprocal_rank_fusion([_hits(["a", "b", "c"]), _hits(["b", "c", "d"])], k=60)
    scores = {h.id: h.score for h in fused}
    assert scores["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert scores["a"] == pytest.approx(1 / 61)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 62)
    assert scores["d"] == pytest.approx(1 / 63)
    assert [h.id for h in fused] == ["b", "c", "a", "d"]  # in both lists beats top of one
    assert [h.rank for h in fused] == [1, 2, 3, 4]
    # A tie (a and x both first in one list) is broken by the best single rank, then by id.
    assert [h.id for h in reciprocal_rank_fusion([_hits(["x"]), _hits(["a"])], limit=1)] == ["a"]
    with pytest.raises(RetrievalError):
        reciprocal_rank_fusion([_hits(["a"])], k=-1)


def test_hybrid_and_rerank_compose_any_retrievers():
    hybrid = HybridRetriever([_Fixed(["a", "bb", "ccc"]), _Fixed(["ccc", "a", "dddd"])], depth=3)
    assert isinstance(hybrid, Retriever)
    assert [h.id for h in hybrid.search("q", 2)] == ["a", "ccc"]
    rerank = RerankRetriever(hybrid, _LengthScorer(), depth=4)
    hits = rerank.search("q", 3)
    assert [h.id for h in hits] == ["dddd", "ccc", "bb"]  # longest text first
    assert hits[0].metadata["first_stage_rank"] == 4 and [h.rank for h in hits] == [1, 2, 3]


# -- metrics ----------------------------------------------------------------------------------------
def test_recall_and_mrr_on_hand_made_ranks():
    hits = _hits(["x", "y", "z"])
    assert first_relevant_rank(hits, "y") == 2 and first_relevant_rank(hits, "q") is None
    ranks = [1, 2, None, 5]
    assert recall_at_k(ranks, 1) == 0.25
    assert recall_at_k(ranks, 3) == 0.5
    assert recall_at_k(ranks, 10) == 0.75
    assert mean_reciprocal_rank(ranks) == pytest.approx((1 + 0.5 + 0 + 0.2) / 4)
    assert mean_reciprocal_rank(ranks, cutoff=3) == pytest.approx(1.5 / 4)
    with pytest.raises(ConfigError):
        recall_at_k([], 3)


# -- the question set -------------------------------------------------------------------------------
def _technique(tid: str, name: str, description: str) -> Technique:
    return Technique(tid, name, None, ("execution",), ("Windows",), f"https://attack.mitre.org/{tid}",
                     description, "")


ITEMS = [_technique(f"T{1000 + i}", f"Widget {chr(65 + i)}", " ".join(
    f"Adversaries may abuse widget{i} component number {j} to run harmful payloads on hosts{i} quietly." for j in
    range(4)) + f" Unique{i} terms like alpha{i} beta{i} gamma{i} appear here.") for i in range(12)]
SOURCES = QuestionSources(
    detections={t.technique_id: [f"Monitor widget{i} process creation and correlate with network beacons {i}."]
                for i, t in enumerate(ITEMS)},
    procedures={t.technique_id: [f"An attacker has used widget{i} to launch payload {i} on many hosts."]
                for i, t in enumerate(ITEMS)},
)


def test_question_set_is_deterministic_labelled_and_disjoint():
    a = build_question_set(ITEMS, SOURCES, seed=3, eval_fraction=0.5)
    b = build_question_set(ITEMS, SOURCES, seed=3, eval_fraction=0.5)
    assert a == b
    assert a != build_question_set(ITEMS, SOURCES, seed=4, eval_fraction=0.5)
    assert len(a.eval_techniques) == 6 and not a.train_techniques & a.eval_techniques
    assert {q.technique_id for q in a.eval} <= a.eval_techniques
    assert {q.technique_id for q in a.train} <= a.train_techniques
    assert {q.style for q in a.eval} == set(STYLES)
    train_sources = {q.source for q in a.train if q.style != "technique_id"}
    assert not any(q.source in train_sources for q in a.eval if q.style != "technique_id")
    ids = [q for q in a.eval if q.style == "technique_id"]
    assert all(q.technique_id in q.text for q in ids) and ids[0].doc_id == f"attack:{ids[0].technique_id}"
    for q in a.eval:
        if q.style in ("description", "keyword"):
            assert "Widget" not in q.text  # the technique's name is masked / excluded
    sample = stratified_sample(a.eval, 10, seed=0)
    assert len(sample) == 10 and len({q.style for q in sample}) == len(STYLES)


def test_shared_source_text_is_dropped_from_eval():
    shared = QuestionSources(detections={}, procedures={t.technique_id: ["The same shared procedure text used by "
                                                                         "every technique here."] for t in ITEMS})
    qs = build_question_set(ITEMS, shared, seed=0, styles=("scenario",))
    assert qs.train and not qs.eval and qs.dropped_overlaps == 6


def test_paraphrase_masks_the_name_and_swaps_words():
    t = _technique("T1111", "Widget Abuse", "")
    text = paraphrase("Adversaries may use Widget Abuse to obtain malicious access.", t)
    assert text == "attackers can use this technique to get harmful access"


@pytest.mark.parametrize("kwargs, match", [({"eval_fraction": 1.0}, "eval_fraction"),
                                           ({"styles": ("haiku",)}, "unknown question styles")])
def test_bad_question_set_config(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        build_question_set(ITEMS, SOURCES, **kwargs)


def test_question_sources_from_stix_relationships():
    stix = [
        {"type": "attack-pattern", "id": "ap--1", "name": "Phishing",
         "external_references": [{"source_name": "mitre-attack", "external_id": "T1566"}]},
        {"type": "intrusion-set", "id": "is--1", "name": "APT99", "aliases": ["APT99", "Evil Panda"]},
        {"type": "relationship", "relationship_type": "uses", "source_ref": "is--1", "target_ref": "ap--1",
         "description": "[APT99](https://attack.mitre.org/groups/G9) has sent lures; Evil Panda also used "
                        "links.(Citation: Report)"},
        {"type": "x-mitre-analytic", "id": "an--1", "description": "Monitor mail gateways for lures with links."},
        {"type": "x-mitre-detection-strategy", "id": "ds--1", "x_mitre_analytic_refs": ["an--1"]},
        {"type": "relationship", "relationship_type": "detects", "source_ref": "ds--1", "target_ref": "ap--1"},
    ]
    sources = question_sources(stix)
    assert sources.procedures == {"T1566": ["An attacker has sent lures; it also used links."]}
    assert sources.detections == {"T1566": ["Monitor mail gateways for lures with links."]}


# -- the cross-encoder ------------------------------------------------------------------------------
@needs_mirror
def test_cross_encoder_trains_saves_and_loads_back(tmp_path, monkeypatch):
    from mastery.ops.registry import open_registry
    from mastery.retrieval.rerank import (
        ATTACK_CROSS_ENCODER,
        CrossEncoderScorer,
        RerankerError,
        TrainGroup,
        canonical_cross_encoder,
        find_cross_encoder,
        load_cross_encoder,
        new_cross_encoder,
        train_cross_encoder,
    )

    groups = [TrainGroup(d.metadata["technique_id"] + " " + d.text.split("\n")[0].split(" ", 1)[1], d.text,
                         tuple(o.text for o in DOCS if o is not d)[:2]) for d in DOCS]
    result = train_cross_encoder(groups, tmp_path / "ce", epochs=2, groups_per_batch=2, max_length=48, seed=0)
    assert result.steps == 4 and result.n_pairs == 24 and len(result.losses) == 4
    assert np.isfinite(result.losses).all()
    assert (tmp_path / "ce" / "model.safetensors").is_file()
    assert not list((tmp_path / "ce").glob("*.bin"))  # safetensors only, no pickles
    loaded = load_cross_encoder(result.path, max_length=48)
    texts = [d.text for d in DOCS]
    np.testing.assert_allclose(CrossEncoderScorer(loaded).score("phishing links", texts),
                               CrossEncoderScorer(result.model).score("phishing links", texts), atol=1e-5)
    with pytest.raises(RetrievalError, match="empty"):
        CrossEncoderScorer(loaded).score(" ", texts)
    with pytest.raises(RerankerError, match="no cross-encoder"):
        load_cross_encoder(tmp_path / "nothing-here")
    with pytest.raises(ConfigError, match="head"):
        new_cross_encoder(head="max")
    with pytest.raises(RerankerError, match="negative"):
        train_cross_encoder([TrainGroup("q", "p", ())], tmp_path / "bad")
    path, why = canonical_cross_encoder()  # offline and unregistered today: None, and the reason says so
    assert (path is None and ("not in the asset registry" in why or "not available" in why)) or path.is_dir()
    assert canonical_cross_encoder("no-such-model")[0] is None
    # Searches find the re-ranker by name in the trained-model registry, verified, with its max length.
    monkeypatch.setenv("MASTERY_MODEL_STORE", str(tmp_path / "models"))
    assert find_cross_encoder("cpu") is None
    # recorded as no better than the hybrid order (gain within two standard errors): searches leave it out
    open_registry().save(ATTACK_CROSS_ENCODER, result.path, kind="hf", config={"ce_max_length": 48},
                         metrics={"recall_at_3_hybrid": 0.714, "recall_at_3_hybrid_rerank": 0.736,
                                  "n_eval_questions": 500})
    assert find_cross_encoder("cpu") is None
    ref = open_registry().save(ATTACK_CROSS_ENCODER, result.path, kind="hf", config={"ce_max_length": 48},
                               metrics={"recall_at_3_hybrid": 0.714, "recall_at_3_hybrid_rerank": 0.80,
                                        "n_eval_questions": 500})
    found = find_cross_encoder("cpu")
    assert found is not None and found.name == str(ref) and found.model.max_seq_length == 48
    np.testing.assert_allclose(found.score("phishing links", texts),
                               CrossEncoderScorer(loaded).score("phishing links", texts), atol=1e-5)


def test_rerank_only_rescores_the_top_depth():
    rerank = RerankRetriever(_Fixed(["a", "bb", "ccc", "dddd", "eeeee"]), _LengthScorer(), depth=2)
    hits = rerank.search("q", 4)
    assert [h.id for h in hits] == ["bb", "a", "ccc", "dddd"]  # the tail keeps the first stage's order
    assert [h.rank for h in hits] == [1, 2, 3, 4] and hits[2].metadata["first_stage_rank"] == 3


def test_fusion_with_first_stage_keeps_a_noisy_reranker_in_check():
    # The scorer prefers long texts; fused with the first stage's order, the first-stage top stays near the top.
    rerank = RerankRetriever(_Fixed(["a", "bb", "ccc", "dddd"]), _LengthScorer(), depth=4, fuse_k=0)
    only = RerankRetriever(_Fixed(["a", "bb", "ccc", "dddd"]), _LengthScorer(), depth=4)
    assert [h.id for h in only.search("q", 4)] == ["dddd", "ccc", "bb", "a"]
    fused = rerank.search("q", 4)
    # k=0: 1/1 + 1/4 for "a" and "dddd" tie -> the better re-ranker rank wins; "bb", "ccc" score 1/2 + 1/3.
    assert [h.id for h in fused] == ["dddd", "a", "ccc", "bb"] and [h.rank for h in fused] == [1, 2, 3, 4]
    assert fused[0].metadata["rerank_rank"] == 1 and fused[1].metadata["first_stage_rank"] == 1
    assert fuse_with_first_stage([]) == []
    with pytest.raises(RetrievalError, match="fusion"):
        RerankRetriever(_Fixed(["a"]), _LengthScorer(), fuse_k=-1)


@needs_mirror
def test_mean_pooled_cross_encoder_learns(tmp_path):
    # The mean-pooled head (how MiniLM was trained) must move the listwise loss well below chance, ln(3).
    from mastery.retrieval.rerank import TrainGroup, train_cross_encoder

    groups = [TrainGroup(d.text.split("\n")[0].split(" ", 1)[1].lower(), d.text,
                         tuple(o.text for o in DOCS if o is not d)[:2]) for d in DOCS]
    result = train_cross_encoder(groups, tmp_path / "ce", head="mean", epochs=12, groups_per_batch=2, lr=1e-4,
                                 head_lr=1e-2, max_length=48, seed=0)
    assert np.mean(result.losses[:2]) > 1.0 and np.mean(result.losses[-4:]) < 0.8 * np.log(3)
