"""The fix step: repair what validation reports, validate again, until the Titanic schema passes.

Each failed check maps to one documented repair, applied in this order within a round:

1. ``field_uniqueness`` (PassengerId): drop repeated ids, keeping the first row.
2. ``number`` / ``integer``: parse the cell; a decimal comma ("22,50") is read as 22.5, a word becomes
   missing (a value that cannot be read is not guessed here: step 5 imputes it).
3. ``category``: trim and fold case ("Male " -> "male", "s" -> "S"), map port names to their letter
   ("Southampton" -> "S"), else take the nearest category by string similarity (``difflib``, cutoff 0.6:
   "mael" -> "male"); what is still unknown becomes missing.
4. ``in_range`` and the cross-field rules: the value that breaks the rule becomes missing (the true value
   is unknowable; clipping would invent one at the boundary): Fare for ``fare_fits_class``, Age for
   ``master_is_a_boy`` and ``infant_has_parent``, Cabin for ``deck_fits_class``; for ``title_matches_sex``
   the sex is taken from the title.
5. ``not_nullable`` and ``missing_rate[...]``: impute. Sex from the title when it says (Mr, Mrs, ...), else
   the most frequent; Pclass 1 on decks A-C and T, else the class whose median fare is nearest the row's
   fare; SibSp, Parch and Embarked the most frequent; Fare the median of its class; Age the median of its
   title (a Master is a boy). Statistics come from ``reference`` (the trusted
   training data) when given, so a batch is never repaired with its own broken numbers.
   A row with no label, an unreadable label, no id or no name is dropped: those are not imputed.

Any other failing check drops the rows it names (the last resort, counted like every action). A round
applies the repairs of every check that failed; the next validation may find new failures (a word parsed
to missing now fails ``not_nullable``), which the next round repairs.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mastery.tabular.quality_schema import (
    CATEGORIES,
    CROSS_FIELD,
    FEMALE_TITLES,
    FIRST_CLASS_DECKS,
    FLOAT,
    ID,
    INTEGER,
    MALE_TITLES,
    TARGET,
    ValidationResult,
    title,
    validate_titanic,
)

log = logging.getLogger(__name__)

PORTS = {"cherbourg": "C", "queenstown": "Q", "southampton": "S", "cobh": "Q"}
DROP_WHEN_MISSING = (ID, TARGET, "Name")  # not imputed: an invented label or identity is worse than no row


@dataclass
class Action:
    fix: str
    column: str
    rows: int


@dataclass
class FixRound:
    round: int
    failures: int  # failing checks before this round's repairs
    failed_rows: int
    actions: list[Action] = field(default_factory=list)
    report: list[str] = field(default_factory=list)


@dataclass
class FixResult:
    frame: pd.DataFrame
    rounds: list[FixRound]
    final: ValidationResult

    @property
    def passed(self) -> bool:
        return self.final.passed


def _num(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s, errors="coerce")


def parse_number(value: Any) -> float:
    """A number, or NaN: accepts a decimal comma ("22,50") and surrounding spaces, refuses words."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return np.nan
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    text = str(value).strip().replace(",", ".")
    try:
        return float(text)
    except ValueError:
        return np.nan


