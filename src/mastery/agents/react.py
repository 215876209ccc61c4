"""A ReAct agent written from scratch: think, act with a tool, observe, repeat, answer.

    agent = ReActAgent(llm, default_tools(), max_steps=6, mode="auto")
    result = agent.run("What is 17 * 23 + 5?")
    result.status, result.answer, result.steps          # "answered", "396", [Step(...), Step(...)]

Modes:

- ``text``: a ReAct system prompt with worked examples; the model writes ``Thought / Action / Action Input``
  (generation stops at ``Observation:``), the agent runs the tool and appends ``Observation: ...`` to a
  scratchpad that is sent back as the start of the assistant's reply (a prefill the model continues), the
  completion-style shape of the original ReAct paper. With the scratchpad as chat turns instead, Qwen2.5-0.5B
  answered after the first observation even when the question had a second part, or repeated its last call.
- ``native``: OpenAI function calling (``tools=``); calls come back in ``Completion.tool_calls``. Small models
  often write the call as JSON in the content instead, so the content is parsed too (the JSON fallback).
- ``auto``: native, switching to text when the backend rejects ``tools``.

Small models misbehave, so: each step gets one retry with a format reminder; unknown tools and tool errors
become observations the model can react to; an identical repeated call is not run again but answered with a
nudge, and a third one ends the run (``gave_up``); ``max_steps`` and a deadline bound the run. :meth:`run`
never raises for model or tool misbehaviour: every run ends as an :class:`AgentResult` with a reason.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mastery.agents.parsing import Parsed, ParseError, parse_arguments_json, parse_reply
from mastery.agents.tools import call_tool, coerce_arguments
from mastery.agents.types import AgentError, AgentResult, Step, StepCallback, Tool, ToolError
from mastery.llm.errors import LLMBadResponse, LLMError
from mastery.llm.types import ChatModel

log = logging.getLogger(__name__)

Mode = Literal["auto", "native", "text"]
MODES = ("auto", "native", "text")
MAX_OBSERVATION_CHARS = 1500

TEXT_SYSTEM = """You answer questions by using tools. Tools:
{tools}

Use exactly this format:
Thought: what to do next
Action: the tool name, one of [{names}]
Action Input: a JSON object with the tool's arguments
Then wait for the Observation. Repeat Thought/Action/Action Input as needed. When you know the answer, write:
Thought: I know the answer
Final Answer: the answer

Example:
Question: What is (12 + 30) * 2?
Thought: I need to compute (12 + 30) * 2.
Action: calculator
Action Input: {{"expression": "(12 + 30) * 2"}}
Observation: 84
Thought: I know the answer
Final Answer: 84

Question: How many seconds are in 3 days, divided by 8?
Thought: First the seconds in 3 days.
Action: calculator
Action Input: {{"expression": "3 * 24 * 3600"}}
Observation: 259200
Thought: Now divide by 8.
Action: calculator
Action Input: {{"expression": "259200 / 8"}}
Observation: 32400
Thought: I know the answer
Final Answer: 32400"""

ANSWER_SYSTEM = "You answer questions. Reply with just the answer, in one line."
NATIVE_SYSTEM = ("You answer questions. Call a tool when you need to compute or look something up; use one tool "
                 "call at a time. When you know the answer, reply with just the answer.")

REMINDER = ("Your reply could not be used: {error}. Reply in this format:\nThought: ...\nAction: one of [{names}]\n"
            "Action Input: {{\"{param}\": \"...\"}}\nor, if you know the answer:\nThought: ...\nFinal Answer: ...")


@dataclass
class RunStats:
    """What happened in the last run, beyond the Steps: the lab's format-robustness counters."""

    mode_used: str = ""
    format_errors: int = 0  # replies that failed to parse (first attempts and retries)
    recovered_by_retry: int = 0  # steps whose first reply failed and whose retry worked
    json_fallback: int = 0  # calls found by the JSON fallback rather than the ReAct labels or tool_calls
    native_calls: int = 0  # calls that came through Completion.tool_calls
    repeated_calls: int = 0
    llm_calls: int = 0
    notes: list[str] = field(default_factory=list)


def describe_tools(tools: Sequence[Tool]) -> str:
    lines = []
    for t in tools:
        params = ", ".join(f'"{k}": {v.get("type", "string")}' for k, v in t.parameters.get("properties", {}).items())
        lines.append(f"- {t.name}: {t.description} Arguments: {{{params}}}")
    return "\n".join(lines)


