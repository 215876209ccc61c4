"""The recorded results, reproduced: every implemented lab's full preset passes its checks.

Minutes per lab on a 2-core CPU; run with `make test-slow` (pytest -m slow).
"""

import pytest

from mastery.core.labs import load_lab, run_lab
from mastery.core.lessons import LESSONS
from tests.conftest import needs_mirror

IMPLEMENTED = [lesson.id for lesson in LESSONS if lesson.implemented]


@pytest.mark.slow
@needs_mirror
@pytest.mark.parametrize("lab_id", IMPLEMENTED)
def test_full_preset_passes_its_checks(lab_id, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lab = load_lab(lab_id)
    report = run_lab(lab, lab.config("full"), "full")
    failed = [f"{c.name}: expected {c.expectation}, got {c.value}" for c in report.checks if not c.passed]
    assert not failed, failed
