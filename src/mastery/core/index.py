"""The runs index: one page linking each lab's latest report and figures."""

from __future__ import annotations

import json
from pathlib import Path

from mastery.core.labs import latest_report_dir
from mastery.core.lessons import LESSONS


def write_runs_index(root: Path) -> Path:
    lines = ["# Lab runs", "", "Latest run of each lab in this folder.", "",
             "| lab | title | preset | checks | wall time | report | figures |", "|---|---|---|---|---|---|---|"]
    for lesson in LESSONS:
        run_dir = latest_report_dir(root, lesson.id)
        if run_dir is None:
            continue
        data = json.loads((run_dir / "report.json").read_text())
        rel = run_dir.relative_to(root).as_posix()
        checks = data.get("checks", [])
        ok = sum(c["passed"] for c in checks)
        figs = " ".join(f"[{f}]({rel}/{f})" for f in data.get("figures", []))
        lines.append(
            f"| {lesson.id} | {lesson.title} | {data['preset']} | {ok}/{len(checks)} | "
            f"{data['wall_time_s']:.1f} s | [report]({rel}/report.md) | {figs} |"
        )
    path = root / "index.md"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_results_index(results: Path) -> Path:
    """docs/results/README.md: the recorded full runs, their headline metrics and wall times."""
    lines = ["# Recorded results", "",
             "Full-preset run of each implemented lab on the project's reference machine "
             "(2 CPU cores, no GPU unless the report says otherwise). Each page holds the metrics, "
             "checks, figures, config and library versions.", "",
             "| lab | title | device | wall time | checks | metrics |", "|---|---|---|---|---|---|"]
    for lesson in LESSONS:
        path = results / f"{lesson.id}.json"
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        checks = data.get("checks", [])
        ok = sum(c["passed"] for c in checks)
        metrics = ", ".join(f"`{k}` {v:.4g}" for k, v in list(data.get("metrics", {}).items())[:6])
        lines.append(
            f"| [{lesson.id}]({lesson.id}.md) | {lesson.title} | {data.get('device', '')} | "
            f"{data['wall_time_s']:.0f} s | {ok}/{len(checks)} | {metrics} |"
        )
    out = results / "README.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out
