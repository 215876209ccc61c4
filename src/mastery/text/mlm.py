"""Masked-language-model pretraining of a small BERT from scratch, on any token sequences.

The trainer knows nothing about words: it takes sequences of integer token ids plus the ids of the
special tokens, so the same code pretrains on IMDb word pieces (L16) or on log-template keys
(LogBERT, Cyber-Sentinel's log-anomaly detector). The network is Hugging Face's ``BertForMaskedLM``
built from a config (random initialisation, no downloaded weights); masking, batching and the
training loop are ours, so the objective is visible:

- choose 15% of the non-special positions of each sequence;
- of those, 80% become [MASK], 10% a random token, 10% stay as they are (BERT, Devlin et al. 2019);
- the loss is cross-entropy on the chosen positions only (labels -100 elsewhere);
- masked-token accuracy = share of chosen positions whose original token is the arg-max prediction.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mastery.core.errors import MasteryError
from mastery.core.progress import NullProgress, Progress

log = logging.getLogger(__name__)
IGNORE = -100  # label of positions that are not predicted (PyTorch's cross-entropy ignore_index)


class MLMError(MasteryError, ValueError):
    """Bad input to the MLM trainer (empty corpus, ids out of range, bad special ids)."""


@dataclass(frozen=True)
class MLMSpec:
    """The token space and the size of the BERT to build."""

    vocab_size: int
    pad_id: int
    mask_id: int
    special_ids: tuple[int, ...] = ()  # never chosen for masking (CLS, SEP, PAD, UNK, ...)
    max_len: int = 128
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    intermediate: int = 1024
    dropout: float = 0.1

    def validate(self) -> None:
        ids = (self.pad_id, self.mask_id, *self.special_ids)
        if self.vocab_size < 4 or any(not 0 <= i < self.vocab_size for i in ids):
            raise MLMError(f"special ids {ids} must lie in [0, vocab_size={self.vocab_size})")
        if self.hidden % self.heads:
            raise MLMError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if self.max_len < 4:
            raise MLMError("max_len must be >= 4")


def build_bert(spec: MLMSpec) -> Any:
    """A randomly initialised ``BertForMaskedLM`` of the given size."""
    from transformers import BertConfig, BertForMaskedLM

    spec.validate()
    config = BertConfig(vocab_size=spec.vocab_size, hidden_size=spec.hidden, num_hidden_layers=spec.layers,
                        num_attention_heads=spec.heads, intermediate_size=spec.intermediate,
                        max_position_embeddings=spec.max_len, pad_token_id=spec.pad_id,
                        hidden_dropout_prob=spec.dropout, attention_probs_dropout_prob=spec.dropout)
    return BertForMaskedLM(config)


def pack_sequences(sequences: Sequence[Sequence[int]], spec: MLMSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (or cut) sequences to ``spec.max_len``: input ids (N, L) and attention mask (N, L)."""
    if not sequences or all(len(s) == 0 for s in sequences):
        raise MLMError("no token sequences to train on (the corpus is empty)")
    n, length = len(sequences), spec.max_len
    ids = torch.full((n, length), spec.pad_id, dtype=torch.long)
    attention = torch.zeros((n, length), dtype=torch.long)
    for row, seq in enumerate(sequences):
        seq = list(seq)[:length]
        if seq:
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            attention[row, : len(seq)] = 1
    if int(ids.min()) < 0 or int(ids.max()) >= spec.vocab_size:
        raise MLMError(f"token ids must lie in [0, {spec.vocab_size}); got {int(ids.min())}..{int(ids.max())}")
    return ids, attention


