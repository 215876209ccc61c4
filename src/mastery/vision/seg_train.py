"""Training and inference for binary nuclei segmentation with a U-Net.

The network predicts the nuclei *interiors* (each nucleus minus its 1-pixel boundary, see
:func:`mastery.vision.seg_metrics.interior_target`), so touching nuclei come out as separate
connected components; instances are those components grown back by one pixel.
Batches are random crops with random flips / 90-degree turns, drawn from a seeded generator.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from mastery.core.progress import NullProgress, Progress
from mastery.vision.seg_metrics import contact_zone, instances_from_mask, interior_target

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegSetup:
    epochs: int = 10
    steps_per_epoch: int = 50
    batch_size: int = 8
    crop: int = 96  # training crop side, divisible by 2^depth
    lr: float = 2e-3  # AdamW under a OneCycle schedule
    weight_decay: float = 1e-4
    dice_weight: float = 1.0  # loss = weighted BCE + dice_weight * soft Dice loss
    contact_weight: float = 5.0  # extra BCE weight on pixels between touching nuclei (U-Net paper's idea)


@dataclass
class SegHistory:
    loss: list[float] = field(default_factory=list)  # mean loss of each epoch
    epoch_seconds: list[float] = field(default_factory=list)
    iteration_loss: list[float] = field(default_factory=list)


class PatchSampler:
    """Random augmented crops from a list of (image (H, W), instances (H, W)) samples, each at least crop x crop."""

    def __init__(self, samples: list[tuple[np.ndarray, np.ndarray]], crop: int, seed: int,
                 weights: list[float] | None = None, contact_weight: float = 0.0) -> None:
        small = [i for i, (img, _) in enumerate(samples) if min(img.shape) < crop]
        if small:
            raise ValueError(f"samples {small[:5]} are smaller than the {crop}x{crop} crop")
        self.images = [img.astype(np.float32) for img, _ in samples]
        self.targets = [interior_target(inst).astype(np.float32) for _, inst in samples]
        self.pixel_weights = [1.0 + contact_weight * contact_zone(inst).astype(np.float32) for _, inst in samples]
        w = np.ones(len(samples)) if weights is None else np.asarray(weights, dtype=float)
        self.p = w / w.sum()
        self.crop = crop
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x image crops, y interior targets in {0, 1} and w per-pixel loss weights, each (B, 1, crop, crop)."""
        out: list[list[np.ndarray]] = [[], [], []]
        for i in self.rng.choice(len(self.images), size=size, p=self.p):
            r = int(self.rng.integers(0, self.images[i].shape[0] - self.crop + 1))
            c = int(self.rng.integers(0, self.images[i].shape[1] - self.crop + 1))
            k, flip = int(self.rng.integers(4)), self.rng.random() < 0.5
            for j, arr in enumerate((self.images[i], self.targets[i], self.pixel_weights[i])):
                a = np.rot90(arr[r:r + self.crop, c:c + self.crop], k)  # (crop, crop)
                out[j].append(np.ascontiguousarray(a[:, ::-1] if flip else a))
        x, y, w = (torch.from_numpy(np.stack(a))[:, None] for a in out)
        return x, y, w


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice over the whole batch: logits, target (B, 1, H, W) -> scalar."""
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum()
    return 1 - (2 * inter + eps) / (prob.sum() + target.sum() + eps)


def train_unet(model: nn.Module, sampler: PatchSampler, setup: SegSetup, device: torch.device | str,
               progress: Progress | None = None) -> SegHistory:
    """AdamW + OneCycle on pixel-weighted BCE + soft Dice; ``epochs`` x ``steps_per_epoch`` batches."""
    progress = progress or NullProgress()
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=setup.lr, weight_decay=setup.weight_decay)
    total = setup.epochs * setup.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=setup.lr, total_steps=total, pct_start=0.2)
    history = SegHistory()
    progress.stage("train", total=total)
    for epoch in range(1, setup.epochs + 1):
        model.train()
        start, losses = time.perf_counter(), []
        for _ in range(setup.steps_per_epoch):
            x, y, w = (t.to(device) for t in sampler.batch(setup.batch_size))  # (B, 1, crop, crop) each
            logits = model(x)  # (B, 1, crop, crop)
            loss = nn.functional.binary_cross_entropy_with_logits(logits, y, weight=w)
            loss = loss + setup.dice_weight * soft_dice_loss(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            progress.step(1, loss=losses[-1])
        history.epoch_seconds.append(time.perf_counter() - start)
        history.iteration_loss += losses
        history.loss.append(float(np.mean(losses)))
        progress.epoch(epoch, {"train_loss": history.loss[-1]})
        log.info("epoch %d/%d loss=%.4f (%.1fs)", epoch, setup.epochs, history.loss[-1], history.epoch_seconds[-1])
    return history


@torch.no_grad()
def predict_probability(model: nn.Module, image: np.ndarray, device: torch.device | str,
                        multiple: int = 8) -> np.ndarray:
    """Interior probability (H, W) for one image (H, W); reflect-padded up to a multiple of ``multiple``."""
    model.eval()
    h, w = image.shape
    ph, pw = (-h) % multiple, (-w) % multiple
    x = np.pad(image, ((0, ph), (0, pw)), mode="reflect") if ph or pw else image
    logits = model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None].to(device))  # (1,1,H',W')
    return torch.sigmoid(logits)[0, 0, :h, :w].cpu().numpy()


def predict_instances(prob: np.ndarray, threshold: float = 0.5, grow: int = 1,
                      min_size: int = 0) -> np.ndarray:
    """Probability (H, W) -> instance labels: connected components of prob > threshold, grown by ``grow`` px.

    Components smaller than ``min_size`` pixels (before growing) are dropped as noise.
    """
    mask = prob > threshold
    if min_size > 0:
        labels = instances_from_mask(mask)
        sizes = np.bincount(labels.ravel())
        mask = (sizes[labels] >= min_size) & (labels > 0)
    return instances_from_mask(mask, grow=grow)
