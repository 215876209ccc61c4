"""L25: safe model artifacts, the FastAPI prediction endpoint over real HTTP, fuzzing and load helpers.

The server is real uvicorn on 127.0.0.1 (a thread here, a subprocess in one test and in the lab); the
model is the Titanic pipeline fitted on a small generated frame, so these tests need no data mirror.
"""

import builtins
import json
import logging
import socket

import httpx
import numpy as np
import pandas as pd
import pytest

from mastery.eval.predict_fixtures import BAD_REQUESTS, PASSENGERS
from mastery.serving.artifacts import (
    TRUSTED_TYPES,
    ArtifactError,
    LoadedArtifact,
    copy_artifact,
    load_artifact,
    load_from_mlflow,
    log_to_mlflow,
    save_artifact,
    sidecar_path,
)
from mastery.serving.logs import ACCESS_LOGGER, JsonFormatter, request_id_from
from mastery.serving.titanic_model import TrainedModel, predict_proba, save_titanic
from tests.conftest import needs_mirror

BODIES = list(PASSENGERS.values())


def _synthetic_titanic(n: int = 120, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    sex = rng.choice(["male", "female"], n)
    titles = np.where(sex == "male", rng.choice(["Mr", "Master"], n), rng.choice(["Mrs", "Miss"], n))
    frame = pd.DataFrame({
        "Pclass": rng.integers(1, 4, n), "Sex": sex,
        "Age": np.where(rng.random(n) < 0.2, np.nan, rng.uniform(1, 70, n)),
        "SibSp": rng.integers(0, 4, n), "Parch": rng.integers(0, 3, n), "Fare": rng.uniform(5, 200, n),
        "Embarked": rng.choice(["C", "Q", "S"], n), "Name": [f"Doe, {t}. John" for t in titles],
    })
    y = ((sex == "female") | (frame["Pclass"].to_numpy() == 1)).astype(int)
    return frame, y


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    from sklearn.linear_model import LogisticRegression

    from mastery.tabular import titanic

    x, y = _synthetic_titanic()
    model = titanic.make_model(titanic.build_preprocessor(True), LogisticRegression(max_iter=1000)).fit(x, y)
    return TrainedModel(model=model, training={"n_train": len(y), "cv_f1": 0.5})


@pytest.fixture(scope="module")
def artifact(trained, tmp_path_factory) -> tuple:
    path = tmp_path_factory.mktemp("model") / "titanic.skops"
    return path, save_titanic(trained, path)


@pytest.fixture(scope="module")
def server(artifact):
    from mastery.serving.predict_api import create_app
    from mastery.serving.server import ServerThread

    running = ServerThread(create_app(artifact[0])).start()
    yield running
    thread = running._thread
    running.stop()
    assert thread is not None and not thread.is_alive(), "the uvicorn thread must stop"


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, trust_env=False, timeout=10.0) as c:
        yield c


# -- artifacts ----------------------------------------------------------------------------------------
def test_artifact_round_trip_and_sidecar(trained, artifact):
    path, meta = artifact
    loaded = load_artifact(path)
    assert np.array_equal(predict_proba(loaded.model, BODIES), predict_proba(trained.model, BODIES))
    side = json.loads(sidecar_path(path).read_text())
    assert side["sha256"].startswith(side["version"]) and len(side["version"]) == 12
    assert loaded.version == meta["version"] and side["format"] == "skops"
    assert {"Pclass", "Sex", "Age", "Fare"} <= set(side["feature_schema"]["properties"])
    assert "scikit-learn" in side["libraries"] and side["training"]["n_train"] == 120
    assert set(side["untrusted_types_needed"]) <= set(TRUSTED_TYPES)


def test_tampered_file_is_refused(artifact, tmp_path):
    copy = copy_artifact(artifact[0], tmp_path / "copy.skops")
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"sha256 .* does not match the sidecar"):
        load_artifact(copy)


