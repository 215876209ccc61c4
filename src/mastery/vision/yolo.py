"""YOLOv8 through ultralytics, offline: train from the yaml, predict, and annotate videos.

Nothing here downloads: ``YOLO_OFFLINE=1`` is set before ultralytics is imported, models are built
from ``yolov8n.yaml`` (no pretrained weights), ``plots=False`` avoids the font download, AMP stays
off unless asked for (its check on a GPU downloads a reference model), and ultralytics' logger
integrations (MLflow, TensorBoard, ...) are switched off in memory so a run writes only under its
own ``run_dir``. Drawing uses OpenCV's built-in Hershey font.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mastery.core.errors import MasteryError
from mastery.core.progress import NullProgress, Progress

log = logging.getLogger(__name__)

_INTEGRATIONS = ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb", "sync")
_COLOURS = [(0, 215, 255), (60, 60, 230), (230, 200, 40), (80, 200, 80), (200, 80, 200)]  # BGR per class


class DetectionError(MasteryError):
    """Weights, a video or a webcam that cannot be used."""


def ultralytics_yolo() -> Any:
    """The ``ultralytics.YOLO`` class, imported offline with its integrations off (in memory only)."""
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ.setdefault("YOLO_VERBOSE", "False")  # mastery reports progress itself; set True for ultralytics' bars
    from mastery.core.errors import require

    ultralytics = require("ultralytics", "vision")
    from ultralytics.utils import SETTINGS

    for key in _INTEGRATIONS:
        dict.__setitem__(SETTINGS, key, False)  # bypasses SettingsManager's save: the user's file is untouched
    return ultralytics.YOLO


def ultralytics_device(device: str) -> str:
    """mastery's 'auto' | 'cpu' | 'cuda' -> ultralytics' 'cpu' | '0'."""
    from mastery.core.runtime import torch_device

    return "0" if torch_device(device) == "cuda" else "cpu"


@dataclass
class TrainResult:
    weights: Path  # best.pt
    run_dir: Path
    map50: float  # ultralytics' validation of best.pt on the val split
    map50_95: float
    precision: float
    recall: float
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch
    epoch_seconds: list[float] = field(default_factory=list)


def train_yolo(data_yaml: Path, run_dir: Path, *, model_cfg: str = "yolov8n.yaml", imgsz: int = 320,
               epochs: int = 10, batch: int = 16, seed: int = 0, device: str = "auto", amp: bool = False,
               progress: Progress | None = None, **overrides: Any) -> TrainResult:
    """Train a detector from scratch on a YOLO dataset; everything ultralytics writes goes under ``run_dir``."""
    import torch

    YOLO = ultralytics_yolo()
    progress = progress or NullProgress()
    run_dir = Path(run_dir).resolve()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    model = YOLO(model_cfg)
    history: list[dict[str, float]] = []
    times: list[float] = []
    progress.stage("train", epochs)
    state = {"t0": time.perf_counter(), "in_epoch": False}

    def on_epoch_start(trainer: Any) -> None:
        state["in_epoch"], state["t0"] = True, time.perf_counter()

    def on_epoch_end(trainer: Any) -> None:  # after validation: trainer.metrics holds val numbers
        if not state["in_epoch"]:
            return  # the final re-validation of best.pt fires this callback again, outside any epoch
        state["in_epoch"] = False
        row = {"epoch": trainer.epoch + 1}
        row.update({k.replace("metrics/", "").replace("(B)", ""): float(v) for k, v in trainer.metrics.items()})
        row.update({f"train_{k.split('/')[-1]}": float(v)
                    for k, v in trainer.label_loss_items(trainer.tloss, prefix="train").items()})
        history.append(row)
        times.append(time.perf_counter() - state["t0"])
        state["t0"] = time.perf_counter()
        progress.epoch(trainer.epoch + 1, {k: v for k, v in row.items() if k != "epoch"})
        progress.step(1)

    model.add_callback("on_train_epoch_start", on_epoch_start)
    model.add_callback("on_fit_epoch_end", on_epoch_end)
    args = {"data": str(data_yaml), "imgsz": imgsz, "epochs": epochs, "batch": batch, "seed": seed,
            "deterministic": True, "workers": 0, "device": ultralytics_device(device), "amp": amp,
            "plots": False, "project": str(run_dir), "name": "train", "exist_ok": True, "verbose": False,
            "nbs": batch, **overrides}
    try:
        results = model.train(**args)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)  # ultralytics switches it on globally
    best = Path(model.trainer.best)
    if not best.is_file():
        best = Path(model.trainer.last)
    box = results.box
    return TrainResult(weights=best, run_dir=Path(model.trainer.save_dir), map50=float(box.map50),
                       map50_95=float(box.map), precision=float(box.mp), recall=float(box.mr),
                       history=history, epoch_seconds=times)


def load_detector(weights: Path) -> Any:
    """An ultralytics model from a ``.pt`` checkpoint (ultralytics unpickles it: load only your own files)."""
    weights = Path(weights)
    if not weights.is_file():
        raise DetectionError(f"weights file not found: {weights}")
    YOLO = ultralytics_yolo()
    try:
        return YOLO(str(weights))
    except Exception as exc:  # ultralytics raises many kinds for a bad file
        raise DetectionError(f"could not load YOLO weights from {weights}: {exc.__class__.__name__}: {exc}") from exc


@dataclass
class Prediction:
    boxes: np.ndarray  # (K, 4) xyxy pixels
    scores: np.ndarray  # (K,)
    labels: np.ndarray  # (K,) int64


def _to_prediction(result: Any) -> Prediction:
    b = result.boxes
    return Prediction(b.xyxy.cpu().numpy().astype(np.float64), b.conf.cpu().numpy().astype(np.float64),
                      b.cls.cpu().numpy().astype(np.int64))


def predict(model: Any, images: Iterable[Path | np.ndarray], *, imgsz: int, device: str = "auto",
            conf: float = 0.001, iou: float = 0.7, max_det: int = 300) -> list[Prediction]:
    """Predictions for image files or BGR arrays; the defaults are ultralytics' validation settings."""
    dev = ultralytics_device(device)
    out = []
    for image in images:
        src = str(image) if isinstance(image, Path) else image
        result = model.predict(src, imgsz=imgsz, conf=conf, iou=iou, max_det=max_det, device=dev, verbose=False)[0]
        out.append(_to_prediction(result))
    return out


