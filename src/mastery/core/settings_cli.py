"""``mastery config show``: every ``MASTERY_*`` setting's effective value and where it came from."""

from __future__ import annotations

import argparse
import json
import sys


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def cmd_config_show(args: argparse.Namespace) -> int:
    from mastery.core.settings import describe, env_file_path

    path = env_file_path()
    rows = describe()
    if args.json:
        _out(json.dumps({"env_file": str(path) if path else None, "settings": rows}, indent=2))
        return 0
    _out(f".env file: {path if path else 'none (no ./.env; MASTERY_ENV_FILE unset)'}")
    width = max(len(r["variable"]) for r in rows)
    values = [r["value"] if r["value"] is not None else "(unset)" for r in rows]
    value_width = min(48, max(len(v) for v in values))
    for row, value in zip(rows, values, strict=True):
        _out(f"{row['variable']:<{width}}  {value:<{value_width}}  {row['source']}")
    return 0


def register(sub: argparse._SubParsersAction, parser_class: type[argparse.ArgumentParser]) -> None:
    config = sub.add_parser("config", help="settings: show the effective MASTERY_* values and their sources")
    inner = config.add_subparsers(dest="action", required=True, parser_class=parser_class)
    p = inner.add_parser("show", help="every setting's value (secrets masked) and where it came from")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_config_show)
