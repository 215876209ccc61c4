"""L11: IoU / NMS / mAP against torchvision and pycocotools, annotation import, hard-hat scenes, `vision detect`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
cv2 = pytest.importorskip("cv2")

from mastery.vision.annotations import (  # noqa: E402
    AnnotationError,
    LabeledImage,
    export_coco,
    export_labelstudio,
    export_yolo,
    import_annotations,
    load_yolo_split,
    split_items,
    validate_yolo_dataset,
    write_yolo_dataset,
)
from mastery.vision.boxes import (  # noqa: E402
    ImageDetections,
    batched_nms,
    box_iou,
    mean_average_precision,
    nms,
    reference_map,
    xywhn_to_xyxy,
    xyxy_to_xywhn,
)
from mastery.vision.hardhat import CLASS_NAMES, HEAD, HELMET, PERSON, make_scenes  # noqa: E402

D = ImageDetections.make


def random_boxes(rng: np.random.Generator, n: int, side: float = 100.0) -> np.ndarray:
    xy = rng.uniform(0, side, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(1, 40, (n, 2))], axis=1)


# -- IoU and NMS -----------------------------------------------------------------------------------
def test_iou_matches_torchvision_on_random_and_hand_made_boxes():
    rng = np.random.default_rng(1)
    a, b = random_boxes(rng, 64), random_boxes(rng, 48)
    ref = torchvision.ops.box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    assert box_iou(a, b).shape == (64, 48)
    np.testing.assert_allclose(box_iou(a, b), ref, atol=1e-12)
    g = [[0, 0, 10, 10]]
    hand = [[0, 0, 10, 10], [10, 0, 20, 10], [5, 0, 15, 10], [2, 2, 4, 4], [30, 30, 40, 40]]
    np.testing.assert_allclose(box_iou(hand, g)[:, 0], [1.0, 0.0, 50 / 150, 4 / 100, 0.0])
    assert box_iou(np.zeros((0, 4)), g).shape == (0, 1)


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.9])
def test_nms_and_batched_nms_match_torchvision(threshold):
    rng = np.random.default_rng(2)
    centres = rng.uniform(0, 200, (6, 2))
    pts = centres[rng.integers(0, 6, 150)] + rng.normal(0, 5, (150, 2))
    boxes = np.concatenate([pts, pts + rng.uniform(10, 25, (150, 2))], axis=1)
    scores, labels = rng.random(150), rng.integers(0, 3, 150)
    tb, ts = torch.from_numpy(boxes), torch.from_numpy(scores)
    np.testing.assert_array_equal(nms(boxes, scores, threshold), torchvision.ops.nms(tb, ts, threshold).numpy())
    ref = torchvision.ops.batched_nms(tb, ts, torch.from_numpy(labels), threshold).numpy()
    np.testing.assert_array_equal(batched_nms(boxes, scores, labels, threshold), ref)


def test_nms_hand_made():
    boxes = [[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]]  # the first two overlap at IoU 9/11
    assert nms(boxes, [0.5, 0.9, 0.1], 0.5).tolist() == [1, 2]
    assert nms(boxes, [0.5, 0.9, 0.1], 0.85).tolist() == [1, 0, 2]
    assert nms(np.zeros((0, 4)), [], 0.5).tolist() == []


def test_yolo_box_conversion_round_trip():
    b = np.array([[10.0, 20.0, 50.0, 60.0]])
    np.testing.assert_allclose(xyxy_to_xywhn(b, 100, 200), [[0.3, 0.2, 0.4, 0.2]])
    np.testing.assert_allclose(xywhn_to_xyxy(xyxy_to_xywhn(b, 100, 200), 100, 200), b)


# -- mAP -------------------------------------------------------------------------------------------
def test_map_hand_cases():
    g = [[0, 0, 10, 10]]
    assert mean_average_precision([D(g, [0.9], [0], g, [0])]).map50_95 == pytest.approx(1.0)
    # The false alarm ranks first: precision 1/2 at every recall point.
    assert mean_average_precision([D([[50, 50, 60, 60], *g], [0.9, 0.8], [0, 0], g, [0])]).map50 == pytest.approx(0.5)
    # The hit ranks first: precision 1 up to recall 1, the false alarm after it costs nothing.
    assert mean_average_precision([D([*g, [50, 50, 60, 60]], [0.9, 0.8], [0, 0], g, [0])]).map50 == pytest.approx(1)
    # IoU 0.72 hits at thresholds 0.50..0.70: 5 of 10.
    m = mean_average_precision([D([[0, 0, 10, 7.2]], [0.9], [0], g, [0])])
    assert (m.map50, m.map50_95, m.map75) == pytest.approx((1.0, 0.5, 0.0))
    # Half the GT found: recall points 0..0.5 (51 of 101) at precision 1.
    assert mean_average_precision([D(g, [0.9], [0], [*g, [20, 20, 30, 30]], [0, 0])]).map50 == pytest.approx(51 / 101)
    # A right box with the wrong class is a miss for class 0 and a false alarm for class 1 (no GT: not averaged).
    m = mean_average_precision([D(g, [0.9], [1], g, [0])])
    assert m.classes == [0] and m.map50 == 0.0
    # Two detections on one GT: the second is a duplicate (false positive) after the first took it.
    m = mean_average_precision([D([*g, *g], [0.9, 0.8], [0, 0], [*g, [40, 40, 50, 50]], [0, 0])])
    assert m.map50 == pytest.approx(51 / 101)


def test_map_without_ground_truth_or_predictions():
    empty = mean_average_precision([D(np.zeros((0, 4)), [], [], np.zeros((0, 4)), [])])
    assert empty.classes == [] and empty.map50 == 0.0
    none = mean_average_precision([D(np.zeros((0, 4)), [], [], [[0, 0, 5, 5]], [2])])
    assert none.classes == [2] and none.map50_95 == 0.0


def test_map_respects_max_dets_per_image_and_class():
    g = [[0, 0, 10, 10]]
    fps = [[50 + i, 50, 60 + i, 60] for i in range(3)]
    images = [D([*fps, *g], [0.9, 0.8, 0.7, 0.1], [0, 0, 0, 0], g, [0])]
    assert mean_average_precision(images, max_dets=3).map50 == 0.0  # the hit is the 4th by score
    assert mean_average_precision(images, max_dets=4).map50 == pytest.approx(0.25)


def test_map_matches_pycocotools_on_random_images():
    rng = np.random.default_rng(3)
    images = []
    for _ in range(25):
        gt = random_boxes(rng, int(rng.integers(0, 7)))
        gl = rng.integers(0, 3, len(gt))
        hit = rng.random(len(gt)) < 0.75
        p = gt[hit] + rng.normal(0, 2, (int(hit.sum()), 4))
        p = np.concatenate([np.minimum(p[:, :2], p[:, 2:] - 0.5), np.maximum(p[:, 2:], p[:, :2] + 0.5)], axis=1)
        fp = random_boxes(rng, int(rng.integers(0, 4)))
        pl = np.concatenate([gl[hit], rng.integers(0, 3, len(fp))])
        images.append(D(np.concatenate([p, fp]), rng.random(len(pl)), pl, gt, gl))
    # Tied scores exercise COCO's stable ordering.
    images.append(D([[0, 0, 10, 10], [0, 0, 9, 10]], [0.5, 0.5], [1, 1], [[0, 0, 10, 10]], [1]))
    mine, ref = mean_average_precision(images), reference_map(images)
    assert 0 < mine.map75 < mine.map50 < 1 and 0 < mine.map50_95 < mine.map50
    assert mine.map50 == pytest.approx(ref["map50"], abs=1e-6)
    assert mine.map75 == pytest.approx(ref["map75"], abs=1e-6)
    assert mine.map50_95 == pytest.approx(ref["map50_95"], abs=1e-6)
    assert mine.precision.shape == (10, 101, 3)


# -- the hard-hat scenes --------------------------------------------------------------------------
def test_hardhat_scenes_are_seeded_and_boxes_are_exact_and_consistent():
    a, b = make_scenes(6, seed=5, size=128), make_scenes(6, seed=5, size=128)
    assert all(np.array_equal(x.image, y.image) and np.array_equal(x.boxes, y.boxes) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0].image, make_scenes(1, seed=6, size=128)[0].image)
    labels = np.concatenate([s.labels for s in a])
    assert set(labels) <= {HELMET, HEAD, PERSON} and PERSON in labels
    for s in a:
        assert s.image.shape == (128, 128, 3) and s.image.dtype == np.uint8
        assert (s.boxes[:, :2] >= 0).all() and (s.boxes[:, 2:] <= 128).all()
        assert (s.boxes[:, 2:] > s.boxes[:, :2]).all()
        heads = s.boxes[s.labels != PERSON]
        persons = s.boxes[s.labels == PERSON]
        assert len(heads) == len(persons)  # one head-or-helmet box per labelled worker
        for h in heads:  # every head lies inside some person box
            inside = (persons[:, :2] <= h[:2]).all(1) & (persons[:, 2:] >= h[2:]).all(1)
            assert inside.any()


# -- annotation import ------------------------------------------------------------------------------
@pytest.fixture()
def items() -> list[LabeledImage]:
    scenes = make_scenes(3, seed=11, size=96)
    return [LabeledImage(f"s{i}.png", s.image, s.boxes, s.labels) for i, s in enumerate(scenes)]


@pytest.mark.parametrize("fmt", ["coco", "labelstudio", "yolo"])
def test_exports_import_back_into_a_valid_yolo_dataset(fmt, items, tmp_path):
    export = {"coco": lambda: export_coco(items, list(CLASS_NAMES), tmp_path / "exp" / "coco.json"),
              "labelstudio": lambda: export_labelstudio(items, list(CLASS_NAMES), tmp_path / "exp" / "ls.json"),
              "yolo": lambda: export_yolo(items, list(CLASS_NAMES), tmp_path / "exp")}[fmt]()
    data = import_annotations(fmt, export, names=list(CLASS_NAMES) if fmt == "labelstudio" else None)
    assert data.names == list(CLASS_NAMES) and len(data.items) == 3
    back = {it.name: it for it in data.items}
    for it in items:
        np.testing.assert_allclose(back[it.name].boxes, it.boxes, atol=1e-3)
        np.testing.assert_array_equal(back[it.name].labels, it.labels)
    data_yaml = write_yolo_dataset(tmp_path / "ds", split_items(data.items, 0.34, seed=0), data.names)
    counts = validate_yolo_dataset(data_yaml)
    assert counts["train_images"] == 2 and counts["val_images"] == 1
    assert counts["train_boxes"] + counts["val_boxes"] == sum(len(it.labels) for it in items)
    val = load_yolo_split(data_yaml, "val")
    np.testing.assert_allclose(val[0].boxes, back[val[0].name].boxes, atol=1e-3)


def test_label_studio_yolo_layout_with_classes_txt(items, tmp_path):
    root = tmp_path / "ls_yolo"
    export_yolo(items, list(CLASS_NAMES), tmp_path / "tmp")
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for it in items:
        stem = Path(it.name).stem
        (tmp_path / "tmp" / "obj_train_data" / it.name).rename(root / "images" / it.name)
        (tmp_path / "tmp" / "obj_train_data" / f"{stem}.txt").rename(root / "labels" / f"{stem}.txt")
    (root / "classes.txt").write_text("helmet\nhead\nperson\n")
    data = import_annotations("yolo", root)
    assert len(data.items) == 3 and data.n_boxes == sum(len(it.labels) for it in items)


def _yolo_export_with(tmp_path: Path, items: list[LabeledImage], line: str) -> tuple[Path, Path]:
    export_yolo(items, list(CLASS_NAMES), tmp_path / "exp")
    label = tmp_path / "exp" / "obj_train_data" / "s1.txt"
    n = len(label.read_text().splitlines())
    label.write_text(label.read_text() + line + "\n")
    return label, Path(f"{label}:{n + 1}")


@pytest.mark.parametrize("line, message", [
    ("0 0.98 0.5 0.2 0.1", "outside the 96x96 image"),
    ("7 0.5 0.5 0.1 0.1", "class id 7 is not one of the 3 classes"),
    ("0 0.5 0.5 0.0 0.1", "non-positive size"),
    ("0 0.5 0.5 0.1", "expected 'class cx cy w h'"),
    ("helmet 0.5 0.5 0.1 0.1", "not numbers"),
])
def test_bad_yolo_lines_name_file_and_line(line, message, items, tmp_path):
    _, where = _yolo_export_with(tmp_path, items, line)
    with pytest.raises(AnnotationError) as err:
        import_annotations("yolo", tmp_path / "exp")
    assert str(where) in str(err.value) and message in str(err.value)


def test_label_without_image_and_bad_json_exports(items, tmp_path):
    export_yolo(items, list(CLASS_NAMES), tmp_path / "exp")
    (tmp_path / "exp" / "obj_train_data" / "s2.png").unlink()
    with pytest.raises(AnnotationError, match=r"s2\.txt: no matching image"):
        import_annotations("yolo", tmp_path / "exp")

    coco = export_coco(items, list(CLASS_NAMES), tmp_path / "c" / "coco.json")
    data = json.loads(coco.read_text())
    data["annotations"][1]["category_id"] = 42
    coco.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=r"annotations\[1\] \(id 2\): unknown category_id 42"):
        import_annotations("coco", coco)
    data["annotations"][1]["category_id"] = 1
    data["annotations"][1]["bbox"] = [90, 10, 20, 5]  # x + w = 110 > 96
    coco.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=r"coco\.json: annotations\[1\].*outside the 96x96 image"):
        import_annotations("coco", coco)

    ls = export_labelstudio(items, list(CLASS_NAMES), tmp_path / "l" / "ls.json")
    tasks = json.loads(ls.read_text())
    tasks[0]["annotations"][0]["result"][0]["value"]["rotation"] = 15
    ls.write_text(json.dumps(tasks))
    with pytest.raises(AnnotationError, match="rotated rectangles"):
        import_annotations("labelstudio", ls)
    ls.write_text("[{")
    with pytest.raises(AnnotationError, match="line 1: invalid JSON"):
        import_annotations("labelstudio", ls)


def test_validate_rejects_orphan_label_in_dataset(items, tmp_path):
    data_yaml = write_yolo_dataset(tmp_path / "ds", {"train": items[:2], "val": items[2:]}, list(CLASS_NAMES))
    (tmp_path / "ds" / "labels" / "val" / "ghost.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(AnnotationError, match=r"ghost\.txt: no matching image"):
        validate_yolo_dataset(data_yaml)


# -- the CLI --------------------------------------------------------------------------------------
def test_cli_registration_imports_nothing_heavy():
    code = ("import sys; from mastery.cli import build_parser; build_parser().parse_args(['vision', 'detect', "
            "'--artifact', 'w.pt', '--source', '0']); heavy = [m for m in ('ultralytics', 'cv2', 'torch') "
            "if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_import_annotations(items, tmp_path, capsys):
    from mastery.cli import main

    coco = export_coco(items, list(CLASS_NAMES), tmp_path / "exp" / "coco.json")
    assert main(["vision", "import-annotations", "--format", "coco", str(coco), "--out", str(tmp_path / "ds")]) == 0
    assert "3 images" in capsys.readouterr().out and (tmp_path / "ds" / "data.yaml").is_file()
    assert main(["vision", "import-annotations", "--format", "yolo", str(tmp_path / "nope"), "--out", "x"]) == 2
    assert "a YOLO export is a folder" in capsys.readouterr().err


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory) -> Path:
    from mastery.vision.yolo import ultralytics_yolo

    path = tmp_path_factory.mktemp("weights") / "random.pt"
    torch.manual_seed(0)
    ultralytics_yolo()("yolov8n.yaml").save(str(path))  # an untrained model: all we need is a loadable file
    return path


def test_vision_detect_writes_an_annotated_video_and_fails_clearly(random_weights, tmp_path, capsys):
    from mastery.cli import main

    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (64, 64))
    for scene in make_scenes(3, seed=0, size=64):
        writer.write(np.ascontiguousarray(scene.image[..., ::-1]))
    writer.release()
    out = tmp_path / "annotated.mp4"
    args = ["vision", "detect", "--artifact", str(random_weights), "--imgsz", "64", "--device", "cpu", "--conf", "0.0"]
    assert main([*args, "--source", str(clip), "--out", str(out)]) == 0
    assert "3 frames" in capsys.readouterr().out
    cap = cv2.VideoCapture(str(out))
    ok, frame = cap.read()
    assert ok and frame.shape == (64, 64, 3) and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    cap.release()

    missing = ["vision", "detect", "--artifact", str(tmp_path / "none.pt"), "--source", str(clip)]
    assert main(missing) == 2
    assert "weights file not found" in capsys.readouterr().err
    (tmp_path / "notvideo.mp4").write_text("hello")
    assert main([*args, "--source", str(tmp_path / "notvideo.mp4"), "--out", str(out)]) == 2
    assert "cannot read video" in capsys.readouterr().err
    assert main([*args, "--source", str(tmp_path / "absent.mp4")]) == 2
    assert "video file not found" in capsys.readouterr().err
    assert main([*args, "--source", "97", "--out", str(out)]) == 2
    assert "webcam 97 is not available" in capsys.readouterr().err
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    assert main(["vision", "detect", "--artifact", str(tmp_path / "bad.pt"), "--source", str(clip)]) == 2
    assert "could not load YOLO weights" in capsys.readouterr().err
