"""Import box annotations from the usual labelling tools into a validated YOLO dataset folder.

Supported exports:

- ``coco``: a COCO JSON file (``images``, ``annotations`` with ``bbox = [x, y, w, h]`` in pixels,
  ``categories``), as written by CVAT, Label Studio, Roboflow or makesense.ai;
- ``labelstudio``: Label Studio's JSON export of ``rectanglelabels`` results (``x, y, width,
  height`` in percent of the image);
- ``yolo``: a CVAT "YOLO 1.1" export (``obj.names`` + ``obj_train_data/*.txt``) or a Label Studio
  "YOLO" export (``classes.txt`` + ``images/`` + ``labels/``): one ``class cx cy w h`` line per box,
  normalised to [0, 1].

The output is ``images/{train,val}``, ``labels/{train,val}`` and ``data.yaml``. Every box is
checked (inside the image, within half a pixel, positive size, known class) and every label file
must have its image; a failure raises :class:`AnnotationError` naming the file and the line or
annotation.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mastery.core.errors import MasteryError

log = logging.getLogger(__name__)

FORMATS = ("coco", "labelstudio", "yolo")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
_NOT_LABELS = {"classes.txt", "obj.names", "train.txt", "valid.txt", "val.txt", "test.txt", "obj.data"}
TOLERANCE_PX = 0.5  # exporters round; boxes up to half a pixel outside the image are clipped, beyond that an error


class AnnotationError(MasteryError):
    """An annotation file is malformed or describes a box that cannot be right."""


@dataclass
class LabeledImage:
    """One image and its boxes: ``image`` is an (H, W, 3) uint8 RGB array or the path of a file to copy."""

    name: str
    image: np.ndarray | Path
    boxes: np.ndarray  # (N, 4) xyxy pixels
    labels: np.ndarray  # (N,) int class ids

    def size(self) -> tuple[int, int]:
        """(width, height)."""
        if isinstance(self.image, np.ndarray):
            return int(self.image.shape[1]), int(self.image.shape[0])
        return image_size(self.image)


@dataclass
class ImportedDataset:
    names: list[str]
    items: list[LabeledImage]

    @property
    def n_boxes(self) -> int:
        return sum(len(it.labels) for it in self.items)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header; AnnotationError if it is not a readable image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except (OSError, UnidentifiedImageError) as exc:
        raise AnnotationError(f"{path}: not a readable image ({exc.__class__.__name__})") from exc


def check_box(x1: float, y1: float, x2: float, y2: float, width: int, height: int, where: str) -> list[float]:
    """Validate one xyxy pixel box against a (width x height) image; returns it clipped to the image."""
    values = (x1, y1, x2, y2)
    if not all(np.isfinite(v) for v in values):
        raise AnnotationError(f"{where}: box {values} has a non-finite coordinate")
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        raise AnnotationError(f"{where}: box has non-positive size ({x2 - x1:g} x {y2 - y1:g} px)")
    t = TOLERANCE_PX
    if x1 < -t or y1 < -t or x2 > width + t or y2 > height + t:
        raise AnnotationError(f"{where}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) lies outside the "
                              f"{width}x{height} image")
    return [max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)]


def _read_json(path: Path) -> object:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise AnnotationError(f"{path}: no such file") from exc
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from exc


def _find_image(name: str, folders: list[Path], where: str) -> Path:
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
        if (folder / Path(name).name).is_file():
            return folder / Path(name).name
    looked = ", ".join(str(f) for f in folders)
    raise AnnotationError(f"{where}: image {name!r} not found (looked in {looked})")


# -- COCO ------------------------------------------------------------------------------------
def import_coco(json_path: Path, images_dir: Path | None = None) -> ImportedDataset:
    json_path = Path(json_path)
    data = _read_json(json_path)
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= set(data):
        raise AnnotationError(f"{json_path}: not a COCO file (needs 'images', 'annotations' and 'categories')")
    cats = sorted(data["categories"], key=lambda c: c["id"])
    cat_index = {c["id"]: i for i, c in enumerate(cats)}  # COCO ids (often 1-based, gappy) -> 0..K-1
    folders = [Path(images_dir)] if images_dir else [json_path.parent / "images", json_path.parent]
    images: dict[int, dict] = {}
    for k, im in enumerate(data["images"]):
        where = f"{json_path}: images[{k}] (id {im.get('id')})"
        path = _find_image(str(im["file_name"]), folders, where)
        size = image_size(path)
        if "width" in im and (int(im["width"]), int(im["height"])) != size:
            raise AnnotationError(f"{where}: declares {im['width']}x{im['height']} but {path} is "
                                  f"{size[0]}x{size[1]}")
        images[im["id"]] = {"path": path, "size": size, "boxes": [], "labels": []}
    for k, ann in enumerate(data["annotations"]):
        where = f"{json_path}: annotations[{k}] (id {ann.get('id')})"
        if ann.get("image_id") not in images:
            raise AnnotationError(f"{where}: unknown image_id {ann.get('image_id')!r}")
        if ann.get("category_id") not in cat_index:
            raise AnnotationError(f"{where}: unknown category_id {ann.get('category_id')!r}")
        if ann.get("iscrowd", 0):
            log.warning("%s: crowd region skipped (YOLO has no crowd boxes)", where)
            continue
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise AnnotationError(f"{where}: bbox must be [x, y, width, height], got {bbox!r}")
        x, y, w, h = (float(v) for v in bbox)
        entry = images[ann["image_id"]]
        entry["boxes"].append(check_box(x, y, x + w, y + h, *entry["size"], where))
        entry["labels"].append(cat_index[ann["category_id"]])
    items = [LabeledImage(e["path"].name, e["path"], np.asarray(e["boxes"], np.float64).reshape(-1, 4),
                          np.asarray(e["labels"], np.int64)) for e in images.values()]
    return ImportedDataset([str(c["name"]) for c in cats], items)


# -- Label Studio JSON -----------------------------------------------------------------------
def _labelstudio_name(ref: str) -> str:
    """'/data/upload/3/1a2b3c4d-site.jpg' -> 'site.jpg' (Label Studio prefixes uploads with 8 hex digits)."""
    name = Path(ref.split("?d=")[-1]).name
    return re.sub(r"^[0-9a-f]{8}-", "", name)


def import_labelstudio(json_path: Path, images_dir: Path | None = None,
                       names: list[str] | None = None) -> ImportedDataset:
    json_path = Path(json_path)
    tasks = _read_json(json_path)
    if not isinstance(tasks, list):
        raise AnnotationError(f"{json_path}: a Label Studio JSON export is a list of tasks")
    folders = [Path(images_dir)] if images_dir else [json_path.parent / "images", json_path.parent]
    rows: list[tuple[Path, list[list[float]], list[str]]] = []
    for t, task in enumerate(tasks):
        where_task = f"{json_path}: task {task.get('id', t)}"
        ref = next(iter(task.get("data", {}).values()), None)
        if not isinstance(ref, str):
            raise AnnotationError(f"{where_task}: no image reference in 'data'")
        ref_name = Path(ref.split("?d=")[-1]).name
        try:
            path = _find_image(ref_name, folders, where_task)
        except AnnotationError:
            path = _find_image(_labelstudio_name(ref), folders, where_task)
        size = image_size(path)
        done = [a for a in task.get("annotations", []) if not a.get("was_cancelled")]
        boxes, labels = [], []
        for r, res in enumerate(done[0]["result"] if done else []):
            if res.get("type") != "rectanglelabels":
                continue
            where = f"{where_task}: result {res.get('id', r)}"
            v = res["value"]
            if abs(float(v.get("rotation", 0))) > 1e-6:
                raise AnnotationError(f"{where}: rotated rectangles cannot become YOLO boxes")
            w, h = int(res.get("original_width", size[0])), int(res.get("original_height", size[1]))
            if (w, h) != size:
                raise AnnotationError(f"{where}: annotated at {w}x{h} but {path} is {size[0]}x{size[1]}")
            x1, y1 = float(v["x"]) / 100 * w, float(v["y"]) / 100 * h  # percent of the image -> pixels
            x2, y2 = x1 + float(v["width"]) / 100 * w, y1 + float(v["height"]) / 100 * h
            boxes.append(check_box(x1, y1, x2, y2, w, h, where))
            labels.append(str(v["rectanglelabels"][0]))
        rows.append((path, boxes, labels))
    found = sorted({lab for _, _, labs in rows for lab in labs})
    names = list(names) if names else found
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise AnnotationError(f"{json_path}: labels {unknown} are not among the classes {names}")
    index = {n: i for i, n in enumerate(names)}
    items = [LabeledImage(p.name, p, np.asarray(b, np.float64).reshape(-1, 4),
                          np.asarray([index[x] for x in labs], np.int64)) for p, b, labs in rows]
    return ImportedDataset(names, items)


# -- YOLO text exports -----------------------------------------------------------------------
def read_class_names(folder: Path) -> list[str]:
    """Class names from obj.names / classes.txt (one per line) or a data.yaml in ``folder``."""
    for candidate in ("obj.names", "classes.txt"):
        path = folder / candidate
        if path.is_file():
            return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if (folder / "data.yaml").is_file():
        return _yaml_names(folder / "data.yaml")
    raise AnnotationError(f"{folder}: no obj.names, classes.txt or data.yaml with the class names")


def _yaml_names(path: Path) -> list[str]:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    names = data.get("names")
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names)]
    if isinstance(names, list):
        return [str(n) for n in names]
    raise AnnotationError(f"{path}: no 'names' list or mapping")


def read_yolo_labels(path: Path, n_classes: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Parse and check a YOLO label file -> (N, 4) xyxy pixel boxes, (N,) class ids."""
    boxes, labels = [], []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        where = f"{path}:{lineno}"
        if len(parts) != 5:
            raise AnnotationError(f"{where}: expected 'class cx cy w h' (5 values), got {len(parts)}")
        try:
            cls = int(parts[0])
            cx, cy, w, h = (float(v) for v in parts[1:])
        except ValueError as exc:
            raise AnnotationError(f"{where}: not numbers: {line.strip()!r}") from exc
        if not 0 <= cls < n_classes:
            raise AnnotationError(f"{where}: class id {cls} is not one of the {n_classes} classes (0..{n_classes - 1})")
        x1, y1 = (cx - w / 2) * width, (cy - h / 2) * height  # normalised centre/size -> pixel corners
        boxes.append(check_box(x1, y1, x1 + w * width, y1 + h * height, width, height, where))
        labels.append(cls)
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(labels, np.int64)


