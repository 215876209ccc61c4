"""``mastery agent run "question"``: the ReAct agent (L21) with the calculator, kb_search and python tools.

    mastery agent run "What is 17 * 23 + 5?" --trace
    mastery agent run "Which ATT&CK technique ID is PowerShell?" --tools kb_search --json

Exit codes: 0 answered, 1 the agent stopped without an answer (gave up, max steps, deadline, LLM failure),
2 bad input (an unknown tool, an empty question, an LLM that cannot be reached).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _tool_names(value: str) -> list[str]:
    return [n.strip() for n in value.split(",") if n.strip()]


def cmd_agent_run(args: argparse.Namespace) -> int:
    from mastery.agents.react import ReActAgent
    from mastery.agents.tools import default_tools
    from mastery.agents.trace import render_json, step_lines, summary_line
    from mastery.core.errors import ConfigError
    from mastery.llm.cli import _quiet_http_logs, _settings
    from mastery.llm.client import open_client

    _quiet_http_logs()
    if not args.question.strip():
        raise ConfigError("the question is empty")
    if args.max_steps < 1:
        raise ConfigError(f"--max-steps must be >= 1, got {args.max_steps}")
    tools = default_tools(_tool_names(args.tools), python_timeout_s=args.python_timeout)

    def show(step: Any) -> None:
        if args.trace and not args.json:
            for line in step_lines(step):
                _out(line)

    with open_client(_settings(args)) as llm:
        agent = ReActAgent(llm, tools, max_steps=args.max_steps, mode=args.mode, max_tokens=args.max_tokens,
                           on_step=show, backend_name=f"{llm.settings.backend}:{llm.model}")
        if args.trace and not args.json:
            _out(f"Question: {args.question}")
        deadline = time.monotonic() + args.deadline if args.deadline else None
        result = agent.run(args.question, deadline=deadline)
    if args.json:
        stats = agent.stats
        _out(render_json(result, mode_used=stats.mode_used, json_fallback=stats.json_fallback,
                         format_errors=stats.format_errors, native_calls=stats.native_calls))
    else:
        if args.trace:
            _out(summary_line(result))
        _out(result.answer if result.status == "answered" else f"no answer ({result.status}): {result.reason}")
    return 0 if result.status == "answered" else 1


def register(subparsers: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    from mastery.llm.cli import _add_llm_options

    agent = subparsers.add_parser("agent", help="a ReAct agent with tools (calculator, kb_search, python)")
    sub = agent.add_subparsers(dest="action", required=True, parser_class=parser_class)
    p = sub.add_parser("run", help="answer a question with the ReAct agent; exit 1 when it gives up")
    p.add_argument("question")
    p.add_argument("--trace", action="store_true", help="print every step: thought, action, observation, tokens")
    p.add_argument("--json", action="store_true", help="print the whole run (steps included) as JSON")
    p.add_argument("--max-steps", type=int, default=6, help="stop after this many steps (default 6)")
    p.add_argument("--mode", choices=("auto", "native", "text"), default="text",
                   help="text (default): ReAct prompt and parser; native: OpenAI tools; auto: native, falling back "
                        "to text when the backend refuses tools")
    p.add_argument("--tools", default="calculator,kb_search,python",
                   help="comma-separated tools (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=256, help="per LLM call (default 256)")
    p.add_argument("--deadline", type=float, default=None, help="seconds for the whole run (default: none)")
    p.add_argument("--python-timeout", type=float, default=10.0, help="seconds per python tool run (default 10)")
    _add_llm_options(p)
    p.set_defaults(func=cmd_agent_run)

    from mastery.serving.cli import add_agent_serve

    add_agent_serve(sub)