_CALL_LIKE = re.compile(r'\{\s*"(?:name|action|tool|function)"\s*:')
_LEADING_LABEL = re.compile(r"\s*[*_]*(thought|action|final answer)\s*[*_]*:", re.IGNORECASE)


def _signature(action: str, args: dict[str, Any] | None) -> str:
    return f"{action}({json.dumps(args or {}, sort_keys=True, default=str, ensure_ascii=False)})"


class ReActAgent:
    def __init__(self, llm: ChatModel, tools: Sequence[Tool], *, max_steps: int = 6,
                 mode: Literal["auto", "native", "text"] = "auto", max_tokens: int = 256,
                 on_step: StepCallback | None = None, backend_name: str = "") -> None:
        if not tools:
            raise AgentError("the agent needs at least one tool")
        if mode not in MODES:
            raise AgentError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if max_steps < 1:
            raise AgentError(f"max_steps must be >= 1, got {max_steps}")
        names = [t.name for t in tools]
        if len(set(names)) != len(names):
            raise AgentError(f"tool names must be unique, got {names}")
        self.llm, self.tools, self.max_steps, self.mode = llm, list(tools), max_steps, mode
        self.max_tokens, self.on_step, self.backend_name = max_tokens, on_step, backend_name
        self.by_name = {t.name: t for t in self.tools}
        self.stats = RunStats()
        self._reset("")

    def _reset(self, question: str) -> None:
        self._question = question
        self._pad = ""  # text mode: the scratchpad so far (Thought/Action/Action Input/Observation lines)
        self._messages: list[dict[str, Any]] = [{"role": "user", "content": question}]  # native mode's turns
        self._seen: dict[str, str] = {}  # call signature -> observation (the loop breaker's memory)
        self._format_streak = 0  # consecutive steps that ended in a format error
        self._answer_only = False  # native mode: the next call goes without tools (set by the loop breaker)
        self._last_observation = ""

    # -- prompts --------------------------------------------------------------------------------
    def text_system(self) -> str:
        return TEXT_SYSTEM.format(tools=describe_tools(self.tools), names=", ".join(self.by_name))

    def reminder(self, error: str) -> str:
        first = self.tools[0]
        param = (first.parameters.get("required") or ["input"])[0]
        return REMINDER.format(error=error, names=", ".join(self.by_name), param=param)

    def text_messages(self, reminder: str | None = None) -> list[dict[str, Any]]:
        user = f"Question: {self._question}" + (f"\n\n{reminder}" if reminder else "")
        messages: list[dict[str, Any]] = [{"role": "user", "content": user}]
        if self._pad:
            messages.append({"role": "assistant", "content": self._pad})
        return messages

    # -- the loop -------------------------------------------------------------------------------
    def run(self, question: str, *, deadline: float | None = None) -> AgentResult:
        """deadline: a time.monotonic() value; past it the run stops with status "timed_out".
        Never raises for model or tool misbehaviour: every failure ends as an AgentResult with a reason.
        LLMError from the model after the wrapper's retries -> status "failed" with the error as reason."""
        if not isinstance(question, str) or not question.strip():
            raise AgentError("the question is empty")
        start = time.perf_counter()
        self._reset(question)
        self.stats = RunStats(mode_used="text" if self.mode == "text" else "native")
        result = AgentResult(question=question, status="max_steps", answer=None, backend=self.backend_name)
        try:
            while len(result.steps) < self.max_steps:
                if deadline is not None and time.monotonic() >= deadline:
                    result.status, result.reason = "timed_out", f"deadline passed after {len(result.steps)} step(s)"
                    break
                step = self._step(len(result.steps) + 1)
                result.steps.append(step)
                if self.on_step is not None:
                    self.on_step(step)
                if step.kind == "final":
                    result.status, result.answer = "answered", step.answer
                    break
                if step.kind == "give_up":
                    result.status, result.reason = "gave_up", step.error or "the agent gave up"
                    break
            else:
                result.reason = (f"no final answer after {self.max_steps} steps (last: "
                                 f"{result.steps[-1].kind if result.steps else 'none'})")
        except LLMError as exc:
            result.status, result.reason = "failed", f"{type(exc).__name__}: {exc}"
        result.wall_s = time.perf_counter() - start
        log.info("event=agent_run status=%s steps=%d mode=%s wall_s=%.2f", result.status, len(result.steps),
                 self.stats.mode_used, result.wall_s)
        return result

    def _ask(self, reminder: str | None = None) -> tuple[Any, str]:
        """One LLM call for the next step: the completion and the model's new text."""
        self.stats.llm_calls += 1
        if self.stats.mode_used == "text":
            completion = self.llm.chat(self.text_messages(reminder), system=self.text_system(),
                                       max_tokens=self.max_tokens, temperature=0.0, seed=0,
                                       stop=["Observation:", "\nObservation"])
            text = completion.text or ""
            # llama.cpp returns the prefill and its continuation; other servers only the continuation
            text = text[len(self._pad):] if self._pad and text.startswith(self._pad) else text
            if self._pad.endswith("Thought:") and not _LEADING_LABEL.match(text):
                text = "Thought:" + text  # the pad ended with the label; the model wrote the thought itself
            return completion, text
        messages = self._messages + ([{"role": "user", "content": reminder}] if reminder else [])
        if self._answer_only:
            # Tools withdrawn: with `tools=` in the prompt small models call a tool on every turn, even to
            # "compute" a result they already hold; without them they answer (the loop breaker's second chance).
            # The results go in as plain lines, not as the earlier call turns the model would imitate.
            self._answer_only = False
            results = "\n".join(f"- {sig} returned: {obs}" for sig, obs in self._seen.items())
            ask = {"role": "user", "content": f"Question: {self._question}\nTool results:\n{results}\n"
                                              "Answer the question using these results. Reply with just the answer."}
            completion = self.llm.chat([ask], system=ANSWER_SYSTEM, max_tokens=self.max_tokens,
                                       temperature=0.0, seed=0)
            return completion, completion.text or ""
        try:
            completion = self.llm.chat(messages, system=NATIVE_SYSTEM, max_tokens=self.max_tokens, temperature=0.0,
                                       seed=0, tools=[t.openai_schema() for t in self.tools])
            return completion, completion.text or ""
        except LLMBadResponse as exc:
            if self.mode != "auto":
                raise
            # The backend refused `tools`: carry on in text mode with the same question.
            self.stats.notes.append(f"native function calling refused ({exc}); switched to text mode")
            self.stats.mode_used = "text"
            return self._ask(reminder)

    def _step(self, index: int) -> Step:
        step = Step(index=index, kind="format_error")
        parsed: Parsed | None = None
        native_call: dict[str, str] | None = None
        error = ""
        for attempt in (1, 2):
            completion, text = self._ask(self.reminder(error) if attempt == 2 else None)
            step.attempts = attempt
            step.prompt_tokens += completion.prompt_tokens
            step.completion_tokens += completion.completion_tokens
            step.llm_latency_s += completion.latency_s
            step.raw = text
            try:
                parsed, native_call = self._interpret(completion, text)
                if attempt == 2:
                    self.stats.recovered_by_retry += 1
                break
            except ParseError as exc:
                error = str(exc)
                self.stats.format_errors += 1
        if parsed is None:
            step.error = f"format error after a retry: {error}"
            self._note_format_error(step.raw, error)
            self._format_streak += 1
            if self._format_streak >= 2:
                step.kind = "give_up"
                step.error = f"the model did not follow the format in two steps in a row: {error}"
            return step
        self._format_streak = 0
        step.thought = parsed.thought
        if parsed.kind == "final":
            step.kind, step.answer = "final", parsed.answer
            return step
        step.action, step.action_input = parsed.action, parsed.action_input
        step.native = native_call is not None
        if parsed.via == "json":
            self.stats.json_fallback += 1
        if step.native:
            self.stats.native_calls += 1
        step.observation, step.kind, step.error = self._act(step)
        self._record_turn(step, native_call)
        return step

    def _note_format_error(self, raw: str, error: str) -> None:
        """Show the model its unusable reply and what was wrong, as an observation (at temperature 0 the same
        context would give the same reply again)."""
        bad = " ".join(raw.split())[:200] or "(empty)"
        if self.stats.mode_used == "text":
            bad = re.sub(r"^thought\s*:\s*", "", bad, flags=re.IGNORECASE)
            label = "" if self._pad.endswith("Thought:") else "Thought:"
            self._pad += (f"{label} {bad}\nObservation: Invalid format: {error}. Write 'Action:' and "
                          "'Action Input:', or 'Final Answer:'.\nThought:")
        else:
            self._messages += [{"role": "assistant", "content": bad}, {"role": "user", "content": self.reminder(error)}]

    def _interpret(self, completion: Any, text: str) -> tuple[Parsed, dict[str, str] | None]:
        """The step a completion asks for: a native tool call first, else the parsed text."""
        calls = getattr(completion, "tool_calls", ()) or ()
        if calls:
            call = calls[0]
            tool = self.by_name.get(call["name"])
            try:
                args = parse_arguments_json(call.get("arguments", ""), tool)
            except ParseError as exc:
                raise ParseError(f"the arguments of the {call['name']} call are not valid JSON: {exc}") from None
            return Parsed(kind="action", action=call["name"], action_input=args), dict(call)
        try:
            return parse_reply(text, self.tools), None
        except ParseError:
            if self.stats.mode_used == "native" and text.strip():
                if _CALL_LIKE.search(text):
                    # broken JSON of a call (triple quotes, cut off): a format error to retry, not the answer
                    raise ParseError("the tool call is not valid JSON; write {\"name\": ..., \"arguments\": {...}} "
                                     "or reply with the answer") from None
                # Function calling's convention: content without a call is the answer.
                return Parsed(kind="final", answer=text.strip().removeprefix("Final Answer:").strip()), None
            raise

    def _act(self, step: Step) -> tuple[str, Literal["tool", "tool_error", "give_up"], str | None]:
        name, args = step.action or "", step.action_input or {}
        tool = self.by_name.get(name)
        if tool is None:
            return (f"Error: there is no tool {name!r}. Use one of: {', '.join(self.by_name)}.", "tool_error",
                    f"unknown tool {name!r}")
        with contextlib.suppress(ToolError):
            args = coerce_arguments(tool, args)  # the loop breaker compares what the tool would get
        sig = _signature(name, args)
        echo = (len(args) == 1 and self._last_observation.strip() != ""
                and str(next(iter(args.values()))).strip() == self._last_observation.strip())
        if echo and sig not in self._seen:
            # calculator("396") right after a tool said 396: the model re-computes what it holds, a loop
            self._seen[sig] = self._last_observation
        if sig in self._seen:
            self._answer_only = self.stats.mode_used == "native"
            self.stats.repeated_calls += 1
            if self.stats.repeated_calls >= 2:
                return (self._seen[sig], "give_up", f"loop: the model repeated the call {name}({json.dumps(args)}) "
                        "after being told it already had the result")
            hint = ("that failed, so change the input" if self._seen[sig].startswith("Error") else
                    "use this result for the next step, or give the final answer")
            return (f"{self._seen[sig]}\n(You already called {name} with this input: {hint}.)", "tool_error",
                    "repeated identical call")
        started = time.perf_counter()
        try:
            observation = call_tool(tool, args)
            kind: Literal["tool", "tool_error"] = "tool"
            error = None
        except ToolError as exc:
            observation, kind, error = f"Error: {exc}", "tool_error", str(exc)
        step.tool_latency_s = time.perf_counter() - started
        if len(observation) > MAX_OBSERVATION_CHARS:
            observation = observation[:MAX_OBSERVATION_CHARS] + " ...[truncated]"
        self._seen[sig] = observation
        self._last_observation = observation
        return observation, kind, error

    def _record_turn(self, step: Step, native_call: dict[str, str] | None) -> None:
        """Add the call and its observation to what the next call sees, in the mode's shape."""
        args_json = json.dumps(step.action_input or {}, ensure_ascii=False)
        if self.stats.mode_used == "text":
            # the pad already ends in "Thought:" after the first step; the first step writes the label itself
            label = " " if self._pad.endswith("Thought:") else "Thought: "
            thought = f"{label}{step.thought}\n" if step.thought else ("\n" if label == " " else "")
            # Ending on "Thought:" makes the model start its next step instead of continuing the observation
            # (after a numbered kb_search list it wrote "4. T1056.009 ..." and so on).
            self._pad += (f"{thought}Action: {step.action}\nAction Input: {args_json}\nObservation: "
                          f"{step.observation}\nThought:")
            return
        if native_call is None:
            # The call came as JSON in the content (the fallback): a tool-role reply to a call the server never
            # saw confuses this model (it calls again), a user turn it reads. Measured on Qwen2.5-0.5B.
            self._messages.append({"role": "assistant", "content": json.dumps(
                {"name": step.action, "arguments": step.action_input or {}}, ensure_ascii=False)})
            self._messages.append({"role": "user", "content": f"The {step.action} tool returned: {step.observation}\n"
                                                              "If this answers the question, reply with the answer; "
                                                              "otherwise call another tool."})
            return
        call_id = native_call.get("id") or f"call_{step.index}"
        self._messages.append({"role": "assistant", "content": "", "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": step.action, "arguments": args_json}}]})
        # A small model given a bare number tends to call the tool again; a one-line hint makes it answer.
        self._messages.append({"role": "tool", "tool_call_id": call_id,
                               "content": f"{step.observation}\n(Call another tool if more is needed, otherwise "
                                          "reply with the final answer in words.)"})
