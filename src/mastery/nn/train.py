"""A generic PyTorch train/evaluate loop: device choice, history, progress and best checkpoints.

:func:`fit` runs the classic loop (forward -> loss -> backward -> step) for a classifier that
maps a batch x (N, ...) to logits (N, K), evaluates on a validation loader after every epoch,
reports through a :class:`~mastery.core.progress.Progress` and, if given a path, keeps the
weights of the best epoch (highest validation accuracy) with ``torch.save(state_dict)``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from mastery.core.labs import new_report
from mastery.core.progress import NullProgress, Progress
from mastery.core.report import Report
from mastery.core.runtime import device_description, set_torch_threads, torch_device

log = logging.getLogger(__name__)


# -- device ----------------------------------------------------------------------------------
def select_device(prefer: str = "auto") -> torch.device:
    """'auto' -> cuda when ``torch.cuda.is_available()``, else cpu; 'cpu'/'cuda' force a choice."""
    if prefer not in ("auto", "cpu", "cuda"):
        from mastery.core.errors import ConfigError

        raise ConfigError(f"device must be auto, cpu or cuda, got {prefer!r}")
    return torch.device(torch_device(prefer))


def start_torch_report(lab_id: str, config: Any) -> tuple[Report, torch.device]:
    """Begin a PyTorch lab's Report: apply MASTERY_THREADS, pick the device from ``config.device``
    ('auto' = CUDA when available) and record which device ran in the report."""
    set_torch_threads()
    report = new_report(lab_id, config)
    device = select_device(getattr(config, "device", "auto"))
    report.device = device_description(str(device))
    return report, device


def hardware_info(device: torch.device) -> list[dict[str, Any]]:
    """What PyTorch sees: version, CUDA, the device used and CPU threads (a report table)."""
    cuda = torch.cuda.is_available()
    rows: list[dict[str, Any]] = [
        {"item": "torch version", "value": torch.__version__},
        {"item": "torch built with CUDA", "value": str(torch.version.cuda or "no")},
        {"item": "torch.cuda.is_available()", "value": str(cuda)},
        {"item": "CUDA devices", "value": torch.cuda.device_count() if cuda else 0},
        {"item": "device used", "value": str(device)},
    ]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        rows += [{"item": "device name", "value": props.name},
                 {"item": "device memory (GiB)", "value": round(props.total_memory / 2**30, 1)}]
    else:
        rows.append({"item": "device name", "value": f"CPU ({os.cpu_count()} logical cores)"})
    rows += [{"item": "torch intra-op threads", "value": torch.get_num_threads()},
             {"item": "cuDNN available", "value": str(torch.backends.cudnn.is_available())}]
    return rows


# -- checkpoints -----------------------------------------------------------------------------
def save_checkpoint(model: nn.Module, path: str | Path) -> Path:
    """Save the model's ``state_dict`` (tensors only, no pickled code) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)  # never leave a half-written checkpoint behind
    return path


def load_checkpoint(model: nn.Module, path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """Load weights saved by :func:`save_checkpoint` with ``weights_only=True`` (no arbitrary unpickling)."""
    state = torch.load(Path(path), map_location=device, weights_only=True)
    model.load_state_dict(state)
    return model


# -- evaluation ------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalResult:
    loss: float  # mean cross-entropy per example
    accuracy: float
    n: int


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device | str) -> EvalResult:
    """Mean loss and accuracy in eval mode (Dropout off, BatchNorm uses its running statistics)."""
    model.eval()
    total_loss, correct, n = 0.0, 0, 0
    with torch.inference_mode():
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits = model(x)  # (B, K)
            total_loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(dim=1) == y).sum())
            n += int(y.shape[0])
    if n == 0:
        raise ValueError("cannot evaluate on an empty loader")
    return EvalResult(loss=total_loss / n, accuracy=correct / n, n=n)


def predict(model: nn.Module, loader: DataLoader,
            device: torch.device | str) -> tuple[np.ndarray, np.ndarray]:
    """(predicted classes (N,), true labels (N,)) as int64 NumPy arrays, in loader order."""
    model.eval()
    preds, labels = [], []
    with torch.inference_mode():
        for x, y in loader:
            preds.append(model(x.to(device, non_blocking=True)).argmax(dim=1).cpu())
            labels.append(y)
    return torch.cat(preds).numpy().astype(np.int64), torch.cat(labels).numpy().astype(np.int64)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class."""
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    counts = np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes)


# -- optimisers ------------------------------------------------------------------------------
def build_optimizer(name: str, params: Any, lr: float, *, momentum: float = 0.9,
                    weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """'sgd', 'sgd_momentum', 'adam', 'adamw' or 'rmsprop' over ``params``."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd_momentum":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose sgd, sgd_momentum, adam, adamw or rmsprop")


