"""L6 · Optimization techniques: the convergence battle of SGD, momentum, Adam, RMSProp and cosine LR."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np
from annotated_types import Interval

from mastery.core.config import Fraction
from mastery.core.progress import Progress
from mastery.core.report import Report
from mastery.core.runtime import Device

# name -> (optimizer kind for build_optimizer, which lr field, cosine schedule?)
CONTESTANTS: dict[str, tuple[str, str, bool]] = {
    "sgd": ("sgd", "lr_sgd", False),
    "sgd_momentum": ("sgd_momentum", "lr_sgd", False),
    "adam": ("adam", "lr_adaptive", False),
    "rmsprop": ("rmsprop", "lr_adaptive", False),
    "adam_cosine": ("adam", "lr_adaptive", True),
}


REQUIRES: tuple[str, ...] = ("mnist",)  # registered assets the tiny preset reads


@dataclass(frozen=True)
class Config:
    # MLP 784 -> hidden... -> 10, the same for every optimizer
    hidden: tuple[Annotated[int, Interval(ge=1, le=65_536)], ...] = (256, 128)
    epochs: Annotated[int, Interval(ge=1, le=1000)] = 10
    batch_size: Annotated[int, Interval(ge=1, le=65_536)] = 128
    lr_sgd: Annotated[float, Interval(gt=0, le=10)] = 0.01  # plain SGD and SGD + momentum
    momentum: Annotated[float, Interval(ge=0, lt=1)] = 0.9
    # Adam, RMSProp, Adam + cosine (annealed to 0 over all steps)
    lr_adaptive: Annotated[float, Interval(gt=0, le=10)] = 1e-3
    # a seeded subset of the 60,000 training images keeps it to minutes
    train_size: Annotated[int, Interval(ge=1, le=60_000)] | None = 30_000
    test_size: Annotated[int, Interval(ge=1, le=10_000)] | None = None
    device: Device = "auto"
    min_test_accuracy: Fraction = 0.9  # every optimizer must reach this
    seed: int = 0


# The numbers that summarise a run: the README table and the conformance test read them from here.
HEADLINE = ("final_loss_sgd", "final_loss_sgd_momentum", "final_loss_adam", "final_loss_rmsprop",
            "final_loss_adam_cosine")

PRESETS = {
    "tiny": Config(hidden=(64,), epochs=1, batch_size=64, train_size=2000, test_size=1000,
                   min_test_accuracy=0.2),
    "full": Config(),
}


def run(config: Config, progress: Progress) -> Report:
    import copy

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from matplotlib.ticker import MaxNLocator

    from mastery.assets.loaders import load_mnist
    from mastery.nn.data import MNIST_MEAN, MNIST_STD, ImageArrayDataset, make_loader, subsample
    from mastery.nn.models import MLP
    from mastery.nn.plots import ema
    from mastery.nn.train import History, build_optimizer, evaluate, fit, start_torch_report

    report, device = start_torch_report("l06", config)
    dev = str(device)

    data = load_mnist()
    x_train, y_train = subsample(data["x_train"], data["y_train"], config.train_size, config.seed)
    x_test, y_test = subsample(data["x_test"], data["y_test"], config.test_size, config.seed)
    norm = {"mean": MNIST_MEAN, "std": MNIST_STD, "num_classes": 10}
    train_ds = ImageArrayDataset(x_train, y_train, **norm)
    test_loader = make_loader(ImageArrayDataset(x_test, y_test, **norm), 1000, shuffle=False, device=dev)

    # One model, one initialisation: every contestant starts from these exact weights.
    torch.manual_seed(config.seed)
    model = MLP(28 * 28, config.hidden, 10)
    init_state = copy.deepcopy(model.state_dict())
    progress.params({"hidden": ",".join(map(str, config.hidden)), "epochs": config.epochs,
                     "batch_size": config.batch_size, "lr_sgd": config.lr_sgd, "momentum": config.momentum,
                     "lr_adaptive": config.lr_adaptive, "n_train": len(train_ds), "device": dev})

    histories: dict[str, History] = {}
    rows = []
    for name, (kind, lr_field, cosine) in CONTESTANTS.items():
        model.load_state_dict(init_state)
        torch.manual_seed(config.seed)
        lr = getattr(config, lr_field)
        optimizer = build_optimizer(kind, model.parameters(), lr, momentum=config.momentum)
        # The same seed gives every contestant the same sequence of shuffled batches.
        loader = make_loader(train_ds, config.batch_size, shuffle=True, seed=config.seed, device=dev)
        scheduler = None
        if cosine:  # lr follows half a cosine from lr to 0 over every step of the run
            steps = config.epochs * len(loader)
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        history = fit(model, loader, optimizer, epochs=config.epochs, device=device, scheduler=scheduler,
                      scheduler_step="batch", progress=progress, prefix=f"{name}_")
        test = evaluate(model, test_loader, device)
        histories[name] = history
        report.metric(f"final_loss_{name}", history.train_loss[-1])
        report.metric(f"test_accuracy_{name}", test.accuracy)
        report.timing(f"seconds_per_epoch_{name}", float(np.mean(history.epoch_seconds)))
        rows.append({"optimizer": name, "lr": lr, "schedule": "cosine" if cosine else "constant",
                     "loss epoch 1": history.train_loss[0], "final loss": history.train_loss[-1],
                     "test accuracy": test.accuracy, "s/epoch": float(np.mean(history.epoch_seconds))})
    report.table("Convergence battle", rows)

    final = {name: h.train_loss[-1] for name, h in histories.items()}
    first_losses = {h.iteration_loss[0] for h in histories.values()}
    report.check("same_start", len(first_losses) == 1,
                 "every optimizer sees the same first-batch loss (same init, same data order)",
                 f"{len(first_losses)} distinct value(s)")
    report.check("momentum_beats_sgd", final["sgd_momentum"] < final["sgd"],
                 "SGD + momentum ends with a lower training loss than plain SGD",
                 f"{final['sgd_momentum']:.4f} vs {final['sgd']:.4f}")
    report.check("adam_beats_sgd", final["adam"] < final["sgd"],
                 "Adam ends with a lower training loss than plain SGD",
                 f"{final['adam']:.4f} vs {final['sgd']:.4f}")
    worst = min(report.metrics[f"test_accuracy_{n}"] for n in CONTESTANTS)
    report.check("all_learn", worst >= config.min_test_accuracy,
                 f"every optimizer reaches test accuracy >= {config.min_test_accuracy}", worst)
    best = min(final, key=final.__getitem__)
    report.metric("best_final_loss", final[best])

    fig, (ax_e, ax_i) = plt.subplots(1, 2, figsize=(12, 4.4))
    for k, (name, h) in enumerate(histories.items()):
        ax_e.plot(np.arange(1, h.epochs + 1), h.train_loss, "-o", ms=3, color=f"C{k}", label=name)
        ax_i.plot(np.arange(1, len(h.iteration_loss) + 1), ema(h.iteration_loss), color=f"C{k}", lw=1.2,
                  label=name)
    ax_e.set_xlabel("epoch")
    ax_e.set_ylabel("mean training loss over the epoch")
    ax_e.set_title("Loss vs epoch")
    steps = len(next(iter(histories.values())).iteration_loss) // config.epochs
    ax_i.set_xlabel(f"iteration ({steps} per epoch)")
    ax_i.set_ylabel("batch loss, EMA-smoothed (alpha 0.05)")
    ax_i.set_title("Loss vs iteration")
    ax_e.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (ax_e, ax_i):
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"Convergence battle on MNIST: MLP {'-'.join(map(str, (784, *config.hidden, 10)))}, "
                 f"same init, same batches, {len(train_ds)} training images")
    fig.tight_layout()
    report.figure("loss_curves", fig)

    ranking = ", ".join(f"{n} {final[n]:.4f}" for n in sorted(final, key=final.__getitem__))
    report.note(f"Final training loss, lowest first: {ranking}.")
    report.note(
        "Plain SGD takes a step of lr * gradient, so on the flat, badly scaled directions of the loss it "
        "crawls; momentum accumulates a velocity that keeps moving along consistent directions and damps the "
        "zig-zag across steep ones. Adam and RMSProp divide each parameter's step by a running RMS of its "
        "gradients, so every weight gets a step of roughly lr regardless of its gradient's scale. The cosine "
        "schedule starts at the same lr and anneals it to 0, trading early speed for a quieter finish: the "
        "noise of the minibatch steps shrinks with the lr, which typically gives the lowest final loss."
    )
    return report
