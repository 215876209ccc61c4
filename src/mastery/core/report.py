"""The Report a lab returns: metrics, named checks, figures, config, versions and timing.

Metrics are deterministic for a given seed (the conformance test compares them between two
runs); timings (wall-clock seconds, speed-ups) are measured and vary run to run, so they
live apart.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPORT_SCHEMA = 1


@dataclass
class Check:
    """A named expectation and whether the run met it."""

    name: str
    expectation: str
    passed: bool
    value: float | str | None = None


@dataclass
class Report:
    lab: str
    title: str
    preset: str
    config: dict[str, Any]
    seed: int
    metrics: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    device: str = "cpu"
    versions: dict[str, str] = field(default_factory=dict)
    wall_time_s: float = 0.0
    created: str = ""
    schema: int = REPORT_SCHEMA
    # PNG bytes by figure file name; written next to report.json, never serialised into it.
    _figure_bytes: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)

    # -- building -------------------------------------------------------------------------
    def metric(self, name: str, value: float) -> float:
        self.metrics[name] = _clean_number(value)
        return self.metrics[name]

    def timing(self, name: str, value: float) -> float:
        self.timings[name] = _clean_number(value)
        return self.timings[name]

    def check(self, name: str, passed: bool, expectation: str, value: float | str | None = None) -> bool:
        if isinstance(value, float):
            value = _clean_number(value)
        self.checks.append(Check(name=name, expectation=expectation, passed=bool(passed), value=value))
        return bool(passed)

    def figure(self, name: str, fig: Any, dpi: int = 110) -> str:
        """Store a matplotlib figure as ``<name>.png`` and close it."""
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        filename = f"{name}.png"
        self._figure_bytes[filename] = buf.getvalue()
        if filename not in self.figures:
            self.figures.append(filename)
        return filename

    def table(self, name: str, rows: list[dict[str, Any]]) -> None:
        self.tables[name] = [{k: _clean_value(v) for k, v in row.items()} for row in rows]

    def note(self, text: str) -> None:
        self.notes.append(text)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    # -- serialising ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("_figure_bytes", None)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        data = dict(data)
        data["checks"] = [Check(**c) for c in data.get("checks", [])]
        known = {f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> Report:
        return cls.from_dict(json.loads(text))

    def to_markdown(self, figure_dir: str = "") -> str:
        prefix = f"{figure_dir.rstrip('/')}/" if figure_dir else ""
        ok = sum(c.passed for c in self.checks)
        lines = [
            f"# {self.lab.upper()} · {self.title}",
            "",
            f"Preset `{self.preset}` · seed {self.seed} · device `{self.device}` · "
            f"wall time {self.wall_time_s:.1f} s · checks {ok}/{len(self.checks)} passed · {self.created}",
            "",
        ]
        if self.metrics:
            lines += ["## Metrics", "", "| metric | value |", "|---|---|"]
            lines += [f"| `{k}` | {_fmt(v)} |" for k, v in self.metrics.items()]
            lines.append("")
        if self.timings:
            lines += ["## Timings (measured on this machine)", "", "| timing | value |", "|---|---|"]
            lines += [f"| `{k}` | {_fmt(v)} |" for k, v in self.timings.items()]
            lines.append("")
        if self.checks:
            lines += ["## Checks", "", "| check | expectation | value | result |", "|---|---|---|---|"]
            for c in self.checks:
                mark = "pass" if c.passed else "**FAIL**"
                lines.append(f"| {c.name} | {c.expectation} | {_fmt(c.value)} | {mark} |")
            lines.append("")
        for name, rows in self.tables.items():
            if not rows:
                continue
            cols = list(rows[0])
            lines += [f"## {name}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
            lines.append("")
        if self.notes:
            lines += ["## Notes", ""]
            lines += [f"{n}\n" for n in self.notes]
        if self.figures:
            lines += ["## Figures", ""]
            lines += [f"![{f}]({prefix}{f})\n" for f in self.figures]
        lines += ["## Config", "", "```json", json.dumps(self.config, indent=2), "```", ""]
        lines += ["## Versions", "", ", ".join(f"{k} {v}" for k, v in self.versions.items()), ""]
        return "\n".join(lines)

    def figure_bytes(self, name: str) -> bytes:
        return self._figure_bytes[name]

    # -- writing --------------------------------------------------------------------------
    def write(self, directory: Path) -> Path:
        """Write report.json, report.md and the PNGs into ``directory`` atomically.

        Everything goes into a temporary sibling folder first and is renamed into place, so an
        interrupted write never leaves a half-written report behind.
        """
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            for name, data in self._figure_bytes.items():
                (tmp / name).write_bytes(data)
            (tmp / "report.json").write_text(self.to_json() + "\n", encoding="utf-8")
            (tmp / "report.md").write_text(self.to_markdown(), encoding="utf-8")
            if directory.exists():
                shutil.rmtree(directory)
            os.replace(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    def publish(self, results_dir: Path) -> list[Path]:
        """Write ``<lab>.json``, ``<lab>.md`` and ``<lab>/<figure>.png`` under ``results_dir``."""
        results_dir = Path(results_dir)
        fig_dir = results_dir / self.lab
        written = []
        results_dir.mkdir(parents=True, exist_ok=True)
        if fig_dir.exists():
            shutil.rmtree(fig_dir)
        fig_dir.mkdir()
        for name, data in self._figure_bytes.items():
            _atomic_write(fig_dir / name, data)
            written.append(fig_dir / name)
        _atomic_write(results_dir / f"{self.lab}.json", (self.to_json() + "\n").encode())
        _atomic_write(results_dir / f"{self.lab}.md", self.to_markdown(self.lab).encode())
        written += [results_dir / f"{self.lab}.json", results_dir / f"{self.lab}.md"]
        return written


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _clean_number(value: Any) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"metric value {value!r} is not finite")
    return value


def _clean_value(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}"
        return f"{value:.3e}"
    return str(value)
