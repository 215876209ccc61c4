"""Progress reporting for long work.

Labs call ``progress.stage(...)``, ``progress.step(...)`` and ``progress.epoch(...)``; the
CLI shows a tqdm bar on stderr, tests pass :class:`NullProgress`, and ``--track`` wraps any
progress in one that also logs to MLflow.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

log = logging.getLogger(__name__)


class Progress:
    """Receives a lab's progress events. The base class ignores everything."""

    def stage(self, name: str, total: int | None = None) -> None:
        """A new phase starts; ``total`` steps are expected in it, if known."""

    def step(self, n: int = 1, **info: float | str) -> None:
        """``n`` steps of the current stage are done."""

    def epoch(self, epoch: int, metrics: dict[str, float], prefix: str = "") -> None:
        """An epoch finished with these metrics (a tracker logs them)."""

    def params(self, params: dict[str, Any]) -> None:
        """Hyperparameters of the run (a tracker logs them)."""

    def artifact(self, path: str, kind: str = "file") -> None:
        """A file worth keeping was written (a tracker uploads it)."""

    def message(self, text: str) -> None:
        log.info(text)

    def finish(self, report: Any) -> None:
        """The run succeeded with this Report (a tracker logs its metrics)."""

    def fail(self, error: BaseException) -> None:
        """The run raised ``error`` (a tracker marks the run failed)."""

    def close(self) -> None:
        """End the current stage display."""


class NullProgress(Progress):
    """Ignores every event."""


def _short(value: float | str) -> str:
    """A postfix value: numbers to 4 significant digits, labels (e.g. the fault kind being tried) as they are."""
    return f"{value:.4g}" if isinstance(value, int | float) else str(value)


class BarProgress(Progress):
    """A tqdm bar per stage on stderr, with the last metrics in its postfix."""

    def __init__(self, lab: str) -> None:
        self.lab = lab
        self._bar: Any = None

    def stage(self, name: str, total: int | None = None) -> None:
        from tqdm.auto import tqdm

        self.close()
        self._bar = tqdm(total=total, desc=f"{self.lab} {name}", file=sys.stderr, leave=False,
                         dynamic_ncols=True, mininterval=0.5)

    def step(self, n: int = 1, **info: float | str) -> None:
        if self._bar is not None:
            self._bar.update(n)
            if info:
                self._bar.set_postfix({k: _short(v) for k, v in info.items()}, refresh=False)

    def epoch(self, epoch: int, metrics: dict[str, float], prefix: str = "") -> None:
        text = " ".join(f"{k}={_short(v)}" for k, v in metrics.items())
        self.message(f"{self.lab} {prefix}epoch {epoch}: {text}")

    def message(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            log.info(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class FanoutProgress(Progress):
    """Sends every event to several receivers (e.g. a bar and a tracker)."""

    def __init__(self, *targets: Progress) -> None:
        self.targets = targets

    def stage(self, name: str, total: int | None = None) -> None:
        for t in self.targets:
            t.stage(name, total)

    def step(self, n: int = 1, **info: float | str) -> None:
        for t in self.targets:
            t.step(n, **info)

    def epoch(self, epoch: int, metrics: dict[str, float], prefix: str = "") -> None:
        for t in self.targets:
            t.epoch(epoch, metrics, prefix)

    def params(self, params: dict[str, Any]) -> None:
        for t in self.targets:
            t.params(params)

    def artifact(self, path: str, kind: str = "file") -> None:
        for t in self.targets:
            t.artifact(path, kind)

    def message(self, text: str) -> None:
        for t in self.targets:
            t.message(text)

    def finish(self, report: Any) -> None:
        for t in self.targets:
            t.finish(report)

    def fail(self, error: BaseException) -> None:
        for t in self.targets:
            t.fail(error)

    def close(self) -> None:
        for t in self.targets:
            t.close()
