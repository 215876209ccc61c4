"""Systematic error analysis: where a classifier fails, how sure we are, and what to fix first.

The recipe (any classifier that returns class probabilities):

1. **Confusion matrix**: which classes are mistaken for which (row = true, column = predicted).
2. **Worst errors**: the mistakes made with the highest confidence. A confident mistake is rarely a near
   miss: it is a mislabelled example, an input the model never saw the like of, or a systematic bias.
3. **Slices**: boolean categories of examples (a blurred image, a review with negations, a hand tag).
   Each slice's error rate is reported with its count and a Wilson 95% interval, so a slice of 12
   examples with 3 errors reads as what it is ([9%, 53%]), not as "25% error".
4. **Hand tags** (a CSV of dataset, example id, tag, note) replace the automatic categories of the
   examples they list: a person who looked at an error knows better than a threshold.
5. **What to fix next**: ranked by *excess errors*, ``n * (slice rate - overall rate)``, the errors that
   would go away if the slice did as well as the rest; a slice counts only when it holds at least
   ``min_count`` examples and its interval's lower end lies above the overall error rate.

Wilson's score interval (Wilson 1927; Newcombe 1998 compares it with six others) stays inside [0, 1] and
keeps close to its nominal coverage for small n and rates near 0 or 1, where the normal approximation fails.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mastery.core.errors import MasteryError

log = logging.getLogger(__name__)

HAND_TAG_COLUMNS = ("dataset", "example_id", "tag", "note")
HAND_PREFIX = "hand: "  # slice names that come from the hand-tag file


class ErrorAnalysisError(ValueError, MasteryError):
    """Inputs to the error analysis are inconsistent (shapes, labels, a malformed hand-tag file)."""


# -- predictions ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Predictions:
    """One model's output on one labelled set: ids (N,), true labels (N,), probabilities (N, K)."""

    dataset: str
    ids: tuple[str, ...]
    y_true: np.ndarray  # (N,) int
    probs: np.ndarray  # (N, K) float, rows sum to 1
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        n, k = len(self.ids), len(self.class_names)
        if self.probs.ndim != 2 or self.probs.shape != (n, k):
            raise ErrorAnalysisError(f"{self.dataset}: probabilities have shape {self.probs.shape}, "
                                     f"expected ({n}, {k})")
        if self.y_true.shape != (n,):
            raise ErrorAnalysisError(f"{self.dataset}: {self.y_true.shape[0]} labels for {n} ids")
        if n and (self.y_true.min() < 0 or self.y_true.max() >= k):
            raise ErrorAnalysisError(f"{self.dataset}: labels must lie in [0, {k}), got {self.y_true.min()} to "
                                     f"{self.y_true.max()}")
        if len(set(self.ids)) != n:
            raise ErrorAnalysisError(f"{self.dataset}: example ids are not unique")

    @property
    def y_pred(self) -> np.ndarray:
        return self.probs.argmax(1)

    @property
    def confidence(self) -> np.ndarray:
        """Probability of the predicted class, (N,)."""
        return self.probs.max(1)

    @property
    def margin(self) -> np.ndarray:
        """Top-1 minus top-2 probability, (N,): near 0 = the model hesitated between two classes."""
        top2 = np.sort(self.probs, axis=1)[:, -2:]  # (N, 2), ascending
        return top2[:, 1] - top2[:, 0]

    @property
    def correct(self) -> np.ndarray:
        return self.y_pred == self.y_true

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if len(self.ids) else float("nan")


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts, row = true class, column = predicted class; labels outside [0, K) are refused."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ErrorAnalysisError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must be 1-D and equal in shape")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ErrorAnalysisError(f"{name} holds labels outside [0, {num_classes})")
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def top_confusions(cm: np.ndarray, class_names: Sequence[str], k: int = 5) -> list[dict[str, Any]]:
    """The ``k`` largest off-diagonal cells: true -> predicted, count, share of that true class and of all errors."""
    off = cm - np.diag(np.diag(cm))
    total = max(int(off.sum()), 1)
    order = np.argsort(-off, axis=None, kind="stable")[:k]
    rows = []
    for flat in order:
        t, p = np.unravel_index(int(flat), cm.shape)
        if off[t, p] == 0:
            break
        rows.append({"true": class_names[t], "predicted": class_names[p], "count": int(off[t, p]),
                     "share_of_true_class": float(off[t, p] / max(cm[t].sum(), 1)),
                     "share_of_all_errors": float(off[t, p] / total)})
    return rows


