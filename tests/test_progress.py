"""The console progress display the CLI and the demo use: numbers and labels in the postfix and epoch lines."""

from mastery.core.progress import BarProgress


def test_bar_shows_numbers_and_labels(capsys):
    bar = BarProgress("l29")
    bar.stage("fault kinds", total=2)
    bar.step(kind="drift")  # a label: L29 names the fault it is trying
    bar.step(loss=0.123456789)
    assert bar._bar.postfix == "loss=0.1235"
    bar.epoch(1, {"loss": 0.5, "phase": "warmup"})
    bar.close()
    assert "l29 epoch 1: loss=0.5 phase=warmup" in capsys.readouterr().err
