"""L28 · Data pipelines and DVC: version a large CSV beside the code, switch between its versions, and
rebuild a model pipeline that reruns only what a change touches.

Everything happens in a throwaway git + DVC repository with a local folder as the DVC remote, through the
real `git` and `dvc` commands. Versioning: the IMDb reviews as one CSV (66.5 MB) are `dvc add`ed,
committed and pushed (v1); the HTML line breaks are stripped from every review and the result committed and
pushed again (v2); then `git checkout` + `dvc checkout` switch back and forth, and the sha256 of the working
file must equal the one recorded for that version each time. Wiping the cache and the file and running
`dvc pull` must restore it from the remote. Pipeline: `dvc.yaml` runs prepare -> train -> evaluate for the
Titanic model with params.yaml; after a change to the model's C only train and evaluate rerun, and with no
change nothing does.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Interval

from mastery.core.config import Fraction
from mastery.core.labs import new_report
from mastery.core.progress import Progress
from mastery.core.report import Report

REQUIRES: tuple[str, ...] = ("titanic",)  # the tiny preset generates its reviews; full reads "imdb" too

CSV = "data/reviews.csv"


@dataclass(frozen=True)
class Config:
    # imdb: the registered IMDb reviews (50,000 rows, 66.5 MB); generated: seeded synthetic reviews
    dataset: Literal["imdb", "generated"] = "imdb"
    generated_rows: Annotated[int, Interval(ge=10, le=5_000_000)] = 2000
    min_csv_mb: Annotated[float, Interval(ge=0, le=100_000)] = 50.0  # the CSV must be at least this large
    round_trips: Annotated[int, Interval(ge=1, le=20)] = 2  # v1 -> v2 switches, each verified by sha256
    test_size: Annotated[float, Interval(gt=0, lt=1)] = 0.2
    c_before: Annotated[float, Interval(gt=0, le=1e6)] = 1.0  # the model's C in the first commit
    c_after: Annotated[float, Interval(gt=0, le=1e6)] = 0.1  # ... and after the parameter change
    max_iter: Annotated[int, Interval(ge=10, le=100_000)] = 1000
    min_f1: Fraction = 0.6
    seed: int = 0


# The numbers that summarise a run: the README table and the conformance test read them from here.
HEADLINE = ("csv_mb", "versions_verified", "stages_rerun_after_param_change")

PRESETS = {
    "tiny": Config(dataset="generated", generated_rows=2000, min_csv_mb=0.0, round_trips=1),
    "full": Config(),
}


def run(config: Config, progress: Progress) -> Report:
    from mastery.ops.versioning import DvcRepo

    report = new_report("l28", config)
    report.device = "cpu (git and dvc command lines on a local folder remote; scikit-learn stages)"
    progress.params({"dataset": config.dataset, "round_trips": config.round_trips, "c_before": config.c_before,
                     "c_after": config.c_after})
    with tempfile.TemporaryDirectory(prefix="l28-") as tmp:
        remote = Path(tmp) / "remote"
        progress.stage("git init + dvc init", None)
        start = time.perf_counter()
        repo = DvcRepo.create(Path(tmp) / "repo", remote)
        report.timing("init_seconds", time.perf_counter() - start)
        _versioning(report, config, repo, remote, Path(tmp), progress)
        _pipeline(report, config, repo, progress)
        for name, calls in sorted(repo.timings.items()):
            report.timing(f"{name.replace(' ', '_')}_mean_seconds", sum(calls) / len(calls))
        calls = sum(len(c) for c in repo.timings.values())
        report.metric("commands_run", calls)
    _figure(report)
    report.metrics = {**{k: report.metrics[k] for k in HEADLINE}, **report.metrics}
    return report


def _write_v1(config: Config, path: Path) -> None:
    """The first version of the data: the IMDb CSV decompressed from the registry, or generated reviews."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if config.dataset == "imdb":
        from mastery.assets.store import resolve

        with gzip.open(resolve("imdb"), "rb") as fin, path.open("wb") as fout:
            shutil.copyfileobj(fin, fout, length=1 << 20)
        return
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(1)  # fixed: the data is the lab's input, not its randomness
    words = np.array(["the", "a", "film", "movie", "plot", "actor", "great", "awful", "boring", "loved", "hated",
                      "scene", "ending", "music"])
    n = config.generated_rows
    text = [" ".join(rng.choice(words, 30)) + ("<br /><br />" if i % 3 else " ") + " ".join(rng.choice(words, 20))
            for i in range(n)]
    pd.DataFrame({"split": "train", "label": rng.integers(0, 2, n), "id": np.arange(n),
                  "rating": rng.integers(1, 11, n), "text": text}).to_csv(path, index=False)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _versioning(report: Report, config: Config, repo: Any, remote: Path, tmp: Path, progress: Progress) -> None:
    from mastery.ops.versioning import rewrite_csv_column, sha256_file

    data = repo.root / CSV
    progress.stage("v1: dvc add, commit, push", None)
    start = time.perf_counter()
    _write_v1(config, data)
    report.timing("write_v1_seconds", time.perf_counter() - start)
    size_mb = data.stat().st_size / 1e6
    report.metric("csv_mb", round(size_mb, 3))
    report.check("csv_size", size_mb >= config.min_csv_mb, f"the tracked CSV is >= {config.min_csv_mb:g} MB",
                 round(size_mb, 1))
    sha = {"v1": sha256_file(data)}
    start = time.perf_counter()
    md5 = {"v1": repo.add(CSV)}
    report.timing("dvc_add_v1_seconds", time.perf_counter() - start)
    report.check("dvc_md5_is_content_md5", md5["v1"] == _md5(data),
                 "the md5 in reviews.csv.dvc is the md5 of the file's bytes", md5["v1"])
    ignored = (repo.root / "data" / ".gitignore").read_text().split()
    repo.commit("reviews v1", f"{CSV}.dvc", "data/.gitignore")
    repo.git("tag", "v1")
    start = time.perf_counter()
    repo.dvc("push", "-q")
    report.timing("dvc_push_v1_seconds", time.perf_counter() - start)

    progress.stage("v2: strip <br /> from the reviews", None)
    start = time.perf_counter()
    rows_changed = rewrite_csv_column(data, tmp / "v2.csv", "text", "<br />", " ")
    shutil.move(tmp / "v2.csv", data)
    report.timing("write_v2_seconds", time.perf_counter() - start)
    report.metric("rows_changed", rows_changed)
    sha["v2"] = sha256_file(data)
    md5["v2"] = repo.add(CSV)
    repo.commit("reviews v2: HTML line breaks stripped", f"{CSV}.dvc")
    repo.git("tag", "v2")
    start = time.perf_counter()
    repo.dvc("push", "-q")
    report.timing("dvc_push_v2_seconds", time.perf_counter() - start)
    objects = repo.remote_objects(remote)
    report.metric("remote_objects", objects)
    report.check("two_versions", rows_changed > 0 and sha["v1"] != sha["v2"] and objects == 2,
                 "v2 changes rows, its hash differs, and the remote holds both versions",
                 f"{rows_changed} rows changed, {objects} objects in the remote")
    report.check("git_ignores_data", f"/{Path(CSV).name}" in ignored,
                 "dvc add makes git ignore the CSV: git holds only the .dvc pointer", " ".join(ignored))

    progress.stage("switch back and forth", 2 * config.round_trips)
    # git alone restores the pointer, not the data: the workspace still holds v2 until dvc checkout.
    repo.git("checkout", "-q", "v1")
    stale = sha256_file(data) == sha["v2"]
    stale_status = repo.status()
    repo.git("checkout", "-q", "main")
    report.check("git_alone_is_not_enough", stale and CSV in str(stale_status),
                 "after git checkout v1 alone the file is still v2 and dvc status reports it changed",
                 f"file is v2: {stale}; dvc status: {stale_status}")
    rows, verified, seconds = [], 0, []
    for i, tag in enumerate(["v1", "v2"] * config.round_trips):
        took = repo.switch(tag)
        seconds.append(took)
        ok = sha256_file(data) == sha[tag] and repo.tracked_md5(CSV) == md5[tag]
        verified += ok
        rows.append({"step": i + 1, "git checkout": tag, "dvc checkout s": round(took, 3),
                     "sha256 of the file": sha256_file(data)[:16], "recorded": sha[tag][:16], "match": ok})
        progress.step(i + 1)
    repo.git("checkout", "-q", "main")
    report.table("Switching versions: git checkout + dvc checkout, verified by sha256", rows)
    report.metric("versions_verified", verified)
    report.timing("dvc_checkout_mean_seconds", sum(seconds) / len(seconds))
    report.check("switches_verified", verified == 2 * config.round_trips,
                 "each switch leaves exactly that version's bytes in the workspace", f"{verified}/{len(rows)}")

    progress.stage("restore from the remote", None)
    shutil.rmtree(repo.root / ".dvc" / "cache")
    data.unlink()
    start = time.perf_counter()
    repo.dvc("pull", "-q")
    report.timing("dvc_pull_seconds", time.perf_counter() - start)
    restored = data.is_file() and sha256_file(data) == sha["v2"]
    report.check("pull_restores", restored, "with the cache and the file deleted, dvc pull restores v2 from the "
                 "remote, same sha256", restored)
    report.table("The two versions", [
        {"version": tag, "sha256": sha[tag][:16], "dvc md5": md5[tag],
         "what changed": "IMDb reviews as published" if tag == "v1" else f"<br /> stripped in {rows_changed} rows"}
        for tag in ("v1", "v2")])


