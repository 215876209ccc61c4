"""Box geometry and detection metrics from scratch in NumPy: IoU, NMS and COCO-style mAP.

Boxes are ``(N, 4)`` float arrays in ``xyxy`` pixel coordinates (x1, y1, x2, y2), x2 > x1, y2 > y1.
The mAP follows pycocotools' ``COCOeval`` for bounding boxes with the "all" area range: per class
and IoU threshold, detections (at most ``max_dets`` per image and class, highest scores first) are
greedily matched to the unmatched ground truth with the highest IoU >= threshold; precision is made
monotone and sampled at 101 recall points (0, 0.01, ..., 1); classes without ground truth are left
out of the mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # COCO: 0.50, 0.55, ..., 0.95
RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCO's 101-point interpolation


def as_boxes(boxes: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Any (N, 4)-like input -> float64 (N, 4); an empty input -> (0, 4)."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4))
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {arr.shape}")
    return arr


def box_area(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) xyxy -> (N,) areas (0 for degenerate boxes)."""
    b = as_boxes(boxes)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU: (N, 4) x (M, 4) -> (N, M); 0 where the union is empty."""
    a, b = as_boxes(a), as_boxes(b)
    # Intersection corners by broadcasting (N, 1, 2) against (1, M, 2) -> (N, M, 2).
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(bottom_right - top_left, 0, None)  # (N, M, 2)
    inter = wh[..., 0] * wh[..., 1]  # (N, M)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression, like ``torchvision.ops.nms``.

    Visits boxes by decreasing score; keeps a box and drops every remaining box whose IoU with it is
    greater than ``iou_threshold``. Returns the kept indices (int64, decreasing score).
    """
    boxes = as_boxes(boxes)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        ious = box_iou(boxes[i:i + 1], boxes[order[1:]])[0]  # (len(order) - 1,)
        order = order[1:][ious <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float) -> np.ndarray:
    """NMS within each class only: boxes of different labels never suppress each other."""
    boxes = as_boxes(boxes)
    labels = np.asarray(labels).reshape(-1)
    keep = [np.flatnonzero(labels == c)[nms(boxes[labels == c], np.asarray(scores)[labels == c], iou_threshold)]
            for c in np.unique(labels)]
    if not keep:
        return np.zeros(0, dtype=np.int64)
    merged = np.concatenate(keep)
    return merged[np.argsort(-np.asarray(scores)[merged], kind="stable")]


@dataclass
class ImageDetections:
    """One image: predictions (boxes (K, 4), scores (K,), labels (K,)) and ground truth (boxes (G, 4), labels (G,))."""

    pred_boxes: np.ndarray
    pred_scores: np.ndarray
    pred_labels: np.ndarray
    gt_boxes: np.ndarray
    gt_labels: np.ndarray

    @classmethod
    def make(cls, pred_boxes, pred_scores, pred_labels, gt_boxes, gt_labels) -> ImageDetections:  # type: ignore[no-untyped-def]
        return cls(as_boxes(pred_boxes), np.asarray(pred_scores, np.float64).reshape(-1),
                   np.asarray(pred_labels, np.int64).reshape(-1), as_boxes(gt_boxes),
                   np.asarray(gt_labels, np.int64).reshape(-1))


@dataclass
class DetectionMetrics:
    """COCO-style results. ``precision`` is (T, R, K): IoU thresholds x 101 recall points x classes (NaN = no GT)."""

    map50: float
    map50_95: float
    map75: float
    classes: list[int]
    ap50_per_class: dict[int, float]
    ap_per_class: dict[int, float]  # AP@[.5:.95] per class
    precision: np.ndarray
    recall_max: np.ndarray  # (T, K) highest recall reached
    n_gt: dict[int, int] = field(default_factory=dict)


