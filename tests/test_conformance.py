"""Every implemented lab's tiny preset: a passing Report that survives JSON and is reproducible."""

import json

import pytest

from mastery.core.labs import load_lab, run_lab
from mastery.core.lessons import LESSONS
from mastery.core.report import Report
from tests.conftest import needs_mirror

IMPLEMENTED = [lesson.id for lesson in LESSONS if lesson.implemented]

# Metric names the issues promise for each lab (timings for measured speed-ups).
REQUIRED_METRICS = {
    "l02": {"logreg_f1", "tree_f1", "logreg_roc_auc"},
    "l03": {"linear_rmse_log", "xgb_rmse_log"},
    "l04": {"test_accuracy"},
    "l05": {"test_accuracy"},
    "l06": {"final_loss_sgd", "final_loss_sgd_momentum", "final_loss_adam"},
    "l07": {"baseline_val_accuracy", "regularized_val_accuracy"},
    "l09": {"test_accuracy"},
    "l10": {"fewshot_pretrained_accuracy", "fewshot_scratch_accuracy", "screens_test_accuracy", "screens_f1"},
    "l11": {"map50", "map50_95", "my_map50", "my_map50_95"},
    "l12": {"dice", "iou", "dsb_map"},
    "l13": {"bpe_vocab_overlap", "bpe_tokens_per_char", "hf_tokens_per_char", "embed_f1", "tfidf_f1"},
    "l15": {"exact_match", "exact_match_longer", "mha_max_abs_diff_vs_torch"},
    "l16": {"mlm_masked_accuracy", "mlm_unigram_baseline", "f1", "n_train", "max_length"},
    "l17": {"ivf_recall_at_10", "faiss_ivf_recall_at_10", "random_ivf_recall_at_10", "random_faiss_ivf_recall_at_10",
            "exact_agreement_with_faiss_flat", "ivf_full_probe_recall_at_10", "embed_nprobe_for_target_recall"},
    "l18": {"files_added", "reingest_added", "changed_replaced", "attack_documents", "query_hit_rate"},
    "l19": {"citation_rate", "correct_source_rate", "refusal_rate", "retrieval_hit_rate", "answer_keyword_rate"},
    "l20": {"recall_at_3_vector", "recall_at_3_bm25", "recall_at_3_hybrid", "recall_at_3_hybrid_rerank",
            "mrr_hybrid_rerank", "recall_at_1_hybrid_rerank", "recall_at_10_hybrid_rerank",
            "recall_at_3_hybrid_rerank_ce"},
    "l21": {"success_rate", "mean_steps", "format_error_rate", "recovered_by_retry", "json_fallback", "native_calls",
            "gave_up", "tokens_per_question", "success_rate_text"},
    "l22": {"intent_accuracy", "fallback_accuracy", "retrieval_hit_rate", "draft_key_fact_rate",
            "draft_cites_policy_rate", "hitl_paths_ok", "restart_resumed"},
    "l23": {"runs_completed", "mean_revision_rounds", "citation_rate", "approval_rate", "mean_tokens_per_run",
            "mean_llm_calls_per_run"},
    "l24": {"fuzz_5xx", "scenarios_as_expected", "sse_streams_match", "runs_lost", "idempotent_replay_same_run",
            "runs_kept_after_restart", "bad_requests_rejected_naming_field"},
    "l25": {"fuzz_5xx", "fuzz_cases", "bad_requests_rejected_naming_field", "artifact_attacks_refused",
            "served_max_abs_diff", "cv_f1"},
    "l14": {"val_loss", "gru_val_loss", "rnn_grad_ratio_t0", "lstm_grad_ratio_t0", "repeat_rate_t0.5"},
}
REQUIRED_TIMINGS = {"l01": {"speedup_at_200"}, "l17": {"ivf_speedup_vs_flat", "random_ivf_speedup_vs_flat"}}


def test_module_1_is_implemented():
    assert {f"l{i:02d}" for i in range(1, 9)} <= set(IMPLEMENTED)


@needs_mirror
@pytest.mark.parametrize("lab_id", IMPLEMENTED)
def test_tiny_preset_conforms(lab_id, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything a lab writes relative to the cwd lands here
    lab = load_lab(lab_id)
    config = lab.config("tiny")
    first = run_lab(lab, config, "tiny")
    assert isinstance(first, Report) and first.lab == lab_id and first.preset == "tiny"
    failed = [f"{c.name}: expected {c.expectation}, got {c.value}" for c in first.checks if not c.passed]
    assert not failed, failed
    assert first.checks, "a lab must check something"
    assert first.metrics or first.timings
    assert REQUIRED_METRICS.get(lab_id, set()) <= set(first.metrics)
    assert REQUIRED_TIMINGS.get(lab_id, set()) <= set(first.timings)
    assert first.figures and all(first.figure_bytes(f).startswith(b"\x89PNG") for f in first.figures)
    assert first.device and first.versions["python"]

    back = Report.from_json(first.to_json())
    assert json.loads(back.to_json()) == json.loads(first.to_json())

    second = run_lab(lab, config, "tiny")
    assert second.metrics == first.metrics, "same seed must give the same metrics"
