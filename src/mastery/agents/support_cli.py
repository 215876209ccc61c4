"""``mastery support ask|review|show``: the L22 support-bot router from the command line.

``ask`` runs a new thread to the human review and prints the intent, the policy and the draft; ``review`` resumes
it (in any later process: the state is in the SQLite checkpoint) with --approve, --edit TEXT or --reject and
prints what was sent; ``show`` prints a thread's state and checkpoint history. Heavy imports happen in commands.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def default_db() -> Path:
    from mastery.core.settings import get_settings

    return get_settings().cache / "support" / "support.sqlite"


def _bot(args: argparse.Namespace, llm: Any = None, create: bool = False) -> Any:
    from mastery.agents.support.graph import BotSettings, SupportBot, SupportDeps, default_outbox

    db = Path(args.db) if args.db else default_db()
    outbox = Path(args.outbox) if args.outbox else default_outbox(db)
    retrieval, device = getattr(args, "retrieval", "hybrid"), getattr(args, "device", "cpu")
    if retrieval == "hybrid" and device == "auto":  # only MiniLM needs torch; review/show never load it
        from mastery.core.runtime import torch_device

        device = torch_device("auto")
    settings = BotSettings(retrieval=retrieval, device=device)
    return SupportBot(db, SupportDeps(llm=llm, settings=settings, outbox=outbox), create=create)


def _print_state(state: dict[str, Any]) -> None:
    conf = state.get("confidence")
    _out(f"thread:  {state.get('thread_id')}  (status {state.get('status')})")
    _out(f"message: {state.get('message')}")
    _out(f"intent:  {state.get('intent')}  (decided by {state.get('decided_by')}"
         + (f", confidence {conf:.2f})" if isinstance(conf, float) else ")"))
    second = state.get("second_opinion") or {}
    if second and not second.get("agrees"):
        _out(f"         check it: the {second['decided_by']} fallback classifier says {second['intent']}")
    if state.get("policy_id"):
        _out(f"policy:  {state['policy_id']}  (retrieved: {', '.join(state.get('retrieved_ids', []))})")
    else:
        _out("policy:  none fits: escalated to a person, no draft")
    if state.get("draft"):
        info = state.get("draft_info", {})
        _out(f"draft ({info.get('source')}" + (f"; {info['problem']}" if info.get("problem") else "") + "):")
        _out("  " + state["draft"].replace("\n", "\n  "))


def cmd_ask(args: argparse.Namespace) -> int:
    from mastery.agents.support.graph import check_thread_id
    from mastery.llm.cli import _quiet_http_logs, _settings
    from mastery.llm.client import open_client

    check_thread_id(args.thread)  # a bad id fails before any model loads
    _quiet_http_logs()
    with _bot(args, None, create=True) as bot:
        if args.no_llm:
            state = bot.ask(args.thread, args.message)
        else:
            bot.check_new(args.thread, args.message)  # a used id fails before the LLM starts
            with open_client(_settings(args)) as llm:
                bot.deps.llm = llm
                state = bot.ask(args.thread, args.message)
    _print_state(state)
    _out(f"\nwaiting for review: mastery support review --thread {args.thread} --approve | --edit TEXT | --reject"
         + (f" --db {args.db}" if args.db else ""))
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    action = "approve" if args.approve else "reject" if args.reject else "edit"
    with _bot(args) as bot:
        state = bot.review(args.thread, action, args.edit)
    if state.get("sent"):
        sent = state["sent"]
        note = " (already in the outbox: not sent again)" if sent.get("duplicate") else ""
        _out(f"sent ({action}) to the outbox {bot.deps.outbox}{note}:")
        _out("  " + sent["text"].replace("\n", "\n  "))
    else:
        _out(f"rejected: nothing sent for thread {args.thread}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with _bot(args) as bot:
        state = bot.state(args.thread)
        history = bot.history(args.thread)
    _print_state(state)
    if state.get("review"):
        _out(f"review:  {state['review']['action']}")
    if state.get("sent"):
        _out(f"sent:    {state['sent']['sent_at']} to the outbox")
    _out("events:")
    for event in state.get("events", []):
        _out(f"  {event}")
    _out(f"checkpoints ({len(history)}):")
    for h in history:
        _out(f"  step {h['step']:>2}  next: {', '.join(h['next']) or '(end)'}  {h['created_at']}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--thread", required=True, help="the conversation's id (letters, digits, '.', '_', '-')")
    p.add_argument("--db", default=None, help="SQLite checkpoint file (default <MASTERY_CACHE>/support/support.sqlite)")
    p.add_argument("--outbox", default=None, help="JSONL outbox (default: next to the database, <db>.outbox.jsonl)")


def register(subparsers: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    from mastery.llm.cli import _add_llm_options

    support = subparsers.add_parser("support", help="the L22 support-bot router (LangGraph, human review, SQLite)")
    sub = support.add_subparsers(dest="action", required=True, parser_class=parser_class)

    p = sub.add_parser("ask", help="classify a customer message, retrieve the policy, draft a reply; stop for review")
    p.add_argument("message")
    _common(p)
    p.add_argument("--retrieval", choices=("hybrid", "bm25"), default="hybrid",
                   help="policy search: BM25 + MiniLM fused by rank (default), or BM25 only (no model to load)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where MiniLM embeds (auto: CUDA when available)")
    p.add_argument("--no-llm", action="store_true", help="no LLM: the fallback classifier and a template draft")
    _add_llm_options(p)
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("review", help="resume a thread waiting for review: approve, edit or reject its draft")
    _common(p)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--approve", action="store_true", help="send the draft as it is")
    group.add_argument("--edit", metavar="TEXT", default=None, help="send this text instead")
    group.add_argument("--reject", action="store_true", help="send nothing and close the thread")
    p.set_defaults(func=cmd_review)

    p = sub.add_parser("show", help="a thread's state and checkpoint history")
    _common(p)
    p.set_defaults(func=cmd_show)
