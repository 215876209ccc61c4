"""L9 · CNN fundamentals: convolution and pooling from scratch in NumPy, then a CIFAR-10 CNN in PyTorch."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from annotated_types import Interval, Len

from mastery.core.config import Fraction
from mastery.core.progress import Progress
from mastery.core.report import Report
from mastery.core.runtime import Device

REQUIRES: tuple[str, ...] = ("cifar10",)  # registered assets the tiny preset reads


@dataclass(frozen=True)
class Config:
    # stem, then one conv block per further width (each halves H, W): 2 to 6 widths, as 32 px halves 5 times at most
    widths: Annotated[tuple[Annotated[int, Interval(ge=1, le=4096)], ...], Len(2, 6)] = (32, 64, 128, 256)
    epochs: Annotated[int, Interval(ge=1, le=1000)] = 12
    batch_size: Annotated[int, Interval(ge=1, le=65_536)] = 256
    lr: Annotated[float, Interval(gt=0, le=10)] = 0.2  # OneCycle peak, SGD + Nesterov
    weight_decay: Annotated[float, Interval(ge=0, le=1)] = 5e-4
    label_smoothing: Annotated[float, Interval(ge=0, lt=1)] = 0.2
    # random crop of 32x32 from the image zero-padded by this many pixels
    crop_padding: Annotated[int, Interval(ge=0, le=32)] = 4
    hflip: bool = True
    # bf16 autocast, float32 weights; auto = only where the device runs bf16 natively (AVX512-BF16/AMX, tensor cores)
    bf16: Literal["auto", "on", "off"] = "auto"
    channels_last: bool = True
    # cap on training images (None = all 37,500 / 50,000)
    train_size: Annotated[int, Interval(ge=1, le=50_000)] | None = None
    test_size: Annotated[int, Interval(ge=1, le=10_000)] | None = None
    # test images scored after every epoch, for the curve only (no selection)
    curve_eval_size: Annotated[int, Interval(ge=1, le=10_000)] = 2000
    # N, C, H, W, O, K for the NumPy-vs-torch check
    scratch_check_shape: Annotated[tuple[Annotated[int, Interval(ge=1, le=64)], ...], Len(6, 6)] = (2, 3, 9, 9, 4, 3)
    device: Device = "auto"
    max_scratch_error: Annotated[float, Interval(ge=0, le=1)] = 1e-5
    min_test_accuracy: Fraction = 0.85
    register: bool = False  # save the trained CNN to the model registry as cifar10-cnn
    seed: int = 0


# The numbers that summarise a run: the README table and the conformance test read them from here.
HEADLINE = ("test_accuracy",)

PRESETS = {
    "tiny": Config(widths=(8, 16, 32), epochs=1, batch_size=64, lr=0.1, train_size=1500, test_size=500,
                   curve_eval_size=200, min_test_accuracy=0.15),
    "full": Config(register=True),
}


def _scratch_checks(config: Config, report: Report) -> None:
    """NumPy loops / im2col / pooling vs torch.nn.functional on seeded random data (float64)."""
    import torch
    import torch.nn.functional as F

    from mastery.vision.conv import avg_pool2d, conv2d_im2col, conv2d_loops, max_pool2d

    rng = np.random.default_rng(config.seed)
    n, c, h, w, o, k = config.scratch_check_shape
    x = rng.standard_normal((n, c, h, w))
    weight, bias = rng.standard_normal((o, c, k, k)), rng.standard_normal(o)
    xt, wt, bt = (torch.from_numpy(a) for a in (x, weight, bias))
    rows, worst = [], 0.0
    for stride, padding in ((1, 0), (1, 1), (2, 1), (2, 0)):
        ref = F.conv2d(xt, wt, bt, stride=stride, padding=padding).numpy()
        for name, fn in (("loops", conv2d_loops), ("im2col", conv2d_im2col)):
            err = float(np.abs(fn(x, weight, bias, stride, padding) - ref).max())
            worst = max(worst, err)
            rows.append({"op": f"conv2d_{name}", "kernel": k, "stride": stride, "padding": padding,
                         "output shape": "x".join(map(str, ref.shape)), "max abs error vs torch": err})
    for name, fn, ref_fn in (("max_pool2d", max_pool2d, F.max_pool2d), ("avg_pool2d", avg_pool2d, F.avg_pool2d)):
        for kernel, stride, padding in ((2, 2, 0), (3, 2, 1), (3, 1, 1)):
            ref = ref_fn(xt, kernel, stride, padding).numpy()
            err = float(np.abs(fn(x, kernel, stride, padding) - ref).max())
            worst = max(worst, err)
            rows.append({"op": name, "kernel": kernel, "stride": stride, "padding": padding,
                         "output shape": "x".join(map(str, ref.shape)), "max abs error vs torch": err})
    report.table("From-scratch NumPy ops vs torch.nn.functional (float64)", rows)
    report.metric("scratch_max_abs_error", worst)
    report.check("scratch_ops_match_torch", worst <= config.max_scratch_error,
                 f"every NumPy conv/pool output within {config.max_scratch_error} of torch", worst)

    # Speed of the three convolutions on one layer (a timing: it varies run to run).
    x32 = rng.standard_normal((8, 32, 16, 16)).astype(np.float32)  # (N, C, H, W)
    w32 = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)  # (O, C, 3, 3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: a small layer on a shared CPU is otherwise dominated by thread sync
    seconds = {}
    for name, fn, repeats in (("loops", lambda: conv2d_loops(x32, w32, None, 1, 1), 1),
                              ("im2col", lambda: conv2d_im2col(x32, w32, None, 1, 1), 5),
                              ("torch", lambda: F.conv2d(torch.from_numpy(x32), torch.from_numpy(w32), padding=1), 5)):
        if repeats > 1:
            fn()  # warm-up (first-call allocations, oneDNN kernel selection)
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - start)
        seconds[name] = min(runs)  # the least-disturbed run on a shared CPU
    torch.set_num_threads(threads)
    report.timing("conv_im2col_speedup_over_loops", seconds["loops"] / seconds["im2col"])
    report.timing("conv_torch_1thread_speedup_over_im2col", seconds["im2col"] / max(seconds["torch"], 1e-9))


def _receptive_field_table(model: object, report: Report) -> None:
    from mastery.vision.cnn import conv_layer_stack
    from mastery.vision.conv import receptive_fields, vgg16_layers

    stack = conv_layer_stack(model)  # type: ignore[arg-type]
    fields = receptive_fields([layer for _, layer in stack])
    report.table("Receptive field of this CNN (input 32x32)", [
        {"layer": name, "kernel, stride, padding": str(layer), "receptive field": f.size, "jump": f.jump,
         "start": f.start} for (name, layer), f in zip(stack, fields, strict=True)])
    report.metric("cnn_receptive_field", fields[-1].size)
    vgg = receptive_fields(vgg16_layers())
    report.metric("vgg16_conv5_3_receptive_field", vgg[-2].size)
    report.check("vgg16_receptive_field", (vgg[-2].size, vgg[-1].size) == (196, 212),
                 "VGG-16 receptive field is 196 at conv5_3 and 212 at pool5 (published values)",
                 f"{vgg[-2].size}, {vgg[-1].size}")


def run(config: Config, progress: Progress) -> Report:
    import tempfile
    from pathlib import Path

    import torch

    from mastery.assets.loaders import load_cifar10
    from mastery.core.precision import decide_bf16
    from mastery.nn.data import ImageArrayDataset, channel_stats, make_loader, subsample
    from mastery.nn.models import count_parameters
    from mastery.nn.plots import confusion_matrix_figure, training_curves
    from mastery.nn.train import confusion_matrix, save_checkpoint, start_torch_report
    from mastery.vision.cnn import CifarCNN, TrainSetup, evaluate_logits, train_classifier
    from mastery.vision.conv import conv2d_im2col
    from mastery.vision.conv_plots import feature_map_grid, filter_grid

    report, device = start_torch_report("l09", config)
    dev = str(device)
    precision = decide_bf16(config.bf16, device)
    precision.record(report)
    _scratch_checks(config, report)

    # Data: uint8 (N, 32, 32, 3) -> float32 (B, 3, 32, 32), normalised with the training images' channel stats.
    data = load_cifar10()
    x_train, y_train = subsample(data["x_train"], data["y_train"], config.train_size, config.seed)
    x_test, y_test = subsample(data["x_test"], data["y_test"], config.test_size, config.seed)
    mean, std = channel_stats(x_train)
    norm = {"mean": mean, "std": std, "num_classes": 10}
    train_ds = ImageArrayDataset(x_train, y_train, **norm, hflip=config.hflip, crop_padding=config.crop_padding,
                                 seed=config.seed)
    train_loader = make_loader(train_ds, config.batch_size, shuffle=True, seed=config.seed, device=dev,
                               drop_last=len(x_train) > config.batch_size)
    test_loader = make_loader(ImageArrayDataset(x_test, y_test, **norm), 500, shuffle=False, device=dev)
    x_curve, y_curve = subsample(x_test, y_test, config.curve_eval_size, config.seed + 1)
    curve_loader = make_loader(ImageArrayDataset(x_curve, y_curve, **norm), 500, shuffle=False, device=dev)

    torch.manual_seed(config.seed)
    model = CifarCNN(config.widths, bf16=precision.bf16, channels_last=config.channels_last)
    _receptive_field_table(model, report)
    setup = TrainSetup(epochs=config.epochs, lr=config.lr, weight_decay=config.weight_decay,
                       label_smoothing=config.label_smoothing)
    progress.params({"widths": ",".join(map(str, config.widths)), "epochs": config.epochs, "lr": config.lr,
                     "batch_size": config.batch_size, "optimizer": "sgd-nesterov+onecycle",
                     "label_smoothing": config.label_smoothing, "bf16": precision.bf16, "n_train": len(x_train),
                     "data_source": data["source"], "device": dev})
    history = train_classifier(model, train_loader, setup, device, eval_loader=curve_loader, progress=progress)
    checkpoint = save_checkpoint(model, Path(tempfile.mkdtemp(prefix="mastery-l09-")) / "cnn.pth")
    progress.artifact(str(checkpoint))

    logits, labels = evaluate_logits(model, test_loader, device)
    tta_logits, _ = evaluate_logits(model, test_loader, device, tta_flip=True)
    pred = logits.argmax(1)
    test_acc = float((pred == labels).mean())
    report.metric("test_accuracy", test_acc)
    report.metric("test_accuracy_flip_tta", float((tta_logits.argmax(1) == labels).mean()))
    report.metric("final_train_loss", history.train_loss[-1])
    report.metric("final_train_accuracy", history.train_accuracy[-1])
    report.metric("n_parameters", count_parameters(model))
    report.timing("seconds_per_epoch", float(np.mean(history.epoch_seconds)))
    report.timing("train_seconds_total", float(np.sum(history.epoch_seconds)))
    report.timing("train_images_per_second", len(train_loader) * config.batch_size / np.mean(history.epoch_seconds))
    report.check("test_accuracy", test_acc >= config.min_test_accuracy,
                 f"test accuracy (no test-time augmentation) >= {config.min_test_accuracy}", test_acc)
    report.table("Training per epoch (running train loss/accuracy with augmentation; 'val' = "
                 f"{len(x_curve)} test images, curve only)", history.rows())
    cm = confusion_matrix(labels, pred, 10)
    report.table("Per-class test accuracy", [{"class": name, "accuracy": float(cm[i, i] / max(cm[i].sum(), 1))}
                                             for i, name in enumerate(data["class_names"])])

    # The trained first conv layer, re-run with the NumPy im2col conv: the from-scratch code on real weights.
    sample = next(iter(test_loader))[0][:8].to(device)  # (8, 3, 32, 32)
    first = model.stem[0]
    with torch.no_grad():
        ref = torch.nn.functional.conv2d(sample.float(), first.weight.float(), padding=1).cpu().numpy()
    mine = conv2d_im2col(sample.cpu().numpy().astype(np.float64), first.weight.detach().cpu().double().numpy(),
                         None, 1, 1)
    err = float(np.abs(mine - ref).max() / max(np.abs(ref).max(), 1e-12))
    report.metric("trained_stem_im2col_rel_error", err)
    report.check("trained_stem_im2col_matches", err < 1e-5,
                 "NumPy im2col conv with the trained stem weights matches torch (relative error < 1e-5)", err)

    report.figure("training_curves", training_curves(
        {f"CNN (val = {len(x_curve)} test images)": history},
        f"CIFAR-10 CNN widths {config.widths}, SGD+Nesterov OneCycle; train loss is label-smoothed "
        f"({config.label_smoothing}) CE on augmented images, val loss plain CE"))
    report.figure("confusion_matrix", confusion_matrix_figure(cm, data["class_names"], "CIFAR-10 test"))
    report.figure("first_layer_filters", filter_grid(first.weight.detach().float().cpu().numpy(),
                                                     f"Stem conv filters ({first.weight.shape[0]} x 3x3x3, RGB)"))
    pick = [int(np.flatnonzero(y_test == c)[0]) for c in (0, 3, 8)]  # an airplane, a cat, a ship
    with torch.no_grad():
        maps = model.eval().feature_maps(torch.stack([test_loader.dataset[i][0] for i in pick]).to(device))
    report.figure("feature_maps", feature_map_grid(
        x_test[pick], {k: v.cpu().numpy() for k, v in maps.items()}, [data["class_names"][y_test[i]] for i in pick],
        title="Feature maps after the stem and each block (6 most active channels)"))

    if data["source"] == "jpeg-q75":
        report.note("Data caveat: CIFAR-10 here is the registry's JPEG (quality 75, 4:2:0 chroma) copy with a "
                    f"37,500-image stratified training subsample (75% of the official 50,000); {len(x_train)} "
                    "training images were used and the test images are JPEG-decoded too. Accuracies are therefore "
                    "not directly comparable with published CIFAR-10 numbers (fewer, lossier training images).")
    report.note("Speed on CPU comes from three choices measured on this machine before picking the net: small "
                "widths, bf16 autocast (about 3x faster than float32 on an AVX-512 BF16 CPU, much slower where it is "
                "only emulated, hence bf16=auto) and channels_last. "
                "test_accuracy uses no test-time augmentation; test_accuracy_flip_tta averages the logits of each "
                "image and its mirror image. No model selection is done on the test set.")
    if config.register:
        _register(report, model, data["source"], mean, std, data["class_names"])
    return report


def _register(report: Report, model: Any, source: str, mean: Any, std: Any, classes: list[str]) -> None:
    from mastery.ops.registry_loaders import architecture, note_registered, save_torch_module

    arch = architecture("mastery.vision.cnn", "CifarCNN", widths=list(model.widths), num_classes=len(classes),
                        bf16=bool(model.bf16), channels_last=bool(model.channels_last))
    ref = save_torch_module(
        "cifar10-cnn", model, arch=arch,
        config={"lab": "l09", "lab_config": report.config, "input": "(B, 3, 32, 32) float32, (x/255 - mean)/std",
                "mean": [float(v) for v in np.ravel(mean)], "std": [float(v) for v in np.ravel(std)],
                "classes": classes, "data_source": source},
        metrics={k: report.metrics[k] for k in ("test_accuracy", "test_accuracy_flip_tta", "final_train_loss")},
        data_assets=["cifar10" if source == "jpeg-q75" else "cifar10-official"],
        probe_input={"randn": [2, 3, 32, 32], "seed": 0}, description="L9 CIFAR-10 CNN")
    note_registered(report, ref)
