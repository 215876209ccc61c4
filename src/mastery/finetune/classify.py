"""Fine-tune a pretrained encoder for text classification with the Hugging Face ``Trainer``.

Works on any local encoder folder in Hugging Face format (the registry's all-MiniLM-L6-v2, or a
DistilBERT / BERT folder you have): ``AutoModelForSequenceClassification`` puts a fresh linear head on
the [CLS] representation and the whole network is trained end to end.

Long reviews are cut with head + tail truncation (keep the first ``head_tokens`` and the last
``max_length - 2 - head_tokens`` word pieces): Sun et al. 2019 ("How to Fine-Tune BERT for Text
Classification") found it beats keeping only the head on IMDb, where the verdict is often at the end.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mastery.core.errors import MasteryError
from mastery.core.progress import NullProgress, Progress

log = logging.getLogger(__name__)


class FineTuneError(MasteryError, ValueError):
    """Bad input to fine-tuning (empty texts, mismatched labels, a folder that is not a model)."""


@dataclass(frozen=True)
class FineTuneSettings:
    max_length: int = 256  # word pieces per text, [CLS] and [SEP] included
    head_tokens: int = 64  # of those, taken from the start; the rest from the end
    epochs: float = 1.0
    batch_size: int = 16
    eval_batch_size: int = 64
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    bf16: bool = False  # bfloat16 autocast; pass mastery.core.precision.decide_bf16(...).bf16 for the device
    group_by_length: bool = True  # batches of similar length: less padding, same result in expectation
    # "mean": a linear head on the mean of the token vectors (how sentence-transformers models such as
    # all-MiniLM-L6-v2 were trained, so fine-tuning starts from a useful representation); "cls": the
    # standard BERT head on the [CLS] pooler (what DistilBERT/BERT checkpoints expect).
    pooling: str = "mean"
    logging_steps: int = 20
    seed: int = 0


@dataclass
class FineTuneResult:
    f1: float
    accuracy: float
    predictions: np.ndarray  # (N,) predicted class per eval text
    probabilities: np.ndarray  # (N, K) softmax
    train_seconds: float
    eval_seconds: float
    train_samples: int
    truncated_fraction: float  # share of training texts longer than max_length
    log_history: list[dict[str, float]] = field(default_factory=list)
    model_dir: Path | None = None
    device: str = "cpu"
    n_params: int = 0
    model: Any = None  # the trained classifier (for saving to the model registry)
    tokenizer: Any = None


def head_tail_ids(ids: list[int], max_body: int, head: int) -> list[int]:
    """Keep ``head`` ids from the start and the rest of ``max_body`` from the end (no specials added)."""
    if len(ids) <= max_body:
        return ids
    head = min(head, max_body)
    tail = max_body - head
    return ids[:head] + (ids[len(ids) - tail:] if tail else [])


def encode_texts(tokenizer: Any, texts: Sequence[str], max_length: int, head_tokens: int) -> tuple[list[dict], float]:
    """Tokenise with head+tail truncation; returns features for the collator and the truncated share."""
    if not texts:
        raise FineTuneError("no texts to encode")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise FineTuneError(f"{len(bad)} text(s) are empty or not strings (first at index {bad[0]})")
    body = max_length - 2
    # BERT-family layout: [CLS] ids [SEP] (RoBERTa-style tokenizers name them bos/eos).
    first = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    last = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if first is None or last is None:
        raise FineTuneError("the tokenizer has no [CLS]/[SEP] (or bos/eos) tokens to frame a sequence")
    raw = tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    features, truncated = [], 0
    for ids in raw:
        truncated += len(ids) > body
        kept = [first, *head_tail_ids(ids, body, head_tokens), last]
        features.append({"input_ids": kept, "attention_mask": [1] * len(kept)})
    return features, truncated / len(raw)


class _Features:
    """A torch-style dataset over pre-tokenised features (plus labels)."""

    def __init__(self, features: list[dict], labels: Sequence[int] | None = None) -> None:
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.features[i])
        if self.labels is not None:
            item["labels"] = int(self.labels[i])
        return item


def _progress_callback(progress: Progress) -> Any:
    from transformers import TrainerCallback

    class ToProgress(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            progress.stage("fine-tune", state.max_steps)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            progress.step(1)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            if logs and "loss" in logs:
                progress.epoch(int(state.global_step), {"finetune_loss": float(logs["loss"])})

    return ToProgress()


def mean_pool_classifier(encoder: Any, num_labels: int, dropout: float = 0.1) -> Any:
    """encoder -> masked mean of its last hidden states (B, H) -> dropout -> linear (B, K)."""
    import torch
    from torch import nn
    from transformers.modeling_outputs import SequenceClassifierOutput

    class MeanPoolClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.dropout = nn.Dropout(dropout)
            self.head = nn.Linear(encoder.config.hidden_size, num_labels)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None,
                    **_: Any) -> SequenceClassifierOutput:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, H)
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1): padding contributes nothing
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)  # (B, H)
            logits = self.head(self.dropout(pooled))  # (B, K)
            loss = nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
            return SequenceClassifierOutput(loss=loss, logits=logits)

    return MeanPoolClassifier()


def load_classifier(model_dir: str | Path, num_labels: int, pooling: str = "mean") -> tuple[Any, Any]:
    """(tokenizer, model) from a local Hugging Face folder; never downloads."""
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise FineTuneError(f"{path} is not a Hugging Face model folder (no config.json)")
    if pooling not in ("mean", "cls"):
        raise FineTuneError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if pooling == "cls":
        return tokenizer, AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=num_labels,
                                                                             local_files_only=True)
    encoder = AutoModel.from_pretrained(str(path), local_files_only=True, add_pooling_layer=False)
    return tokenizer, mean_pool_classifier(encoder, num_labels)


def finetune_classifier(model_dir: str | Path, train_texts: Sequence[str], train_labels: Sequence[int],
                        eval_texts: Sequence[str], eval_labels: Sequence[int], settings: FineTuneSettings, *,
                        device: str = "cpu", output_dir: str | Path | None = None,
                        progress: Progress | None = None) -> FineTuneResult:
    """Train a classification head and the encoder under it with ``Trainer``; evaluate on the eval texts.

    ``output_dir``: where the fine-tuned model is saved (safetensors + tokenizer); a temporary folder
    that is removed afterwards when None."""
    import torch
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    progress = progress or NullProgress()
    if len(train_texts) != len(train_labels) or len(eval_texts) != len(eval_labels):
        raise FineTuneError("texts and labels differ in length")
    labels = sorted(set(int(y) for y in train_labels))
    if len(labels) < 2 or labels != list(range(len(labels))):
        raise FineTuneError(f"labels must be 0..K-1 with K >= 2, got {labels}")
    if settings.max_length < 8 or not 0 <= settings.head_tokens <= settings.max_length - 2:
        raise FineTuneError("max_length must be >= 8 and head_tokens within [0, max_length - 2]")

    tokenizer, model = load_classifier(model_dir, num_labels=len(labels), pooling=settings.pooling)
    n_params = sum(p.numel() for p in model.parameters())
    train_features, truncated = encode_texts(tokenizer, train_texts, settings.max_length, settings.head_tokens)
    eval_features, _ = encode_texts(tokenizer, eval_texts, settings.max_length, settings.head_tokens)

    use_cpu = device == "cpu" or not torch.cuda.is_available()
    steps = int(np.ceil(len(train_features) / settings.batch_size) * settings.epochs)
    with tempfile.TemporaryDirectory(prefix="mastery-finetune-") as scratch:
        args = TrainingArguments(
            output_dir=scratch, use_cpu=use_cpu, bf16=settings.bf16, seed=settings.seed, data_seed=settings.seed,
            num_train_epochs=settings.epochs, per_device_train_batch_size=settings.batch_size,
            per_device_eval_batch_size=settings.eval_batch_size, learning_rate=settings.lr,
            weight_decay=settings.weight_decay, warmup_steps=int(settings.warmup_fraction * steps),
            lr_scheduler_type="linear", logging_steps=settings.logging_steps, save_strategy="no",
            eval_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0,
            train_sampling_strategy="group_by_length" if settings.group_by_length else "random",
        )
        trainer = Trainer(model=model, args=args, train_dataset=_Features(train_features, train_labels),
                          data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
                          callbacks=[_progress_callback(progress)])
        # Trainer prints its log dicts to stdout when tqdm is off; ours go through Progress and logging.
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        start = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - start

        progress.stage("evaluate", None)
        start = time.perf_counter()
        # With "group_by_length", Trainer also length-groups the *eval* sampler, in a random order, and
        # predict() then returns predictions that no longer line up with the inputs. Predict sequentially
        # over the texts sorted by length (as little padding) and put the rows back in input order.
        trainer.args.train_sampling_strategy = "sequential"
        order = np.argsort([len(f["input_ids"]) for f in eval_features], kind="stable")
        output = trainer.predict(_Features([eval_features[i] for i in order]))
        eval_seconds = time.perf_counter() - start
        logits = np.empty_like(np.asarray(output.predictions, dtype=np.float64))  # (N, K)
        logits[order] = np.asarray(output.predictions, dtype=np.float64)
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        predictions = probabilities.argmax(axis=1)

        saved = None
        if output_dir is not None:
            saved = Path(output_dir)
            trainer.save_model(str(saved))  # config.json + model.safetensors + tokenizer files
            progress.artifact(str(saved), kind="model")
        history = [{k: float(v) for k, v in row.items() if isinstance(v, int | float)}
                   for row in trainer.state.log_history]

    y_true = np.asarray(eval_labels)
    average = "binary" if len(labels) == 2 else "macro"
    return FineTuneResult(
        f1=float(f1_score(y_true, predictions, average=average)), accuracy=float(accuracy_score(y_true, predictions)),
        predictions=predictions, probabilities=probabilities, train_seconds=train_seconds,
        eval_seconds=eval_seconds, train_samples=len(train_features), truncated_fraction=truncated,
        log_history=history, model_dir=saved, device="cpu" if use_cpu else "cuda", n_params=n_params,
        model=model, tokenizer=tokenizer,
    )


# -- the model registry: save, rebuild and run a fine-tuned classifier --------------------------------
def registry_files(saved_dir: str | Path, base_model_dir: str | Path) -> dict[str, Path]:
    """The files of a ``finetune_classifier(output_dir=...)`` folder that rebuild the classifier.

    Trainer also writes ``training_args.bin`` (a pickle): left out. A mean-pool classifier is not a
    ``PreTrainedModel``, so its folder has no ``config.json``: the encoder's is taken from the base model.
    """
    saved, base = Path(saved_dir), Path(base_model_dir)
    files = {p.name: p for p in sorted(saved.iterdir()) if p.is_file() and p.suffix != ".bin"}
    if "config.json" not in files:
        files["config.json"] = base / "config.json"
    return files


def load_registered_classifier(folder: str | Path, num_labels: int, pooling: str = "mean") -> tuple[Any, Any]:
    """(tokenizer, model in eval mode) from a registered folder (see :func:`registry_files`); never downloads."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = Path(folder)
    if pooling == "cls":
        tokenizer, model = load_classifier(path, num_labels, "cls")
        return tokenizer, model.eval()
    encoder = AutoModel.from_config(AutoConfig.from_pretrained(str(path), local_files_only=True),
                                    add_pooling_layer=False)
    model = mean_pool_classifier(encoder, num_labels)
    model.load_state_dict(load_file(str(path / "model.safetensors")), strict=True)
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True), model.eval()


def classify_texts(tokenizer: Any, model: Any, texts: Sequence[str], max_length: int = 256,
                   head_tokens: int = 64) -> np.ndarray:
    """Class probabilities (N, K), float32 forward pass in eval mode, the same head+tail truncation as training."""
    import torch
    from transformers import DataCollatorWithPadding

    features, _ = encode_texts(tokenizer, texts, max_length, head_tokens)
    batch = DataCollatorWithPadding(tokenizer)(features)
    device = next(model.parameters()).device
    model.eval()
    with torch.inference_mode():
        logits = model(input_ids=batch["input_ids"].to(device),
                       attention_mask=batch["attention_mask"].to(device)).logits  # (N, K)
    return torch.softmax(logits.float(), dim=-1).cpu().numpy()
