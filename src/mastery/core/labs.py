"""Loading and running labs.

A lab module defines ``Config`` (a dataclass), ``PRESETS`` (``{"tiny": Config(...),
"full": Config(...)}``) and ``run(config, progress) -> Report``. :func:`run_lab` wraps a run
with seeding, timing, device and version bookkeeping.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from mastery.core.config import apply_overrides, config_to_dict, validate_config
from mastery.core.errors import ConfigError, LabNotImplemented
from mastery.core.lessons import Lesson, get_lesson
from mastery.core.progress import NullProgress, Progress
from mastery.core.report import Report
from mastery.core.runtime import library_versions, seed_everything


@dataclass
class Lab:
    lesson: Lesson
    module: ModuleType

    @property
    def presets(self) -> dict[str, Any]:
        return self.module.PRESETS

    def config(self, preset: str = "tiny", overrides: list[str] | None = None) -> Any:
        if preset not in self.presets:
            raise ConfigError(
                f"unknown preset '{preset}' for {self.lesson.id}; choose from: {', '.join(self.presets)}"
            )
        config = self.presets[preset]
        return apply_overrides(config, overrides or [])


def load_lab(lab_id: str) -> Lab:
    lesson = get_lesson(lab_id)
    if not lesson.implemented:
        raise LabNotImplemented(f"{lesson.id} ({lesson.title}) is planned but not implemented yet")
    return Lab(lesson=lesson, module=importlib.import_module(lesson.lab_module))


def new_report(lesson_id: str, config: Any, preset: str = "custom") -> Report:
    """Start a Report for a lab's run; :func:`run_lab` fills in timing and versions."""
    lesson = get_lesson(lesson_id)
    return Report(
        lab=lesson.id,
        title=lesson.title,
        preset=preset,
        config=config_to_dict(config),
        seed=int(getattr(config, "seed", 0)),
    )


def run_lab(lab: Lab, config: Any, preset: str, progress: Progress | None = None) -> Report:
    progress = progress or NullProgress()
    validate_config(config)  # a config built in code gets the same checks as one from --set
    seed_everything(int(getattr(config, "seed", 0)))
    start = time.perf_counter()
    try:
        report: Report = lab.module.run(config, progress)
        report.preset = preset
        report.config = config_to_dict(config)
        report.wall_time_s = round(time.perf_counter() - start, 3)
        report.versions = library_versions()
        report.created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        progress.finish(report)
    except BaseException as exc:
        progress.fail(exc)
        raise
    finally:
        progress.close()
    return report


def runs_root(out: str | Path | None = None) -> Path:
    return Path(out) if out else Path("runs")


def run_directory(root: Path, lab_id: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return root / lab_id / stamp


def latest_report_dir(root: Path, lab_id: str) -> Path | None:
    lab_dir = root / lab_id
    if not lab_dir.is_dir():
        return None
    runs = sorted(p for p in lab_dir.iterdir() if p.is_dir() and (p / "report.json").is_file())
    return runs[-1] if runs else None


def replace_config(config: Any, **changes: Any) -> Any:
    return dataclasses.replace(config, **changes)