def _pipeline(report: Report, config: Config, repo: Any, progress: Progress) -> None:
    from mastery.assets.loaders import load_titanic
    from mastery.ops.dvc_pipeline import write_params, write_pipeline

    progress.stage("dvc.yaml: prepare -> train -> evaluate", None)
    params = {"prepare": {"test_size": config.test_size, "seed": config.seed},
              "train": {"C": config.c_before, "max_iter": config.max_iter}}
    load_titanic().to_csv(repo.root / "data" / "titanic.csv", index=False)
    write_pipeline(repo.root, params)
    first = repo.repro()
    repo.commit(f"titanic pipeline, C={config.c_before:g}", ".")
    before = repo.metrics()
    again = repo.repro()
    params["train"]["C"] = config.c_after
    write_params(repo.root, params)
    status = repo.status()
    changed = repo.repro()
    after = repo.metrics()
    diff = repo.dvc("metrics", "diff", "--json")
    repo.commit(f"C={config.c_after:g}", ".")

    stages = ("prepare", "train", "evaluate")
    report.metric("stages_rerun_first", len(first.ran))
    report.metric("stages_rerun_no_change", len(again.ran))
    report.metric("stages_rerun_after_param_change", len(changed.ran))
    report.check("repro_first_runs_all", first.ran == stages, "the first dvc repro runs prepare, train, evaluate",
                 ", ".join(first.ran))
    report.check("repro_no_change_runs_nothing", again.ran == () and set(again.skipped) == set(stages),
                 "dvc repro with nothing changed reruns no stage", f"ran: {list(again.ran)}, skipped: "
                 f"{list(again.skipped)}")
    report.check("repro_reruns_only_changed", changed.ran == ("train", "evaluate") and changed.skipped ==
                 ("prepare",), f"after train.C {config.c_before:g} -> {config.c_after:g}: prepare skipped, "
                 "train and evaluate rerun", f"ran: {list(changed.ran)}, skipped: {list(changed.skipped)}")
    report.check("status_names_the_stage", set(status) == {"train"} and "train.C" in str(status),
                 "before the repro, dvc status names train (its params changed) and nothing else", str(status))
    for label, shown in (("before", before), ("after", after)):
        for key in ("accuracy", "f1", "roc_auc"):
            report.metric(f"{key}_{label}", shown.get(f"metrics.json:{key}", float("nan")))
    report.check("metrics_shown", before.get("metrics.json:f1", 0.0) >= config.min_f1,
                 f"dvc metrics show reads the evaluate stage's F1 >= {config.min_f1:g}", before.get("metrics.json:f1"))
    report.timing("repro_first_seconds", first.seconds)
    report.timing("repro_no_change_seconds", again.seconds)
    report.timing("repro_param_change_seconds", changed.seconds)
    report.table("dvc repro, three times", [
        {"dvc repro": "first run", "ran": ", ".join(first.ran), "skipped": ", ".join(first.skipped) or "-",
         "seconds": round(first.seconds, 2)},
        {"dvc repro": "nothing changed", "ran": ", ".join(again.ran) or "-", "skipped": ", ".join(again.skipped),
         "seconds": round(again.seconds, 2)},
        {"dvc repro": f"train.C {config.c_before:g} -> {config.c_after:g}", "ran": ", ".join(changed.ran),
         "skipped": ", ".join(changed.skipped) or "-", "seconds": round(changed.seconds, 2)}])
    report.note(
        "`dvc metrics diff` against the committed C=" f"{config.c_before:g} run: `{' '.join(diff.split())[:300]}`. "
        "DVC decides what to rerun from hashes alone: each stage's dependencies, parameters and outputs are "
        "recorded in dvc.lock; prepare reads no parameter of train, so its hashes match and it is skipped. "
        "Each stage is a fresh `python -m mastery.ops.dvc_pipeline` process: most of its time is imports "
        "(skops, on load, walks scikit-learn's modules and pulls in torch through its array-API shim), not the "
        "900-row fit, which is why skipping prepare saves little here and a lot on a real preprocessing step."
    )


