"""L20 · RAG optimisation: BM25 + vector hybrid search (RRF), re-ranking, and an evaluation harness."""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from annotated_types import Interval

from mastery.core.config import Fraction
from mastery.core.progress import Progress
from mastery.core.report import Report
from mastery.core.runtime import Device
from mastery.retrieval.questions import STYLES

METHODS = ("vector", "bm25", "hybrid", "hybrid_rerank_bi", "hybrid_rerank_ce", "hybrid_rerank")
LABELS = {"vector": "vector (MiniLM + FAISS)", "bm25": "BM25", "hybrid": "hybrid (RRF)",
          "hybrid_rerank_bi": "hybrid + bi-encoder rerank", "hybrid_rerank_ce": "hybrid + cross-encoder only",
          "hybrid_rerank": "hybrid + cross-encoder, fused"}
CURVE_K = 20


REQUIRES: tuple[str, ...] = ("attack_stix", "all-minilm-l6-v2")  # registered assets the tiny preset reads


@dataclass(frozen=True)
class Config:
    # None = all current ATT&CK techniques; a seeded subset otherwise
    n_techniques: Annotated[int, Interval(ge=4, le=10_000)] | None = None
    # share of techniques whose questions are held out for evaluation
    eval_fraction: Annotated[float, Interval(gt=0, lt=1)] = 0.5
    # stratified by style; None = every eval question
    n_eval_questions: Annotated[int, Interval(ge=1, le=1_000_000)] | None = 500
    # (question, positive, hard negatives) groups for the cross-encoder
    n_train_questions: Annotated[int, Interval(ge=1, le=1_000_000)] = 800
    train_per_style: Annotated[int, Interval(ge=1, le=1000)] = 2
    styles: tuple[str, ...] = STYLES
    embed_max_seq_length: Annotated[int, Interval(ge=1, le=512)] = 256
    bm25_heading_boost: Annotated[int, Interval(ge=1, le=100)] = 3
    # a technique ID in the query counts this many times a word (it names one document)
    bm25_id_weight: Annotated[float, Interval(ge=1, le=1000)] = 3.0
    hybrid_depth: Annotated[int, Interval(ge=1, le=10_000)] = 50  # each retriever's top-k fed to reciprocal rank fusion
    rrf_k: Annotated[int, Interval(ge=0, le=10_000)] = 60
    rerank_depth: Annotated[int, Interval(ge=1, le=10_000)] = 20  # hybrid candidates the re-rankers re-order
    # headline re-ranker: "rrf" fuses the cross-encoder's order with the hybrid order; "none"
    ce_fusion: Literal["rrf", "none"] = "rrf"
    # auto: the canonical ms-marco model when registered, else train one
    cross_encoder: Literal["auto", "trained", "canonical"] = "auto"
    # BERT's usual [CLS] head, or "mean": mean-pooled states + linear (how MiniLM was trained)
    ce_head: Literal["mean", "cls"] = "mean"
    ce_negatives: Annotated[int, Interval(ge=1, le=100)] = 7
    ce_epochs: Annotated[int, Interval(ge=1, le=100)] = 1
    ce_groups_per_batch: Annotated[int, Interval(ge=1, le=1024)] = 2
    # encoder layers; 3e-4 stalled at chance in a 150-step trial, 1e-4 learned
    ce_lr: Annotated[float, Interval(gt=0, le=1)] = 1e-4
    # the zero-initialised linear head on top of the mean pool
    ce_head_lr: Annotated[float, Interval(gt=0, le=10)] = 1e-2
    # question + the passage's first ~130 word pieces (heading and opening sentences)
    ce_max_length: Annotated[int, Interval(ge=32, le=512)] = 160
    bf16: Literal["auto", "on", "off"] = "auto"  # cross-encoder autocast (train, score) where the device has it
    device: Device = "auto"
    # goal: recall@3 of hybrid + rerank >= vector-only + this
    min_rerank_gain: Annotated[float, Interval(ge=-1, le=1)] = 0.10
    min_bm25_id_recall: Fraction = 0.9  # BM25 recall@1 on "What is T1234?" questions
    register: bool = False  # save a cross-encoder trained here to the model registry as attack-cross-encoder
    seed: int = 0

    def validate(self) -> None:
        from mastery.core.errors import ConfigError

        if unknown := set(self.styles) - set(STYLES):
            raise ConfigError(f"unknown question styles {sorted(unknown)}; choose from {', '.join(STYLES)}")


