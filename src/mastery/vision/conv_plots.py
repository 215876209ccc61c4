"""Figures for CNNs: first-layer filters and per-layer feature maps as PNG-ready grids."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _unit(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def filter_grid(weights: np.ndarray, title: str = "", cols: int = 8) -> Any:
    """First-layer kernels (O, 3, KH, KW) as small RGB tiles, each stretched to [0, 1] on its own."""
    plt = _plt()
    o = weights.shape[0]
    rows = int(np.ceil(o / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 0.9 + 0.4), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < o:
            w = weights[k]  # (C, KH, KW)
            img = _unit(w.transpose(1, 2, 0)) if w.shape[0] == 3 else _unit(w[0])
            ax.imshow(img, interpolation="nearest", cmap=None if w.shape[0] == 3 else "gray")
            ax.set_title(str(k), fontsize=6, pad=1)
    fig.suptitle(title, fontsize=9)
    return fig


def feature_map_grid(images: np.ndarray, maps: Mapping[str, np.ndarray], captions: Sequence[str],
                     channels: int = 6, title: str = "") -> Any:
    """One row per (image, layer): the input image, then the ``channels`` most active maps of that layer.

    ``images`` uint8 (N, H, W, 3); ``maps`` layer name -> float (N, C, h, w).
    """
    plt = _plt()
    n, layers = images.shape[0], list(maps)
    rows = n * len(layers)
    fig, axes = plt.subplots(rows, channels + 1, figsize=((channels + 1) * 1.1, rows * 1.1 + 0.4), squeeze=False)
    for i in range(n):
        for j, name in enumerate(layers):
            r = i * len(layers) + j
            fmap = maps[name][i]  # (C, h, w)
            order = np.argsort(-fmap.mean(axis=(1, 2)))[:channels]  # strongest mean activation first
            ax = axes[r, 0]
            ax.imshow(images[i], interpolation="nearest")
            ax.set_ylabel(f"{captions[i]}\n{name} {fmap.shape[1]}x{fmap.shape[2]}", fontsize=6)
            ax.set_xticks([])
            ax.set_yticks([])
            for c in range(channels):
                ax = axes[r, c + 1]
                ax.axis("off")
                if c < len(order):
                    ax.imshow(fmap[order[c]], cmap="viridis", interpolation="nearest")
                    ax.set_title(f"ch {order[c]}", fontsize=5, pad=1)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
