"""L12: segmentation metrics on hand-computed cases, the U-Net's shapes, the nuclei data and its errors."""

import numpy as np
import pytest
import torch

from mastery.core.errors import MasteryError
from mastery.nn.dense import ShapeError
from mastery.vision.nuclei import (
    NucleiDataError,
    generate_nuclei,
    load_stage1_sample,
    load_stage1_train,
    read_image,
    tile_split,
)
from mastery.vision.seg_metrics import (
    DSB_THRESHOLDS,
    contact_zone,
    dice,
    dsb_average_precision,
    dsb_map,
    dsb_precisions,
    instances_from_mask,
    interior_target,
    iou,
    iou_matrix,
)
from mastery.vision.seg_train import PatchSampler, predict_instances
from mastery.vision.unet import UNet


def test_dice_iou_by_hand():
    pred = np.array([[1, 1, 0, 0]] * 2, dtype=bool)  # 4 pixels
    true = np.array([[0, 1, 1, 0]] * 2, dtype=bool)  # 4 pixels, 2 shared
    assert dice(pred, true) == pytest.approx(2 * 2 / (4 + 4))
    assert iou(pred, true) == pytest.approx(2 / 6)
    empty = np.zeros((2, 2), bool)
    assert dice(empty, empty) == 1.0 and iou(empty, empty) == 1.0
    assert dice(empty, ~empty) == 0.0
    with pytest.raises(ShapeError):
        dice(pred, true[:, :3])


def test_dice_iou_match_torchmetrics():
    from torchmetrics.classification import BinaryF1Score, BinaryJaccardIndex

    rng = np.random.default_rng(0)
    pred, true = rng.random((3, 16, 16)) < 0.4, rng.random((3, 16, 16)) < 0.5
    p, t = torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(true.astype(np.int64))
    assert iou(pred, true) == pytest.approx(float(BinaryJaccardIndex()(p, t)), abs=1e-6)
    assert dice(pred, true) == pytest.approx(float(BinaryF1Score()(p, t)), abs=1e-6)  # Dice = F1 on pixels


def test_iou_matrix_and_dsb_score_by_hand():
    true = np.zeros((6, 6), int)
    true[0:2, 0:2] = 1  # 4 px
    true[3:6, 3:6] = 2  # 9 px
    true[0:2, 4:6] = 5  # 4 px, never predicted (FN); labels need not be contiguous
    pred = np.zeros((6, 6), int)
    pred[0:2, 0:3] = 1  # 6 px, covers object 1: IoU 4/6
    pred[3:6, 3:6] = 2  # exact: IoU 1
    pred[5, 0] = 3  # a spurious 1-px object (FP)
    ious = iou_matrix(true, pred)
    np.testing.assert_allclose(ious, [[4 / 6, 0, 0], [0, 1, 0], [0, 0, 0]])
    prec = dsb_precisions(true, pred)
    assert list(prec) == list(DSB_THRESHOLDS)
    # t < 2/3: TP 2, FP 1, FN 1 -> 2/4; t >= 2/3 (0.7 ... 0.95): TP 1, FP 2, FN 2 -> 1/5.
    assert prec[0.5] == prec[0.65] == pytest.approx(0.5)
    assert prec[0.7] == prec[0.95] == pytest.approx(0.2)
    assert dsb_average_precision(true, pred) == pytest.approx((4 * 0.5 + 6 * 0.2) / 10)
    assert dsb_average_precision(true, true) == 1.0
    assert dsb_average_precision(np.zeros((3, 3), int), np.zeros((3, 3), int)) == 1.0
    assert dsb_average_precision(true, np.zeros_like(true)) == 0.0
    assert dsb_map([true, true], [pred, true]) == pytest.approx((0.32 + 1.0) / 2)


def test_iou_exactly_at_threshold_does_not_match():
    true = np.zeros((1, 4), int)
    true[0, :2] = 1
    pred = np.zeros((1, 4), int)
    pred[0, :4] = 1  # IoU 2/4 = 0.5, not > 0.5
    assert dsb_precisions(true, pred)[0.5] == 0.0


def test_instances_interior_and_growing_separate_touching_nuclei():
    inst = np.zeros((7, 12), int)
    inst[1:6, 1:6] = 1
    inst[1:6, 6:11] = 2  # touches nucleus 1
    assert instances_from_mask(inst > 0).max() == 1  # plain components merge them
    inner = interior_target(inst)
    assert inner.sum() == 2 * 9  # each 5x5 square loses its 16-px ring
    grown = instances_from_mask(inner, grow=1)
    assert grown.max() == 2 and dsb_average_precision(inst, grown) == 1.0
    assert predict_instances(np.where(inner, 0.9, 0.1), 0.5, grow=1).max() == 2
    zone = contact_zone(inst, size=3)  # pixels with both nuclei in their 3x3 neighbourhood: columns 5 and 6
    assert zone[:, 5:7].all() and zone.sum() == 14  # rows 0 and 6 (background) see both too
    dots = np.zeros((5, 5))
    dots[0, 0] = dots[2:5, 2:5] = 0.9
    assert predict_instances(dots, min_size=2, grow=0).max() == 1  # the 1-px dot is dropped


