"""``mastery redteam run|judge``: the red team against the Research Assistant, and its judge's own accuracy.

    mastery redteam run --sample 4 --guards both --llm fake             # CI-sized, no model
    mastery redteam run --sample 3 --llm embedded --out runs/redteam    # the 0.5B through llama.cpp
    mastery redteam judge                                                # the judge against the hand labels

``run`` prints the attack success rate per OWASP category with the guards off and on, the benign refusal rate
and the attacks that worked (a markdown table, also written to ``OUT/redteam.md``), and writes every answer
and verdict to ``OUT/redteam.json``. Exit 0 when it ran (the rates are findings, not failures); 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mastery.core.errors import MasteryError

DEFAULT_OUT = Path("runs/redteam")
LABELS = Path(__file__).with_name("redteam_labels.csv")  # hand-labelled answers of the 0.5B (judge accuracy)


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _write(path: Path, text: str) -> None:
    import os

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise MasteryError(f"cannot write {path}: {exc.strerror or exc}") from None


def cmd_run(args: argparse.Namespace) -> int:
    from mastery.core.progress import BarProgress, NullProgress
    from mastery.security.redteam import RedTeamConfig, markdown_table, run_redteam

    guards = ("off", "on") if args.guards == "both" else (args.guards,)
    config = RedTeamConfig(llm=args.llm, model=args.model, guards=guards, per_category=args.sample or None,
                           benign=args.benign, seed=args.seed, embedder=args.embedder,
                           second_opinion=args.second_opinion)
    out = Path(args.out)
    progress = NullProgress() if args.quiet else BarProgress("redteam")
    result = run_redteam(config, out / "work", progress)
    table = markdown_table(result)
    _write(out / "redteam.json", json.dumps(result, indent=2, default=str) + "\n")
    _write(out / "redteam.md", f"# Red team against the Research Assistant\n\nLLM: {result['llm']}; "
                               f"{result['cases']} cases; {result['seconds']} s.\n\n{table}")
    _out(table.rstrip())
    _out(f"\nwrote {out / 'redteam.json'} and {out / 'redteam.md'}")
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    from mastery.security.judge import Judge, accuracy, objective_rows, read_labels

    rows = objective_rows() if args.public else read_labels(Path(args.labels))
    report: dict[str, Any] = accuracy(rows, Judge())
    if args.json:
        _out(json.dumps(report, indent=2))
        return 0
    c = report["confusion"]
    _out(f"judge accuracy {report['accuracy']:.3f} on {report['n']} labelled answers "
         f"({report['complied_labelled']} complied)")
    _out(f"  attack judged succeeded: {c['tp']} right, {c['fp']} wrong; judged failed: {c['tn']} right, "
         f"{c['fn']} wrong")
    for w in report["wrong"][: args.show]:
        _out(f"  wrong: {w['case_id']} labelled {w['label']}, judged {w['judged']}: {w['response'][:100]!r}")
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def register(subparsers: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    red = subparsers.add_parser("redteam", help="attack the Research Assistant (OWASP LLM Top 10 cases) and "
                                               "measure what gets through")
    sub = red.add_subparsers(dest="action", required=True, parser_class=parser_class)

    p = sub.add_parser("run", help="run the attack cases with the guards off and/or on; print the success rates")
    p.add_argument("--sample", type=_positive, default=4, metavar="N",
                   help="attack cases per OWASP category (default %(default)s; 0: all of them)")
    p.add_argument("--guards", choices=("on", "off", "both"), default="both",
                   help="run the cases with the guard layer off, on, or both (default)")
    p.add_argument("--llm", choices=("fake", "embedded"), default="fake",
                   help="fake (default): a scripted model that obeys every order, no weights; embedded: llama.cpp")
    p.add_argument("--model", default=None, help="embedded: the registry GGUF (default the 0.5B)")
    p.add_argument("--benign", type=_positive, default=10, metavar="N",
                   help="benign security questions asked with the guards on (default %(default)s; 0: none)")
    p.add_argument("--embedder", choices=("lexical", "minilm"), default="lexical",
                   help="the knowledge base's embedder (default lexical: no model to load)")
    p.add_argument("--seed", type=int, default=0, help="which public prompts are drawn (default 0)")
    p.add_argument("--second-opinion", action="store_true",
                   help="also ask the LLM whether each answer complied (reported, never deciding)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="where redteam.json and redteam.md go (default "
                                                           "%(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("judge", help="the judge's accuracy against hand-labelled answers")
    p.add_argument("--labels", default=str(LABELS), help="the labelled CSV (default %(default)s)")
    p.add_argument("--show", type=_positive, default=20, metavar="N", help="list at most N misjudged answers")
    p.add_argument("--public", action="store_true", help="PyRIT's human-labelled 'objective achieved' answers "
                                                         "instead of the hand labels (answers of other models)")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.set_defaults(func=cmd_judge)
