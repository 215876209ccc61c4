"""L12 · Image segmentation: a hand-written U-Net for nuclei, scored with Dice, IoU and the DSB2018 mAP."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from annotated_types import Interval

from mastery.core.config import Fraction
from mastery.core.progress import Progress
from mastery.core.report import Report
from mastery.core.runtime import Device

# registered assets the tiny preset reads
REQUIRES: tuple[str, ...] = ("dsb2018-nuclei-sample", "dsb2018-nuclei-sample-mask")


@dataclass(frozen=True)
class Config:
    width: Annotated[int, Interval(ge=1, le=1024)] = 24  # U-Net channels at full resolution (doubles per level)
    depth: Annotated[int, Interval(ge=1, le=8)] = 4  # number of 2x down-samplings
    epochs: Annotated[int, Interval(ge=1, le=1000)] = 30
    steps_per_epoch: Annotated[int, Interval(ge=1, le=100_000)] = 50
    batch_size: Annotated[int, Interval(ge=1, le=4096)] = 8
    crop: Annotated[int, Interval(ge=1, le=512)] = 96
    lr: Annotated[float, Interval(gt=0, le=10)] = 3e-3
    contact_weight: Annotated[float, Interval(ge=0, le=1000)] = 5.0  # extra BCE weight where touching nuclei meet
    n_generated_train: Annotated[int, Interval(ge=1, le=100_000)] = 240
    n_generated_test: Annotated[int, Interval(ge=1, le=100_000)] = 40
    generated_size: Annotated[int, Interval(ge=1, le=2048)] = 128
    real_fraction: Fraction = 0.5  # share of training crops drawn from the real DSB2018 training tiles
    # the 512x512 real image is cut into tile x tile cells; 4 of the 16 are held out
    tile: Annotated[int, Interval(ge=1, le=512)] = 128
    threshold: Annotated[float, Interval(gt=0, lt=1)] = 0.5  # on the interior probability
    # predicted components smaller than this (pixels) are dropped
    min_size: Annotated[int, Interval(ge=0, le=100_000)] = 8
    bf16: Literal["auto", "on", "off"] = "auto"  # bf16 autocast where the device runs it natively
    stage1_dir: str = ""  # optional: a DSB2018 stage1_train folder; its samples join training / testing
    stage1_limit: Annotated[int, Interval(ge=0, le=100_000)] = 200
    device: Device = "auto"
    min_dice: Fraction = 0.8  # thresholds on the real held-out tiles
    min_dsb_map: Fraction = 0.5
    min_generated_dice: Fraction = 0.8
    register: bool = False  # save the trained U-Net to the model registry as nuclei-unet
    seed: int = 0

    def validate(self) -> None:
        from mastery.core.errors import ConfigError

        if self.crop % 2**self.depth or self.generated_size % 2**self.depth or self.crop > self.tile:
            raise ConfigError(f"crop and generated_size must be divisible by 2^depth = {2**self.depth}, "
                              f"and crop <= tile")
        if self.crop > self.generated_size or 512 % self.tile or self.tile % 2**self.depth:
            raise ConfigError("crop must fit generated images, and tile must divide 512 and be divisible by 2^depth")


# The numbers that summarise a run: the README table and the conformance test read them from here.
HEADLINE = ("dice", "iou", "dsb_map")

PRESETS = {
    "tiny": Config(width=4, depth=2, epochs=2, steps_per_epoch=6, batch_size=4, crop=64, n_generated_train=8,
                   n_generated_test=3, generated_size=64, min_dice=0.2, min_dsb_map=0.0, min_generated_dice=0.2),
    "full": Config(register=True),
}


def _score(model: object, samples: list[tuple[np.ndarray, np.ndarray]], config: Config, device: object,
           multiple: int) -> dict[str, object]:
    from mastery.vision.seg_metrics import dice, dsb_map, dsb_precisions, iou
    from mastery.vision.seg_train import predict_instances, predict_probability

    start = time.perf_counter()
    preds = [predict_instances(predict_probability(model, img, device, multiple), config.threshold, 1,
                               config.min_size) for img, _ in samples]
    seconds = (time.perf_counter() - start) / len(samples)
    trues = [inst for _, inst in samples]
    # Pooled over all pixels of the set: concatenate the flattened masks.
    t_all = np.concatenate([t.ravel() > 0 for t in trues])
    p_all = np.concatenate([p.ravel() > 0 for p in preds])
    prec = [dsb_precisions(t, p) for t, p in zip(trues, preds, strict=True)]
    return {"dice": dice(p_all, t_all), "iou": iou(p_all, t_all), "dsb_map": dsb_map(trues, preds),
            "ap50": float(np.mean([p[0.5] for p in prec])), "ap75": float(np.mean([p[0.75] for p in prec])),
            "n_true": sum(int(len(np.unique(t)) - 1) for t in trues),
            "n_pred": sum(int(p.max()) for p in preds), "preds": preds, "seconds_per_image": seconds}


def run(config: Config, progress: Progress) -> Report:
    import torch

    from mastery.core.precision import decide_bf16
    from mastery.nn.models import count_parameters
    from mastery.nn.train import start_torch_report
    from mastery.vision.nuclei import generate_nuclei, load_dsb_sample, load_stage1_train, tile_split
    from mastery.vision.seg_metrics import dsb_map, instances_from_mask, interior_target
    from mastery.vision.seg_plots import loss_figure, overlay_figure, tile_map_figure
    from mastery.vision.seg_train import PatchSampler, SegSetup, train_unet
    from mastery.vision.unet import UNet

    report, device = start_torch_report("l12", config)
    precision = decide_bf16(config.bf16, device)
    precision.record(report)

    image, instances = load_dsb_sample()  # (512, 512) float32 [0, 1], int32 labels
    split = tile_split(image, instances, config.tile)
    generated = generate_nuclei(config.n_generated_train + config.n_generated_test, config.generated_size,
                                config.seed)
    gen_train, gen_test = generated[:config.n_generated_train], generated[config.n_generated_train:]
    stage1_train, stage1_test = [], []
    if config.stage1_dir:
        stage1 = [s for s in load_stage1_train(config.stage1_dir, config.stage1_limit)
                  if min(s[0].shape) >= config.crop]
        cut = max(1, len(stage1) // 5)
        stage1_test, stage1_train = stage1[:cut], stage1[cut:]
    real_train = split.train + stage1_train
    samples = real_train + gen_train
    weights = ([config.real_fraction / len(real_train)] * len(real_train)
               + [(1 - config.real_fraction) / len(gen_train)] * len(gen_train))
    sampler = PatchSampler(samples, config.crop, config.seed, weights, config.contact_weight)

    torch.manual_seed(config.seed)
    model = UNet(1, 1, width=config.width, depth=config.depth, bf16=precision.bf16)
    setup = SegSetup(epochs=config.epochs, steps_per_epoch=config.steps_per_epoch, batch_size=config.batch_size,
                     crop=config.crop, lr=config.lr, contact_weight=config.contact_weight)
    progress.params({"width": config.width, "depth": config.depth, "epochs": config.epochs,
                     "steps_per_epoch": config.steps_per_epoch, "batch_size": config.batch_size, "lr": config.lr,
                     "n_real_train_tiles": len(split.train), "n_generated_train": len(gen_train),
                     "device": str(device)})
    history = train_unet(model, sampler, setup, device, progress)

    multiple = 2**config.depth
    real = _score(model, split.test, config, device, multiple)
    gen = _score(model, gen_test, config, device, multiple)
    for key in ("dice", "iou", "dsb_map", "ap50", "ap75"):
        report.metric(key, real[key])
    for key in ("dice", "iou", "dsb_map", "ap50"):
        report.metric(f"generated_{key}", gen[key])
    report.metric("n_parameters", count_parameters(model))
    report.metric("final_train_loss", history.loss[-1])
    # The post-processing's ceiling: ground-truth interiors -> components -> grown by 1 px.
    ceiling = dsb_map([t for _, t in split.test],
                      [instances_from_mask(interior_target(t), grow=1) for _, t in split.test])
    report.metric("dsb_map_ceiling_of_postprocessing", ceiling)
    report.metric("generated_dsb_map_ceiling_of_postprocessing", dsb_map(
        [t for _, t in gen_test], [instances_from_mask(interior_target(t), grow=1) for _, t in gen_test]))
    report.timing("seconds_per_epoch", float(np.mean(history.epoch_seconds)))
    report.timing("train_seconds_total", float(np.sum(history.epoch_seconds)))
    report.timing("inference_seconds_per_tile", real["seconds_per_image"])
    rows = [{"set": f"real DSB2018 held-out tiles ({len(split.test)} x {config.tile}^2)", **{
        k: real[k] for k in ("dice", "iou", "dsb_map", "ap50", "ap75", "n_true", "n_pred")}},
        {"set": f"generated test images ({len(gen_test)} x {config.generated_size}^2)", **{
            k: gen[k] for k in ("dice", "iou", "dsb_map", "ap50", "ap75", "n_true", "n_pred")}}]
    if stage1_test:
        s1 = _score(model, stage1_test, config, device, multiple)
        report.metric("stage1_dsb_map", s1["dsb_map"])
        rows.append({"set": f"DSB2018 stage1_train held-out samples ({len(stage1_test)})", **{
            k: s1[k] for k in ("dice", "iou", "dsb_map", "ap50", "ap75", "n_true", "n_pred")}})
    report.table("Test scores (dice/iou pooled over pixels; dsb_map = mean over images of the mean over IoU "
                 "thresholds 0.5-0.95 of TP/(TP+FP+FN); ap50/ap75 at one threshold)", rows)
    report.check("real_dice", real["dice"] >= config.min_dice, f"Dice on real held-out tiles >= {config.min_dice}",
                 real["dice"])
    report.check("real_dsb_map", real["dsb_map"] >= config.min_dsb_map,
                 f"DSB2018 mAP on real held-out tiles >= {config.min_dsb_map}", real["dsb_map"])
    report.check("generated_dice", gen["dice"] >= config.min_generated_dice,
                 f"Dice on generated test images >= {config.min_generated_dice}", gen["dice"])

    report.figure("test_tiles", tile_map_figure(image, split.tile, split.test_cells))
    report.figure("overlay_real", overlay_figure(
        [img for img, _ in split.test], [t for _, t in split.test], real["preds"],
        [f"tile {c}" for c in split.test_cells], "Real DSB2018 held-out tiles: U-Net vs ground truth"))
    k = min(4, len(gen_test))
    report.figure("overlay_generated", overlay_figure(
        [img for img, _ in gen_test[:k]], [t for _, t in gen_test[:k]], gen["preds"][:k],
        [f"generated {i}" for i in range(k)], "Generated test images: U-Net vs ground truth"))
    report.figure("training_loss", loss_figure(history.iteration_loss, history.loss, config.steps_per_epoch,
                                               f"U-Net width {config.width} depth {config.depth}"))

    report.note(f"Real data: the one DSB2018 image in the registry (512x512, 125 nuclei) cut into 16 "
                f"{config.tile}x{config.tile} tiles; tiles {split.test_cells} (row, col) are held out for test and "
                "never sampled for training (crops stay inside single training tiles). Training crops mix the 12 "
                f"real tiles ({config.real_fraction:.0%} of crops) with {len(gen_train)} generated images "
                "(textured blobs, touching nuclei, blur, uneven illumination, noise).")
    report.note("The U-Net predicts nuclei interiors (each nucleus minus its 1-pixel boundary) so touching nuclei "
                "stay apart; instances are the connected components (scipy.ndimage.label) of the thresholded "
                "prediction, grown back by 1 pixel. dsb_map_ceiling_of_postprocessing is the score this "
                "post-processing gets from the true interiors (plain components of the true binary mask would "
                "merge touching nuclei). Nuclei cut by a tile border count as objects of each tile.")
    if config.register:
        _register(report, config, model)
    return report


def _register(report: Report, config: Config, model: Any) -> None:
    from mastery.ops.registry_loaders import architecture, note_registered, save_torch_module

    arch = architecture("mastery.vision.unet", "UNet", in_channels=1, out_channels=1, width=config.width,
                        depth=config.depth, bf16=bool(model.bf16))
    side = 2**config.depth * 4
    ref = save_torch_module(
        "nuclei-unet", model, arch=arch,
        config={"lab": "l12", "lab_config": report.config, "threshold": config.threshold,
                "input": f"(B, 1, H, W) float32 grey in [0, 1], H and W divisible by {2**config.depth}",
                "output": "logits of nucleus interiors (B, 1, H, W); instances = components grown by 1 px"},
        metrics={k: report.metrics[k] for k in ("dice", "iou", "dsb_map", "generated_dice")},
        # Trained on the DSB2018 sample's tiles plus generated images (code, no asset).
        data_assets=["dsb2018-nuclei-sample", "dsb2018-nuclei-sample-mask"],
        probe_input={"randn": [1, 1, side, side], "seed": 0}, description="L12 nuclei U-Net (DSB2018)")
    note_registered(report, ref)
