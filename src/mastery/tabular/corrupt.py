"""A seeded corruption generator for the Titanic file: the faults real pipelines meet, one kind at a time.

Each kind is injected separately with its own rate (a fraction of the rows) and its own random stream,
so switching one kind on or off never changes where another lands. Every injection is logged (kind,
rows, columns, original values) so a test or a lab can check that each fault was caught and whether the
fix restored the original value.

| kind | what happens | what should catch it |
|---|---|---|
| ``nulls`` | a required cell (Pclass, Sex, Fare, SibSp, Parch) is blanked | ``not_nullable`` |
| ``outliers`` | Age 120-400 or negative, Fare above 1000 or negative, SibSp/Parch 15-60 | ``in_range`` |
| ``wrong_types`` | Age/Fare as "22,5" (decimal comma) or a word; Pclass/SibSp a word | ``number``/``integer`` |
| ``duplicate_ids`` | rows repeated (same PassengerId) at the end of the file | ``field_uniqueness`` |
| ``category_typos`` | "Male", "femal", "mael ", "s", "Southampton" | ``category`` |
| ``label_flips`` | Survived 0 <-> 1 | nothing in the schema: the model-based label check |
| ``drift`` | a share of the rows replaced by third-class or over-50 passengers drawn again | drift tests |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mastery.core.errors import MasteryError

FAULT_KINDS = ("nulls", "outliers", "wrong_types", "duplicate_ids", "category_typos", "label_flips", "drift")
NULL_COLUMNS = ("Pclass", "Sex", "Fare", "SibSp", "Parch")
OUTLIER_COLUMNS = ("Age", "Fare", "SibSp", "Parch")
WRONG_TYPE_COLUMNS = ("Age", "Fare", "Pclass", "SibSp")
TYPO_COLUMNS = ("Sex", "Embarked")
WORDS = ("unknown", "twenty-two", "#REF!", "?", "none given")
PORT_NAMES = {"C": "Cherbourg", "Q": "Queenstown", "S": "Southampton"}
# The detector meant to catch each kind: a fired check id ("in_range:Age", "drift:Pclass") starts with one of these.
DETECTED_BY: dict[str, tuple[str, ...]] = {
    "nulls": ("not_nullable",), "outliers": ("in_range",), "wrong_types": ("number", "integer"),
    "duplicate_ids": ("field_uniqueness",), "category_typos": ("category",), "label_flips": ("label_check",),
    "drift": ("drift",)}


@dataclass
class Injection:
    """What one fault kind did: the rows it touched (index labels after corruption) and the old values."""

    kind: str
    rate: float
    rows: list[int] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)  # one per row for cell faults
    original: list[Any] = field(default_factory=list)  # one per row for cell faults

    @property
    def count(self) -> int:
        return len(self.rows)


def parse_faults(items: list[str]) -> dict[str, float]:
    """``["nulls=0.05", "outliers=0.02"]`` -> ``{"nulls": 0.05, "outliers": 0.02}``, each kind known, rate in [0, 1]."""
    out: dict[str, float] = {}
    for item in items:
        kind, sep, value = item.partition("=")
        kind = kind.strip()
        if not sep or kind not in FAULT_KINDS:
            raise MasteryError(f"bad fault {item!r}: expected KIND=RATE with KIND one of {', '.join(FAULT_KINDS)}")
        try:
            rate = float(value)
        except ValueError:
            raise MasteryError(f"bad fault {item!r}: the rate must be a number in [0, 1]") from None
        if not 0.0 <= rate <= 1.0:
            raise MasteryError(f"bad fault {item!r}: the rate must be in [0, 1]")
        out[kind] = rate
    return out


def corrupt(df: pd.DataFrame, faults: Mapping[str, float], seed: int = 0) -> tuple[pd.DataFrame, list[Injection]]:
    """Return a corrupted copy of ``df`` (fresh 0..n-1 index) and one :class:`Injection` per requested kind.

    ``faults`` maps a kind of :data:`FAULT_KINDS` to the fraction of rows it hits (at least one row when
    the rate is above 0). Kinds are applied in the order of :data:`FAULT_KINDS`: the drift resampling first
    (it changes which rows exist), duplicates after the cell faults, so a repeated row carries its faults.
    """
    unknown = set(faults) - set(FAULT_KINDS)
    if unknown:
        raise MasteryError(f"unknown fault kind(s) {sorted(unknown)}; known: {', '.join(FAULT_KINDS)}")
    out = df.reset_index(drop=True).copy()
    # Object columns can hold a word in a number column, as a hand-edited CSV would.
    for c in set(WRONG_TYPE_COLUMNS) | set(NULL_COLUMNS) | set(OUTLIER_COLUMNS):
        if c in out:
            out[c] = out[c].astype(object)
    done: list[Injection] = []
    for i, kind in enumerate(FAULT_KINDS):
        rate = float(faults.get(kind, 0.0))
        if rate <= 0:
            continue
        rng = np.random.default_rng([seed, i])  # one stream per kind: kinds do not shift each other
        out, inj = _APPLY[kind](out, rate, rng)
        done.append(inj)
    return out, done


def _count(n: int, rate: float) -> int:
    return min(n, max(1, round(rate * n)))


def _pick(df: pd.DataFrame, rate: float, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(len(df), size=_count(len(df), rate), replace=False))


def _cells(df: pd.DataFrame, rate: float, rng: np.random.Generator, kind: str, columns: tuple[str, ...],
           new_value: Any) -> tuple[pd.DataFrame, Injection]:
    inj = Injection(kind, rate)
    cols = [c for c in columns if c in df]
    for row in _pick(df, rate, rng):
        col = cols[int(rng.integers(len(cols)))]
        label = df.index[row]
        inj.rows.append(int(label))
        inj.columns.append(col)
        inj.original.append(df.at[label, col])
        df.at[label, col] = new_value(col, df.at[label, col], rng)
    return df, inj


def _nulls(df: pd.DataFrame, rate: float, rng: np.random.Generator) -> tuple[pd.DataFrame, Injection]:
    return _cells(df, rate, rng, "nulls", NULL_COLUMNS, lambda col, old, r: np.nan)


def _outlier(col: str, old: Any, rng: np.random.Generator) -> Any:
    low = rng.random() < 0.3  # a third negative (a sign error), the rest far too large (a unit or typing error)
    if col == "Age":
        return -float(rng.integers(1, 50)) if low else float(rng.integers(120, 400))
    if col == "Fare":
        return -round(float(rng.uniform(1, 100)), 2) if low else round(float(rng.uniform(1000, 10_000)), 2)
    return int(rng.integers(15, 60))


def _outliers(df: pd.DataFrame, rate: float, rng: np.random.Generator) -> tuple[pd.DataFrame, Injection]:
    return _cells(df, rate, rng, "outliers", OUTLIER_COLUMNS, _outlier)


def _wrong(col: str, old: Any, rng: np.random.Generator) -> Any:
    if col in ("Age", "Fare") and not pd.isna(old) and rng.random() < 0.5:
        return f"{float(old):.2f}".replace(".", ",")  # a decimal comma: the value survives, the type does not
    return WORDS[int(rng.integers(len(WORDS)))]


def _wrong_types(df: pd.DataFrame, rate: float, rng: np.random.Generator) -> tuple[pd.DataFrame, Injection]:
    return _cells(df, rate, rng, "wrong_types", WRONG_TYPE_COLUMNS, _wrong)


def _typo(col: str, old: Any, rng: np.random.Generator) -> Any:
    if pd.isna(old):
        old = "S" if col == "Embarked" else "male"
    text = str(old)
    if col == "Embarked":
        options = [text.lower(), f" {text}", PORT_NAMES.get(text, text), PORT_NAMES.get(text, text).lower()]
    else:
        cut = int(rng.integers(1, len(text)))
        swap = int(rng.integers(0, len(text) - 1))
        options = [text.capitalize(), text.upper(), text[:cut] + text[cut + 1:],
                   text[:swap] + text[swap + 1] + text[swap] + text[swap + 2:], f"{text} "]
    return options[int(rng.integers(len(options)))]


def _category_typos(df: pd.DataFrame, rate: float, rng: np.random.Generator) -> tuple[pd.DataFrame, Injection]:
    return _cells(df, rate, rng, "category_typos", TYPO_COLUMNS, _typo)


def _duplicate_ids(df: pd.DataFrame, rate: float, rng: np.random.Generator) -> tuple[pd.DataFrame, Injection]:
    rows = _pick(df, rate, rng)
    copies = df.iloc[rows]
    out = pd.concat([df, copies], ignore_index=True)
    inj = Injection("duplicate_ids", rate, rows=list(range(len(df), len(out))), columns=["PassengerId"] * len(rows),
                    original=[int(v) for v in copies["PassengerId"]])
    return out, inj


def _label_flips(df: pd.DataFrame, rate: float, rng: np.random.Generator) -> tuple[pd.DataFrame, Injection]:
    return _cells(df, rate, rng, "label_flips", ("Survived",), lambda col, old, r: 1 - int(old))


def _drift(df: pd.DataFrame, rate: float, rng: np.random.Generator) -> tuple[pd.DataFrame, Injection]:
    """Replace ``rate`` of the rows by passengers drawn again from the third-class or over-50 ones.

    The new rows get fresh PassengerIds (they stand for new passengers, not repeated ones), so the only
    fault is the changed population: every value is still valid and the schema passes.
    """
    age = pd.to_numeric(df["Age"], errors="coerce")
    pool = np.flatnonzero(((pd.to_numeric(df["Pclass"], errors="coerce") == 3) | (age >= 50)).to_numpy())
    rows = _pick(df, rate, rng)
    if len(pool) == 0:
        raise MasteryError("drift needs third-class or over-50 passengers to resample, and this frame has none")
    drawn = rng.choice(pool, size=len(rows), replace=True)
    out = df.copy()
    values = df.iloc[drawn].to_numpy()
    out.iloc[rows] = values
    next_id = int(pd.to_numeric(df["PassengerId"], errors="coerce").max()) + 1
    out.loc[out.index[rows], "PassengerId"] = np.arange(next_id, next_id + len(rows))
    return out, Injection("drift", rate, rows=[int(out.index[r]) for r in rows])


_APPLY = {"nulls": _nulls, "outliers": _outliers, "wrong_types": _wrong_types, "duplicate_ids": _duplicate_ids,
          "category_typos": _category_typos, "label_flips": _label_flips, "drift": _drift}
