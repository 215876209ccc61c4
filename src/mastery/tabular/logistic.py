"""Binary logistic regression from scratch in NumPy, trained by batch gradient descent.

The objective is the one scikit-learn's ``LogisticRegression(C=C)`` minimises (L2 penalty on the
weights, intercept not penalised), divided by n so the step size does not depend on the data size:

    J(w, b) = (1/n) * sum_i [log(1 + exp(z_i)) - y_i * z_i] + ||w||^2 / (2 * C * n),   z = Xw + b

Dividing by n does not move the minimiser, so at convergence the coefficients equal sklearn's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)) without overflow: exp is only ever taken of a non-positive number."""
    z = np.asarray(z, dtype=float)
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _check_xy(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"expected X (n, d) and y (n,); got X {x.shape} and y {y.shape}")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("y must contain only 0 and 1")
    if not np.all(np.isfinite(x)):
        raise ValueError("X contains NaN or infinite values; impute them before fitting")
    return x, y


def logistic_loss(w: np.ndarray, b: float, x: np.ndarray, y: np.ndarray, c: float) -> float:
    """J(w, b) above; ``logaddexp(0, z)`` is log(1 + e^z) computed stably for large |z|."""
    z = x @ w + b
    n = x.shape[0]
    return float(np.mean(np.logaddexp(0.0, z) - y * z) + (w @ w) / (2.0 * c * n))


def logistic_gradient(
    w: np.ndarray, b: float, x: np.ndarray, y: np.ndarray, c: float
) -> tuple[np.ndarray, float]:
    """(dJ/dw, dJ/db): the residual sigmoid(z) - y projected on X, plus the penalty's w / (C n)."""
    n = x.shape[0]
    residual = sigmoid(x @ w + b) - y
    return x.T @ residual / n + w / (c * n), float(residual.mean())


def lipschitz_step(x: np.ndarray, c: float) -> float:
    """The safe step 1/L, L bounding the Hessian: sigmoid' <= 1/4, so L = ||[X 1]||_2^2 / (4n) + 1/(Cn)."""
    n = x.shape[0]
    augmented = np.hstack([x, np.ones((n, 1))])
    spectral = float(np.linalg.norm(augmented, 2)) ** 2
    return 1.0 / (spectral / (4.0 * n) + 1.0 / (c * n))


@dataclass
class LogisticFit:
    """Fitted weights plus the trace of the descent (loss per iteration) and how it stopped."""

    coef: np.ndarray
    intercept: float
    n_iter: int
    converged: bool
    grad_max: float
    learning_rate: float
    losses: list[float] = field(default_factory=list, repr=False)

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=float) @ self.coef + self.intercept

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """P(y = 1 | x) for each row."""
        return sigmoid(self.decision_function(x))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (self.decision_function(x) >= 0).astype(int)


def fit_logistic_gd(
    x: np.ndarray,
    y: np.ndarray,
    c: float = 1.0,
    learning_rate: float | None = None,
    max_iter: int = 50_000,
    tol: float = 1e-10,
) -> LogisticFit:
    """Minimise J by batch gradient descent from w = 0, b = 0.

    ``learning_rate=None`` uses 1/L (:func:`lipschitz_step`), which never diverges on this convex
    objective. Stops when every gradient component is below ``tol`` or after ``max_iter`` steps.
    """
    x, y = _check_xy(x, y)
    if c <= 0:
        raise ValueError(f"C must be > 0, got {c}")
    lr = lipschitz_step(x, c) if learning_rate is None else float(learning_rate)
    if lr <= 0:
        raise ValueError(f"learning_rate must be > 0, got {lr}")
    w = np.zeros(x.shape[1])
    b = 0.0
    losses = [logistic_loss(w, b, x, y, c)]
    n_steps = 0
    for _ in range(max_iter):
        gw, gb = logistic_gradient(w, b, x, y, c)
        grad_max = max(float(np.max(np.abs(gw))), abs(gb))
        if grad_max < tol:
            break
        w -= lr * gw
        b -= lr * gb
        n_steps += 1
        losses.append(logistic_loss(w, b, x, y, c))
    else:  # ran out of steps: measure the gradient where the last step landed
        gw, gb = logistic_gradient(w, b, x, y, c)
        grad_max = max(float(np.max(np.abs(gw))), abs(gb))
    converged = grad_max < tol
    log.debug("gradient descent: %d iterations, max |grad| %.2e, converged=%s", n_steps, grad_max, converged)
    return LogisticFit(coef=w, intercept=b, n_iter=n_steps, converged=converged, grad_max=grad_max,
                       learning_rate=lr, losses=losses)


def numerical_gradient(
    w: np.ndarray, b: float, x: np.ndarray, y: np.ndarray, c: float, eps: float = 1e-6
) -> tuple[np.ndarray, float]:
    """Central finite differences of :func:`logistic_loss`: the reference the analytic gradient must match."""
    gw = np.zeros_like(w, dtype=float)
    for j in range(w.size):
        step = np.zeros_like(w, dtype=float)
        step[j] = eps
        gw[j] = (logistic_loss(w + step, b, x, y, c) - logistic_loss(w - step, b, x, y, c)) / (2 * eps)
    gb = (logistic_loss(w, b + eps, x, y, c) - logistic_loss(w, b - eps, x, y, c)) / (2 * eps)
    return gw, gb
