"""L29 · Data quality and validation: break the Titanic data on purpose, catch every fault, fix it.

The story: split Titanic into training data and a "new batch"; prove the gate is quiet on clean data
(pandera schema, drift tests, label check); inject each fault kind alone and record which check caught
it; break one batch with every schema-visible fault and run validate -> fix -> validate until it passes;
finally measure what the faults cost a model and what the fix buys back.

The gate, in the order a pipeline runs it: the schema (``mastery.tabular.quality_schema``: types,
ranges, categories, nullability, unique ids, cross-field rules), then, on data that passed, drift
against the training data (``mastery.tabular.drift``: PSI, KS, chi-squared) and the model-based label
check (``mastery.tabular.label_noise``), the only one that can see flipped labels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any

from annotated_types import Interval

from mastery.core.config import Fraction
from mastery.core.labs import new_report
from mastery.core.progress import Progress
from mastery.core.report import Report

REQUIRES: tuple[str, ...] = ("titanic",)  # registered assets the tiny preset reads

Rate = Annotated[float, Interval(ge=0, le=1)]


@dataclass(frozen=True)
class Config:
    batch_fraction: Annotated[float, Interval(gt=0.05, lt=0.95)] = 0.2  # held out as the "new batch"
    null_rate: Rate = 0.05  # fraction of rows each fault kind hits
    outlier_rate: Rate = 0.05
    wrong_type_rate: Rate = 0.05
    duplicate_rate: Rate = 0.03
    typo_rate: Rate = 0.05
    label_flip_rate: Rate = 0.15
    drift_rate: Rate = 0.5  # share of the batch replaced by third-class or over-50 passengers
    psi_threshold: Annotated[float, Interval(gt=0, le=10)] = 0.2
    alpha: Annotated[float, Interval(gt=0, lt=1)] = 0.01  # p-value threshold of KS, chi-squared, binomial
    # a suspect label: the model is at least this sure of the other one
    label_confidence: Annotated[float, Interval(gt=0.5, lt=1)] = 0.8
    clean_splits: Annotated[int, Interval(ge=1, le=1000)] = 50  # random clean splits for the false-alarm rate
    repeats: Annotated[int, Interval(ge=1, le=1000)] = 20  # corruption seeds per fault kind
    min_statistical_detection_rate: Fraction = 0.9  # drift and label checks, over the repeats
    max_fix_rounds: Annotated[int, Interval(ge=1, le=20)] = 5
    folds: Annotated[int, Interval(ge=2, le=20)] = 5  # out-of-fold baseline of the label check
    c: Annotated[float, Interval(gt=0, le=1e6)] = 1.0  # logistic regression inverse L2 strength
    max_accuracy_loss: Fraction = 0.03  # fixed-data model vs clean-data model, on the clean batch
    seed: int = 0


HEADLINE = ("faults_detected", "clean_alarms", "accuracy_corrupted", "accuracy_fixed")

PRESETS = {
    "tiny": Config(clean_splits=3, repeats=1, folds=3),
    "full": Config(),
}

def _rates(config: Config) -> dict[str, float]:
    return {"nulls": config.null_rate, "outliers": config.outlier_rate, "wrong_types": config.wrong_type_rate,
            "duplicate_ids": config.duplicate_rate, "category_typos": config.typo_rate,
            "label_flips": config.label_flip_rate, "drift": config.drift_rate}


def run(config: Config, progress: Progress) -> Report:
    import scipy.linalg  # noqa: F401  (load BLAS first: threadpool_limits reaches only loaded libraries)
    from threadpoolctl import threadpool_limits

    import mastery.tabular.titanic  # noqa: F401

    with threadpool_limits(limits=1):  # a few hundred rows: extra threads only fight other jobs
        return _run(config, progress)


def _split(df: Any, fraction: float, seed: int) -> tuple[Any, Any]:
    from sklearn.model_selection import train_test_split

    train, batch = train_test_split(df, test_size=fraction, stratify=df["Survived"], random_state=seed)
    return train.reset_index(drop=True), batch.reset_index(drop=True)


def _gate(config: Config, train: Any, batch: Any) -> dict[str, Any]:
    """Schema first; drift and label checks only on data the schema passed (a pipeline stops at a failure)."""
    from mastery.tabular.drift import drift_report
    from mastery.tabular.label_noise import label_check
    from mastery.tabular.quality_schema import typed, validate_titanic

    schema = validate_titanic(batch)
    fired = sorted(schema.failed_checks)
    out: dict[str, Any] = {"schema": schema, "drift": None, "labels": None}
    if schema.passed:
        drift = drift_report(train, batch, psi_threshold=config.psi_threshold, alpha=config.alpha)
        labels = label_check(train, typed(batch), config.label_confidence, config.alpha, config.folds,
                             config.seed, config.c)
        fired += [f"drift:{c}" for c in drift.flagged] + (["label_check"] if labels.alarm else [])
        out.update(drift=drift, labels=labels)
    out["fired"] = fired
    return out


def _run(config: Config, progress: Progress) -> Report:
    from mastery.assets.loaders import load_titanic
    from mastery.tabular.corrupt import DETECTED_BY, FAULT_KINDS, corrupt

    report = new_report("l29", config)
    report.device = "cpu (pandas, pandera, scipy, scikit-learn)"
    rates = _rates(config)
    progress.params({"batch_fraction": config.batch_fraction, **rates, "psi_threshold": config.psi_threshold,
                     "alpha": config.alpha})
    train, batch = _split(load_titanic(), config.batch_fraction, config.seed)
    report.metric("train_rows", len(train))
    report.metric("batch_rows", len(batch))

    # 1. Clean data: the gate must stay quiet.
    progress.stage("clean data", None)
    from mastery.tabular.quality_schema import validate_titanic

    train_ok = validate_titanic(train)
    clean = _gate(config, train, batch)
    alarms = len(train_ok.failures) + len(clean["fired"])
    report.metric("clean_alarms", alarms)
    report.metric("clean_schema_failures", len(train_ok.failures) + len(clean["schema"].failures))
    report.metric("clean_drift_flagged", len(clean["drift"].flagged) if clean["drift"] else -1)
    report.metric("clean_label_p_value", clean["labels"].p_value if clean["labels"] else -1.0)
    report.metric("label_baseline_suspect_rate", clean["labels"].baseline_rate if clean["labels"] else -1.0)
    report.check("schema_accepts_clean", train_ok.passed and clean["schema"].passed,
                 "the schema passes the clean training data and the clean batch",
                 report.metrics["clean_schema_failures"])
    report.check("no_alarm_on_clean", alarms == 0,
                 "no drift flag and no label alarm on a clean batch vs its training data",
                 ", ".join(clean["fired"]) or "none")
    start = time.perf_counter()
    _false_alarm_rate(report, config, load_titanic())
    report.timing("clean_splits_seconds", time.perf_counter() - start)

    # 2. Each fault kind alone: which check catches it, and how reliably over other corruption seeds?
    progress.stage("fault kinds", total=len(FAULT_KINDS) * config.repeats)
    rows, detected, drifted = [], 0, None
    for kind in FAULT_KINDS:
        hits_per_seed = []
        for r in range(config.repeats):
            broken, inj = corrupt(batch, {kind: rates[kind]}, seed=config.seed + r)
            gate = _gate(config, train, broken)
            hits_per_seed.append(any(f.split(":")[0] in DETECTED_BY[kind] for f in gate["fired"]))
            if r == 0:
                first, count = gate, inj[0].count
            progress.step(kind=kind)
        rate = sum(hits_per_seed) / config.repeats
        # The schema's checks are rules: they must catch every injection. Drift and label checks are
        # statistical: a share of the repeats may slip under their thresholds.
        bar = config.min_statistical_detection_rate if kind in ("label_flips", "drift") else 1.0
        detected += hits_per_seed[0]
        report.metric(f"detection_rate_{kind}", rate)
        report.check(f"detects_{kind}", hits_per_seed[0] and rate >= bar,
                     f"{kind} ({count} rows) caught by " + " or ".join(DETECTED_BY[kind])
                     + f" (seed {config.seed}), and in >= {bar:.0%} of {config.repeats} corruption seeds",
                     f"{', '.join(first['fired']) or 'nothing fired'}; rate {rate:.2f}")
        rows.append({"fault": kind, "rate": rates[kind], "rows hit": count, "detected": hits_per_seed[0],
                     f"detected over {config.repeats} seeds": f"{rate:.0%}",
                     "expected check": " / ".join(DETECTED_BY[kind]),
                     "checks that fired": ", ".join(first["fired"]) or "-"})
        if kind == "drift":
            drifted = first["drift"]
    report.metric("faults_detected", detected)
    report.metric("fault_kinds", len(FAULT_KINDS))
    report.table("Each fault kind injected alone into the batch: what fired", rows)
    if clean["drift"] is not None and drifted is not None:
        report.table("Drift of the clean and the resampled batch vs the training data", [
            {"column": a.column, "test": a.test, "clean PSI": round(a.psi, 4), "clean p": float(f"{a.p_value:.3g}"),
             "drifted PSI": round(b.psi, 4), "drifted p": float(f"{b.p_value:.3g}"), "flagged": b.flagged}
            for a, b in zip(clean["drift"].columns, drifted.columns, strict=True)])
        report.figure("psi_per_column", _psi_figure(clean["drift"], drifted, config.psi_threshold))

    # 3. Break-fix: every schema-visible fault at once, then validate -> fix -> validate.
    progress.stage("break-fix", None)
    _break_fix(report, config, train, batch, rates)

    # 4. What the faults cost a model, and what the fix buys back.
    progress.stage("accuracy", None)
    _accuracy(report, config, train, batch, rates)
    report.metrics = {**{k: report.metrics[k] for k in HEADLINE}, **report.metrics}
    return report


def _false_alarm_rate(report: Report, config: Config, df: Any) -> None:
    """The whole gate over many random clean splits: the price of testing 8 columns and the labels at alpha."""
    drift_alarms = label_alarms = schema_failures = 0
    for s in range(config.clean_splits):
        train, batch = _split(df, config.batch_fraction, config.seed + 1000 + s)
        gate = _gate(config, train, batch)
        schema_failures += not gate["schema"].passed
        drift_alarms += bool(gate["drift"] and gate["drift"].flagged)
        label_alarms += bool(gate["labels"] and gate["labels"].alarm)
    n = config.clean_splits
    report.metric("clean_splits_schema_failure_rate", schema_failures / n)
    report.metric("clean_splits_drift_false_alarm_rate", drift_alarms / n)
    report.metric("clean_splits_label_false_alarm_rate", label_alarms / n)
    report.check("schema_quiet_on_clean_splits", schema_failures == 0,
                 f"the schema passes every one of {n} random clean splits (it is a rule, not a test)", schema_failures)
    report.note(
        f"False alarms on clean data, over {n} random splits: the schema failed {schema_failures}, the drift tests "
        f"flagged a column in {drift_alarms} and the label check fired in {label_alarms}. The schema is a set of "
        "rules that the real file satisfies, so it never fires on clean data; the drift and label checks are "
        f"statistical tests at alpha {config.alpha:g} (8 columns for drift), so a few percent of clean batches "
        "are expected to trip them. That is the price of catching a shift, and the reason an alarm should lead "
        "to a look at the data rather than a rejected batch."
    )


def _break_fix(report: Report, config: Config, train: Any, batch: Any, rates: dict[str, float]) -> None:
    from mastery.tabular.corrupt import corrupt
    from mastery.tabular.quality_schema import format_example
    from mastery.tabular.repair import fix_until_valid

    schema_faults = {k: rates[k] for k in ("nulls", "outliers", "wrong_types", "duplicate_ids", "category_typos")}
    broken, injections = corrupt(batch, schema_faults, seed=config.seed)
    result = fix_until_valid(broken, reference=train, max_rounds=config.max_fix_rounds)
    first = result.rounds[0] if result.rounds else None
    report.metric("broken_failing_checks", first.failures if first else 0)
    report.metric("fix_rounds", len(result.rounds))
    report.metric("fixed_rows", len(result.frame))
    report.check("fix_passes", result.passed and bool(result.rounds),
                 f"the broken batch fails, then passes after at most {config.max_fix_rounds} fix rounds",
                 len(result.rounds))
    if first:
        report.table("Validation report of the broken batch (first round)", [
            {"check": f.check, "column": f.column or "-", "rows": f.rows,
             "examples": "; ".join(format_example(e) for e in f.examples[:3])} for f in _failures(broken)])
    report.table("validate -> fix -> validate", [
        {"round": r.round, "failing checks before": r.failures, "rows involved": r.failed_rows,
         "repairs": "; ".join(f"{a.fix} [{a.column}] x{a.rows}" for a in r.actions)} for r in result.rounds]
        + [{"round": len(result.rounds) + 1, "failing checks before": len(result.final.failures),
            "rows involved": 0, "repairs": "passes" if result.passed else "still failing"}])
    # How many corrupted cells came back exactly (decimal commas, typos) rather than imputed.
    restored = total = 0
    fixed = result.frame
    for inj in injections:
        for row, col, old in zip(inj.rows, inj.columns, inj.original, strict=False):
            if inj.kind == "duplicate_ids":
                continue
            total += 1
            if row in fixed.index and _same(fixed.at[row, col], old):
                restored += 1
    report.metric("corrupted_cells", total)
    report.metric("cells_restored_exactly", restored)
    report.note(
        f"Break-fix: {sum(len(i.rows) for i in injections)} faults in {len(batch)} rows made "
        f"{first.failures if first else 0} checks fail; {len(result.rounds)} rounds of repairs made it pass. "
        f"{restored} of {total} corrupted cells came back with their original value (decimal commas parsed, typos "
        "mapped to the nearest category, a blanked sex read from the title); the rest were imputed from the "
        "training data's statistics, which makes the batch valid, not true."
    )


def _failures(frame: Any) -> list[Any]:
    from mastery.tabular.quality_schema import validate_titanic

    return validate_titanic(frame).failures


def _same(a: Any, b: Any) -> bool:
    try:
        return abs(float(a) - float(b)) < 1e-9
    except (TypeError, ValueError):
        return str(a) == str(b)


def _accuracy(report: Report, config: Config, train: Any, batch: Any, rates: dict[str, float]) -> None:
    """Train on clean / corrupted / fixed training data; score each model on the clean batch."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from mastery.tabular import titanic
    from mastery.tabular.corrupt import corrupt
    from mastery.tabular.quality_schema import typed
    from mastery.tabular.repair import fix_until_valid

    faults = {k: v for k, v in rates.items() if k != "drift"}  # drift is a change of population, not an error
    x_test, y_test = titanic.split_xy(batch)

    def accuracy(frame: Any) -> float:
        x, y = titanic.split_xy(frame)
        model = titanic.make_model(titanic.build_preprocessor(), LogisticRegression(C=config.c, max_iter=1000))
        return float((model.fit(x, y).predict(x_test) == y_test).mean())

    runs: dict[str, list[float]] = {"clean": [accuracy(train)], "corrupted": [], "fixed": []}
    for r in range(config.repeats):
        broken, _ = corrupt(train, faults, seed=config.seed + 1 + r)
        # On the raw corrupted data L2's pipeline raises (words in number columns; log1p of a negative fare is
        # NaN, which the logistic regression refuses). The corrupted model gets only what it needs to run at
        # all: numbers parsed (a word becomes missing, which the pipeline imputes), negative fares missing,
        # missing family counts 0; outliers, typos, repeated rows and flipped labels stay.
        naive = broken.copy()
        for col in ("Pclass", "Age", "SibSp", "Parch", "Fare"):
            naive[col] = pd.to_numeric(naive[col], errors="coerce")
        naive["Fare"] = naive["Fare"].where(naive["Fare"] >= 0)
        naive["SibSp"], naive["Parch"] = naive["SibSp"].fillna(0), naive["Parch"].fillna(0)
        runs["corrupted"].append(accuracy(naive))
        runs["fixed"].append(accuracy(typed(fix_until_valid(broken, max_rounds=config.max_fix_rounds).frame)))
    acc = {name: float(np.mean(v)) for name, v in runs.items()}
    for name in ("clean", "corrupted", "fixed"):
        report.metric(f"accuracy_{name}", acc[name])
    for name in ("corrupted", "fixed"):
        report.metric(f"accuracy_{name}_std", float(np.std(runs[name])))
    report.check("fix_recovers_accuracy", acc["fixed"] >= acc["clean"] - config.max_accuracy_loss,
                 f"model trained on the fixed data within {config.max_accuracy_loss} of the clean-data model "
                 f"(accuracy on the clean batch, mean over {config.repeats} corruption seeds)", acc["fixed"])
    report.figure("accuracy", _accuracy_figure(acc))
    report.note(
        "Accuracy: logistic regression (L2's pipeline) trained on the clean training split, on that split with "
        f"every fault kind but drift injected (mean over {config.repeats} corruption seeds; the corrupted copy is "
        "parsed only enough for the pipeline to run: words and negative fares become missing and the pipeline "
        "imputes them), and on the fixed copy; each scored on the same clean batch "
        f"({len(y_test)} passengers, so one passenger is {1 / len(y_test):.1%}). The fix cannot undo label flips: "
        "they stay in the fixed training data (the schema passes them), which is part of any remaining gap."
    )


def _psi_figure(clean: Any, drifted: Any, threshold: float) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cols = [c.column for c in clean.columns]
    x = np.arange(len(cols))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(x - 0.2, [c.psi for c in clean.columns], 0.4, label="clean batch")
    ax.bar(x + 0.2, [c.psi for c in drifted.columns], 0.4, label="resampled batch (3rd class / over 50)")
    ax.axhline(threshold, color="red", linestyle="--", label=f"PSI threshold {threshold:g}")
    for i, c in enumerate(drifted.columns):
        if c.flagged:
            ax.annotate("flagged", (i + 0.2, c.psi), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, cols)
    ax.set_ylabel("population stability index vs training data")
    ax.set_title("Drift per column")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return fig


def _accuracy_figure(acc: dict[str, float]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    bars = ax.bar(list(acc), list(acc.values()), color=["tab:green", "tab:red", "tab:blue"])
    ax.bar_label(bars, fmt="%.3f")
    ax.set_ylim(0.5, 1.0)
    ax.set_ylabel("accuracy on the clean batch")
    ax.set_title("Training data: clean vs corrupted vs fixed")
    ax.grid(alpha=0.3, axis="y")
    return fig
