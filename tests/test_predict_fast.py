"""The compiled (ONNX) serving path and worker processes of the prediction API.

- the ONNX graph gives the scikit-learn pipeline's probabilities to 1e-6 on every Titanic passenger (and
  on random synthetic ones with missing values), and the pandas-free feature code equals ``add_features``;
- a pipeline the compiler does not know is refused by ``--engine onnx`` and served by sklearn under auto;
- the API answers the same with both engines;
- ``mastery predict serve --workers 2`` starts two workers that answer, and SIGTERM stops them all and
  removes the server's temporary folder.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from mastery.eval.predict_fixtures import PASSENGERS
from mastery.serving.artifacts import ArtifactError, LoadedArtifact
from mastery.serving.compiled import PROBES, CompileError, compile_titanic, engineered_columns
from mastery.serving.titanic_model import FEATURE_COLUMNS, TrainedModel, predict_proba, save_titanic
from tests.conftest import needs_mirror

TOLERANCE = 1e-6


def _requests(frame: pd.DataFrame) -> list[dict]:
    """DataFrame rows -> request dicts, NaN as a missing (None) field, as the API's validator gives them."""
    rows = []
    for record in frame[list(FEATURE_COLUMNS)].to_dict("records"):
        rows.append({k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in record.items()})
        for k in ("Pclass", "SibSp", "Parch"):
            rows[-1][k] = int(rows[-1][k])
    return rows


def _synthetic(n: int = 300, seed: int = 1) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    sex = rng.choice(["male", "female"], n)
    titles = rng.choice(["Mr", "Mrs", "Miss", "Master", "Mlle", "Dr", "Rev"], n)
    names = [f"Doe, {t}. John" if rng.random() > 0.1 else "no title here" for t in titles]
    frame = pd.DataFrame({
        "Pclass": rng.integers(1, 4, n), "Sex": sex,
        "Age": np.where(rng.random(n) < 0.2, np.nan, rng.uniform(0, 80, n)),
        "SibSp": rng.integers(0, 6, n), "Parch": rng.integers(0, 4, n), "Fare": rng.exponential(30.0, n),
        "Embarked": pd.Series(rng.choice(["C", "Q", "S"], n)).where(rng.random(n) > 0.1, None), "Name": names,
    })
    y = ((sex == "female") | (frame["Pclass"].to_numpy() == 1) | (rng.random(n) < 0.2)).astype(int)
    return frame, y


def _fit(frame: pd.DataFrame, y: np.ndarray, engineered: bool = True) -> object:
    from sklearn.linear_model import LogisticRegression

    from mastery.tabular import titanic

    return titanic.make_model(titanic.build_preprocessor(engineered), LogisticRegression(max_iter=1000)).fit(frame, y)


@pytest.fixture(scope="module")
def synthetic_model() -> object:
    return _fit(*_synthetic())


