"""``mastery vision ...``: detection on videos, annotation import, the generated hard-hat dataset.

:func:`register` only builds parsers; ultralytics, OpenCV and torch are imported when a command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def cmd_detect(args: argparse.Namespace) -> int:
    from mastery.vision.yolo import detect_video

    out = Path(args.out) if args.out else Path(
        f"webcam{args.source}.detections.mp4" if args.source.isdigit() else f"{Path(args.source).stem}.detections.mp4")
    stats = detect_video(Path(args.artifact), args.source, out, imgsz=args.imgsz, conf=args.conf, device=args.device,
                         max_frames=args.max_frames)
    _out(f"{stats['frames']} frames, {stats['boxes']} boxes, {stats['fps']:.1f} frames/s -> {out}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from mastery.vision.annotations import import_annotations, split_items, validate_yolo_dataset, write_yolo_dataset

    names = [n.strip() for n in args.classes.split(",")] if args.classes else None
    data = import_annotations(args.format, Path(args.src), Path(args.images) if args.images else None, names)
    data_yaml = write_yolo_dataset(Path(args.out), split_items(data.items, args.val_fraction, args.seed), data.names)
    counts = validate_yolo_dataset(data_yaml)
    _out(f"{len(data.items)} images, {data.n_boxes} boxes, classes {data.names} -> {data_yaml}")
    _out(", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def cmd_hardhat(args: argparse.Namespace) -> int:
    from mastery.vision.annotations import validate_yolo_dataset
    from mastery.vision.hardhat import write_hardhat_dataset

    data_yaml = write_hardhat_dataset(Path(args.out), args.train, args.val, args.seed, args.size)
    counts = validate_yolo_dataset(data_yaml)
    _out(f"{data_yaml}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def register(subparsers: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    vision = subparsers.add_parser("vision", help="object detection: video inference, annotation import, data")
    sub = vision.add_subparsers(dest="action", required=True, parser_class=parser_class)

    p = sub.add_parser("detect", help="run a trained YOLO model on a video file or webcam; write an annotated mp4")
    p.add_argument("--artifact", required=True, help="a .pt file trained with ultralytics (it is unpickled: "
                                                     "use only weights you trust)")
    p.add_argument("--source", required=True, help="a video file, or a webcam index such as 0")
    p.add_argument("--out", default=None, help="annotated video (default: <source>.detections.mp4 here)")
    p.add_argument("--imgsz", type=int, default=320, help="inference size (the training size is best)")
    p.add_argument("--conf", type=float, default=0.25, help="minimum score of a drawn box")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames (webcam: else Ctrl+C)")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("import-annotations", help="COCO / Label Studio / YOLO export -> validated YOLO dataset")
    p.add_argument("--format", required=True, choices=("coco", "labelstudio", "yolo"))
    p.add_argument("src", help="the JSON file (coco, labelstudio) or the export folder (yolo)")
    p.add_argument("--images", default=None, help="folder with the images (default: next to the export)")
    p.add_argument("--classes", default=None, help="labelstudio: class names in id order, comma-separated "
                                                    "(default: the labels found, sorted)")
    p.add_argument("--out", required=True, help="dataset folder to write (images/, labels/, data.yaml)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("make-hardhat", help="write the generated hard-hat scenes as a YOLO dataset")
    p.add_argument("--out", required=True)
    p.add_argument("--train", type=int, default=200)
    p.add_argument("--val", type=int, default=50)
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_hardhat)
