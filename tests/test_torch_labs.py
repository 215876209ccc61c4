"""PyTorch utilities behind L5-L7: the Dataset, the train loop, checkpoints, device choice, L7's hooks."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mastery.core.errors import ConfigError  # noqa: E402
from mastery.core.progress import Progress  # noqa: E402
from mastery.nn.data import ImageArrayDataset, channel_stats, make_loader, split_indices, subsample  # noqa: E402
from mastery.nn.dense import ShapeError  # noqa: E402
from mastery.nn.models import MLP, SmallCNN  # noqa: E402
from mastery.nn.train import (  # noqa: E402
    build_optimizer,
    confusion_matrix,
    evaluate,
    fit,
    hardware_info,
    load_checkpoint,
    save_checkpoint,
    select_device,
)
from tests.conftest import needs_mirror  # noqa: E402


def toy_images(n: int = 256, seed: int = 0, side: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, side, side) images whose class (0-3) is the bright quadrant, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.integers(0, 60, (n, side, side)).astype(np.uint8)
    h = side // 2
    for i, c in enumerate(y):
        r, col = divmod(int(c), 2)
        x[i, r * h:(r + 1) * h, col * h:(col + 1) * h] += 180
    return x, y.astype(np.int64)


# -- Dataset ---------------------------------------------------------------------------------
def test_grayscale_sample_shapes_dtypes_and_normalisation():
    x = np.zeros((3, 28, 28), np.uint8)
    x[1] = 255
    ds = ImageArrayDataset(x, np.array([0, 1, 2]), mean=(0.5,), std=(0.5,))
    img, label = ds[1]
    assert img.shape == (1, 28, 28) and img.dtype == torch.float32
    assert label.dtype == torch.int64 and int(label) == 1
    assert torch.allclose(img, torch.ones_like(img))  # (255/255 - 0.5) / 0.5
    assert torch.allclose(ds[0][0], -torch.ones(1, 28, 28))  # (0 - 0.5) / 0.5
    assert len(ds) == 3 and ds.sample_shape == (1, 28, 28)


def test_colour_images_become_channels_first_with_per_channel_stats():
    x = np.zeros((2, 4, 5, 3), np.uint8)
    x[..., 0], x[..., 1], x[..., 2] = 0, 100, 200
    ds = ImageArrayDataset(x, np.array([3, 4]), mean=(0.0, 0.1, 0.2), std=(1.0, 2.0, 4.0))
    img, _ = ds[0]
    assert img.shape == (3, 4, 5)  # (C, H, W)
    expected = [(0 / 255 - 0.0) / 1, (100 / 255 - 0.1) / 2, (200 / 255 - 0.2) / 4]
    assert torch.allclose(img.mean(dim=(1, 2)), torch.tensor(expected), atol=1e-6)
    mean, std = channel_stats(x)
    assert np.allclose(mean, [0, 100 / 255, 200 / 255]) and np.allclose(std, 0, atol=1e-5)


def test_batched_fetch_matches_single_items_and_loader_stacks():
    x, y = toy_images(10)
    ds = ImageArrayDataset(x, y, mean=(0.3,), std=(0.2,))
    batch = ds.__getitems__([4, 0, 7])
    for (img, label), i in zip(batch, [4, 0, 7], strict=True):
        assert torch.equal(img, ds[i][0]) and int(label) == y[i]
    xb, yb = next(iter(make_loader(ds, 4, shuffle=False)))
    assert xb.shape == (4, 1, 8, 8) and xb.dtype == torch.float32
    assert yb.shape == (4,) and yb.dtype == torch.int64


def test_augmentation_keeps_shape_is_seeded_and_only_moves_pixels():
    x, y = toy_images(32)
    plain = ImageArrayDataset(x, y)
    first = ImageArrayDataset(x, y, hflip=True, crop_padding=2, seed=3)
    again = ImageArrayDataset(x, y, hflip=True, crop_padding=2, seed=3)
    a, b = first.__getitems__(range(32)), again.__getitems__(range(32))
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b, strict=True))  # same seed, same draws
    assert all(p[0].shape == (1, 8, 8) for p in a)
    assert any(not torch.equal(p[0], plain[i][0]) for i, p in enumerate(a))  # something moved
    flipped = ImageArrayDataset(x, y, hflip=True, seed=0)
    for i, (img, _) in enumerate(flipped.__getitems__(range(32))):
        assert torch.equal(img, plain[i][0]) or torch.equal(img, plain[i][0].flip(-1))


def test_loader_shuffle_is_reproducible():
    x, y = toy_images(50)
    ds = ImageArrayDataset(x, y)
    order = [torch.cat([b[1] for b in make_loader(ds, 8, shuffle=True, seed=5)]) for _ in range(2)]
    assert torch.equal(order[0], order[1])
    assert not torch.equal(order[0], torch.as_tensor(y))


@pytest.mark.parametrize(
    ("images", "labels", "needle"),
    [
        (np.zeros((5, 8, 8), np.uint8), np.zeros(4, np.int64), "differ in length: 5 images"),
        (np.zeros((5, 8, 8), np.float32), np.zeros(5, np.int64), "uint8"),
        (np.zeros((5, 8), np.uint8), np.zeros(5, np.int64), "(N, H, W)"),
        (np.zeros((5, 8, 8), np.uint8), np.zeros((5, 1), np.int64), "1-D integer"),
        (np.zeros((5, 8, 8), np.uint8), np.array([0, 1, 2, 3, 10]), "[0, 10)"),
    ],
)
def test_bad_input_gives_a_clear_error(images, labels, needle):
    with pytest.raises(ShapeError) as info:
        ImageArrayDataset(images, labels, num_classes=10)
    assert needle in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, ConfigError)


def test_bad_normalisation_and_split_arguments():
    x, y = toy_images(10)
    with pytest.raises(ShapeError, match="std must be positive"):
        ImageArrayDataset(x, y, std=(0.0,))
    with pytest.raises(ShapeError, match="1 or 1 values"):
        ImageArrayDataset(x, y, mean=(0.1, 0.2, 0.3))
    with pytest.raises(ShapeError, match="differ in length"):
        subsample(x, y[:3], 2, 0)
    train, val = split_indices(10, 3, seed=0)
    assert len(val) == 3 and sorted([*train, *val]) == list(range(10))


# -- training ------------------------------------------------------------------------------
class Recorder(Progress):
    def __init__(self) -> None:
        self.epochs: list[tuple[int, dict[str, float], str]] = []
        self.params_seen: dict[str, Any] = {}
        self.artifacts: list[str] = []
        self.steps = 0

    def step(self, n: int = 1, **info: float) -> None:
        self.steps += n

    def epoch(self, epoch: int, metrics: dict[str, float], prefix: str = "") -> None:
        self.epochs.append((epoch, dict(metrics), prefix))

    def params(self, params: dict[str, Any]) -> None:
        self.params_seen.update(params)

    def artifact(self, path: str, kind: str = "file") -> None:
        self.artifacts.append(path)


def _toy_run(tmp_path: Path | None = None, epochs: int = 3) -> tuple[Any, Any, Recorder, Any]:
    x, y = toy_images(256)
    norm = {"mean": (0.3,), "std": (0.3,)}
    train = make_loader(ImageArrayDataset(x[:192], y[:192], **norm), 32, shuffle=True, seed=0)
    val = make_loader(ImageArrayDataset(x[192:], y[192:], **norm), 64, shuffle=False)
    torch.manual_seed(0)
    model = MLP(64, (32,), 4, dropout=0.1, batchnorm=True)
    recorder = Recorder()
    ckpt = tmp_path / "best.pth" if tmp_path else None
    optimizer = build_optimizer("adam", model.parameters(), 1e-2)
    history = fit(model, train, optimizer, epochs=epochs, device="cpu", val_loader=val, progress=recorder,
                  prefix="toy_", checkpoint_path=ckpt)
    return model, history, recorder, val


def test_short_training_reduces_loss_and_reports_each_epoch():
    model, history, recorder, val = _toy_run()
    assert history.epochs == 3 and len(history.iteration_loss) == 3 * 6
    assert history.train_loss[-1] < history.train_loss[0]
    assert np.mean(history.iteration_loss[-3:]) < np.mean(history.iteration_loss[:3])
    assert history.val_accuracy[-1] > 0.8  # the bright quadrant is easy
    assert [e for e, _, _ in recorder.epochs] == [1, 2, 3] and recorder.steps == 18
    assert all(p == "toy_" and set(m) == {"train_loss", "train_accuracy", "val_loss", "val_accuracy"}
               for _, m, p in recorder.epochs)
    assert evaluate(model, val, "cpu").accuracy == pytest.approx(history.val_accuracy[-1])


def test_training_is_deterministic_for_a_seed():
    _, first, _, _ = _toy_run(epochs=2)
    _, second, _, _ = _toy_run(epochs=2)
    assert first.iteration_loss == second.iteration_loss and first.val_accuracy == second.val_accuracy


def test_best_checkpoint_round_trips_with_weights_only(tmp_path):
    model, history, _, val = _toy_run(tmp_path)
    path = Path(history.checkpoint)
    assert path == tmp_path / "best.pth" and path.is_file()
    assert history.best_val_accuracy == max(history.val_accuracy)
    assert history.val_accuracy[history.best_epoch - 1] == history.best_val_accuracy
    state = torch.load(path, weights_only=True)  # plain tensors, loadable without trusting pickled code
    fresh = load_checkpoint(MLP(64, (32,), 4, dropout=0.1, batchnorm=True), path)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value) and torch.equal(state[key], value)
    assert evaluate(fresh, val, "cpu").accuracy == history.best_val_accuracy
    cnn = SmallCNN()
    path = save_checkpoint(cnn, tmp_path / "sub" / "cnn.pth")  # creates the folder
    assert set(load_checkpoint(SmallCNN(), path).state_dict()) == set(cnn.state_dict())


def test_fit_rejects_bad_arguments():
    x, y = toy_images(8)
    loader = make_loader(ImageArrayDataset(x, y), 4, shuffle=False)
    model = MLP(64, (8,), 4)
    opt = build_optimizer("sgd", model.parameters(), 0.1)
    with pytest.raises(ValueError, match="epochs"):
        fit(model, loader, opt, epochs=0, device="cpu")
    with pytest.raises(ValueError, match="val_loader"):
        fit(model, loader, opt, epochs=1, device="cpu", checkpoint_path="x.pth")
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer("lbfgs", model.parameters(), 0.1)
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix(np.zeros(3, np.int64), np.zeros(4, np.int64), 2)


def test_confusion_matrix_counts():
    cm = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 0]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]


# -- device ----------------------------------------------------------------------------------
def test_auto_device_uses_cuda_only_when_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device("auto").type == "cuda"
    assert select_device("cpu").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto").type == "cpu"
    with pytest.raises(ConfigError, match="cuda"):
        select_device("cuda")
    with pytest.raises(ConfigError, match="auto, cpu or cuda"):
        select_device("tpu")
    rows = {r["item"]: r["value"] for r in hardware_info(torch.device("cpu"))}
    assert rows["torch version"] == torch.__version__ and rows["device used"] == "cpu"
    assert rows["torch.cuda.is_available()"] == "False" and rows["torch intra-op threads"] >= 1


# -- L7's tracking hooks (L8 relies on them) ---------------------------------------------------
@needs_mirror
def test_l07_reports_params_epochs_and_checkpoint_artifacts(tmp_path):
    from mastery.core.labs import load_lab, run_lab

    lab = load_lab("l07")
    config = dataclasses.replace(lab.config("tiny"), epochs=2, checkpoint_dir=str(tmp_path))
    recorder = Recorder()
    report = run_lab(lab, config, "tiny", recorder)
    assert report.passed
    assert {"lr", "batch_size", "epochs", "dropout", "weight_decay"} <= set(recorder.params_seen)
    keys = {"train_loss", "train_accuracy", "val_loss", "val_accuracy"}
    for prefix in ("baseline_", "regularized_"):
        seen = [(e, m) for e, m, p in recorder.epochs if p == prefix]
        assert [e for e, _ in seen] == [1, 2] and all(set(m) == keys for _, m in seen)
    assert recorder.artifacts == [str(tmp_path / "baseline_best.pth"), str(tmp_path / "regularized_best.pth")]
    for path in recorder.artifacts:
        assert isinstance(torch.load(path, weights_only=True), dict)
