"""Labs are thin: nothing imports from mastery.labs except the lab registry and the CLI.

What a lab holds that others need (clients, question sets, scorers, fixtures) belongs in a package:
``mastery.serving``, ``mastery.eval``, ``mastery.llm``. Every .py under src, tests and benchmarks is parsed
(nothing is imported or run) and each import statement, wherever it sits, is resolved to a module name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("src", "tests", "benchmarks")
ALLOWED = ("src/mastery/core/lessons.py", "src/mastery/core/labs.py", "src/mastery/cli.py")
LABS = "mastery.labs"


def _package(path: Path) -> str:
    """The dotted package a file under src/ belongs to ("" outside src: relative imports are not used there)."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[1:-1]) if parts[0] == "src" else ""


def imported_modules(source: str, package: str = "") -> list[tuple[int, str]]:
    """(line, module) for every import in ``source``: ``import a.b``, ``from a import b`` (as ``a.b``: b may be a
    module), relative imports resolved against ``package``, and ``importlib.import_module("...")`` literals."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1] if package else []
                base = ".".join([*anchor, *([base] if base else [])])
            found += [(node.lineno, f"{base}.{alias.name}" if base else alias.name) for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value))
    return found


def lab_imports(source: str, package: str = "") -> list[tuple[int, str]]:
    return [(line, name) for line, name in imported_modules(source, package)
            if name == LABS or name.startswith(LABS + ".")]


def _files() -> list[Path]:
    files = [p for top in SCANNED for p in sorted((ROOT / top).rglob("*.py"))]
    assert len(files) > 100, "the scan found too few files: is ROOT right?"
    return files


def test_only_the_lab_registry_and_the_cli_import_the_labs():
    offenders = []
    for path in _files():
        rel = path.relative_to(ROOT).as_posix()
        if rel in ALLOWED:  # labs included: one lab runs another through the registry (L08 runs L07)
            continue
        offenders += [f"{rel}:{line} imports {name}" for line, name in
                      lab_imports(path.read_text(encoding="utf-8"), _package(path))]
    assert offenders == [], "move what these need out of the lab (to serving, eval, llm ...):\n" + "\n".join(
        offenders)


@pytest.mark.parametrize(("source", "package", "expected"), [
    ("from mastery.labs.l24_agent_api import wait_result", "", ["mastery.labs.l24_agent_api.wait_result"]),
    ("def f():\n    import mastery.labs.l21_react_agent as l21", "", ["mastery.labs.l21_react_agent"]),
    ("from mastery import labs", "", ["mastery.labs"]),
    ("from ..labs import l19_rag", "mastery.eval", ["mastery.labs.l19_rag"]),
    ("from .l07_regularization import Config", "mastery.labs", ["mastery.labs.l07_regularization.Config"]),
    ("import importlib\nimportlib.import_module('mastery.labs.l25_predict_api')", "", ["mastery.labs.l25_predict_api"]),
    ("from mastery.eval.agent_tasks import answer_correct\nimport mastery.labsmith", "", []),
    ("from ..eval import rag_tasks", "mastery.llm", []),
])
def test_the_scan_sees_every_form_of_import(source, package, expected):
    assert [name for _, name in lab_imports(source, package)] == expected


def test_the_allowed_files_exist():
    # an allowed path that no longer exists would silently allow nothing: the list must follow renames
    assert all((ROOT / rel).is_file() for rel in ALLOWED)
