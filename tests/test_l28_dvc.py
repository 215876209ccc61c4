"""L28: git + DVC helpers on small files, the pipeline's stages, and the tiny preset end to end."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest

pytest.importorskip("dvc")

from mastery.ops.versioning import DvcRepo, VersioningError, rewrite_csv_column, sha256_file
from tests.conftest import needs_mirror


def _repo(tmp_path: Path) -> DvcRepo:
    return DvcRepo.create(tmp_path / "repo", tmp_path / "remote")


def test_versions_switch_back_and_forth_and_come_back_from_the_remote(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    data = repo.root / "data.csv"
    data.write_text("id,text\n1,first\n")
    v1 = sha256_file(data)
    md5 = repo.add("data.csv")
    assert md5 == hashlib.md5(data.read_bytes(), usedforsecurity=False).hexdigest()
    first = repo.commit("v1", "data.csv.dvc", ".gitignore")
    data.write_text("id,text\n1,second\n2,third\n")
    v2 = sha256_file(data)
    repo.add("data.csv")
    repo.commit("v2", "data.csv.dvc")
    repo.dvc("push", "-q", "--all-commits")  # both versions, not just the workspace's
    assert repo.remote_objects(tmp_path / "remote") == 2

    repo.git("checkout", "-q", first)
    assert sha256_file(data) == v2  # git restored the pointer only
    assert "data.csv" in str(repo.status())
    repo.dvc("checkout", "-q")
    assert sha256_file(data) == v1
    repo.switch("main")
    assert sha256_file(data) == v2 and data.read_text().endswith("third\n")
    assert len(repo.timings["dvc checkout"]) == 2

    import shutil

    shutil.rmtree(repo.root / ".dvc" / "cache")
    data.unlink()
    repo.dvc("pull", "-q")
    assert sha256_file(data) == v2


def test_a_failing_command_names_itself_and_a_used_folder_is_refused(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    with pytest.raises(VersioningError, match=r"`dvc add missing.csv` failed \(exit"):
        repo.dvc("add", "missing.csv")
    with pytest.raises(VersioningError, match="is not empty"):
        DvcRepo.create(repo.root, tmp_path / "other-remote")
    assert (repo.root / ".dvc" / "config").read_text().count("analytics = false") == 1


def test_repro_reruns_only_the_stages_whose_inputs_changed(tmp_path: Path) -> None:
    import yaml

    repo = _repo(tmp_path)
    (repo.root / "in.txt").write_text("x\n")
    (repo.root / "params.yaml").write_text("a: 1\nb: 1\n")
    pipeline = {"stages": {
        "one": {"cmd": "cat in.txt > one.txt", "deps": ["in.txt"], "params": ["a"], "outs": ["one.txt"]},
        "two": {"cmd": "cat one.txt > two.txt && echo b >> two.txt", "deps": ["one.txt"], "params": ["b"],
                "outs": ["two.txt"]},
    }}
    (repo.root / "dvc.yaml").write_text(yaml.safe_dump(pipeline))
    first = repo.repro()
    assert first.ran == ("one", "two") and first.skipped == ()
    assert repo.repro().ran == ()
    (repo.root / "params.yaml").write_text("a: 1\nb: 2\n")
    assert set(repo.status()) == {"two"}
    changed = repo.repro()
    assert changed.ran == ("two",) and changed.skipped == ("one",)


def test_rewrite_csv_column_keeps_quoted_fields_and_counts_changed_rows(tmp_path: Path) -> None:
    src, dst = tmp_path / "a.csv", tmp_path / "b.csv"
    with src.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerows([["id", "text", "note"], [1, "a<br />b, with comma", "<br />"], [2, "line\nbreak", "x"],
                     [3, "no tag", "y"]])
    assert rewrite_csv_column(src, dst, "text", "<br />", " ") == 1
    rows = list(csv.DictReader(dst.open(newline="")))
    assert [r["text"] for r in rows] == ["a b, with comma", "line\nbreak", "no tag"]
    assert rows[0]["note"] == "<br />"  # other columns untouched
    with pytest.raises(VersioningError, match="no column 'body'"):
        rewrite_csv_column(src, dst, "body", "<br />", " ")


@needs_mirror
def test_pipeline_stages_split_train_and_score(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from mastery.assets.loaders import load_titanic
    from mastery.ops import dvc_pipeline

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    load_titanic().to_csv("data/titanic.csv", index=False)
    dvc_pipeline.write_pipeline(tmp_path, {"prepare": {"test_size": 0.25, "seed": 0},
                                           "train": {"C": 1.0, "max_iter": 1000}})
    for stage in ("prepare", "train", "evaluate"):
        dvc_pipeline.main([stage])
    train, test = (len(Path(f"data/prepared/{n}.csv").read_text().splitlines()) - 1 for n in ("train", "test"))
    assert (train, test) == (668, 223)
    metrics = json.loads(Path("metrics.json").read_text())
    assert set(metrics) == {"accuracy", "f1", "roc_auc"} and 0.7 < metrics["roc_auc"] <= 1.0


@needs_mirror
def test_tiny_preset_versions_and_reruns_what_it_should(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mastery.core.labs import load_lab, run_lab

    monkeypatch.chdir(tmp_path)
    lab = load_lab("l28")
    report = run_lab(lab, lab.config("tiny"), "tiny")
    failed = [f"{c.name}: {c.value}" for c in report.checks if not c.passed]
    assert not failed, failed
    m = report.metrics
    assert (m["versions_verified"], m["remote_objects"], m["stages_rerun_first"], m["stages_rerun_no_change"],
            m["stages_rerun_after_param_change"]) == (2, 2, 3, 0, 2)
    assert m["rows_changed"] > 0 and m["f1_before"] != m["f1_after"]
