"""Input validation shared by the tabular pipelines: fail early, naming what is missing."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from mastery.core.errors import MasteryError


class MissingColumnsError(ValueError, MasteryError):
    """A DataFrame lacks columns a pipeline needs; the message names every one of them."""

    def __init__(self, missing: list[str], what: str) -> None:
        self.missing = missing
        names = ", ".join(f"'{c}'" for c in missing)
        super().__init__(f"{what} is missing required column(s): {names}")


def require_columns(df: pd.DataFrame, columns: Iterable[str], what: str = "the DataFrame") -> None:
    """Raise :class:`MissingColumnsError` naming each column of ``columns`` absent from ``df``."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{what} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise MissingColumnsError(missing, what)
