"""L10 · Modern CNN architectures: transfer learning (frozen backbone -> fine-tune the last stage) for
malicious-screen detection, and pretrained vs from-scratch on few-shot CIFAR-10."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from annotated_types import Interval, Len

from mastery.core.config import Fraction
from mastery.core.progress import Progress
from mastery.core.report import Report
from mastery.core.runtime import Device

REQUIRES: tuple[str, ...] = ("cifar10", "efficientnet-lite0")  # registered assets the tiny preset reads


@dataclass(frozen=True)
class Config:
    # auto (resnet18 if its weights are present, else efficientnet-lite0), or force one
    backbone: Literal["auto", "resnet18", "efficientnet-lite0"] = "auto"
    data_dir: str = ""  # ImageFolder of real screenshots (root/<class>/<image>); "" = generated screens
    # screen input size (what the ImageNet backbones were trained at)
    image_size: Annotated[int, Interval(ge=32, le=1024)] = 224
    n_per_class: Annotated[int, Interval(ge=1, le=100_000)] = 500  # generated screens per class
    # train / val / test fractions of the screens
    split: Annotated[tuple[Annotated[float, Interval(gt=0, lt=1)], ...], Len(3, 3)] = (0.5, 0.15, 0.35)
    # labelled CIFAR-10 training images per class (few-shot)
    cifar_per_class: Annotated[int, Interval(ge=1, le=5000)] = 100
    cifar_size: Annotated[int, Interval(ge=32, le=1024)] = 96  # CIFAR 32 px upscaled to this for the ImageNet backbone
    # extra CIFAR training images, only for the validation curves
    cifar_val: Annotated[int, Interval(ge=1, le=50_000)] = 500
    cifar_test: Annotated[int, Interval(ge=1, le=10_000)] = 2000  # fixed test subset
    head_epochs: Annotated[int, Interval(ge=1, le=1000)] = 10  # stage 1: frozen backbone, new head
    head_lr: Annotated[float, Interval(gt=0, le=10)] = 1e-3
    finetune_epochs: Annotated[int, Interval(ge=1, le=1000)] = 4  # stage 2: last stage unfrozen
    finetune_lr: Annotated[float, Interval(gt=0, le=10)] = 1e-4
    batch_size: Annotated[int, Interval(ge=1, le=65_536)] = 32
    weight_decay: Annotated[float, Interval(ge=0, le=10)] = 1e-4
    dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.2  # before the new linear head
    # blocks unfrozen in stage 2; 0 = the whole last stage (layer4 / Lite0 blocks 11-15)
    tail_blocks: Annotated[int, Interval(ge=0, le=64)] = 0
    scratch_end_to_end: bool = True  # scratch trains every layer; False = random frozen trunk, same two stages
    device: Device = "auto"
    # few-shot CIFAR: pretrained - scratch accuracy must exceed this
    min_pretrain_gain: Annotated[float, Interval(ge=-1, le=1)] = 0.0
    min_fewshot_pretrained_accuracy: Fraction = 0.5
    min_screens_accuracy: Fraction = 0.8
    register: bool = False  # save the screens classifier to the model registry as screen-classifier
    seed: int = 0

    def validate(self) -> None:
        from mastery.core.errors import ConfigError

        if abs(sum(self.split) - 1) > 1e-6:
            raise ConfigError(f"split must be three train/val/test fractions summing to 1, got {self.split}")


# The numbers that summarise a run: the README table and the conformance test read them from here.
HEADLINE = ("screens_test_accuracy", "screens_f1", "fewshot_pretrained_accuracy", "fewshot_scratch_accuracy")

PRESETS = {
    "tiny": Config(image_size=64, n_per_class=16, cifar_per_class=3, cifar_size=64, cifar_val=20, cifar_test=40,
                   head_epochs=2, finetune_epochs=1, batch_size=8, min_pretrain_gain=-1.0,
                   min_fewshot_pretrained_accuracy=0.0, min_screens_accuracy=0.0),
    "full": Config(register=True),
}


def _f1(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> tuple[float, float, float]:
    """(precision, recall, F1) of class 1 when k == 2 ("malicious"), else macro averages."""
    rows = []
    for c in ([1] if k == 2 else range(k)):
        tp = int(((y_pred == c) & (y_true == c)).sum())
        p = tp / max(int((y_pred == c).sum()), 1)
        r = tp / max(int((y_true == c).sum()), 1)
        rows.append((p, r, 2 * p * r / (p + r) if p + r else 0.0))
    return tuple(float(v) for v in np.mean(rows, axis=0))  # type: ignore[return-value]


def run(config: Config, progress: Progress) -> Report:
    import time

    import torch

    from mastery.assets.loaders import load_cifar10
    from mastery.nn.plots import confusion_matrix_figure, image_grid
    from mastery.nn.train import confusion_matrix, start_torch_report
    from mastery.vision import backbones as bb
    from mastery.vision import screens
    from mastery.vision.transfer import (
        Schedule,
        load_image_folder,
        max_cached_vs_end_to_end_gap,
        per_class_subset,
        resize_images,
        stratified_split,
        train_end_to_end,
        train_two_stage,
        two_stage_curves,
    )

    report, device = start_torch_report("l10", config)
    tail = config.tail_blocks or None
    schedule = Schedule(head_epochs=config.head_epochs, head_lr=config.head_lr,
                        finetune_epochs=config.finetune_epochs, finetune_lr=config.finetune_lr,
                        batch_size=config.batch_size, weight_decay=config.weight_decay)

    # -- backbone and its weights ------------------------------------------------------------
    choice = bb.choose_backbone(config.backbone)
    mean, std = bb.NORMALIZATION[choice.name]
    keys = bb.weight_key_report(choice.name, choice.weights)
    report.check("weights_load_strictly", not keys["missing"] and not keys["unexpected"],
                 "every parameter of the ImageNet model is in the weight file and vice versa (strict load)",
                 f"{keys['loaded']} tensors, {len(keys['missing'])} missing, {len(keys['unexpected'])} unexpected")
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        from PIL import Image

        top5 = bb.sanity_top5(choice.name, choice.weights, Image.open(fh))
    report.check("imagenet_sanity", any(label == "military uniform" for label, _ in top5),
                 "the ImageNet model puts 'military uniform' in its top 5 for matplotlib's Grace Hopper photo",
                 ", ".join(f"{label} {p:.2f}" for label, p in top5[:3]))
    report.table("Backbone", [{"backbone": choice.name, "weights": choice.weights.name, "choice": choice.reason,
                               "normalisation mean": str(mean), "std": str(std)}])
    progress.params({"backbone": choice.name, "weights": choice.weights.name, "image_size": config.image_size,
                     "cifar_size": config.cifar_size, "head_epochs": config.head_epochs,
                     "finetune_epochs": config.finetune_epochs, "head_lr": config.head_lr,
                     "finetune_lr": config.finetune_lr, "device": str(device)})

    # -- task 1: malicious vs benign screens -------------------------------------------------
    start = time.perf_counter()
    if config.data_dir:
        x_all, y_all, class_names, _ = load_image_folder(config.data_dir, config.image_size)
        kinds = None
        source = f"ImageFolder {config.data_dir}"
    else:
        gen = screens.generate_dataset(config.n_per_class, seed=config.seed, size=config.image_size)
        x_all, y_all, class_names, kinds = gen.images, gen.labels, list(gen.class_names), np.asarray(gen.kinds)
        source = "generated screens (mastery.vision.screens)"
    report.timing("screens_data_seconds", time.perf_counter() - start)
    tr, va, te = stratified_split(y_all, config.split, config.seed)
    k = len(class_names)
    data = {"train": (x_all[tr], y_all[tr]), "val": (x_all[va], y_all[va]), "test": (x_all[te], y_all[te])}
    torch.manual_seed(config.seed)
    net = bb.build_transfer_net(choice.name, choice.weights, k, image_size=config.image_size,
                                dropout=config.dropout, tail_blocks=tail)
    screens_result = train_two_stage(net, data, mean, std, schedule, device, seed=config.seed, progress=progress,
                                     prefix="screens_")
    p1, p2 = screens_result.params["stage1"], screens_result.params["stage2"]
    head_params = sum(p.numel() for p in net.head.parameters())
    tail_params = sum(p.numel() for p in net.tail.parameters())
    report.check("stage1_trains_only_head", p1["trainable"] == head_params,
                 "stage 1 leaves only the new head trainable", f"{p1['trainable']} of {p1['trainable'] + p1['frozen']}")
    report.check("stage2_unfreezes_tail", p2["trainable"] == head_params + tail_params,
                 "stage 2 makes exactly the last stage + head trainable",
                 f"{p2['trainable']} of {p2['trainable'] + p2['frozen']}")
    gap = max_cached_vs_end_to_end_gap(net, x_all[te][:4], mean, std, device)
    tol = 1e-3 if device.type == "cpu" else 5e-2  # CUDA convolutions may run in TF32
    report.check("cache_matches_full_network", gap < tol,
                 f"logits from cached stem outputs equal the full network's (max |diff| < {tol:g})", gap)
    yt, yp = screens_result.y_true, screens_result.y_pred
    precision, recall, f1 = _f1(yt, yp, k)
    report.metric("screens_test_accuracy", screens_result.test_accuracy)
    report.metric("screens_stage1_test_accuracy", screens_result.test_accuracy_stage1)
    report.metric("screens_f1", f1)
    report.metric("screens_precision", precision)
    report.metric("screens_recall", recall)
    report.metric("screens_n_train", len(tr))
    report.metric("screens_n_test", len(te))
    report.metric("trainable_params_stage1", p1["trainable"])
    report.metric("trainable_params_stage2", p2["trainable"])
    for name, s in screens_result.seconds.items():
        report.timing(f"screens_{name}_seconds", s)
    report.check("screens_accuracy", screens_result.test_accuracy >= config.min_screens_accuracy,
                 f"screens test accuracy >= {config.min_screens_accuracy}", screens_result.test_accuracy)
    if kinds is not None:
        kt = kinds[te]
        report.table("Screens: test accuracy per kind", [
            {"kind": kind, "class": class_names[screens.KIND_LABEL[kind]], "n": int((kt == kind).sum()),
             "accuracy": float((yp[kt == kind] == yt[kt == kind]).mean())}
            for kind in screens.KIND_LABEL if (kt == kind).any()])

    # -- task 2: few-shot CIFAR-10, pretrained vs from scratch --------------------------------
    cifar = load_cifar10()
    train_idx = per_class_subset(cifar["y_train"], config.cifar_per_class, config.seed)
    rest = np.setdiff1d(np.arange(len(cifar["y_train"])), train_idx)
    val_idx = np.sort(np.random.default_rng(config.seed + 1).choice(rest, config.cifar_val, replace=False))
    test_idx = np.sort(np.random.default_rng(config.seed + 2).choice(len(cifar["y_test"]), config.cifar_test,
                                                                      replace=False))
    start = time.perf_counter()
    cdata = {"train": (resize_images(cifar["x_train"][train_idx], config.cifar_size), cifar["y_train"][train_idx]),
             "val": (resize_images(cifar["x_train"][val_idx], config.cifar_size), cifar["y_train"][val_idx]),
             "test": (resize_images(cifar["x_test"][test_idx], config.cifar_size), cifar["y_test"][test_idx])}
    report.timing("cifar_resize_seconds", time.perf_counter() - start)
    cifar_results = {}
    variants = [("pretrained", choice.weights, False), ("scratch", None, config.scratch_end_to_end)]
    if config.scratch_end_to_end:  # also the random backbone under the frozen two-stage schedule, for reference
        variants.append(("random_frozen", None, False))
    for variant, weights, end_to_end in variants:
        torch.manual_seed(config.seed)
        cnet = bb.build_transfer_net(choice.name, weights, 10, image_size=config.cifar_size, dropout=config.dropout,
                                     tail_blocks=tail)
        if end_to_end:
            r = train_end_to_end(cnet, cdata, mean, std, schedule, device, seed=config.seed, progress=progress,
                                 prefix=f"cifar_{variant}_")
        else:  # a random backbone's BatchNorm statistics are first set from the training images
            r = train_two_stage(cnet, cdata, mean, std, schedule, device, seed=config.seed, progress=progress,
                                prefix=f"cifar_{variant}_", calibrate_bn=weights is None)
        cifar_results[variant] = r
        for name, s in r.seconds.items():
            report.timing(f"cifar_{variant}_{name}_seconds", s)
    pre, scr = cifar_results["pretrained"], cifar_results["scratch"]
    if "random_frozen" in cifar_results:
        report.metric("fewshot_random_frozen_accuracy", cifar_results["random_frozen"].test_accuracy)
    report.metric("fewshot_pretrained_accuracy", pre.test_accuracy)
    report.metric("fewshot_scratch_accuracy", scr.test_accuracy)
    report.metric("fewshot_pretrained_stage1_accuracy", pre.test_accuracy_stage1)
    report.metric("fewshot_scratch_stage1_accuracy", scr.test_accuracy_stage1)
    report.metric("fewshot_pretrain_gain", pre.test_accuracy - scr.test_accuracy)
    report.metric("fewshot_image_size", config.cifar_size)
    report.check("pretraining_helps", pre.test_accuracy - scr.test_accuracy > config.min_pretrain_gain,
                 f"few-shot CIFAR-10: pretrained - scratch test accuracy > {config.min_pretrain_gain}",
                 pre.test_accuracy - scr.test_accuracy)
    report.check("fewshot_pretrained_accuracy", pre.test_accuracy >= config.min_fewshot_pretrained_accuracy,
                 f"pretrained few-shot test accuracy >= {config.min_fewshot_pretrained_accuracy}", pre.test_accuracy)
    report.table("Few-shot CIFAR-10 and screens: test accuracy after each stage", [
        {"task": "screens", "weights": "ImageNet", "after stage 1 (head)": screens_result.test_accuracy_stage1,
         "after stage 2 (fine-tune)": screens_result.test_accuracy},
        {"task": "CIFAR-10 few-shot", "weights": "ImageNet", "after stage 1 (head)": pre.test_accuracy_stage1,
         "after stage 2 (fine-tune)": pre.test_accuracy},
        {"task": "CIFAR-10 few-shot", "weights": "random (scratch, " + ("every layer trained)" if
                                                                        config.scratch_end_to_end else "frozen trunk)"),
         "after stage 1 (head)": scr.test_accuracy_stage1, "after stage 2 (fine-tune)": scr.test_accuracy},
        *([{"task": "CIFAR-10 few-shot", "weights": "random (frozen trunk, same schedule)",
            "after stage 1 (head)": cifar_results["random_frozen"].test_accuracy_stage1,
            "after stage 2 (fine-tune)": cifar_results["random_frozen"].test_accuracy}]
          if "random_frozen" in cifar_results else [])])

    # -- figures -----------------------------------------------------------------------------
    if kinds is not None:
        order = [int(np.flatnonzero(kinds == kd)[j]) for j in range(2) for kd in screens.KIND_LABEL]
        report.figure("screens_samples", image_grid(x_all[order], [str(kinds[i]) for i in order], cols=7,
                                                    title="Generated screens: benign (app, signin, security, "
                                                          "wallet) and malicious (fake_av, ransom, phish_login)"))
    report.figure("screens_curves", two_stage_curves({"screens": screens_result},
                                                     f"Screens, {choice.name}: head only, then last stage unfrozen"))
    report.figure("cifar_curves", two_stage_curves(cifar_results, f"Few-shot CIFAR-10 ({config.cifar_per_class}/class,"
                                                                  f" {config.cifar_size} px), {choice.name}"))
    report.figure("screens_confusion", confusion_matrix_figure(confusion_matrix(yt, yp, k), class_names,
                                                               "Screens: confusion matrix (test)"))
    wrong = np.flatnonzero(yt != yp)[:14]
    if len(wrong):
        x_test = x_all[te]
        captions = [(f"{kinds[te][i]}" if kinds is not None else class_names[yt[i]]) + f"->{class_names[yp[i]]}"
                    for i in wrong]
        report.figure("screens_misclassified", image_grid(x_test[wrong], captions, cols=7,
                                                          title="Misclassified test screens (true kind -> predicted)"))

    report.note(f"Backbone: {choice.name} with ImageNet weights {choice.weights.name} ({choice.reason}). "
                "Weights are loaded with torch.load(weights_only=True) and strict key matching; the ImageNet "
                f"model's top-3 for matplotlib's Grace Hopper photo: {', '.join(f'{a} {p:.2f}' for a, p in top5[:3])}.")
    report.note(f"Screens: {source}, {len(tr)} train / {len(va)} val / {len(te)} test at {config.image_size} px. "
                "Schedule: stage 1 freezes the backbone and trains a new head "
                f"({config.head_epochs} epochs, AdamW lr {config.head_lr}); stage 2 unfreezes the last stage "
                f"({'layer4' if choice.name == 'resnet18' else 'MBConv blocks 11-15 + head conv'}"
                f"{'' if tail is None else f', here the last {tail} blocks'}) and fine-tunes it with the head "
                f"({config.finetune_epochs} epochs, lr {config.finetune_lr}). The frozen stem stays in eval "
                "mode, so its output is computed once and cached; both stages train on the cache (checked equal "
                "to the full network), which is why there is no pixel augmentation.")
    scratch_how = ("the same architecture with every layer trained from (He) random initialisation for the same "
                   f"epochs and learning rates ({config.head_epochs} at {config.head_lr}, then "
                   f"{config.finetune_epochs} at {config.finetune_lr}); for reference, random_frozen is the random "
                   "backbone under the pretrained model's frozen schedule (BatchNorm statistics set from the "
                   "training images)"
                   if config.scratch_end_to_end else
                   "the same architecture from random initialisation under the same two-stage schedule and budget "
                   "(stage 1 head on the frozen random backbone, its BatchNorm statistics set from the training "
                   "images; stage 2 last stage + head); set "
                   "scratch_end_to_end=true to train every layer instead")
    report.note(f"Few-shot CIFAR-10: {config.cifar_per_class} labelled images per class "
                f"({len(train_idx)} in all) upscaled from 32 to {config.cifar_size} px, a fixed "
                f"{config.cifar_test}-image test subset, and {config.cifar_val} other training images used only "
                "for the validation curves "
                f"(no model selection). Scratch baseline: {scratch_how}. CIFAR source: {cifar['source']}"
                + (" (JPEG q75 copies; lossy)." if cifar["source"] == "jpeg-q75" else "."))
    if config.register:
        _register(report, config, net, choice.name, class_names, source, (mean, std))
    return report


def _register(report: Report, config: Config, net: Any, backbone: str, class_names: list[str], source: str,
              norm: tuple[Any, Any]) -> None:
    from mastery.ops.registry_loaders import architecture, note_registered, save_torch_module
    from mastery.vision.backbones import ASSET

    arch = architecture("mastery.vision.backbones", "TransferNet", backbone=backbone, num_classes=len(class_names),
                        image_size=config.image_size, dropout=config.dropout, tail_blocks=config.tail_blocks or None)
    ref = save_torch_module(
        "screen-classifier", net, arch=arch,
        config={"lab": "l10", "lab_config": report.config, "classes": class_names, "data": source,
                "input": f"(B, 3, {config.image_size}, {config.image_size}) float32 RGB in [0, 1], (x - mean)/std",
                "mean": list(norm[0]), "std": list(norm[1])},
        metrics={k: report.metrics[k] for k in ("screens_test_accuracy", "screens_f1", "screens_precision",
                                                "screens_recall")},
        # The screens are generated by code (no catalog asset); the ImageNet weights it started from are one.
        data_assets=[ASSET[backbone]],
        probe_input={"randn": [2, 3, config.image_size, config.image_size], "seed": 0},
        description="L10 malicious-screen classifier (ImageNet backbone, fine-tuned last stage)")
    note_registered(report, ref)