def test_untrusted_type_is_refused_before_skops_builds_anything(trained, tmp_path, monkeypatch):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    evil = make_pipeline(FunctionTransformer(func=builtins.eval), trained.model)
    path = tmp_path / "evil.skops"
    save_artifact(evil, path, name="evil")  # an honest sidecar: the digest matches

    import skops.io

    def no_load(*args, **kwargs):
        raise AssertionError("skops.io.load must not run on an untrusted file")

    monkeypatch.setattr(skops.io, "load", no_load)
    with pytest.raises(ArtifactError, match=r"outside the allow-list.*builtins\.eval"):
        load_artifact(path)


@pytest.mark.parametrize("problem", ["no file", "no sidecar", "sidecar not JSON", "wrong format", "pinned",
                                     "not a skops file"])
def test_bad_artifacts_give_one_line_errors(artifact, tmp_path, problem):
    path = copy_artifact(artifact[0], tmp_path / "m.skops")
    side = sidecar_path(path)
    pin = None
    if problem == "no file":
        path.unlink()
    elif problem == "no sidecar":
        side.unlink()
    elif problem == "sidecar not JSON":
        side.write_text("{not json")
    elif problem == "wrong format":
        side.write_text(json.dumps({**json.loads(side.read_text()), "format": "pickle"}))
    elif problem == "pinned":
        pin = "deadbeef"
    else:  # garbage whose sha256 the sidecar records
        from mastery.serving.artifacts import sha256_file

        path.write_bytes(b"PK\x03\x04 not really a zip")
        side.write_text(json.dumps({**json.loads(side.read_text()), "sha256": sha256_file(path)}))
    with pytest.raises(ArtifactError) as info:
        load_artifact(path, expected_sha256=pin)
    assert "\n" not in str(info.value) and str(info.value)


