"""Automatic image categories for error analysis: blur, contrast, brightness and the model's hesitation.

- **Blur**: variance of the Laplacian (Pech-Pacheco et al. 2000, "Diatom autofocusing in brightfield
  microscopy"). The Laplacian responds to edges; a blurred image has weak edges, so its response varies
  little. The 3x3 kernel is OpenCV's ``Laplacian(ksize=1)``, with its default border (reflect-101, scipy's
  ``mirror``), on the luma of the image.
- **Contrast**: RMS contrast, the standard deviation of luma on the [0, 1] scale.
- **Brightness**: mean luma on the [0, 1] scale (for MNIST: how much ink, as the background is black).
- **Ambiguity**: the margin between the model's top two probabilities; not a property of the image but
  of the model on it, so the report ranks it apart from the others.

None of these has a universal cut-off (a sharp 28x28 digit and a sharp 32x32 photo score very
differently), so :func:`image_thresholds` takes them from the data: the lowest (or highest) ``quantile``
of the set being analysed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from mastery.core.errors import ConfigError
from mastery.eval.error_analysis import AMBIGUOUS_MAX_MARGIN, ambiguity_cutoff

# ITU-R BT.601 luma weights, as OpenCV's RGB -> gray conversion uses.
LUMA = np.array([0.299, 0.587, 0.114])
LAPLACIAN = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])

# Slice names, in the order reports list them; AMBIGUOUS is a model slice (from the predictions).
BLURRY, LOW_CONTRAST, DARK, BRIGHT, AMBIGUOUS = "blurry", "low contrast", "dark", "bright", "ambiguous"
IMAGE_SLICES = (BLURRY, LOW_CONTRAST, DARK, BRIGHT, AMBIGUOUS)


def luma(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) or (N, H, W, 3) -> float64 luma (N, H, W) on the 0-255 scale."""
    images = np.asarray(images)
    if images.ndim == 3:
        return images.astype(np.float64)
    if images.ndim == 4 and images.shape[-1] == 3:
        return images.astype(np.float64) @ LUMA
    raise ConfigError(f"images must be (N, H, W) or (N, H, W, 3), got shape {images.shape}")


def laplacian_variance(images: np.ndarray) -> np.ndarray:
    """Variance of the Laplacian of each image's luma, (N,): low = few or soft edges (blur)."""
    from scipy.ndimage import convolve

    gray = luma(images)  # (N, H, W)
    # A (1, 3, 3) kernel convolves each image on its own; "mirror" is reflect-101, OpenCV's default border.
    response = convolve(gray, LAPLACIAN[None], mode="mirror")
    return response.reshape(len(gray), -1).var(axis=1)


def rms_contrast(images: np.ndarray) -> np.ndarray:
    """Standard deviation of luma on the [0, 1] scale, (N,)."""
    gray = luma(images) / 255.0
    return gray.reshape(len(gray), -1).std(axis=1)


def brightness(images: np.ndarray) -> np.ndarray:
    """Mean luma on the [0, 1] scale, (N,)."""
    gray = luma(images) / 255.0
    return gray.reshape(len(gray), -1).mean(axis=1)


@dataclass(frozen=True)
class ImageThresholds:
    """Cut-offs of the automatic image slices, and the quantile they were taken at."""

    quantile: float
    blur_laplacian_var: float  # blurry: variance of the Laplacian <= this
    low_contrast: float  # low contrast: RMS contrast <= this
    dark: float  # dark: mean luma <= this
    bright: float  # bright: mean luma >= this
    ambiguous_margin: float  # ambiguous: top-1 minus top-2 probability <= this

    def rows(self) -> list[dict[str, object]]:
        rules = {"blur_laplacian_var": (BLURRY, "variance of the Laplacian <="),
                 "low_contrast": (LOW_CONTRAST, "RMS contrast (luma std, 0-1) <="),
                 "dark": (DARK, "mean luma (0-1) <="), "bright": (BRIGHT, "mean luma (0-1) >="),
                 "ambiguous_margin": (AMBIGUOUS, "top-1 minus top-2 probability <=")}
        values = asdict(self)
        return [{"slice": name, "rule": f"{rule} {values[key]:.4g}",
                 "from": f"{'upper' if key == 'bright' else 'lower'} {self.quantile:.0%} quantile of the set"
                         + (f", capped at {AMBIGUOUS_MAX_MARGIN}" if key == "ambiguous_margin" else "")}
                for key, (name, rule) in rules.items()]


def image_thresholds(images: np.ndarray, margin: np.ndarray, quantile: float = 0.1) -> ImageThresholds:
    """Thresholds at the ``quantile`` tails of this set's measurements."""
    if not 0 < quantile < 0.5:
        raise ConfigError(f"quantile must lie in (0, 0.5), got {quantile}")
    light = brightness(images)
    return ImageThresholds(
        quantile=quantile,
        blur_laplacian_var=float(np.quantile(laplacian_variance(images), quantile)),
        low_contrast=float(np.quantile(rms_contrast(images), quantile)),
        dark=float(np.quantile(light, quantile)), bright=float(np.quantile(light, 1 - quantile)),
        ambiguous_margin=ambiguity_cutoff(margin, quantile))


def image_categories(images: np.ndarray, margin: np.ndarray, thresholds: ImageThresholds) -> dict[str, np.ndarray]:
    """Slice name -> boolean mask (N,) for every automatic image slice."""
    margin = np.asarray(margin, dtype=np.float64)
    if margin.shape != (len(images),):
        raise ConfigError(f"margin has shape {margin.shape}, expected ({len(images)},)")
    light = brightness(images)
    return {BLURRY: laplacian_variance(images) <= thresholds.blur_laplacian_var,
            LOW_CONTRAST: rms_contrast(images) <= thresholds.low_contrast,
            DARK: light <= thresholds.dark, BRIGHT: light >= thresholds.bright,
            AMBIGUOUS: margin <= thresholds.ambiguous_margin}
