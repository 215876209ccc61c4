"""L9: NumPy convolution/pooling vs torch, the receptive-field calculator, and the CIFAR CNN's shapes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mastery.nn.dense import ShapeError
from mastery.vision.cnn import CifarCNN, TrainSetup, build_optimizer, conv_layer_stack
from mastery.vision.conv import (
    avg_pool2d,
    conv2d_im2col,
    conv2d_loops,
    max_pool2d,
    receptive_field,
    receptive_fields,
    vgg16_layers,
)

CONV_CASES = [  # (N, C, H, W, O, KH, KW, stride, padding)
    (1, 1, 5, 5, 1, 3, 3, 1, 0),
    (2, 3, 8, 7, 4, 3, 3, 1, 1),
    (2, 3, 9, 9, 5, 3, 3, 2, 1),
    (1, 4, 10, 8, 2, 5, 3, (2, 1), (2, 1)),
    (3, 2, 6, 6, 3, 1, 1, 2, 0),
    (1, 2, 7, 7, 2, 7, 7, 1, 3),
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("fn", [conv2d_loops, conv2d_im2col])
def test_conv_matches_torch(case, fn):
    n, c, h, w, o, kh, kw, stride, padding = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    weight = rng.standard_normal((o, c, kh, kw)).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32)
    ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias), stride=stride,
                   padding=padding).numpy()
    out = fn(x, weight, bias, stride, padding)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)


def test_conv_by_hand():
    # A 3x3 image of 1..9 with an all-ones 2x2 kernel: each output is the sum of a 2x2 window.
    x = np.arange(1, 10, dtype=np.float64).reshape(1, 1, 3, 3)
    w = np.ones((1, 1, 2, 2))
    expected = np.array([[[[12, 16], [24, 28]]]], dtype=np.float64)
    np.testing.assert_array_equal(conv2d_loops(x, w), expected)
    np.testing.assert_array_equal(conv2d_im2col(x, w), expected)
    # Padding 1, stride 2: corners see one pixel each, the centre the 2x2 window [5, 6; 8, 9].
    np.testing.assert_array_equal(conv2d_im2col(x, w, None, 2, 1), [[[[1, 5], [11, 28]]]])


@pytest.mark.parametrize("kernel,stride,padding", [(2, None, 0), (3, 2, 1), (3, 1, 1), ((2, 3), (2, 1), (1, 1))])
def test_pooling_matches_torch(kernel, stride, padding):
    x = np.random.default_rng(1).standard_normal((2, 3, 9, 8)).astype(np.float32)
    xt = torch.from_numpy(x)
    np.testing.assert_allclose(max_pool2d(x, kernel, stride, padding),
                               F.max_pool2d(xt, kernel, stride, padding).numpy(), atol=1e-5)
    np.testing.assert_allclose(avg_pool2d(x, kernel, stride, padding),
                               F.avg_pool2d(xt, kernel, stride, padding).numpy(), atol=1e-5)


def test_max_pool_ignores_padding_of_negative_inputs():
    x = -np.ones((1, 1, 2, 2))
    assert max_pool2d(x, 3, 1, 1).max() == -1.0  # the -inf padding never wins


def test_bad_shapes_are_named():
    x = np.zeros((1, 3, 5, 5))
    with pytest.raises(ShapeError, match="3 input channels"):
        conv2d_im2col(x, np.zeros((2, 4, 3, 3)))
    with pytest.raises(ShapeError, match="does not fit"):
        conv2d_loops(x, np.zeros((2, 3, 7, 7)))
    with pytest.raises(ShapeError, match="bias"):
        conv2d_loops(x, np.zeros((2, 3, 3, 3)), np.zeros(3))
    with pytest.raises(ShapeError, match="half the kernel"):
        max_pool2d(x, 2, 2, 2)


def test_receptive_field_known_stacks():
    assert receptive_field([(3, 1, 1)] * 2).size == 5  # two 3x3 convs see a 5x5 patch
    assert receptive_field([(3, 1, 1)] * 3).size == 7
    vgg = receptive_fields(vgg16_layers())
    assert len(vgg) == 18
    assert vgg[1].size == 5 and vgg[2].size == 6  # conv1_2, pool1
    assert (vgg[-2].size, vgg[-1].size) == (196, 212)  # conv5_3, pool5 (published)
    assert (vgg[-2].jump, vgg[-1].jump) == (16, 32)
    assert vgg[-1].start == 15.5  # centre of the first pool5 unit in input-pixel coordinates
    alexnet = [(11, 4, 0), (3, 2, 0), (5, 1, 2), (3, 2, 0), (3, 1, 1), (3, 1, 1), (3, 1, 1), (3, 2, 0)]
    assert [f.size for f in receptive_fields(alexnet)] == [11, 19, 51, 67, 99, 131, 163, 195]
    assert receptive_field([(3, 1, 0)]).start == 1.0  # no padding: the first window is centred on pixel 1
    assert receptive_field([]).size == 1
    with pytest.raises(ShapeError):
        receptive_fields([(3, 0, 1)])


def test_cifar_cnn_shapes_and_receptive_field():
    torch.manual_seed(0)
    model = CifarCNN((8, 16, 32, 64), bf16=True, channels_last=True)
    x = torch.randn(2, 3, 32, 32)
    logits = model(x)
    assert logits.shape == (2, 10) and logits.dtype == torch.float32
    maps = model.feature_maps(x)
    assert [tuple(v.shape) for v in maps.values()] == [(2, 8, 32, 32), (2, 16, 16, 16), (2, 32, 8, 8), (2, 64, 4, 4)]
    stack = [layer for _, layer in conv_layer_stack(model)]
    assert receptive_field(stack).size == 52  # 3, 5, 6, 10 | 14, 16, 24 | 32, 36, 52 (jumps 1, 2, 4, 8)
    with pytest.raises(ValueError):
        CifarCNN((8,))


def test_one_cycle_schedule_and_no_decay_on_batchnorm():
    model = CifarCNN((4, 8))
    optimizer, scheduler = build_optimizer(model, TrainSetup(epochs=4, lr=0.4), steps_per_epoch=5)
    assert optimizer.param_groups[1]["weight_decay"] == 0.0
    lrs = [optimizer.param_groups[0]["lr"]]
    for _ in range(19):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(0.04)  # starts at peak / 10
    assert max(lrs) == pytest.approx(0.4) and lrs.index(max(lrs)) == 4  # peak after 25% of the 20 steps
    assert lrs[-1] < 0.01
