"""Small PyTorch models for the Foundations labs: an MLP with optional Dropout/BatchNorm, a small CNN."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """Flatten -> [Linear -> (BatchNorm1d) -> ReLU -> (Dropout)] * len(hidden) -> Linear.

    Input (N, C, H, W) or (N, D); output logits (N, num_classes). BatchNorm1d normalises each
    of the H hidden features over the batch dimension N of the (N, H) activations; it goes
    before the ReLU (as in the BatchNorm paper) and Dropout after it.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int, *,
                 dropout: float = 0.0, batchnorm: bool = False, input_dropout: float = 0.0) -> None:
        super().__init__()
        if in_features < 1 or num_classes < 1 or any(h < 1 for h in hidden):
            raise ValueError(f"sizes must be >= 1: in_features={in_features}, hidden={tuple(hidden)}, "
                             f"num_classes={num_classes}")
        if not (0.0 <= dropout < 1.0 and 0.0 <= input_dropout < 1.0):
            raise ValueError(f"dropout probabilities must be in [0, 1), got {dropout} and {input_dropout}")
        layers: list[nn.Module] = [nn.Flatten()]  # (N, C, H, W) -> (N, D)
        if input_dropout > 0:
            layers.append(nn.Dropout(input_dropout))
        width = in_features
        for h in hidden:
            # A Linear followed by BatchNorm needs no bias: BatchNorm's beta replaces it.
            layers.append(nn.Linear(width, h, bias=not batchnorm))  # (N, width) -> (N, h)
            if batchnorm:
                layers.append(nn.BatchNorm1d(h))  # per feature, statistics over N
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))  # (N, width) -> (N, num_classes)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Two conv blocks and a dense head for 28x28 grayscale digits (about 0.2M parameters).

    (N, 1, 28, 28) -conv3x3,relu,pool-> (N, c1, 14, 14) -conv3x3,relu,pool-> (N, c2, 7, 7)
    -flatten-> (N, c2*49) -linear,relu,dropout-> (N, hidden) -linear-> (N, num_classes) logits.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, channels: tuple[int, int] = (16, 32),
                 hidden: int = 128, dropout: float = 0.25, image_size: int = 28) -> None:
        super().__init__()
        c1, c2 = channels
        side = image_size // 4  # two 2x2 max-pools
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c2 * side * side, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_from_manifest(arch: dict) -> nn.Module:
    """A fresh MLP or SmallCNN from a model-registry ``architecture`` entry (weights are loaded after)."""
    classes = {"MLP": MLP, "SmallCNN": SmallCNN}
    if arch.get("class") not in classes:
        raise ValueError(f"mastery.nn.models cannot build {arch.get('class')!r}; known: {', '.join(classes)}")
    kwargs = dict(arch.get("kwargs", {}))
    if "channels" in kwargs:
        kwargs["channels"] = tuple(kwargs["channels"])
    return classes[arch["class"]](**kwargs)
