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
                         extra={"threshold": THRESHOLD, "labels": {str(k): v for k, v in LABELS.items()}})


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