def worst_errors(pred: Predictions, k: int = 10) -> np.ndarray:
    """Indices of the ``k`` most confident mistakes, most confident first (ties: by id, for a stable order)."""
    wrong = np.flatnonzero(~pred.correct)
    ids = np.array(pred.ids, dtype=object)[wrong]
    order = sorted(range(len(wrong)), key=lambda i: (-float(pred.confidence[wrong[i]]), str(ids[i])))
    return wrong[order[:k]]


# -- intervals ----------------------------------------------------------------------------------------
def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (scipy's implementation); (0, 1) when n is 0."""
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ErrorAnalysisError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    from scipy.stats import binomtest

    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


# -- hand tags ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HandTag:
    dataset: str
    example_id: str
    tag: str
    note: str = ""


def load_hand_tags(path: str | Path) -> list[HandTag]:
    """Read a hand-tag CSV (columns dataset, example_id, tag, note); one (dataset, id) at most once."""
    path = Path(path)
    if not path.is_file():
        raise ErrorAnalysisError(f"hand-tag file {path} does not exist")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in HAND_TAG_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ErrorAnalysisError(f"{path.name}: missing column(s) {', '.join(missing)}; expected "
                                     f"{', '.join(HAND_TAG_COLUMNS)}")
        tags, seen = [], set()
        for line, row in enumerate(reader, start=2):
            dataset, example_id, tag = (str(row.get(c) or "").strip() for c in HAND_TAG_COLUMNS[:3])
            if not (dataset and example_id and tag):
                raise ErrorAnalysisError(f"{path.name} line {line}: dataset, example_id and tag must not be empty")
            if (dataset, example_id) in seen:
                raise ErrorAnalysisError(f"{path.name} line {line}: {dataset} {example_id} is tagged twice")
            seen.add((dataset, example_id))
            tags.append(HandTag(dataset, example_id, tag, str(row.get("note") or "").strip()))
    return tags


@dataclass(frozen=True)
class Categories:
    """Each example's category names after hand tags: ``names[i]`` is a tuple of slice names."""

    names: tuple[tuple[str, ...], ...]
    source: tuple[str, ...]  # "auto" or "hand", per example
    notes: Mapping[int, str] = field(default_factory=dict)  # index -> the hand tag's note

    @property
    def hand_count(self) -> int:
        return sum(s == "hand" for s in self.source)


def apply_hand_tags(ids: Sequence[str], auto: Mapping[str, np.ndarray], dataset: str,
                    tags: Iterable[HandTag]) -> Categories:
    """Per example, the automatic slices it belongs to, replaced by ``hand: <tag>`` where a tag lists it.

    ``auto`` maps a slice name to a boolean mask (N,). A hand tag overrides every automatic category of
    its example (the person looked; the thresholds did not), so that example leaves the automatic slices.
    """
    n = len(ids)
    for name, mask in auto.items():
        if mask.shape != (n,):
            raise ErrorAnalysisError(f"slice {name!r} has shape {mask.shape}, expected ({n},)")
    position = {example_id: i for i, example_id in enumerate(ids)}
    hand: dict[int, HandTag] = {}
    for tag in tags:
        if tag.dataset == dataset and tag.example_id in position:
            hand[position[tag.example_id]] = tag
    matrix = np.stack([auto[name] for name in auto], axis=1) if auto else np.zeros((n, 0), bool)  # (N, S)
    keys = list(auto)
    names, source = [], []
    for i in range(n):
        if i in hand:
            names.append((HAND_PREFIX + hand[i].tag,))
            source.append("hand")
        else:
            names.append(tuple(keys[j] for j in np.flatnonzero(matrix[i])))
            source.append("auto")
    return Categories(tuple(names), tuple(source), {i: t.note for i, t in hand.items()})


def category_masks(categories: Categories, order: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Slice name -> boolean mask (N,) from the per-example names; ``order`` first, then the rest sorted."""
    n = len(categories.names)
    present = {name for names in categories.names for name in names}
    ordered = [name for name in order if name in present] + sorted(present - set(order))
    masks = {name: np.zeros(n, bool) for name in ordered}
    for i, names in enumerate(categories.names):
        for name in names:
            masks[name][i] = True
    return masks


# -- slices ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SliceRow:
    name: str
    n: int
    errors: int
    error_rate: float
    ci_low: float
    ci_high: float
    lift: float  # error rate / overall error rate
    excess_errors: float  # n * (rate - overall rate): errors gone if the slice did as well as the whole set

    def as_row(self) -> dict[str, Any]:
        return {"slice": self.name, "n": self.n, "errors": self.errors, "error_rate": round(self.error_rate, 4),
                "ci95_low": round(self.ci_low, 4), "ci95_high": round(self.ci_high, 4),
                "lift": round(self.lift, 3), "excess_errors": round(self.excess_errors, 1)}


def slice_table(correct: np.ndarray, slices: Mapping[str, np.ndarray], confidence: float = 0.95) -> list[SliceRow]:
    """Error rate with a Wilson interval for the whole set (first row, ``all``) and for every slice."""
    correct = np.asarray(correct, dtype=bool)
    wrong = ~correct
    overall = float(wrong.mean()) if wrong.size else float("nan")
    rows = []
    for name, mask in {"all": np.ones_like(correct), **slices}.items():
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != correct.shape:
            raise ErrorAnalysisError(f"slice {name!r} has shape {mask.shape}, expected {correct.shape}")
        n, errors = int(mask.sum()), int(wrong[mask].sum())
        rate = errors / n if n else float("nan")
        low, high = wilson_interval(errors, n, confidence)
        lift = rate / overall if n and overall > 0 else float("nan")
        rows.append(SliceRow(name, n, errors, rate, low, high, lift, n * (rate - overall) if n else 0.0))
    return rows


def significant_slices(rows: Sequence[SliceRow], min_count: int,
                       exclude: Iterable[str] = ()) -> list[SliceRow]:
    """Slices with at least ``min_count`` examples whose interval lies wholly above the overall error rate,
    largest excess errors first."""
    overall = next(r for r in rows if r.name == "all").error_rate
    skip = {"all", *exclude}
    found = [r for r in rows if r.name not in skip and r.n >= min_count and r.ci_low > overall]
    return sorted(found, key=lambda r: (-r.excess_errors, r.name))


AMBIGUOUS_MAX_MARGIN = 0.5  # above this the top class leads the runner-up by half the probability: not ambiguous


def ambiguity_cutoff(margin: np.ndarray, quantile: float) -> float:
    """The 'ambiguous' cut-off: the set's lower ``quantile`` of the top-1 minus top-2 margin, capped at
    :data:`AMBIGUOUS_MAX_MARGIN` (a 99%-accurate model's lowest 10% can still have margins of 0.97)."""
    return min(float(np.quantile(np.asarray(margin, dtype=np.float64), quantile)), AMBIGUOUS_MAX_MARGIN)


def abstention(pred: Predictions, defer_fraction: float) -> dict[str, float]:
    """Hand the ``defer_fraction`` lowest-margin examples to a person: what share of the errors goes with them."""
    n = len(pred.ids)
    k = round(defer_fraction * n)
    order = np.argsort(pred.margin, kind="stable")[:k]
    wrong = ~pred.correct
    caught = int(wrong[order].sum())
    kept = np.ones(n, bool)
    kept[order] = False
    return {"deferred": k, "errors_deferred": caught, "share_of_errors": caught / max(int(wrong.sum()), 1),
            "accuracy_on_kept": float(pred.correct[kept].mean()) if kept.any() else float("nan"),
            "margin_threshold": float(pred.margin[order].max()) if k else 0.0}


# -- what to fix next ---------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def what_to_fix(pred: Predictions, rows: Sequence[SliceRow], cm: np.ndarray, categories: Categories,
                worst: np.ndarray, *, min_count: int, actions: Mapping[str, str],
                model_slices: Iterable[str] = (), defer_fraction: float = 0.05) -> list[str]:
    """Recommendations written from the numbers, most errors removed first.

    ``actions`` maps a slice name to what usually helps that kind of failure (one clause); ``model_slices``
    are slices defined by the model's own output (low margin), which rank apart from the input slices: they
    say where the model hesitates, not what in the data makes it fail.
    """
    model_slices = set(model_slices)
    overall = rows[0]
    lines = []
    found = significant_slices(rows, min_count, exclude=model_slices)
    if found:
        top = found[0]
        action = actions.get(top.name.removeprefix(HAND_PREFIX), "")
        lines.append(
            f"Largest excess: slice '{top.name}' has error rate {_pct(top.error_rate)} "
            f"[{_pct(top.ci_low)}, {_pct(top.ci_high)}] on {top.n:,} examples against {_pct(overall.error_rate)} "
            f"overall (lift {top.lift:.2f}x, {top.excess_errors:.0f} excess errors)" + (f": {action}." if action
                                                                                          else "."))
        for other in found[1:3]:
            lines.append(f"Next: '{other.name}' ({_pct(other.error_rate)} [{_pct(other.ci_low)}, "
                         f"{_pct(other.ci_high)}], n={other.n:,}, lift {other.lift:.2f}x, "
                         f"{other.excess_errors:.0f} excess errors).")
    else:
        sized = [r for r in rows[1:] if r.name not in model_slices and r.n >= min_count]
        best = max(sized, key=lambda r: r.lift, default=None)
        lines.append(f"No input slice with at least {min_count} examples has an error rate whose 95% interval "
                     f"lies above the overall {_pct(overall.error_rate)}"
                     + (f"; the highest lift is '{best.name}' at {best.lift:.2f}x ({_pct(best.error_rate)} "
                        f"[{_pct(best.ci_low)}, {_pct(best.ci_high)}], n={best.n:,}), within noise." if best else "."))
    confusions = top_confusions(cm, pred.class_names, k=1)
    if confusions and len(pred.class_names) == 2:
        # Two classes have one confusion each way: what matters is whether the errors lean to one side.
        c, total = confusions[0], int(cm.sum() - np.trace(cm))
        low, high = wilson_interval(c["count"], total)
        lean = "lean" if low > 0.5 else "do not lean significantly"
        lines.append(f"Errors {lean} one way: {c['count']} of {total} ({_pct(c['share_of_all_errors'])} "
                     f"[{_pct(low)}, {_pct(high)}]) are {c['true']} examples called {c['predicted']}"
                     + (f": check on held-out data whether a decision threshold moved toward {c['true']} "
                        "(or class weights) removes more errors than it adds." if low > 0.5 else "."))
    elif confusions:
        c = confusions[0]
        lines.append(f"Most frequent confusion: {c['true']} -> {c['predicted']}, {c['count']} times "
                     f"({_pct(c['share_of_all_errors'])} of all errors): collect or augment examples that "
                     "separate these two classes.")
    defer = abstention(pred, defer_fraction)
    lines.append(f"Deferring the {_pct(defer_fraction)} lowest-margin predictions (margin <= "
                 f"{defer['margin_threshold']:.3f}, {defer['deferred']:,} examples) to a person would take "
                 f"{defer['errors_deferred']} of the {int((~pred.correct).sum())} errors "
                 f"({_pct(defer['share_of_errors'])}) and leave accuracy {_pct(defer['accuracy_on_kept'])} on "
                 "the rest.")
    tags = [categories.names[i][0].removeprefix(HAND_PREFIX) for i in worst if categories.source[i] == "hand"]
    if tags:
        counts = sorted({t: tags.count(t) for t in tags}.items(), key=lambda kv: (-kv[1], kv[0]))
        head, count = counts[0]
        summary = ", ".join(f"{t} {c}" for t, c in counts)
        lines.append(f"Hand tags on the {len(worst)} most confident errors: {summary}. The commonest, '{head}' "
                     f"({count} of {len(worst)})" + (f": {actions[head]}." if head in actions else "."))
    return lines


# -- tables and figures -----------------------------------------------------------------------------------
def worst_error_rows(pred: Predictions, worst: np.ndarray, categories: Categories,
                     auto_categories: Categories | None = None,
                     snippets: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per worst error: id, true, predicted, confidence, margin, categories (hand tag wins), note."""
    rows = []
    for rank, i in enumerate(worst, start=1):
        row: dict[str, Any] = {"rank": rank, "id": pred.ids[i]}
        if snippets is not None:
            row["snippet"] = snippets[rank - 1]
        row.update({"true": pred.class_names[pred.y_true[i]], "predicted": pred.class_names[pred.y_pred[i]],
                    "confidence": round(float(pred.confidence[i]), 4), "margin": round(float(pred.margin[i]), 4)})
        if auto_categories is not None:
            row["automatic"] = ", ".join(auto_categories.names[i]) or "-"
        row["category"] = ", ".join(categories.names[i]) or "-"
        row["source"] = categories.source[i]
        row["note"] = categories.notes.get(int(i), "")
        rows.append(row)
    return rows


def slice_figure(rows: Sequence[SliceRow], title: str) -> Any:
    """Error rate per slice with its 95% interval (horizontal bars), the overall rate as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r.n > 0]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(shown) + 1.4))
    y = np.arange(len(shown))[::-1]
    rates = np.array([r.error_rate for r in shown])
    err = np.array([[r.error_rate - r.ci_low for r in shown], [r.ci_high - r.error_rate for r in shown]])
    ax.errorbar(rates, y, xerr=err, fmt="o", color="tab:blue", ecolor="tab:gray", capsize=3)
    ax.axvline(rows[0].error_rate, color="tab:red", linestyle="--")
    ax.set_yticks(y, [f"{r.name} (n={r.n:,})" for r in shown], fontsize=8)
    ax.set_xlabel("error rate (Wilson 95% interval)")
    ax.set_title(f"{title}\ndashed line: overall error rate {100 * rows[0].error_rate:.1f}%", fontsize=10)
    fig.tight_layout()
    return fig


