"""L8 · MLflow setup and tracking: the L7 CIFAR-10 training, instrumented.

The L7 lab already reports through progress hooks (params, per-epoch metrics, the best
model's ``.pth``); here those hooks feed an MLflow run in a SQLite-backed store, and the lab
then reads everything back through the MLflow client to show it was really recorded: the
hyperparameters, one point per epoch for every curve, and a checkpoint that loads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from annotated_types import Interval

from mastery.core.labs import new_report
from mastery.core.progress import FanoutProgress, Progress
from mastery.core.report import Report

EXPECTED_PARAMS = ("lr", "batch_size", "epochs", "dropout", "weight_decay")


REQUIRES: tuple[str, ...] = ("cifar10",)  # registered assets the tiny preset reads


@dataclass(frozen=True)
class Config:
    l7_preset: str = "full"  # which L7 preset to train
    epochs: Annotated[int, Interval(ge=1, le=1000)] | None = None  # override the L7 preset's epochs (None keeps it)
    tracking_dir: str = "runs"  # the store is <tracking_dir>/mlflow.db, artifacts in <tracking_dir>/mlartifacts
    experiment: str = "mastery-l08-cifar10"
    seed: int = 0

    def validate(self) -> None:
        from mastery.core.errors import ConfigError
        from mastery.core.labs import load_lab

        l07 = load_lab("l07").module  # through the lab registry, like every other user of a lab
        if self.l7_preset not in l07.PRESETS:
            raise ConfigError(f"l7_preset must be one of {', '.join(l07.PRESETS)}, got {self.l7_preset!r}")


# The numbers that summarise a run: the README table and the conformance test read them from here.
HEADLINE = ("logged_params", "logged_metric_points", "val_accuracy_gain")

PRESETS = {
    "tiny": Config(l7_preset="tiny"),
    # Tracking is the point here, not accuracy: 6 epochs of L7's full set-up keep this to minutes.
    "full": Config(l7_preset="full", epochs=6),
}


def run(config: Config, progress: Progress) -> Report:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    import torch
    from mlflow.tracking import MlflowClient

    from mastery.core.labs import load_lab
    from mastery.ops.tracking import MlflowProgress, tracking_uri_for

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # our own progress is enough
    l07 = load_lab("l07").module
    report = new_report("l08", config)
    l7_config = dataclasses.replace(l07.PRESETS[config.l7_preset], seed=config.seed)
    if config.epochs is not None:
        l7_config = dataclasses.replace(l7_config, epochs=config.epochs)

    folder = Path(config.tracking_dir)
    folder.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri_for(folder)
    tracker = MlflowProgress(experiment=config.experiment, tracking_uri=uri,
                             run_name=f"l07-{config.l7_preset}-seed{config.seed}",
                             tags={"mastery.lab": "l07", "mastery.preset": config.l7_preset})
    try:
        l7_report = l07.run(l7_config, FanoutProgress(progress, tracker))
        l7_report.preset = config.l7_preset
        tracker.finish(l7_report)
    except BaseException as exc:
        tracker.fail(exc)
        raise
    report.device = l7_report.device

    # Read the run back through the client, as a teammate opening the store would.
    client = MlflowClient(tracking_uri=uri)
    run_info = client.get_run(tracker.run_id)
    report.check("run_finished", run_info.info.status == "FINISHED", "the MLflow run ends FINISHED",
                 run_info.info.status)
    params = run_info.data.params
    missing = [p for p in EXPECTED_PARAMS if p not in params]
    report.metric("logged_params", len(params))
    report.check("hyperparameters_logged", not missing, f"params include {', '.join(EXPECTED_PARAMS)}",
                 ", ".join(missing) or "all present")
    report.check("params_match_config", params.get("lr") == str(l7_config.lr)
                 and params.get("batch_size") == str(l7_config.batch_size),
                 "logged lr and batch_size equal the config's", f"lr={params.get('lr')}")

    curves = {}
    for model in ("baseline", "regularized"):
        for key in ("train_loss", "val_loss", "val_accuracy"):
            history = client.get_metric_history(tracker.run_id, f"{model}_{key}")
            curves[f"{model}_{key}"] = [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)]
    points = {name: len(values) for name, values in curves.items()}
    report.metric("logged_metric_points", sum(points.values()))
    report.check("one_point_per_epoch", all(n == l7_config.epochs for n in points.values()),
                 f"every curve has {l7_config.epochs} points (one per epoch)", min(points.values()))

    artifacts = [a.path for a in client.list_artifacts(tracker.run_id)]
    checkpoints = sorted(p for p in artifacts if p.endswith(".pth"))
    report.check("best_models_saved", len(checkpoints) == 2, "the best .pth of each model is an artifact",
                 ", ".join(checkpoints))
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(run_id=tracker.run_id, artifact_path=checkpoints[0],
                                                    dst_path=tmp, tracking_uri=uri)
        state = torch.load(local, map_location="cpu", weights_only=True)
        size_mb = Path(local).stat().st_size / 2**20
    tensors_only = isinstance(state, dict) and all(torch.is_tensor(v) for v in state.values())
    report.check("checkpoint_loads_safely", tensors_only,
                 "the artifact loads with torch.load(weights_only=True) as a state_dict of tensors",
                 f"{len(state)} tensors")
    report.timing("checkpoint_mb", size_mb)
    for key in ("baseline_val_accuracy", "regularized_val_accuracy", "val_accuracy_gain"):
        report.metric(key, l7_report.metrics[key])

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for model, style in (("baseline", "--"), ("regularized", "-")):
        for key, ax in (("val_accuracy", axes[0]), ("val_loss", axes[1])):
            points = curves[f"{model}_{key}"]
            ax.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", label=model)
            ax.set_xlabel("epoch (MLflow step)")
            ax.set_ylabel(key)
            ax.grid(True, alpha=0.3)
            ax.legend()
    fig.suptitle("Curves read back from the MLflow store")
    report.figure("mlflow_curves", fig)
    report.table("Artifacts in the MLflow run", [{"artifact": a} for a in artifacts])
    report.note(
        f"Tracking store: `sqlite:///{folder}/mlflow.db` (SQLite backend; the file store is deprecated), experiment "
        f"`{config.experiment}`. Open it with `mlflow ui --backend-store-uri sqlite:///{folder}/mlflow.db` "
        "and browse http://127.0.0.1:5000. Any lab can be tracked the same way with "
        "`mastery labs run <lab> --track`."
    )
    return report