# The numbers that summarise a run: the README table and the conformance test read them from here.
HEADLINE = ("recall_at_3_vector", "recall_at_3_bm25", "recall_at_3_hybrid", "recall_at_3_hybrid_rerank")

PRESETS = {
    # tiny: a smoke test. Six optimiser steps do not make a useful cross-encoder, so its bar is "runs", not "helps".
    "tiny": Config(n_techniques=30, n_eval_questions=20, n_train_questions=16, train_per_style=1,
                   embed_max_seq_length=128, hybrid_depth=10, rerank_depth=4, ce_negatives=3, ce_groups_per_batch=4,
                   ce_max_length=96, min_rerank_gain=-1.0),
    "full": Config(register=True),
}


def run(config: Config, progress: Progress) -> Report:
    from mastery.core.precision import decide_bf16
    from mastery.nn.train import start_torch_report

    report, device = start_torch_report("l20", config)
    precision = decide_bf16(config.bf16, device)
    precision.record(report)
    setup = _setup(report, config, str(device), progress)
    setup["bf16"] = precision.bf16
    reranker = _cross_encoder(report, config, setup, str(device), progress)
    results = _evaluate(report, config, setup, reranker, progress)
    _report(report, config, setup, results)
    if config.register and "ce_result" in setup:  # a canonical cross-encoder is not ours to register
        _register(report, config, setup)
    return report


# -- corpus, questions, first-stage retrievers ---------------------------------------------------
def _setup(report: Report, config: Config, device: str, progress: Progress) -> dict[str, Any]:
    import random

    from mastery.assets.loaders import load_attack_stix
    from mastery.assets.store import cache_dir
    from mastery.retrieval.attack import technique_documents, techniques
    from mastery.retrieval.bm25 import BM25Retriever
    from mastery.retrieval.hybrid import DenseRetriever, HybridRetriever, embed_documents
    from mastery.retrieval.questions import build_question_set, question_sources, stratified_sample
    from mastery.text.embed import load_sentence_model

    progress.stage("corpus and questions", None)
    stix = load_attack_stix()
    items = techniques(stix)
    if config.n_techniques is not None and config.n_techniques < len(items):
        items = sorted(random.Random(config.seed).sample(items, config.n_techniques), key=lambda t: t.technique_id)
    docs = technique_documents(items)
    qset = build_question_set(items, question_sources(stix), seed=config.seed, eval_fraction=config.eval_fraction,
                              train_per_style=config.train_per_style, styles=config.styles)
    evals = stratified_sample(qset.eval, config.n_eval_questions, seed=config.seed)
    train = stratified_sample(qset.train, config.n_train_questions, seed=config.seed + 1)

    progress.stage("embed documents", None)
    start = time.perf_counter()
    model = load_sentence_model("all-minilm-l6-v2", device=device, max_seq_length=config.embed_max_seq_length)
    emb = embed_documents(model, docs, cache_dir=cache_dir() / "l20")  # (N, 384), cached by content
    report.timing("embed_documents_seconds", time.perf_counter() - start)
    start = time.perf_counter()
    bm25 = BM25Retriever(docs, heading_boost=config.bm25_heading_boost, id_weight=config.bm25_id_weight)
    report.timing("bm25_index_seconds", time.perf_counter() - start)
    dense = DenseRetriever(docs, model, emb)
    hybrid = HybridRetriever([bm25, dense], depth=config.hybrid_depth, rrf_k=config.rrf_k)
    report.metric("n_documents", len(docs))
    report.metric("n_eval_questions", len(evals))
    report.metric("n_train_questions", len(train))
    return {"docs": docs, "qset": qset, "eval": evals, "train": train, "model": model, "emb": emb,
            "bm25": bm25, "dense": dense, "hybrid": hybrid}


