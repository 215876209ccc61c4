"""The ``mastery`` command line."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path

from mastery.core.errors import MasteryError

log = logging.getLogger("mastery")
RESULTS_DIR = Path("docs/results")
README = Path("README.md")
DOMAIN_COMMANDS = ("mastery.vision.cli", "mastery.text.cli", "mastery.llm.cli", "mastery.retrieval.cli",
                   "mastery.agents.cli", "mastery.agents.support_cli", "mastery.agents.crew_cli",
                   "mastery.serving.cli", "mastery.serving.auth_cli", "mastery.core.settings_cli",
                   "mastery.ops.stack_cli", "mastery.tabular.quality_cli", "mastery.apps.assistant.cli",
                   "mastery.security.redteam_cli")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


# -- labs ----------------------------------------------------------------------------------
def cmd_labs_list(args: argparse.Namespace) -> int:
    from mastery.core.lessons import LESSONS

    if args.json:
        rows = [{"id": lesson.id, "title": lesson.title, "module": lesson.module,
                 "module_name": lesson.module_name, "status": lesson.status} for lesson in LESSONS]
        _out(json.dumps(rows, indent=2))
        return 0
    current = None
    for lesson in LESSONS:
        if lesson.module != current:
            current = lesson.module
            _out(f"\n{lesson.module_name}")
        mark = "*" if lesson.implemented else " "
        _out(f"  {mark} {lesson.id}  {lesson.status:<11}  {lesson.title}")
    done = sum(lesson.implemented for lesson in LESSONS)
    _out(f"\n{done}/{len(LESSONS)} labs implemented (* = implemented)")
    return 0


def _progress(lab_id: str, args: argparse.Namespace):
    from mastery.core.progress import BarProgress, FanoutProgress, NullProgress

    base = NullProgress() if args.quiet else BarProgress(lab_id)
    if not getattr(args, "track", False):
        return base
    from mastery.ops.tracking import MlflowProgress, tracking_uri_for

    uri = args.tracking_uri or tracking_uri_for(Path(args.out))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    return FanoutProgress(base, MlflowProgress(experiment=f"mastery-{lab_id}", tracking_uri=uri))


def cmd_labs_run(args: argparse.Namespace) -> int:
    from mastery.core.index import sync_readme_table, write_results_index
    from mastery.core.labs import load_lab, run_directory, run_lab, runs_root

    lab = load_lab(args.lab)
    config = lab.config(args.preset, args.set or [])
    if args.dry_run:  # validated (types, ranges, the lab's own checks): show what would run
        from mastery.core.config import config_to_dict

        _out(json.dumps({"lab": lab.lesson.id, "preset": args.preset, "config": config_to_dict(config)}, indent=2))
        return 0
    progress = _progress(lab.lesson.id, args)
    report = run_lab(lab, config, args.preset, progress)
    out_dir = report.write(run_directory(runs_root(args.out), lab.lesson.id))
    if args.publish:
        report.publish(RESULTS_DIR)
        write_results_index(RESULTS_DIR)
        if README.is_file():
            sync_readme_table(README, RESULTS_DIR)
    ok = sum(c.passed for c in report.checks)
    _out(f"{lab.lesson.id} [{args.preset}] {report.wall_time_s:.1f}s on {report.device}: "
         f"checks {ok}/{len(report.checks)} passed")
    for key, value in report.metrics.items():
        _out(f"  {key} = {value:.6g}")
    for key, value in report.timings.items():
        _out(f"  {key} = {value:.6g} (timing)")
    for check in report.checks:
        if not check.passed:
            _out(f"  FAILED check {check.name}: expected {check.expectation}, got {check.value}")
    _out(f"report: {out_dir / 'report.md'}")
    return 0 if report.passed else 1


def cmd_labs_show(args: argparse.Namespace) -> int:
    from mastery.core.labs import latest_report_dir, runs_root
    from mastery.core.lessons import get_lesson

    lesson = get_lesson(args.lab)
    run_dir = latest_report_dir(runs_root(args.out), lesson.id)
    if run_dir is not None:
        _out((run_dir / "report.md").read_text())
        return 0
    recorded = RESULTS_DIR / f"{lesson.id}.md"
    if recorded.is_file():
        _out(recorded.read_text())
        return 0
    raise MasteryError(f"no report for {lesson.id} yet; run 'mastery labs run {lesson.id}' first")


def cmd_labs_table(args: argparse.Namespace) -> int:
    from mastery.core.index import labs_table, sync_readme_table

    if args.write:
        changed = sync_readme_table(README, RESULTS_DIR)
        _out(f"{README}: {'updated' if changed else 'already up to date'}")
    else:
        _out(labs_table(RESULTS_DIR))
    return 0


def cmd_labs_check(args: argparse.Namespace) -> int:
    import importlib

    from mastery.core.contract import check_lab
    from mastery.core.lessons import LESSONS, get_lesson

    lessons = [get_lesson(args.lab)] if args.lab else [lesson for lesson in LESSONS if lesson.implemented]
    problems = [p for lesson in lessons for p in check_lab(importlib.import_module(lesson.lab_module))]
    for problem in problems:
        _out(problem)
    _out(f"{len(lessons)} lab(s) checked, {len(problems)} problem(s)")
    return 1 if problems else 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Each lab's tiny preset, after fetching the assets it declares (``REQUIRES``); a lab whose assets
    cannot be had is listed with the command that fetches them, and only failed checks fail the demo."""
    from mastery.assets.catalog import get_asset
    from mastery.assets.store import fetch_missing, pull_command
    from mastery.core.errors import AssetError
    from mastery.core.index import write_runs_index
    from mastery.core.labs import load_lab, run_directory, run_lab, runs_root
    from mastery.core.lessons import LESSONS, get_lesson

    lessons = [get_lesson(i) for i in args.labs.split(",") if i.strip()] if args.labs else LESSONS
    root = runs_root(args.out)
    failed, skipped, attempted = [], {}, {}
    for lesson in lessons:
        if not lesson.implemented:
            continue
        lab = load_lab(lesson.id)
        missing = fetch_missing(getattr(lab.module, "REQUIRES", ()), attempted, show_progress=not args.quiet)
        if not missing:
            try:
                report = run_lab(lab, lab.config("tiny"), "tiny", _progress(lesson.id, args))
            except AssetError as exc:  # an asset the lab reads but does not declare
                missing = {"(undeclared)": str(exc)}
        if missing:
            skipped[lesson.id] = missing
            _out(f"{lesson.id} not run: missing {', '.join(missing)}")
            continue
        report.write(run_directory(root, lesson.id))
        ok = sum(c.passed for c in report.checks)
        _out(f"{lesson.id} tiny: {report.wall_time_s:.1f}s, checks {ok}/{len(report.checks)}")
        if not report.passed:
            failed.append(lesson.id)
    index = write_runs_index(root)
    _out(f"index: {index}")
    if skipped:
        _out(f"labs not run for want of assets ({len(skipped)}); fetch them, then run the demo again:")
        for lab_id, missing in skipped.items():
            for name, why in missing.items():
                fix = pull_command(get_asset(name)) if name != "(undeclared)" else why
                _out(f"  {lab_id}: {name}: {fix}")
        for name, why in attempted.items():
            if why:
                log.info("%s: %s", name, why)
    if failed:
        _out(f"labs with failed checks: {', '.join(failed)}")
    return 1 if failed else 0


