"""Adversarial examples against image classifiers: FGSM and PGD (L-infinity) from scratch, accuracy against
epsilon, adversarial training, and a cross-check against torchattacks.

An adversarial example is an input moved a little, inside a box of half-width epsilon around the original
in pixel units, in the direction that raises the model's loss:

- **FGSM** (Goodfellow et al. 2015, "Explaining and Harnessing Adversarial Examples"): one step,
  ``x' = clip(x + eps * sign(grad_x L(f(x), y)), 0, 1)``. The sign of the gradient is the steepest ascent
  direction under the L-infinity norm, so one step already uses the whole budget.
- **PGD** (Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks"): start at a
  uniformly random point of the box, take ``steps`` FGSM-like steps of size ``alpha`` and after each one
  project back onto the box and onto [0, 1]. It finds a higher loss than FGSM, which is why a model that
  only resists FGSM is not robust.
- **Adversarial training**: train on ``w * L(x) + (1 - w) * L(x')`` with ``x'`` made by the current model at
  every step (Goodfellow et al. used FGSM and w = 0.5; Madry et al. PGD and w = 0).

Epsilon is in pixel units (images in [0, 1]), so ``eps = 0.25`` on MNIST and ``8/255`` on CIFAR-10 mean what
the papers mean. The registry's models expect normalised inputs, ``(x - mean) / std``; :class:`PixelModel`
puts that normalisation inside the model, so the attacks, torchattacks and the clip to [0, 1] all work on
raw pixels. Attacks run the model in eval mode (Dropout off, BatchNorm on its running statistics), as
torchattacks does, and give the model back in the mode it was in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from mastery.core.errors import ConfigError, RegistryError
from mastery.core.progress import NullProgress, Progress
from mastery.nn.train import History

if TYPE_CHECKING:
    from mastery.ops.registry import LoadedModel, RegistryBase

log = logging.getLogger(__name__)

Attack = Literal["fgsm", "pgd"]
# Goodfellow et al. 2015, section 6: FGSM at eps = 0.25 on MNIST; 89.4% error on a maxout network trained
# normally, 17.9% after adversarial training (w = 0.5).
GOODFELLOW_EPS = 0.25
GOODFELLOW_ERROR_PLAIN = 0.894
GOODFELLOW_ERROR_ADV = 0.179
# Madry et al.'s rule of thumb for the PGD step: alpha = 2.5 * eps / steps, so a walk can cross the box.
PGD_ALPHA_FACTOR = 2.5


# -- the model in pixel space ------------------------------------------------------------------
class PixelModel(nn.Module):
    """``net`` behind its input normalisation: (B, C, H, W) pixels in [0, 1] -> logits (B, K)."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if not mean or len(mean) != len(std) or min(std) <= 0:
            raise ConfigError(f"mean and std need the same non-zero length and std > 0, got {mean} and {std}")
        self.net = net
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def load_pixel_model(name: str, *, device: str = "cpu",
                     registry: RegistryBase | None = None) -> tuple[PixelModel, LoadedModel]:
    """A registered image classifier wrapped in its own normalisation (the manifest's ``mean``/``std``)."""
    from mastery.ops.registry_loaders import load_torch_module

    net, loaded = load_torch_module(name, registry=registry, device=device)
    if "mean" not in loaded.config or "std" not in loaded.config:
        raise RegistryError(f"{loaded.ref}: the manifest records no input mean/std, so pixels cannot be fed to it")
    return PixelModel(net, loaded.config["mean"], loaded.config["std"]).to(device).eval(), loaded


# -- the attacks ---------------------------------------------------------------------------------
class _EvalMode:
    """Run the model in eval mode inside the block and restore its previous mode after."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.was_training = model, model.training

    def __enter__(self) -> None:
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)


def _loss_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d mean-cross-entropy / d x, (B, C, H, W); the weights' gradients are never computed."""
    x = x.detach().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x), y)  # mean over the batch, as torchattacks
    return torch.autograd.grad(loss, x)[0]