def _figure(report: Report) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = report.timings
    ops = [("write v1", "write_v1_seconds"), ("dvc add v1", "dvc_add_v1_seconds"), ("push v1", "dvc_push_v1_seconds"),
           ("write v2", "write_v2_seconds"), ("push v2", "dvc_push_v2_seconds"),
           ("dvc checkout (mean)", "dvc_checkout_mean_seconds"), ("dvc pull", "dvc_pull_seconds"),
           ("repro: first", "repro_first_seconds"), ("repro: no change", "repro_no_change_seconds"),
           ("repro: C changed", "repro_param_change_seconds")]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, 4.5), gridspec_kw={"width_ratios": [1.6, 1]})
    ax.barh([o for o, _ in ops][::-1], [t.get(k, 0.0) for _, k in ops][::-1], color="tab:blue")
    ax.set(xlabel="seconds (wall, one call)", title=f"git + DVC on a {report.metrics['csv_mb']:.1f} MB CSV")
    ax.grid(alpha=0.3, axis="x")
    keys = ("accuracy", "f1", "roc_auc")
    for off, label, color in ((-0.2, "before", "tab:gray"), (0.2, "after", "tab:green")):
        bx.bar([i + off for i in range(3)], [report.metrics[f"{k}_{label}"] for k in keys], width=0.4, color=color,
               label=f"C={report.config['c_before' if label == 'before' else 'c_after']:g}")
    bx.set_xticks(range(3), keys)
    bx.set(ylim=(0, 1), title="dvc metrics show, before/after the C change")
    bx.legend()
    bx.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    report.figure("dvc_timings", fig)
