"""Two-stage transfer learning on cached features, ImageFolder loading, and the figures that go with it.

Schedule (the roadmap's): stage 1 freezes the backbone and trains a new head; stage 2 unfreezes the
tail (ResNet-18's layer4, or EfficientNet's last stage) and fine-tunes it with the head at a lower
learning rate. The stem is frozen in both stages and kept in eval mode, so its output is a fixed
function of each image: it is computed once (:func:`extract`) and both stages train on the cache.
That is the same computation as running the whole network, at a fraction of the cost (checked by
:func:`max_cached_vs_end_to_end_gap`). The price is no pixel-level augmentation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from mastery.core.errors import MasteryError
from mastery.core.progress import NullProgress, Progress
from mastery.nn.data import ImageArrayDataset, make_loader
from mastery.nn.train import History, build_optimizer, evaluate, fit, predict
from mastery.vision.backbones import FromStem, TransferNet, calibrate_batchnorm, set_stage

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageFolderError(MasteryError):
    """A user-supplied image folder is missing, has too few classes, or holds an unreadable image."""


# -- data ------------------------------------------------------------------------------------
def load_image_folder(root: str | Path, size: int) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """An ImageFolder-style tree (``root/<class>/<image>``) as uint8 (N, size, size, 3) + labels (N,).

    Classes are the sub-folder names in sorted order; every image is converted to RGB and resized
    (squashed) to ``size`` x ``size``. Returns (images, labels, class_names, file paths).
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(root).expanduser()
    if not root.is_dir():
        raise ImageFolderError(f"image folder {root} does not exist (or is not a folder)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise ImageFolderError(f"image folder {root} needs at least 2 class sub-folders, found {len(classes)}"
                               f"{': ' + ', '.join(classes) if classes else ''}")
    images, labels, files = [], [], []
    for label, name in enumerate(classes):
        paths = sorted(p for p in (root / name).rglob("*")
                       if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
        if not paths:
            raise ImageFolderError(f"class folder {root / name} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        for path in paths:
            try:
                with Image.open(path) as img:
                    rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                raise ImageFolderError(f"cannot read image {path}: {exc}") from exc
            images.append(np.asarray(rgb, dtype=np.uint8))  # (size, size, 3)
            labels.append(label)
            files.append(str(path))
    log.info("loaded %d images in %d classes from %s", len(images), len(classes), root)
    return np.stack(images), np.asarray(labels, dtype=np.int64), classes, files


def stratified_split(labels: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Index arrays, one per fraction (the last takes the rest), with each class split alike."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        bounds = np.round(np.cumsum(fractions)[:-1] * len(idx)).astype(int)
        for part, chunk in zip(parts, np.split(idx, bounds), strict=True):
            part.extend(chunk.tolist())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def per_class_subset(labels: np.ndarray, n_per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n_per_class`` random examples of every class."""
    rng = np.random.default_rng(seed)
    idx = [rng.choice(np.flatnonzero(labels == c), n_per_class, replace=False) for c in np.unique(labels)]
    return np.sort(np.concatenate(idx))


def resize_images(images: np.ndarray, size: int, chunk: int = 512) -> np.ndarray:
    """uint8 (N, H, W, 3) -> uint8 (N, size, size, 3), bilinear (antialiased when shrinking)."""
    if images.shape[1:3] == (size, size):
        return images
    out = []
    for start in range(0, len(images), chunk):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + chunk])).permute(0, 3, 1, 2).float()
        y = nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                                      antialias=size < images.shape[1])  # (B, 3, size, size)
        out.append(y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


@torch.inference_mode()
def extract(module: nn.Module, images: np.ndarray, mean: Sequence[float], std: Sequence[float],
            device: torch.device | str, batch_size: int = 64) -> torch.Tensor:
    """Run a frozen ``module`` (eval mode) over uint8 (N, H, W, 3) images -> float32 CPU tensor (N, ...)."""
    module.eval().to(device)
    ds = ImageArrayDataset(images, np.zeros(len(images), dtype=np.int64), mean, std)
    outs = [module(x.to(device)).float().cpu() for x, _ in make_loader(ds, batch_size, shuffle=False)]
    return torch.cat(outs)


# -- two-stage training ----------------------------------------------------------------------
@dataclass(frozen=True)
class Schedule:
    head_epochs: int = 10
    head_lr: float = 1e-3
    finetune_epochs: int = 4
    finetune_lr: float = 1e-4  # lower: the tail's ImageNet weights should move a little, not be overwritten
    batch_size: int = 32
    weight_decay: float = 1e-4


@dataclass
class TwoStageResult:
    stage1: History
    stage2: History
    test_accuracy_stage1: float
    test_accuracy: float
    y_true: np.ndarray
    y_pred: np.ndarray
    params: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _loader(x: torch.Tensor, y: np.ndarray, batch_size: int, shuffle: bool, seed: int, device: str) -> Any:
    ds = TensorDataset(x, torch.from_numpy(np.asarray(y, dtype=np.int64)))
    return make_loader(ds, batch_size, shuffle=shuffle, seed=seed, device=device,
                       drop_last=shuffle and len(ds) > batch_size)  # no 1-image BatchNorm batches


def train_two_stage(net: TransferNet, data: dict[str, tuple[np.ndarray, np.ndarray]], mean: Sequence[float],
                    std: Sequence[float], schedule: Schedule, device: torch.device, *, seed: int = 0,
                    progress: Progress | None = None, prefix: str = "",
                    calibrate_bn: bool = False) -> TwoStageResult:
    """Stage 1 (head on frozen features), then stage 2 (tail + head), on cached stem outputs.

    ``data`` maps "train", "val" and "test" to (uint8 images (N, S, S, 3), labels (N,)), already at the
    network's input size. ``calibrate_bn`` first sets the backbone's BatchNorm statistics from the
    training images (for a randomly initialised backbone).
    """
    import time

    progress = progress or NullProgress()
    dev = str(device)
    result_params = {"stage1": set_stage(net, 1)}
    start = time.perf_counter()
    progress.stage(f"{prefix}extract", total=None)
    if calibrate_bn:
        x, y = data["train"]
        loader = make_loader(ImageArrayDataset(x, y, mean, std), 64, shuffle=False)
        calibrate_batchnorm(nn.Sequential(net.stem, net.tail).to(device), (b.to(device) for b, _ in loader))
    stem = {k: extract(net.stem, x, mean, std, device) for k, (x, _) in data.items()}  # (N, C, h, w) each
    labels = {k: y for k, (_, y) in data.items()}
    seconds = {"extract": time.perf_counter() - start}
    log.info("%scached stem outputs %s in %.1fs", prefix, tuple(stem["train"].shape), seconds["extract"])

    # Stage 1: the tail is frozen too, so the pooled features are fixed: cache them and fit the head alone.
    start = time.perf_counter()
    with torch.inference_mode():
        net.eval().to(device)
        feats = {k: torch.cat([net.features(a.to(device)).cpu() for a in v.split(256)]) for k, v in stem.items()}
    head_loader = _loader(feats["train"], labels["train"], schedule.batch_size, True, seed, dev)
    val_feats = _loader(feats["val"], labels["val"], 512, False, seed, dev)
    opt = build_optimizer("adamw", net.head.parameters(), schedule.head_lr, weight_decay=schedule.weight_decay)
    stage1 = fit(net.head, head_loader, opt, epochs=schedule.head_epochs, device=device, val_loader=val_feats,
                 progress=progress, prefix=f"{prefix}stage1_")
    acc1 = evaluate(net.head, _loader(feats["test"], labels["test"], 512, False, seed, dev), device).accuracy
    seconds["stage1"] = time.perf_counter() - start

    # Stage 2: unfreeze the tail; train tail + head on the cached stem outputs at the lower learning rate.
    start = time.perf_counter()
    result_params["stage2"] = set_stage(net, 2)
    model = FromStem(net)
    trainable = [p for p in net.parameters() if p.requires_grad]
    opt = build_optimizer("adamw", trainable, schedule.finetune_lr, weight_decay=schedule.weight_decay)
    train_loader = _loader(stem["train"], labels["train"], schedule.batch_size, True, seed + 1, dev)
    val_loader = _loader(stem["val"], labels["val"], 128, False, seed, dev)
    stage2 = fit(model, train_loader, opt, epochs=schedule.finetune_epochs, device=device, val_loader=val_loader,
                 progress=progress, prefix=f"{prefix}stage2_")
    y_pred, y_true = predict(model, _loader(stem["test"], labels["test"], 128, False, seed, dev), device)
    seconds["stage2"] = time.perf_counter() - start
    return TwoStageResult(stage1=stage1, stage2=stage2, test_accuracy_stage1=acc1,
                          test_accuracy=float((y_pred == y_true).mean()), y_true=y_true, y_pred=y_pred,
                          params=result_params, seconds=seconds)


def train_end_to_end(net: TransferNet, data: dict[str, tuple[np.ndarray, np.ndarray]], mean: Sequence[float],
                     std: Sequence[float], schedule: Schedule, device: torch.device, *, seed: int = 0,
                     progress: Progress | None = None, prefix: str = "") -> TwoStageResult:
    """Every layer trainable (a network from scratch has nothing worth freezing), same epochs and rates."""
    import time

    progress = progress or NullProgress()
    dev = str(device)
    params = {"stage1": set_stage(net, 0)}
    params["stage2"] = params["stage1"]
    # EfficientNet keeps TF's BatchNorm decay (momentum 0.01): over a few hundred steps the running
    # statistics still remember the huge activations of the first random-weight batches, and eval mode
    # is then at chance. PyTorch's usual 0.1 forgets them; the statistics are re-estimated at the end too.
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.1
    # No augmentation, like the cached two-stage runs it is compared with.
    ds = {k: ImageArrayDataset(x, y, mean, std) for k, (x, y) in data.items()}
    train = make_loader(ds["train"], schedule.batch_size, shuffle=True, seed=seed, device=dev,
                        drop_last=len(ds["train"]) > schedule.batch_size)
    val = make_loader(ds["val"], 128, shuffle=False, device=dev)
    histories, seconds = [], {}
    for stage, (epochs, lr) in enumerate(((schedule.head_epochs, schedule.head_lr),
                                          (schedule.finetune_epochs, schedule.finetune_lr)), start=1):
        start = time.perf_counter()
        opt = build_optimizer("adamw", net.parameters(), lr, weight_decay=schedule.weight_decay)
        histories.append(fit(net, train, opt, epochs=epochs, device=device, val_loader=val, progress=progress,
                             prefix=f"{prefix}stage{stage}_"))
        # Precise BatchNorm: the statistics of the final weights, averaged over the training images.
        plain = make_loader(ds["train"], 64, shuffle=False, device=dev)
        calibrate_batchnorm(net, (x.to(device) for x, _ in plain))
        seconds[f"stage{stage}"] = time.perf_counter() - start
        if stage == 1:
            acc1 = evaluate(net, make_loader(ds["test"], 128, shuffle=False, device=dev), device).accuracy
    y_pred, y_true = predict(net, make_loader(ds["test"], 128, shuffle=False, device=dev), device)
    return TwoStageResult(stage1=histories[0], stage2=histories[1], test_accuracy_stage1=acc1,
                          test_accuracy=float((y_pred == y_true).mean()), y_true=y_true, y_pred=y_pred,
                          params=params, seconds=seconds)


def max_cached_vs_end_to_end_gap(net: TransferNet, images: np.ndarray, mean: Sequence[float],
                                 std: Sequence[float], device: torch.device) -> float:
    """Largest |logit| difference between net(x) and head(tail(cached stem(x))) on a few images."""
    net.eval().to(device)
    ds = ImageArrayDataset(images, np.zeros(len(images), dtype=np.int64), mean, std)
    x = next(iter(make_loader(ds, len(images), shuffle=False)))[0].to(device)  # (n, 3, S, S)
    stem = extract(net.stem, images, mean, std, device)
    with torch.inference_mode():
        return float((net(x) - net.from_stem(stem.to(device))).abs().max())


# -- figures ---------------------------------------------------------------------------------
def two_stage_curves(results: dict[str, TwoStageResult], title: str = "") -> Any:
    """Loss and accuracy vs epoch across both stages (dotted line = unfreezing); solid train, dashed val."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11.5, 4.2))
    for k, (name, r) in enumerate(results.items()):
        e1 = r.stage1.epochs
        epochs = np.arange(1, e1 + r.stage2.epochs + 1)
        for ax, train, val in ((ax_loss, "train_loss", "val_loss"), (ax_acc, "train_accuracy", "val_accuracy")):
            ax.plot(epochs, getattr(r.stage1, train) + getattr(r.stage2, train), color=f"C{k}", label=f"{name} train")
            ax.plot(epochs, getattr(r.stage1, val) + getattr(r.stage2, val), "--", color=f"C{k}",
                    label=f"{name} val")
            ax.axvline(e1 + 0.5, color="grey", linestyle=":", linewidth=1)
    ax_loss.set(xlabel="epoch (stage 1 | stage 2)", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch (stage 1 | stage 2)", ylabel="accuracy", title="accuracy")
    ax_acc.legend(fontsize=7)
    ax_acc.text(0.02, 0.02, "dotted: stage 2 starts (last stage unfrozen, lower learning rate)",
                transform=ax_acc.transAxes, fontsize=7)
    fig.suptitle(title or "Two-stage fine-tuning")
    fig.tight_layout()
    return fig