def test_mlflow_round_trip(trained, artifact, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = log_to_mlflow(artifact[0], uri, experiment="test-serving")
    back = load_from_mlflow(run_id, uri, tmp_path / "download")
    assert back.meta["sha256"] == artifact[1]["sha256"]
    assert back.path.parent != artifact[0].parent  # really the downloaded copy
    assert np.array_equal(predict_proba(back.model, BODIES), predict_proba(trained.model, BODIES))
    with pytest.raises(ArtifactError, match="could not download"):
        load_from_mlflow("0" * 32, uri, tmp_path / "nothing")


# -- the API over HTTP ----------------------------------------------------------------------------------
def test_predict_returns_prediction_confidence_version_and_request_id(client, trained, artifact):
    response = client.post("/predict", json=PASSENGERS["1st-class woman, 38"])
    assert response.status_code == 200
    body = response.json()
    p = float(predict_proba(trained.model, [PASSENGERS["1st-class woman, 38"]])[0])
    assert body["probability"] == pytest.approx(p, abs=1e-12)
    assert body["prediction"] == int(p >= 0.5) and body["label"] == ("survived" if p >= 0.5 else "died")
    assert body["confidence"] == pytest.approx(max(p, 1 - p)) and body["confidence"] >= 0.5
    assert body["model_version"] == artifact[1]["version"]
    assert body["request_id"] == response.headers["x-request-id"]


def test_batch_matches_single_predictions(client):
    batch = client.post("/predict/batch", json={"passengers": BODIES}).json()
    singles = [client.post("/predict", json=b).json()["probability"] for b in BODIES]
    assert [p["probability"] for p in batch["predictions"]] == pytest.approx(singles, abs=1e-12)


@pytest.mark.parametrize(("what", "path", "body", "status", "field"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_are_4xx_naming_the_field(client, what, path, body, status, field):
    if isinstance(body, bytes):
        response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    else:
        response = client.post(path, json=body)
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["request_id"] == response.headers["x-request-id"]
    if field is not None:
        assert field in payload["error"] and field in [d["field"] for d in payload["detail"]]


def test_chunked_body_without_length_is_411(client):
    response = client.post("/predict", content=iter([json.dumps(BODIES[0]).encode()]),
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 411 and "Content-Length" in response.json()["error"]


def test_unknown_route_and_method_are_json_4xx(client):
    assert client.get("/nope").status_code == 404 and client.get("/nope").json()["error"] == "Not Found"
    wrong = client.get("/predict")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"


def test_health_model_and_openapi(client, artifact):
    assert client.get("/health").json() == {"status": "ok", "model_version": artifact[1]["version"]}
    info = client.get("/model").json()
    assert info["sha256"] == artifact[1]["sha256"] and info["name"] == "titanic-survival"
    spec = client.get("/openapi.json").json()
    assert {"/predict", "/predict/batch", "/health", "/model"} <= set(spec["paths"])
    responses = spec["paths"]["/predict"]["post"]["responses"]
    assert responses["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    assert spec["components"]["schemas"]["Passenger"]["additionalProperties"] is False
    assert client.get("/docs").status_code == 200


def test_request_id_honoured_or_replaced(client, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    ok = client.post("/predict", json=BODIES[1], headers={"X-Request-ID": "trace-42"})
    assert ok.headers["x-request-id"] == "trace-42" and ok.json()["request_id"] == "trace-42"
    unsafe = client.get("/health", headers={"X-Request-ID": "a b\"c"})
    assert unsafe.headers["x-request-id"] != "a b\"c" and len(unsafe.headers["x-request-id"]) == 32
    lines = [r.fields for r in caplog.records if r.name == ACCESS_LOGGER]
    traced = [f for f in lines if f["request_id"] == "trace-42"]
    assert len(traced) == 1 and traced[0]["status"] == 200 and traced[0]["path"] == "/predict"
    assert traced[0]["model_version"] and traced[0]["duration_ms"] > 0


def test_json_formatter_and_request_ids():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "request", None, None)
    record.fields = {"request_id": "r1", "status": 200}
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "request" and line["request_id"] == "r1" and line["level"] == "info"
    assert request_id_from("abc-1.2:3") == "abc-1.2:3"
    assert request_id_from("x" * 129) != "x" * 129 and request_id_from(None) != request_id_from(None)


def test_a_bug_is_a_json_500_with_the_request_id(trained, artifact):
    from mastery.serving.predict_api import create_app
    from mastery.serving.server import ServerThread

    class Flaky:  # scores the start-up self-test, then breaks: a stand-in for a bug in serving code
        calls = 0

        def predict_proba(self, frame):
            Flaky.calls += 1
            if Flaky.calls > 1:
                raise RuntimeError("boom")
            return trained.model.predict_proba(frame)

    loaded = LoadedArtifact(model=Flaky(), meta=artifact[1], path=artifact[0])
    with ServerThread(create_app(loaded)) as srv, httpx.Client(trust_env=False) as c:
        response = c.post(srv.url + "/predict", json=BODIES[0], headers={"X-Request-ID": "bug-1"})
    assert response.status_code == 500 and response.headers["x-request-id"] == "bug-1"
    assert response.json()["request_id"] == "bug-1" and "boom" not in response.text  # no internals leaked


_JSON = {"Content-Type": "application/json"}
_DUPLICATE = b'{"Pclass": 1, "Sex": "female", "SibSp": 0, "Parch": 0, "Fare": 30.0, "Pclass": 3}'
ERROR_PROBES = [  # (what, method, path, content, headers, status)
    ("unknown route", "GET", "/nope", None, {}, 404),
    ("wrong method", "GET", "/predict", None, {}, 405),
    ("chunked body", "POST", "/predict", iter([b"{}"]), _JSON, 411),
    ("600 kB body", "POST", "/predict", b"{" + b" " * 600_000 + b"}", _JSON, 413),
    ("text/plain body", "POST", "/predict", json.dumps(BODIES[0]).encode(), {"Content-Type": "text/plain"}, 415),
    ("no Content-Type", "POST", "/predict", json.dumps(BODIES[0]).encode(), {}, 415),
    ("schema violation", "POST", "/predict", json.dumps({**BODIES[0], "Pclass": 9}).encode(), _JSON, 422),
    ("not JSON", "POST", "/predict", b'{"Pclass": ', _JSON, 422),
    ("duplicate key", "POST", "/predict", _DUPLICATE, _JSON, 422),
]


@pytest.mark.parametrize(("what", "method", "path", "content", "headers", "status"), ERROR_PROBES,
                         ids=[p[0] for p in ERROR_PROBES])
def test_every_error_response_carries_the_request_id(client, what, method, path, content, headers, status):
    sent = f"probe-{status}"
    response = client.request(method, path, content=content, headers={**headers, "X-Request-ID": sent})
    assert response.status_code == status, response.text
    assert response.headers["x-request-id"] == sent and response.json()["request_id"] == sent
    # and without one from the caller, a fresh id that the body repeats
    if not isinstance(content, type(iter([]))):
        again = client.request(method, path, content=content, headers=headers)
        assert len(again.headers["x-request-id"]) == 32 and again.json()["request_id"] == again.headers["x-request-id"]


@pytest.mark.parametrize(("path", "body", "key"), [
    ("/predict", _DUPLICATE, "Pclass"),
    ("/predict/batch", b'{"passengers": [{"Pclass": 1, "Sex": "male", "Sex": "female", "SibSp": 0, "Parch": 0, '
                       b'"Fare": 1.0}]}', "Sex"),
    ("/predict/batch", b'{"passengers": [], "passengers": [{"Pclass": 1}]}', "passengers"),
])
def test_duplicate_json_keys_are_a_422_naming_the_key(client, path, body, key):
    response = client.post(path, content=body, headers=_JSON)
    assert response.status_code == 422, response.text
    payload = response.json()
    assert f"{key}: duplicate key" in payload["error"] and payload["detail"][0]["field"] == key
    assert "\n" not in payload["error"]


def test_deeply_nested_json_is_a_422_not_a_500(client):
    response = client.post("/predict", content=b"[" * 100_000 + b"]" * 100_000, headers=_JSON)
    assert response.status_code == 422 and response.headers["x-request-id"]


def test_loads_strict_rejects_only_repeated_keys():
    from mastery.serving.http import DuplicateKeyError, loads_strict

    assert loads_strict('{"a": {"a": 1}, "b": [{"a": 2}, {"a": 3}]}') == {"a": {"a": 1}, "b": [{"a": 2}, {"a": 3}]}
    with pytest.raises(DuplicateKeyError) as info:
        loads_strict('{"x": [{"age": 1, "age": 2}]}')
    assert info.value.key == "age"


# -- the threshold is covered by the artifact's sha256 -------------------------------------------------
def test_threshold_lives_inside_the_hashed_file(artifact):
    loaded = load_artifact(artifact[0])
    assert "threshold" in loaded.covered and loaded.meta["threshold"] == 0.5
    assert json.loads(sidecar_path(artifact[0]).read_text())["in_artifact"] == ["labels", "threshold"]


@pytest.mark.parametrize("value", [0.9, "0.5", None])
def test_an_edited_sidecar_threshold_is_refused_at_load(artifact, tmp_path, value):
    path = copy_artifact(artifact[0], tmp_path / "m.skops")
    side = sidecar_path(path)
    side.write_text(json.dumps({**json.loads(side.read_text()), "threshold": value}))
    refusal = r"sidecar's threshold .* differs from the 0\.5 inside the hashed file"
    with pytest.raises(ArtifactError, match=refusal) as info:
        load_artifact(path)
    assert "\n" not in str(info.value)


def test_the_cli_refuses_an_edited_threshold_with_one_line_and_exit_2(artifact, tmp_path, capsys, monkeypatch):
    import uvicorn

    from mastery.cli import main

    def no_serving(*args, **kwargs):
        raise AssertionError("the server started with an edited threshold")

    monkeypatch.setattr(uvicorn, "run", no_serving)
    path = copy_artifact(artifact[0], tmp_path / "m.skops")
    side = sidecar_path(path)
    side.write_text(json.dumps({**json.loads(side.read_text()), "threshold": 0.01}))
    assert main(["predict", "serve", "--artifact", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "threshold" in err[0] and err[0].startswith("mastery: error:")


def test_an_old_style_artifact_serves_only_the_default_threshold(trained, tmp_path):
    from mastery.serving.predict_api import create_app

    old = tmp_path / "old.skops"  # the bare estimator, the threshold only in the sidecar (no hash covers it)
    save_artifact(trained.model, old, name="titanic-survival", extra={"threshold": 0.5})
    assert load_artifact(old).covered == ()
    create_app(old)  # the default: served
    side = sidecar_path(old)
    side.write_text(json.dumps({**json.loads(side.read_text()), "threshold": 0.2}))
    with pytest.raises(ArtifactError, match="not covered by the file's sha256"):
        create_app(old)


@pytest.mark.parametrize("value", [0.0, 1.0, 2.0, float("nan"), True, "0.5"])
def test_an_out_of_range_threshold_inside_the_file_is_refused_at_start(trained, tmp_path, value):
    from mastery.serving.predict_api import create_app

    path = tmp_path / "odd.skops"
    save_artifact(trained.model, path, name="titanic-survival", serving={"threshold": value})
    with pytest.raises(ArtifactError, match=r"threshold .* is not a number strictly between 0 and 1"):
        create_app(path)


def test_a_model_that_cannot_score_the_schema_is_refused_at_start(artifact):
    from mastery.serving.predict_api import create_app

    class Broken:
        def predict_proba(self, frame):
            raise KeyError("Title")

    with pytest.raises(ArtifactError, match="cannot score"):
        create_app(LoadedArtifact(model=Broken(), meta=artifact[1], path=artifact[0]))


# -- fuzzing, load, the server process and the CLI ------------------------------------------------------
def test_schemathesis_finds_no_5xx_and_no_mismatch(server):
    from mastery.serving.fuzz import fuzz_api

    result = fuzz_api(server.url, max_examples=15)
    assert result.cases >= 4 * 15 and result.server_errors == 0
    assert not result.failures(), result.failures()
    assert set(result.statuses("positive")) == {200}
    assert all(400 <= s < 500 for s in result.statuses("negative"))


def test_concurrent_load_counts_every_request(server):
    from mastery.serving.load import concurrent_load, sequential_latency

    load = concurrent_load(server.url + "/predict", BODIES, n_requests=24, concurrency=4)
    assert load.n_sent == 24 and load.n_errors == 0 and not load.stopped_early
    assert 0 < load.percentile(50) <= load.percentile(99) and load.requests_per_second > 0
    seq = sequential_latency(server.url + "/predict", BODIES, n_requests=5, warmup=1)
    assert seq.n_sent == 5 and seq.summary()["errors"] == 0
    bad = concurrent_load(server.url + "/predict", [{"Pclass": 9}], n_requests=4, concurrency=2)
    assert bad.n_errors == 4 and bad.error_rate == 1.0


def test_server_process_serves_and_stops(artifact, tmp_path):
    from mastery.serving.server import ServerProcess

    with ServerProcess(artifact[0], tmp_path / "server.log") as proc:
        assert httpx.get(proc.url + "/health", trust_env=False).json()["model_version"] == artifact[1]["version"]
        child = proc._proc
    assert child.poll() is not None, "the server process must have exited"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", proc.port)) != 0
    lines = [json.loads(line) for line in (tmp_path / "server.log").read_text().splitlines() if line.strip()]
    assert any(r.get("path") == "/health" and r.get("status") == 200 for r in lines)


def test_sigterm_removes_the_servers_temporary_folder(artifact, tmp_path, monkeypatch):
    import signal

    from mastery.serving.server import ServerProcess

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # the child's tempfile.gettempdir()
    with ServerProcess(artifact[0], tmp_path / "server.log") as proc:  # returns once /health answers 200
        assert [p.name[:14] for p in scratch.iterdir()] == ["mastery-serve-"]  # the folder exists while serving
        child = proc._proc
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 0
    assert list(scratch.iterdir()) == [], "the temporary folder must be removed on SIGTERM"
    assert "stopped by SIGTERM" in (tmp_path / "server.log").read_text()


def test_cli_refuses_a_bad_model_with_exit_code_2(tmp_path, capsys):
    from mastery.cli import main

    assert main(["predict", "serve", "--artifact", str(tmp_path / "missing.skops")]) == 2
    assert "model file not found" in capsys.readouterr().err
    # --model is always a registry name: a path there is refused as a name
    assert main(["predict", "serve", "--model", str(tmp_path / "missing.skops")]) == 2
    assert "model name" in capsys.readouterr().err


@needs_mirror
def test_cli_train_titanic(tmp_path, capsys):
    from mastery.cli import main

    out = tmp_path / "t.skops"
    assert main(["predict", "train", "--artifact", str(out), "--folds", "2"]) == 0
    assert "CV F1" in capsys.readouterr().out
    assert load_artifact(out).meta["training"]["cv_folds"] == 2