@pytest.mark.parametrize("depth,width", [(1, 4), (3, 8)])
def test_unet_shapes(depth, width):
    torch.manual_seed(0)
    net = UNet(1, 2, width=width, depth=depth)
    assert net(torch.randn(2, 1, 32, 24)).shape == (2, 2, 32, 24)
    with pytest.raises(ValueError, match="divisible"):
        net(torch.randn(1, 1, 31, 32))
    with pytest.raises(ValueError):
        UNet(width=3)


def test_unet_skip_connections_carry_fine_detail():
    # Skips concatenate the full-resolution features, so the first decoder conv sees 2 * width channels.
    net = UNet(1, 1, width=4, depth=2)
    assert net.up[-1].conv.net[0].in_channels == 8
    assert len(net.down) == 2 and len(net.up) == 2


def test_generated_nuclei_are_seeded_and_labelled():
    a, b = generate_nuclei(3, 64, seed=5), generate_nuclei(3, 64, seed=5)
    for (ia, ma), (ib, mb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ma, mb)
        assert ia.shape == ma.shape == (64, 64) and ia.dtype == np.float32 and 0 <= ia.min() <= ia.max() <= 1
        assert ma.max() >= 1 and set(np.unique(ma)) == set(range(ma.max() + 1))  # labels 0..K, contiguous
        assert ia[ma > 0].mean() > ia[ma == 0].mean()  # nuclei brighter than background
    assert not np.array_equal(generate_nuclei(1, 64, seed=6)[0][0], a[0][0])


def test_tile_split_holds_out_disjoint_regions():
    image = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    inst = np.zeros((64, 64), int)
    split = tile_split(image, inst, tile=16, test_cells=((0, 0), (3, 3)))
    assert len(split.train) == 14 and len(split.test) == 2
    train_pixels = set(np.concatenate([t.ravel() for t, _ in split.train]).tolist())
    test_pixels = set(np.concatenate([t.ravel() for t, _ in split.test]).tolist())
    assert not train_pixels & test_pixels and len(train_pixels | test_pixels) == 64 * 64
    with pytest.raises(ValueError):
        tile_split(image, inst, tile=16, test_cells=((4, 0),))


def test_patch_sampler_is_seeded_and_crops_stay_inside_samples():
    samples = generate_nuclei(2, 64, seed=1)
    x1, y1, w1 = PatchSampler(samples, 32, seed=3, contact_weight=4.0).batch(4)
    x2, y2, _ = PatchSampler(samples, 32, seed=3, contact_weight=4.0).batch(4)
    assert x1.shape == y1.shape == w1.shape == (4, 1, 32, 32)
    assert set(torch.unique(w1).tolist()) <= {1.0, 5.0}
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and set(torch.unique(y1).tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="smaller"):
        PatchSampler(samples, 80, seed=0)


def _write_sample(root, name, image, masks):
    from PIL import Image

    (root / name / "images").mkdir(parents=True)
    (root / name / "masks").mkdir()
    Image.fromarray(image).save(root / name / "images" / f"{name}.png")
    for i, m in enumerate(masks):
        Image.fromarray(m).save(root / name / "masks" / f"m{i}.png")


def test_stage1_layout_loads_and_bad_files_are_named(tmp_path):
    img = np.zeros((16, 16, 4), np.uint8)
    img[2:6, 2:6] = 200
    m1, m2 = np.zeros((16, 16), np.uint8), np.zeros((16, 16), np.uint8)
    m1[2:6, 2:6] = 255
    m2[8:10, 8:12] = 255
    _write_sample(tmp_path, "abc", img, [m1, m2])
    image, inst = load_stage1_sample(tmp_path / "abc")
    assert image.shape == (16, 16) and inst.max() == 2 and (inst == 2).sum() == 8
    assert len(load_stage1_train(tmp_path)) == 1

    bad = np.zeros((16, 16), np.uint8)
    bad[0, 0], bad[0, 1] = 100, 255  # three values: not a binary mask
    _write_sample(tmp_path, "nonbinary", img, [bad])
    with pytest.raises(NucleiDataError, match=r"m0\.png.*not binary"):
        load_stage1_sample(tmp_path / "nonbinary")
    _write_sample(tmp_path, "wrongshape", img, [np.full((8, 8), 255, np.uint8)])
    with pytest.raises(NucleiDataError, match=r"m0\.png has shape"):
        load_stage1_sample(tmp_path / "wrongshape")
    corrupt = tmp_path / "corrupt"
    _write_sample(tmp_path, "corrupt", img, [m1])
    (corrupt / "images" / "corrupt.png").write_bytes(b"not a png")
    with pytest.raises(NucleiDataError, match=r"corrupt\.png"):
        load_stage1_sample(corrupt)
    (tmp_path / "nomasks" / "images").mkdir(parents=True)
    with pytest.raises(MasteryError, match="nomasks"):
        load_stage1_sample(tmp_path / "nomasks")
    with pytest.raises(NucleiDataError, match="not found"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(NucleiDataError, match="stage1_train folder not found"):
        load_stage1_train(tmp_path / "nope")
