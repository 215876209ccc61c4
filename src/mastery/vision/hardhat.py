"""A generated, seeded "hard hat" scene set: construction-site backgrounds with workers, with exact boxes.

Each worker is a simple figure (legs, torso with a vest, arms, a head, and a helmet or hair). The
scene is painted back to front (far, small workers first), so nearer workers and foreground
barriers occlude farther ones; an ``owner`` map records which object part owns every pixel, and each
label box is the bounding box of the pixels its object still owns in the finished image. Heads
that are mostly hidden (less than ``min_visible`` of their pixels showing) are dropped with their
worker, so no label describes an invisible object.

Classes: 0 ``helmet`` (a head wearing a hard hat; the box covers hat and face), 1 ``head`` (a bare
head), 2 ``person`` (the whole visible worker).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CLASS_NAMES = ("helmet", "head", "person")
HELMET, HEAD, PERSON = 0, 1, 2

_HELMET_COLOURS = [(255, 215, 0), (255, 255, 255), (255, 120, 0), (220, 30, 30), (30, 90, 220), (40, 180, 60)]
_VEST_COLOURS = [(255, 110, 0), (210, 255, 0), (255, 200, 0), (60, 200, 90), (90, 90, 200), (160, 160, 160)]
_SKIN = [(255, 219, 172), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 58, 30)]
_HAIR = [(20, 20, 20), (70, 45, 25), (120, 80, 40), (200, 170, 110), (130, 130, 130)]
_TROUSERS = [(40, 50, 90), (60, 60, 60), (90, 70, 50), (30, 30, 30)]


@dataclass
class Scene:
    """One image (H, W, 3) uint8 RGB with its boxes (N, 4) xyxy pixels and labels (N,) int64."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Sky, ground, and site clutter (containers, scaffolding, piles) -> (H, W, 3) uint8 RGB."""
    import cv2

    horizon = int(h * rng.uniform(0.25, 0.55))
    sky_top, sky_bottom = np.array(rng.integers(90, 200, 3)), np.array([200, 215, 230]) + rng.integers(-20, 20, 3)
    t = np.linspace(0, 1, horizon)[:, None, None]  # (horizon, 1, 1)
    img = np.zeros((h, w, 3), np.float64)
    img[:horizon] = sky_top * (1 - t) + sky_bottom * t
    ground = np.array(rng.choice([(150, 120, 90), (120, 110, 100), (170, 150, 110), (100, 95, 90)]))
    img[horizon:] = ground + rng.normal(0, 12, (h - horizon, w, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(1, 5)):  # containers and site huts standing on the horizon
        cw, ch = int(rng.uniform(0.1, 0.4) * w), int(rng.uniform(0.08, 0.3) * h)
        x0 = int(rng.integers(-cw // 2, w))
        colour = tuple(int(v) for v in rng.integers(40, 230, 3))
        cv2.rectangle(img, (x0, horizon - ch), (x0 + cw, horizon + ch // 4), colour, -1)
        for k in range(1, 6):  # corrugation lines
            xk = x0 + k * cw // 6
            cv2.line(img, (xk, horizon - ch), (xk, horizon + ch // 4), tuple(max(0, v - 40) for v in colour), 1)
    if rng.random() < 0.6:  # scaffolding: a grid of grey poles
        x0, x1 = sorted(int(v) for v in rng.integers(0, w, 2))
        top = int(rng.uniform(0.05, 0.3) * h)
        for x in range(x0, x1 + 1, max(8, w // 12)):
            cv2.line(img, (x, top), (x, horizon + h // 10), (110, 110, 115), max(1, w // 160))
        for y in range(top, horizon, max(8, h // 10)):
            cv2.line(img, (x0, y), (x1, y), (110, 110, 115), max(1, w // 160))
    for _ in range(rng.integers(0, 4)):  # gravel piles and puddles on the ground
        centre = (int(rng.integers(0, w)), int(rng.integers(horizon, h)))
        axes = (int(rng.uniform(0.05, 0.15) * w), int(rng.uniform(0.02, 0.06) * h))
        cv2.ellipse(img, centre, axes, 0, 0, 360, tuple(int(v) for v in rng.integers(60, 200, 3)), -1)
    return img


def _paint(img: np.ndarray, owner: np.ndarray, mask: np.ndarray, colour: tuple[int, ...], part: int) -> None:
    """Paint ``mask`` (H, W) bool in ``colour`` and hand its pixels to object part ``part`` (0 = nobody)."""
    img[mask] = colour
    owner[mask] = part


def _worker_masks(h: int, w: int, cx: int, feet: int, height: int, rng: np.random.Generator,
                  helmet: bool) -> dict[str, np.ndarray]:
    """Boolean (H, W) masks of one worker's parts: 'body' (legs, torso, arms), 'head', 'hat' (hard hat or hair)."""
    import cv2

    def blank() -> np.ndarray:
        return np.zeros((h, w), np.uint8)

    head_r = max(2, int(height * rng.uniform(0.075, 0.09)))
    torso_h, leg_h = int(height * 0.38), int(height * 0.42)
    torso_w = max(3, int(height * rng.uniform(0.22, 0.3)))
    hip, shoulder = feet - leg_h, feet - leg_h - torso_h
    lean = int(rng.integers(-head_r // 2, head_r // 2 + 1))
    body = blank()
    leg_w = max(1, torso_w // 3)
    stride = int(rng.integers(0, max(1, torso_w // 2)))
    cv2.line(body, (cx - torso_w // 4, hip), (cx - torso_w // 4 - stride, feet), 1, leg_w)
    cv2.line(body, (cx + torso_w // 4, hip), (cx + torso_w // 4 + stride, feet), 1, leg_w)
    cv2.rectangle(body, (cx - torso_w // 2, shoulder), (cx + torso_w // 2, hip), 1, -1)
    arm_w = max(1, torso_w // 4)
    for side in (-1, 1):
        hand = (cx + side * (torso_w // 2 + int(rng.integers(0, torso_w))), hip + int(rng.integers(-torso_h // 2, 4)))
        cv2.line(body, (cx + side * torso_w // 2, shoulder + arm_w), hand, 1, arm_w)
    head_c = (cx + lean, shoulder - head_r + max(1, head_r // 4))
    head = blank()
    cv2.circle(head, head_c, head_r, 1, -1)
    hat = blank()
    if helmet:  # a dome over the top half of the head plus a brim
        cv2.ellipse(hat, (head_c[0], head_c[1] - head_r // 4), (int(head_r * 1.1), int(head_r * 1.05)), 0, 180, 360, 1,
                    -1)
        brim_y = head_c[1] - head_r // 4
        cv2.rectangle(hat, (head_c[0] - int(head_r * 1.35), brim_y - max(1, head_r // 6)),
                      (head_c[0] + int(head_r * 1.35), brim_y + max(1, head_r // 8)), 1, -1)
    elif rng.random() < 0.8:  # hair on a bare head
        cv2.ellipse(hat, (head_c[0], head_c[1] - head_r // 3), (head_r, int(head_r * 0.75)), 0, 180, 360, 1, -1)
    return {"body": body.astype(bool), "head": head.astype(bool), "hat": hat.astype(bool)}


def make_scene(rng: np.random.Generator, size: int = 320, max_workers: int = 6, helmet_rate: float = 0.6,
               min_visible: float = 0.5) -> Scene:
    """One (size, size) scene; sizes, positions, colours and occlusion all come from ``rng``."""
    import cv2

    h = w = size
    img = _background(rng, h, w)
    owner = np.zeros((h, w), np.int32)  # 3k+1 = body, 3k+2 = head, 3k+3 = hat of worker k
    n = int(rng.integers(1, max_workers + 1))
    # Far workers stand higher in the frame and are smaller; paint far -> near.
    feet = np.sort(rng.uniform(0.45, 1.0, n)) * h
    helmets = rng.random(n) < helmet_rate
    drawn_head = np.zeros(n)  # pixels of face + hat as drawn, before anything in front covers them
    for k in range(n):
        depth = (feet[k] / h - 0.45) / 0.55  # 0 far .. 1 near
        height = int(size * rng.uniform(0.22, 0.34) * (0.6 + 0.9 * depth))
        cx = int(rng.integers(0, w))
        masks = _worker_masks(h, w, cx, int(min(feet[k], h + height * 0.1)), height, rng, bool(helmets[k]))
        drawn_head[k] = np.count_nonzero(masks["head"] | masks["hat"])
        _paint(img, owner, masks["body"], tuple(int(v) for v in rng.choice(_VEST_COLOURS)), 3 * k + 1)
        # Trousers over the lower body, reflective stripe across the vest.
        legs = masks["body"] & (np.arange(h)[:, None] > feet[k] - height * 0.42)
        img[legs] = _TROUSERS[int(rng.integers(len(_TROUSERS)))]
        _paint(img, owner, masks["head"], _SKIN[int(rng.integers(len(_SKIN)))], 3 * k + 2)
        hat_colour = _HELMET_COLOURS[int(rng.integers(len(_HELMET_COLOURS)))] if helmets[k] else \
            _HAIR[int(rng.integers(len(_HAIR)))]
        _paint(img, owner, masks["hat"], hat_colour, 3 * k + 3)
    for _ in range(int(rng.integers(0, 3))):  # foreground barriers and pallets hide legs and bodies
        bw, bh = int(rng.uniform(0.1, 0.35) * w), int(rng.uniform(0.05, 0.15) * h)
        x0, y0 = int(rng.integers(-bw // 3, w)), int(rng.integers(int(0.6 * h), h))
        m = np.zeros((h, w), np.uint8)
        cv2.rectangle(m, (x0, y0), (x0 + bw, y0 + bh), 1, -1)
        stripes = rng.choice([(230, 40, 40), (250, 200, 0), (140, 100, 60)])
        _paint(img, owner, m.astype(bool), tuple(int(v) for v in stripes), 0)
        for xs in range(x0, x0 + bw, max(4, bw // 6)):  # hazard stripes
            cv2.line(img, (xs, y0), (xs + bh // 2, y0 + bh), (255, 255, 255), max(1, bh // 6))

    boxes, labels = [], []
    for k in range(n):
        head_region = (owner == 3 * k + 2) | (owner == 3 * k + 3)  # face plus hard hat (or hair)
        if drawn_head[k] == 0 or np.count_nonzero(head_region) < max(1.0, min_visible * drawn_head[k]):
            continue  # a mostly hidden head: no label for this worker
        visible_body = (owner >= 3 * k + 1) & (owner <= 3 * k + 3)
        for mask, cls in ((head_region, HELMET if helmets[k] else HEAD), (visible_body, PERSON)):
            ys, xs = np.nonzero(mask)
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1  # pixel edges: [x1, x2) x [y1, y2)
            if x2 - x1 >= 2 and y2 - y1 >= 2:
                boxes.append((x1, y1, x2, y2))
                labels.append(cls)
    # Sensor noise and a slight blur; boxes stay exact to within the blur.
    noisy = img.astype(np.float64) + rng.normal(0, 6, img.shape)
    img = cv2.GaussianBlur(np.clip(noisy, 0, 255).astype(np.uint8), (3, 3), 0)
    return Scene(img, np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(labels, np.int64))


def make_scenes(n: int, seed: int, size: int = 320, **kwargs: float) -> list[Scene]:
    """``n`` scenes from one seeded generator: the same seed gives the same pixels and boxes."""
    rng = np.random.default_rng(seed)
    return [make_scene(rng, size, **kwargs) for _ in range(n)]  # type: ignore[arg-type]


def write_hardhat_dataset(root: Path, n_train: int, n_val: int, seed: int, size: int = 320) -> Path:
    """Generate scenes and write them as a YOLO dataset folder; returns the data.yaml path."""
    from mastery.vision.annotations import LabeledImage, write_yolo_dataset

    root = Path(root)
    splits = {"train": make_scenes(n_train, seed, size), "val": make_scenes(n_val, seed + 10_000, size)}
    items = {split: [LabeledImage(f"{split}_{i:05d}.png", s.image, s.boxes, s.labels) for i, s in enumerate(scenes)]
             for split, scenes in splits.items()}
    log.info("hardhat: %d train + %d val scenes at %d px -> %s", n_train, n_val, size, root)
    return write_yolo_dataset(root, items, list(CLASS_NAMES))
