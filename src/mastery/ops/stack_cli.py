"""``mastery stack up|status|logs|down``: the compose stack (prediction API + Chroma) as local processes.

:func:`register` only builds parsers; the supervisor and HTTP clients load when a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mastery.ops.stack import DEFAULT_API_PORT, DEFAULT_CHROMA_PORT, DEFAULT_DIR, LOCALHOST


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def cmd_up(args: argparse.Namespace) -> int:
    from mastery.ops.stack import StackSpec, up

    spec = StackSpec(model=args.model, artifact=args.artifact, kb_collection=args.kb_collection, host=args.host,
                     api_port=args.api_port, chroma_port=args.chroma_port, chroma_path=args.chroma_path,
                     start_timeout=args.timeout, stop_grace=args.grace)
    state = up(spec, Path(args.dir))
    for name, svc in state["services"].items():
        _out(f"{name:<7} {svc['url']:<28} pid {svc['pid']:<8} healthy after {svc['start_seconds']:.2f} s")
    kb = f"; POST /kb/query searches {args.kb_collection!r}" if args.kb_collection else ""
    _out(f"stack ready in {state['start_seconds']:.2f} s{kb}; logs: mastery stack logs --dir {args.dir}; "
         f"stop: mastery stack down --dir {args.dir}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from mastery.ops.stack import status

    state = status(Path(args.dir))
    if args.json:
        _out(json.dumps(state, indent=2))
    elif state["status"] == "absent":
        _out(f"no stack has run from {args.dir}")
    else:
        sup = f"supervisor pid {state['supervisor_pid']}" + ("" if state["running"] else " (not running)")
        reason = f": {state['reason']}" if state.get("reason") else ""
        _out(f"stack {state['status']}{reason} ({sup})")
        for name, svc in state["services"].items():
            health = "healthy" if svc["healthy"] else ("running, unhealthy" if svc["alive"] else "not running")
            _out(f"  {name:<7} {svc['url']:<28} pid {svc['pid']:<8} {health}")
    healthy = state["running"] and state["status"] == "ready" and all(s["healthy"] for s in state["services"].values())
    return 0 if healthy else 1


def cmd_logs(args: argparse.Namespace) -> int:
    from mastery.ops.stack import log_tail

    tails = log_tail(Path(args.dir), args.service, args.lines)
    for name, text in tails.items():
        if len(tails) > 1:
            _out(f"==> {name} <==")
        _out(text)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from mastery.ops.stack import down

    result = down(Path(args.dir))
    if not result["was_running"]:
        _out(f"no stack running from {args.dir}" + (" (cleaned up what was left)" if result["stopped"] else ""))
    else:
        _out(f"stopped {', '.join(result['stopped'])}; no process left, no port listening")
    return 0


def register(subparsers: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    stack = subparsers.add_parser("stack", help="the compose stack (prediction API + Chroma) as local processes: "
                                               "up, status, logs, down")
    sub = stack.add_subparsers(dest="action", required=True, parser_class=parser_class)

    def add_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dir", default=str(DEFAULT_DIR), help="state folder: pids, logs, Chroma data "
                                                               "(default %(default)s)")

    p = sub.add_parser("up", help="start Chroma and the prediction API, return once both are healthy")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="the API's model by registry name, NAME or NAME@VERSION (e.g. titanic-logreg)")
    which.add_argument("--artifact", help="the API's model as a .skops file with its sidecar")
    p.add_argument("--kb-collection", default=None, help="collection POST /kb/query searches (default: no route)")
    p.add_argument("--host", default=LOCALHOST, help="interface both bind (default %(default)s: this machine only)")
    p.add_argument("--api-port", type=int, default=DEFAULT_API_PORT, help="default %(default)s")
    p.add_argument("--chroma-port", type=int, default=DEFAULT_CHROMA_PORT, help="default %(default)s")
    p.add_argument("--chroma-path", default=None, help="Chroma's data folder (default <dir>/chroma-data)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds each service has to become healthy")
    p.add_argument("--grace", type=float, default=10.0, help="seconds each service has between SIGTERM and SIGKILL "
                                                             "when the stack stops (default %(default)s)")
    add_dir(p)
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("status", help="the stack's processes and their health now (exit 1 unless all healthy)")
    p.add_argument("--json", action="store_true", help="the whole state as JSON")
    add_dir(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("logs", help="the last lines of the services' logs")
    p.add_argument("service", nargs="?", choices=("api", "chroma", "supervisor"), help="one log (default: all)")
    p.add_argument("-n", "--lines", type=int, default=40, choices=range(1, 100_001), metavar="N",
                   help="lines per log (default %(default)s)")
    add_dir(p)
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("down", help="stop the stack: SIGTERM to each service, SIGKILL after the grace period")
    add_dir(p)
    p.set_defaults(func=cmd_down)
