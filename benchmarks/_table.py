"""A plain-text table and the JSON report for the benchmark scripts.

They run as ``python benchmarks/x.py``, so this folder is on sys.path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def print_table(rows: list[dict[str, Any]]) -> None:
    """Columns are the first row's keys, each as wide as its widest cell."""
    keys = list(rows[0])
    widths = [max(len(k), *(len(str(r[k])) for r in rows)) for k in keys]
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)))
    for r in rows:
        print("  ".join(str(r[k]).ljust(w) for k, w in zip(keys, widths, strict=True)))


def emit_json(report: dict[str, Any], path: str | Path) -> None:
    """Print the report as JSON and write the same text to ``path`` (its folder made when missing)."""
    text = json.dumps(report, indent=2)
    print(text)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text + "\n")
