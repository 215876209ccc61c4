"""L15 · Transformer architecture: a hand-written encoder-decoder transformer that reverses strings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from annotated_types import Interval

from mastery.core.config import Fraction
from mastery.core.progress import Progress
from mastery.core.report import Report
from mastery.core.runtime import Device

REQUIRES: tuple[str, ...] = ()  # registered assets the tiny preset reads


@dataclass(frozen=True)
class Config:
    d_model: Annotated[int, Interval(ge=1, le=4096)] = 64
    heads: Annotated[int, Interval(ge=1, le=64)] = 4
    layers: Annotated[int, Interval(ge=1, le=48)] = 2  # encoder layers = decoder layers
    d_ff: Annotated[int, Interval(ge=1, le=16_384)] = 256
    dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0
    # optimiser steps, each on a fresh batch of random strings
    steps: Annotated[int, Interval(ge=1, le=1_000_000)] = 5000
    batch_size: Annotated[int, Interval(ge=1, le=65_536)] = 128
    lr: Annotated[float, Interval(gt=0, le=10)] = 1.5e-3
    min_len: Annotated[int, Interval(ge=1, le=1000)] = 4  # training (and held-out test) string lengths
    max_len: Annotated[int, Interval(ge=1, le=1000)] = 12
    # length generalisation: test lengths max_len+1 .. longer_max_len
    longer_max_len: Annotated[int, Interval(ge=1, le=1000)] = 20
    # held-out strings of the training lengths (never seen in training)
    n_test: Annotated[int, Interval(ge=1, le=1_000_000)] = 2000
    n_test_per_longer_len: Annotated[int, Interval(ge=1, le=1_000_000)] = 200
    device: Device = "auto"
    min_exact_match: Fraction = 0.99
    mha_tolerance: Annotated[float, Interval(ge=0, le=1)] = 1e-5
    seed: int = 0

    def validate(self) -> None:
        from mastery.core.errors import ConfigError

        if self.d_model % self.heads:
            raise ConfigError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if not self.min_len <= self.max_len <= self.longer_max_len:
            raise ConfigError("need min_len <= max_len <= longer_max_len")


# The numbers that summarise a run: the README table and the conformance test read them from here.
HEADLINE = ("exact_match", "exact_match_longer")

PRESETS = {
    "tiny": Config(d_model=32, heads=2, layers=1, d_ff=64, steps=150, batch_size=64, lr=3e-3, min_len=2, max_len=5,
                   longer_max_len=7, n_test=200, n_test_per_longer_len=50, min_exact_match=0.0),
    "full": Config(),
}


def _mha_max_difference(seed: int, d_model: int, heads: int) -> float:
    """Largest |mine - torch| over outputs and head-averaged weights, with and without masks."""
    import torch
    from torch import nn

    from mastery.text.attention import MultiHeadAttention, causal_mask

    g = torch.Generator().manual_seed(seed)
    ref = nn.MultiheadAttention(d_model, heads, batch_first=True)
    mine = MultiHeadAttention(d_model, heads).load_from_torch(ref)
    q = torch.randn(3, 7, d_model, generator=g)  # (B, Lq, D)
    kv = torch.randn(3, 9, d_model, generator=g)  # (B, Lk, D)
    pad = torch.zeros(3, 9, dtype=torch.bool)
    pad[1, 6:] = True
    worst = 0.0
    with torch.no_grad():
        for attn_mask, kpm, key in ((None, None, kv), (causal_mask(7), None, q), (None, pad, kv)):
            out_ref, w_ref = ref(q, key, key, attn_mask=attn_mask, key_padding_mask=kpm)
            out, w = mine(q, key, key, attn_mask=attn_mask, key_padding_mask=kpm)
            worst = max(worst, (out - out_ref).abs().max().item(), (w.mean(1) - w_ref).abs().max().item())
    return worst


def run(config: Config, progress: Progress) -> Report:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    from mastery.nn.models import count_parameters
    from mastery.nn.plots import ema
    from mastery.nn.train import start_torch_report
    from mastery.text.seq2seq import (
        CharVocab,
        Seq2SeqTransformer,
        cross_attention_maps,
        exact_match,
        random_strings,
        reverse_strings,
        train_reverser,
    )

    report, device = start_torch_report("l15", config)

    diff = _mha_max_difference(config.seed, config.d_model, config.heads)
    report.metric("mha_max_abs_diff_vs_torch", diff)
    report.check("mha_matches_torch", diff <= config.mha_tolerance,
                 f"hand-written multi-head attention = nn.MultiheadAttention (same weights, with/without "
                 f"causal and padding masks) to {config.mha_tolerance}", diff)

    vocab = CharVocab()
    test_gen = torch.Generator().manual_seed(config.seed + 1_000)
    test = random_strings(config.n_test, config.min_len, config.max_len, test_gen)
    longer = {n: random_strings(config.n_test_per_longer_len, n, n, test_gen)
              for n in range(config.max_len + 1, config.longer_max_len + 1)}

    torch.manual_seed(config.seed)
    model = Seq2SeqTransformer(vocab.size, config.d_model, config.heads, config.layers, config.d_ff,
                               config.dropout, max_len=config.longer_max_len + 8)
    progress.params({"d_model": config.d_model, "heads": config.heads, "layers": config.layers,
                     "steps": config.steps, "batch_size": config.batch_size, "lr": config.lr,
                     "train_lengths": f"{config.min_len}-{config.max_len}", "device": str(device)})
    result = train_reverser(model, vocab, steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                            min_len=config.min_len, max_len=config.max_len, seed=config.seed, device=device,
                            progress=progress, exclude=frozenset(test))
    report.timing("train_seconds", result.seconds)
    report.timing("train_steps_per_second", result.steps / max(result.seconds, 1e-9))
    report.metric("n_parameters", count_parameters(model))
    final_loss = float(np.mean(result.losses[-20:]))
    report.metric("final_train_loss", final_loss)
    report.check("loss_decreases", final_loss < result.losses[0], "mean loss of the last 20 steps < first step's",
                 final_loss)

    progress.stage("evaluate", None)
    import time

    t0 = time.perf_counter()
    preds = reverse_strings(model, vocab, test, device)
    em = report.metric("exact_match", exact_match(preds, test))
    rows = []
    for n in range(config.min_len, config.max_len + 1):
        idx = [i for i, s in enumerate(test) if len(s) == n]
        rows.append({"length": n, "trained length": "yes", "n": len(idx),
                     "exact match": exact_match([preds[i] for i in idx], [test[i] for i in idx]) if idx else None})
    longer_hits, longer_total, examples = 0, 0, []
    for n, strings in longer.items():
        p = reverse_strings(model, vocab, strings, device)
        acc = exact_match(p, strings)
        longer_hits += round(acc * len(strings))
        longer_total += len(strings)
        rows.append({"length": n, "trained length": "no", "n": len(strings), "exact match": acc})
        examples.append({"input": strings[0], "prediction": p[0], "correct": p[0] == strings[0][::-1]})
    report.timing("evaluate_seconds", time.perf_counter() - t0)
    em_longer = report.metric("exact_match_longer", longer_hits / max(1, longer_total))
    report.check("exact_match", em >= config.min_exact_match,
                 f"greedy exact match on held-out strings of lengths {config.min_len}-{config.max_len} "
                 f">= {config.min_exact_match}", em)
    report.table("Exact match by string length", rows)
    report.table("Longer-than-trained examples", examples[:8])

    # -- figures -------------------------------------------------------------------------------
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    axes[0].plot(result.losses, alpha=0.3, label="per step")
    axes[0].plot(ema(result.losses), label="EMA")
    axes[0].set(yscale="log", xlabel="step", ylabel="cross-entropy", title="Training loss")
    axes[0].legend()
    lengths = [r["length"] for r in rows]
    accs = [r["exact match"] if r["exact match"] is not None else np.nan for r in rows]
    colors = ["tab:blue" if r["trained length"] == "yes" else "tab:red" for r in rows]
    axes[1].bar(lengths, accs, color=colors)
    for x, a in zip(lengths, accs, strict=True):
        axes[1].annotate(f"{a:.2f}", (x, (0 if np.isnan(a) else a) + 0.01), ha="center", va="bottom",
                         fontsize=7, rotation=90)
    axes[1].axvline(config.max_len + 0.5, color="k", ls="--", lw=1)
    axes[1].set(xlabel="string length (blue: trained, red: longer)", ylabel="exact match", ylim=(0, 1.15),
                title="Greedy exact match by length")
    report.figure("loss_and_length_generalisation", fig)

    sample = random_strings(1, config.max_len, config.max_len, torch.Generator().manual_seed(config.seed + 7))[0]
    pred, maps = cross_attention_maps(model, vocab, sample, device)
    fig, axes = plt.subplots(1, len(maps), figsize=(5 * len(maps), 4.6), squeeze=False)
    for i, (ax, m) in enumerate(zip(axes[0], maps, strict=True)):
        ax.imshow(m.numpy(), cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(len(sample)), list(sample))
        ax.set_yticks(range(m.shape[0]), [*pred, "<eos>"][: m.shape[0]])
        ax.set(xlabel="source (encoder)", ylabel="generated (decoder)", title=f"Cross-attention, decoder layer {i + 1}")
    fig.suptitle(f"'{sample}' -> '{pred}' (heads averaged)")
    report.figure("cross_attention", fig)
    anti = float(np.mean([maps[-1][t, len(sample) - 1 - t].item() for t in range(min(len(pred), len(sample)))]))
    report.metric("cross_attention_antidiagonal_mass", max(float(np.mean(
        [m[t, len(sample) - 1 - t].item() for t in range(min(len(pred), len(sample)))])) for m in maps))
    report.note(f"Last decoder layer: mean cross-attention weight on the mirrored source position = {anti:.3f}.")

    report.note(
        f"Model: {config.layers}+{config.layers} pre-norm encoder/decoder layers, d_model {config.d_model}, "
        f"{config.heads} heads, feed-forward {config.d_ff}, sinusoidal positions, built from the hand-written "
        "MultiHeadAttention in mastery.text.attention (no nn.Transformer). Training: teacher forcing on fresh "
        f"random lowercase strings of lengths {config.min_len}-{config.max_len} every step ({config.steps} steps "
        f"x {config.batch_size}), AdamW with warm-up and cosine decay; the {len(test)} held-out test strings are "
        "excluded from training. Decoding is greedy (arg-max token by token until <eos>)."
    )
    report.note(
        f"Length generalisation: on lengths {config.max_len + 1}-{config.longer_max_len}, never seen in training, "
        f"exact match is {em_longer:.3f} (vs {em:.3f} on trained lengths). The model has never had to attend "
        "to source positions beyond the training length or emit <eos> that late, and sinusoidal encodings of "
        "unseen positions are out of distribution for the learned attention, so accuracy typically collapses "
        "just past the training range — a known weakness of absolute positional encodings."
    )
    return report
