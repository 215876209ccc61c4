"""House prices (Ames, 1,460 x 81): preprocessing for linear and tree models, and K-fold evaluation.

The target is log(SalePrice): prices are right-skewed and the Kaggle metric is the RMSE of log prices,
so an error of 0.1 means about 10% of the price whatever the house costs. All preprocessing sits in
scikit-learn pipelines so each CV fold refits it on its own training rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, StandardScaler

from mastery.tabular.schema import require_columns

log = logging.getLogger(__name__)

TARGET = "SalePrice"
ID = "Id"
# Integer codes that name a category (dwelling type), not a quantity.
NUMERIC_AS_CATEGORY = ("MSSubClass",)
# Quality grades are ordered; as numbers (Po=1 .. Ex=5, missing = no such thing = 0) a linear model
# can use the order instead of learning one coefficient per grade.
QUALITY_COLUMNS = ("ExterQual", "ExterCond", "BsmtQual", "BsmtCond", "HeatingQC", "KitchenQual",
                   "FireplaceQu", "GarageQual", "GarageCond", "PoolQC")
_QUALITY = {"Po": 1, "Fa": 2, "TA": 3, "Gd": 4, "Ex": 5}
ENGINEERED_INPUTS = ("TotalBsmtSF", "1stFlrSF", "2ndFlrSF", "FullBath", "HalfBath", "BsmtFullBath",
                     "BsmtHalfBath", "YrSold", "YearBuilt", "YearRemodAdd")
# De Cock, who compiled the data, recommends dropping houses above 4,000 sq ft of living area
# (Journal of Statistics Education, 2011): partial sales and unusual homes that do not follow the
# market. Four of them are in the Kaggle training file.
OUTLIER_LIVING_AREA = 4000


def split_xy(df: pd.DataFrame, drop_outliers: bool = True) -> tuple[pd.DataFrame, np.ndarray]:
    """Validate the frame; return (features without Id and SalePrice, log(SalePrice))."""
    require_columns(df, (TARGET, "GrLivArea"), "the house-prices frame")
    if (df[TARGET] <= 0).any():
        raise ValueError(f"column '{TARGET}' must be positive to take its logarithm")
    if drop_outliers:
        df = df[df["GrLivArea"] <= OUTLIER_LIVING_AREA]
    y = np.log(df[TARGET].to_numpy(dtype=float))
    return df.drop(columns=[c for c in (TARGET, ID) if c in df.columns]).reset_index(drop=True), y


def add_features(df: pd.DataFrame) -> pd.DataFrame:
    """Total floor area, bathroom count and ages at sale, plus quality grades as numbers."""
    require_columns(df, ENGINEERED_INPUTS, "the house-prices frame")
    out = df.copy()
    zero = out[list(ENGINEERED_INPUTS)].fillna(0)  # a missing basement area means no basement
    out["TotalSF"] = zero["TotalBsmtSF"] + zero["1stFlrSF"] + zero["2ndFlrSF"]
    out["TotalBath"] = (zero["FullBath"] + 0.5 * zero["HalfBath"] + zero["BsmtFullBath"]
                        + 0.5 * zero["BsmtHalfBath"])
    out["HouseAge"] = zero["YrSold"] - zero["YearBuilt"]
    out["RemodAge"] = zero["YrSold"] - zero["YearRemodAdd"]
    for col in QUALITY_COLUMNS:
        if col in out.columns:
            out[f"{col}Num"] = out[col].map(_QUALITY).fillna(0).astype(float)
    return out


def column_types(x: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(numeric, categorical) column names: text columns and integer codes are categorical."""
    categorical = [c for c in x.columns
                   if not pd.api.types.is_numeric_dtype(x[c]) or c in NUMERIC_AS_CATEGORY]
    numeric = [c for c in x.columns if c not in categorical]
    return numeric, categorical


class SkewedLog1p(TransformerMixin, BaseEstimator):
    """log1p the columns whose training skewness exceeds ``threshold`` (and that are never negative).

    Which columns are skewed is decided in ``fit``, on the training fold only. Areas and prices have
    long right tails; log1p makes them closer to symmetric, which a linear model fits better.
    """

    def __init__(self, threshold: float = 0.75) -> None:
        self.threshold = threshold

    def fit(self, x: Any, y: Any = None) -> SkewedLog1p:
        arr = np.asarray(x, dtype=float)
        skew = pd.DataFrame(arr).skew().to_numpy()
        self.skewed_ = (np.abs(np.nan_to_num(skew)) > self.threshold) & (np.nanmin(arr, axis=0) >= 0)
        self.n_features_in_ = arr.shape[1]
        return self

    def transform(self, x: Any) -> np.ndarray:
        arr = np.array(x, dtype=float)
        # Clip at 0 so that a negative value in new data cannot produce NaN.
        arr[:, self.skewed_] = np.log1p(np.clip(arr[:, self.skewed_], 0, None))
        return arr

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray(input_features if input_features is not None else
                          [f"x{i}" for i in range(self.n_features_in_)], dtype=object)