# -- assets --------------------------------------------------------------------------------
def cmd_assets_list(args: argparse.Namespace) -> int:
    from mastery.assets.catalog import assets_of_kind
    from mastery.assets.store import asset_status

    if args.kind == "model":
        _out("Shelf models (downloaded, verified against the catalog):")
    for asset in assets_of_kind(args.kind):
        size = f"{asset.size / 2**20:8.1f} MiB" if asset.size else "           -"
        _out(f"{asset.name:<36} {asset_status(asset):<9} {size}  {asset.description}")
    if args.kind == "model":
        _list_trained(getattr(args, "store", None), getattr(args, "registry_uri", None))
    return 0


# -- trained models (mastery.ops.registry) ----------------------------------------------------------
def _list_trained(store: str | None, registry_uri: str | None = None) -> None:
    from mastery.ops.registry import open_registry

    reg = open_registry(store, registry_uri)  # --registry-uri (MLflow) wins over --store (a folder)
    rows = reg.list()
    _out(f"\nTrained models ({reg.location}):")
    if not rows:
        _out("  none yet: the full presets of the training labs register theirs ('register=true')")
    for m in rows:
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in list(m.get("metrics", {}).items())[:3])
        _out(f"{m['name'] + '@' + str(m['version']):<36} {m['kind']:<6} {m['created']}  sha256 {m['sha256'][:12]}  "
             f"{metrics}")