def nearest_category(value: Any, column: str) -> Any:
    """The known category ``value`` most plausibly meant, or NaN (see the module docstring, step 3)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return np.nan
    cats = CATEGORIES[column]
    if isinstance(cats[0], int):
        v = parse_number(value)
        return int(v) if v in cats else np.nan
    text = str(value).strip()
    folded = {str(c).lower(): c for c in cats}
    if text.lower() in folded:
        return folded[text.lower()]
    if column == "Embarked" and text.lower() in PORTS:
        return PORTS[text.lower()]
    match = difflib.get_close_matches(text.lower(), list(folded), n=1, cutoff=0.6)
    return folded[match[0]] if match else np.nan


def _stats(frame: pd.DataFrame) -> dict[str, Any]:
    """Imputation statistics from rows whose values parse and lie in the known categories."""
    f = frame.copy()
    for c in (*INTEGER, *FLOAT):
        if c in f:
            f[c] = f[c].map(parse_number)
    for c in ("Sex", "Embarked", "Pclass"):
        f[c] = f[c].map(lambda v, c=c: nearest_category(v, c))
    t = title(f["Name"]).where(lambda s: s.isin(MALE_TITLES + FEMALE_TITLES), "Other")
    fare = f["Fare"].where(f["Fare"].between(0, 600))
    age = f["Age"].where(f["Age"].between(0, 100))
    return {
        "mode": {c: f[c].mode().iloc[0] for c in ("Sex", "Embarked", "Pclass", "SibSp", "Parch")},
        "fare_by_class": fare.groupby(f["Pclass"]).median().to_dict(),
        "fare": float(fare.median()),
        "age_by_title": age.groupby(t).median().to_dict(),
        "age": float(age.median()),
    }


def fix_round(df: pd.DataFrame, result: ValidationResult, stats: dict[str, Any]) -> tuple[pd.DataFrame, list[Action]]:
    """Apply the repairs of every failed check in ``result`` once (module docstring, steps 1-5)."""
    out = df.copy()
    actions: list[Action] = []
    failed = {(f.check, f.column): f for f in result.failures}

    def act(fix: str, column: str, rows: int) -> None:
        if rows:
            actions.append(Action(fix, column, int(rows)))

    # 1. repeated ids
    if ("field_uniqueness", ID) in failed:
        dup = out[ID].duplicated(keep="first")
        out = out[~dup]
        act("drop repeated id (keep first)", ID, dup.sum())
    # 2. types
    for (check, col), f in failed.items():
        if check in ("number", "integer") and col in out:
            rows = [i for i in f.index if i in out.index]
            parsed = out.loc[rows, col].map(parse_number)
            if check == "integer":
                parsed = parsed.where(parsed == np.floor(parsed))
            out[col] = out[col].astype(object)
            out.loc[rows, col] = parsed
            act("parse number (decimal comma) else missing", col, len(rows))
    # 3. categories
    for (check, col), f in failed.items():
        if check == "category" and col in out:
            rows = [i for i in f.index if i in out.index]
            out[col] = out[col].astype(object)
            out.loc[rows, col] = out.loc[rows, col].map(lambda v, c=col: nearest_category(v, c))
            act("map to nearest category else missing", col, len(rows))
    # 4. ranges and cross-field rules: the offending value becomes missing
    blank = {"fare_fits_class": "Fare", "master_is_a_boy": "Age", "infant_has_parent": "Age",
             "deck_fits_class": "Cabin"}
    for (check, col), f in failed.items():
        rows = [i for i in f.index if i in out.index]
        target = col if check == "in_range" else blank.get(check)
        if target and target in out:
            out[target] = out[target].astype(object)
            out.loc[rows, target] = np.nan
            act(f"out of range -> missing ({check})" if check == "in_range" else f"breaks {check} -> missing",
                target, len(rows))
        elif check == "title_matches_sex":
            out.loc[rows, "Sex"] = _sex_from_title(out.loc[rows, "Name"]).fillna(out.loc[rows, "Sex"])
            act("sex from title", "Sex", len(rows))
    # 5. impute (or drop rows whose identity or label is gone)
    for check, col in failed:
        if check == "not_nullable" or check.startswith("missing_rate["):
            out, n, how = _impute(out, col, stats)
            act(how, col, n)
    # Last resort: rows of any failed check no step above knows how to repair.
    known = {"field_uniqueness", "number", "integer", "category", "in_range", "not_nullable", *CROSS_FIELD}
    for (check, col), f in failed.items():
        if check not in known and not check.startswith("missing_rate[") and f.index:
            rows = [i for i in f.index if i in out.index]
            out = out.drop(index=rows)
            act(f"drop rows failing {check}", col or "-", len(rows))
    return out, actions


def _sex_from_title(names: pd.Series) -> pd.Series:
    t = title(names)
    return pd.Series(np.where(t.isin(MALE_TITLES), "male", np.where(t.isin(FEMALE_TITLES), "female", None)),
                     index=names.index, dtype=object)


def _impute(out: pd.DataFrame, col: str, stats: dict[str, Any]) -> tuple[pd.DataFrame, int, str]:
    missing = out[col].isna()
    n = int(missing.sum())
    if not n:
        return out, 0, "impute"
    if col in DROP_WHEN_MISSING or col not in out:
        return out[~missing], n, "drop row (missing id, label or name)"
    out[col] = out[col].astype(object)
    if col == "Sex":
        guess = _sex_from_title(out.loc[missing, "Name"]).fillna(stats["mode"]["Sex"])
        out.loc[missing, col] = guess
        return out, n, "impute from title, else most frequent"
    if col == "Fare":
        cls = _num(out.loc[missing, "Pclass"])
        out.loc[missing, col] = cls.map(stats["fare_by_class"]).fillna(stats["fare"])
        return out, n, "impute median fare of the class"
    if col == "Age":
        t = title(out.loc[missing, "Name"]).where(lambda s: s.isin(MALE_TITLES + FEMALE_TITLES), "Other")
        out.loc[missing, col] = t.map(stats["age_by_title"]).fillna(stats["age"])
        return out, n, "impute median age of the title"
    if col == "Pclass":  # the class whose median fare is nearest (on a log scale), else the most frequent
        fares = np.log1p(_num(out.loc[missing, "Fare"]).clip(lower=0))
        classes = sorted(stats["fare_by_class"])
        medians = np.log1p(np.array([stats["fare_by_class"][k] for k in classes], float))
        nearest = [classes[int(np.argmin(np.abs(medians - f)))] if not np.isnan(f) else stats["mode"]["Pclass"]
                   for f in fares]
        first_deck = out.loc[missing, "Cabin"].astype("string").str[0].isin(FIRST_CLASS_DECKS).fillna(False)
        out.loc[missing, col] = np.where(first_deck.to_numpy(bool), 1, nearest)
        return out, n, "impute 1 for decks A-C and T, else the class of the nearest median fare"
    if col in stats["mode"]:
        out.loc[missing, col] = stats["mode"][col]
        return out, n, "impute most frequent"
    out.loc[missing, col] = "UNKNOWN"  # Ticket: unused by the model, kept readable
    return out, n, "fill 'UNKNOWN'"


def fix_until_valid(df: pd.DataFrame, reference: pd.DataFrame | None = None, max_rounds: int = 5,
                    labelled: bool = True) -> FixResult:
    """validate -> fix -> validate ... until the schema passes or ``max_rounds`` repairs were applied."""
    frame = df.reset_index(drop=True)
    stats = _stats(reference if reference is not None else frame)
    rounds: list[FixRound] = []
    result = validate_titanic(frame, labelled)
    for i in range(1, max_rounds + 1):
        if result.passed:
            break
        rows = len({r for f in result.failures for r in f.index})
        frame, actions = fix_round(frame, result, stats)
        rounds.append(FixRound(i, len(result.failures), rows, actions, result.lines()))
        log.debug("fix round %d: %d failing checks, %d repairs", i, len(result.failures), len(actions))
        result = validate_titanic(frame, labelled)
    return FixResult(frame, rounds, result)