def _image_for_label(label: Path, root: Path, images_dir: Path | None) -> Path | None:
    rel = label.relative_to(root)
    folders = [label.parent]
    if "labels" in rel.parts:  # labels/train/x.txt -> images/train/x.*
        parts = list(rel.parts[:-1])
        parts[parts.index("labels")] = "images"
        folders.append(root.joinpath(*parts))
    if images_dir:
        folders.append(Path(images_dir))
    for folder in folders:
        for suffix in IMAGE_SUFFIXES:
            for candidate in (folder / f"{label.stem}{suffix}", folder / f"{label.stem}{suffix.upper()}"):
                if candidate.is_file():
                    return candidate
    return None


def import_yolo(src: Path, images_dir: Path | None = None) -> ImportedDataset:
    src = Path(src)
    if not src.is_dir():
        raise AnnotationError(f"{src}: a YOLO export is a folder (with obj.names or classes.txt)")
    names = read_class_names(src)
    items = []
    for label in sorted(p for p in src.rglob("*.txt") if p.name not in _NOT_LABELS):
        image = _image_for_label(label, src, images_dir)
        if image is None:
            raise AnnotationError(f"{label}: no matching image ({label.stem} with one of {', '.join(IMAGE_SUFFIXES)})")
        boxes, labels = read_yolo_labels(label, len(names), *image_size(image))
        items.append(LabeledImage(image.name, image, boxes, labels))
    if not items:
        raise AnnotationError(f"{src}: no label files (*.txt) found")
    return ImportedDataset(names, items)