def cmd_models_show(args: argparse.Namespace) -> int:
    from mastery.ops.registry import open_registry

    m = open_registry(args.store, args.registry_uri).manifest(args.name)
    if args.json:
        _out(json.dumps(m, indent=2, sort_keys=True))
        return 0
    _out(f"{m['name']}@{m['version']}  ({m['kind']}, created {m['created']})")
    if m.get("description"):
        _out(f"  {m['description']}")
    _out(f"sha256 (all files): {m['sha256']}")
    code = m.get("code", {})
    _out("code: " + (f"git {code['git_commit'][:12]}{' (uncommitted changes)' if code.get('dirty') else ''}"
                     if "git_commit" in code else f"mastery {code.get('package_version', '?')}"))
    _out("files:")
    for rel, rec in sorted(m.get("files", {}).items()):
        _out(f"  {rec['sha256']}  {rec['size']:>12,}  {rel}")
    _out("data assets (sha256 at training time):")
    for name, digest in sorted(m.get("data_assets", {}).items()):
        _out(f"  {digest}  {name}")
    _out("metrics:")
    for key, value in m.get("metrics", {}).items():
        _out(f"  {key} = {value:.6g}" if isinstance(value, int | float) else f"  {key} = {value}")
    _out("config:")
    _out("\n".join("  " + line for line in json.dumps(m.get("config", {}), indent=2, sort_keys=True).splitlines()))
    return 0


def cmd_assets_info(args: argparse.Namespace) -> int:
    from mastery.assets.catalog import get_asset
    from mastery.assets.store import asset_status, locate

    asset = get_asset(args.name)
    found = locate(asset) if asset.kind != "generated" else None
    fields = {
        "name": asset.name, "kind": asset.kind, "description": asset.description, "license": asset.license,
        "source": ", ".join(asset.urls), "file": asset.filename or "-", "sha256": asset.sha256 or "-",
        "size": asset.size, "status": asset_status(asset), "path": str(found.path) if found else "-",
    }
    fields["fetched from"] = ", ".join(asset.sources) if not asset.substitute else f"see {asset.substitute}"
    if asset.convert:
        fields["built by"] = f"mastery.assets.convert: {asset.convert}"
    if asset.content_digest:
        fields["content digest"] = asset.content_digest
    if asset.substitute:
        fields["substitute"] = f"{asset.substitute} (fetched in its place when no mirror holds it)"
    if asset.caveat:
        fields["caveat"] = asset.caveat
    if asset.citation:
        fields["cite"] = asset.citation
    for key, value in fields.items():
        _out(f"{key:>15}: {value}")
    return 0


def _check_kind(name: str, kind: str) -> None:
    from mastery.assets.catalog import get_asset

    asset = get_asset(name)
    wanted = {"data": ("data", "generated"), "model": ("model",)}[kind]
    if asset.kind not in wanted:
        other = "models" if asset.kind == "model" else "data"
        raise MasteryError(f"{name} is not a {kind} asset; use 'mastery {other} ...'")


def cmd_assets_pull(args: argparse.Namespace) -> int:
    from mastery.assets.store import pull

    _check_kind(args.name, args.kind)
    loc = pull(args.name, show_progress=not args.quiet)
    _out(f"{args.name}: {loc.where} {loc.path}")
    return 0