# -- the cross-encoder: canonical when registered, else trained here ------------------------------
def _cross_encoder(report: Report, config: Config, setup: dict[str, Any], device: str, progress: Progress) -> Any:
    from mastery.assets.store import cache_dir
    from mastery.core.errors import AssetError
    from mastery.retrieval.rerank import (
        CrossEncoderScorer,
        canonical_cross_encoder,
        hard_negative_groups,
        load_cross_encoder,
        train_cross_encoder,
    )

    path, why = (None, "training was asked for") if config.cross_encoder == "trained" else canonical_cross_encoder()
    if path is not None:
        setup["reranker_source"] = f"canonical ms-marco cross-encoder ({why})"
        return CrossEncoderScorer(load_cross_encoder(path, device, config.ce_max_length), bf16=setup["bf16"],
                                  name="ms-marco cross-encoder")
    if config.cross_encoder == "canonical":
        raise AssetError(f"cross_encoder=canonical but {why}; use cross_encoder=auto to train one instead")

    progress.stage("hard negatives", None)
    train, docs, hybrid = setup["train"], setup["docs"], setup["hybrid"]
    texts = {d.id: d.text for d in docs}
    candidates = [[h.id for h in hybrid.search(q.text, config.rerank_depth)] for q in train]
    groups = hard_negative_groups([(q.text, q.doc_id) for q in train], texts, candidates, config.ce_negatives,
                                  seed=config.seed)
    tag = hashlib.sha256(repr((config.ce_head, config.n_techniques, config.n_train_questions, config.ce_negatives,
                               config.ce_epochs, config.ce_lr, config.ce_head_lr, config.ce_max_length,
                               config.seed)).encode())
    out = cache_dir() / "l20" / f"cross-encoder-minilm-attack-{tag.hexdigest()[:12]}"
    result = train_cross_encoder(groups, out, head=config.ce_head, epochs=config.ce_epochs,
                                 groups_per_batch=config.ce_groups_per_batch,
                                 lr=config.ce_lr, head_lr=config.ce_head_lr, max_length=config.ce_max_length,
                                 bf16=setup["bf16"], device=device, seed=config.seed, progress=progress)
    progress.artifact(result.path)
    report.timing("ce_train_seconds", result.seconds)
    report.metric("ce_train_groups", result.n_groups)
    report.metric("ce_train_pairs", result.n_pairs)
    report.metric("ce_train_steps", result.steps)
    # Round trip: the folder on disk must score exactly like the model that was just trained.
    loaded = load_cross_encoder(result.path, device, config.ce_max_length)
    probe_q, probe = train[0].text, [texts[c] for c in candidates[0][:4]] or [docs[0].text]
    trained_scores = CrossEncoderScorer(result.model, bf16=False).score(probe_q, probe)
    loaded_scores = CrossEncoderScorer(loaded, bf16=False).score(probe_q, probe)
    diff = float(abs(trained_scores - loaded_scores).max())
    report.check("cross_encoder_round_trip", diff <= 1e-4, "the saved safetensors folder, loaded with "
                 "CrossEncoder(path), scores like the trained model (max |diff| <= 1e-4)", f"{diff:.2e}")
    setup["reranker_source"] = (f"cross-encoder fine-tuned here from all-MiniLM-L6-v2 ({why}); saved as "
                                f"safetensors to {result.path.name}/ in the cache")
    setup["ce_result"] = result
    setup["ce_probe"] = {"input": {"query": probe_q, "passages": probe}, "output": trained_scores.tolist()}
    return CrossEncoderScorer(loaded, bf16=setup["bf16"], name="cross-encoder")