def import_annotations(fmt: str, src: Path, images_dir: Path | None = None,
                       names: list[str] | None = None) -> ImportedDataset:
    """Import one export; ``names`` fixes the class order of a Label Studio export (default: sorted labels)."""
    if fmt == "coco":
        return import_coco(src, images_dir)
    if fmt == "labelstudio":
        return import_labelstudio(src, images_dir, names)
    if fmt == "yolo":
        return import_yolo(src, images_dir)
    raise AnnotationError(f"unknown annotation format {fmt!r}; choose from {', '.join(FORMATS)}")


# -- writing and validating a YOLO dataset ---------------------------------------------------
def split_items(items: list[LabeledImage], val_fraction: float, seed: int) -> dict[str, list[LabeledImage]]:
    """A seeded train/val split; at least one val image when there are two or more images."""
    order = np.random.default_rng(seed).permutation(len(items))
    n_val = min(len(items) - 1, max(1, round(val_fraction * len(items)))) if len(items) > 1 else 0
    return {"train": [items[i] for i in sorted(order[n_val:])], "val": [items[i] for i in sorted(order[:n_val])]}


def write_yolo_dataset(root: Path, splits: dict[str, list[LabeledImage]], names: list[str]) -> Path:
    """Write images/<split>/, labels/<split>/ and data.yaml under ``root``; returns data.yaml's path."""
    import cv2

    root = Path(root).resolve()
    for split, items in splits.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        used: set[str] = set()  # label files are named by stem: a.png and a.jpg must not share one
        for k, item in enumerate(items):
            name = item.name if Path(item.name).stem not in used else f"{k:05d}_{item.name}"
            used.add(Path(name).stem)
            width, height = item.size()
            if isinstance(item.image, np.ndarray):  # RGB -> BGR for OpenCV
                cv2.imwrite(str(root / "images" / split / name), np.ascontiguousarray(item.image[..., ::-1]))
            else:
                shutil.copyfile(item.image, root / "images" / split / name)
            lines = []
            for (x1, y1, x2, y2), cls in zip(item.boxes, item.labels, strict=True):
                if not 0 <= int(cls) < len(names):
                    raise AnnotationError(f"{item.name}: class id {cls} is not one of the {len(names)} classes")
                check_box(x1, y1, x2, y2, width, height, item.name)
                lines.append(f"{int(cls)} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
                             f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")
            (root / "labels" / split / f"{Path(name).stem}.txt").write_text("".join(f"{x}\n" for x in lines))
    yaml_lines = [f"path: {json.dumps(str(root))}"] + [f"{s}: images/{s}" for s in splits]
    yaml_lines += [f"nc: {len(names)}", "names:"] + [f"  {i}: {json.dumps(n)}" for i, n in enumerate(names)]
    (root / "data.yaml").write_text("\n".join(yaml_lines) + "\n", encoding="utf-8")
    return root / "data.yaml"


def validate_yolo_dataset(data_yaml: Path) -> dict[str, int]:
    """Check every label file of a YOLO dataset; returns counts such as ``train_images`` and ``val_boxes``."""
    data_yaml = Path(data_yaml)
    names = _yaml_names(data_yaml)
    root = data_yaml.parent
    counts: dict[str, int] = {}
    for split in ("train", "val"):
        img_dir, lab_dir = root / "images" / split, root / "labels" / split
        if not img_dir.is_dir():
            raise AnnotationError(f"{img_dir}: missing (a YOLO dataset has images/train and images/val)")
        images = {p.stem: p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        n_boxes = 0
        for label in sorted(lab_dir.glob("*.txt")) if lab_dir.is_dir() else []:
            if label.stem not in images:
                raise AnnotationError(f"{label}: no matching image in {img_dir}")
            n_boxes += len(read_yolo_labels(label, len(names), *image_size(images[label.stem]))[1])
        counts[f"{split}_images"], counts[f"{split}_boxes"] = len(images), n_boxes
    return counts


def load_yolo_split(data_yaml: Path, split: str) -> list[LabeledImage]:
    """The images (as paths) and pixel boxes of one split of a YOLO dataset, sorted by file name."""
    data_yaml = Path(data_yaml)
    names = _yaml_names(data_yaml)
    img_dir, lab_dir = data_yaml.parent / "images" / split, data_yaml.parent / "labels" / split
    items = []
    for image in sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        label = lab_dir / f"{image.stem}.txt"
        if label.is_file():
            boxes, labels = read_yolo_labels(label, len(names), *image_size(image))
        else:
            boxes, labels = np.zeros((0, 4)), np.zeros(0, np.int64)
        items.append(LabeledImage(image.name, image, boxes, labels))
    return items


# -- writing tool-style exports (for round trips and tests) ----------------------------------
def _save_image(item: LabeledImage, folder: Path) -> Path:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / item.name
    if isinstance(item.image, np.ndarray):
        cv2.imwrite(str(path), np.ascontiguousarray(item.image[..., ::-1]))  # RGB -> BGR
    else:
        shutil.copyfile(item.image, path)
    return path


def export_coco(items: list[LabeledImage], names: list[str], json_path: Path) -> Path:
    """Write ``json_path`` (COCO, 1-based ids) and the images into ``images/`` beside it."""
    json_path = Path(json_path)
    images, annotations = [], []
    for i, item in enumerate(items, start=1):
        _save_image(item, json_path.parent / "images")
        width, height = item.size()
        images.append({"id": i, "file_name": item.name, "width": width, "height": height})
        for (x1, y1, x2, y2), cls in zip(item.boxes.tolist(), item.labels.tolist(), strict=True):
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(cls) + 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    categories = [{"id": k + 1, "name": n} for k, n in enumerate(names)]
    json_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return json_path


def export_labelstudio(items: list[LabeledImage], names: list[str], json_path: Path) -> Path:
    """Write a Label Studio JSON export (percent coordinates, hashed upload names) and the images beside it."""
    json_path = Path(json_path)
    tasks = []
    for i, item in enumerate(items, start=1):
        _save_image(item, json_path.parent / "images")
        width, height = item.size()
        results = [{"id": f"r{i}_{k}", "type": "rectanglelabels", "from_name": "label", "to_name": "image",
                    "original_width": width, "original_height": height, "image_rotation": 0,
                    "value": {"x": x1 / width * 100, "y": y1 / height * 100, "width": (x2 - x1) / width * 100,
                              "height": (y2 - y1) / height * 100, "rotation": 0,
                              "rectanglelabels": [names[int(cls)]]}}
                   for k, ((x1, y1, x2, y2), cls) in enumerate(zip(item.boxes.tolist(), item.labels.tolist(),
                                                                    strict=True))]
        tasks.append({"id": i, "data": {"image": f"/data/upload/1/{i:08x}-{item.name}"},
                      "annotations": [{"id": i, "was_cancelled": False, "result": results}]})
    json_path.write_text(json.dumps(tasks, indent=1))
    return json_path


def export_yolo(items: list[LabeledImage], names: list[str], folder: Path) -> Path:
    """Write a CVAT "YOLO 1.1" export: obj.names, obj.data, train.txt and obj_train_data/ (images + labels)."""
    folder = Path(folder)
    data = folder / "obj_train_data"
    for item in items:
        _save_image(item, data)
        width, height = item.size()
        lines = [f"{int(c)} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} {(x2 - x1) / width:.6f} "
                 f"{(y2 - y1) / height:.6f}\n" for (x1, y1, x2, y2), c in zip(item.boxes, item.labels, strict=True)]
        (data / f"{Path(item.name).stem}.txt").write_text("".join(lines))
    (folder / "obj.names").write_text("".join(f"{n}\n" for n in names))
    (folder / "obj.data").write_text(f"classes = {len(names)}\ntrain = data/train.txt\nnames = data/obj.names\n")
    (folder / "train.txt").write_text("".join(f"data/obj_train_data/{it.name}\n" for it in items))
    return folder
