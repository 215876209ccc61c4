"""L11 · Object detection: IoU, NMS and mAP from scratch, annotation import, a YOLOv8n hard-hat detector."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from annotated_types import Interval, MultipleOf

from mastery.core.config import Fraction
from mastery.core.progress import Progress
from mastery.core.report import Report
from mastery.core.runtime import Device

REQUIRES: tuple[str, ...] = ()  # registered assets the tiny preset reads


@dataclass(frozen=True)
class Config:
    n_train: Annotated[int, Interval(ge=1, le=100_000)] = 400  # generated hard-hat scenes
    n_val: Annotated[int, Interval(ge=1, le=100_000)] = 100
    # scene side = training and inference size (px)
    imgsz: Annotated[int, Interval(ge=32, le=2048), MultipleOf(32)] = 320
    epochs: Annotated[int, Interval(ge=1, le=1000)] = 25
    batch: Annotated[int, Interval(ge=1, le=1024)] = 16  # also ultralytics' nominal batch: one optimizer step per batch
    model: str = "yolov8n.yaml"  # built from the yaml: no pretrained weights exist offline
    amp: bool = False  # on a GPU, AMP's self-check downloads a reference model; off keeps the run offline
    # random images for the from-scratch vs pycocotools mAP comparison
    n_metric_cases: Annotated[int, Interval(ge=1, le=10_000)] = 40
    # scenes exported as COCO / Label Studio / YOLO and imported back
    n_roundtrip: Annotated[int, Interval(ge=1, le=1000)] = 6
    # frames of the generated clip run through `vision detect`
    video_frames: Annotated[int, Interval(ge=1, le=10_000)] = 12
    figure_conf: Fraction = 0.3  # score threshold of the predictions drawn in the figure
    run_dir: str = ""  # ultralytics' run folder, dataset and weights; "" = a new temporary directory
    device: Device = "auto"
    max_iou_diff: Annotated[float, Interval(ge=0, le=1)] = 1e-9  # vs torchvision.ops.box_iou
    # vs torchmetrics + pycocotools (which returns float32)
    max_map_ref_diff: Annotated[float, Interval(ge=0, le=1)] = 1e-6
    max_map_gap: Fraction = 0.1  # |my mAP50-95 - ultralytics' mAP50-95| on the trained model
    min_map50: Fraction = 0.5  # ultralytics' val mAP@0.5 of the trained model
    min_map50_95: Fraction = 0.25
    seed: int = 0


# The numbers that summarise a run: the README table and the conformance test read them from here.
HEADLINE = ("map50", "map50_95")

PRESETS = {
    "tiny": Config(n_train=8, n_val=4, imgsz=96, epochs=1, batch=8, n_metric_cases=12, n_roundtrip=3, video_frames=3,
                   min_map50=0.0, min_map50_95=0.0, max_map_gap=1.0),
    "full": Config(),
}


def _random_boxes(rng: np.random.Generator, n: int, side: float = 100.0) -> np.ndarray:
    xy = rng.uniform(0, side, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(1, 40, (n, 2))], axis=1)  # (n, 4) valid xyxy


def _metric_cases(rng: np.random.Generator, n: int) -> list[Any]:
    """Random images with GT (3 classes) and predictions: jittered hits, wrong classes, misses, false alarms."""
    from mastery.vision.boxes import ImageDetections

    images = []
    for _ in range(n):
        gt = _random_boxes(rng, int(rng.integers(0, 8)))
        gl = rng.integers(0, 3, len(gt))
        hit = rng.random(len(gt)) < 0.8
        p = gt[hit] + rng.normal(0, 3, (int(hit.sum()), 4))
        p = np.concatenate([np.minimum(p[:, :2], p[:, 2:] - 0.5), np.maximum(p[:, 2:], p[:, :2] + 0.5)], axis=1)
        pl = gl[hit].copy()
        wrong = rng.random(len(pl)) < 0.1
        pl[wrong] = rng.integers(0, 3, int(wrong.sum()))
        fp = _random_boxes(rng, int(rng.integers(0, 4)))
        images.append(ImageDetections.make(np.concatenate([p, fp]), rng.random(len(p) + len(fp)),
                                           np.concatenate([pl, rng.integers(0, 3, len(fp))]), gt, gl))
    return images


def _hand_cases() -> list[tuple[str, list[Any], float, float]]:
    """(name, images, expected mAP50, expected mAP50-95) worked out by hand."""
    from mastery.vision.boxes import ImageDetections as D

    g = [[0, 0, 10, 10]]
    return [
        ("perfect", [D.make(g, [0.9], [0], g, [0])], 1.0, 1.0),
        # A false alarm outranks the hit: precision 1/2 at recall 1 -> 0.5 at every recall point.
        ("fp_first", [D.make([[50, 50, 60, 60], [0, 0, 10, 10]], [0.9, 0.8], [0, 0], g, [0])], 0.5, 0.5),
        # Shifted by (2, 2): overlap 64 / union 136 = IoU 0.47, a miss even at 0.5.
        ("iou_0.47", [D.make([[2, 2, 12, 12]], [0.9], [0], g, [0])], 0.0, 0.0),
        # 10 x 7.2 inside 10 x 10: IoU 0.72, a hit at 0.50 ... 0.70 (5 of 10 thresholds).
        ("iou_0.72", [D.make([[0, 0, 10, 7.2]], [0.9], [0], g, [0])], 1.0, 0.5),
        ("missed_half", [D.make(g, [0.9], [0], [*g, [20, 20, 30, 30]], [0, 0])], 51 / 101, 51 / 101),
    ]


def run(config: Config, progress: Progress) -> Report:
    import tempfile

    if config.run_dir:
        return _run(config, progress, Path(config.run_dir).resolve())
    # Without a run_dir the dataset, ultralytics' run folder and the weights are scratch: a
    # tracker has copied best.pt by the time the run ends, so nothing is left behind in /tmp.
    with tempfile.TemporaryDirectory(prefix="mastery-l11-") as tmp:
        return _run(config, progress, Path(tmp).resolve())


def _run(config: Config, progress: Progress, run_dir: Path) -> Report:
    import time

    from mastery.nn.train import start_torch_report
    from mastery.vision.annotations import load_yolo_split, validate_yolo_dataset
    from mastery.vision.boxes import ImageDetections, mean_average_precision, reference_map
    from mastery.vision.hardhat import CLASS_NAMES, make_scenes, write_hardhat_dataset
    from mastery.vision.yolo import load_detector, predict, train_yolo

    report, device = start_torch_report("l11", config)
    dev = str(device)  # ultralytics takes the device as a string
    rng = np.random.default_rng(config.seed)

    # 1. IoU, NMS and mAP from scratch against torchvision and pycocotools.
    progress.stage("from-scratch metrics", 3)
    _check_scratch_metrics(report, config, rng)
    progress.step(3)

    # 2. Annotation import: the same scenes exported as each tool writes them, imported back.
    progress.stage("annotation import", 1)
    _check_annotation_import(report, config, run_dir / "annotations")
    progress.step(1)

    # 3. The generated hard-hat dataset as a YOLO folder, validated like an imported one.
    data_yaml = write_hardhat_dataset(run_dir / "data", config.n_train, config.n_val, config.seed, config.imgsz)
    counts = validate_yolo_dataset(data_yaml)
    for key, value in counts.items():
        report.metric(f"data_{key}", value)
    val_items = load_yolo_split(data_yaml, "val")
    class_counts = np.bincount(np.concatenate([it.labels for it in val_items]), minlength=len(CLASS_NAMES))
    report.check("dataset_valid", counts["train_boxes"] > 0 and counts["val_boxes"] > 0,
                 "the generated dataset passes validation and has boxes in both splits",
                 ", ".join(f"{k} {v}" for k, v in counts.items()))

    # 4. YOLOv8n from scratch.
    progress.params({"model": config.model, "imgsz": config.imgsz, "epochs": config.epochs, "batch": config.batch,
                     "n_train": config.n_train, "n_val": config.n_val, "device": dev, "pretrained": False})
    start = time.perf_counter()
    result = train_yolo(data_yaml, run_dir / "runs", model_cfg=config.model, imgsz=config.imgsz,
                        epochs=config.epochs, batch=config.batch, seed=config.seed, device=config.device,
                        amp=config.amp, progress=progress)
    report.timing("train_seconds", time.perf_counter() - start)
    report.timing("seconds_per_epoch", float(np.mean(result.epoch_seconds)) if result.epoch_seconds else 0.0)
    progress.artifact(str(result.weights))
    report.check("trained_all_epochs", len(result.history) == config.epochs and result.weights.is_file(),
                 f"{config.epochs} epochs recorded (train loss + val mAP each) and best.pt written",
                 len(result.history))
    report.metric("map50", result.map50)
    report.metric("map50_95", result.map50_95)
    report.metric("ultralytics_precision", result.precision)
    report.metric("ultralytics_recall", result.recall)

    # 5. The trained model's val predictions, scored by my mAP and by pycocotools.
    progress.stage("evaluate", len(val_items))
    model = load_detector(result.weights)
    start = time.perf_counter()
    preds = predict(model, [Path(it.image) for it in val_items], imgsz=config.imgsz, device=config.device)
    report.timing("inference_ms_per_image", 1000 * (time.perf_counter() - start) / len(val_items))
    progress.step(len(val_items))
    images = [ImageDetections.make(p.boxes, p.scores, p.labels, it.boxes, it.labels)
              for p, it in zip(preds, val_items, strict=True)]
    mine = mean_average_precision(images)
    ref = reference_map(images)
    report.metric("my_map50", mine.map50)
    report.metric("my_map50_95", mine.map50_95)
    report.metric("my_map75", mine.map75)
    for c in mine.classes:
        report.metric(f"my_ap50_{CLASS_NAMES[c]}", mine.ap50_per_class[c])
    diff = max(abs(mine.map50 - ref["map50"]), abs(mine.map50_95 - ref["map50_95"]))
    report.check("trained_map_matches_pycocotools", diff <= config.max_map_ref_diff,
                 f"my mAP50 and mAP50-95 of the trained model's val predictions within {config.max_map_ref_diff} "
                 "of torchmetrics/pycocotools", diff)
    gap = abs(mine.map50_95 - result.map50_95)
    report.metric("map50_95_gap_mine_vs_ultralytics", mine.map50_95 - result.map50_95)
    report.check("mine_close_to_ultralytics", gap <= config.max_map_gap,
                 f"abs(my mAP50-95 - ultralytics' mAP50-95) <= {config.max_map_gap}", gap)
    report.check("map50", result.map50 >= config.min_map50, f"ultralytics val mAP50 >= {config.min_map50}",
                 result.map50)
    report.check("map50_95", result.map50_95 >= config.min_map50_95,
                 f"ultralytics val mAP50-95 >= {config.min_map50_95}", result.map50_95)
    report.table("Val split: ultralytics vs this implementation", [
        {"metric": "mAP@0.5", "ultralytics": result.map50, "mine (COCO 101-pt)": mine.map50,
         "pycocotools": ref["map50"]},
        {"metric": "mAP@0.5:0.95", "ultralytics": result.map50_95, "mine (COCO 101-pt)": mine.map50_95,
         "pycocotools": ref["map50_95"]},
        {"metric": "mAP@0.75", "ultralytics": None, "mine (COCO 101-pt)": mine.map75, "pycocotools": ref["map75"]},
    ])
    report.table("Per class (val)", [
        {"class": CLASS_NAMES[c], "val boxes": int(class_counts[c]), "AP50": mine.ap50_per_class[c],
         "AP50-95": mine.ap_per_class[c], "max recall @0.5": float(mine.recall_max[0, k])}
        for k, c in enumerate(mine.classes)])
    report.table("Training history (ultralytics val each epoch)", [
        {k: row.get(k) for k in ("epoch", "train_box_loss", "train_cls_loss", "mAP50", "mAP50-95")}
        for row in result.history])

    # 6. `mastery vision detect` on a clip made of val scenes.
    _check_video(report, config, result.weights, run_dir)

    train_scenes = make_scenes(8, config.seed, config.imgsz)  # the first training scenes, regenerated
    report.figure("train_scenes_ground_truth", _scenes_figure(
        [s.image for s in train_scenes], [(s.boxes, s.labels, None) for s in train_scenes],
        f"Generated training scenes with ground truth ({config.imgsz} px)"))
    shown = list(range(min(8, len(val_items))))
    report.figure("val_predictions", _scenes_figure(
        [_read_rgb(Path(val_items[i].image)) for i in shown],
        [(preds[i].boxes[preds[i].scores >= config.figure_conf], preds[i].labels[preds[i].scores >= config.figure_conf],
          preds[i].scores[preds[i].scores >= config.figure_conf]) for i in shown],
        f"YOLOv8n predictions on val scenes (score >= {config.figure_conf}); gt dashed",
        gts=[(val_items[i].boxes, val_items[i].labels) for i in shown]))
    report.figure("pr_curve", _pr_figure(mine, CLASS_NAMES))
    if result.history:
        report.figure("training_curves", _history_figure(result.history))

    report.note(
        f"Data: {config.n_train} train + {config.n_val} val generated construction-site scenes at {config.imgsz} px "
        "(hardhat.py): workers are painted far to near, barriers in front, and every box is the bounding box of "
        "the pixels its object still owns in the final image; workers whose head is less than half visible get "
        "no labels. Classes: helmet (head with a hard hat, box over hat and face), head (bare head), person.")
    report.note(
        f"Model: YOLOv8n built from yolov8n.yaml (no pretrained weights, offline), {config.epochs} epochs, batch "
        f"{config.batch} (nbs = batch: one optimizer step per batch), imgsz {config.imgsz}, ultralytics defaults "
        "otherwise (mosaic, HSV and flip augmentation, AdamW chosen by optimizer=auto), deterministic=True, "
        "workers=0, seed fixed: on CPU two runs give identical numbers. Weights: runs/train/weights/best.pt under "
        "run_dir (set run_dir to keep them; by default a temporary folder, removed after the run).")
    report.note(
        "Two mAPs: `map50`/`map50_95` are ultralytics' validation of best.pt (its own matching, and 101-point "
        "interpolation with trapezoid integration, up to 300 detections per image); `my_map*` score the same "
        "model's predictions (conf >= 0.001, NMS IoU 0.7) with boxes.py, which follows COCOeval exactly "
        "(100 detections per image and class, greedy best-IoU matching, 101-point precision envelope) and "
        "is checked against torchmetrics + pycocotools on these very predictions. The small gap between the "
        "two is the difference between the two definitions and ultralytics' rectangular val batches.")
    return report


# -- parts of run() ------------------------------------------------------------------------------
def _check_scratch_metrics(report: Report, config: Config, rng: np.random.Generator) -> None:
    import torch
    import torchvision

    from mastery.vision.boxes import box_iou, mean_average_precision, nms, reference_map

    a, b = _random_boxes(rng, 200), _random_boxes(rng, 150)  # (200, 4), (150, 4)
    a[:20] = b[:20]  # identical pairs (IoU 1) and touching/disjoint ones come with the random draw
    iou_diff = float(np.abs(box_iou(a, b) - torchvision.ops.box_iou(torch.from_numpy(a), torch.from_numpy(b))
                            .numpy()).max())
    report.metric("iou_max_abs_diff_vs_torchvision", iou_diff)
    report.check("iou_matches_torchvision", iou_diff <= config.max_iou_diff,
                 f"max abs(IoU - torchvision.ops.box_iou) <= {config.max_iou_diff} on 200 x 150 random pairs", iou_diff)

    agree = total = 0
    for trial in range(10):  # clusters of overlapping boxes, different thresholds
        centres = rng.uniform(0, 200, (5, 2))
        pts = centres[rng.integers(0, 5, 120)] + rng.normal(0, 6, (120, 2))
        boxes = np.concatenate([pts, pts + rng.uniform(10, 30, (120, 2))], axis=1)
        scores = rng.random(120)
        t = (0.3, 0.5, 0.7)[trial % 3]
        ref = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), t).numpy()
        agree += int(np.array_equal(nms(boxes, scores, t), ref))
        total += 1
    report.check("nms_matches_torchvision", agree == total,
                 "identical kept indices to torchvision.ops.nms in 10 clustered cases (IoU 0.3/0.5/0.7)",
                 f"{agree}/{total}")

    wrong = []
    for name, images, want50, want in _hand_cases():
        got = mean_average_precision(images)
        if abs(got.map50 - want50) > 1e-12 or abs(got.map50_95 - want) > 1e-12:
            wrong.append(f"{name}: {got.map50:.4f}/{got.map50_95:.4f} != {want50:.4f}/{want:.4f}")
    report.check("map_hand_cases", not wrong, "mAP50 and mAP50-95 equal hand-computed values in 5 cases",
                 "; ".join(wrong) or "5/5")

    cases = _metric_cases(rng, config.n_metric_cases)
    mine, ref = mean_average_precision(cases), reference_map(cases)
    diff = max(abs(mine.map50 - ref["map50"]), abs(mine.map50_95 - ref["map50_95"]), abs(mine.map75 - ref["map75"]))
    report.metric("random_cases_my_map50", mine.map50)
    report.metric("random_cases_my_map50_95", mine.map50_95)
    report.check("map_matches_pycocotools", diff <= config.max_map_ref_diff,
                 f"mAP50, mAP75 and mAP50-95 within {config.max_map_ref_diff} of torchmetrics (pycocotools) on "
                 f"{config.n_metric_cases} random images", diff)


def _check_annotation_import(report: Report, config: Config, folder: Any) -> None:
    from mastery.vision.annotations import (
        AnnotationError,
        LabeledImage,
        export_coco,
        export_labelstudio,
        export_yolo,
        import_annotations,
    )
    from mastery.vision.hardhat import CLASS_NAMES, make_scenes

    scenes = make_scenes(config.n_roundtrip, config.seed + 1, config.imgsz)
    items = [LabeledImage(f"scene_{i}.png", s.image, s.boxes, s.labels) for i, s in enumerate(scenes)]
    names = list(CLASS_NAMES)
    sources = {"coco": export_coco(items, names, folder / "coco" / "instances.json"),
               "labelstudio": export_labelstudio(items, names, folder / "labelstudio" / "export.json"),
               "yolo": export_yolo(items, names, folder / "cvat_yolo")}
    rows = []
    for fmt, src in sources.items():
        data = import_annotations(fmt, src, names=names if fmt == "labelstudio" else None)
        back = {it.name: it for it in data.items}
        err = max((float(np.abs(back[it.name].boxes - it.boxes).max()) if len(it.boxes) else 0.0) for it in items)
        same = data.names == names and all(np.array_equal(back[it.name].labels, it.labels) for it in items)
        rows.append({"format": fmt, "images": len(data.items), "boxes": data.n_boxes, "classes": len(data.names),
                     "max box error px": err, "labels identical": same})
        report.check(f"import_{fmt}", same and err < 1e-3,
                     f"a {fmt} export of {len(items)} scenes imports back with the same labels, boxes within 1e-3 px",
                     err)
    report.table("Annotation import round trip", rows)
    bad = folder / "cvat_yolo" / "obj_train_data" / "scene_0.txt"
    bad.write_text(bad.read_text() + "1 0.98 0.5 0.2 0.1\n")  # sticks out of the right edge
    try:
        import_annotations("yolo", folder / "cvat_yolo")
        message = "accepted"
    except AnnotationError as exc:
        message = str(exc).replace(str(folder) + "/", "")
    report.check("bad_box_rejected", "scene_0.txt:" in message and "outside" in message,
                 "a box outside the image is an AnnotationError naming file and line", message)


def _check_video(report: Report, config: Config, weights: Any, run_dir: Any) -> None:
    import time

    import cv2

    from mastery.vision.hardhat import make_scenes
    from mastery.vision.yolo import detect_video

    clip, out = run_dir / "clip.mp4", run_dir / "clip.detections.mp4"
    scenes = make_scenes(config.video_frames, config.seed + 20_000, config.imgsz)
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (config.imgsz, config.imgsz))
    for s in scenes:
        writer.write(np.ascontiguousarray(s.image[..., ::-1]))  # RGB -> BGR
    writer.release()
    start = time.perf_counter()
    stats = detect_video(weights, str(clip), out, imgsz=config.imgsz, conf=0.25, device=config.device)
    report.timing("video_fps", config.video_frames / (time.perf_counter() - start))
    cap = cv2.VideoCapture(str(out))
    written = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    report.check("video_annotated", stats["frames"] == config.video_frames and written == config.video_frames,
                 f"`vision detect` reads all {config.video_frames} frames of a generated clip, writes them annotated",
                 f"{stats['frames']} read, {written} written")


# -- figures ---------------------------------------------------------------------------------------
_PLOT_COLOURS = ("gold", "red", "cyan")


def _read_rgb(path: Any) -> np.ndarray:
    import cv2

    return cv2.imread(str(path))[..., ::-1]  # (H, W, 3) BGR -> RGB


def _scenes_figure(images: list[np.ndarray], boxes: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
                   title: str, gts: list[tuple[np.ndarray, np.ndarray]] | None = None) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from mastery.vision.hardhat import CLASS_NAMES

    cols = 4
    rows = max(1, (len(images) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= len(images):
            continue
        ax.imshow(images[k])
        for (x1, y1, x2, y2), _ in zip(*(gts[k] if gts else ([], [])), strict=True):
            ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ls="--", lw=0.8, color="white"))
        bx, lab, sc = boxes[k]
        for j, ((x1, y1, x2, y2), c) in enumerate(zip(bx, lab, strict=True)):
            ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.2, color=_PLOT_COLOURS[int(c)]))
            if sc is not None:
                ax.text(x1, y1 - 1, f"{sc[j]:.2f}", color=_PLOT_COLOURS[int(c)], fontsize=5)
    handles = [Line2D([], [], color=col, label=name) for col, name in zip(_PLOT_COLOURS, CLASS_NAMES, strict=True)]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False)
    fig.suptitle(title)
    return fig


def _pr_figure(metrics: Any, names: tuple[str, ...]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mastery.vision.boxes import RECALL_POINTS

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for k, c in enumerate(metrics.classes):
        ax.plot(RECALL_POINTS, metrics.precision[0, :, k], color=_PLOT_COLOURS[c],
                label=f"{names[c]} AP50 {metrics.ap50_per_class[c]:.3f}")
        ax.plot(RECALL_POINTS, metrics.precision[5, :, k], color=_PLOT_COLOURS[c], ls=":", lw=1)
    ax.plot(RECALL_POINTS, np.nanmean(metrics.precision[0], axis=1), color="black", lw=2,
            label=f"mean: mAP50 {metrics.map50:.3f}")
    ax.set(xlabel="recall", ylabel="interpolated precision", xlim=(0, 1), ylim=(0, 1.02),
           title="Val PR curves from boxes.py (solid IoU 0.5, dotted IoU 0.75)")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def _history_figure(history: list[dict[str, float]]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in ("train_box_loss", "train_cls_loss", "train_dfl_loss"):
        a1.plot(epochs, [h.get(key, np.nan) for h in history], marker=".", label=key.replace("train_", ""))
    a1.set(xlabel="epoch", ylabel="training loss", title="YOLOv8n training losses")
    a1.legend()
    for key in ("mAP50", "mAP50-95"):
        a2.plot(epochs, [h.get(key, np.nan) for h in history], marker=".", label=key)
    a2.set(xlabel="epoch", ylabel="val mAP (ultralytics)", ylim=(0, 1), title="Validation mAP per epoch")
    a2.legend()
    for ax in (a1, a2):
        ax.grid(alpha=0.3)
    return fig
