"""L16 · BERT and fine-tuning: masked-language pretraining from scratch, then IMDb sentiment with ``Trainer``."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Interval

from mastery.core.config import Fraction
from mastery.core.progress import Progress
from mastery.core.report import Report
from mastery.core.runtime import Device

# Sentences whose [MASK] the pretrained model fills in (shown in the report).
CLOZE = ("this movie was [MASK] .", "the acting was [MASK] and the plot was boring .",
         "i have never seen such a [MASK] film .", "one of the best [MASK] i have ever seen .")


REQUIRES: tuple[str, ...] = ("imdb", "all-minilm-l6-v2")  # registered assets the tiny preset reads


@dataclass(frozen=True)
class Config:
    # Masked-language-model pretraining of a small BERT from scratch on IMDb review text
    mlm_train_reviews: Annotated[int, Interval(ge=1, le=25_000)] = 6_000  # from the train split (labels unused)
    # from the test split: held-out masked-token accuracy
    mlm_eval_reviews: Annotated[int, Interval(ge=1, le=25_000)] = 1_000
    wordpiece_vocab: Annotated[int, Interval(ge=100, le=1_000_000)] = 8_000
    mlm_block_len: Annotated[int, Interval(ge=8, le=4096)] = 128
    mlm_max_blocks: Annotated[int, Interval(ge=1, le=10_000_000)] = 10_000
    mlm_hidden: Annotated[int, Interval(ge=1, le=4096)] = 256
    mlm_layers: Annotated[int, Interval(ge=1, le=48)] = 4
    mlm_heads: Annotated[int, Interval(ge=1, le=64)] = 4
    mlm_epochs: Annotated[int, Interval(ge=1, le=1000)] = 2
    mlm_batch_size: Annotated[int, Interval(ge=1, le=4096)] = 32
    mlm_lr: Annotated[float, Interval(gt=0, le=10)] = 5e-4
    # Sentiment fine-tuning with the Hugging Face Trainer
    model: str = "all-minilm-l6-v2"  # a registry model or a local Hugging Face folder (e.g. a DistilBERT)
    n_train: Annotated[int, Interval(ge=4, le=25_000)] = 8_000  # stratified subset of the 25,000 training reviews
    n_test: Annotated[int, Interval(ge=4, le=25_000)] | None = None  # None = the whole 25,000-review test split
    max_length: Annotated[int, Interval(ge=8, le=512)] = 256
    head_tokens: Annotated[int, Interval(ge=0, le=510)] = 64
    epochs: Annotated[float, Interval(gt=0, le=1000)] = 2.0
    batch_size: Annotated[int, Interval(ge=1, le=4096)] = 16
    lr: Annotated[float, Interval(gt=0, le=10)] = 1e-4
    # "mean" suits sentence-transformers encoders such as MiniLM; "cls" for DistilBERT/BERT
    pooling: Literal["mean", "cls"] = "mean"
    bf16: Literal["auto", "on", "off"] = "auto"  # bf16 autocast (MLM and fine-tuning) where the device has it natively
    device: Device = "auto"
    min_f1: Fraction = 0.88
    # masked-token accuracy must be this many times the unigram baseline
    min_mlm_gain: Annotated[float, Interval(ge=0, le=1000)] = 2.0
    register: bool = False  # save the sentiment classifier to the model registry as imdb-sentiment-minilm
    seed: int = 0

    def validate(self) -> None:
        from mastery.core.errors import ConfigError

        if self.mlm_hidden % self.mlm_heads:
            raise ConfigError("mlm_hidden must be divisible by mlm_heads")
        if self.head_tokens > self.max_length - 2:
            raise ConfigError("head_tokens must lie in [0, max_length - 2]")


# The numbers that summarise a run: the README table and the conformance test read them from here.
HEADLINE = ("mlm_masked_accuracy", "f1")

PRESETS = {
    "tiny": Config(mlm_train_reviews=150, mlm_eval_reviews=40, wordpiece_vocab=1500, mlm_block_len=48,
                   mlm_max_blocks=400, mlm_hidden=64, mlm_layers=2, mlm_heads=2, mlm_epochs=2, mlm_batch_size=16,
                   mlm_lr=1e-3, n_train=48, n_test=32, max_length=48, head_tokens=16, epochs=1.0,
                   min_f1=0.0, min_mlm_gain=1.0),
    "full": Config(register=True),
}


def run(config: Config, progress: Progress) -> Report:
    from mastery.assets.loaders import load_imdb
    from mastery.core.precision import decide_bf16
    from mastery.nn.train import start_torch_report

    report, device = start_torch_report("l16", config)
    precision = decide_bf16(config.bf16, device)
    precision.record(report)
    imdb = load_imdb()
    _pretrain(report, config, imdb, device, precision.bf16, progress)
    _finetune(report, config, imdb, str(device), precision.bf16, progress)
    return report


def _pretrain(report: Report, config: Config, imdb: Any, device: Any, bf16: bool, progress: Progress) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from mastery.assets.loaders import balanced_subset
    from mastery.text.mlm import (
        MLMError,
        PieceVocabulary,
        build_bert,
        evaluate_mlm,
        pack_sequences,
        text_blocks,
        train_mlm,
        unigram_baseline_accuracy,
    )

    progress.stage("WordPiece vocabulary", None)
    train_text = balanced_subset(imdb[imdb.split == "train"], config.mlm_train_reviews, config.seed).text.tolist()
    eval_text = balanced_subset(imdb[imdb.split == "test"], config.mlm_eval_reviews, config.seed + 1).text.tolist()
    from transformers import AutoTokenizer

    from mastery.assets.store import resolve

    bert_tokenizer = AutoTokenizer.from_pretrained(str(resolve("all-minilm-l6-v2")), local_files_only=True)
    tokenizer = PieceVocabulary(bert_tokenizer, train_text, config.wordpiece_vocab)
    spec = tokenizer.spec(max_len=config.mlm_block_len, hidden=config.mlm_hidden, layers=config.mlm_layers,
                          heads=config.mlm_heads, intermediate=4 * config.mlm_hidden)
    train_blocks = text_blocks(tokenizer, train_text, config.mlm_block_len, config.mlm_max_blocks)
    eval_blocks = text_blocks(tokenizer, eval_text, config.mlm_block_len, max(64, config.mlm_max_blocks // 10))

    result = train_mlm(train_blocks, eval_blocks, spec, epochs=config.mlm_epochs, batch_size=config.mlm_batch_size,
                       lr=config.mlm_lr, device=device, bf16=bf16, seed=config.seed, progress=progress)
    train_ids, _ = pack_sequences(train_blocks, spec)
    eval_ids, eval_att = pack_sequences(eval_blocks, spec)
    baseline = unigram_baseline_accuracy(train_ids, eval_ids, eval_att, spec)
    torch.manual_seed(config.seed)  # the same architecture and initialisation, before learning anything
    untrained_accuracy, _ = evaluate_mlm(build_bert(spec).to(device), eval_ids, eval_att, spec, device)
    accuracy = result.eval_accuracy[-1]
    report.metric("mlm_vocab_size", spec.vocab_size)
    report.metric("mlm_vocab_coverage", round(tokenizer.coverage, 6))
    report.metric("mlm_train_blocks", len(train_blocks))
    report.metric("mlm_eval_blocks", len(eval_blocks))
    report.metric("mlm_params", result.n_params)
    report.metric("mlm_tokens_seen", result.tokens_seen)
    report.metric("mlm_masked_accuracy", round(accuracy, 6))
    report.metric("mlm_eval_loss", round(result.eval_loss[-1], 6))
    report.metric("mlm_untrained_accuracy", round(untrained_accuracy, 6))
    report.metric("mlm_unigram_baseline", round(baseline, 6))
    report.timing("mlm_train_seconds", result.seconds)
    report.timing("mlm_tokens_per_second", result.tokens_seen / max(result.seconds, 1e-9))
    report.check("mlm_loss_decreases", result.losses[-1] < result.losses[0], "MLM training loss falls",
                 f"{result.losses[0]:.3f} -> {result.losses[-1]:.3f}")
    report.check("mlm_beats_unigram", accuracy >= config.min_mlm_gain * baseline,
                 f"held-out masked-token accuracy >= {config.min_mlm_gain} x always guessing the most frequent "
                 "token", f"{accuracy:.4f} vs baseline {baseline:.4f}")
    errors = []
    for bad in ([], [[]]):
        try:
            pack_sequences(bad, spec)
            errors.append("no error")
        except MLMError as exc:
            errors.append(str(exc))
    try:
        PieceVocabulary(bert_tokenizer, ["", "  "])
        errors.append("no error")
    except MLMError as exc:
        errors.append(str(exc))
    report.check("mlm_rejects_empty_input", "no error" not in errors,
                 "an empty corpus raises MLMError (a ValueError) in the tokenizer and the trainer", "; ".join(errors))

    rows = []
    model = result.model.eval()
    for sentence in CLOZE:
        left, right = tokenizer.encode(sentence.split("[MASK]"))
        cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        ids, start = [cls_id, *left, spec.mask_id, *right, sep_id], 1 + len(left)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids], device=device)).logits[0, start].float()
        top = torch.topk(logits, 5).indices.tolist()
        rows.append({"sentence": sentence, "top-5 predictions": ", ".join(tokenizer.id_to_token(i) for i in top)})
    report.table("What the pretrained BERT puts in [MASK]", rows)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    axes[0].plot(result.loss_steps, result.losses)
    axes[0].set(xlabel="step", ylabel="masked-token cross-entropy", title="MLM pretraining loss")
    epochs = list(range(1, len(result.eval_accuracy) + 1))
    axes[1].plot(epochs, result.eval_accuracy, marker="o", label="trained BERT")
    axes[1].axhline(baseline, color="grey", linestyle="--", label="most frequent token")
    axes[1].set(xlabel="epoch", ylabel="held-out masked-token accuracy", title="Masked-token accuracy", ylim=(0, None))
    axes[1].legend()
    report.figure("mlm_pretraining", fig)
    report.note(
        f"MLM: a {config.mlm_layers}-layer BERT (hidden {config.mlm_hidden}, {config.mlm_heads} heads, "
        f"{result.n_params / 1e6:.1f}M parameters) built from a config with random weights and pretrained from "
        f"scratch on {len(train_blocks):,} blocks of {config.mlm_block_len} WordPiece tokens from "
        f"{len(train_text):,} IMDb training reviews (BERT's uncased WordPiece segmentation, vocabulary cut to the "
        f"{spec.vocab_size:,} most frequent pieces: {tokenizer.coverage:.1%} of the corpus, the rest [UNK]), "
        f"{config.mlm_epochs} epochs, "
        "15% of tokens chosen per block and re-drawn every epoch (80% [MASK], 10% random, 10% unchanged). "
        f"Held-out masked-token accuracy on {len(eval_blocks):,} blocks of test-split reviews: {accuracy:.3f}, "
        f"against {baseline:.3f} for always guessing the most frequent token and "
        f"{untrained_accuracy:.4f} for the untrained network. With {result.tokens_seen / 1e6:.1f}M training tokens "
        "(BERT saw 3.3 billion words) it has learned word frequencies and local syntax more than meaning, which "
        "the [MASK] fills show. The trainer takes any integer token "
        "sequences, so the same code pretrains on log-template keys (LogBERT) for Cyber-Sentinel."
    )


def _resolve_model(name: str) -> tuple[Path, str]:
    """A registry model name or a local folder -> (folder, how it was found)."""
    from mastery.assets.catalog import ASSETS
    from mastery.core.errors import ConfigError

    path = Path(name).expanduser()
    if path.is_dir():
        return path, f"local folder {path}"
    if name in ASSETS:
        from mastery.assets.store import resolve

        return resolve(name), f"registry model {name}"
    raise ConfigError(f"model {name!r} is neither a registry model nor a folder")


def _finetune(report: Report, config: Config, imdb: Any, device: str, bf16: bool, progress: Progress) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from mastery.assets.loaders import balanced_subset
    from mastery.finetune.classify import FineTuneError, FineTuneSettings, encode_texts, finetune_classifier
    from mastery.nn.train import confusion_matrix

    model_dir, source = _resolve_model(config.model)
    train = balanced_subset(imdb[imdb.split == "train"], config.n_train, config.seed)
    test = balanced_subset(imdb[imdb.split == "test"], config.n_test, config.seed)
    settings = FineTuneSettings(max_length=config.max_length, head_tokens=config.head_tokens, epochs=config.epochs,
                                batch_size=config.batch_size, lr=config.lr, bf16=bf16, pooling=config.pooling,
                                seed=config.seed)
    scratch = tempfile.TemporaryDirectory(prefix="mastery-l16-") if config.register else None
    result = finetune_classifier(model_dir, train.text.tolist(), train.label.tolist(), test.text.tolist(),
                                 test.label.tolist(), settings, device=device, progress=progress,
                                 output_dir=Path(scratch.name) / "model" if scratch else None)
    report.metric("n_train", len(train))
    report.metric("n_test", len(test))
    report.metric("max_length", config.max_length)
    report.metric("truncated_fraction", round(result.truncated_fraction, 6))
    report.metric("finetune_params", result.n_params)
    # Rounded: bf16 matmuls can differ in the last bits between CPUs.
    report.metric("f1", round(result.f1, 6))
    report.metric("accuracy", round(result.accuracy, 6))
    report.timing("finetune_train_seconds", result.train_seconds)
    report.timing("finetune_eval_seconds", result.eval_seconds)
    report.timing("finetune_train_samples_per_second", result.train_samples * config.epochs / result.train_seconds)
    report.timing("finetune_eval_samples_per_second", len(test) / result.eval_seconds)
    report.check("f1", result.f1 >= config.min_f1, f"test F1 >= {config.min_f1}", round(result.f1, 4))
    if scratch is not None:
        with scratch:
            _register(report, config, result, model_dir, source)
    try:
        from transformers import AutoTokenizer

        encode_texts(AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True), ["fine", ""], 32, 8)
        outcome = "no error"
    except FineTuneError as exc:
        outcome = str(exc)
    report.check("finetune_rejects_empty_text", outcome != "no error", "an empty review raises FineTuneError",
                 outcome)

    losses = [(row["step"], row["loss"]) for row in result.log_history if "loss" in row and "step" in row]
    y_true = test.label.to_numpy()
    cm = confusion_matrix(y_true, result.predictions, 2)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    if losses:
        axes[0].plot(*zip(*losses, strict=True))
    axes[0].set(xlabel="step", ylabel="cross-entropy", title="Fine-tuning loss (Trainer log)")
    axes[1].imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        axes[1].text(j, i, f"{v:,}", ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    axes[1].set(xticks=[0, 1], yticks=[0, 1], xticklabels=["neg", "pos"], yticklabels=["neg", "pos"],
                xlabel="predicted", ylabel="true", title=f"Test confusion matrix (F1 {result.f1:.3f})")
    p_pos = result.probabilities[:, 1]
    axes[2].hist([p_pos[y_true == 0], p_pos[y_true == 1]], bins=30, label=["negative reviews", "positive reviews"])
    axes[2].set(xlabel="P(positive)", ylabel="reviews", title="Predicted probability by true label")
    axes[2].legend()
    report.figure("finetune", fig)
    report.table("IMDb sentiment fine-tuning", [{
        "model": source, "train reviews": len(train), "test reviews": len(test), "max_length": config.max_length,
        "truncation": f"head {config.head_tokens} + tail {config.max_length - 2 - config.head_tokens}",
        "epochs": config.epochs, "F1": round(result.f1, 4), "accuracy": round(result.accuracy, 4),
        "train min": round(result.train_seconds / 60, 1), "device": result.device,
    }])
    head = ("a linear head on the mean of its token vectors (how sentence-transformers trained it; the unused "
            "[CLS] pooler of this checkpoint made learning stall at the start)" if config.pooling == "mean"
            else "the standard BERT head on the [CLS] pooler")
    report.note(
        f"Fine-tuning: {source} ({result.n_params / 1e6:.1f}M parameters) with {head}, trained end to "
        f"end by the Hugging Face Trainer on {len(train):,} stratified IMDb training reviews for {config.epochs:g} "
        f"epochs (AdamW, lr {config.lr:g}, linear decay with 10% warm-up, batch {config.batch_size}, "
        f"{'bf16 autocast, ' if bf16 else ''}length-grouped batches), tested on {len(test):,} test reviews. "
        f"Reviews longer than {config.max_length} word pieces ({result.truncated_fraction:.0%} of training reviews) "
        f"keep their first {config.head_tokens} and last {config.max_length - 2 - config.head_tokens}. "
        "DistilBERT (anchor F1 0.92-0.93 with full data and 512 tokens) has no offline copy in the registry, so "
        "the shelf all-MiniLM-L6-v2 encoder (6 layers, 384 hidden: about a third of DistilBERT's size) is "
        "fine-tuned; pass `--set model=/path/to/distilbert-folder` to use one you have. The training subset and "
        "sequence length were chosen so the full preset fits in about an hour on a 2-core CPU."
    )


PROBE_REVIEWS = ("A wonderful, moving film with a brilliant cast.",
                 "Dull, predictable and far too long; I wanted my money back.")


def _register(report: Report, config: Config, result: Any, base_dir: Path, source: str) -> None:
    from mastery.finetune.classify import classify_texts, registry_files
    from mastery.ops.registry import open_registry
    from mastery.ops.registry_loaders import note_registered

    probs = classify_texts(result.tokenizer, result.model, PROBE_REVIEWS, config.max_length, config.head_tokens)
    assets = ["imdb"] + ([config.model] if config.model == "all-minilm-l6-v2" else [])
    name = "imdb-sentiment-minilm" if config.model == "all-minilm-l6-v2" else "imdb-sentiment-custom"
    ref = open_registry().save(
        name, registry_files(result.model_dir, base_dir), kind="hf",
        config={"lab": "l16", "lab_config": report.config, "base_model": source, "pooling": config.pooling,
                "num_labels": 2, "labels": ["negative", "positive"], "max_length": config.max_length,
                "head_tokens": config.head_tokens,
                "load": "mastery.finetune.classify.load_registered_classifier(path, 2, pooling)"},
        metrics={k: report.metrics[k] for k in ("f1", "accuracy")}, data_assets=assets,
        probe={"input": list(PROBE_REVIEWS), "output": probs.tolist()},
        description="L16 IMDb sentiment classifier (fine-tuned MiniLM encoder + linear head)")
    note_registered(report, ref)
