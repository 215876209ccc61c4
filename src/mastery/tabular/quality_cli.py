"""``mastery quality validate|fix|drift|corrupt``: the L29 data-quality gate on a CSV file.

    mastery quality validate titanic --file new.csv --report failures.json   # exit 0 pass, 1 failures
    mastery quality fix titanic --file new.csv --out fixed.csv               # validate -> fix -> validate
    mastery quality drift titanic --reference train.csv --batch new.csv      # exit 1 when a column drifted
    mastery quality corrupt titanic --out broken.csv --fault nulls=0.05 --fault category_typos=0.05

Exit codes: 0 the data passes, 1 it fails a check (the report says which), 2 the input cannot be read
(one line naming the file and the problem).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from mastery.core.errors import MasteryError

DATASETS = ("titanic",)


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def read_frame(path: str | None) -> Any:
    """A CSV as a DataFrame (the registered Titanic file when ``path`` is None); MasteryError if unreadable."""
    import pandas as pd

    from mastery.tabular.quality_schema import COLUMNS

    if path is None:
        from mastery.assets.loaders import load_titanic

        return load_titanic()
    p = Path(path)
    if not p.is_file():
        raise MasteryError(f"cannot read {path}: no such file")
    try:
        df = pd.read_csv(p)
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MasteryError(f"cannot read {path} as CSV: {first}") from None
    if not set(df.columns) & set(COLUMNS):
        raise MasteryError(f"{path} is not a Titanic file: none of the columns {', '.join(COLUMNS)}")
    return df


def _write(path: str, text: str) -> None:
    """Write through a temporary file and a rename: a reader never sees half a file."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, target)
    except OSError as exc:
        raise MasteryError(f"cannot write {path}: {exc.strerror or exc}") from None


def _write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        _write(path, json.dumps(payload, indent=2, default=str) + "\n")


def cmd_validate(args: argparse.Namespace) -> int:
    from mastery.tabular.quality_schema import validate_titanic

    df = read_frame(args.file)
    result = validate_titanic(df, labelled=not args.unlabelled)
    for line in result.lines():
        _out(line)
    _write_json(args.report, {"file": args.file, **result.to_dict()})
    return 0 if result.passed else 1


def cmd_fix(args: argparse.Namespace) -> int:
    from mastery.tabular.quality_schema import typed
    from mastery.tabular.repair import fix_until_valid

    df = read_frame(args.file)
    reference = read_frame(args.reference) if args.reference else None
    result = fix_until_valid(df, reference, args.max_rounds, labelled=not args.unlabelled)
    for r in result.rounds:
        _out(f"round {r.round}: {r.failures} failing check(s), {r.failed_rows} row(s)")
        for a in r.actions:
            _out(f"  {a.fix} [{a.column}]: {a.rows} row(s)")
    for line in result.final.lines():
        _out(line)
    if result.passed:
        _write(args.out, typed(result.frame).to_csv(index=False))
        _out(f"wrote {args.out} ({len(result.frame)} rows)")
    _write_json(args.report, {"file": args.file, "passed": result.passed, "rows_in": len(df),
                              "rows_out": len(result.frame),
                              "rounds": [{"round": r.round, "failing_checks": r.failures,
                                          "actions": [vars(a) for a in r.actions]} for r in result.rounds],
                              "final": result.final.to_dict()})
    return 0 if result.passed else 1


def cmd_drift(args: argparse.Namespace) -> int:
    from mastery.tabular.drift import drift_report

    result = drift_report(read_frame(args.reference), read_frame(args.batch), psi_threshold=args.psi_threshold,
                          alpha=args.alpha)
    for line in result.lines():
        _out(line)
    _out(f"flagged: {', '.join(result.flagged) or 'none'}")
    _write_json(args.report, result.to_dict())
    return 1 if result.flagged else 0


def cmd_corrupt(args: argparse.Namespace) -> int:
    from mastery.tabular.corrupt import corrupt, parse_faults

    faults = parse_faults(args.fault or [])
    if not faults:
        raise MasteryError("name at least one --fault KIND=RATE")
    broken, injections = corrupt(read_frame(args.file), faults, seed=args.seed)
    _write(args.out, broken.to_csv(index=False))
    for inj in injections:
        _out(f"{inj.kind}: {inj.count} row(s)")
    _out(f"wrote {args.out} ({len(broken)} rows)")
    return 0


def register(subparsers: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    from mastery.tabular.corrupt import FAULT_KINDS

    q = subparsers.add_parser("quality", help="data quality: validate a CSV against its schema, fix it, "
                                              "measure drift, corrupt it on purpose")
    sub = q.add_subparsers(dest="action", required=True, parser_class=parser_class)

    def dataset(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("dataset", choices=DATASETS, help="which schema (titanic: the Kaggle train.csv columns)")
        return p

    p = dataset(sub.add_parser("validate", help="check a CSV against the schema; exit 1 and a per-check "
                                                "report on failures"))
    p.add_argument("--file", required=True, help="the CSV to check")
    p.add_argument("--report", default=None, help="also write the failures as JSON here")
    p.add_argument("--unlabelled", action="store_true", help="no Survived column (Kaggle's test.csv)")
    p.set_defaults(func=cmd_validate)

    p = dataset(sub.add_parser("fix", help="validate -> fix -> validate until it passes; write the fixed CSV"))
    p.add_argument("--file", required=True, help="the CSV to fix")
    p.add_argument("--out", required=True, help="where the fixed CSV goes (written only when it passes)")
    p.add_argument("--reference", default=None, help="trusted CSV for imputation statistics (default: the file)")
    p.add_argument("--max-rounds", type=int, default=5, help="rounds of repairs before giving up (default 5)")
    p.add_argument("--report", default=None, help="also write the rounds and their repairs as JSON here")
    p.add_argument("--unlabelled", action="store_true", help="no Survived column (Kaggle's test.csv)")
    p.set_defaults(func=cmd_fix)

    p = dataset(sub.add_parser("drift", help="PSI, KS and chi-squared per column, batch vs reference; "
                                             "exit 1 when a column is flagged"))
    p.add_argument("--reference", default=None, help="the training CSV (default: the registered dataset)")
    p.add_argument("--batch", required=True, help="the new batch")
    p.add_argument("--psi-threshold", type=float, default=0.2, help="flag a column above this PSI (default 0.2)")
    p.add_argument("--alpha", type=float, default=0.01, help="flag a column below this p-value (default 0.01)")
    p.add_argument("--report", default=None, help="also write the per-column numbers as JSON here")
    p.set_defaults(func=cmd_drift)

    p = dataset(sub.add_parser("corrupt", help="inject faults on purpose (seeded): "
                                               + ", ".join(FAULT_KINDS)))
    p.add_argument("--file", default=None, help="the CSV to corrupt (default: the registered dataset)")
    p.add_argument("--out", required=True, help="where the corrupted CSV goes")
    p.add_argument("--fault", action="append", metavar="KIND=RATE",
                   help="a fault kind and the fraction of rows it hits; repeatable")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_corrupt)