def _register(report: Report, config: Config, setup: dict[str, Any]) -> None:
    from mastery.ops.registry import open_registry
    from mastery.ops.registry_loaders import note_registered

    folder = setup["ce_result"].path
    ref = open_registry().save(
        "attack-cross-encoder", folder, kind="hf",
        config={"lab": "l20", "lab_config": report.config, "head": config.ce_head, "max_length": config.ce_max_length,
                "base_model": "all-minilm-l6-v2",
                "load": "mastery.retrieval.rerank.load_cross_encoder(path, device, max_length)"},
        # with the hybrid baseline and the question count: searches use the model only when its gain over
        # hybrid is beyond noise (mastery.retrieval.rerank.measured_gain)
        metrics={k: v for k, v in report.metrics.items() if k.endswith(("_hybrid_rerank", "_hybrid_rerank_ce"))
                 or k in ("rerank_gain_recall_at_3_vs_vector", "recall_at_3_hybrid", "n_eval_questions")},
        data_assets=["attack_stix", "all-minilm-l6-v2"], probe=setup["ce_probe"],
        description="L20 ATT&CK passage cross-encoder (MiniLM fine-tuned on hard negatives)")
    note_registered(report, ref)


# -- evaluation ------------------------------------------------------------------------------------
def _evaluate(report: Report, config: Config, setup: dict[str, Any], cross: Any,
              progress: Progress) -> dict[str, list[int | None]]:
    from mastery.retrieval.hybrid import RerankRetriever, fuse_with_first_stage
    from mastery.retrieval.questions import first_relevant_rank
    from mastery.retrieval.rerank import BiEncoderScorer

    known = {d.text: v for d, v in zip(setup["docs"], setup["emb"], strict=True)}
    retrievers = {
        "vector": setup["dense"], "bm25": setup["bm25"], "hybrid": setup["hybrid"],
        "hybrid_rerank_bi": RerankRetriever(setup["hybrid"], BiEncoderScorer(setup["model"], known),
                                            config.rerank_depth),
    }
    questions = setup["eval"]
    ranks: dict[str, list[int | None]] = {}
    for name, retriever in retrievers.items():
        progress.stage(f"evaluate {name}", len(questions))
        start = time.perf_counter()
        ranks[name] = []
        for q in questions:
            ranks[name].append(first_relevant_rank(retriever.search(q.text, CURVE_K), q.doc_id))
            progress.step(1)
        report.timing(f"latency_ms_{name}", 1000 * (time.perf_counter() - start) / len(questions))
    # Cross-encoder only and fused with the hybrid order come from the same scores: score each question once.
    only = RerankRetriever(setup["hybrid"], cross, config.rerank_depth)
    progress.stage("evaluate hybrid_rerank", len(questions))
    ranks["hybrid_rerank_ce"], fused = [], []
    start = time.perf_counter()
    for q in questions:
        candidates = setup["hybrid"].search(q.text, max(CURVE_K, config.rerank_depth))
        head, tail = only.rerank(q.text, candidates[:config.rerank_depth]), candidates[config.rerank_depth:]
        ranks["hybrid_rerank_ce"].append(first_relevant_rank((head + tail)[:CURVE_K], q.doc_id))
        fused.append(first_relevant_rank((fuse_with_first_stage(head, config.rrf_k) + tail)[:CURVE_K], q.doc_id))
        progress.step(1)
    ranks["hybrid_rerank"] = fused if config.ce_fusion == "rrf" else ranks["hybrid_rerank_ce"]
    ms = 1000 * (time.perf_counter() - start) / len(questions)
    report.timing("latency_ms_hybrid_rerank_ce", ms)
    report.timing("latency_ms_hybrid_rerank", ms)
    report.timing("rerank_ms_per_query", ms - report.timings["latency_ms_hybrid"])
    return ranks


