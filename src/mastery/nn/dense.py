"""A dense layer's forward pass three ways, and ReLU (lesson 1).

Shapes: X (N, D) inputs, W (D, H) weights, b (H,) bias, Y (N, H) outputs.
"""

from __future__ import annotations

import numpy as np

from mastery.core.errors import ConfigError


class ShapeError(ValueError, ConfigError):
    """Arrays whose shapes do not fit the operation; the message names them."""


def check_dense_shapes(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> None:
    """Raise a ValueError naming the shapes when X, W and b do not fit Y = XW + b."""
    if x.ndim != 2 or w.ndim != 2 or b.ndim != 1:
        raise ShapeError(
            f"dense layer expects X (N, D), W (D, H), b (H,); got X {x.shape}, W {w.shape}, b {b.shape}"
        )
    if x.shape[1] != w.shape[0]:
        raise ShapeError(f"X {x.shape} and W {w.shape} do not align: X has D={x.shape[1]}, W has {w.shape[0]} rows")
    if b.shape[0] != w.shape[1]:
        raise ShapeError(f"b {b.shape} does not match W {w.shape}: expected b of shape ({w.shape[1]},)")


def dense_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Y = XW + b; b (H,) broadcasts over the N rows of XW (N, H)."""
    check_dense_shapes(x, w, b)
    return x @ w + b


def dense_forward_loops(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The same product with explicit Python loops: O(N*D*H) interpreted multiply-adds."""
    check_dense_shapes(x, w, b)
    n, d = x.shape
    h = w.shape[1]
    xs, ws, bs = x.tolist(), w.tolist(), b.tolist()
    out = [[0.0] * h for _ in range(n)]
    for i in range(n):
        row, out_row = xs[i], out[i]
        for j in range(h):
            acc = bs[j]
            for k in range(d):
                acc += row[k] * ws[k][j]
            out_row[j] = acc
    return np.asarray(out, dtype=x.dtype)


def dense_forward_broadcast(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pure broadcasting, no matmul: (N, D, 1) * (1, D, H) -> (N, D, H), summed over D.

    Vectorised but memory-hungry: it materialises all N*D*H products before reducing.
    """
    check_dense_shapes(x, w, b)
    return (x[:, :, None] * w[None, :, :]).sum(axis=1) + b


def dense_forward_dot(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One BLAS call through np.dot for the whole batch."""
    check_dense_shapes(x, w, b)
    return np.dot(x, w) + b


def relu(x: np.ndarray) -> np.ndarray:
    """f(x) = max(0, x), elementwise."""
    return np.maximum(x, 0)