def draw_detections(frame: np.ndarray, pred: Prediction, names: dict[int, str] | list[str]) -> np.ndarray:
    """Boxes and 'name score' tags drawn on a copy of a BGR (H, W, 3) frame."""
    import cv2

    img = frame.copy()
    thick = max(1, round(min(img.shape[:2]) / 300))
    for (x1, y1, x2, y2), score, cls in zip(pred.boxes, pred.scores, pred.labels, strict=True):
        colour = _COLOURS[int(cls) % len(_COLOURS)]
        p1, p2 = (int(x1), int(y1)), (int(x2), int(y2))
        cv2.rectangle(img, p1, p2, colour, thick)
        cv2.putText(img, f"{names[int(cls)]} {score:.2f}", (p1[0], max(10, p1[1] - 3)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.35 * thick, colour, thick, cv2.LINE_AA)
    return img


def open_source(source: str) -> tuple[Any, str]:
    """A cv2.VideoCapture for a video file or a webcam index ('0'); DetectionError if it gives no frame."""
    import cv2

    # OpenCV and FFmpeg explain a failed open over several stderr lines; the DetectionError below says it in one.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        return _open(cv2, source)
    finally:
        cv2.utils.logging.setLogLevel(level)


def _open(cv2: Any, source: str) -> tuple[Any, str]:
    if source.isdigit():
        cap = cv2.VideoCapture(int(source))
        what = f"webcam {source}"
        if not cap.isOpened():
            cap.release()
            raise DetectionError(f"{what} is not available (no camera at index {source})")
    else:
        path = Path(source)
        what = f"video {path}"
        if not path.is_file():
            raise DetectionError(f"video file not found: {path}")
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            cap.release()
            raise DetectionError(f"cannot read {what}: OpenCV could not open it as a video")
    return cap, what


def detect_video(weights: Path, source: str, out: Path, *, imgsz: int = 320, conf: float = 0.25,
                 device: str = "auto", max_frames: int | None = None) -> dict[str, float]:
    """Run a detector over a video file or webcam and write an annotated mp4; returns frame and box counts."""
    import cv2

    model = load_detector(weights)  # first: a missing weights file is reported before the camera opens
    cap, what = open_source(source)
    ok, frame = cap.read()
    if not ok:
        cap.release()
        raise DetectionError(f"cannot read {what}: no frames could be decoded")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    height, width = frame.shape[:2]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        cap.release()
        raise DetectionError(f"cannot write {out}: OpenCV has no mp4v encoder here")
    names = model.names
    frames = boxes = 0
    start = time.perf_counter()
    try:
        while ok and (max_frames is None or frames < max_frames):
            pred = predict(model, [frame], imgsz=imgsz, device=device, conf=conf, iou=0.7, max_det=300)[0]
            writer.write(draw_detections(frame, pred, names))
            frames += 1
            boxes += len(pred.labels)
            ok, frame = cap.read()
    except KeyboardInterrupt:  # a webcam runs until Ctrl+C; keep what was written
        log.info("stopped after %d frames", frames)
    finally:
        cap.release()
        writer.release()
    seconds = time.perf_counter() - start
    log.info("%s: %d frames, %d boxes -> %s", what, frames, boxes, out)
    return {"frames": frames, "boxes": boxes, "seconds": seconds, "fps": frames / seconds if seconds else 0.0,
            "width": width, "height": height}