# -- metrics, checks, tables, figures, notes ---------------------------------------------------------
def _report(report: Report, config: Config, setup: dict[str, Any], ranks: dict[str, list[int | None]]) -> None:
    from mastery.retrieval.questions import mean_reciprocal_rank, recall_at_k

    questions, qset = setup["eval"], setup["qset"]
    for m in METHODS:
        for k in (1, 3, 10):
            report.metric(f"recall_at_{k}_{m}", recall_at_k(ranks[m], k))
        report.metric(f"mrr_{m}", mean_reciprocal_rank(ranks[m]))
    met = report.metrics
    gain = met["recall_at_3_hybrid_rerank"] - met["recall_at_3_vector"]
    report.metric("rerank_gain_recall_at_3_vs_vector", gain)
    headline = "fused with the hybrid order by RRF" if config.ce_fusion == "rrf" else "alone"
    report.check("rerank_gain_over_vector", gain >= config.min_rerank_gain - 1e-12,
                 f"recall@3 of hybrid + cross-encoder rerank ({headline}) >= vector-only "
                 f"+ {config.min_rerank_gain:.2f}",
                 f"{met['recall_at_3_hybrid_rerank']:.3f} vs {met['recall_at_3_vector']:.3f} ({gain:+.3f})")
    id_ranks = [r for q, r in zip(questions, ranks["bm25"], strict=True) if q.style == "technique_id"]
    if id_ranks:
        id_recall = recall_at_k(id_ranks, 1)
        report.metric("bm25_id_recall_at_1", id_recall)
        report.check("bm25_finds_technique_ids", id_recall >= config.min_bm25_id_recall,
                     f"BM25 recall@1 on 'What is T1234.001?' questions >= {config.min_bm25_id_recall}", id_recall)
    train_sources = {q.source for q in setup["train"] if q.style != "technique_id"}
    overlap = sum(1 for q in questions if q.style != "technique_id" and q.source in train_sources)
    disjoint = not (qset.train_techniques & qset.eval_techniques) and overlap == 0
    report.check("train_eval_disjoint", disjoint, "no eval technique has a training question and no eval question "
                 "was written from a training question's source text", f"{overlap} shared sources")

    report.table(f"Retrieval on {len(questions)} held-out questions (one relevant technique each)", [
        {"method": LABELS[m], "recall@1": met[f"recall_at_1_{m}"], "recall@3": met[f"recall_at_3_{m}"],
         "recall@10": met[f"recall_at_10_{m}"], "MRR": met[f"mrr_{m}"],
         "ms / query": round(report.timings[f"latency_ms_{m}"], 1)} for m in METHODS])
    styles = [s for s in STYLES if any(q.style == s for q in questions)]
    by_style = {s: {m: recall_at_k([r for q, r in zip(questions, ranks[m], strict=True) if q.style == s], 3)
                    for m in METHODS} for s in styles}
    report.table("recall@3 by question style", [
        {"style": s, "n": sum(q.style == s for q in questions), **{LABELS[m]: by_style[s][m] for m in METHODS}}
        for s in styles])
    examples = []
    for s in styles:
        i = next(i for i, q in enumerate(questions) if q.style == s)
        examples.append({"style": s, "question": questions[i].text[:160], "answer": questions[i].technique_id,
                         **{f"rank {m}": ranks[m][i] or f">{CURVE_K}" for m in ("vector", "bm25", "hybrid",
                                                                                "hybrid_rerank")}})
    report.table("One eval question per style and where each method ranked its answer", examples)
    _figures(report, ranks, by_style, setup.get("ce_result"))
    _notes(report, config, setup, gain)