def mask_tokens(ids: torch.Tensor, attention: torch.Tensor, spec: MLMSpec, generator: torch.Generator,
                mask_prob: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's 80/10/10 corruption of a batch (N, L): returns (corrupted inputs, labels with -100 where
    nothing is predicted). Every sequence with a maskable token gets at least one chosen position, so no
    sequence contributes nothing to the loss."""
    maskable = attention.bool()
    for special in {spec.pad_id, spec.mask_id, *spec.special_ids}:
        maskable &= ids != special
    chosen = (torch.rand(ids.shape, generator=generator) < mask_prob) & maskable
    # Guarantee one target per row: pick a random maskable position in rows that drew none.
    empty = ~chosen.any(dim=1) & maskable.any(dim=1)
    if empty.any():
        scores = torch.rand(ids.shape, generator=generator).masked_fill(~maskable, -1.0)
        forced = torch.zeros_like(chosen)
        forced[torch.arange(ids.shape[0]), scores.argmax(dim=1)] = True
        chosen |= forced & empty[:, None]
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    roll = torch.rand(ids.shape, generator=generator)
    inputs = ids.clone()
    inputs[chosen & (roll < 0.8)] = spec.mask_id
    random_slot = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[random_slot] = torch.randint(spec.vocab_size, (int(random_slot.sum()),), generator=generator)
    return inputs, labels  # the remaining 10% of chosen positions keep their original token


@dataclass
class MLMResult:
    model: Any
    losses: list[float] = field(default_factory=list)  # training loss per logged step
    loss_steps: list[int] = field(default_factory=list)
    eval_accuracy: list[float] = field(default_factory=list)  # held-out masked-token accuracy per epoch
    eval_loss: list[float] = field(default_factory=list)
    tokens_seen: int = 0
    seconds: float = 0.0
    n_params: int = 0


@torch.no_grad()
def evaluate_mlm(model: Any, ids: torch.Tensor, attention: torch.Tensor, spec: MLMSpec, device: torch.device,
                 batch_size: int = 64, seed: int = 1234) -> tuple[float, float]:
    """(masked-token accuracy, mean loss) on held-out sequences, with masks drawn from a fixed seed so
    every evaluation of every model sees exactly the same corrupted inputs."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    correct, total, loss_sum = 0, 0, 0.0
    for start in range(0, len(ids), batch_size):
        batch_ids, batch_att = ids[start:start + batch_size], attention[start:start + batch_size]
        inputs, labels = mask_tokens(batch_ids, batch_att, spec, generator)
        logits = model(input_ids=inputs.to(device), attention_mask=batch_att.to(device)).logits.float()  # (B, L, V)
        target = labels.to(device)
        picked = target != IGNORE
        correct += int((logits.argmax(-1)[picked] == target[picked]).sum())
        total += int(picked.sum())
        loss_sum += float(torch.nn.functional.cross_entropy(logits[picked], target[picked], reduction="sum"))
    model.train()
    return correct / max(total, 1), loss_sum / max(total, 1)


def unigram_baseline_accuracy(train_ids: torch.Tensor, eval_ids: torch.Tensor, eval_attention: torch.Tensor,
                              spec: MLMSpec) -> float:
    """Accuracy of always predicting the most frequent non-special training token: the floor to beat."""
    special = torch.tensor(sorted({spec.pad_id, spec.mask_id, *spec.special_ids}))
    counts = torch.bincount(train_ids.flatten(), minlength=spec.vocab_size)
    counts[special] = 0
    top = int(counts.argmax())
    valid = eval_attention.bool() & ~torch.isin(eval_ids, special)
    return float((eval_ids[valid] == top).float().mean()) if valid.any() else 0.0


def train_mlm(train_sequences: Sequence[Sequence[int]], eval_sequences: Sequence[Sequence[int]], spec: MLMSpec, *,
              epochs: int = 1, batch_size: int = 32, lr: float = 5e-4, warmup_fraction: float = 0.06,
              weight_decay: float = 0.01, device: torch.device | str = "cpu", bf16: bool = False, seed: int = 0,
              progress: Progress | None = None, log_every: int = 10) -> MLMResult:
    """Pretrain a fresh BERT with masked-language modelling; evaluate held-out masked-token accuracy
    after every epoch. Masks are re-drawn every epoch (dynamic masking, as in RoBERTa). ``bf16`` turns on
    bfloat16 autocast: pass what :func:`mastery.core.precision.decide_bf16` chose for ``device``."""
    progress = progress or NullProgress()
    device = torch.device(device)
    train_ids, train_att = pack_sequences(train_sequences, spec)
    eval_ids, eval_att = pack_sequences(eval_sequences, spec)
    torch.manual_seed(seed)
    model = build_bert(spec).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(train_ids) / batch_size)
    total_steps = steps_per_epoch * epochs
    warmup = max(1, int(warmup_fraction * total_steps))

    def schedule(step: int) -> float:  # linear warm-up, then linear decay to zero (BERT's schedule)
        return (step + 1) / warmup if step < warmup else max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    generator = torch.Generator().manual_seed(seed)
    result = MLMResult(model=model, n_params=n_params)
    start, step = time.perf_counter(), 0
    model.train()
    for epoch in range(epochs):
        progress.stage(f"MLM epoch {epoch + 1}/{epochs}", steps_per_epoch)
        order = torch.randperm(len(train_ids), generator=generator)
        running = []
        for batch_start in range(0, len(order), batch_size):
            index = order[batch_start:batch_start + batch_size]
            inputs, labels = mask_tokens(train_ids[index], train_att[index], spec, generator)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out = model(input_ids=inputs.to(device), attention_mask=train_att[index].to(device),
                            labels=labels.to(device))
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            running.append(float(out.loss.detach()))
            result.tokens_seen += int(train_att[index].sum())
            if step % log_every == 0 or batch_start + batch_size >= len(order):
                result.losses.append(float(np.mean(running)))
                result.loss_steps.append(step)
                running = []
            progress.step(1, loss=running[-1] if running else float(out.loss.detach()))
        accuracy, eval_loss = evaluate_mlm(model, eval_ids, eval_att, spec, device)
        result.eval_accuracy.append(accuracy)
        result.eval_loss.append(eval_loss)
        progress.epoch(epoch + 1, {"mlm_masked_accuracy": accuracy, "mlm_eval_loss": eval_loss})
        log.info("MLM epoch %d: held-out masked-token accuracy %.4f, loss %.4f", epoch + 1, accuracy, eval_loss)
    result.seconds = time.perf_counter() - start
    return result


