"""Batch scoring: a CSV in, the same rows plus the model's columns out, in one process or on Ray Data.

The contract is one small :class:`Scorer`: a function from a pandas batch to the columns to add (same
length, same order). Titanic survival is one scorer (:func:`titanic_scorer`); Cyber-Sentinel's log
scoring is meant to be another, with nothing else to change.

Every input column is read as text, so the rows are written back exactly as they came (no ``1`` turned
into ``1.0`` by a column that happens to hold a blank); the scorer parses what it reads. Both engines
parse with the same Arrow CSV reader and options, so they write the same file:

- ``local``: Arrow's streaming reader, one batch at a time, in this process;
- ``ray``: ``ray.data.read_csv`` then ``map_batches`` on Ray tasks of 1 CPU each (``workers`` of them at
  once), the batches streamed back in input order to be written here.

The output is written to a temporary file next to it and renamed into place only when every row is
written: an error (a bad value, a worker lost) leaves no file, and never a half-written one.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mastery.core.errors import ConfigError, MasteryError

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")


class ScoringError(MasteryError):
    """The input cannot be scored (a missing column, a value that is not a number)."""


@dataclass(frozen=True)
class Scorer:
    """``fn(batch) -> the new columns`` (a DataFrame with the batch's length), their names, and a name."""

    fn: Callable[[Any], Any]
    columns: tuple[str, ...]
    name: str = "scorer"

    def __call__(self, batch: Any) -> Any:
        """The batch with the new columns appended (what is written)."""
        import pandas as pd

        if len(batch) == 0:  # models refuse zero rows; the columns still belong in the output
            return batch.assign(**{c: pd.Series([], dtype=object) for c in self.columns})
        added = self.fn(batch)
        if list(added.columns) != list(self.columns):
            raise ScoringError(f"{self.name} returned the columns {list(added.columns)}, not {list(self.columns)}")
        if len(added) != len(batch):
            raise ScoringError(f"{self.name} returned {len(added)} rows for a batch of {len(batch)}")
        clash = sorted(set(added.columns) & set(batch.columns))
        if clash:
            raise ScoringError(f"the input already has the column(s) {', '.join(clash)} that {self.name} adds")
        return pd.concat([batch, added.set_axis(batch.index)], axis=1)


# -- the Titanic model ------------------------------------------------------------------------------
TITANIC_REQUIRED = ("Pclass", "Sex", "SibSp", "Parch", "Fare")


def _numbers(batch: Any, col: str, *, integer: bool) -> Any:
    """Column ``col`` (text) as float64 or int64; a blank is missing (NaN) for floats and an error for ints."""
    import numpy as np
    import pandas as pd

    text = batch[col].astype(str).str.strip()
    values = pd.to_numeric(text.where(text != "", None), errors="coerce")
    bad = values.isna() & (text != "") if not integer else values.isna() | (values % 1 != 0)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ScoringError(f"column {col}: {text.iloc[row]!r} (batch row {row}) is not "
                           f"{'an integer' if integer else 'a number'}")
    return values.astype("int64" if integer else "float64")


def titanic_features(batch: Any) -> Any:
    """Kaggle-format text columns -> the frame the pipeline was trained on (the dtypes of
    :func:`mastery.serving.titanic_model.to_frame`, which the API uses)."""
    import numpy as np
    import pandas as pd

    from mastery.serving.titanic_model import FEATURE_COLUMNS

    missing = [c for c in TITANIC_REQUIRED if c not in batch.columns]
    if missing:
        raise ScoringError(f"the input lacks the column(s) {', '.join(missing)} "
                           f"(needed: {', '.join(TITANIC_REQUIRED)}; optional: Age, Embarked, Name)")
    blank = pd.Series([""] * len(batch), index=batch.index)
    frame = pd.DataFrame(index=batch.index)
    for col in ("Pclass", "SibSp", "Parch"):
        frame[col] = _numbers(batch, col, integer=True)
    for col in ("Age", "Fare"):
        frame[col] = _numbers(batch, col, integer=False) if col in batch.columns else np.nan
    frame["Sex"] = batch["Sex"].astype(str).str.strip().astype(object)
    embarked = batch["Embarked"].astype(str).str.strip() if "Embarked" in batch.columns else blank
    frame["Embarked"] = embarked.astype(object).where(embarked != "", np.nan)
    frame["Name"] = (batch["Name"] if "Name" in batch.columns else blank).astype(str)
    return frame[list(FEATURE_COLUMNS)]


def titanic_scorer(artifact: Any) -> Scorer:
    """A :class:`Scorer` adding ``probability`` (of survival) and ``label`` (e.g. survived/died), with the
    threshold and labels the artifact carries, as the prediction API answers."""
    import numpy as np
    import pandas as pd

    model = artifact.model
    threshold = float(artifact.meta.get("threshold", 0.5))
    labels = artifact.meta.get("labels", {"0": "died", "1": "survived"})
    negative, positive = str(labels.get("0", "0")), str(labels.get("1", "1"))

    def score(batch: Any) -> Any:
        proba = model.predict_proba(titanic_features(batch))[:, 1]
        return pd.DataFrame({"probability": proba, "label": np.where(proba >= threshold, positive, negative)},
                            index=batch.index)

    return Scorer(score, ("probability", "label"), name=f"{artifact.meta.get('name', 'model')} {artifact.version}")


# -- reading and writing ----------------------------------------------------------------------------
def _header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            names = next(csv.reader(f), None)
    except FileNotFoundError:
        raise ConfigError(f"--input {path}: no such file") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ScoringError(f"--input {path}: not a UTF-8 CSV file ({exc})") from None
    if not names:
        raise ScoringError(f"--input {path}: empty, expected a header line")
    if len(set(names)) != len(names):
        raise ScoringError(f"--input {path}: a column name is repeated in the header")
    return names


def _csv_options(names: list[str]) -> dict[str, Any]:
    """Arrow CSV options shared by both engines: every column as text, a blank as ``""`` (never null)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    return {"convert_options": pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                                    strings_can_be_null=False, quoted_strings_can_be_null=False)}


@contextlib.contextmanager
def atomic_output(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """A file object whose content appears at ``path`` only if the block completes (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # as a plain open() would have made it, not mkstemp's 600
        with os.fdopen(fd, mode, **({} if "b" in mode else {"newline": "", "encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _local_batches(path: Path, names: list[str], batch_size: int) -> Iterator[Any]:
    import pyarrow.csv as pacsv

    try:
        reader = pacsv.open_csv(path, **_csv_options(names))
        for record_batch in reader:
            for start in range(0, record_batch.num_rows, batch_size):
                yield record_batch.slice(start, batch_size).to_pandas()
    except Exception as exc:
        if isinstance(exc, MasteryError):
            raise
        raise ScoringError(f"--input {path}: {exc}".splitlines()[0]) from None


def _as_csv(scorer: Scorer) -> Callable[[Any], Any]:
    """``batch -> one row: the scored batch as CSV text (no header) and its row count``.

    On Ray the text is made in the workers: writing CSV is about a third of the work here, and left to
    the one process that writes the file it capped the speed-up (measured: 2 Ray workers were 0.67x of one
    process when they returned frames for the driver to format).
    """

    def to_text(batch: Any) -> Any:
        import pandas as pd

        scored = scorer(batch)
        return pd.DataFrame({"csv": [scored.to_csv(header=False, index=False)], "rows": [len(scored)]})

    return to_text


def _ray_batches(path: Path, names: list[str], scorer: Scorer, batch_size: int, workers: int | None,
                 address: str | None) -> Iterator[Any]:
    from mastery.ops.ray_runtime import ray_session

    with ray_session(num_cpus=workers, address=address) as ray:
        ctx = ray.data.DataContext.get_current()  # imports ray.data, which sets up its loggers: then quiet them
        if not log.isEnabledFor(logging.DEBUG):  # (mastery -v shows them)
            # Ray Data logs its plan and stats at INFO, notes at WARNING, and a failed task at ERROR before
            # raising it to us: that error is reported here, once, as one line.
            logging.getLogger("ray.data").setLevel(logging.CRITICAL)
        ctx.execution_options.preserve_order = True  # rows come back in input order
        ctx.enable_progress_bars = False
        ds = ray.data.read_csv(str(path.resolve()), **_csv_options(names))
        scored = ds.map_batches(_as_csv(scorer), batch_format="pandas", batch_size=batch_size, num_cpus=1,
                                concurrency=workers)
        yield from scored.iter_batches(batch_format="pandas", batch_size=None)


def _root_cause(exc: BaseException) -> BaseException:
    """The first MasteryError in ``exc``'s chain (Ray wraps a task's exception in its own), else ``exc``."""
    todo: list[BaseException] = [exc]
    seen: set[int] = set()
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, MasteryError):
            return current
        # Ray's RayTaskError keeps the task's exception in .cause; Ray Data's UserCodeException in __cause__
        todo += [e for e in (getattr(current, "cause", None), current.__cause__, current.__context__)
                 if isinstance(e, BaseException)]
    return exc


def batch_score(input_path: str | Path, output_path: str | Path, scorer: Scorer, *, engine: str = "local",
                batch_size: int = 65_536, workers: int | None = None, address: str | None = None) -> dict[str, Any]:
    """Score every row of ``input_path`` into ``output_path`` (atomically); return rows, seconds, rows/s."""
    if engine not in ENGINES:
        raise ConfigError(f"--engine {engine!r}: choose from {', '.join(ENGINES)}")
    if engine == "local" and (workers is not None or address is not None):
        raise ConfigError("--workers and --ray-address apply to --engine ray")
    src, dst = Path(input_path), Path(output_path)
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise ConfigError(f"--output {dst} is the input file; write the scores elsewhere")
    names = _header(src)
    start = time.perf_counter()
    rows = 0
    try:
        with atomic_output(dst) as f:
            csv.writer(f, lineterminator="\n").writerow([*names, *scorer.columns])  # as pandas writes it
            chunks = (map(_as_csv(scorer), _local_batches(src, names, batch_size)) if engine == "local"
                      else _ray_batches(src, names, scorer, batch_size, workers, address))
            for chunk in chunks:  # Ray may hand back several batches' rows in one block
                for text, count in zip(chunk["csv"], chunk["rows"], strict=True):
                    f.write(text)
                    rows += int(count)
    except MasteryError:
        raise
    except Exception as exc:
        cause = _root_cause(exc)
        if isinstance(cause, MasteryError):
            raise cause from None
        # Ray Data (2.60) re-raises a task's exception as RayTaskError(UserCodeException) without the
        # original object; only the remote traceback's text names it, on its last line.
        remote = re.findall(r"^mastery\.[\w.]+Error: (.+)$", str(exc), flags=re.MULTILINE)
        if remote:
            raise ScoringError(remote[-1]) from None
        raise ScoringError(f"batch scoring failed on {engine}: {type(cause).__name__}: {cause}".splitlines()[0]) \
            from exc
    seconds = time.perf_counter() - start
    log.info("scored %d rows with %s on %s in %.2fs", rows, scorer.name, engine, seconds)
    return {"rows": rows, "seconds": round(seconds, 4), "rows_per_s": rows / seconds if seconds else 0.0,
            "engine": engine}