def _figures(report: Report, ranks: dict[str, list[int | None]], by_style: dict[str, dict[str, float]],
             ce_result: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from mastery.retrieval.questions import mean_reciprocal_rank, recall_at_k

    colours = dict(zip(METHODS, ("tab:blue", "tab:orange", "tab:green", "tab:gray", "tab:purple", "tab:red"),
                       strict=True))
    fig, ax = plt.subplots(figsize=(11, 4.8))
    measures = ("recall@1", "recall@3", "recall@10", "MRR")
    x = np.arange(len(measures))
    width = 0.8 / len(METHODS)
    for j, m in enumerate(METHODS):
        vals = [recall_at_k(ranks[m], 1), recall_at_k(ranks[m], 3), recall_at_k(ranks[m], 10),
                mean_reciprocal_rank(ranks[m])]
        bars = ax.bar(x + (j - (len(METHODS) - 1) / 2) * width, vals, width, label=LABELS[m], color=colours[m])
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set(xticks=x, xticklabels=measures, ylim=(0, 1.3), yticks=np.linspace(0, 1, 6), ylabel="score",
           title=f"Retrieval quality on {len(ranks['vector'])} held-out ATT&CK questions")
    ax.legend(fontsize=8, ncols=3, loc="upper center")  # above the bars: the y axis leaves room up to 1.3
    report.figure("recall_by_method", fig)

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    ks = np.arange(1, CURVE_K + 1)
    for m in METHODS:
        axes[0].plot(ks, [recall_at_k(ranks[m], int(k)) for k in ks], marker=".", label=LABELS[m], color=colours[m])
    axes[0].set(xlabel="k", ylabel="recall@k", title="recall@k (re-rankers re-order the hybrid top-k)",
                xticks=[1, 3, 5, 10, 15, 20], ylim=(0, 1.02))
    axes[0].grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    styles = list(by_style)
    xs = np.arange(len(styles))
    for j, m in enumerate(METHODS):
        axes[1].bar(xs + (j - (len(METHODS) - 1) / 2) * width, [by_style[s][m] for s in styles], width,
                    color=colours[m], label=LABELS[m])
    axes[1].set(xticks=xs, xticklabels=styles, ylim=(0, 1.05), ylabel="recall@3", title="recall@3 by question style")
    report.figure("recall_at_k_and_styles", fig)

    if ce_result is not None and ce_result.losses:
        losses = np.asarray(ce_result.losses)
        window = max(1, len(losses) // 20)
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")  # moving average over steps
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(losses, alpha=0.3, label="per step")
        ax.plot(np.arange(window - 1, len(losses)), smooth, label=f"moving average ({window})")
        n = 1 + (ce_result.n_pairs // max(1, ce_result.n_groups) - 1)
        ax.axhline(np.log(n), ls="--", color="gray", label=f"chance: ln({n})")
        ax.set(xlabel="optimiser step", ylabel="listwise softmax loss", title="Cross-encoder fine-tuning")
        ax.legend()
        report.figure("cross_encoder_training", fig)


def _notes(report: Report, config: Config, setup: dict[str, Any], gain: float) -> None:
    qset, met = setup["qset"], report.metrics
    report.note(
        f"Corpus: {met['n_documents']:.0f} current ATT&CK techniques, one Document each (\"ID Name\" + description). "
        f"Questions: five styles written from the STIX bundle (description sentence lightly paraphrased, a "
        "v18 detection-strategy analytic, three distinctive keywords, the bare technique ID, and a real procedure "
        "example with the actor's name replaced); each is labelled with the one technique that answers it. "
        f"Techniques are split {1 - config.eval_fraction:.0%} / {config.eval_fraction:.0%} into train and eval "
        f"({len(qset.train_techniques)} / {len(qset.eval_techniques)}); the {met['n_eval_questions']:.0f} eval "
        "questions (stratified by style) are all about techniques whose documents the cross-encoder never saw as "
        "a positive."
    )
    report.note(
        "Leakage: (1) train and eval questions come from disjoint techniques, so the re-ranker cannot memorise "
        "'this wording means T1234'; (2) eval questions whose source text (a procedure shared by two techniques, "
        f"say) also produced a train question are dropped ({qset.dropped_overlaps} were); (3) description and "
        "keyword questions are built from the indexed text itself, which flatters BM25 (word overlap by "
        "construction), while detection and scenario questions come from text that is not in the index and "
        "measure meaning; the per-style table separates them; (4) train-technique documents are still in the "
        "corpus and appear as hard negatives in training, which, if anything, biases the re-ranker against them. "
        "Each question has exactly one relevant document: a sub-technique question answered by its parent counts "
        "as a miss, so all numbers are strict."
    )
    report.note(
        f"Methods: BM25 (bm25s, ID-preserving tokeniser, heading repeated {config.bm25_heading_boost}x); vector = "
        f"all-MiniLM-L6-v2 embeddings (max {config.embed_max_seq_length} word pieces) in a FAISS IndexFlatIP; "
        f"hybrid = reciprocal rank fusion (k={config.rrf_k}) of both top-{config.hybrid_depth} lists; the re-rankers "
        f"re-order the hybrid top-{config.rerank_depth}: the bi-encoder by cosine of the same MiniLM embeddings, the "
        f"cross-encoder by one joint transformer pass per pair. Re-ranker used: {setup['reranker_source']}."
    )
    ce = setup.get("ce_result")
    if ce is not None:
        report.note(
            f"Cross-encoder training: {ce.n_groups} groups of (question, its technique, {config.ce_negatives} hard "
            f"negatives from the hybrid top-{config.rerank_depth}) from train techniques only, listwise softmax loss, "
            f"{config.ce_head}-pooled head, {ce.steps} steps, {ce.seconds:.0f} s on {report.device}, "
            f"pairs truncated to {config.ce_max_length} word pieces. The registry has no cross-encoder, so this is "
            "the one used; the canonical ms-marco MiniLM cross-encoder would be picked up automatically if registered."
        )
    verdict = "meets" if gain >= config.min_rerank_gain else "misses"
    how = ("its order fused with the hybrid order by RRF (`ce_fusion=rrf`)" if config.ce_fusion == "rrf"
           else "its order alone (`ce_fusion=none`)")
    report.note(
        f"Result: hybrid + cross-encoder rerank ({how}) reaches recall@3 {met['recall_at_3_hybrid_rerank']:.3f} vs "
        f"{met['recall_at_3_vector']:.3f} for vector-only ({gain:+.3f}), which {verdict} the goal of "
        f"{config.min_rerank_gain:+.2f}. BM25 alone: {met['recall_at_3_bm25']:.3f}; hybrid without re-ranking: "
        f"{met['recall_at_3_hybrid']:.3f}; the cross-encoder's order alone: {met['recall_at_3_hybrid_rerank_ce']:.3f} "
        f"(recall@1 {met['recall_at_1_hybrid_rerank_ce']:.3f} vs {met['recall_at_1_hybrid']:.3f} for the hybrid "
        "order). The cross-encoder costs about "
        f"{report.timings['rerank_ms_per_query']:.0f} ms per query on top of the hybrid search."
    )
    ce = setup.get("ce_result")
    if ce is not None:
        tail = ce.losses[-max(1, len(ce.losses) // 5):]
        end, chance = sum(tail) / len(tail), math.log(1 + config.ce_negatives)
        alone = met["recall_at_3_hybrid_rerank_ce"] - met["recall_at_3_hybrid"]
        report.note(
            f"Did the cross-encoder learn? Its listwise loss ends at {end:.2f} (mean of the last fifth of {ce.steps} "
            f"steps) against a chance level of ln({1 + config.ce_negatives}) = {chance:.2f}, and on held-out "
            f"techniques its order alone is {alone:+.3f} recall@3 against the hybrid order it re-ranks. "
            "The [CLS] head of earlier runs stayed at chance (this MiniLM checkpoint is a mean-pooling bi-encoder: "
            "its [CLS] state and pooler were never trained); the mean-pooled head with a larger head learning rate "
            "is what moves the loss. A few hundred steps are still far from the hundreds of thousands that "
            "published ms-marco cross-encoders train for, and the hard negatives are often sibling sub-techniques, "
            "so its order is noisy; fusing it with the hybrid order keeps what each gets right."
        )
