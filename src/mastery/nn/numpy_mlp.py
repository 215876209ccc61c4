"""A 2-layer network written from scratch in NumPy (lesson 4).

Forward: Linear -> ReLU -> Linear -> Sigmoid, binary cross-entropy loss; backward by the
chain rule by hand; plain gradient descent ``W -= lr * dW``.

Shapes: X (N, D), W1 (D, H), b1 (H,), W2 (H, 1), b2 (1,), output p (N, 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mastery.nn.dense import ShapeError, relu

_EPS = 1e-12


def sigmoid(z: np.ndarray) -> np.ndarray:
    # Split by sign so exp never overflows for large |z|.
    out = np.empty_like(z, dtype=float)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def binary_cross_entropy(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


@dataclass
class TwoLayerNet:
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def init(cls, in_features: int, hidden: int, rng: np.random.Generator) -> TwoLayerNet:
        # He initialisation for the ReLU layer, Xavier-like for the sigmoid output.
        return cls(
            w1=rng.standard_normal((in_features, hidden)) * np.sqrt(2.0 / in_features),
            b1=np.zeros(hidden),
            w2=rng.standard_normal((hidden, 1)) * np.sqrt(1.0 / hidden),
            b2=np.zeros(1),
        )

    def params(self) -> dict[str, np.ndarray]:
        return {"w1": self.w1, "b1": self.b1, "w2": self.w2, "b2": self.b2}

    def forward(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 2 or x.shape[1] != self.w1.shape[0]:
            raise ShapeError(f"expected X of shape (N, {self.w1.shape[0]}), got {x.shape}")
        z1 = x @ self.w1 + self.b1  # (N, H)
        a1 = relu(z1)  # (N, H)
        z2 = a1 @ self.w2 + self.b2  # (N, 1)
        p = sigmoid(z2)  # (N, 1)
        self.cache = {"x": x, "z1": z1, "a1": a1, "p": p}
        return p

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        return binary_cross_entropy(self.forward(x), y.reshape(-1, 1))

    def backward(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """Gradients of the mean BCE loss w.r.t. every parameter, from the last forward pass."""
        x, z1, a1, p = (self.cache[k] for k in ("x", "z1", "a1", "p"))
        n = x.shape[0]
        # Sigmoid + BCE collapse to dL/dz2 = (p - y) / N: the 1/(p(1-p)) and p(1-p) cancel.
        dz2 = (p - y.reshape(-1, 1)) / n  # (N, 1)
        dw2 = a1.T @ dz2  # (H, 1)
        db2 = dz2.sum(axis=0)  # (1,)
        da1 = dz2 @ self.w2.T  # (N, H)
        dz1 = da1 * (z1 > 0)  # ReLU passes gradient only where it was active
        dw1 = x.T @ dz1  # (D, H)
        db1 = dz1.sum(axis=0)  # (H,)
        return {"w1": dw1, "b1": db1, "w2": dw2, "b2": db2}

    def step(self, grads: dict[str, np.ndarray], lr: float) -> None:
        for name, param in self.params().items():
            param -= lr * grads[name]  # in place: W = W - alpha * dW

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (self.forward(x)[:, 0] >= 0.5).astype(int)


def gradient_check(net: TwoLayerNet, x: np.ndarray, y: np.ndarray, eps: float = 1e-6) -> float:
    """Max relative error between backprop gradients and central finite differences."""
    net.forward(x)
    analytic = net.backward(y)
    worst = 0.0
    for name, param in net.params().items():
        numeric = np.zeros_like(param)
        it = np.nditer(param, flags=["multi_index"])
        for _ in it:
            idx = it.multi_index
            old = param[idx]
            param[idx] = old + eps
            plus = net.loss(x, y)
            param[idx] = old - eps
            minus = net.loss(x, y)
            param[idx] = old
            numeric[idx] = (plus - minus) / (2 * eps)
        denom = np.maximum(np.abs(numeric) + np.abs(analytic[name]), 1e-8)
        worst = max(worst, float(np.max(np.abs(numeric - analytic[name]) / denom)))
    return worst


def train(net: TwoLayerNet, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, batch_size: int,
          rng: np.random.Generator, on_epoch=None) -> list[float]:
    """Mini-batch gradient descent; returns the full-batch training loss after each epoch."""
    history = []
    n = x.shape[0]
    for epoch in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            net.forward(x[idx])
            net.step(net.backward(y[idx]), lr)
        history.append(net.loss(x, y))
        if on_epoch is not None:
            on_epoch(epoch, history[-1])
    return history
