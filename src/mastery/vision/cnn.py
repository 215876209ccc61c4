"""A compact, CPU-friendly CIFAR-10 CNN and its training set-up (OneCycle SGD, label smoothing, bf16).

The net is a VGG-like stack in the style of the fast CIFAR-10 "speedrun" nets: a stem conv, then
blocks of ``conv -> max-pool -> BN -> GELU -> conv -> BN -> GELU``, each halving the resolution
(32 -> 16 -> 8 -> 4), a global max-pool and one bias-free linear layer whose output is scaled down
(small initial logits suit label smoothing). Widths are small so an epoch fits a 2-core CPU;
bf16 autocast (AVX-512 BF16 on CPU, tensor cores on GPU) and channels_last make it ~3x faster
than plain float32 on CPU.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from mastery.core.progress import NullProgress, Progress
from mastery.nn.train import History

log = logging.getLogger(__name__)


class ConvBlock(nn.Module):
    """(B, C_in, H, W) -> (B, C_out, H/2, W/2): conv 3x3 -> max-pool 2 -> BN -> GELU -> conv 3x3 -> BN -> GELU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.pool(self.conv1(x))))  # (B, C_out, H/2, W/2); pooling first saves 3/4 of BN
        return self.act(self.bn2(self.conv2(x)))  # (B, C_out, H/2, W/2)


class CifarCNN(nn.Module):
    """widths = (stem, block1, block2, ...): (B, 3, 32, 32) -> logits (B, num_classes), float32.

    With ``bf16=True`` the forward pass runs under ``torch.autocast(dtype=bfloat16)`` and the
    logits are cast back to float32, so callers (losses, :func:`mastery.nn.train.evaluate`) need
    not know.
    """

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 256), num_classes: int = 10, in_channels: int = 3,
                 head_scale: float = 0.125, bf16: bool = False, channels_last: bool = False) -> None:
        super().__init__()
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"widths needs a stem width and at least one block width, all >= 1, got {widths}")
        self.widths = tuple(int(w) for w in widths)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.GELU())
        self.blocks = nn.ModuleList(ConvBlock(a, b) for a, b in itertools.pairwise(widths))
        self.head = nn.Linear(widths[-1], num_classes, bias=False)
        self.head_scale = head_scale
        self.bf16 = bf16
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Activations after the stem and each block, float32: {'stem': (B, w0, 32, 32), 'block1': ...}."""
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = {"stem": self.stem(self._layout(x))}
            h = out["stem"]
            for i, block in enumerate(self.blocks, 1):
                h = block(h)
                out[f"block{i}"] = h
        return {k: v.float() for k, v in out.items()}

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            h = self.stem(self._layout(x))  # (B, w0, H, W)
            for block in self.blocks:
                h = block(h)  # (B, w_i, H / 2^i, W / 2^i)
            h = torch.amax(h, dim=(2, 3))  # global max-pool: (B, w_last)
            logits = self.head(h) * self.head_scale  # (B, K)
        return logits.float()


def conv_layer_stack(model: CifarCNN) -> list[tuple[str, tuple[int, int, int]]]:
    """The model's convs and pools as (name, (kernel, stride, padding)) for the receptive-field calculator."""
    layers = [("stem.conv", (3, 1, 1))]
    for i in range(1, len(model.blocks) + 1):
        layers += [(f"block{i}.conv1", (3, 1, 1)), (f"block{i}.pool", (2, 2, 0)), (f"block{i}.conv2", (3, 1, 1))]
    return layers


@dataclass(frozen=True)
class TrainSetup:
    """Optimisation hyper-parameters: SGD + Nesterov under a OneCycle schedule, label-smoothed CE."""

    epochs: int
    lr: float = 0.2  # OneCycle peak learning rate
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.2
    pct_start: float = 0.25  # fraction of steps spent warming up to the peak


def build_optimizer(model: nn.Module, setup: TrainSetup, steps_per_epoch: int) -> tuple[torch.optim.Optimizer, object]:
    """SGD (Nesterov; no weight decay on BN parameters) and a per-batch OneCycleLR."""
    decay = [p for p in model.parameters() if p.ndim > 1]  # conv and linear weights
    no_decay = [p for p in model.parameters() if p.ndim <= 1]  # BN gammas and betas
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": setup.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=setup.lr, momentum=setup.momentum, nesterov=True)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=setup.lr, epochs=setup.epochs, steps_per_epoch=steps_per_epoch,
        pct_start=setup.pct_start, anneal_strategy="linear", div_factor=10.0, final_div_factor=100.0,
        cycle_momentum=False)
    return optimizer, scheduler


@torch.no_grad()
def evaluate_logits(model: nn.Module, loader: DataLoader, device: torch.device | str,
                    tta_flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(logits (N, K) float32, labels (N,)) in eval mode; ``tta_flip`` averages with the mirrored image."""
    model.eval()
    logits, labels = [], []
    for x, y in loader:
        x = x.to(device, non_blocking=True)  # (B, C, H, W)
        out = model(x)  # (B, K)
        if tta_flip:
            out = 0.5 * (out + model(x.flip(-1)))
        logits.append(out.cpu())
        labels.append(y)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def train_classifier(model: nn.Module, loader: DataLoader, setup: TrainSetup, device: torch.device | str,
                     *, eval_loader: DataLoader | None = None, progress: Progress | None = None) -> History:
    """Train with label-smoothed cross-entropy; one History row per epoch (running train loss/accuracy,
    and the eval loader's loss/accuracy as 'val' when given)."""
    progress = progress or NullProgress()
    model.to(device)
    optimizer, scheduler = build_optimizer(model, setup, len(loader))
    history = History()
    progress.stage("train", total=setup.epochs * len(loader))
    for epoch in range(1, setup.epochs + 1):
        model.train()
        start = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)  # (B, 3, H, W), (B,)
            logits = model(x)  # (B, K) float32
            loss = nn.functional.cross_entropy(logits, y, label_smoothing=setup.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            value = float(loss.detach())
            loss_sum += value * y.shape[0]
            correct += int((logits.detach().argmax(dim=1) == y).sum())
            seen += int(y.shape[0])
            history.iteration_loss.append(value)
            progress.step(1, loss=value)
        history.end_epoch(time.perf_counter() - start, loss_sum, correct, seen,
                          float(optimizer.param_groups[0]["lr"]))
        if eval_loader is not None:
            logits_np, labels_np = evaluate_logits(model, eval_loader, device)
            ce = nn.functional.cross_entropy(torch.from_numpy(logits_np), torch.from_numpy(labels_np))
            history.val_loss.append(float(ce))
            history.val_accuracy.append(float((logits_np.argmax(1) == labels_np).mean()))
        metrics = history.epoch_metrics(epoch - 1)
        progress.epoch(epoch, metrics)
        log.info("epoch %d/%d %s (%.1fs)", epoch, setup.epochs,
                 " ".join(f"{k}={v:.4f}" for k, v in metrics.items()), history.epoch_seconds[-1])
    return history


def build_from_manifest(arch: dict) -> CifarCNN:
    """A fresh CifarCNN from a model-registry ``architecture`` entry (weights are loaded after)."""
    if arch.get("class") != "CifarCNN":
        raise ValueError(f"mastery.vision.cnn cannot build {arch.get('class')!r}; known: CifarCNN")
    kwargs = dict(arch.get("kwargs", {}))
    from mastery.core.precision import bf16_on_reload

    # A caller that moves the model to a GPU may set ``model.bf16 = bf16_on_reload(True, device)`` itself.
    kwargs["bf16"] = bf16_on_reload(bool(kwargs.get("bf16")))
    return CifarCNN(**kwargs)
