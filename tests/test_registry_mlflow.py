"""MLflow's model registry as the second trained-model backend: the same manifest and verification as the
folder store, versions numbered by MLflow, downloads cached and re-checked, the CLI and the settings switch,
against a SQLite store and a real ``mlflow server`` on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mlflow")

from mastery.core.errors import ModelIntegrityError, RegistryError
from mastery.ops import registry as registry_mod
from mastery.ops.registry import ModelRef, ModelRegistry, open_registry
from mastery.ops.registry_mlflow import MlflowModelRegistry


@pytest.fixture()
def mlreg(tmp_path: Path) -> MlflowModelRegistry:
    return MlflowModelRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}", cache=tmp_path / "cache")


def _save_mlp(reg, name: str = "toy-mlp"):
    import torch

    from mastery.nn.models import MLP
    from mastery.ops.registry_loaders import architecture, save_torch_module

    torch.manual_seed(0)
    model = MLP(6, (5,), 3)
    ref = save_torch_module(name, model, arch=architecture("mastery.nn.models", "MLP", in_features=6, hidden=[5],
                                                           num_classes=3),
                            metrics={"accuracy": 0.5}, data_assets=("titanic",),
                            probe_input={"randn": [4, 6], "seed": 1}, registry=reg)
    return ref, model


def _artifact_file(reg: MlflowModelRegistry, ref: ModelRef, rel: str) -> Path:
    """The file as MLflow stores it (a local artifact root for the SQLite store)."""
    from urllib.parse import urlparse

    version = reg.client.get_model_version(ref.name, str(ref.version))
    return Path(urlparse(version.source).path) / rel


def test_torch_round_trip_through_mlflow(mlreg):
    import torch

    from mastery.ops.registry_loaders import load_torch_module, run_torch_probe

    ref, model = _save_mlp(mlreg)
    assert str(ref) == "toy-mlp@1"
    assert str(_save_mlp(mlreg)[0]) == "toy-mlp@2"  # MLflow numbers the versions
    assert mlreg.names() == ["toy-mlp"] and mlreg.versions("toy-mlp") == [1, 2]
    rebuilt, loaded = load_torch_module("toy-mlp@1", registry=mlreg)
    x = torch.randn(5, 6)
    assert torch.equal(rebuilt(x), model.eval()(x))
    recorded, now = run_torch_probe(rebuilt, loaded.manifest["probe"])
    assert np.allclose(recorded, now, atol=1e-6)
    manifest = mlreg.manifest("toy-mlp")
    assert manifest["version"] == 2 and manifest["kind"] == "torch" and manifest["metrics"] == {"accuracy": 0.5}
    assert loaded.path == mlreg.cache / "toy-mlp" / "1"
    # MLflow's own view: the run holds the metric, the version carries the whole-model digest.
    version = mlreg.client.get_model_version("toy-mlp", "1")
    assert version.tags["mastery.sha256"] == loaded.manifest["sha256"]
    assert mlreg.client.get_run(version.run_id).data.metrics == {"accuracy": 0.5}


def test_a_model_registered_outside_mastery_is_not_listed(mlreg, tmp_path):
    _save_mlp(mlreg)
    mlreg.client.create_registered_model("someone-elses")
    assert mlreg.names() == ["toy-mlp"]
    with pytest.raises(RegistryError, match=r"no trained model named 'someone-elses' in MLflow sqlite:///"):
        mlreg.load("someone-elses")


def test_tampered_artifacts_are_named_and_a_bad_cache_is_fetched_again(mlreg, caplog):
    ref, _ = _save_mlp(mlreg)
    cached = mlreg.load("toy-mlp").path / "model.safetensors"
    cached.write_bytes(b"garbage")  # the cache is ours: it is dropped and downloaded again
    assert mlreg.load("toy-mlp").path == cached.parent
    assert cached.read_bytes() != b"garbage"
    assert "failed verification" in caplog.text
    # files and manifest edited together in the cache: the version tag in MLflow's database still catches it
    manifest_path = cached.parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    cached.write_bytes(b"other weights")
    manifest["files"]["model.safetensors"]["sha256"] = registry_mod.sha256_file(cached)
    manifest["sha256"] = registry_mod.files_digest(manifest["files"])
    manifest_path.write_text(json.dumps(manifest))
    caplog.clear()
    assert mlreg.load("toy-mlp").path == cached.parent and cached.read_bytes() != b"other weights"
    assert "is not the" in caplog.text and "MLflow recorded for this version" in caplog.text
    stored = _artifact_file(mlreg, ref, "model.safetensors")  # MLflow's copy itself is modified
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0xFF
    stored.write_bytes(bytes(data))
    cached.write_bytes(b"garbage")
    with pytest.raises(ModelIntegrityError, match=r"toy-mlp@1: file model\.safetensors has sha256 .* expects"):
        mlreg.load("toy-mlp")


def test_pickle_is_refused_before_anything_reaches_mlflow(mlreg, tmp_path):
    blob = tmp_path / "weights.pt"
    blob.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(RegistryError, match="pickle-based formats"):
        mlreg.save("toy-pickle", blob, kind="torch")
    assert mlreg.client.search_registered_models() == []


def test_cli_push_list_show_and_the_settings_switch(tmp_path, monkeypatch, capsys):
    from sklearn.linear_model import LogisticRegression

    from mastery.cli import main
    from mastery.ops.registry_loaders import load_skops, save_skops

    folder = ModelRegistry(tmp_path / "store")
    x = np.random.default_rng(0).normal(size=(30, 2))
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    save_skops("toy-logreg", model, metrics={"train_accuracy": 1.0}, registry=folder)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MASTERY_MODEL_STORE", str(tmp_path / "store"))
    assert main(["models", "push", "toy-logreg"]) == 2  # nowhere to push to
    assert "--registry-uri" in capsys.readouterr().err
    assert main(["models", "push", "toy-logreg@1", "--registry-uri", uri]) == 0
    assert f"toy-logreg@1 -> toy-logreg@1 in MLflow {uri}" in capsys.readouterr().out
    assert main(["models", "show", "toy-logreg", "--json", "--registry-uri", uri]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["copied_from"]["ref"] == "toy-logreg@1" and shown["sha256"] == folder.manifest("toy-logreg")["sha256"]

    monkeypatch.setenv("MASTERY_MODEL_REGISTRY_URI", uri)  # every loader now reads from MLflow
    registry = open_registry()
    assert isinstance(registry, MlflowModelRegistry)
    back = load_skops("toy-logreg", trusted_types=[])
    assert np.array_equal(back.predict_proba(x), model.predict_proba(x))
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert f"Trained models (MLflow {uri})" in out and "toy-logreg@1" in out
    assert main(["models", "verify", "toy-logreg"]) == 0
    assert "ok       toy-logreg@1 (trained" in capsys.readouterr().out


def test_a_real_mlflow_server_on_localhost(tmp_path):
    from mastery.core.services import wait_until_healthy
    from mastery.serving.server import free_port

    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
           "--artifacts-destination", str(tmp_path / "artifacts")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        problem = wait_until_healthy(f"http://127.0.0.1:{port}/health", proc, time.monotonic() + 120)
        assert problem is None, problem
        reg = MlflowModelRegistry(f"http://127.0.0.1:{port}", cache=tmp_path / "cache")
        ref, _ = _save_mlp(reg)
        assert str(ref) == "toy-mlp@1" and reg.names() == ["toy-mlp"]
        loaded = reg.load("toy-mlp@1")
        assert (loaded.path / "model.safetensors").is_file() and loaded.manifest["version"] == 1
        assert any((tmp_path / "artifacts").rglob("model.safetensors"))  # proxied into the server's store
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def test_an_unusable_uri_or_an_absent_server_is_one_line(tmp_path, monkeypatch, capsys):
    from mastery.cli import main
    from mastery.serving.server import free_port

    with pytest.raises(RegistryError, match=r"--registry-uri 'nonsense://x': MLflow cannot use it"):
        MlflowModelRegistry("nonsense://x", cache=tmp_path / "cache")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail at once instead of MLflow's backoff
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert main(["models", "list", "--registry-uri", url]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"mastery: error: MLflow model registry at {url}: ") and "\n" not in err
