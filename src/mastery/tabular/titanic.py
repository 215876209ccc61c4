"""Titanic survival: feature engineering, the preprocessing pipeline and cross-validated evaluation.

The whole preprocessing (feature engineering, imputation, one-hot encoding, scaling) lives inside
one scikit-learn Pipeline, so cross-validation refits it on each training fold and never lets
statistics of the held-out fold (the median age, the scaling) leak into training.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import StratifiedKFold, cross_val_predict, cross_validate, learning_curve
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from mastery.tabular.schema import require_columns

log = logging.getLogger(__name__)

TARGET = "Survived"
RAW_COLUMNS = ("Pclass", "Sex", "Age", "SibSp", "Parch", "Fare", "Embarked")
ENGINEERED_COLUMNS = ("Name",)  # the title is parsed from the name
NUMERIC = ("Age", "SibSp", "Parch")
SKEWED = ("Fare",)  # long right tail (0 to 512): log1p before scaling
CATEGORICAL = ("Sex", "Embarked", "Pclass")
ENGINEERED_NUMERIC = ("FamilySize",)
ENGINEERED_CATEGORICAL = ("Title", "IsAlone")

# Rare titles are pooled so that one-hot columns are not fitted on a handful of passengers.
_TITLE_MAP = {"Mlle": "Miss", "Ms": "Miss", "Mme": "Mrs", "Mr": "Mr", "Mrs": "Mrs", "Miss": "Miss",
              "Master": "Master"}

SCORING = ("precision", "recall", "f1", "roc_auc")


def required_columns(engineered: bool = True) -> tuple[str, ...]:
    return RAW_COLUMNS + (ENGINEERED_COLUMNS if engineered else ())


def add_features(df: pd.DataFrame) -> pd.DataFrame:
    """Return a copy with FamilySize (SibSp + Parch + 1), IsAlone and Title (Mr, Mrs, Miss, Master, Rare)."""
    require_columns(df, ("SibSp", "Parch", "Name"), "the Titanic frame")
    out = df.copy()
    out["FamilySize"] = out["SibSp"] + out["Parch"] + 1
    out["IsAlone"] = (out["FamilySize"] == 1).astype(int)
    # Names look like "Braund, Mr. Owen Harris": the title sits between the comma and the full stop.
    title = out["Name"].astype(str).str.extract(r",\s*([^\.]+)\.", expand=False).str.strip()
    out["Title"] = title.map(_TITLE_MAP).fillna("Rare").astype(object)
    return out


def build_preprocessor(engineered: bool = True) -> Pipeline:
    """Feature engineering (optional) followed by a ColumnTransformer.

    Numeric: median imputation (Age is missing for 20% of passengers) and standard scaling;
    Fare additionally log1p'd. Categorical: most-frequent imputation (Embarked is missing twice),
    then one-hot with ``handle_unknown="ignore"`` so a category unseen in training encodes as all zeros.
    """
    numeric = list(NUMERIC) + (list(ENGINEERED_NUMERIC) if engineered else [])
    categorical = list(CATEGORICAL) + (list(ENGINEERED_CATEGORICAL) if engineered else [])
    columns = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            ("fare", make_pipeline(SimpleImputer(strategy="median"),
                                   FunctionTransformer(np.log1p, feature_names_out="one-to-one"),
                                   StandardScaler()), list(SKEWED)),
            ("cat", make_pipeline(FunctionTransformer(_as_object, feature_names_out="one-to-one"),
                                  SimpleImputer(strategy="most_frequent"),
                                  OneHotEncoder(handle_unknown="ignore", sparse_output=False)), categorical),
        ],
        remainder="drop",
        verbose_feature_names_out=False,
    )
    steps: list[tuple[str, Any]] = []
    if engineered:
        steps.append(("features", FunctionTransformer(add_features, feature_names_out=_added_names)))
    steps.append(("columns", columns))
    return Pipeline(steps)


def _added_names(_: object, input_features: Any) -> np.ndarray:
    return np.asarray([*input_features, "FamilySize", "IsAlone", "Title"], dtype=object)


def _as_object(frame: pd.DataFrame) -> pd.DataFrame:
    # Pclass is an integer and Sex a pandas string column; casting all to object gives the imputer
    # and the encoder one dtype to work with, and turns pandas' missing markers into NaN.
    return frame.astype(object).where(frame.notna(), np.nan)


def split_xy(df: pd.DataFrame, engineered: bool = True) -> tuple[pd.DataFrame, np.ndarray]:
    """Validate the frame and return (features, Survived as 0/1 ints)."""
    require_columns(df, (*required_columns(engineered), TARGET), "the Titanic frame")
    y = df[TARGET].to_numpy()
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"column '{TARGET}' must hold only 0 and 1")
    return df.drop(columns=[TARGET]), y.astype(int)


def make_model(preprocessor: Pipeline, estimator: ClassifierMixin) -> Pipeline:
    return Pipeline([("prep", preprocessor), ("model", estimator)])


def cross_validated_scores(
    model: Pipeline, x: pd.DataFrame, y: np.ndarray, folds: int, seed: int
) -> dict[str, dict[str, float]]:
    """Mean and std over stratified folds of precision, recall, F1 and ROC-AUC, test and train."""
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    res = cross_validate(model, x, y, cv=cv, scoring=list(SCORING), return_train_score=True, n_jobs=1)
    out: dict[str, dict[str, float]] = {}
    for name in SCORING:
        test, train = res[f"test_{name}"], res[f"train_{name}"]
        out[name] = {"mean": float(test.mean()), "std": float(test.std()), "train": float(train.mean())}
    return out


def out_of_fold_proba(model: Pipeline, x: pd.DataFrame, y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """P(survived) for every passenger from the fold in which it was held out (for the ROC curve)."""
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(model, x, y, cv=cv, method="predict_proba", n_jobs=1)[:, 1]


def learning_curve_scores(
    model: Pipeline, x: pd.DataFrame, y: np.ndarray, folds: int, seed: int, points: int, scoring: str = "f1"
) -> dict[str, np.ndarray]:
    """Train and validation scores as the training set grows: the bias-variance picture."""
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    sizes, train, val = learning_curve(
        model, x, y, cv=cv, scoring=scoring, train_sizes=np.linspace(0.1, 1.0, points), n_jobs=1,
        shuffle=False,
    )
    return {"sizes": sizes, "train_mean": train.mean(axis=1), "train_std": train.std(axis=1),
            "val_mean": val.mean(axis=1), "val_std": val.std(axis=1)}