def _as_object(frame: pd.DataFrame) -> pd.DataFrame:
    # One dtype (object, NaN for missing) for every categorical column, whatever pandas inferred.
    return frame.astype(object).where(frame.notna(), np.nan)


def _categorical_steps() -> list[Any]:
    # Missing categories mostly mean "no such thing" (no pool, no alley): a category of its own.
    return [FunctionTransformer(_as_object, feature_names_out="one-to-one"),
            SimpleImputer(strategy="constant", fill_value="None", keep_empty_features=True)]


def build_linear_preprocessor(
    numeric: list[str], categorical: list[str], skew_threshold: float = 0.75, min_frequency: int = 1
) -> ColumnTransformer:
    """Median-impute, log1p skewed and standardise numerics; one-hot categoricals.

    ``min_frequency`` > 1 pools categories rarer than that into one "infrequent" column; unseen
    categories at predict time go to that column (or to all zeros when there is none).
    """
    encoder = OneHotEncoder(handle_unknown="infrequent_if_exist", sparse_output=False,
                            min_frequency=min_frequency if min_frequency > 1 else None)
    return ColumnTransformer(
        [("num", make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True),
                               SkewedLog1p(skew_threshold), StandardScaler()), numeric),
         ("cat", make_pipeline(*_categorical_steps(), encoder), categorical)],
        verbose_feature_names_out=False,
    )


def build_tree_preprocessor(
    numeric: list[str], categorical: list[str], impute_numeric: bool
) -> ColumnTransformer:
    """Numerics as they are (XGBoost routes NaN itself; ``impute_numeric`` for models that cannot) and
    categoricals as integer codes: trees need neither scaling nor one-hot columns."""
    num: Any = SimpleImputer(strategy="median", keep_empty_features=True) if impute_numeric else "passthrough"
    codes = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
    return ColumnTransformer(
        [("num", num, numeric), ("cat", make_pipeline(*_categorical_steps(), codes), categorical)],
        verbose_feature_names_out=False,
    )


def make_model(preprocessor: ColumnTransformer, estimator: RegressorMixin, engineered: bool) -> Pipeline:
    steps: list[tuple[str, Any]] = []
    if engineered:
        steps.append(("features", FunctionTransformer(add_features)))
    return Pipeline([*steps, ("prep", preprocessor), ("model", estimator)])


def engineered_columns(x: pd.DataFrame, engineered: bool) -> pd.DataFrame:
    """The columns the preprocessor sees: ``x`` itself, or with :func:`add_features` applied."""
    return add_features(x) if engineered else x


@dataclass
class CVResult:
    fold_rmse: np.ndarray
    oof_pred: np.ndarray  # each row predicted by the model of the fold that held it out

    @property
    def rmse(self) -> float:
        return float(self.fold_rmse.mean())

    @property
    def std(self) -> float:
        return float(self.fold_rmse.std())


def cross_validate_rmse(
    model: Pipeline, x: pd.DataFrame, y: np.ndarray, folds: int, seed: int,
    on_fold: Callable[[int, float], None] | None = None,
) -> CVResult:
    """K-fold RMSE of log price (mean over folds), with out-of-fold predictions for plots."""
    cv = KFold(n_splits=folds, shuffle=True, random_state=seed)
    fold_rmse = []
    oof = np.zeros_like(y, dtype=float)
    for k, (train, test) in enumerate(cv.split(x)):
        fitted = clone(model).fit(x.iloc[train], y[train])
        pred = fitted.predict(x.iloc[test])
        oof[test] = pred
        fold_rmse.append(float(np.sqrt(np.mean((pred - y[test]) ** 2))))
        if on_fold is not None:
            on_fold(k, fold_rmse[-1])
    return CVResult(fold_rmse=np.asarray(fold_rmse), oof_pred=oof)


def xgb_regressor(n_estimators: int, learning_rate: float, max_depth: int, seed: int, n_jobs: int = 2) -> Any:
    """A small-depth, slowly-learning boosted ensemble; subsampling rows and columns adds regularisation."""
    from xgboost import XGBRegressor

    return XGBRegressor(n_estimators=n_estimators, learning_rate=learning_rate, max_depth=max_depth,
                        subsample=0.8, colsample_bytree=0.5, min_child_weight=2, reg_lambda=1.0,
                        tree_method="hist", n_jobs=n_jobs, random_state=seed)