def _match_image(det_boxes: np.ndarray, gt_boxes: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """COCO greedy matching for one image and class -> (T, D) bool: detection d is a true positive at threshold t.

    ``det_boxes`` must already be sorted by decreasing score.
    """
    n_t, n_d, n_g = len(thresholds), len(det_boxes), len(gt_boxes)
    tp = np.zeros((n_t, n_d), dtype=bool)
    if n_d == 0 or n_g == 0:
        return tp
    ious = box_iou(det_boxes, gt_boxes)  # (D, G)
    for ti, t in enumerate(thresholds):
        taken = np.zeros(n_g, dtype=bool)
        for d in range(n_d):
            # COCO: the best still-unmatched GT with IoU >= t (ties go to the later GT, as in COCOeval).
            best, best_iou = -1, min(float(t), 1 - 1e-10)
            for g in range(n_g):
                if taken[g] or ious[d, g] < best_iou:
                    continue
                best, best_iou = g, ious[d, g]
            if best >= 0:
                taken[best] = True
                tp[ti, d] = True
    return tp


def _average_precision(tp: np.ndarray, scores: np.ndarray, n_gt: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, D) matches and (D,) scores of one class over all images -> (T, 101) precision, (T,) max recall."""
    order = np.argsort(-scores, kind="mergesort")  # COCOeval sorts the pooled detections this way
    tp = tp[:, order]
    tps = np.cumsum(tp, axis=1, dtype=np.float64)  # (T, D)
    fps = np.cumsum(~tp, axis=1, dtype=np.float64)
    precision_at = np.zeros((tp.shape[0], len(RECALL_POINTS)))
    recall_max = np.zeros(tp.shape[0])
    for t in range(tp.shape[0]):
        rc = tps[t] / n_gt
        pr = tps[t] / (tps[t] + fps[t] + np.spacing(1))
        if len(pr):
            recall_max[t] = rc[-1]
            pr = np.maximum.accumulate(pr[::-1])[::-1]  # the precision envelope: non-increasing in recall
            idx = np.searchsorted(rc, RECALL_POINTS, side="left")
            valid = idx < len(pr)
            precision_at[t, valid] = pr[idx[valid]]
    return precision_at, recall_max


def mean_average_precision(images: Sequence[ImageDetections], max_dets: int = 100,
                           thresholds: np.ndarray = IOU_THRESHOLDS) -> DetectionMetrics:
    """COCO mAP over ``images``; classes are those with at least one ground-truth box."""
    classes = sorted({int(c) for im in images for c in im.gt_labels})
    n_t = len(thresholds)
    precision = np.full((n_t, len(RECALL_POINTS), len(classes)), np.nan)
    recall_max = np.full((n_t, len(classes)), np.nan)
    n_gt: dict[int, int] = {}
    for k, c in enumerate(classes):
        tps, scores = [], []
        n_gt[c] = 0
        for im in images:
            gt = im.gt_boxes[im.gt_labels == c]
            n_gt[c] += len(gt)
            sel = np.flatnonzero(im.pred_labels == c)
            sel = sel[np.argsort(-im.pred_scores[sel], kind="mergesort")][:max_dets]  # per image and class
            tps.append(_match_image(im.pred_boxes[sel], gt, thresholds))
            scores.append(im.pred_scores[sel])
        precision[:, :, k], recall_max[:, k] = _average_precision(
            np.concatenate(tps, axis=1), np.concatenate(scores), n_gt[c])
    ap = precision.mean(axis=1) if classes else np.zeros((n_t, 0))  # (T, K)
    i50 = int(np.argmin(np.abs(thresholds - 0.5)))
    i75 = int(np.argmin(np.abs(thresholds - 0.75)))

    def mean(x: np.ndarray) -> float:
        return float(np.mean(x)) if x.size else 0.0

    return DetectionMetrics(
        map50=mean(ap[i50]), map50_95=mean(ap), map75=mean(ap[i75]), classes=classes,
        ap50_per_class={c: float(ap[i50, k]) for k, c in enumerate(classes)},
        ap_per_class={c: float(ap[:, k].mean()) for k, c in enumerate(classes)},
        precision=precision, recall_max=recall_max, n_gt=n_gt,
    )


def xywhn_to_xyxy(xywhn: np.ndarray, width: int, height: int) -> np.ndarray:
    """YOLO (N, 4) normalised centre/size -> (N, 4) pixel xyxy."""
    b = np.asarray(xywhn, dtype=np.float64).reshape(-1, 4)
    cx, cy, w, h = b[:, 0] * width, b[:, 1] * height, b[:, 2] * width, b[:, 3] * height
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def xyxy_to_xywhn(xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    """(N, 4) pixel xyxy -> YOLO (N, 4) normalised centre/size."""
    b = as_boxes(xyxy)
    return np.stack([(b[:, 0] + b[:, 2]) / 2 / width, (b[:, 1] + b[:, 3]) / 2 / height,
                     (b[:, 2] - b[:, 0]) / width, (b[:, 3] - b[:, 1]) / height], axis=1)


def reference_map(images: Sequence[ImageDetections]) -> dict[str, float]:
    """The same mAP from torchmetrics' MeanAveragePrecision on the pycocotools backend (the reference)."""
    import contextlib
    import io

    import torch
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
    preds = [{"boxes": torch.as_tensor(im.pred_boxes, dtype=torch.float64),
              "scores": torch.as_tensor(im.pred_scores, dtype=torch.float64),
              "labels": torch.as_tensor(im.pred_labels, dtype=torch.int64)} for im in images]
    targets = [{"boxes": torch.as_tensor(im.gt_boxes, dtype=torch.float64),
                "labels": torch.as_tensor(im.gt_labels, dtype=torch.int64)} for im in images]
    metric.update(preds, targets)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        out = metric.compute()
    return {"map50": float(out["map_50"]), "map50_95": float(out["map"]), "map75": float(out["map_75"])}
