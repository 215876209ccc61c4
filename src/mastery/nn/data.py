"""Image arrays as a PyTorch ``Dataset``: uint8 pixels in, normalised float tensors out.

The loaders in :mod:`mastery.assets.loaders` give uint8 arrays, (N, H, W) for grayscale (MNIST)
or (N, H, W, C) for colour (CIFAR-10). :class:`ImageArrayDataset` keeps them as uint8 (four
times smaller than float32) and converts on the fly: a sample is ``(x, y)`` with ``x`` float32
(C, H, W), normalised per channel as ``(pixel / 255 - mean) / std``, and ``y`` an int64 scalar.

It also implements ``__getitems__``, which the ``DataLoader`` calls with a whole batch of
indices, so a batch is converted with a few vectorised tensor ops instead of one Python call per
image. Shuffling stays reproducible through :func:`make_loader`'s seeded ``torch.Generator``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mastery.nn.dense import ShapeError

log = logging.getLogger(__name__)

# Statistics of the MNIST training images (pixel / 255), the usual normalisation constants.
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (scaled to [0, 1]), computed in chunks.

    ``images`` is (N, H, W) or (N, H, W, C); returns two tuples of length C (1 for grayscale).
    Chunking keeps memory at ``chunk`` images of float64 instead of a full float copy.
    """
    x = images[..., None] if images.ndim == 3 else images  # (N, H, W, C)
    if x.ndim != 4 or len(x) == 0:
        raise ShapeError(f"expected a non-empty (N, H, W) or (N, H, W, C) array, got shape {images.shape}")
    channels = x.shape[-1]
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    for start in range(0, len(x), chunk):
        block = x[start:start + chunk].reshape(-1, channels).astype(np.float64) / 255.0  # (n*H*W, C)
        total += block.sum(axis=0)
        total_sq += (block * block).sum(axis=0)
    count = x.shape[0] * x.shape[1] * x.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


class ImageArrayDataset(Dataset):
    """uint8 images + integer labels -> normalised float32 (C, H, W) tensors and int64 labels.

    Args:
        images: uint8 array (N, H, W) or (N, H, W, C).
        labels: integer array (N,), values in [0, num_classes) when num_classes is given.
        mean, std: per-channel normalisation on the [0, 1] scale (length C, or 1 to broadcast).
        hflip: randomly mirror images left-right (p = 0.5); right for CIFAR, wrong for digits.
        crop_padding: if > 0, zero-pad by this many pixels and take a random crop of the
            original size (a random shift of up to ``crop_padding`` pixels).
        seed: seeds the generator that draws the augmentation, so runs repeat exactly.
        num_classes: if given, labels outside [0, num_classes) are rejected.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        *,
        hflip: bool = False,
        crop_padding: int = 0,
        seed: int = 0,
        num_classes: int | None = None,
    ) -> None:
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.dtype != np.uint8:
            raise ShapeError(f"images must be uint8 pixels (0-255), got dtype {images.dtype}")
        if images.ndim not in (3, 4):
            raise ShapeError(f"images must be (N, H, W) or (N, H, W, C), got shape {images.shape}")
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ShapeError(f"labels must be a 1-D integer array (N,), got shape {labels.shape} "
                             f"dtype {labels.dtype}")
        if len(images) != len(labels):
            raise ShapeError(f"images and labels differ in length: {len(images)} images "
                             f"(shape {images.shape}) vs {len(labels)} labels (shape {labels.shape})")
        if num_classes is not None and len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise ShapeError(f"labels must lie in [0, {num_classes}), "
                             f"got min {labels.min()} max {labels.max()}")
        if crop_padding < 0:
            raise ShapeError(f"crop_padding must be >= 0, got {crop_padding}")
        # uint8 (N, H, W, C) -> (N, C, H, W), still uint8; a copy so the caller's array can change.
        nhwc = images[..., None] if images.ndim == 3 else images
        self.images = torch.from_numpy(np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2)))  # (N, C, H, W)
        self.labels = torch.from_numpy(labels.astype(np.int64))  # (N,)
        channels = self.images.shape[1]
        mean_t = torch.as_tensor(tuple(mean), dtype=torch.float32)
        std_t = torch.as_tensor(tuple(std), dtype=torch.float32)
        if mean_t.numel() not in (1, channels) or std_t.numel() not in (1, channels):
            raise ShapeError(f"mean/std need 1 or {channels} values, "
                             f"got {mean_t.numel()} and {std_t.numel()}")
        if bool((std_t <= 0).any()):
            raise ShapeError(f"std must be positive, got {tuple(std)}")
        # Folded into one affine map: x = pixel * scale + shift, shapes (C, 1, 1) broadcast over H, W.
        self._scale = (1.0 / (255.0 * std_t)).expand(channels).reshape(channels, 1, 1).clone()
        self._shift = (-mean_t / std_t).expand(channels).reshape(channels, 1, 1).clone()
        self.hflip = hflip
        self.crop_padding = int(crop_padding)
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def augment(self) -> bool:
        return self.hflip or self.crop_padding > 0

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one transformed image."""
        _, c, h, w = self.images.shape
        return int(c), int(h), int(w)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def _transform(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float32 (B, C, H, W), augmented when asked, then normalised."""
        x = pixels.to(torch.float32) * self._scale + self._shift  # (B, C, H, W)
        if self.crop_padding > 0:
            p = self.crop_padding
            b, _, h, w = x.shape
            # Pad with what a black (0) pixel normalises to, (B, C, H+2p, W+2p), then crop back to (H, W).
            padded = torch.nn.functional.pad(x - self._shift, (p, p, p, p)) + self._shift
            offsets = torch.randint(0, 2 * p + 1, (b, 2), generator=self.generator).tolist()  # (B, 2)
            x = torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])
        if self.hflip:
            flip = torch.rand(x.shape[0], generator=self.generator) < 0.5  # (B,)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._transform(self.images[index].unsqueeze(0))  # (1, C, H, W)
        return x[0], self.labels[index]  # (C, H, W) float32, () int64

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A batch at once: the DataLoader's fetcher calls this when it exists."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        x = self._transform(self.images[idx])  # (B, C, H, W)
        y = self.labels[idx]  # (B,)
        return list(zip(x.unbind(0), y.unbind(0), strict=True))


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0,
                device: str = "cpu", drop_last: bool = False) -> DataLoader:
    """A single-process DataLoader whose shuffling is drawn from its own seeded generator.

    ``num_workers=0`` keeps the order (and the augmentation draws) identical run to run; the
    batch conversion is vectorised (``__getitems__``), so workers are not needed for speed here.
    """
    if batch_size < 1:
        raise ShapeError(f"batch_size must be >= 1, got {batch_size}")
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=0,
                      pin_memory=device.startswith("cuda"), drop_last=drop_last)


def split_indices(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of range(n) into (train_idx, val_idx), each sorted."""
    if not 0 < val_size < n:
        raise ShapeError(f"val_size must be between 1 and n - 1 = {n - 1}, got {val_size}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])


def subsample(images: np.ndarray, labels: np.ndarray, size: int | None, seed: int) -> tuple[Any, Any]:
    """A seeded random subset of ``size`` examples (all of them when size is None or >= N)."""
    if len(images) != len(labels):
        raise ShapeError(f"images and labels differ in length: {len(images)} vs {len(labels)}")
    if size is None or size >= len(images):
        return images, labels
    idx = np.sort(np.random.default_rng(seed).choice(len(images), size, replace=False))
    return images[idx], labels[idx]
