"""``mastery crew run "topic"``: the research crew (researcher, summariser, critic) on the configured LLM.

:func:`register` only builds parsers; CrewAI, openai and the retrievers load when the command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def cmd_crew_run(args: argparse.Namespace) -> int:
    from mastery.agents.crew.crew import CrewSettings, run_crew
    from mastery.agents.crew.search import make_search
    from mastery.llm.cli import _quiet_http_logs, _settings
    from mastery.llm.client import open_client

    _quiet_http_logs()
    settings = CrewSettings(rounds=args.rounds, k=args.k, max_tokens=args.max_tokens).validate()
    backend = make_search(args.search, searxng_url=args.searxng_url, dense=not args.bm25_only)
    with open_client(_settings(args)) as llm:
        result = run_crew(args.topic, llm, backend, settings,
                          on_stage=None if args.json else lambda stage, calls: sys.stderr.write(
                              f"[crew] {stage} (LLM calls so far: {calls})\n"))
    if args.json:
        _out(json.dumps(result.to_dict(), indent=2, default=str))
        return 0 if result.status in ("approved", "max_rounds") else 1
    _out(f"status: {result.status}" + (f" ({result.reason})" if result.reason else ""))
    _out(f"reviews: {result.rounds} ({' -> '.join(result.verdicts) or 'none'}); searches: "
         + "; ".join(f"{c['query']!r} by {c['by']} -> {', '.join(c['ids']) or c['error'] or 'no hits'}"
                     for c in result.tool_calls))
    _out()
    _out(result.final_report or "(no report)")
    _out()
    _out("cited: " + (", ".join(result.cited) or "none") + (
        f"; not in the search results: {', '.join(result.invalid_citations)}" if result.invalid_citations else ""))
    for note in result.critic_notes:
        _out("critic: " + " ".join(note.split())[:300])
    sys.stderr.write(f"[{result.llm_calls} LLM calls, {result.prompt_tokens} prompt + {result.completion_tokens} "
                     f"completion tokens, {result.wall_s:.1f}s]\n")
    return 0 if result.status in ("approved", "max_rounds") else 1


def register(subparsers: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    from mastery.llm.cli import _add_llm_options

    crew = subparsers.add_parser("crew", help="a multi-agent research crew (CrewAI) on the local LLM")
    sub = crew.add_subparsers(dest="action", required=True, parser_class=parser_class)
    p = sub.add_parser("run", help="research a topic: search, summarise, review and edit (bounded rounds)")
    p.add_argument("topic")
    p.add_argument("--search", choices=("kb", "duckduckgo", "searxng"), default="kb",
                   help="kb (default): the offline ATT&CK knowledge base; duckduckgo/searxng need the network")
    p.add_argument("--searxng-url", default=None, help="a SearxNG instance, e.g. http://127.0.0.1:8888")
    p.add_argument("--bm25-only", action="store_true", help="offline search without MiniLM (faster start)")
    p.add_argument("--rounds", type=int, default=2, help="most critic reviews (default 2)")
    p.add_argument("--k", type=int, default=4, help="hits per search (default 4)")
    p.add_argument("--max-tokens", type=int, default=220, help="tokens per LLM reply (default 220)")
    p.add_argument("--json", action="store_true", help="print the whole CrewResult as JSON")
    _add_llm_options(p)
    p.set_defaults(func=cmd_crew_run)
