"""Figures for training runs: loss/accuracy curves, a confusion matrix and an image grid.

Each function returns a matplotlib Figure (Agg backend) for ``report.figure``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mastery.nn.train import History


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def ema(values: Sequence[float], alpha: float = 0.05) -> np.ndarray:
    """Exponential moving average (bias-corrected, like TensorBoard's smoothing) of a loss curve."""
    out = np.empty(len(values))
    avg = 0.0
    for i, v in enumerate(values):
        avg = (1 - alpha) * avg + alpha * v
        out[i] = avg / (1 - (1 - alpha) ** (i + 1))
    return out


def training_curves(histories: Mapping[str, History], title: str = "") -> Any:
    """Loss (left) and accuracy (right) vs epoch; solid = train, dashed = validation, one colour per run."""
    plt = _plt()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    for k, (name, h) in enumerate(histories.items()):
        colour = f"C{k}"
        epochs = np.arange(1, h.epochs + 1)
        train = f"{name} train" + ("" if h.train_eval_mode else " (running mean, train mode)")
        ax_loss.plot(epochs, h.train_loss, "-o", color=colour, ms=3, label=train)
        ax_acc.plot(epochs, h.train_accuracy, "-o", color=colour, ms=3, label=train)
        if h.val_loss:
            ax_loss.plot(epochs, h.val_loss, "--s", color=colour, ms=3, label=f"{name} val")
            ax_acc.plot(epochs, h.val_accuracy, "--s", color=colour, ms=3, label=f"{name} val")
        if h.best_epoch:
            ax_acc.plot([h.best_epoch], [h.best_val_accuracy], "*", color=colour, ms=12)
    ax_loss.set_ylabel("cross-entropy loss")
    ax_acc.set_ylabel("accuracy (* = best val epoch)")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_matrix_figure(cm: np.ndarray, class_names: Sequence[str], title: str = "") -> Any:
    """Counts per (true, predicted) cell, coloured by row-normalised rate."""
    plt = _plt()
    k = cm.shape[0]
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(0.55 * k + 2.5, 0.55 * k + 2))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), class_names, rotation=45 if max(map(len, class_names)) > 2 else 0, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "Confusion matrix (test set)")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    fig.tight_layout()
    return fig


def image_grid(images: np.ndarray, captions: Sequence[str], cols: int = 8, title: str = "") -> Any:
    """uint8 images (N, H, W) or (N, H, W, C) in a grid, each with a caption."""
    plt = _plt()
    n = len(images)
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.5 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i], cmap="gray" if images[i].ndim == 2 else None, vmin=0, vmax=255)
            ax.set_title(captions[i], fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