@pytest.fixture(scope="module")
def artifact(synthetic_model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fast") / "titanic.skops"
    save_titanic(TrainedModel(model=synthetic_model, training={"n_train": 300}), path)
    return path


# -- equality with the pipeline ------------------------------------------------------------------------
@needs_mirror
def test_onnx_equals_the_pipeline_on_every_titanic_passenger():
    from mastery.assets.loaders import load_titanic
    from mastery.serving.titanic_model import train_titanic
    from mastery.tabular.titanic import add_features

    data = load_titanic()
    model = train_titanic(folds=2).model
    rows = _requests(data)
    assert len(rows) == 891 and sum(r["Age"] is None for r in rows) == 177  # the real data, missing ages included
    compiled = compile_titanic(model, PROBES)
    onnx_p, sklearn_p = compiled.predict_proba(rows), predict_proba(model, rows)
    assert onnx_p.shape == (891,) and np.std(sklearn_p) > 0.1  # real, varied probabilities
    assert np.max(np.abs(onnx_p - sklearn_p)) <= TOLERANCE
    # the pandas-free features equal the pipeline's own step on every passenger
    expected = add_features(data[list(FEATURE_COLUMNS)].assign(Name=data["Name"].fillna("")))
    ours = [engineered_columns(r) for r in rows]
    assert [o[0] for o in ours] == expected["FamilySize"].astype(float).tolist()
    assert [o[1] for o in ours] == expected["IsAlone"].astype(str).tolist()
    assert [o[2] for o in ours] == expected["Title"].tolist()


def test_onnx_equals_the_pipeline_on_synthetic_passengers_with_missing_values(synthetic_model):
    frame, _ = _synthetic(n=500, seed=7)  # not the training rows
    rows = _requests(frame) + list(PROBES)
    assert any(r["Age"] is None for r in rows) and any(r["Embarked"] is None for r in rows)
    diff = np.abs(compile_titanic(synthetic_model).predict_proba(rows) - predict_proba(synthetic_model, rows))
    assert diff.max() <= TOLERANCE


def test_batches_score_like_single_rows(synthetic_model):
    compiled = compile_titanic(synthetic_model)
    rows = list(PROBES)
    singles = np.concatenate([compiled.predict_proba([r]) for r in rows])
    assert np.array_equal(compiled.predict_proba(rows), singles)


def test_a_pipeline_the_compiler_does_not_know_is_refused_or_served_by_sklearn(tmp_path):
    from mastery.serving.predict_api import create_app

    frame, y = _synthetic()
    plain = _fit(frame, y, engineered=False)  # no Title, FamilySize, IsAlone: other column groups
    with pytest.raises(CompileError, match="column groups"):
        compile_titanic(plain)
    path = tmp_path / "plain.skops"
    save_titanic(TrainedModel(model=plain, training={}), path)
    with pytest.raises(ArtifactError, match="--engine onnx"):
        create_app(path, engine="onnx")
    assert create_app(path, engine="auto").state.engine == "sklearn"
    assert create_app(path, engine="sklearn").state.engine == "sklearn"


def test_a_graph_that_disagrees_with_the_pipeline_is_refused(synthetic_model):
    class Shifted:  # the same pipeline with every probability moved by 1e-3
        named_steps = synthetic_model.named_steps

        def predict_proba(self, frame):
            return synthetic_model.predict_proba(frame) + np.array([-1e-3, 1e-3])

    with pytest.raises(CompileError, match="differs from the pipeline"):
        compile_titanic(Shifted(), PROBES)


# -- the API with both engines -------------------------------------------------------------------------
def test_the_api_answers_the_same_with_both_engines(artifact):
    from mastery.serving.predict_api import create_app
    from mastery.serving.server import ServerThread

    onnx_app, sklearn_app = create_app(artifact, engine="onnx"), create_app(artifact, engine="sklearn")
    assert (onnx_app.state.engine, sklearn_app.state.engine) == ("onnx", "sklearn")
    bodies = [*PASSENGERS.values(), *PROBES]
    answers = {}
    for name, app in (("onnx", onnx_app), ("sklearn", sklearn_app)):
        with ServerThread(app) as server, httpx.Client(base_url=server.url, trust_env=False, timeout=10) as c:
            single = [c.post("/predict", json={k: v for k, v in b.items() if v is not None}) for b in bodies]
            batch = c.post("/predict/batch", json={"passengers": [{k: v for k, v in b.items() if v is not None}
                                                                  for b in bodies]})
            bad = c.post("/predict", json={**bodies[0], "Pclass": 4})
        assert all(r.status_code == 200 for r in single) and batch.status_code == 200
        assert bad.status_code == 422 and "Pclass" in bad.json()["error"]
        answers[name] = ([r.json() for r in single], batch.json()["predictions"])
    for (one, many), (other_one, other_many) in [(answers["onnx"], answers["sklearn"])]:
        for a, b in zip([*one, *many], [*other_one, *other_many], strict=True):
            assert (a["prediction"], a["label"]) == (b["prediction"], b["label"])
            assert abs(a["probability"] - b["probability"]) <= TOLERANCE
            assert abs(a["confidence"] - b["confidence"]) <= TOLERANCE
    labels = {a["label"] for a in answers["onnx"][0]}
    assert labels == {"died", "survived"}  # both classes occur, so equal labels mean something


# -- worker processes ----------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return "spawn_main" not in _cmdline(pid)  # the pid was reused by something else


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the process tree from /proc")
def test_workers_flag_starts_workers_that_answer_and_sigterm_stops_them_all(artifact, synthetic_model, tmp_path,
                                                                           monkeypatch):
    from mastery.serving.server import ServerProcess

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # the server's tempfile.gettempdir()
    log_path = tmp_path / "server.log"
    with ServerProcess(artifact, log_path, extra_args=("--workers", "2")) as proc:  # returns once /health is 200
        workers = [c for c in _children(proc.pid) if "spawn_main" in _cmdline(c)]
        assert len(workers) == 2, f"expected 2 worker processes, found {workers}"
        body = PASSENGERS["1st-class woman, 38"]
        with httpx.Client(base_url=proc.url, trust_env=False, timeout=10) as c:
            answers = [c.post("/predict", json=body) for _ in range(8)]
        assert all(r.status_code == 200 for r in answers)
        expected = float(predict_proba(synthetic_model, [body])[0])
        assert all(abs(r.json()["probability"] - expected) <= TOLERANCE for r in answers)
        assert [p.name[:14] for p in scratch.iterdir()] == ["mastery-serve-"]
        child = proc._proc
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=60) == 0
    assert list(scratch.iterdir()) == [], "the temporary folder must be removed on SIGTERM"
    assert all(_gone(pid) for pid in workers), "no worker may outlive the server"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", proc.port)) != 0
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    assert any("starting 2 worker processes (onnx engine)" in r["message"] for r in lines)
    assert sum(r.get("path") == "/predict" and r.get("engine") == "onnx" for r in lines) == 8


def test_the_cli_refuses_engine_onnx_for_a_pipeline_it_cannot_compile(tmp_path, capsys):
    from mastery.cli import main

    frame, y = _synthetic()
    path = tmp_path / "plain.skops"
    save_titanic(TrainedModel(model=_fit(frame, y, engineered=False), training={}), path)
    assert main(["predict", "serve", "--artifact", str(path), "--engine", "onnx", "--workers", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--engine onnx" in err[0] and err[0].startswith("mastery: error:")


def test_the_default_engine_is_onnx_when_the_pipeline_compiles(synthetic_model, artifact):
    from mastery.serving.predict_api import create_app

    loaded = LoadedArtifact(model=synthetic_model, meta={"name": "t", "version": "v", "sha256": "0" * 64},
                            path=artifact)
    assert create_app(loaded).state.engine == "onnx"