# -- a text front end: a pretrained WordPiece vocabulary cut to the corpus's most frequent pieces ---
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # compact ids 0-4


class PieceVocabulary:
    """BERT's WordPiece segmentation (any Hugging Face tokenizer) with a compact id space: the
    ``size - 5`` most frequent pieces of ``texts`` (ties broken by the tokenizer's id, so the result is
    deterministic), everything else [UNK]. A small vocabulary keeps the MLM output layer cheap.

    (Training a WordPiece vocabulary with ``tokenizers`` was tried first: its trainer breaks ties
    between equally frequent merges differently on every run, so results were not reproducible.)"""

    def __init__(self, tokenizer: Any, texts: Sequence[str], size: int = 8000) -> None:
        if any(not isinstance(t, str) for t in texts):
            raise MLMError("texts must be str (decode bytes as UTF-8 first)")
        texts = [t for t in texts if t.strip()]
        if not texts:
            raise MLMError("no text to build a vocabulary from (every text is empty)")
        if size <= len(SPECIAL_TOKENS):
            raise MLMError(f"vocabulary size must be > {len(SPECIAL_TOKENS)}")
        self.tokenizer = tokenizer
        counts = np.bincount(np.concatenate([np.asarray(ids, dtype=np.int64) for ids in self._pieces(texts)]),
                             minlength=len(tokenizer))
        specials = [i for i in tokenizer.all_special_ids if i is not None and i < len(counts)]
        counts[specials] = 0
        ranked = np.lexsort((np.arange(len(counts)), -counts))  # most frequent first, then lower id
        kept = [int(i) for i in ranked[: size - len(SPECIAL_TOKENS)] if counts[i] > 0]
        self.pieces = list(SPECIAL_TOKENS) + tokenizer.convert_ids_to_tokens(kept)
        self._to_compact = np.full(len(tokenizer), SPECIAL_TOKENS.index("[UNK]"), dtype=np.int64)
        self._to_compact[kept] = np.arange(len(SPECIAL_TOKENS), len(SPECIAL_TOKENS) + len(kept))
        covered = counts[kept].sum() / max(counts.sum(), 1)
        self.coverage = float(covered)  # share of corpus pieces that are in the vocabulary (not [UNK])

    def _pieces(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def token_to_id(self, token: str) -> int:
        return self.pieces.index(token)

    def id_to_token(self, i: int) -> str:
        return self.pieces[i]

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Compact ids per text, without special tokens."""
        return [self._to_compact[np.asarray(ids, dtype=np.int64)].tolist() if ids else []
                for ids in self._pieces(texts)]

    def spec(self, **sizes: Any) -> MLMSpec:
        """An MLMSpec over this vocabulary."""
        return MLMSpec(vocab_size=self.vocab_size, pad_id=0, mask_id=SPECIAL_TOKENS.index("[MASK]"),
                       special_ids=tuple(range(len(SPECIAL_TOKENS))), **sizes)


def text_blocks(vocab: PieceVocabulary, texts: Sequence[str], block_len: int,
                max_blocks: int | None = None) -> list[list[int]]:
    """[CLS] + up to block_len-2 pieces + [SEP] per block; each text is cut into consecutive blocks
    (a tail shorter than a quarter block is dropped). Stops after ``max_blocks``."""
    cls_id, sep_id = vocab.token_to_id("[CLS]"), vocab.token_to_id("[SEP]")
    body = block_len - 2
    blocks: list[list[int]] = []
    for ids in vocab.encode([t for t in texts if t and t.strip()]):
        for start in range(0, len(ids), body):
            piece = ids[start:start + body]
            if len(piece) >= max(4, body // 4):
                blocks.append([cls_id, *piece, sep_id])
            if max_blocks is not None and len(blocks) >= max_blocks:
                return blocks
    return blocks