def _check_eps(eps: float) -> None:
    if not 0 <= eps <= 1:
        raise ConfigError(f"eps is in pixel units and must lie in [0, 1], got {eps}")


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """One signed-gradient step of size ``eps`` from ``x`` (pixels in [0, 1]), clipped to [0, 1]."""
    _check_eps(eps)
    with _EvalMode(model):
        grad = _loss_grad(model, x, y)
    return torch.clamp(x.detach() + eps * grad.sign(), 0, 1)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int = 10,
        alpha: float | None = None, random_start: bool = True,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient ascent in the L-inf ball of radius ``eps`` around ``x``, inside [0, 1].

    ``alpha`` defaults to ``2.5 * eps / steps``; the random start draws from ``generator`` (the global
    RNG when None, which is what torchattacks uses, so a shared seed gives the same start).
    """
    _check_eps(eps)
    if steps < 1:
        raise ConfigError(f"PGD needs steps >= 1, got {steps}")
    alpha = PGD_ALPHA_FACTOR * eps / steps if alpha is None else alpha
    x = x.detach()
    adv = x.clone()
    if random_start:
        noise = torch.empty_like(x).uniform_(-eps, eps, generator=generator)  # (B, C, H, W)
        adv = torch.clamp(adv + noise, 0, 1)
    with _EvalMode(model):
        for _ in range(steps):
            adv = adv + alpha * _loss_grad(model, adv, y).sign()
            delta = torch.clamp(adv - x, -eps, eps)  # project onto the eps-box ...
            adv = torch.clamp(x + delta, 0, 1)  # ... and onto the valid pixel range
    return adv.detach()


def attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, kind: Attack, *, steps: int = 10,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """``fgsm`` or ``pgd`` (random start, default step) by name; eps = 0 returns ``x`` unchanged."""
    if eps == 0:
        return x.detach().clone()
    if kind == "fgsm":
        return fgsm(model, x, y, eps)
    if kind == "pgd":
        return pgd(model, x, y, eps, steps=steps, generator=generator)
    raise ConfigError(f"unknown attack {kind!r}; choose fgsm or pgd")


# -- measuring -----------------------------------------------------------------------------------
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 500,
            device: torch.device | str = "cpu") -> torch.Tensor:
    """Predicted classes (N,) on the CPU, in eval mode, batch by batch."""
    out = []
    with _EvalMode(model), torch.inference_mode():
        for i in range(0, len(x), batch_size):
            out.append(model(x[i:i + batch_size].to(device)).argmax(1).cpu())
    return torch.cat(out)


@dataclass(frozen=True)
class CurvePoint:
    attack: str
    eps: float
    accuracy: float  # on the adversarial inputs
    n: int
    max_linf: float  # the largest |x' - x| seen: never above eps
    seconds: float


def accuracy_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps_values: Sequence[float], kind: Attack,
                   *, steps: int = 10, batch_size: int = 500, device: torch.device | str = "cpu", seed: int = 0,
                   progress: Progress | None = None) -> list[CurvePoint]:
    """Accuracy on ``kind`` adversarial examples of (x, y) (CPU tensors, pixels) at every eps."""
    progress = progress or NullProgress()
    gen = torch.Generator(device=torch.device(device)).manual_seed(seed)
    points = []
    for eps in eps_values:
        start = time.perf_counter()
        correct, max_linf = 0, 0.0
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
            adv = attack(model, xb, yb, eps, kind, steps=steps, generator=gen)
            max_linf = max(max_linf, float((adv - xb).abs().max()))
            with _EvalMode(model), torch.inference_mode():
                correct += int((model(adv).argmax(1) == yb).sum())
            progress.step(1)
        points.append(CurvePoint(kind, float(eps), correct / len(x), len(x), max_linf, time.perf_counter() - start))
        log.info("%s eps=%.4f accuracy=%.4f (%d images)", kind, eps, points[-1].accuracy, len(x))
    return points


def crosscheck_torchattacks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int = 10,
                            seed: int = 0, device: torch.device | str = "cpu") -> dict[str, float]:
    """The from-scratch attacks against torchattacks' FGSM and PGD on the same model, inputs and eps.

    FGSM is deterministic, so the images must agree to float precision. PGD's random start makes two runs
    differ, so its accuracies are compared with independent starts (they agree only statistically) and its
    images with the same start (the global RNG seeded alike before each), where they must agree exactly.
    """
    import torchattacks  # heavy: imported only when asked for

    xb, yb = x.to(device), y.to(device)
    alpha = PGD_ALPHA_FACTOR * eps / steps

    def acc(adv: torch.Tensor) -> float:
        with _EvalMode(model), torch.inference_mode():
            return float((model(adv).argmax(1) == yb).float().mean())

    ours_fgsm = fgsm(model, xb, yb, eps)
    theirs_fgsm = torchattacks.FGSM(model, eps=eps)(xb, yb)
    torch.manual_seed(seed)
    ours_pgd_same = pgd(model, xb, yb, eps, steps=steps, alpha=alpha)
    torch.manual_seed(seed)
    theirs_pgd = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)(xb, yb)
    ours_pgd = pgd(model, xb, yb, eps, steps=steps, alpha=alpha,
                   generator=torch.Generator(device=torch.device(device)).manual_seed(seed + 1))
    return {
        "n": len(x), "eps": eps,
        "fgsm_max_abs_diff": float((ours_fgsm - theirs_fgsm).abs().max()),
        "fgsm_accuracy_ours": acc(ours_fgsm), "fgsm_accuracy_torchattacks": acc(theirs_fgsm),
        "pgd_same_start_max_abs_diff": float((ours_pgd_same - theirs_pgd).abs().max()),
        "pgd_accuracy_ours": acc(ours_pgd), "pgd_accuracy_torchattacks": acc(theirs_pgd),
    }


# -- adversarial training --------------------------------------------------------------------------
def adversarial_fit(model: nn.Module, loader: Any, optimizer: torch.optim.Optimizer, *, epochs: int, eps: float,
                    device: torch.device | str, kind: Attack = "fgsm", clean_weight: float = 0.5, steps: int = 7,
                    seed: int = 0, progress: Progress | None = None) -> History:
    """Train ``model`` (pixel inputs) on ``clean_weight * CE(x) + (1 - clean_weight) * CE(x_adv)``.

    ``x_adv`` is made from each batch by the model as it is at that step (eval mode, as at test time), then
    the clean and adversarial halves go through the model together in train mode. The history's
    train_accuracy is on the adversarial half: the number the objective is pushing up.
    """
    if epochs < 1 or not 0 <= clean_weight <= 1:
        raise ConfigError(f"need epochs >= 1 and clean_weight in [0, 1], got {epochs} and {clean_weight}")
    progress = progress or NullProgress()
    gen = torch.Generator(device=torch.device(device)).manual_seed(seed)
    model.to(device)
    history = History()
    progress.stage(f"adversarial training ({kind}, eps={eps:g})", total=epochs * len(loader))
    for _ in range(epochs):
        start = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)  # (B, C, H, W) pixels, (B,)
            adv = attack(model, xb, yb, eps, kind, steps=steps, generator=gen)
            model.train()
            logits = model(torch.cat([xb, adv]))  # (2B, K): one pass for both halves
            clean_logits, adv_logits = logits[:len(xb)], logits[len(xb):]
            loss = (clean_weight * nn.functional.cross_entropy(clean_logits, yb)
                    + (1 - clean_weight) * nn.functional.cross_entropy(adv_logits, yb))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            loss_sum += value * len(yb)
            correct += int((adv_logits.detach().argmax(1) == yb).sum())
            seen += len(yb)
            history.iteration_loss.append(value)
            progress.step(1, loss=value)
        history.end_epoch(time.perf_counter() - start, loss_sum, correct, seen,
                          float(optimizer.param_groups[0]["lr"]))
        progress.epoch(history.epochs, history.epoch_metrics(history.epochs - 1))
    model.eval()
    return history


# -- figures ---------------------------------------------------------------------------------------
def curve_figure(curves: Mapping[str, Sequence[CurvePoint]], title: str, *, eps_scale: float = 1.0,
                 eps_label: str = "epsilon (pixel units, images in [0, 1])") -> Any:
    """Accuracy against eps, one line per named curve; ``eps_scale`` rescales the x axis (255 for /255)."""
    from mastery.nn.plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, points in curves.items():
        ax.plot([p.eps * eps_scale for p in points], [p.accuracy for p in points],
                marker="o", linestyle="--" if points[0].attack == "pgd" else "-", label=name)
    ax.set_xlabel(eps_label)
    ax.set_ylabel("accuracy on adversarial inputs")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def example_grid(clean: torch.Tensor, adv: torch.Tensor, labels: Sequence[int], clean_pred: Sequence[int],
                 adv_pred: Sequence[int], class_names: Sequence[str], title: str) -> Any:
    """Clean images on the top row, their adversarial versions below, each with its prediction."""
    from mastery.nn.plots import image_grid

    def to_uint8(t: torch.Tensor) -> np.ndarray:  # (N, C, H, W) in [0, 1] -> (N, H, W[, C]) uint8
        arr = (t.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        return arr[:, 0] if arr.shape[1] == 1 else arr.transpose(0, 2, 3, 1)

    n = len(clean)
    captions = [f"{class_names[labels[i]]}: {class_names[clean_pred[i]]}" for i in range(n)]
    captions += [f"adv: {class_names[adv_pred[i]]}" for i in range(n)]
    return image_grid(np.concatenate([to_uint8(clean), to_uint8(adv)]), captions, cols=n, title=title)
