"""A pandera schema for the Kaggle Titanic file, and a per-check failure report.

The schema says what a *correct* passenger row looks like, column by column (is it a number, a whole
number, one of the known categories, inside a plausible range, present when it must be) and across
columns (a "Mr." is male, a "Master." is a boy, an infant travels with a parent, a fare fits its class,
decks A-C and T were first class). Every rule was checked against the 891 real rows: the clean file
passes with no exception, so any failure means the data changed, not that the rule is too tight.

Types are checked value by value rather than by the column's dtype: one bad cell ("twenty") turns a
CSV column into strings, and a dtype check would then report one failure for the whole column and stop
the range checks from running. Here the bad cells are counted and the range checks still judge every
cell that does parse. Validation is lazy (``lazy=True``): pandera runs every check and collects every
failure instead of stopping at the first, which :func:`validate_titanic` turns into one readable entry
per (check, column): how many rows fail and a few examples.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

ID = "PassengerId"
TARGET = "Survived"
COLUMNS = ("PassengerId", "Survived", "Pclass", "Name", "Sex", "Age", "SibSp", "Parch", "Ticket", "Fare", "Cabin",
           "Embarked")
CATEGORIES: dict[str, tuple[Any, ...]] = {"Survived": (0, 1), "Pclass": (1, 2, 3), "Sex": ("male", "female"),
                                          "Embarked": ("C", "Q", "S")}
# Plausible ranges, wider than the data (Age 0.42-80, SibSp 0-8, Parch 0-6, Fare 0-512.33): a limit at
# the observed maximum would flag the next 81-year-old.
RANGES: dict[str, tuple[float, float]] = {"PassengerId": (1, 1e9), "Age": (0, 100), "SibSp": (0, 10),
                                          "Parch": (0, 10), "Fare": (0, 600)}
INTEGER = ("PassengerId", "Survived", "Pclass", "SibSp", "Parch")
FLOAT = ("Age", "Fare")
NULLABLE = ("Age", "Cabin", "Embarked")  # missing in 177, 687 and 2 of the 891 real rows
# Missing is allowed in these, but not more often than this (real: 19.9%, 0.2%).
MAX_MISSING = {"Age": 0.30, "Embarked": 0.02}
# The highest fare paid in each class (real: 512.33, 73.50, 69.55), with room to spare.
MAX_FARE_BY_CLASS = {1: 600.0, 2: 100.0, 3: 100.0}
FIRST_CLASS_DECKS = ("A", "B", "C", "T")
MALE_TITLES = ("Mr", "Master", "Sir", "Don", "Rev", "Capt", "Col", "Major", "Jonkheer")
FEMALE_TITLES = ("Mrs", "Miss", "Ms", "Mme", "Mlle", "Lady", "the Countess", "Dona")
MASTER_MAX_AGE = 15  # "Master" was the title of boys (oldest in the data: 12)
NAME_PATTERN = r"[^,]+,\s*[^.]+\..*"  # "Braund, Mr. Owen Harris": surname, title, given names
TICKET_PATTERN = r"[A-Za-z0-9./ ]+"
CABIN_PATTERN = r"[A-GT]\d*( [A-GT]\d*)*"  # "C85", "C23 C25 C27", "F G73", "T"

# Cross-field rules: name -> (columns it reads, what it means).
CROSS_FIELD = {
    "title_matches_sex": (("Name", "Sex"), "a male title (Mr, Master, Rev, ...) goes with male, a female one "
                                           "(Mrs, Miss, Ms, ...) with female"),
    "master_is_a_boy": (("Name", "Age"), f"a passenger titled Master is younger than {MASTER_MAX_AGE}"),
    "infant_has_parent": (("Age", "Parch"), "a passenger under 1 year travels with a parent (Parch >= 1)"),
    "fare_fits_class": (("Fare", "Pclass"), "fare at most the class's ceiling "
                                            + ", ".join(f"{k}: {v:g}" for k, v in MAX_FARE_BY_CLASS.items())),
    "deck_fits_class": (("Cabin", "Pclass"), "a cabin on deck A, B, C or T is first class"),
}


def title(names: pd.Series) -> pd.Series:
    """The title between the comma and the full stop ("Braund, Mr. Owen Harris" -> "Mr"); NaN if none."""
    return names.astype("string").str.extract(r",\s*([^\.]+)\.", expand=False).str.strip()


def _num(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s, errors="coerce")


def _missing(s: pd.Series) -> pd.Series:
    return s.isna()


# -- element-wise column checks (pandera hands them the non-null values) ----------------------
def _is_number(s: pd.Series) -> pd.Series:
    return _num(s).notna()


def _is_integer(s: pd.Series) -> pd.Series:
    v = _num(s)
    return v.notna() & (v == np.floor(v))


def _in_range(lo: float, hi: float):
    def check(s: pd.Series) -> pd.Series:
        v = _num(s)
        return v.isna() | v.between(lo, hi)  # an unparseable cell is the type check's failure, not this one's
    return check


def _in_categories(values: tuple[Any, ...]):
    numeric = isinstance(values[0], int)

    def check(s: pd.Series) -> pd.Series:
        if numeric:  # "1" or 1.0 is class 1; a word is the type check's failure, not this one's
            v = _num(s)
            return v.isna() | v.isin(values)
        return s.astype("string").isin(values).fillna(False).astype(bool)
    return check


def _matches(pattern: str):
    def check(s: pd.Series) -> pd.Series:
        return s.astype("string").str.fullmatch(pattern).fillna(False).astype(bool)
    return check


# -- cross-field checks (whole frame -> one boolean per row) ---------------------------------
def _title_matches_sex(df: pd.DataFrame) -> pd.Series:
    t, sex = title(df["Name"]), df["Sex"].astype("string")
    male, female = t.isin(MALE_TITLES).fillna(False), t.isin(FEMALE_TITLES).fillna(False)
    # Only judged when the sex is a known category: a typo or a gap is another check's failure.
    known = sex.isin(CATEGORIES["Sex"]).fillna(False)
    bad = known & ((male & (sex != "male")) | (female & (sex != "female"))).fillna(False)
    return ~bad.astype(bool)


def _master_is_a_boy(df: pd.DataFrame) -> pd.Series:
    age = _num(df["Age"])
    return ~((title(df["Name"]) == "Master").fillna(False) & (age >= MASTER_MAX_AGE).fillna(False))


def _infant_has_parent(df: pd.DataFrame) -> pd.Series:
    age, parch = _num(df["Age"]), _num(df["Parch"])
    return ~((age < 1).fillna(False) & (parch == 0).fillna(False))


def _fare_fits_class(df: pd.DataFrame) -> pd.Series:
    ceiling = _num(df["Pclass"]).map(MAX_FARE_BY_CLASS)
    return ~(_num(df["Fare"]) > ceiling).fillna(False)


def _deck_fits_class(df: pd.DataFrame) -> pd.Series:
    deck = df["Cabin"].astype("string").str[0]
    return ~(deck.isin(FIRST_CLASS_DECKS).fillna(False) & _num(df["Pclass"]).isin([2, 3]))


def _missing_rate(column: str, limit: float):
    def check(df: pd.DataFrame) -> bool:
        return bool(df[column].isna().mean() <= limit)
    return check


_CROSS_FNS = {"title_matches_sex": _title_matches_sex, "master_is_a_boy": _master_is_a_boy,
              "infant_has_parent": _infant_has_parent, "fare_fits_class": _fare_fits_class,
              "deck_fits_class": _deck_fits_class}


def titanic_schema(labelled: bool = True) -> Any:
    """The pandera ``DataFrameSchema`` of a Kaggle Titanic file (``labelled=False``: no Survived, as in test.csv).

    Check names are the ids the failure report, the fixer and the tests use: ``number``, ``integer``,
    ``in_range``, ``category``, ``pattern``, pandera's own ``not_nullable``, ``field_uniqueness`` and
    ``column_in_dataframe``, the cross-field rules of :data:`CROSS_FIELD` and ``missing_rate[<column>]``.
    """
    import pandera.pandas as pa

    columns: dict[str, Any] = {}
    for name in COLUMNS:
        if name == TARGET and not labelled:
            continue
        checks = []
        if name in INTEGER:
            checks.append(pa.Check(_is_integer, name="integer"))
        elif name in FLOAT:
            checks.append(pa.Check(_is_number, name="number"))
        if name in RANGES:
            checks.append(pa.Check(_in_range(*RANGES[name]), name="in_range"))
        if name in CATEGORIES:
            checks.append(pa.Check(_in_categories(CATEGORIES[name]), name="category"))
        pattern = {"Name": NAME_PATTERN, "Ticket": TICKET_PATTERN, "Cabin": CABIN_PATTERN}.get(name)
        if pattern:
            checks.append(pa.Check(_matches(pattern), name="pattern"))
        columns[name] = pa.Column(checks=checks, nullable=name in NULLABLE, unique=name == ID,
                                  report_duplicates="exclude_first", required=True)
    frame_checks = [pa.Check(fn, name=n) for n, fn in _CROSS_FNS.items()]
    frame_checks += [pa.Check(_missing_rate(c, lim), name=f"missing_rate[{c}]") for c, lim in MAX_MISSING.items()]
    return pa.DataFrameSchema(columns, checks=frame_checks, strict=True, name="titanic")


# -- the report --------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckFailure:
    """One failed check: which, on which column(s), how many rows, a few examples and what it means."""

    check: str
    column: str | None
    rows: int
    examples: list[Any]
    description: str
    index: list[int] = field(default_factory=list, repr=False)  # the failing rows' index labels

    def line(self) -> str:
        where = f" on {self.column}" if self.column else ""
        shown = ", ".join(format_example(e) for e in self.examples)
        return f"{self.check}{where}: {self.rows} row(s) fail ({self.description}); e.g. {shown}"


@dataclass
class ValidationResult:
    n_rows: int
    failures: list[CheckFailure]

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def failed_checks(self) -> set[str]:
        """``check`` or ``check:column`` ids, e.g. {'not_nullable:Sex', 'title_matches_sex'}."""
        return {f.check if f.column is None or f.check in CROSS_FIELD else f"{f.check}:{f.column}"
                for f in self.failures}

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "rows": self.n_rows, "failed_checks": len(self.failures),
                "failures": [{k: v for k, v in asdict(f).items() if k != "index"} for f in self.failures]}

    def lines(self) -> list[str]:
        if self.passed:
            return [f"ok: {self.n_rows} rows pass every check"]
        return ([f"FAILED: {len(self.failures)} check(s) fail on {self.n_rows} rows"]
                + [f"  {f.line()}" for f in self.failures])


def format_example(value: Any) -> str:
    if isinstance(value, dict) and set(value) == {"row", "value"}:
        return f"row {value['row']}: {value['value']!r}"
    if isinstance(value, dict):
        return f"row {value.get('row')}: " + ", ".join(f"{k}={v!r}" for k, v in value.items() if k != "row")
    return repr(value)


def _describe(check: str, column: str | None) -> str:
    if check in CROSS_FIELD:
        return CROSS_FIELD[check][1]
    if check.startswith("missing_rate["):
        col = check[len("missing_rate["):-1]
        return f"at most {MAX_MISSING[col]:.0%} of {col} missing"
    return {
        "not_nullable": "must not be missing",
        "field_uniqueness": "ids are unique (first occurrence kept, repeats counted)",
        "integer": "a whole number",
        "number": "a number",
        "in_range": f"within [{RANGES[column][0]:g}, {RANGES[column][1]:g}]" if column in RANGES else "in range",
        "category": f"one of {list(CATEGORIES.get(column, ()))}",
        "pattern": "matches the Kaggle format",
        "column_in_dataframe": "a required column is missing",
        "column_in_schema": "a column the schema does not know",
    }.get(check, check)


def validate_titanic(df: pd.DataFrame, labelled: bool = True, max_examples: int = 5) -> ValidationResult:
    """Run every check of :func:`titanic_schema` (lazily: all of them) and summarise the failures."""
    import pandera.errors as pe

    try:
        titanic_schema(labelled).validate(df, lazy=True)
    except pe.SchemaErrors as exc:
        return ValidationResult(len(df), _summarise(df, exc.failure_cases, max_examples))
    return ValidationResult(len(df), [])


def _summarise(df: pd.DataFrame, cases: pd.DataFrame, max_examples: int) -> list[CheckFailure]:
    out: list[CheckFailure] = []
    cases = cases.assign(column=cases["column"].astype(object).where(cases["column"].notna(), None))
    for check, group in cases.groupby("check", sort=False, dropna=False):
        check = str(check)
        if check in CROSS_FIELD:  # pandera lists each failing row once per column: count rows once
            cols = list(CROSS_FIELD[check][0])
            idx = sorted({int(i) for i in group["index"].dropna()})
            examples = [{"row": i, **{c: _plain(df.at[i, c]) for c in cols}} for i in idx[:max_examples]]
            out.append(CheckFailure(check, "+".join(cols), len(idx), examples, _describe(check, None), idx))
            continue
        if check.startswith("missing_rate["):
            col = check[len("missing_rate["):-1]
            idx = [int(i) for i in df.index[df[col].isna()]]
            examples = [f"{len(idx)}/{len(df)} = {len(idx) / max(len(df), 1):.1%} missing"]
            out.append(CheckFailure(check, col, len(idx), examples, _describe(check, col), idx))
            continue
        for column, sub in group.groupby("column", sort=False, dropna=False):
            column = None if column is None or pd.isna(column) else str(column)
            if check in ("column_in_dataframe", "column_in_schema"):
                names = [str(v) for v in sub["failure_case"]]
                out.append(CheckFailure(check, ", ".join(names), len(df), names, _describe(check, None)))
                continue
            idx = [int(i) for i in sub["index"].dropna()]
            if not idx and sub["index"].isna().all():  # the check itself raised: say so instead of counting
                out.append(CheckFailure(check, column, len(df), [str(sub["failure_case"].iloc[0])],
                                        "the check could not run"))
                continue
            examples = [{"row": i, "value": _plain(v)}
                        for i, v in zip(idx[:max_examples], sub["failure_case"].head(max_examples), strict=False)]
            out.append(CheckFailure(check, column, len(idx), examples, _describe(check, column), idx))
    order = {c: i for i, c in enumerate(COLUMNS)}
    out.sort(key=lambda f: (order.get((f.column or "").split("+")[0], len(order)), f.check))
    log.debug("validation: %d failing checks", len(out))
    return out


def _plain(value: Any) -> Any:
    """JSON-friendly scalars (NaN -> None, numpy numbers -> Python)."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def typed(df: pd.DataFrame) -> pd.DataFrame:
    """The canonical dtypes of a frame that passed validation: Int64 ids and counts, float64, strings."""
    out = df.copy()
    for c in INTEGER:
        if c in out:
            out[c] = pd.to_numeric(out[c], errors="raise").astype("Int64" if c in NULLABLE else "int64")
    for c in FLOAT:
        if c in out:
            out[c] = pd.to_numeric(out[c], errors="raise").astype("float64")
    return out
