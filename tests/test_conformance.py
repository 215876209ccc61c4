"""Every implemented lab's tiny preset: a passing Report that survives JSON and is reproducible."""

import json

import pytest

from mastery.core.labs import load_lab, run_lab
from mastery.core.lessons import LESSONS
from mastery.core.progress import BarProgress
from mastery.core.report import Report
from tests.conftest import needs_mirror

IMPLEMENTED = [lesson.id for lesson in LESSONS if lesson.implemented]


def test_module_1_is_implemented():
    assert {f"l{i:02d}" for i in range(1, 9)} <= set(IMPLEMENTED)


@needs_mirror
@pytest.mark.parametrize("lab_id", IMPLEMENTED)
def test_tiny_preset_conforms(lab_id, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything a lab writes relative to the cwd lands here
    lab = load_lab(lab_id)
    config = lab.config("tiny")
    first = run_lab(lab, config, "tiny", BarProgress(lab_id))  # the progress display the CLI and demo use
    assert isinstance(first, Report) and first.lab == lab_id and first.preset == "tiny"
    failed = [f"{c.name}: expected {c.expectation}, got {c.value}" for c in first.checks if not c.passed]
    assert not failed, failed
    assert first.checks, "a lab must check something"
    assert first.metrics or first.timings
    # the headline the lab declares (and the README shows) is what a run reports
    missing = set(lab.module.HEADLINE) - set(first.metrics) - set(first.timings)
    assert not missing, f"HEADLINE names not in the report: {sorted(missing)}"
    assert first.figures and all(first.figure_bytes(f).startswith(b"\x89PNG") for f in first.figures)
    assert first.device and first.versions["python"]

    back = Report.from_json(first.to_json())
    assert json.loads(back.to_json()) == json.loads(first.to_json())

    second = run_lab(lab, config, "tiny")
    assert second.metrics == first.metrics, "same seed must give the same metrics"