# -- model outputs ------------------------------------------------------------------------------------------
def image_probabilities(model: Any, images: np.ndarray, mean: Sequence[float], std: Sequence[float], *,
                        device: str = "cpu", batch_size: int = 500) -> np.ndarray:
    """Softmax probabilities (N, K) of a torch image classifier on uint8 images, normalised (x/255 - mean)/std."""
    import torch

    from mastery.nn.data import ImageArrayDataset, make_loader

    labels = np.zeros(len(images), dtype=np.int64)  # the dataset wants labels; the outputs do not use them
    loader = make_loader(ImageArrayDataset(images, labels, mean=mean, std=std), batch_size, shuffle=False,
                         device=device)
    model.eval()
    out = []
    with torch.inference_mode():
        for x, _ in loader:
            out.append(torch.softmax(model(x.to(device)).float(), dim=-1).cpu())  # (B, K)
    return torch.cat(out).numpy()


def text_probabilities(tokenizer: Any, model: Any, texts: Sequence[str], *, max_length: int, head_tokens: int,
                       batch_size: int = 32, bf16: bool = False, progress: Any = None) -> np.ndarray:
    """Class probabilities (N, K) of a sequence classifier, in batches of similar length (less padding)."""
    import torch

    from mastery.finetune.classify import classify_texts

    order = np.argsort([len(t) for t in texts], kind="stable")  # characters: a cheap proxy for tokens
    device = next(model.parameters()).device
    probs: list[np.ndarray] = []
    if progress is not None:
        progress.stage("classify reviews", total=len(texts))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for start in range(0, len(texts), batch_size):
            batch = [texts[i] for i in order[start:start + batch_size]]
            probs.append(classify_texts(tokenizer, model, batch, max_length, head_tokens))
            if progress is not None:
                progress.step(len(batch))
    out = np.empty((len(texts), probs[0].shape[1]), dtype=np.float32) if probs else np.zeros((0, 2), np.float32)
    if probs:
        out[order] = np.concatenate(probs)
    return out
