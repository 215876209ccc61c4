"""An agent run's trace as text (terminal), markdown (docs) or JSON (machines).

    print(render_text(result))        # step by step: thought, action, input, observation, tokens, latency
    render_markdown(result)           # the same as a markdown section, for docs/results
    render_json(result)               # AgentResult.to_dict() as JSON text
"""

from __future__ import annotations

import json
from typing import Any

from mastery.agents.types import AgentResult, Step


def _short(text: str | None, limit: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _args(step: Step) -> str:
    return json.dumps(step.action_input or {}, ensure_ascii=False)


def step_lines(step: Step, limit: int = 300) -> list[str]:
    """One step as a few ``label: value`` lines (the shared core of the text and markdown views)."""
    how = "native tool call" if step.native else step.kind
    head = (f"step {step.index} [{how}] {step.prompt_tokens}+{step.completion_tokens} tokens, "
            f"LLM {step.llm_latency_s:.2f}s" + (f", tool {step.tool_latency_s:.2f}s" if step.action else "")
            + (f", {step.attempts} attempts" if step.attempts > 1 else ""))
    lines = [head]
    if step.thought:
        lines.append(f"  Thought: {_short(step.thought, limit)}")
    if step.action:
        lines.append(f"  Action: {step.action}")
        lines.append(f"  Action Input: {_short(_args(step), limit)}")
    if step.observation is not None:
        lines.append(f"  Observation: {_short(step.observation, limit)}")
    if step.answer is not None:
        lines.append(f"  Final Answer: {_short(step.answer, limit)}")
    if step.error:
        lines.append(f"  ! {step.error}")
    if step.kind == "format_error" or step.attempts > 1:
        lines.append(f"  (model wrote: {_short(step.raw, 160)!r})")
    return lines


def summary_line(result: AgentResult) -> str:
    return (f"{result.status}: {len(result.steps)} step(s), {result.prompt_tokens}+{result.completion_tokens} tokens, "
            f"{result.wall_s:.1f}s" + (f" ({result.backend})" if result.backend else "")
            + (f" - {result.reason}" if result.reason else ""))


def render_text(result: AgentResult, limit: int = 300) -> str:
    lines = [f"Question: {result.question}"]
    for step in result.steps:
        lines.extend(step_lines(step, limit))
    lines.append(summary_line(result))
    return "\n".join(lines)


def render_markdown(result: AgentResult, title: str | None = None, limit: int = 300) -> str:
    """A markdown section: the question, the answer and status, then the steps as a code block."""
    out = [f"### {title or result.question}", "",
           f"- question: {result.question}",
           f"- status: **{result.status}**" + (f" ({result.reason})" if result.reason else ""),
           f"- answer: {_short(result.answer, limit) if result.answer is not None else '-'}",
           f"- steps: {len(result.steps)}, tokens: {result.prompt_tokens} prompt + {result.completion_tokens} "
           f"completion", "", "```text"]
    for step in result.steps:
        out.extend(step_lines(step, limit))
    out += ["```", ""]
    return "\n".join(out)


def render_json(result: AgentResult, **extra: Any) -> str:
    return json.dumps({**result.to_dict(), **extra}, indent=2, ensure_ascii=False, default=str)
