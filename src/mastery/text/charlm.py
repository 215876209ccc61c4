"""A character-level language model: vocabulary, batches, an embedding -> LSTM/GRU -> linear model,
training with AdamW + warm-up/cosine schedule + gradient clipping, evaluation, sampling, and the
repeated n-gram rate of samples.

Shapes: B = batch, T = sequence length, E = embedding width, H = hidden size, V = vocabulary size.
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
from torch import nn

from mastery.core.progress import NullProgress, Progress
from mastery.text.rnn import make_recurrent

log = logging.getLogger(__name__)


def decode_utf8(data: bytes, source: str = "input") -> str:
    """``data`` as text; a clear ValueError for empty or non-UTF-8 bytes."""
    if not data:
        raise ValueError(f"{source} is empty: a character model needs some text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{source} is not valid UTF-8 (byte {exc.start}: {data[exc.start:exc.start + 4]!r}); "
                         "re-encode it as UTF-8") from None


class CharVocabulary:
    """One id per distinct character of a text, in sorted order (like nanoGPT's shakespeare_char)."""

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError(f"expected str, got {type(text).__name__}; decode bytes with decode_utf8 first")
        if not text:
            raise ValueError("the text is empty: a character vocabulary needs at least one character")
        self.chars = sorted(set(text))
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @property
    def size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """(N,) int64 ids; a KeyError-free ValueError for unseen characters."""
        try:
            return np.fromiter((self.stoi[c] for c in text), dtype=np.int64, count=len(text))
        except KeyError as exc:
            raise ValueError(f"character {exc.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def train_val_split(ids: np.ndarray, train_fraction: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """First ``train_fraction`` of the ids for training, the rest for validation (nanoGPT's split)."""
    n = int(len(ids) * train_fraction)
    if n < 2 or len(ids) - n < 2:
        raise ValueError(f"{len(ids)} characters are too few to split {train_fraction:.0%} / rest")
    return ids[:n], ids[n:]


def random_batch(ids: torch.Tensor, batch_size: int, seq_len: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows: x (B, T) and the next characters y (B, T) = x shifted by one."""
    if len(ids) <= seq_len:
        raise ValueError(f"the text ({len(ids)} characters) must be longer than seq_len={seq_len}")
    starts = torch.randint(0, len(ids) - seq_len, (batch_size,), generator=generator)  # (B,)
    offsets = starts[:, None] + torch.arange(seq_len + 1)  # (B, T + 1)
    windows = ids[offsets]  # (B, T + 1)
    return windows[:, :-1], windows[:, 1:]


class CharRNN(nn.Module):
    """Embedding (V -> E) -> ``num_layers`` LSTM/GRU/RNN layers (H) -> Dropout -> Linear (H -> V)."""

    def __init__(self, vocab_size: int, *, kind: str = "lstm", embed: int = 64, hidden: int = 256,
                 num_layers: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.kind = kind
        self.embedding = nn.Embedding(vocab_size, embed)
        self.rnn = make_recurrent(kind, embed, hidden, num_layers, dropout)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """x (B, T) int64 -> logits (B, T, V) and the final recurrent state."""
        h, state = self.rnn(self.embedding(x), state)  # (B, T, H)
        return self.head(self.dropout(h)), state  # (B, T, V)


@torch.inference_mode()
def evaluate_loss(model: CharRNN, ids: torch.Tensor, seq_len: int, device: torch.device | str,
                  max_windows: int | None = None, batch_size: int = 128) -> float:
    """Mean cross-entropy (nats/char) over non-overlapping windows of ``ids``, in float32 and eval mode.

    Each window starts from a zero state, like a transformer's context window. ``max_windows`` keeps
    the first that many windows (a fixed sample, the same every call).
    """
    n_windows = (len(ids) - 1) // seq_len
    if max_windows is not None:
        n_windows = min(n_windows, max_windows)
    if n_windows < 1:
        raise ValueError(f"{len(ids)} characters hold no window of seq_len={seq_len}")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, n_windows, batch_size):
        idx = torch.arange(start, min(start + batch_size, n_windows))[:, None] * seq_len  # (b, 1)
        offsets = idx + torch.arange(seq_len + 1)  # (b, T + 1)
        windows = ids[offsets].to(device)
        logits, _ = model(windows[:, :-1])  # (b, T, V), float32: no autocast here
        total += float(nn.functional.cross_entropy(logits.float().flatten(0, 1), windows[:, 1:].flatten(),
                                                   reduction="sum"))
        count += windows[:, 1:].numel()
    model.train(was_training)
    return total / count


@dataclass
class TrainHistory:
    steps: list[int] = field(default_factory=list)  # steps at which val was measured
    val_loss: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)  # every step's batch loss
    lr: list[float] = field(default_factory=list)
    seconds: float = 0.0
    chars_per_second: float = 0.0


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float = 0.1) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train_charlm(model: CharRNN, train_ids: torch.Tensor, val_ids: torch.Tensor, *, steps: int, batch_size: int,
                 seq_len: int, lr: float, weight_decay: float, grad_clip: float, warmup: int, eval_every: int,
                 eval_windows: int | None, device: torch.device | str, bf16: bool, seed: int,
                 progress: Progress | None = None, prefix: str = "") -> TrainHistory:
    """AdamW + warm-up/cosine LR + gradient-norm clipping on random windows; val loss every ``eval_every``.

    With ``bf16`` the forward pass runs under bfloat16 autocast (on CPU or CUDA); the loss, the
    optimiser state and every evaluation stay in float32.
    """
    progress = progress or NullProgress()
    device = torch.device(device)
    model.to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2 and p is not model.embedding.weight]
    no_decay = [p for p in model.parameters() if not (p.dim() >= 2 and p is not model.embedding.weight)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, steps, warmup))
    gen = torch.Generator().manual_seed(seed)
    history = TrainHistory()
    progress.stage(f"{prefix}train", total=steps)
    model.train()
    start = time.perf_counter()
    for step in range(1, steps + 1):
        x, y = random_batch(train_ids, batch_size, seq_len, gen)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)  # (B, T), (B, T)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits, _ = model(x)  # (B, T, V)
        loss = nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        history.lr.append(float(optimizer.param_groups[0]["lr"]))
        schedule.step()
        value = float(loss.detach())
        history.train_loss.append(value)
        info = {"loss": value}
        if step % eval_every == 0 or step == steps:
            history.steps.append(step)
            history.val_loss.append(evaluate_loss(model, val_ids, seq_len, device, eval_windows))
            info["val_loss"] = history.val_loss[-1]
            log.info("%sstep %d/%d train %.4f val %.4f", prefix, step, steps, value, history.val_loss[-1])
        progress.step(1, **info)
    history.seconds = time.perf_counter() - start
    history.chars_per_second = steps * batch_size * seq_len / history.seconds
    return history


@torch.inference_mode()
def sample(model: CharRNN, vocab: CharVocabulary, prompt: str, length: int, temperature: float,
           generator: torch.Generator, device: torch.device | str) -> str:
    """``length`` characters after ``prompt``, each drawn from softmax(logits / temperature)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not prompt:
        raise ValueError("the prompt needs at least one character")
    was_training = model.training
    model.eval()
    x = torch.as_tensor(vocab.encode(prompt), device=device)[None]  # (1, P)
    logits, state = model(x)  # (1, P, V)
    out = []
    for _ in range(length):
        probs = torch.softmax(logits[0, -1].float().cpu() / temperature, dim=0)  # (V,)
        nxt = int(torch.multinomial(probs, 1, generator=generator))
        out.append(nxt)
        logits, state = model(torch.tensor([[nxt]], device=device), state)  # (1, 1, V)
    model.train(was_training)
    return vocab.decode(out)


def repeated_ngram_rate(items: Sequence[Any], n: int) -> float:
    """Fraction of the n-grams of ``items`` that already occurred earlier (0 = all distinct).

    Works on a string (character n-grams) or a list of words. Looping, degenerate text drives it up.
    """
    grams = [tuple(items[i:i + n]) for i in range(len(items) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def repetition_stats(text: str) -> dict[str, float]:
    """Repeated character 4-gram and word 3-gram rates of a sample."""
    return {"char4": repeated_ngram_rate(text, 4), "word3": repeated_ngram_rate(text.split(), 3)}


def build_from_manifest(arch: dict) -> CharRNN:
    """A fresh CharRNN from a model-registry ``architecture`` entry (weights are loaded after).

    The vocabulary (``kwargs["chars"]``, in id order) travels with the architecture: ids are
    meaningless without it.
    """
    if arch.get("class") != "CharRNN":
        raise ValueError(f"mastery.text.charlm cannot build {arch.get('class')!r}; known: CharRNN")
    kwargs = dict(arch.get("kwargs", {}))
    chars = kwargs.pop("chars", None)
    model = CharRNN(len(chars) if chars else kwargs.pop("vocab_size"), **kwargs)
    model.chars = list(chars or [])
    return model


def vocabulary_from_chars(chars: Sequence[str]) -> CharVocabulary:
    """The CharVocabulary whose ids are the positions in ``chars`` (as saved with a registered model)."""
    return CharVocabulary("".join(chars))
