"""FGSM and PGD from scratch: agreement with torchattacks, the eps-ball, and adversarial training on a toy problem."""

import pytest
import torch
from torch import nn

from mastery.core.errors import ConfigError
from mastery.security import adversarial as adv


def _tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)).eval()


def _images(n: int = 32, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def _toy(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, 4, 4) pixels: pixel 0 is robust (moves 0.35 with the class, 10% of labels disagree with it);
    the 15 others each move only 0.1 with the class, with noise. Together the weak ones separate the classes
    perfectly, but an eps = 0.15 push wipes them out; only pixel 0 survives it."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=gen)
    s = (2 * y - 1).float()[:, None]  # (N, 1): -1 or +1
    flip = torch.where(torch.rand(n, 1, generator=gen) < 0.1, -1.0, 1.0)
    robust = 0.5 + 0.35 * s * flip  # (N, 1)
    weak = 0.5 + 0.1 * s + 0.05 * torch.randn(n, 15, generator=gen)  # (N, 15)
    return torch.cat([robust, weak], 1).clamp(0, 1).reshape(n, 1, 4, 4), y


def _toy_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))


def _train_plain(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(200):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((adv.predict(model, x) == y).float().mean())


def test_fgsm_equals_torchattacks():
    import torchattacks

    model, (x, y) = _tiny_cnn(), _images()
    ours = adv.fgsm(model, x, y, 0.1)
    theirs = torchattacks.FGSM(model, eps=0.1)(x, y)
    assert not torch.equal(ours, x)
    assert torch.equal(ours, theirs)


def test_pgd_same_start_equals_torchattacks_and_crosscheck_reports_it():
    model, (x, y) = _tiny_cnn(), _images()
    out = adv.crosscheck_torchattacks(model, x, y, 0.05, steps=3, seed=7)
    assert out["fgsm_max_abs_diff"] == 0.0
    assert out["pgd_same_start_max_abs_diff"] <= 1e-6
    assert out["n"] == len(y)


@pytest.mark.parametrize("eps", [0.01, 0.1, 0.3])
def test_pgd_stays_in_the_eps_ball_and_in_0_1(eps):
    model, (x, y) = _tiny_cnn(), _images()
    x = torch.cat([x, torch.zeros(2, 1, 8, 8), torch.ones(2, 1, 8, 8)])  # pixels at the edges of [0, 1]
    y = torch.cat([y, torch.tensor([0, 1, 2, 0])])
    out = adv.pgd(model, x, y, eps, steps=5, alpha=eps)  # a step as large as the ball: projection must act
    assert float((out - x).abs().max()) <= eps + 1e-6
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert float((out - x).abs().max()) > eps / 2  # it did move


def test_attacks_leave_the_model_in_its_mode_and_reject_bad_eps():
    model, (x, y) = _tiny_cnn(), _images()
    model.train()
    adv.pgd(model, x, y, 0.1, steps=2)
    assert model.training
    with pytest.raises(ConfigError, match="eps"):
        adv.fgsm(model, x, y, 2.0)


def test_pixel_model_puts_the_normalisation_inside():
    net, (x, _) = _tiny_cnn(), _images()
    wrapped = adv.PixelModel(net, [0.13], [0.31])
    with torch.no_grad():
        assert torch.allclose(wrapped(x), net((x - 0.13) / 0.31))
    with pytest.raises(ConfigError):
        adv.PixelModel(net, [0.1], [0.0])


def test_an_attack_lowers_the_accuracy_of_a_trained_model():
    x, y = _toy(600, 0)
    model = _train_plain(_toy_model(), x, y)
    xt, yt = _toy(400, 1)
    clean = _accuracy(model, xt, yt)
    points = adv.accuracy_curve(model, xt, yt, [0.0, 0.15], "fgsm")
    assert clean > 0.95 and points[0].accuracy == clean
    assert points[1].accuracy < 0.5
    assert points[1].max_linf <= 0.15 + 1e-6


def test_adversarial_training_raises_robust_accuracy():
    x, y = _toy(600, 0)
    xt, yt = _toy(400, 1)
    plain = _train_plain(_toy_model(), x, y)
    robust = _toy_model()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=50, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    history = adv.adversarial_fit(robust, loader, torch.optim.Adam(robust.parameters(), lr=0.02), epochs=15,
                                  eps=0.15, device="cpu", kind="pgd", clean_weight=0.5, steps=3)
    assert history.epochs == 15 and not robust.training
    before = adv.accuracy_curve(plain, xt, yt, [0.15], "pgd", steps=5)[0].accuracy
    after = adv.accuracy_curve(robust, xt, yt, [0.15], "pgd", steps=5)[0].accuracy
    assert after > before + 0.3, (before, after)
    assert after > 0.75  # the robust pixel alone gives about 0.9
