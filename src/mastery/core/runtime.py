"""Seeding, device choice and library versions: what every report records."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from typing import Literal

import numpy as np

Device = Literal["auto", "cpu", "cuda"]  # a lab's device field: auto = cuda when available, else cpu

_TRACKED = ("numpy", "pandas", "scikit-learn", "xgboost", "shap", "torch", "torchvision", "mlflow", "ultralytics",
            "torchmetrics")


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and (when imported) torch; return a NumPy generator for the caller."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)
    return np.random.default_rng(seed)


def torch_device(prefer: str = "auto") -> str:
    """'cuda' when asked for or available (auto), else 'cpu'."""
    import torch

    if prefer == "cpu":
        return "cpu"
    if prefer == "cuda" and not torch.cuda.is_available():
        from mastery.core.errors import ConfigError

        raise ConfigError("device=cuda was asked for but torch.cuda.is_available() is False")
    return "cuda" if torch.cuda.is_available() else "cpu"


def device_description(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({os.cpu_count()} cores, {platform.machine()})"


def library_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in (*_TRACKED, *extra):
        if name in versions:
            continue
        module = name.replace("-", "_").replace("scikit_learn", "sklearn")
        # Only report libraries the run actually imported: what it used, not what is installed.
        if module not in sys.modules:
            continue
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def set_torch_threads() -> None:
    """Use every core for intra-op work unless MASTERY_THREADS says otherwise."""
    import torch

    from mastery.core.settings import get_settings

    threads = get_settings().threads
    if threads:
        torch.set_num_threads(threads)


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` wall-clock timings of ``fn()``, in seconds (least noisy estimate)."""
    best = float("inf")
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
