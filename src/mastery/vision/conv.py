"""2-D convolution and pooling from scratch in NumPy, plus a receptive-field calculator.

Layouts follow PyTorch: inputs ``x`` are (N, C, H, W), conv weights ``w`` are (O, C, KH, KW) and a
bias ``b`` is (O,). Two convolutions compute the same thing:

* :func:`conv2d_loops` slides the kernel explicitly: one dot product per (image, output channel,
  output row, output column), which is how the operation is defined;
* :func:`conv2d_im2col` unrolls every receptive window into a column ("im2col") and does the whole
  layer as one matrix product, which is how fast libraries do it on CPUs.

Output size per spatial dimension: ``out = (in + 2 * padding - kernel) // stride + 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mastery.nn.dense import ShapeError

IntPair = int | tuple[int, int]


def _pair(value: IntPair, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int | np.integer) else tuple(value)
    if len(pair) != 2 or any(int(v) != v for v in pair):
        raise ShapeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Spatial output size of a conv/pool window sweep: (size + 2p - k) // s + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def _check_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: tuple[int, int],
                padding: tuple[int, int]) -> tuple[int, int]:
    if x.ndim != 4 or w.ndim != 4:
        raise ShapeError(f"expected x (N, C, H, W) and w (O, C, KH, KW), got shapes {x.shape} and {w.shape}")
    if x.shape[1] != w.shape[1]:
        raise ShapeError(f"x has {x.shape[1]} input channels but w expects {w.shape[1]} (w shape {w.shape})")
    if b is not None and b.shape != (w.shape[0],):
        raise ShapeError(f"bias must be ({w.shape[0]},), got {b.shape}")
    if min(stride) < 1 or min(padding) < 0:
        raise ShapeError(f"stride must be >= 1 and padding >= 0, got stride {stride} padding {padding}")
    oh = output_size(x.shape[2], w.shape[2], stride[0], padding[0])
    ow = output_size(x.shape[3], w.shape[3], stride[1], padding[1])
    if oh < 1 or ow < 1:
        raise ShapeError(f"kernel {w.shape[2:]} does not fit input {x.shape[2:]} with padding {padding}")
    return oh, ow


def _pad(x: np.ndarray, padding: tuple[int, int], value: float = 0.0) -> np.ndarray:
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)  # (N, C, H+2ph, W+2pw)


def conv2d_loops(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, stride: IntPair = 1,
                 padding: IntPair = 0) -> np.ndarray:
    """Cross-correlation (what deep learning calls convolution) by explicit sliding-window loops."""
    stride, padding = _pair(stride, "stride"), _pair(padding, "padding")
    oh, ow = _check_conv(x, w, b, stride, padding)
    n, o, kh, kw = x.shape[0], w.shape[0], w.shape[2], w.shape[3]
    sh, sw = stride
    xp = _pad(x, padding)  # (N, C, Hp, Wp)
    out = np.zeros((n, o, oh, ow), dtype=np.result_type(x, w))
    for img in range(n):
        for oc in range(o):
            kernel = w[oc]  # (C, KH, KW)
            for i in range(oh):
                for j in range(ow):
                    window = xp[img, :, i * sh:i * sh + kh, j * sw:j * sw + kw]  # (C, KH, KW)
                    out[img, oc, i, j] = np.sum(window * kernel)
            if b is not None:
                out[img, oc] += b[oc]
    return out


def im2col(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
           pad_value: float = 0.0) -> np.ndarray:
    """Every (C, KH, KW) window as a row: (N, C, H, W) -> (N, OH, OW, C, KH, KW), a strided view where possible."""
    xp = _pad(x, padding, pad_value)
    windows = np.lib.stride_tricks.sliding_window_view(xp, kernel, axis=(2, 3))  # (N, C, Hp-KH+1, Wp-KW+1, KH, KW)
    windows = windows[:, :, ::stride[0], ::stride[1]]  # (N, C, OH, OW, KH, KW)
    return windows.transpose(0, 2, 3, 1, 4, 5)  # (N, OH, OW, C, KH, KW)


def conv2d_im2col(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, stride: IntPair = 1,
                  padding: IntPair = 0) -> np.ndarray:
    """The same convolution as one matrix product: (N*OH*OW, C*KH*KW) @ (C*KH*KW, O)."""
    stride, padding = _pair(stride, "stride"), _pair(padding, "padding")
    oh, ow = _check_conv(x, w, b, stride, padding)
    n, o = x.shape[0], w.shape[0]
    cols = im2col(x, (w.shape[2], w.shape[3]), stride, padding)  # (N, OH, OW, C, KH, KW)
    cols = cols.reshape(n * oh * ow, -1)  # (N*OH*OW, C*KH*KW): the copy that makes it a matrix
    out = cols @ w.reshape(o, -1).T  # (N*OH*OW, O)
    if b is not None:
        out = out + b
    return np.ascontiguousarray(out.reshape(n, oh, ow, o).transpose(0, 3, 1, 2))  # (N, O, OH, OW)


def _pool(x: np.ndarray, kernel: IntPair, stride: IntPair | None, padding: IntPair, mode: str) -> np.ndarray:
    if x.ndim != 4:
        raise ShapeError(f"expected x (N, C, H, W), got shape {x.shape}")
    k = _pair(kernel, "kernel")
    s = k if stride is None else _pair(stride, "stride")
    p = _pair(padding, "padding")
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ShapeError(f"padding {p} must be at most half the kernel {k} (as in PyTorch)")
    oh, ow = output_size(x.shape[2], k[0], s[0], p[0]), output_size(x.shape[3], k[1], s[1], p[1])
    if oh < 1 or ow < 1:
        raise ShapeError(f"pooling window {k} does not fit input {x.shape[2:]}")
    if mode == "max":
        windows = im2col(x, k, s, p, pad_value=-np.inf)  # (N, OH, OW, C, KH, KW); padding never wins a max
        out = windows.max(axis=(4, 5))
    else:
        windows = im2col(x, k, s, p, pad_value=0.0)
        out = windows.sum(axis=(4, 5)) / (k[0] * k[1])  # zero padding counted, like count_include_pad=True
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))  # (N, C, OH, OW)


def max_pool2d(x: np.ndarray, kernel: IntPair, stride: IntPair | None = None, padding: IntPair = 0) -> np.ndarray:
    """Max over each window (stride defaults to the kernel, as in PyTorch)."""
    return _pool(x, kernel, stride, padding, "max")


def avg_pool2d(x: np.ndarray, kernel: IntPair, stride: IntPair | None = None, padding: IntPair = 0) -> np.ndarray:
    """Mean over each window; padded zeros count (PyTorch's default ``count_include_pad=True``)."""
    return _pool(x, kernel, stride, padding, "avg")


# -- receptive field -------------------------------------------------------------------------
@dataclass(frozen=True)
class ReceptiveField:
    """After a layer: ``size`` input pixels seen by one output unit, ``jump`` input pixels between
    neighbouring output units, ``start`` the input coordinate of the first output unit's centre
    (pixel centres at 0, 1, 2, ...; negative when padding pushes it outside the image)."""

    size: int
    jump: int
    start: float


def receptive_fields(layers: Sequence[tuple[int, int, int]]) -> list[ReceptiveField]:
    """Receptive field after each layer of a stack of (kernel, stride, padding) layers.

    Recurrences (input: size 1, jump 1, start 0):
    ``size += (k - 1) * jump``; ``start += ((k - 1) / 2 - p) * jump``; ``jump *= s``.
    """
    size, jump, start = 1, 1, 0.0
    out = []
    for i, layer in enumerate(layers):
        if len(layer) != 3:
            raise ShapeError(f"layer {i} must be (kernel, stride, padding), got {layer!r}")
        k, s, p = (int(v) for v in layer)
        if k < 1 or s < 1 or p < 0:
            raise ShapeError(f"layer {i}: kernel and stride must be >= 1 and padding >= 0, got {layer!r}")
        size += (k - 1) * jump
        start += ((k - 1) / 2 - p) * jump
        jump *= s
        out.append(ReceptiveField(size=size, jump=jump, start=start))
    return out


def receptive_field(layers: Sequence[tuple[int, int, int]]) -> ReceptiveField:
    """The receptive field of the last layer of the stack (see :func:`receptive_fields`)."""
    if not layers:
        return ReceptiveField(size=1, jump=1, start=0.0)
    return receptive_fields(layers)[-1]


def vgg16_layers() -> list[tuple[int, int, int]]:
    """VGG-16's 13 convs (3, 1, 1) and 5 max-pools (2, 2, 0), in order."""
    layers: list[tuple[int, int, int]] = []
    for convs in (2, 2, 3, 3, 3):
        layers += [(3, 1, 1)] * convs + [(2, 2, 0)]
    return layers
