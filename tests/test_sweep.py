"""`mastery labs sweep`: the grid is validated before anything runs, every trial is an MLflow run with its
params and metrics, the best trial is the best one MLflow holds, and Ray Tune gives the local engine's answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mastery.cli import main
from mastery.core.errors import ConfigError
from mastery.ops.sweep import default_mode, parse_params
from tests.conftest import needs_mirror
from tests.ray_cluster import ray_local  # noqa: F401  (the module's shared Ray)

GRID = ["--param", "lr=1e-3,3e-2"]


def _sweep(capsys: pytest.CaptureFixture[str], out: Path, *extra: str) -> dict:
    rc = main(["labs", "sweep", "l05", *GRID, "--preset", "tiny", "--out", str(out), "--json", *extra])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    result = json.loads(printed)
    saved = json.loads((out / "sweeps" / f"{result['sweep_id']}.json").read_text())
    assert saved == result  # the JSON file is the printed result
    return result


def _mlflow_runs(out: Path, sweep_id: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{(out / 'mlflow.db').resolve()}")
    experiment = client.get_experiment_by_name("mastery-l05")
    assert experiment is not None
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.`mastery.sweep` = '{sweep_id}'")


def _check_logged(out: Path, result: dict) -> dict[str, float]:
    """Every trial is a FINISHED MLflow run holding its lr and final metrics; returns lr -> test accuracy."""
    runs = _mlflow_runs(out, result["sweep_id"])
    assert len(runs) == 2
    logged = {}
    for run in runs:
        assert run.info.status == "FINISHED"
        assert {"lr", "batch_size", "epochs"} <= set(run.data.params)
        logged[run.data.params["lr"]] = run.data.metrics["final_test_accuracy"]
    assert set(logged) == {"0.001", "0.03"}
    by_run = {t["run_id"]: t for t in result["trials"]}
    assert set(by_run) == {r.info.run_id for r in runs}
    for run in runs:
        assert by_run[run.info.run_id]["metrics"]["test_accuracy"] == run.data.metrics["final_test_accuracy"]
    best_lr = max(logged, key=logged.get)
    assert float(result["best"]["params"]["lr"]) == float(best_lr)  # the best is MLflow's best
    assert result["metric"] == "test_accuracy" and result["mode"] == "max"  # l05's HEADLINE
    return {str(float(lr)): acc for lr, acc in logged.items()}


def test_param_specs_parse_and_refuse_what_is_ambiguous():
    assert parse_params(["lr=1e-3, 1e-2", "hidden=256,128;512"]) == {"lr": ["1e-3", "1e-2"],
                                                                     "hidden": ["256,128", "512"]}
    for bad in (["lr"], ["=1"], ["lr=1e-3,"], ["lr=1,1"], ["lr=1", "lr=2"], []):
        with pytest.raises(ConfigError):
            parse_params(bad)
    assert default_mode("val_loss") == "min" and default_mode("xgb_rmse_log") == "min"
    assert default_mode("test_accuracy") == "max" and default_mode("f1") == "max"


@pytest.mark.parametrize("args, named", [
    (["--param", "lr=1e-3,-1"], "lr=-1"),                   # outside the field's range
    (["--param", "lr=1e-3,fast"], "lr=fast"),               # not a number
    (["--param", "nope=1,2"], "nope"),                      # not a field of l05's Config
    (["--param", "lr=1e-3,1e-2", "--set", "lr=0.1"], "lr"),  # swept and fixed at once
    (["--param", "epochs=1,2", "--preset", "huge"], "huge"),
])
def test_a_bad_grid_is_one_line_and_exit_2_before_anything_runs(tmp_path, capsys, args, named):
    rc = main(["labs", "sweep", "l05", *args, "--out", str(tmp_path / "runs"), "--engine", "ray"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and named in err, err
    assert not (tmp_path / "runs").exists()  # no MLflow store, no Ray, no trial


def test_a_ray_address_where_nothing_listens_is_one_line_at_once(tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc = main(["labs", "sweep", "l05", *GRID, "--engine", "ray", "--ray-address", f"127.0.0.1:{port}",
               "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and f"127.0.0.1:{port}" in err, err
    assert not (tmp_path / "runs").exists()


@needs_mirror
def test_local_and_ray_sweeps_log_every_trial_and_agree(tmp_path, capsys, ray_local):  # noqa: F811
    local = _sweep(capsys, tmp_path / "local")
    assert local["engine"] == "local"
    on_ray = _sweep(capsys, tmp_path / "ray", "--engine", "ray")
    assert on_ray["engine"] == "ray"
    # Tune ran it: its experiment folder holds one folder per trial.
    tune_dir = tmp_path / "ray" / "sweeps" / "ray" / on_ray["sweep_id"]
    assert len([p for p in tune_dir.iterdir() if p.is_dir()]) == 2
    local_acc, ray_acc = _check_logged(tmp_path / "local", local), _check_logged(tmp_path / "ray", on_ray)
    # Same seeds, same data, one thread each: the engines train the same models.
    assert local_acc == pytest.approx(ray_acc, abs=0.01)
    assert on_ray["best"]["params"] == local["best"]["params"]


def test_the_local_ray_listens_on_loopback_only_with_private_files(ray_local):  # noqa: F811
    import os
    import stat

    import psutil

    from mastery.ops.ray_runtime import ray_temp_dir

    ray_local.get(ray_local.remote(lambda: 1).remote())  # a worker is up, with its own server
    tree = [psutil.Process(), *psutil.Process().children(recursive=True)]
    pids = {p.pid for p in tree}
    listening = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert len(listening) >= 4  # GCS, raylet (2), this driver, the worker, the runtime-env agent
    assert {c.laddr.ip.removeprefix("::ffff:") for c in listening} == {"127.0.0.1"}, listening
    folder = ray_temp_dir()
    assert stat.S_IMODE(os.lstat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.lstat(folder / "auth_token").st_mode) == 0o600
