"""Experiment tracking with MLflow, through the lab Progress hooks.

Any lab run with ``--track`` logs its hyperparameters (``progress.params``), per-epoch metrics
(``progress.epoch``), the files it marks as artifacts (``progress.artifact``, e.g. the best
model's ``.pth``), its final metrics and its report.json into a SQLite-backed tracking store
(the file store is deprecated). Open the UI with
``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db``.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from mastery.core.errors import require
from mastery.core.progress import Progress

log = logging.getLogger(__name__)
DEFAULT_TRACKING_DIR = Path("runs")


def tracking_uri_for(folder: Path) -> str:
    return f"sqlite:///{(Path(folder) / 'mlflow.db').resolve()}"


def ensure_experiment(client: Any, experiment: str, tracking_uri: str, artifact_dir: Path | None = None) -> str:
    """The id of ``experiment``, created when missing (artifacts beside a SQLite store, in ``mlartifacts``)."""
    existing = client.get_experiment_by_name(experiment)
    if existing is not None:
        return str(existing.experiment_id)
    if artifact_dir is None and tracking_uri.startswith("sqlite:///"):
        artifact_dir = Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts"
    location = Path(artifact_dir).resolve().as_uri() if artifact_dir else None
    return str(client.create_experiment(experiment, artifact_location=location))


class MlflowProgress(Progress):
    """Logs a lab run to MLflow. The run starts on construction and ends on finish/fail."""

    def __init__(self, experiment: str, tracking_uri: str | None = None, artifact_dir: Path | None = None,
                 run_name: str | None = None, tags: dict[str, str] | None = None) -> None:
        require("mlflow", "ops")
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri or tracking_uri_for(DEFAULT_TRACKING_DIR)
        if tracking_uri is None:
            DEFAULT_TRACKING_DIR.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self.experiment_id = ensure_experiment(self.client, experiment, self.tracking_uri, artifact_dir)
        self.run_id = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags or {}).info.run_id
        self._ended = False
        log.info("tracking to %s (experiment %s, run %s)", self.tracking_uri, experiment, self.run_id)

    def params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        batch = [Param(k, str(v)) for k, v in params.items()]
        if batch:
            self.client.log_batch(self.run_id, params=batch)

    def epoch(self, epoch: int, metrics: dict[str, float], prefix: str = "") -> None:
        for key, value in metrics.items():
            self.client.log_metric(self.run_id, f"{prefix}{key}", float(value), step=int(epoch))

    def artifact(self, path: str, kind: str = "file") -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path="model" if kind == "model" else None)

    def finish(self, report: Any) -> None:
        for key, value in {**report.metrics, **report.timings}.items():
            self.client.log_metric(self.run_id, f"final_{key}", float(value))
        self.client.set_tag(self.run_id, "mastery.preset", report.preset)
        self.client.set_tag(self.run_id, "mastery.device", report.device)
        self.client.set_tag(self.run_id, "mastery.checks_passed", str(report.passed))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "report.json"
            path.write_text(json.dumps(report.to_dict(), indent=2))
            self.client.log_artifact(self.run_id, str(path))
        self._end("FINISHED")

    def fail(self, error: BaseException) -> None:
        self.client.set_tag(self.run_id, "mastery.error", str(error)[:500])
        self._end("FAILED" if not isinstance(error, KeyboardInterrupt) else "KILLED")

    def close(self) -> None:
        # run_lab always calls finish() or fail() before close(); a caller that did neither
        # gets the run marked KILLED rather than left RUNNING forever.
        self._end("KILLED")

    def _end(self, status: str) -> None:
        if not self._ended:
            self.client.set_terminated(self.run_id, status=status)
            self._ended = True
