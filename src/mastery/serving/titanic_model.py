"""The model the prediction API serves: L2's Titanic pipeline (feature engineering, imputation, one-hot,
scaling, logistic regression), cross-validated, refitted on every passenger and saved as a safe artifact."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MODEL_NAME = "titanic-survival"
REGISTRY_NAME = "titanic-logreg"  # its name in the trained-model registry (mastery.ops.registry)
THRESHOLD = 0.5
# The columns a request becomes before it reaches the pipeline (Ticket and Cabin are accepted but unused).
FEATURE_COLUMNS = ("Pclass", "Sex", "Age", "SibSp", "Parch", "Fare", "Embarked", "Name")


@dataclass(frozen=True)
class TrainedModel:
    model: Any
    training: dict[str, float | int | str]


def train_titanic(seed: int = 0, folds: int = 5, c: float = 1.0) -> TrainedModel:
    """Cross-validate the logistic-regression pipeline (for the recorded metrics), then fit it on all 891."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    from mastery.assets.loaders import load_titanic
    from mastery.tabular import titanic

    x, y = titanic.split_xy(load_titanic(), engineered=True)
    # Only the columns a request provides: the fitted pipeline checks column names at predict time.
    x = x[list(FEATURE_COLUMNS)]

    def make() -> Any:
        return titanic.make_model(titanic.build_preprocessor(True), LogisticRegression(C=c, max_iter=1000))

    # A few thousand rows: threaded BLAS gains nothing and spins on a shared machine.
    with threadpool_limits(limits=1):
        scores = titanic.cross_validated_scores(make(), x, y, folds, seed)
        model = make().fit(x, y)
        train_accuracy = float(np.mean(model.predict(x) == y))
    training = {"n_train": len(y), "cv_folds": folds, "seed": seed, "C": c, "train_accuracy": train_accuracy,
                **{f"cv_{name}": s["mean"] for name, s in scores.items()}}
    log.info("trained %s: CV F1 %.3f, ROC-AUC %.3f", MODEL_NAME, training["cv_f1"], training["cv_roc_auc"])
    return TrainedModel(model=model, training=training)


def save_titanic(trained: TrainedModel, path: str | Path) -> dict[str, Any]:
    """Save with the request schema as the sidecar's feature schema; return the sidecar content."""
    from mastery.serving.artifacts import save_artifact
    from mastery.serving.schemas import LABELS, Passenger

    return save_artifact(trained.model, path, name=MODEL_NAME, feature_schema=Passenger.model_json_schema(),
                         training=trained.training,
                         serving={"threshold": THRESHOLD, "labels": {str(k): v for k, v in LABELS.items()}})


def register_titanic(model_path: str | Path, *, metrics: dict[str, float] | None = None,
                     probe: dict[str, Any] | None = None, lab_config: dict[str, Any] | None = None,
                     name: str = REGISTRY_NAME, registry: Any = None) -> Any:
    """Register a saved artifact (the .skops file and its sidecar, bytes unchanged) as ``name@<next version>``."""
    from mastery.ops.registry import open_registry
    from mastery.serving.artifacts import read_sidecar, sidecar_path

    path = Path(model_path)
    meta = read_sidecar(path)
    reg = registry if registry is not None else open_registry()
    return reg.save(name, {path.name: path, sidecar_path(path).name: sidecar_path(path)}, kind="skops",
                    config={"lab_config": lab_config or {}, "features": list(FEATURE_COLUMNS),
                            "threshold": meta.get("threshold", THRESHOLD), "training": meta.get("training", {}),
                            "load": "mastery.serving.titanic_model.load_registered(name)"},
                    metrics=metrics or {k: v for k, v in meta.get("training", {}).items() if k.startswith("cv_")},
                    data_assets=["titanic"], probe=probe,
                    description="L25's Titanic survival pipeline (L2 features + logistic regression), as served")


def load_registered(name: str = REGISTRY_NAME, *, registry: Any = None) -> Any:
    """A verified :class:`~mastery.serving.artifacts.LoadedArtifact` from the model registry.

    The registry checks every file's sha256 and the training data's digest; the artifact loader then
    checks the sidecar and loads with skops under the code's own type allow-list.
    """
    from mastery.ops.registry import open_registry
    from mastery.serving.artifacts import load_artifact

    reg = registry if registry is not None else open_registry()
    loaded = reg.load(name)
    skops_files = [rel for rel in loaded.manifest["files"] if rel.endswith(".skops")]
    if len(skops_files) != 1:
        from mastery.core.errors import RegistryError

        raise RegistryError(f"{loaded.ref} holds {len(skops_files)} .skops files; expected one")
    artifact = load_artifact(loaded.path / skops_files[0])
    artifact.meta["registry_ref"] = str(loaded.ref)
    return artifact


def to_frame(passengers: list[dict[str, Any]]) -> Any:
    """Validated request dicts -> the DataFrame the pipeline was trained on, with the training dtypes.

    Explicit casts matter: a column that is None in every row would otherwise be an object column of
    Nones, which the median imputer cannot handle (a 500 for a valid request).
    """
    import pandas as pd

    frame = pd.DataFrame([{k: p.get(k) for k in FEATURE_COLUMNS} for p in passengers], columns=list(FEATURE_COLUMNS))
    for col in ("Pclass", "SibSp", "Parch"):
        frame[col] = frame[col].astype("int64")
    for col in ("Age", "Fare"):
        frame[col] = pd.to_numeric(frame[col], errors="raise").astype("float64")
    frame["Sex"] = frame["Sex"].astype(object)
    frame["Embarked"] = frame["Embarked"].astype(object).where(frame["Embarked"].notna(), np.nan)
    frame["Name"] = frame["Name"].fillna("").astype(str)  # no name -> no title -> "Rare"
    return frame


def predict_proba(model: Any, passengers: list[dict[str, Any]]) -> np.ndarray:
    """P(survived) for each passenger dict (keys as in the request schema; enums as their string values)."""
    return model.predict_proba(to_frame(passengers))[:, 1]