def cmd_assets_verify(args: argparse.Namespace) -> int:
    from mastery.assets.catalog import ASSETS, assets_of_kind
    from mastery.assets.store import verify

    trained: list[str] = []
    if args.kind == "model":
        from mastery.ops.registry import open_registry

        registry = open_registry()
        if args.name and args.name not in ASSETS:  # a trained model, NAME or NAME@VERSION
            trained = [str(registry.resolve(args.name))]
        elif not args.name:
            trained = [f"{name}@{v}" for name in registry.names() for v in registry.versions(name)]
    if args.name and not trained:
        _check_kind(args.name, args.kind)
        names = [args.name]
    else:
        names = [] if args.name else [a.name for a in assets_of_kind(args.kind) if a.kind != "generated"]
    bad = 0
    for name in names:
        try:
            loc = verify(name)
            _out(f"ok       {name} ({loc.where} {loc.path})")
        except MasteryError as exc:
            if not args.name and "not available locally" in str(exc):
                _out(f"missing  {name}")
                continue
            bad += 1
            _out(f"FAILED   {name}: {exc}")
    for ref in trained:  # every file's sha256 and the training data's digests, as loading checks them
        try:
            loaded = registry.load(ref)
            _out(f"ok       {ref} (trained, {loaded.path})")
        except MasteryError as exc:
            bad += 1
            _out(f"FAILED   {ref}: {exc}")
    return 2 if bad else 0


_REGISTRY_URI_HELP = ("MLflow model registry URI (sqlite:///path.db or http://127.0.0.1:5000; default: the settings' "
                      "model_registry_uri)")


def cmd_models_push(args: argparse.Namespace) -> int:
    from mastery.core.errors import ConfigError
    from mastery.core.settings import get_settings
    from mastery.ops.registry import ModelRegistry, default_root, open_registry

    uri = args.registry_uri or get_settings().model_registry_uri
    if not uri:
        raise ConfigError("--registry-uri: give the MLflow registry to push to (or set MASTERY_MODEL_REGISTRY_URI)")
    source = ModelRegistry(args.store or default_root())
    target = open_registry(uri=uri)
    ref = target.copy_from(source, args.name)
    _out(f"{source.resolve(args.name)} -> {ref} in {target.location}")
    return 0