# -- training --------------------------------------------------------------------------------
@dataclass
class History:
    """Per-epoch curves (index i = epoch i + 1) and per-iteration training losses.

    ``train_loss``/``train_accuracy`` are measured like the validation numbers (eval mode, on
    ``train_eval_loader``) when fit was given one, so train vs val compares like with like;
    otherwise they are the running means over the epoch's batches (train mode, what the
    optimiser saw). ``running_loss`` always holds the latter.
    """

    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    running_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)  # learning rate at the end of each epoch
    epoch_seconds: list[float] = field(default_factory=list)  # training time of each epoch
    iteration_loss: list[float] = field(default_factory=list)  # every batch's loss
    train_eval_mode: bool = False  # True when train_* were measured in eval mode on a train_eval_loader
    best_epoch: int = 0  # 1-based; 0 = no validation run
    best_val_accuracy: float = float("nan")
    checkpoint: str = ""  # where the best weights were saved, if anywhere

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    def end_epoch(self, seconds: float, loss_sum: float, correct: int, seen: int, lr: float) -> None:
        """Close an epoch measured by its running means (what the optimiser saw over its batches)."""
        self.epoch_seconds.append(seconds)
        self.running_loss.append(loss_sum / seen)
        self.train_loss.append(loss_sum / seen)
        self.train_accuracy.append(correct / seen)
        self.lr.append(lr)

    def epoch_metrics(self, i: int) -> dict[str, float]:
        """The four numbers of epoch i (0-based) under the keys progress.epoch expects."""
        out = {"train_loss": self.train_loss[i], "train_accuracy": self.train_accuracy[i]}
        if self.val_loss:
            out |= {"val_loss": self.val_loss[i], "val_accuracy": self.val_accuracy[i]}
        return out

    def rows(self) -> list[dict[str, float]]:
        """One table row per epoch."""
        return [{"epoch": i + 1, **self.epoch_metrics(i), "lr": self.lr[i], "seconds": self.epoch_seconds[i]}
                for i in range(self.epochs)]


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    device: torch.device | str,
    val_loader: DataLoader | None = None,
    train_eval_loader: DataLoader | None = None,
    scheduler: Any = None,
    scheduler_step: Literal["epoch", "batch"] = "epoch",
    progress: Progress | None = None,
    prefix: str = "",
    checkpoint_path: str | Path | None = None,
    restore_best: bool = True,
) -> History:
    """Train ``model`` for ``epochs`` epochs with cross-entropy; return its :class:`History`.

    Every epoch: one pass over ``train_loader`` (forward -> loss -> backward -> step), then
    ``val_loader`` (and ``train_eval_loader``) in eval mode, then ``progress.epoch(epoch,
    {train_loss, train_accuracy, val_loss, val_accuracy}, prefix)``. With ``checkpoint_path``, the
    best epoch's weights (highest val accuracy, first one on ties) are saved there and, with
    ``restore_best``, loaded back into the model at the end.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if checkpoint_path is not None and val_loader is None:
        raise ValueError("checkpoint_path needs a val_loader to pick the best epoch")
    if len(train_loader) == 0:
        raise ValueError("the training loader yields no batches (empty dataset, or drop_last with too few)")
    progress = progress or NullProgress()
    model.to(device)
    history = History(train_eval_mode=train_eval_loader is not None)
    progress.stage(f"{prefix}train", total=epochs * len(train_loader))
    for epoch in range(1, epochs + 1):
        model.train()
        start = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        for x, y in train_loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)  # (B, ...), (B,)
            logits = model(x)  # (B, K)
            loss = nn.functional.cross_entropy(logits, y)  # mean over the batch
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None and scheduler_step == "batch":
                scheduler.step()
            value = float(loss.detach())  # one host sync per batch; the loss curve needs it anyway
            loss_sum += value * y.shape[0]
            correct += int((logits.detach().argmax(dim=1) == y).sum())
            seen += int(y.shape[0])
            history.iteration_loss.append(value)
            progress.step(1, loss=value)
        if scheduler is not None and scheduler_step == "epoch":
            scheduler.step()
        history.epoch_seconds.append(time.perf_counter() - start)
        history.running_loss.append(loss_sum / seen)
        history.lr.append(float(optimizer.param_groups[0]["lr"]))
        if train_eval_loader is not None:
            measured = evaluate(model, train_eval_loader, device)
            history.train_loss.append(measured.loss)
            history.train_accuracy.append(measured.accuracy)
        else:
            history.train_loss.append(history.running_loss[-1])
            history.train_accuracy.append(correct / seen)
        if val_loader is not None:
            val = evaluate(model, val_loader, device)
            history.val_loss.append(val.loss)
            history.val_accuracy.append(val.accuracy)
            if not val.accuracy <= history.best_val_accuracy:  # first epoch (nan) or strictly better
                history.best_epoch, history.best_val_accuracy = epoch, val.accuracy
                if checkpoint_path is not None:
                    history.checkpoint = str(save_checkpoint(model, checkpoint_path))
        metrics = history.epoch_metrics(epoch - 1)
        progress.epoch(epoch, metrics, prefix=prefix)
        log.info("%sepoch %d/%d %s (%.1fs)", prefix, epoch, epochs,
                 " ".join(f"{k}={v:.4f}" for k, v in metrics.items()), history.epoch_seconds[-1])
    if checkpoint_path is not None and restore_best:
        load_checkpoint(model, history.checkpoint, device)
    return history
