import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from mastery.core.report import Report


def _report() -> Report:
    r = Report(lab="l01", title="t", preset="tiny", config={"a": 1}, seed=0)
    r.metric("acc", 0.9)
    r.timing("seconds", 1.5)
    r.check("acc_ok", True, ">= 0.5", 0.9)
    r.table("rows", [{"x": 1, "y": 2.0}])
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    r.figure("curve", fig)
    return r


def test_json_round_trip_keeps_everything_but_figure_bytes():
    r = _report()
    back = Report.from_json(r.to_json())
    assert back.to_dict() == r.to_dict()
    assert back.checks[0].passed is True
    assert back.figures == ["curve.png"]


def test_non_finite_metrics_are_rejected():
    r = _report()
    with pytest.raises(ValueError, match="not finite"):
        r.metric("bad", float("nan"))


def test_write_and_publish_layout(tmp_path):
    r = _report()
    out = r.write(tmp_path / "runs" / "l01" / "stamp")
    assert json.loads((out / "report.json").read_text())["metrics"] == {"acc": 0.9}
    assert (out / "curve.png").read_bytes().startswith(b"\x89PNG")
    assert "![curve.png](curve.png)" in (out / "report.md").read_text()
    # No temporary folders are left beside the report.
    assert [p.name for p in out.parent.iterdir()] == ["stamp"]
    r.publish(tmp_path / "results")
    assert (tmp_path / "results" / "l01" / "curve.png").is_file()
    assert "![curve.png](l01/curve.png)" in (tmp_path / "results" / "l01.md").read_text()


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    r = _report()
    target = tmp_path / "l01" / "stamp"

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Report, "to_markdown", boom)
    with pytest.raises(OSError):
        r.write(target)
    assert not target.exists()
    assert list((tmp_path / "l01").iterdir()) == []
