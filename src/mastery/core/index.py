"""The runs index: one page linking each lab's latest report and figures."""

from __future__ import annotations

import importlib
import json
import math
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
        metrics = _headline_values(lesson.lab_module, data)
        lines.append(
            f"| [{lesson.id}]({lesson.id}.md) | {lesson.title} | {data.get('device', '')} | "
            f"{data['wall_time_s']:.0f} s | {ok}/{len(checks)} | {metrics} |"
        )
    out = results / "README.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


README_START = "<!-- labs-table:start (generated from each lab's HEADLINE: mastery labs table --write) -->"
README_END = "<!-- labs-table:end -->"


def headline(lab_module: str) -> tuple[str, ...]:
    """The metric names a lab declares as its headline (``HEADLINE`` in the lab module)."""
    return tuple(getattr(importlib.import_module(lab_module), "HEADLINE", ()))


def _headline_values(lab_module: str, data: dict) -> str:
    """``name`` value pairs of a recorded report's headline metrics (timings count too)."""
    values = {**data.get("timings", {}), **data.get("metrics", {})}
    parts = []
    for name in headline(lab_module):
        value = values.get(name)
        shown = f" {value:.4g}" if isinstance(value, int | float) and math.isfinite(value) else " -"
        parts.append(f"`{name}`{shown}")
    return ", ".join(parts)


def labs_table(results: Path) -> str:
    """The README's lab table: every implemented lab, its lesson, and its headline numbers as recorded."""
    lines = ["| lab | lesson | headline numbers (recorded full run) |", "|---|---|---|"]
    for lesson in LESSONS:
        if not lesson.implemented:
            continue
        path = results / f"{lesson.id}.json"
        data = json.loads(path.read_text()) if path.is_file() else {}
        link = f"[{lesson.id}]({results.as_posix()}/{lesson.id}.md)" if data else lesson.id
        lines.append(f"| {link} | {lesson.title} | {_headline_values(lesson.lab_module, data)} |")
    return "\n".join(lines)


def sync_readme_table(readme: Path, results: Path) -> bool:
    """Rewrite the table between the README's markers; True when the file changed."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        from mastery.core.errors import ConfigError

        raise ConfigError(f"{readme}: the labs-table markers are missing")
    new = text[: start + len(README_START)] + "\n" + labs_table(results) + "\n" + text[end:]
    if new == text:
        return False
    readme.write_text(new, encoding="utf-8")
    return True
