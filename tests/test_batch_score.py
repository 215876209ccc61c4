"""`mastery predict batch-score`: the input rows come back unchanged with the probability and label the
in-process model gives (the API's scoring path), on both engines; bad input is one line, exit 2, and no
output file (an old one is left as it was)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mastery.cli import main
from tests.conftest import needs_mirror
from tests.ray_cluster import ray_local  # noqa: F401  (the module's shared Ray)

pytestmark = needs_mirror


@pytest.fixture(scope="module")
def titanic(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A trained, saved and registered Titanic model, and a Kaggle-format CSV of 891 + 3 passengers."""
    from mastery.assets.loaders import load_titanic
    from mastery.ops.registry import open_registry
    from mastery.serving.titanic_model import register_titanic, save_titanic, train_titanic

    root = tmp_path_factory.mktemp("titanic")
    artifact = root / "titanic.skops"
    save_titanic(train_titanic(seed=0, folds=2), artifact)
    register_titanic(artifact, registry=open_registry(root / "store"))
    frame = load_titanic()
    # Rows the pipeline must still take: no age, no port, no name (no title), a fare of 0.
    extra = pd.DataFrame([
        {"PassengerId": 9001, "Pclass": 3, "Sex": "male", "SibSp": 0, "Parch": 0, "Fare": 7.25},
        {"PassengerId": 9002, "Pclass": 1, "Sex": "female", "Age": 30, "SibSp": 1, "Parch": 2, "Fare": 0.0,
         "Name": "Doe, Mrs. Jane", "Embarked": "C"},
        {"PassengerId": 9003, "Pclass": 2, "Sex": "female", "Age": 0.42, "SibSp": 0, "Parch": 1, "Fare": 13.5,
         "Name": 'Quote, Miss. "Dot", with comma', "Embarked": "Q"},
    ])
    data = root / "in.csv"
    pd.concat([frame, extra], ignore_index=True).to_csv(data, index=False)
    return {"artifact": artifact, "store": root / "store", "csv": data}


def _expected(artifact_path: Path, csv_path: Path) -> np.ndarray:
    """P(survived) from the API's path: each row as a request dict through titanic_model.predict_proba."""
    from mastery.serving.artifacts import load_artifact
    from mastery.serving.titanic_model import FEATURE_COLUMNS, predict_proba

    frame = pd.read_csv(csv_path)
    passengers = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()
                   if k in FEATURE_COLUMNS} for row in frame.to_dict("records")]
    return predict_proba(load_artifact(artifact_path).model, passengers)


def _text(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _score(tmp_path: Path, source: Path, *extra: str, name: str = "out.csv") -> tuple[int, Path]:
    out = tmp_path / name
    return main(["predict", "batch-score", "--input", str(source), "--output", str(out), *extra]), out


def _check_output(src: Path, out: Path, expected: np.ndarray) -> None:
    given, scored = _text(src), _text(out)
    assert list(scored.columns) == [*given.columns, "probability", "label"]
    pd.testing.assert_frame_equal(scored[given.columns], given)  # every input row, as it was written
    proba = scored["probability"].astype(float).to_numpy()
    np.testing.assert_allclose(proba, expected, rtol=0, atol=1e-12)
    assert (scored["label"] == np.where(expected >= 0.5, "survived", "died")).all()
    assert 0 < (scored["label"] == "survived").mean() < 1


def test_local_engine_equals_in_process_predictions_by_registry_name(titanic, tmp_path, monkeypatch):
    monkeypatch.setenv("MASTERY_MODEL_STORE", str(titanic["store"]))
    rc, out = _score(tmp_path, titanic["csv"], "--model", "titanic-logreg", "--batch-size", "100")
    assert rc == 0
    _check_output(titanic["csv"], out, _expected(titanic["artifact"], titanic["csv"]))
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]  # no temporary file left


def test_ray_engine_writes_the_same_file(titanic, tmp_path, ray_local):  # noqa: F811
    rc, local = _score(tmp_path, titanic["csv"], "--artifact", str(titanic["artifact"]), name="local.csv")
    assert rc == 0
    rc, on_ray = _score(tmp_path, titanic["csv"], "--artifact", str(titanic["artifact"]), "--engine", "ray",
                        "--batch-size", "200", name="ray.csv")
    assert rc == 0
    _check_output(titanic["csv"], on_ray, _expected(titanic["artifact"], titanic["csv"]))
    a, b = _text(local), _text(on_ray)
    # Row for row the same file; probabilities to the last bits only where the batches were the same
    # (BLAS sums a batch of 200 rows in another order than one of 894).
    pd.testing.assert_frame_equal(a.drop(columns="probability"), b.drop(columns="probability"))
    np.testing.assert_allclose(a["probability"].astype(float), b["probability"].astype(float), rtol=0, atol=1e-12)


def _corrupt(src: Path, dst: Path, row: int, column: str, value: str) -> Path:
    rows = list(csv.reader(src.open(newline="")))
    rows[row + 1][rows[0].index(column)] = value
    with dst.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return dst


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_a_bad_value_is_one_line_exit_2_and_leaves_the_old_output(titanic, tmp_path, capsys, engine, request):
    if engine == "ray":
        request.getfixturevalue("ray_local")
    bad = _corrupt(titanic["csv"], tmp_path / "bad.csv", 850, "Fare", "cheap")
    out = tmp_path / "out.csv"
    out.write_text("yesterday's scores\n")
    rc, _ = _score(tmp_path, bad, "--artifact", str(titanic["artifact"]), "--engine", engine, "--batch-size", "64")
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "Fare" in err and "'cheap'" in err, err
    assert out.read_text() == "yesterday's scores\n"  # not replaced, not half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "out.csv"]


def test_a_missing_column_or_file_is_one_line_and_exit_2(titanic, tmp_path, capsys):
    frame = pd.read_csv(titanic["csv"]).drop(columns=["Sex"])
    frame.to_csv(tmp_path / "nosex.csv", index=False)
    rc, out = _score(tmp_path, tmp_path / "nosex.csv", "--artifact", str(titanic["artifact"]))
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Sex" in err and not out.exists()
    rc, out = _score(tmp_path, tmp_path / "absent.csv", "--artifact", str(titanic["artifact"]))
    err = capsys.readouterr().err
    assert rc == 2 and "absent.csv" in err and not out.exists()
    rc, _ = _score(tmp_path, titanic["csv"], "--artifact", str(titanic["artifact"]), "--workers", "2")
    assert rc == 2 and "--engine ray" in capsys.readouterr().err


def test_a_header_only_input_gives_a_header_only_output(titanic, tmp_path):
    head = tmp_path / "empty.csv"
    head.write_text(titanic["csv"].read_text().splitlines()[0] + "\n")
    rc, out = _score(tmp_path, head, "--artifact", str(titanic["artifact"]))
    assert rc == 0
    assert out.read_text().strip().split(",")[-2:] == ["probability", "label"]
    assert len(out.read_text().splitlines()) == 1
