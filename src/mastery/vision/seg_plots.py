"""Figures for segmentation: prediction vs ground-truth overlays and sample grids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def outlines(instances: np.ndarray) -> np.ndarray:
    """Boolean (H, W): pixels on the inner boundary of any instance."""
    from scipy import ndimage

    hi = ndimage.maximum_filter(instances, size=3, mode="nearest")
    lo = ndimage.minimum_filter(instances, size=3, mode="nearest")
    return (instances > 0) & ((hi != instances) | (lo != instances))


def overlay_rgb(image: np.ndarray, true_inst: np.ndarray, pred_inst: np.ndarray) -> np.ndarray:
    """Gray image with true outlines in green and predicted outlines in magenta: (H, W) -> (H, W, 3)."""
    rgb = np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=-1) * 0.8  # (H, W, 3)
    rgb[outlines(true_inst)] = (0.1, 1.0, 0.1)
    rgb[outlines(pred_inst)] = (1.0, 0.1, 1.0)
    return rgb


def error_rgb(true_inst: np.ndarray, pred_inst: np.ndarray) -> np.ndarray:
    """Pixel errors of the foreground: TP white, FP red, FN blue, TN black -> (H, W, 3)."""
    t, p = true_inst > 0, pred_inst > 0
    rgb = np.zeros((*t.shape, 3))
    rgb[t & p] = 1.0
    rgb[p & ~t] = (1.0, 0.2, 0.2)
    rgb[t & ~p] = (0.2, 0.4, 1.0)
    return rgb


def _instances_rgb(inst: np.ndarray, seed: int = 0) -> np.ndarray:
    colours = np.random.default_rng(seed).uniform(0.25, 1.0, (int(inst.max()) + 1, 3))
    colours[0] = 0.0
    return colours[inst]


def overlay_figure(images: Sequence[np.ndarray], trues: Sequence[np.ndarray], preds: Sequence[np.ndarray],
                   captions: Sequence[str], title: str = "") -> Any:
    """One row per image: input | true instances | predicted instances | outlines overlay | pixel errors."""
    plt = _plt()
    n = len(images)
    fig, axes = plt.subplots(n, 5, figsize=(15, 3.1 * n + 0.5), squeeze=False)
    heads = ["image", "ground truth instances", "predicted instances",
             "outlines: truth green, prediction magenta", "pixels: TP white, FP red, FN blue"]
    for i in range(n):
        panels = [np.clip(images[i], 0, 1), _instances_rgb(trues[i]), _instances_rgb(preds[i], 1),
                  overlay_rgb(images[i], trues[i], preds[i]), error_rgb(trues[i], preds[i])]
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(heads[j], fontsize=9)
        axes[i, 0].set_ylabel(captions[i], fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def loss_figure(losses: Sequence[float], epoch_loss: Sequence[float], steps_per_epoch: int, title: str = "") -> Any:
    """Per-batch loss (light) and per-epoch mean (dots)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(np.arange(1, len(losses) + 1), losses, alpha=0.35, label="batch")
    ax.plot(np.arange(1, len(epoch_loss) + 1) * steps_per_epoch, epoch_loss, "o-", label="epoch mean")
    ax.set_xlabel("step")
    ax.set_ylabel("BCE + soft Dice loss")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title(title, fontsize=10)
    return fig


def tile_map_figure(image: np.ndarray, tile: int, test_cells: Sequence[tuple[int, int]]) -> Any:
    """The real image with its held-out test tiles outlined in red (training tiles unmarked)."""
    plt = _plt()
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.imshow(image, cmap="gray")
    for r, c in test_cells:
        ax.add_patch(Rectangle((c * tile - 0.5, r * tile - 0.5), tile, tile, fill=False, ec="red", lw=2))
        ax.text(c * tile + 4, r * tile + 14, "test", color="red", fontsize=9)
    ax.set_title(f"DSB2018 image: {tile}x{tile} tiles, held-out test tiles in red", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig
