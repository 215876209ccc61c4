"""Unit tests for mastery.tabular: from-scratch logistic regression and the preprocessing pipelines."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("sklearn")

from sklearn.linear_model import LogisticRegression, RidgeCV

from mastery.tabular import house_prices, titanic
from mastery.tabular.logistic import (
    fit_logistic_gd,
    logistic_gradient,
    logistic_loss,
    numerical_gradient,
    sigmoid,
)
from mastery.tabular.schema import MissingColumnsError


def _classification(n: int = 300, d: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    logits = x @ rng.standard_normal(d) + 0.3
    y = (rng.random(n) < sigmoid(logits)).astype(int)
    return x, y


# -- logistic regression from scratch ------------------------------------------------------------

@pytest.mark.parametrize("c", [0.1, 1.0, 10.0])
def test_gradient_descent_matches_sklearn(c: float) -> None:
    x, y = _classification()
    fit = fit_logistic_gd(x, y, c=c, max_iter=20_000, tol=1e-10)
    sk = LogisticRegression(C=c, tol=1e-12, max_iter=10_000).fit(x, y)
    assert fit.converged
    np.testing.assert_allclose(fit.coef, sk.coef_[0], atol=1e-6)
    assert fit.intercept == pytest.approx(sk.intercept_[0], abs=1e-6)
    np.testing.assert_allclose(fit.predict_proba(x), sk.predict_proba(x)[:, 1], atol=1e-6)
    # The loss only goes down: the 1/L step never overshoots on this convex objective.
    assert np.all(np.diff(fit.losses) <= 1e-12)


def test_gradient_matches_finite_differences() -> None:
    x, y = _classification(n=50, d=4, seed=1)
    rng = np.random.default_rng(2)
    w, b = rng.standard_normal(4), 0.7
    gw, gb = logistic_gradient(w, b, x, y, c=0.5)
    nw, nb = numerical_gradient(w, b, x, y, c=0.5)
    np.testing.assert_allclose(gw, nw, rtol=1e-6, atol=1e-8)
    assert gb == pytest.approx(nb, rel=1e-6, abs=1e-8)


def test_sigmoid_and_loss_are_stable_for_large_logits() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow in exp would raise here
        s = sigmoid(np.array([-1000.0, 0.0, 1000.0]))
        loss = logistic_loss(np.array([100.0]), 0.0, np.array([[10.0], [-10.0]]), np.array([0.0, 1.0]), c=1.0)
    np.testing.assert_allclose(s, [0.0, 0.5, 1.0])
    assert np.isfinite(loss) and loss > 900  # two confident mistakes of margin 1000 each


def test_gradient_descent_rejects_bad_input() -> None:
    x, y = _classification(n=20)
    with pytest.raises(ValueError, match="only 0 and 1"):
        fit_logistic_gd(x, y * 2)
    with pytest.raises(ValueError, match=r"\(20, 5\)"):
        fit_logistic_gd(x, y[:10])
    x_nan = x.copy()
    x_nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_logistic_gd(x_nan, y)


# -- Titanic pipeline ----------------------------------------------------------------------------

def _passengers() -> pd.DataFrame:
    return pd.DataFrame({
        "Survived": [0, 1, 1, 0, 1, 0],
        "Pclass": [3, 1, 2, 3, 1, 2],
        "Name": ["Braund, Mr. Owen", "Cumings, Mrs. John", "Heikkinen, Miss. Laina", "Allen, Mr. William",
                 "Futrelle, Master. Jacques", "Moran, Mr. James"],
        "Sex": ["male", "female", "female", "male", "male", "male"],
        "Age": [22.0, np.nan, 26.0, 35.0, np.nan, 40.0],
        "SibSp": [1, 1, 0, 0, 1, 0],
        "Parch": [0, 0, 0, 0, 2, 0],
        "Fare": [7.25, 71.28, np.nan, 8.05, 53.1, 8.46],
        "Embarked": ["S", "C", "S", np.nan, "S", "Q"],
    })


@pytest.mark.unit
def test_titanic_preprocessor_imputes_and_ignores_unseen_categories() -> None:
    x, y = titanic.split_xy(_passengers())
    prep = titanic.build_preprocessor(engineered=True)
    train = prep.fit_transform(x, y)
    names = list(prep.get_feature_names_out())
    assert np.isfinite(train).all()
    assert "Title_Master" in names and "FamilySize" in names
    # Imputed ages equal the training median, so after scaling the two missing ages coincide.
    age = names.index("Age")
    assert train[1, age] == train[4, age]

    new = x.iloc[[0]].copy()
    new["Embarked"] = "X"  # a port never seen in training
    new["Pclass"] = 4
    new["Name"] = "Smith, Dr. John"  # pooled into the Rare title, also unseen
    new["Age"] = np.nan
    row = prep.transform(new)[0]
    assert np.isfinite(row).all()
    for prefix in ("Embarked_", "Pclass_", "Title_"):
        assert all(row[i] == 0 for i, n in enumerate(names) if n.startswith(prefix)), prefix


@pytest.mark.unit
def test_titanic_missing_column_is_named() -> None:
    with pytest.raises(MissingColumnsError, match="'Age'") as info:
        titanic.split_xy(_passengers().drop(columns=["Age"]))
    assert info.value.missing == ["Age"]
    with pytest.raises(MissingColumnsError, match="'Name'"):
        titanic.add_features(_passengers().drop(columns=["Name"]))
    with pytest.raises(ValueError, match="'Survived'"):
        titanic.split_xy(_passengers().assign(Survived=[0, 1, 2, 0, 1, 0]))


def test_titanic_cross_validation_is_deterministic() -> None:
    x, y = titanic.split_xy(pd.concat([_passengers()] * 5, ignore_index=True))
    model = titanic.make_model(titanic.build_preprocessor(), LogisticRegression())
    a = titanic.cross_validated_scores(model, x, y, folds=3, seed=0)
    b = titanic.cross_validated_scores(model, x, y, folds=3, seed=0)
    assert a == b
    assert set(a) == {"precision", "recall", "f1", "roc_auc"}


# -- House prices pipeline -----------------------------------------------------------------------

def _houses(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    area = rng.lognormal(7.2, 0.4, n)
    hood = rng.choice(["NAmes", "OldTown", "Edwards"], n).astype(object)
    hood[:3] = np.nan
    lot = rng.lognormal(9, 1.0, n)
    lot[5] = np.nan
    price = np.exp(10 + 0.8 * np.log(area) + 0.1 * (hood == "NAmes") + rng.normal(0, 0.05, n))
    return pd.DataFrame({"Id": np.arange(n), "GrLivArea": area, "LotArea": lot, "Neighborhood": hood,
                         "MSSubClass": rng.choice([20, 60], n), "SalePrice": price})


@pytest.mark.unit
def test_house_linear_preprocessor_handles_missing_and_unseen() -> None:
    x, _ = house_prices.split_xy(_houses(), drop_outliers=False)
    assert "Id" not in x and "SalePrice" not in x
    numeric, categorical = house_prices.column_types(x)
    assert numeric == ["GrLivArea", "LotArea"] and categorical == ["Neighborhood", "MSSubClass"]
    prep = house_prices.build_linear_preprocessor(numeric, categorical)
    train = prep.fit_transform(x)
    names = list(prep.get_feature_names_out())
    assert np.isfinite(train).all()
    assert "Neighborhood_None" in names  # missing is a category of its own
    skew = prep.named_transformers_["num"][1]
    assert skew.skewed_.tolist() == [True, True]  # lognormal areas are right-skewed
    new = x.iloc[[0]].assign(Neighborhood="Atlantis", MSSubClass=999, LotArea=np.nan)
    row = prep.transform(new)[0]
    assert np.isfinite(row).all()
    assert all(row[i] == 0 for i, n in enumerate(names) if n.startswith("Neighborhood_"))

    tree = house_prices.build_tree_preprocessor(numeric, categorical, impute_numeric=False).fit(x)
    codes = tree.transform(new)[0]
    assert codes[2] == -1  # unseen neighbourhood code
    assert np.isnan(codes[1])  # XGBoost receives the missing lot area as NaN


@pytest.mark.unit
def test_house_split_and_features_name_missing_columns() -> None:
    with pytest.raises(MissingColumnsError, match="'SalePrice'"):
        house_prices.split_xy(_houses().drop(columns=["SalePrice"]))
    with pytest.raises(MissingColumnsError, match="'YearBuilt'"):
        house_prices.add_features(_houses())
    with pytest.raises(ValueError, match="positive"):
        house_prices.split_xy(_houses().assign(SalePrice=0.0))


@pytest.mark.unit
def test_house_outliers_dropped_and_cv_recovers_signal() -> None:
    df = _houses(80)
    df.loc[0, "GrLivArea"] = 5000.0
    x, y = house_prices.split_xy(df, drop_outliers=True)
    assert len(x) == 79 and np.allclose(y, np.log(df["SalePrice"].iloc[1:]))
    numeric, categorical = house_prices.column_types(x)
    model = house_prices.make_model(house_prices.build_linear_preprocessor(numeric, categorical),
                                    RidgeCV(alphas=(0.01, 0.1, 1.0)), engineered=False)
    result = house_prices.cross_validate_rmse(model, x, y, folds=4, seed=0)
    assert result.fold_rmse.shape == (4,)
    assert result.rmse < 0.1  # the noise level is 0.05; the price spread is ~0.3
    assert np.all(result.oof_pred != 0)  # every row was predicted once
