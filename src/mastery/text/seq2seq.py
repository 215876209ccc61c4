"""A small encoder-decoder transformer built from :mod:`mastery.text.attention`, and a string-reversal task.

Shapes: B = batch, S = source length, T = target length, D = model width, V = vocabulary size.
The layers are pre-norm (LayerNorm before each sub-block), which trains stably without warm-up tricks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mastery.text.attention import MultiHeadAttention, PositionalEncoding, causal_mask

log = logging.getLogger(__name__)

PAD, BOS, EOS = 0, 1, 2
ALPHABET = "abcdefghijklmnopqrstuvwxyz"


class CharVocab:
    """PAD=0, BOS=1, EOS=2, then one id per character of ``alphabet``."""

    def __init__(self, alphabet: str = ALPHABET) -> None:
        self.alphabet = alphabet
        self.stoi = {c: i + 3 for i, c in enumerate(alphabet)}
        self.size = len(alphabet) + 3

    def encode(self, s: str) -> list[int]:
        return [self.stoi[c] for c in s]

    def decode(self, ids: Sequence[int]) -> str:
        """Characters up to the first EOS (PAD/BOS skipped)."""
        out = []
        for i in ids:
            if i == EOS:
                break
            if i >= 3:
                out.append(self.alphabet[i - 3])
        return "".join(out)


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        return self.net(x)


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(d_model, heads, dropout)
        self.ff = FeedForward(d_model, d_ff, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, src_pad: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)  # (B, S, D)
        x = x + self.drop(self.attn(h, h, h, key_padding_mask=src_pad)[0])  # self-attention over the source
        return x + self.drop(self.ff(self.norm2(x)))


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int, heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, heads, dropout)
        self.cross_attn = MultiHeadAttention(d_model, heads, dropout)
        self.ff = FeedForward(d_model, d_ff, dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)
        self.last_cross_attn: torch.Tensor | None = None  # (B, H, T, S) from the latest forward

    def forward(self, y: torch.Tensor, memory: torch.Tensor, tgt_mask: torch.Tensor,
                tgt_pad: torch.Tensor | None, src_pad: torch.Tensor) -> torch.Tensor:
        h = self.norm1(y)  # (B, T, D)
        y = y + self.drop(self.self_attn(h, h, h, attn_mask=tgt_mask, key_padding_mask=tgt_pad)[0])
        h = self.norm2(y)
        ctx, w = self.cross_attn(h, memory, memory, key_padding_mask=src_pad)  # (B, T, D), (B, H, T, S)
        self.last_cross_attn = w.detach()
        y = y + self.drop(ctx)
        return y + self.drop(self.ff(self.norm3(y)))


class Seq2SeqTransformer(nn.Module):
    """Token ids in, next-token logits out: forward(src (B, S), tgt_in (B, T)) -> (B, T, V)."""

    def __init__(self, vocab_size: int, d_model: int = 64, heads: int = 4, layers: int = 2, d_ff: int = 256,
                 dropout: float = 0.0, max_len: int = 256) -> None:
        super().__init__()
        self.d_model = d_model
        self.src_embed = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        self.pos = PositionalEncoding(d_model, max_len)
        self.encoder = nn.ModuleList(EncoderLayer(d_model, heads, d_ff, dropout) for _ in range(layers))
        self.decoder = nn.ModuleList(DecoderLayer(d_model, heads, d_ff, dropout) for _ in range(layers))
        self.enc_norm, self.dec_norm = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size)

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        src_pad = src == PAD  # (B, S)
        x = self.pos(self.src_embed(src) * math.sqrt(self.d_model))  # (B, S, D)
        for layer in self.encoder:
            x = layer(x, src_pad)
        return self.enc_norm(x), src_pad

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, src_pad: torch.Tensor) -> torch.Tensor:
        t = tgt_in.shape[1]
        mask = causal_mask(t, tgt_in.device)  # (T, T)
        tgt_pad = tgt_in == PAD  # (B, T)
        y = self.pos(self.tgt_embed(tgt_in) * math.sqrt(self.d_model))  # (B, T, D)
        for layer in self.decoder:
            y = layer(y, memory, mask, tgt_pad, src_pad)
        return self.out(self.dec_norm(y))  # (B, T, V)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        memory, src_pad = self.encode(src)
        return self.decode(tgt_in, memory, src_pad)

    def cross_attention(self) -> list[torch.Tensor]:
        """Cross-attention weights of each decoder layer from the latest forward: [(B, H, T, S), ...]."""
        return [layer.last_cross_attn for layer in self.decoder if layer.last_cross_attn is not None]

    @torch.no_grad()
    def greedy_decode(self, src: torch.Tensor, max_new: int) -> torch.Tensor:
        """Pick the arg-max token step by step; returns (B, <= max_new) ids (after BOS; EOS then PAD)."""
        memory, src_pad = self.encode(src)
        b = src.shape[0]
        ys = torch.full((b, 1), BOS, dtype=torch.long, device=src.device)  # (B, 1)
        done = torch.zeros(b, dtype=torch.bool, device=src.device)
        for _ in range(max_new):
            logits = self.decode(ys, memory, src_pad)[:, -1]  # (B, V): the next token's scores
            nxt = logits.argmax(-1).masked_fill(done, PAD)  # (B,)
            ys = torch.cat([ys, nxt.unsqueeze(1)], dim=1)
            done |= nxt == EOS
            if bool(done.all()):
                break
        return ys[:, 1:]


# -- the reversal task -----------------------------------------------------------------------
def random_strings(n: int, min_len: int, max_len: int, generator: torch.Generator,
                   alphabet: str = ALPHABET) -> list[str]:
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=generator).tolist()
    chars = torch.randint(0, len(alphabet), (n, max_len), generator=generator).tolist()
    return ["".join(alphabet[c] for c in row[:ln]) for row, ln in zip(chars, lengths, strict=True)]


def make_batch(strings: Sequence[str], vocab: CharVocab) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """src (B, S) padded; decoder input BOS + reversed (B, T); labels reversed + EOS (B, T), PAD elsewhere."""
    b = len(strings)
    s = max(len(x) for x in strings)
    src = torch.full((b, s), PAD, dtype=torch.long)
    tgt_in = torch.full((b, s + 1), PAD, dtype=torch.long)
    labels = torch.full((b, s + 1), PAD, dtype=torch.long)
    for i, x in enumerate(strings):
        ids = vocab.encode(x)
        rev = ids[::-1]
        src[i, : len(ids)] = torch.tensor(ids)
        tgt_in[i, : len(ids) + 1] = torch.tensor([BOS, *rev])
        labels[i, : len(ids) + 1] = torch.tensor([*rev, EOS])
    return src, tgt_in, labels


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0


def train_reverser(model: Seq2SeqTransformer, vocab: CharVocab, *, steps: int, batch_size: int, lr: float,
                   min_len: int, max_len: int, seed: int, device: torch.device | str,
                   progress: Any = None, log_every: int = 50, exclude: frozenset[str] = frozenset()) -> TrainResult:
    """Teacher-forced cross-entropy on fresh random strings each step; AdamW, warm-up + cosine decay.
    Strings in ``exclude`` (the held-out test set) are dropped from the training batches."""
    import time

    gen = torch.Generator().manual_seed(seed)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warm = max(1, steps // 20)

    def schedule(step: int) -> float:
        return (step + 1) / warm if step < warm else 0.5 * (1 + math.cos(math.pi * (step - warm) / (steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    loss_fn = nn.CrossEntropyLoss(ignore_index=PAD)
    result = TrainResult()
    start = time.perf_counter()
    if progress is not None:
        progress.stage("train reverser", steps)
    running = 0.0
    for step in range(steps):
        strings = [x for x in random_strings(batch_size, min_len, max_len, gen, vocab.alphabet)
                   if x not in exclude]
        src, tgt_in, labels = make_batch(strings, vocab)
        src, tgt_in, labels = src.to(device), tgt_in.to(device), labels.to(device)
        logits = model(src, tgt_in)  # (B, T, V)
        loss = loss_fn(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        result.losses.append(float(loss.item()))
        running += result.losses[-1]
        if progress is not None and (step + 1) % log_every == 0:
            progress.step(log_every, loss=running / log_every)
            running = 0.0
        if (step + 1) % (log_every * 10) == 0:
            log.debug("step %d loss %.4f", step + 1, result.losses[-1])
    result.steps = steps
    result.seconds = time.perf_counter() - start
    model.eval()
    return result


@torch.no_grad()
def reverse_strings(model: Seq2SeqTransformer, vocab: CharVocab, strings: Sequence[str],
                    device: torch.device | str, batch_size: int = 512) -> list[str]:
    """Greedy predictions for each input string."""
    model.eval()
    out: list[str] = []
    for i in range(0, len(strings), batch_size):
        chunk = strings[i:i + batch_size]
        src = make_batch(chunk, vocab)[0].to(device)
        ids = model.greedy_decode(src, max_new=src.shape[1] + 2).tolist()
        out += [vocab.decode(row) for row in ids]
    return out


def exact_match(predictions: Sequence[str], strings: Sequence[str]) -> float:
    """Share of predictions that equal the reversed input exactly."""
    return sum(p == s[::-1] for p, s in zip(predictions, strings, strict=True)) / max(1, len(strings))


@torch.no_grad()
def cross_attention_maps(model: Seq2SeqTransformer, vocab: CharVocab, s: str,
                         device: torch.device | str) -> tuple[str, list[torch.Tensor]]:
    """Decode ``s`` greedily, then re-run the decoder on its own output to collect cross-attention:
    returns the prediction and, per decoder layer, the head-averaged map (T, S) on the CPU."""
    pred = reverse_strings(model, vocab, [s], device)[0]
    src = make_batch([s], vocab)[0].to(device)
    tgt_in = torch.tensor([[BOS, *vocab.encode(pred)]], device=device)  # (1, T)
    model(src, tgt_in)
    return pred, [w[0].mean(0).cpu() for w in model.cross_attention()]