def _add_asset_commands(sub: argparse._SubParsersAction, kind: str, help_text: str) -> None:
    parser = sub.add_parser(kind if kind == "data" else "models", help=help_text)
    parser.set_defaults(kind=kind)
    inner = parser.add_subparsers(dest="action", required=True, parser_class=_Parser)
    p = inner.add_parser("list", help=f"list registered {kind} assets and where each is"
                         + (", then the trained models" if kind == "model" else ""))
    p.set_defaults(func=cmd_assets_list)
    if kind == "model":
        p.add_argument("--store", default=None, help="trained-model store (default: the settings' model_store)")
        p.add_argument("--registry-uri", default=None, help=_REGISTRY_URI_HELP)
        p = inner.add_parser("show", help="print a trained model's manifest: files with sha256, data assets, "
                                          "code version, metrics, config")
        p.add_argument("name", help="NAME (latest version) or NAME@VERSION")
        p.add_argument("--store", default=None, help="trained-model store (default: the settings' model_store)")
        p.add_argument("--json", action="store_true", help="the manifest as JSON")
        p.add_argument("--registry-uri", default=None, help=_REGISTRY_URI_HELP)
        p.set_defaults(func=cmd_models_show)
        p = inner.add_parser("push", help="copy a trained model from the folder store into MLflow's model registry "
                                          "(verified on the way out, recorded as copied)")
        p.add_argument("name", help="NAME (latest version) or NAME@VERSION in the folder store")
        p.add_argument("--store", default=None, help="folder store to copy from (default: the settings' model_store)")
        p.add_argument("--registry-uri", default=None, help=_REGISTRY_URI_HELP)
        p.set_defaults(func=cmd_models_push)
    p = inner.add_parser("info", help="show an asset's source, license, checksum and location")
    p.add_argument("name")
    p.set_defaults(func=cmd_assets_info)
    p = inner.add_parser("pull", help="make an asset available locally (mirror, cache or fetch)")
    p.add_argument("name")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_assets_pull)
    p = inner.add_parser("verify", help="re-hash assets (and trained models) and compare with the registry")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_assets_verify)


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # the parent package is not there (yet)
        return False


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mastery", description="The AI/ML Mastery Roadmap as runnable labs.",
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    labs = sub.add_parser("labs", help="list, run and show labs")
    lsub = labs.add_subparsers(dest="action", required=True, parser_class=_Parser)
    p = lsub.add_parser("list", help="all 44 lessons with their status")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_labs_list)
    p = lsub.add_parser("run", help="run a lab preset and write its report")
    p.add_argument("lab", help="lab id, e.g. l05")
    p.add_argument("--preset", default="tiny", help="tiny (seconds) or full (the recorded result)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--out", default="runs", help="runs folder (default: runs)")
    p.add_argument("--publish", action="store_true", help="also record the report in docs/results/")
    p.add_argument("--track", action="store_true", help="log params, metrics and artifacts to MLflow")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite:///<out>/mlflow.db)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--dry-run", action="store_true", help="validate the config and print it as JSON; run nothing")
    p.set_defaults(func=cmd_labs_run)
    p = lsub.add_parser("table", help="the README's lab table (headline metrics as recorded)")
    p.add_argument("--write", action="store_true", help="rewrite the table in README.md")
    p.set_defaults(func=cmd_labs_table)
    p = lsub.add_parser("check", help="check labs against the lab contract (no datasets needed)")
    p.add_argument("lab", nargs="?", help="one lab id (default: every implemented lab)")
    p.set_defaults(func=cmd_labs_check)
    p = lsub.add_parser("show", help="print the latest report of a lab")
    p.add_argument("lab")
    p.add_argument("--out", default="runs")
    p.set_defaults(func=cmd_labs_show)
    from mastery.ops.cli import add_sweep_command  # builds the parser only; Ray and MLflow load at run time

    add_sweep_command(lsub)

    p = lsub.add_parser("demo", help="run every implemented lab's tiny preset and write runs/index.md")
    p.add_argument("--labs", default="", help="comma-separated lab ids to run (default: every implemented lab)")
    p.add_argument("--out", default="runs")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    _add_asset_commands(sub, "data", "datasets: list, info, pull, verify")
    _add_asset_commands(sub, "model", "models: list, show, info, pull, verify (shelf and trained)")
    # Domain packages add their own command groups (e.g. `mastery vision detect`) by exposing
    # register(subparsers, parser_class) in <package>.cli.
    for name in DOMAIN_COMMANDS:
        if _module_exists(name):
            importlib.import_module(name).register(sub, _Parser)
    parser.epilog = command_map(parser)
    return parser


def command_map(parser: argparse.ArgumentParser) -> str:
    """Every ``mastery NOUN VERB`` with its one-line help: the map ``mastery --help`` ends with."""
    lines = ["commands (mastery NOUN VERB ...):"]
    for noun, (noun_parser, _) in _subcommands(parser).items():
        for verb, (_, help_text) in _subcommands(noun_parser).items():
            lines.append(f"  {f'{noun} {verb}':<24} {help_text}".rstrip())
    return "\n".join(lines)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[argparse.ArgumentParser, str]]:
    """name -> (parser, one-line help) of a parser's sub-commands (argparse keeps them only in ``_actions``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return {name: (p, helps.get(name, "")) for name, p in action.choices.items()}
    return {}


def main(argv: list[str] | None = None) -> int:
    # Idle OpenMP threads that spin instead of sleeping made torch/BLAS 10-50x slower whenever
    # another process shared the cores; passive waiting costs nothing measurable when alone.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not args.verbose:  # libraries' chatter at INFO: FAISS lists each CPU build it tried before the one it loaded
        for noisy in ("faiss.loader", "bm25s"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except MasteryError as exc:
        sys.stderr.write(f"mastery: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("mastery: interrupted\n")
        return 130
    except BrokenPipeError:  # e.g. `mastery labs list | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
