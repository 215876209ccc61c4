"""L5 · PyTorch fundamentals: an MNIST digit classifier with a custom Dataset and a hand-written loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from annotated_types import Interval

from mastery.core.config import Fraction
from mastery.core.progress import Progress
from mastery.core.report import Report
from mastery.core.runtime import Device

REQUIRES: tuple[str, ...] = ("mnist",)  # registered assets the tiny preset reads


@dataclass(frozen=True)
class Config:
    model: Literal["cnn", "mlp"] = "cnn"  # "cnn" (SmallCNN) or "mlp" (784-256-128-10)
    epochs: Annotated[int, Interval(ge=1, le=1000)] = 3
    batch_size: Annotated[int, Interval(ge=1, le=65_536)] = 128
    lr: Annotated[float, Interval(gt=0, le=10)] = 1e-3  # Adam
    val_size: Annotated[int, Interval(ge=1, le=59_000)] = 5000  # carved from the 60,000 training images
    # cap on the remaining training images (None = all 55,000)
    train_size: Annotated[int, Interval(ge=1, le=60_000)] | None = None
    test_size: Annotated[int, Interval(ge=1, le=10_000)] | None = None  # cap on the 10,000 test images (None = all)
    device: Device = "auto"  # auto = cuda when torch.cuda.is_available(), else cpu
    min_test_accuracy: Fraction = 0.98
    register: bool = False  # save the trained model to the model registry as mnist-<model>
    seed: int = 0


# The numbers that summarise a run: the README table and the conformance test read them from here.
HEADLINE = ("test_accuracy",)

PRESETS = {
    "tiny": Config(epochs=1, batch_size=64, val_size=500, train_size=2000, test_size=1000,
                   min_test_accuracy=0.5),
    "full": Config(register=True),
}


def run(config: Config, progress: Progress) -> Report:
    import torch

    from mastery.assets.loaders import load_mnist
    from mastery.nn.data import (
        MNIST_MEAN,
        MNIST_STD,
        ImageArrayDataset,
        make_loader,
        split_indices,
        subsample,
    )
    from mastery.nn.models import MLP, SmallCNN, count_parameters
    from mastery.nn.plots import confusion_matrix_figure, image_grid, training_curves
    from mastery.nn.train import (
        build_optimizer,
        confusion_matrix,
        evaluate,
        fit,
        hardware_info,
        predict,
        start_torch_report,
    )

    report, device = start_torch_report("l05", config)
    report.table("Hardware check", hardware_info(device))
    used_cuda = device.type == "cuda"
    if config.device == "auto":
        report.check("device_auto", used_cuda == torch.cuda.is_available(),
                     "device=auto trains on cuda exactly when torch.cuda.is_available()", str(device))

    # Data: uint8 (N, 28, 28) arrays -> ImageArrayDataset -> float32 (B, 1, 28, 28) batches.
    data = load_mnist()
    train_idx, val_idx = split_indices(len(data["x_train"]), config.val_size, config.seed)
    x_train, y_train = subsample(data["x_train"][train_idx], data["y_train"][train_idx], config.train_size,
                                 config.seed)
    x_test, y_test = subsample(data["x_test"], data["y_test"], config.test_size, config.seed)
    norm = {"mean": MNIST_MEAN, "std": MNIST_STD, "num_classes": 10}
    train_ds = ImageArrayDataset(x_train, y_train, **norm)
    val_ds = ImageArrayDataset(data["x_train"][val_idx], data["y_train"][val_idx], **norm)
    test_ds = ImageArrayDataset(x_test, y_test, **norm)
    dev = str(device)
    train_loader = make_loader(train_ds, config.batch_size, shuffle=True, seed=config.seed, device=dev)
    val_loader = make_loader(val_ds, 1000, shuffle=False, device=dev)
    test_loader = make_loader(test_ds, 1000, shuffle=False, device=dev)
    x0, y0 = next(iter(train_loader))
    report.check("batch_shapes", tuple(x0.shape[1:]) == (1, 28, 28) and x0.dtype == torch.float32
                 and y0.dtype == torch.int64, "a batch is x float32 (B, 1, 28, 28) and y int64 (B,)",
                 f"{tuple(x0.shape)} {x0.dtype}, {tuple(y0.shape)} {y0.dtype}")

    torch.manual_seed(config.seed)
    if config.model == "cnn":
        model = SmallCNN(in_channels=1, num_classes=10)
    else:
        model = MLP(28 * 28, (256, 128), 10, dropout=0.1)
    optimizer = build_optimizer("adam", model.parameters(), config.lr)
    n_params = count_parameters(model)
    progress.params({"model": config.model, "lr": config.lr, "batch_size": config.batch_size,
                     "epochs": config.epochs, "optimizer": "adam", "n_train": len(train_ds),
                     "n_parameters": n_params, "device": dev})

    # The loop itself (forward -> loss -> backward -> step) lives in mastery.nn.train.fit.
    history = fit(model, train_loader, optimizer, epochs=config.epochs, device=device, val_loader=val_loader,
                  progress=progress)
    test = evaluate(model, test_loader, device)
    preds, labels = predict(model, test_loader, device)

    report.metric("test_accuracy", test.accuracy)
    report.metric("test_loss", test.loss)
    report.metric("val_accuracy", history.val_accuracy[-1])
    report.metric("final_train_loss", history.train_loss[-1])
    report.metric("n_parameters", n_params)
    report.metric("n_train", len(train_ds))
    report.metric("n_misclassified", int((preds != labels).sum()))
    report.timing("seconds_per_epoch", float(np.mean(history.epoch_seconds)))
    report.timing("train_images_per_second", len(train_ds) / float(np.mean(history.epoch_seconds)))
    report.check("test_accuracy", test.accuracy >= config.min_test_accuracy,
                 f"test accuracy >= {config.min_test_accuracy}", test.accuracy)
    k = max(1, len(history.iteration_loss) // 10)
    first, last = np.mean(history.iteration_loss[:k]), np.mean(history.iteration_loss[-k:])
    report.check("loss_decreases", last < first, "mean batch loss of the last 10% of steps < first 10%",
                 f"{first:.3f} -> {last:.3f}")
    report.table("Training history", history.rows())

    cm = confusion_matrix(labels, preds, 10)
    report.figure("training_curves",
                  training_curves({config.model: history}, "MNIST: train vs validation per epoch"))
    digits = [str(d) for d in range(10)]
    report.figure("confusion_matrix",
                  confusion_matrix_figure(cm, digits, f"MNIST test confusion matrix ({test.n} digits)"))
    wrong = np.flatnonzero(preds != labels)[:32]
    if len(wrong):
        captions = [f"{labels[i]} -> {preds[i]}" for i in wrong]
        report.figure("misclassified", image_grid(x_test[wrong], captions,
                                                  title="Misclassified test digits (true -> predicted)"))
    off_diag = cm - np.diag(np.diag(cm))
    t, p = np.unravel_index(int(off_diag.argmax()), cm.shape)
    report.note(
        f"Most frequent confusion: true {t} predicted as {p} ({int(off_diag[t, p])} times). The Dataset "
        "keeps the images as uint8 and normalises each batch to (x/255 - 0.1307)/0.3081 on the fly; the "
        "DataLoader shuffles with its own seeded torch.Generator in a single process, so a fixed seed "
        "repeats the run exactly."
    )
    report.note(
        f"Trained on {dev}: the code asks torch.cuda.is_available() (config device='auto') and moves the "
        "model and every batch with .to(device), so the same lab uses a GPU when one is present. See the "
        "hardware table."
    )
    if config.register:
        _register(report, config, model)
    return report


def _register(report: Report, config: Config, model: object) -> None:
    from mastery.nn.data import MNIST_MEAN, MNIST_STD
    from mastery.ops.registry_loaders import architecture, note_registered, save_torch_module

    kwargs = ({"in_channels": 1, "num_classes": 10} if config.model == "cnn"
              else {"in_features": 28 * 28, "hidden": [256, 128], "num_classes": 10, "dropout": 0.1})
    ref = save_torch_module(
        f"mnist-{config.model}", model, arch=architecture("mastery.nn.models", "SmallCNN" if config.model == "cnn"
                                                          else "MLP", **kwargs),
        config={"lab": "l05", "lab_config": report.config, "input": "(B, 1, 28, 28) float32, (x/255 - mean)/std",
                "mean": MNIST_MEAN, "std": MNIST_STD, "classes": [str(d) for d in range(10)]},
        metrics={k: report.metrics[k] for k in ("test_accuracy", "test_loss", "val_accuracy")},
        data_assets=["mnist"], probe_input={"randn": [2, 1, 28, 28], "seed": 0},
        description="L5 MNIST digit classifier")
    note_registered(report, ref)
