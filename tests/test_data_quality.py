"""L29 data quality: the Titanic schema, the corruption generator, the fix loop, drift metrics, the CLI."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pytest

from mastery.cli import main
from mastery.tabular.corrupt import FAULT_KINDS, corrupt, parse_faults
from mastery.tabular.drift import drift_report, psi_categorical, psi_from_shares, psi_numeric
from mastery.tabular.quality_schema import validate_titanic
from mastery.tabular.repair import fix_until_valid, nearest_category, parse_number
from tests.conftest import needs_mirror

# Thirteen real rows of Kaggle's train.csv: a Master, an infant with parents, first-class decks B and C.
ROWS = """PassengerId,Survived,Pclass,Name,Sex,Age,SibSp,Parch,Ticket,Fare,Cabin,Embarked
1,0,3,"Braund, Mr. Owen Harris",male,22.0,1,0,A/5 21171,7.25,,S
2,1,1,"Cumings, Mrs. John Bradley (Florence Briggs Thayer)",female,38.0,1,0,PC 17599,71.2833,C85,C
3,1,3,"Heikkinen, Miss. Laina",female,26.0,0,0,STON/O2. 3101282,7.925,,S
4,1,1,"Futrelle, Mrs. Jacques Heath (Lily May Peel)",female,35.0,1,0,113803,53.1,C123,S
6,0,3,"Moran, Mr. James",male,,0,0,330877,8.4583,,Q
8,0,3,"Palsson, Master. Gosta Leonard",male,2.0,3,1,349909,21.075,,S
10,1,2,"Nasser, Mrs. Nicholas (Adele Achem)",female,14.0,1,0,237736,30.0708,,C
11,1,3,"Sandstrom, Miss. Marguerite Rut",female,4.0,1,1,PP 9549,16.7,G6,S
12,1,1,"Bonnell, Miss. Elizabeth",female,58.0,0,0,113783,26.55,C103,S
17,0,3,"Rice, Master. Eugene",male,2.0,4,1,382652,29.125,,Q
79,1,2,"Caldwell, Master. Alden Gates",male,0.83,0,2,248738,29.0,,S
28,0,1,"Fortune, Mr. Charles Alexander",male,19.0,3,2,19950,263.0,C23 C25 C27,S
62,1,1,"Icard, Miss. Amelie",female,38.0,0,0,113572,80.0,B28,S
"""

# Fault kind -> the check meant to catch it (a failed check id starts with this).
SCHEMA_FAULTS = {"nulls": "not_nullable", "outliers": "in_range", "wrong_types": ("number", "integer"),
                 "duplicate_ids": "field_uniqueness", "category_typos": "category"}


def small() -> pd.DataFrame:
    return pd.read_csv(io.StringIO(ROWS))


@pytest.fixture(scope="module")
def split() -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.model_selection import train_test_split

    from mastery.assets.loaders import load_titanic

    df = load_titanic()
    train, batch = train_test_split(df, test_size=0.2, stratify=df["Survived"], random_state=0)
    return train.reset_index(drop=True), batch.reset_index(drop=True)


def _kinds(result) -> set[str]:
    return {f.check for f in result.failures}


# -- the schema ----------------------------------------------------------------------------------
def test_schema_accepts_the_real_rows() -> None:
    result = validate_titanic(small())
    assert result.passed, result.lines()


@needs_mirror
def test_schema_accepts_the_whole_clean_file() -> None:
    from mastery.assets.loaders import load_titanic

    result = validate_titanic(load_titanic())
    assert result.passed, result.lines()
    assert result.n_rows == 891


@pytest.mark.parametrize(("rule", "row", "column", "value"), [
    ("title_matches_sex", 0, "Sex", "female"),        # Mr. Owen Harris Braund as female
    ("master_is_a_boy", 5, "Age", 40.0),              # Master Gosta Palsson aged 40
    ("infant_has_parent", 10, "Parch", 0),            # a 10-month-old travelling without a parent
    ("fare_fits_class", 0, "Fare", 250.0),            # a third-class ticket at a first-class price
    ("deck_fits_class", 1, "Pclass", 3),              # cabin C85 in third class
])
def test_each_cross_field_rule_catches_its_row(rule: str, row: int, column: str, value) -> None:
    df = small()
    df[column] = df[column].astype(object)
    df.at[row, column] = value
    result = validate_titanic(df)
    failure = next(f for f in result.failures if f.check == rule)
    assert failure.rows == 1 and failure.index == [row]
    assert failure.examples[0]["row"] == row


def test_report_counts_rows_and_gives_examples_per_check() -> None:
    df = small()
    df["Age"] = df["Age"].astype(object)
    df.loc[[0, 2], "Age"] = ["twenty", "31,5"]
    df.loc[3, "Sex"] = "Female"
    result = validate_titanic(df)
    by = {(f.check, f.column): f for f in result.failures}
    assert by[("number", "Age")].rows == 2
    assert [e["value"] for e in by[("number", "Age")].examples] == ["twenty", "31,5"]
    assert by[("category", "Sex")].examples == [{"row": 3, "value": "Female"}]
    assert "in_range" not in {c for c, _ in by}  # an unparseable age is a type failure, not a range one
    text = "\n".join(result.lines())
    assert "number on Age: 2 row(s) fail" in text and "row 3: 'Female'" in text


def test_missing_column_and_unknown_column_are_reported() -> None:
    df = small().drop(columns=["Fare"]).assign(Extra=1)
    checks = _kinds(validate_titanic(df))
    assert {"column_in_dataframe", "column_in_schema"} <= checks


# -- corruption, detection -------------------------------------------------------------------
def test_corruption_is_seeded_and_kinds_are_independent() -> None:
    df = small()
    a, inj_a = corrupt(df, {"nulls": 0.3}, seed=4)
    b, _ = corrupt(df, {"nulls": 0.3}, seed=4)
    pd.testing.assert_frame_equal(a, b)
    _, both = corrupt(df, {"nulls": 0.3, "outliers": 0.3}, seed=4)
    assert both[0].rows == inj_a[0].rows and both[0].columns == inj_a[0].columns
    _, other_seed = corrupt(df, {"nulls": 0.3}, seed=5)
    assert other_seed[0].rows != inj_a[0].rows or other_seed[0].columns != inj_a[0].columns


def test_parse_faults_refuses_unknown_kinds_and_bad_rates() -> None:
    from mastery.core.errors import MasteryError

    assert parse_faults(["nulls=0.1", "drift=0.5"]) == {"nulls": 0.1, "drift": 0.5}
    for bad in ("bogus=0.1", "nulls", "nulls=x", "nulls=1.5"):
        with pytest.raises(MasteryError):
            parse_faults([bad])


@needs_mirror
@pytest.mark.parametrize("kind", list(SCHEMA_FAULTS))
def test_each_schema_fault_is_caught_by_its_check(split, kind: str) -> None:
    _, batch = split
    broken, (inj,) = corrupt(batch, {kind: 0.05}, seed=0)
    assert inj.count >= 5
    result = validate_titanic(broken)
    expected = SCHEMA_FAULTS[kind]
    hits = [f for f in result.failures if f.check.startswith(expected)]
    assert hits, result.lines()
    # Every injected row is named by the expected check (duplicates: the repeats, not the first rows).
    named = {i for f in hits for i in f.index}
    assert set(inj.rows) <= named


@needs_mirror
def test_label_flips_pass_the_schema_and_trip_the_label_check(split) -> None:
    from mastery.tabular.label_noise import label_check
    from mastery.tabular.quality_schema import typed

    train, batch = split
    flipped, (inj,) = corrupt(batch, {"label_flips": 0.2}, seed=0)
    assert validate_titanic(flipped).passed  # the schema cannot see a flipped label
    assert (flipped["Survived"] != batch["Survived"]).sum() == inj.count
    clean = label_check(train, typed(batch), folds=3)
    noisy = label_check(train, typed(flipped), folds=3)
    assert not clean.alarm and noisy.alarm
    assert noisy.suspects > clean.suspects


@needs_mirror
def test_drift_passes_the_schema_and_is_flagged(split) -> None:
    train, batch = split
    assert drift_report(train, batch).flagged == []  # a clean split: no alarm
    drifted, _ = corrupt(batch, {"drift": 0.5}, seed=0)
    assert validate_titanic(drifted).passed
    report = drift_report(train, drifted)
    assert "Pclass" in report.flagged
    assert pd.to_numeric(drifted["Pclass"]).eq(3).mean() > batch["Pclass"].eq(3).mean()


# -- the fix -----------------------------------------------------------------------------------
@needs_mirror
def test_fix_loop_makes_a_broken_batch_pass(split) -> None:
    train, batch = split
    broken, injections = corrupt(batch, {k: 0.05 for k in SCHEMA_FAULTS}, seed=1)
    assert not validate_titanic(broken).passed
    result = fix_until_valid(broken, reference=train)
    assert result.passed and 1 <= len(result.rounds) <= 5
    assert len(result.frame) == len(batch)  # the repeated ids and only those were dropped
    assert result.frame["PassengerId"].is_unique
    typos = next(i for i in injections if i.kind == "category_typos")
    restored = [result.frame.at[r, c] == o for r, c, o in zip(typos.rows, typos.columns, typos.original, strict=True)]
    assert np.mean(restored) >= 0.8  # "Male", "s", "Southampton" come back as they were


def test_parse_number_and_nearest_category() -> None:
    assert parse_number("22,50") == 22.5 and parse_number(" 7 ") == 7.0 and math.isnan(parse_number("twenty"))
    assert nearest_category("Male ", "Sex") == "male"
    assert nearest_category("mael", "Sex") == "male"
    assert nearest_category("femal", "Sex") == "female"
    assert nearest_category("southampton", "Embarked") == "S"
    assert nearest_category(" c", "Embarked") == "C"
    assert math.isnan(nearest_category("xyz", "Embarked"))
    assert nearest_category("3.0", "Pclass") == 3 and math.isnan(nearest_category("4", "Pclass"))


def test_fix_reads_sex_from_the_title_and_drops_a_row_without_label() -> None:
    df = small()
    df.loc[0, "Sex"] = None        # Mr. Owen Harris Braund
    df.loc[2, "Sex"] = None        # Miss. Laina Heikkinen
    df["Survived"] = df["Survived"].astype(object)
    df.loc[4, "Survived"] = None
    result = fix_until_valid(df)
    assert result.passed
    assert result.frame.at[0, "Sex"] == "male" and result.frame.at[2, "Sex"] == "female"
    assert 4 not in result.frame.index and len(result.frame) == len(df) - 1


# -- drift metrics -----------------------------------------------------------------------------
def test_psi_matches_a_hand_computation() -> None:
    # (0.3-0.5)ln(0.3/0.5) + 0 + (0.4-0.2)ln(0.4/0.2) = 0.102165 + 0.138629
    assert psi_from_shares(np.array([0.5, 0.3, 0.2]), np.array([0.3, 0.3, 0.4])) == pytest.approx(0.240795, abs=1e-6)
    ref = pd.Series(list("aaaaabbbcc"))
    cur = pd.Series(list("aaabbbcccc"))
    assert psi_categorical(ref, cur) == pytest.approx(0.240795, abs=1e-6)
    # A category the reference never saw: its share is floored at 1e-4.
    # (0.5-1)ln(0.5) + (0.5-1e-4)ln(0.5/1e-4) = 0.346574 + 4.257745
    assert psi_categorical(pd.Series(["a"] * 4), pd.Series(["a", "a", "b", "b"])) == pytest.approx(4.604319, abs=1e-5)


def test_psi_numeric_uses_reference_deciles() -> None:
    ref = pd.Series(np.arange(100, dtype=float))  # deciles 9.9, 19.8, ...: ten values per bin
    cur = pd.Series([0.0] * 50 + list(range(0, 100, 2)), dtype=float)  # 55 in the first bin, 5 in each other
    # 0.45 ln(5.5) + 9 * (-0.05) ln(0.5) = 0.767136 + 0.311916
    assert psi_numeric(ref, cur) == pytest.approx(1.079052, abs=1e-5)
    assert psi_numeric(ref, ref) == pytest.approx(0.0, abs=1e-12)


def test_drift_report_uses_scipy_tests_and_thresholds() -> None:
    from scipy.stats import chi2_contingency, ks_2samp

    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"Age": rng.normal(30, 10, 500), "Pclass": rng.choice([1, 2, 3], 500)})
    same = pd.DataFrame({"Age": rng.normal(30, 10, 300), "Pclass": rng.choice([1, 2, 3], 300)})
    moved = pd.DataFrame({"Age": rng.normal(45, 10, 300), "Pclass": rng.choice([1, 2, 3], 300, p=[.1, .1, .8])})
    quiet = drift_report(ref, same, numeric=["Age"], categorical=["Pclass"])
    loud = drift_report(ref, moved, numeric=["Age"], categorical=["Pclass"])
    assert quiet.flagged == [] and loud.flagged == ["Age", "Pclass"]
    age = loud.columns[0]
    assert age.p_value == pytest.approx(ks_2samp(ref["Age"], moved["Age"]).pvalue)
    table = np.vstack([ref["Pclass"].value_counts().sort_index(), moved["Pclass"].value_counts().sort_index()])
    assert loud.columns[1].p_value == pytest.approx(chi2_contingency(table).pvalue)
    assert age.psi > 0.2 and any("PSI" in r for r in age.reasons)


# -- the CLI -----------------------------------------------------------------------------------
def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_validate_exit_codes(capsys, tmp_path) -> None:
    good = tmp_path / "good.csv"
    small().to_csv(good, index=False)
    code, out, _ = run_cli(capsys, "quality", "validate", "titanic", "--file", str(good))
    assert code == 0 and out.startswith("ok: 13 rows")

    bad = tmp_path / "bad.csv"
    broken = small()
    broken.loc[1, "Sex"] = "fmale"
    pd.concat([broken, broken.iloc[[0]]]).to_csv(bad, index=False)
    report = tmp_path / "report.json"
    code, out, _ = run_cli(capsys, "quality", "validate", "titanic", "--file", str(bad), "--report", str(report))
    assert code == 1
    assert "category on Sex: 1 row(s) fail" in out and "field_uniqueness on PassengerId: 1 row(s)" in out
    saved = json.loads(report.read_text())
    assert saved["passed"] is False and {f["check"] for f in saved["failures"]} == {"category", "field_uniqueness"}


@pytest.mark.parametrize("content", [None, b"", b"\x00\xff\xfe\x01", b"a,b\n1,2\n"])
def test_cli_unreadable_file_is_one_line_exit_2(capsys, tmp_path, content) -> None:
    path = tmp_path / "input.csv"
    if content is not None:
        path.write_bytes(content)
    code, out, err = run_cli(capsys, "quality", "validate", "titanic", "--file", str(path))
    assert code == 2 and out == ""
    assert err.startswith("mastery: error:") and err.count("\n") == 1 and str(path) in err


def test_cli_fix_then_validate_and_drift(capsys, tmp_path) -> None:
    bad = tmp_path / "bad.csv"
    broken = small()
    broken["Fare"] = broken["Fare"].astype(object)
    broken.loc[2, "Fare"] = "7,93"
    broken.loc[5, "Embarked"] = "Southampton"
    broken.to_csv(bad, index=False)
    fixed = tmp_path / "fixed.csv"
    code, out, _ = run_cli(capsys, "quality", "fix", "titanic", "--file", str(bad), "--out", str(fixed))
    assert code == 0 and "round 1: 2 failing check(s)" in out
    again = pd.read_csv(fixed)
    assert again.at[2, "Fare"] == pytest.approx(7.93) and again.at[5, "Embarked"] == "S"
    assert run_cli(capsys, "quality", "validate", "titanic", "--file", str(fixed))[0] == 0
    # drift of a file against itself: nothing flagged
    code, out, _ = run_cli(capsys, "quality", "drift", "titanic", "--reference", str(fixed), "--batch", str(fixed))
    assert code == 0 and "flagged: none" in out


@needs_mirror
def test_cli_corrupt_then_drift_flags(capsys, tmp_path) -> None:
    drifted = tmp_path / "drifted.csv"
    code, _, _ = run_cli(capsys, "quality", "corrupt", "titanic", "--out", str(drifted), "--fault", "drift=0.5")
    assert code == 0
    code, out, _ = run_cli(capsys, "quality", "drift", "titanic", "--batch", str(drifted))
    assert code == 1 and "Pclass" in out.split("flagged:")[1]


def test_every_fault_kind_has_an_expected_detector() -> None:
    from mastery.tabular.corrupt import DETECTED_BY

    assert set(DETECTED_BY) == set(FAULT_KINDS)
    assert all(SCHEMA_FAULTS[k] in (v[0], v) for k, v in DETECTED_BY.items() if k in SCHEMA_FAULTS)
