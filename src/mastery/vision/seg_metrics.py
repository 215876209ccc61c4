"""Segmentation metrics: Dice and IoU on binary masks, and the DSB2018 mean average precision on instances.

Masks are NumPy arrays (H, W): binary masks are bool (or 0/1), instance masks are integer labels with
0 = background and each nucleus a distinct positive label (labels need not be contiguous).

The Data Science Bowl 2018 score of one image: for each IoU threshold t in 0.50, 0.55, ..., 0.95,
a predicted object matches a true object when their IoU is > t (at t >= 0.5 a match is necessarily
one-to-one), and ``precision(t) = TP / (TP + FP + FN)``; the image's score is the mean over the ten
thresholds, and a data set's score is the mean over its images.
"""

from __future__ import annotations

import numpy as np

from mastery.nn.dense import ShapeError

DSB_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.5 ... 0.95


def _binary_pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ShapeError(f"prediction and target masks differ in shape: {pred.shape} vs {target.shape}")
    return pred.astype(bool), target.astype(bool)


def confusion_counts(pred: np.ndarray, target: np.ndarray) -> tuple[int, int, int]:
    """(TP, FP, FN) pixel counts of two binary masks of any (equal) shape."""
    p, t = _binary_pair(pred, target)
    return int(np.sum(p & t)), int(np.sum(p & ~t)), int(np.sum(~p & t))


def dice(pred: np.ndarray, target: np.ndarray, empty: float = 1.0) -> float:
    """2|P ∩ T| / (|P| + |T|) over all pixels given (pooled); ``empty`` when both masks are empty."""
    tp, fp, fn = confusion_counts(pred, target)
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom else empty


def iou(pred: np.ndarray, target: np.ndarray, empty: float = 1.0) -> float:
    """|P ∩ T| / |P ∪ T| (the Jaccard index) over all pixels given; ``empty`` when both are empty."""
    tp, fp, fn = confusion_counts(pred, target)
    denom = tp + fp + fn
    return tp / denom if denom else empty


def instances_from_mask(mask: np.ndarray, grow: int = 0) -> np.ndarray:
    """Connected components (4-connectivity) of a binary mask -> int32 labels 1..K (H, W).

    ``grow`` > 0 then dilates every label by that many pixels into unlabelled pixels (neighbours'
    largest label wins a tie), undoing a border that was cut off to keep touching nuclei apart.
    """
    from scipy import ndimage

    labels, _ = ndimage.label(np.asarray(mask, dtype=bool))  # (H, W) int32
    for _ in range(grow):
        grown = ndimage.grey_dilation(labels, size=(3, 3))  # (H, W): the largest label in each 3x3 neighbourhood
        labels = np.where(labels == 0, grown, labels)
    return labels.astype(np.int32)


def interior_target(instances: np.ndarray) -> np.ndarray:
    """Binary training target: every instance minus its 1-pixel inner boundary, so touching nuclei
    become separate connected components; (H, W) int -> (H, W) bool."""
    from scipy import ndimage

    inst = np.asarray(instances)
    hi = ndimage.maximum_filter(inst, size=3, mode="nearest")  # (H, W)
    lo = ndimage.minimum_filter(inst, size=3, mode="nearest")
    return (inst > 0) & (hi == inst) & (lo == inst)


def contact_zone(instances: np.ndarray, size: int = 5) -> np.ndarray:
    """Boolean (H, W): pixels whose size x size neighbourhood holds two or more different nuclei
    (the thin gaps a network must get right to keep touching nuclei apart)."""
    from scipy import ndimage

    inst = np.asarray(instances, dtype=np.int64)
    big = int(inst.max()) + 1  # stands in for background in the minimum (extreme sentinels overflow in scipy)
    hi = ndimage.maximum_filter(inst, size=size, mode="nearest")  # largest label around each pixel
    lo = ndimage.minimum_filter(np.where(inst > 0, inst, big), size=size, mode="nearest")  # smallest nucleus label
    return (hi > 0) & (lo != big) & (hi != lo)


def iou_matrix(true_instances: np.ndarray, pred_instances: np.ndarray) -> np.ndarray:
    """IoU of every (true object, predicted object) pair: (n_true, n_pred), from one joint histogram."""
    t, p = np.asarray(true_instances), np.asarray(pred_instances)
    if t.shape != p.shape:
        raise ShapeError(f"instance masks differ in shape: {t.shape} vs {p.shape}")
    t_ids, t_inv = np.unique(t.ravel(), return_inverse=True)  # ids sorted, 0 (background) first if present
    p_ids, p_inv = np.unique(p.ravel(), return_inverse=True)
    joint = np.bincount(t_inv * len(p_ids) + p_inv, minlength=len(t_ids) * len(p_ids))
    joint = joint.reshape(len(t_ids), len(p_ids))  # pixel counts of each (true id, pred id) pair
    area_t, area_p = joint.sum(axis=1), joint.sum(axis=0)
    keep_t, keep_p = t_ids != 0, p_ids != 0
    inter = joint[keep_t][:, keep_p]  # (n_true, n_pred)
    union = area_t[keep_t][:, None] + area_p[keep_p][None, :] - inter
    return inter / np.maximum(union, 1)


def dsb_precisions(true_instances: np.ndarray, pred_instances: np.ndarray,
                   thresholds: tuple[float, ...] = DSB_THRESHOLDS) -> dict[float, float]:
    """TP / (TP + FP + FN) at each IoU threshold for one image (1.0 when both have no objects)."""
    if min(thresholds) < 0.5:
        raise ValueError(f"DSB thresholds must be >= 0.5 for one-to-one matching, got {thresholds}")
    ious = iou_matrix(true_instances, pred_instances)  # (n_true, n_pred)
    n_true, n_pred = ious.shape
    out = {}
    for t in thresholds:
        matches = ious > t  # at t >= 0.5 each row and each column has at most one True
        tp = int(matches.sum())
        fp, fn = n_pred - tp, n_true - tp
        out[t] = tp / (tp + fp + fn) if (tp + fp + fn) else 1.0
    return out


def dsb_average_precision(true_instances: np.ndarray, pred_instances: np.ndarray,
                          thresholds: tuple[float, ...] = DSB_THRESHOLDS) -> float:
    """The DSB2018 score of one image: the mean of :func:`dsb_precisions` over the thresholds."""
    return float(np.mean(list(dsb_precisions(true_instances, pred_instances, thresholds).values())))


def dsb_map(true_list: list[np.ndarray], pred_list: list[np.ndarray]) -> float:
    """The DSB2018 score of a data set: the mean over images of each image's score."""
    if len(true_list) != len(pred_list) or not true_list:
        raise ShapeError(f"need equally many true and predicted masks (> 0), got {len(true_list)} and "
                         f"{len(pred_list)}")
    return float(np.mean([dsb_average_precision(t, p) for t, p in zip(true_list, pred_list, strict=True)]))
