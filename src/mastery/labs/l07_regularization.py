"""L7 · Regularization: a deep CIFAR-10 MLP that overfits vs the same MLP with Dropout + BatchNorm1d."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
from annotated_types import Interval

from mastery.core.config import Fraction
from mastery.core.progress import Progress
from mastery.core.report import Report
from mastery.core.runtime import Device

REQUIRES: tuple[str, ...] = ("cifar10",)  # registered assets the tiny preset reads


@dataclass(frozen=True)
class Config:
    # 3072 -> hidden... -> 10, the same for both models
    hidden: tuple[Annotated[int, Interval(ge=1, le=65_536)], ...] = (1024, 512, 256)
    epochs: Annotated[int, Interval(ge=1, le=1000)] = 15
    batch_size: Annotated[int, Interval(ge=1, le=65_536)] = 128
    lr: Annotated[float, Interval(gt=0, le=10)] = 1e-3  # AdamW for both; the baseline has weight_decay 0 (plain Adam)
    dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.3  # regularized model only, after every hidden ReLU
    weight_decay: Annotated[float, Interval(ge=0, le=10)] = 0.05  # regularized model only (AdamW's decoupled decay)
    hflip: bool = False  # also mirror training images in the regularized run (off: isolate Dropout + BN)
    val_size: Annotated[int, Interval(ge=1, le=49_000)] = 5000  # carved from the training images
    # cap on the remaining training images (None = all)
    train_size: Annotated[int, Interval(ge=1, le=50_000)] | None = None
    test_size: Annotated[int, Interval(ge=1, le=10_000)] | None = None
    # training images re-measured in eval mode each epoch (the train curve)
    train_eval_size: Annotated[int, Interval(ge=1, le=50_000)] = 5000
    checkpoint_dir: str = ""  # where the best weights go; "" = a new temporary directory
    device: Device = "auto"
    # regularized val accuracy - baseline val accuracy must exceed this
    min_val_gain: Annotated[float, Interval(ge=-1, le=1)] = 0.01
    min_regularized_val_accuracy: Fraction = 0.5
    seed: int = 0


# The numbers that summarise a run: the README table and the conformance test read them from here.
HEADLINE = ("baseline_val_accuracy", "regularized_val_accuracy")

PRESETS = {
    "tiny": Config(hidden=(32, 16), epochs=1, batch_size=64, val_size=500, train_size=2000, test_size=1000,
                   train_eval_size=500, min_val_gain=-1.0, min_regularized_val_accuracy=0.15),
    "full": Config(),
}


def run(config: Config, progress: Progress) -> Report:
    import tempfile

    if config.checkpoint_dir:
        return _run(config, progress, Path(config.checkpoint_dir))
    # Trackers copy artifacts when progress.artifact() is called, so a temporary folder can go
    # once the run is over instead of piling up checkpoints in /tmp.
    with tempfile.TemporaryDirectory(prefix="mastery-l07-") as tmp:
        return _run(config, progress, Path(tmp))


def _run(config: Config, progress: Progress, checkpoint_dir: Path) -> Report:
    import torch

    from mastery.assets.loaders import load_cifar10
    from mastery.nn.data import ImageArrayDataset, channel_stats, make_loader, split_indices, subsample
    from mastery.nn.models import MLP, count_parameters
    from mastery.nn.plots import training_curves
    from mastery.nn.train import (
        History,
        build_optimizer,
        evaluate,
        fit,
        load_checkpoint,
        start_torch_report,
    )

    report, device = start_torch_report("l07", config)
    dev = str(device)

    # Data: uint8 (N, 32, 32, 3) -> float32 (B, 3, 32, 32), normalised with the train split's channel stats.
    data = load_cifar10()
    train_idx, val_idx = split_indices(len(data["x_train"]), config.val_size, config.seed)
    x_train, y_train = subsample(data["x_train"][train_idx], data["y_train"][train_idx], config.train_size,
                                 config.seed)
    x_val, y_val = data["x_train"][val_idx], data["y_train"][val_idx]
    x_test, y_test = subsample(data["x_test"], data["y_test"], config.test_size, config.seed)
    mean, std = channel_stats(x_train)
    norm = {"mean": mean, "std": std, "num_classes": 10}
    x_te, y_te = subsample(x_train, y_train, config.train_eval_size, config.seed + 1)
    loaders = {
        "val": make_loader(ImageArrayDataset(x_val, y_val, **norm), 1000, shuffle=False, device=dev),
        "test": make_loader(ImageArrayDataset(x_test, y_test, **norm), 1000, shuffle=False, device=dev),
        "train_eval": make_loader(ImageArrayDataset(x_te, y_te, **norm), 1000, shuffle=False, device=dev),
    }
    in_features = int(np.prod(x_train.shape[1:]))  # 32 * 32 * 3 = 3072

    progress.params({"lr": config.lr, "batch_size": config.batch_size, "epochs": config.epochs,
                     "hidden": ",".join(map(str, config.hidden)), "dropout": config.dropout,
                     "weight_decay": config.weight_decay, "hflip": config.hflip, "optimizer": "adamw",
                     "n_train": len(x_train), "n_val": len(x_val), "data_source": data["source"],
                     "device": dev})

    variants = {
        "baseline": {"dropout": 0.0, "batchnorm": False, "weight_decay": 0.0, "hflip": False},
        "regularized": {"dropout": config.dropout, "batchnorm": True, "weight_decay": config.weight_decay,
                        "hflip": config.hflip},
    }
    histories: dict[str, History] = {}
    rows = []
    for name, v in variants.items():
        torch.manual_seed(config.seed)
        model = MLP(in_features, config.hidden, 10, dropout=v["dropout"], batchnorm=v["batchnorm"])
        optimizer = build_optimizer("adamw", model.parameters(), config.lr, weight_decay=v["weight_decay"])
        train_ds = ImageArrayDataset(x_train, y_train, **norm, hflip=v["hflip"], seed=config.seed)
        train_loader = make_loader(train_ds, config.batch_size, shuffle=True, seed=config.seed, device=dev)
        checkpoint = checkpoint_dir / f"{name}_best.pth"
        history = fit(model, train_loader, optimizer, epochs=config.epochs, device=device,
                      val_loader=loaders["val"], train_eval_loader=loaders["train_eval"], progress=progress,
                      prefix=f"{name}_", checkpoint_path=checkpoint)
        progress.artifact(str(checkpoint))
        histories[name] = history
        # The model now holds the best epoch's weights; a fresh model loaded from the file must agree.
        test = evaluate(model, loaders["test"], device)
        fresh = MLP(in_features, config.hidden, 10, dropout=v["dropout"], batchnorm=v["batchnorm"])
        reloaded = evaluate(load_checkpoint(fresh, checkpoint, device).to(device), loaders["test"], device)
        report.check(f"{name}_checkpoint_reloads", reloaded.accuracy == test.accuracy,
                     "the saved best weights, loaded with weights_only=True, give the same test accuracy",
                     reloaded.accuracy)
        train_acc, val_acc = history.train_accuracy[-1], history.val_accuracy[-1]
        report.metric(f"{name}_train_accuracy", train_acc)
        report.metric(f"{name}_val_accuracy", val_acc)
        report.metric(f"{name}_generalization_gap", train_acc - val_acc)
        report.metric(f"{name}_best_val_accuracy", history.best_val_accuracy)
        report.metric(f"{name}_best_epoch", history.best_epoch)
        report.metric(f"{name}_test_accuracy", test.accuracy)
        report.metric(f"{name}_n_parameters", count_parameters(model))
        report.timing(f"{name}_seconds_per_epoch", float(np.mean(history.epoch_seconds)))
        rows.append({"model": name, "train acc": train_acc, "val acc": val_acc, "gap": train_acc - val_acc,
                     "best val acc": history.best_val_accuracy, "best epoch": history.best_epoch,
                     "test acc (best ckpt)": test.accuracy, "val loss": history.val_loss[-1],
                     "min val loss": min(history.val_loss)})
    report.table(f"Final epoch ({config.epochs}) and best checkpoint", rows)

    m = report.metrics
    gain = m["regularized_val_accuracy"] - m["baseline_val_accuracy"]
    report.metric("val_accuracy_gain", gain)
    report.check("regularization_helps_val", gain > config.min_val_gain,
                 f"regularized - baseline val accuracy > {config.min_val_gain} (final epoch)", gain)
    gaps = m["regularized_generalization_gap"], m["baseline_generalization_gap"]
    report.check("regularization_shrinks_gap", gaps[0] < gaps[1],
                 "train - val accuracy gap is smaller with regularisation", f"{gaps[0]:.3f} vs {gaps[1]:.3f}")
    reg_val = m["regularized_val_accuracy"]
    report.check("regularized_val_accuracy", reg_val >= config.min_regularized_val_accuracy,
                 f"regularized val accuracy >= {config.min_regularized_val_accuracy}", reg_val)

    arch = "-".join(map(str, (in_features, *config.hidden, 10)))
    report.figure("train_val_curves", training_curves(
        histories, f"CIFAR-10 MLP {arch}: baseline vs Dropout {config.dropout} + BatchNorm1d + "
                   f"weight decay {config.weight_decay}"))

    if data["source"] == "jpeg-q75":
        report.note(
            "Data caveat: the CIFAR-10 images here are decoded from JPEG (quality 75, 4:2:0 chroma) copies, "
            "not the lossless official batches, and the training pool is a 37,500-image stratified subsample "
            f"({len(x_train)} train + {len(x_val)} validation here). Accuracies are therefore not directly "
            "comparable with published CIFAR-10 numbers; the baseline-vs-regularised comparison is "
            "unaffected, as both models see the same images."
        )
    report.note(
        "Why BatchNorm1d: an MLP's hidden activations are a flat (N, C) matrix, one row per image and one "
        "column per unit; BatchNorm1d normalises each of the C columns with its mean and variance over the N "
        "rows of the batch, then rescales with a learned gamma and beta. BatchNorm2d is the same idea for "
        "conv feature maps (N, C, H, W): one mean and variance per channel, pooled over N, H and W, so every "
        "position of a channel is normalised alike. That is the layer the roadmap names for a CNN; for this "
        "MLP the 1-D version is the right one."
    )
    report.note(
        "The train curves are measured like the validation ones: in eval mode (Dropout off, BatchNorm on "
        f"its running statistics) on a fixed set of {len(x_te)} training images, so the gap compares like "
        "with like. Validation numbers are those of the final epoch; test accuracy is that of the "
        "best-validation checkpoint, saved with torch.save(state_dict) and reloaded with "
        "torch.load(weights_only=True) into a fresh model. Checkpoints: baseline_best.pth and "
        "regularized_best.pth in checkpoint_dir (by default a temporary folder, removed after the run)."
    )
    return report
