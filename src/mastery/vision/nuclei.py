"""Nuclei data for segmentation: the DSB2018 folder layout, the one real DSB2018 image, and a generator.

Every sample is ``(image, instances)``: ``image`` float32 (H, W) scaled to about [0, 1] (grayscale;
nuclei bright on dark) and ``instances`` int32 (H, W), 0 = background, one positive label per nucleus.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mastery.core.errors import MasteryError

log = logging.getLogger(__name__)


class NucleiDataError(MasteryError):
    """A nuclei image or mask file is missing, unreadable or malformed (the message names the file)."""


def normalize_image(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Percentile normalisation to float32 [0, 1]: (x - p_low) / (p_high - p_low), clipped."""
    x = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(x, [low, high])
    return np.clip((x - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0).astype(np.float32)


def _to_gray(pixels: np.ndarray, path: Path) -> np.ndarray:
    if pixels.ndim == 2:
        return pixels
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        return pixels[..., :3].astype(np.float32).mean(axis=-1)  # RGB(A) -> gray; DSB images are mostly gray
    raise NucleiDataError(f"{path}: expected a 2-D grayscale or RGB(A) image, got shape {pixels.shape}")


def read_image(path: str | Path) -> np.ndarray:
    """A PNG/JPEG/TIFF file as a 2-D float32 array (RGB averaged to gray); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise NucleiDataError(f"image file not found: {path}")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            pixels = np.asarray(tifffile.imread(path))
        else:
            from PIL import Image

            with Image.open(path) as img:
                pixels = np.asarray(img)
    except Exception as exc:  # any decoder failure means a bad file
        raise NucleiDataError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from exc
    return _to_gray(pixels, path).astype(np.float32)


def _read_mask(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    pixels = read_image(path)
    if pixels.shape != shape:
        raise NucleiDataError(f"mask {path} has shape {pixels.shape}, but its image is {shape}")
    values = np.unique(pixels)
    if len(values) > 2 or (len(values) == 2 and values[0] != 0):
        raise NucleiDataError(f"mask {path} is not binary (one nucleus = non-zero pixels on 0); "
                              f"values {values[:5].tolist()}...")
    if len(values) < 2 or values[0] != 0:
        raise NucleiDataError(f"mask {path} is empty or all foreground: one nucleus per mask file expected")
    return pixels > 0


def load_stage1_sample(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One DSB2018 ``stage1_train/<id>`` folder: ``images/<id>.png`` and ``masks/*.png`` (one per nucleus)."""
    folder = Path(folder)
    image_path = folder / "images" / f"{folder.name}.png"
    image = normalize_image(read_image(image_path))
    mask_files = sorted((folder / "masks").glob("*.png"))
    if not mask_files:
        raise NucleiDataError(f"no mask files: expected {folder / 'masks'}/*.png, one per nucleus")
    instances = np.zeros(image.shape, dtype=np.int32)
    for label, mask_path in enumerate(mask_files, 1):
        mask = _read_mask(mask_path, image.shape)
        instances[mask & (instances == 0)] = label  # overlaps (rare in DSB) keep the first nucleus
    return image, instances


def load_stage1_train(root: str | Path, limit: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every ``<id>`` folder of a DSB2018 ``stage1_train`` directory, sorted by id (``limit`` caps the count)."""
    root = Path(root)
    if not root.is_dir():
        raise NucleiDataError(f"DSB2018 stage1_train folder not found: {root}")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise NucleiDataError(f"{root} holds no <id> sample folders (expected <id>/images/<id>.png)")
    samples = [load_stage1_sample(f) for f in folders[:limit]]
    log.info("loaded %d DSB2018 samples from %s", len(samples), root)
    return samples


def load_dsb_sample() -> tuple[np.ndarray, np.ndarray]:
    """The registry's real DSB2018 image (512, 512) and its 125-nucleus instance mask."""
    from mastery.assets.store import resolve

    image_path, mask_path = resolve("dsb2018-nuclei-sample"), resolve("dsb2018-nuclei-sample-mask")
    image = normalize_image(read_image(image_path))
    import tifffile

    try:
        instances = np.asarray(tifffile.imread(mask_path))
    except Exception as exc:
        raise NucleiDataError(f"cannot read instance mask {mask_path}: {exc}") from exc
    if instances.shape != image.shape or not np.issubdtype(instances.dtype, np.integer):
        raise NucleiDataError(f"instance mask {mask_path}: expected integer labels of shape {image.shape}, "
                              f"got {instances.dtype} {instances.shape}")
    return image, instances.astype(np.int32)


@dataclass(frozen=True)
class TileSplit:
    """Non-overlapping square tiles of one image; ``test`` tiles are held out. Tiles are (row, col) grid cells."""

    train: list[tuple[np.ndarray, np.ndarray]]
    test: list[tuple[np.ndarray, np.ndarray]]
    test_cells: list[tuple[int, int]]
    tile: int


def tile_split(image: np.ndarray, instances: np.ndarray, tile: int = 128,
               test_cells: tuple[tuple[int, int], ...] = ((0, 3), (1, 1), (2, 2), (3, 0))) -> TileSplit:
    """Cut (H, W) into a grid of tile x tile cells; the ``test_cells`` go to test, the rest to train.

    Cells never overlap, so no training pixel lies in a test region (nuclei cut by a tile border
    appear partly in each tile; instance labels are kept as they are).
    """
    rows, cols = image.shape[0] // tile, image.shape[1] // tile
    bad = [c for c in test_cells if not (0 <= c[0] < rows and 0 <= c[1] < cols)]
    if bad or len(set(test_cells)) >= rows * cols:
        raise ValueError(f"test cells must be distinct cells of the {rows}x{cols} grid, leaving some for training")
    train, test = [], []
    for r in range(rows):
        for c in range(cols):
            window = (slice(r * tile, (r + 1) * tile), slice(c * tile, (c + 1) * tile))
            (test if (r, c) in test_cells else train).append((image[window], instances[window]))
    return TileSplit(train=train, test=test, test_cells=list(test_cells), tile=tile)


def generate_nuclei(n: int, size: int = 128, seed: int = 0, *, nuclei: tuple[int, int] = (8, 22),
                    radius: tuple[float, float] = (5.0, 11.0), touching: float = 0.35,
                    noise: float = 0.05) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` synthetic fluorescence images (size, size) with instance masks, seeded.

    Each image has textured elliptical nuclei of varied brightness, a fraction ``touching`` placed
    against an earlier nucleus, optical blur, uneven (smooth multiplicative) illumination, a dim
    background and Gaussian noise. Later nuclei overlap earlier ones, so each label is what is visible.
    """
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)  # (S, S) pixel coordinates
    out = []
    for _ in range(n):
        inst = np.zeros((size, size), dtype=np.int32)
        signal = np.zeros((size, size), dtype=np.float32)
        centres: list[tuple[float, float, float]] = []
        for label in range(1, int(rng.integers(nuclei[0], nuclei[1] + 1)) + 1):
            a = rng.uniform(*radius)
            b = a * rng.uniform(0.6, 1.0)  # semi-axes
            if centres and rng.random() < touching:  # against an earlier nucleus: centres ~ radii apart
                cy, cx, r0 = centres[int(rng.integers(len(centres)))]
                angle = rng.uniform(0, 2 * np.pi)
                dist = (r0 + b) * rng.uniform(0.85, 1.0)
                cy, cx = cy + dist * np.sin(angle), cx + dist * np.cos(angle)
            else:
                cy, cx = rng.uniform(0, size, 2)
            theta = rng.uniform(0, np.pi)
            dy, dx = yy - cy, xx - cx
            u = (dx * np.cos(theta) + dy * np.sin(theta)) / a
            v = (-dx * np.sin(theta) + dy * np.cos(theta)) / b
            inside = u * u + v * v <= 1.0  # (S, S)
            if inside.sum() < 12:
                continue
            inst[inside] = label
            texture = ndimage.gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), 1.5)
            signal[inside] = rng.uniform(0.35, 1.0) * (1.0 + 0.6 * texture[inside])
            centres.append((cy, cx, b))
        # Relabel 1..K, dropping nuclei fully covered by later ones.
        ids = np.unique(inst[inst > 0])
        lut = np.zeros(inst.max() + 1, dtype=np.int32)
        lut[ids] = np.arange(1, len(ids) + 1)
        inst = lut[inst]
        blurred = ndimage.gaussian_filter(signal, 1.0)  # optical blur (PSF)
        gy, gx = rng.uniform(-0.5, 0.5, 2)
        light = 1.0 + gy * (yy / size - 0.5) * 2 + gx * (xx / size - 0.5) * 2  # (S, S) tilt, 0.5 .. 1.5
        light *= 1.0 + 0.3 * ndimage.gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), 20) * 8
        image = (blurred + rng.uniform(0.02, 0.1)) * np.clip(light, 0.3, 2.0)
        image += noise * rng.standard_normal((size, size)).astype(np.float32)
        out.append((normalize_image(image), inst))
    return out
