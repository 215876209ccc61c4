"""A tolerant parser for what small models write when asked for ReAct steps.

    parsed = parse_reply(text, tools)      # Parsed(kind="action"|"final", thought, action, action_input, answer, via)
    # or raises ParseError("...") whose message goes into the agent's format reminder

Accepted, because Qwen2.5-0.5B and friends write all of these:

- labels in any case, in bold (``**Action:**``), inside markdown fences, with "Action Input" also spelled
  "Action_Input" / "Input"; ``Action: tool[input]`` and ``Action: tool(input)``; tool names in backticks or
  with different case and spaces ("KB Search");
- Action Input as a JSON object, a JSON string, or a bare string, mapped to the tool's single required parameter;
- a JSON tool call anywhere in the text when there are no labels (the "JSON fallback"):
  ``{"name": .., "arguments": {..}}``, ``{"action": .., "action_input": ..}``, ``{"function": {"name", "arguments"}}``,
  ``{"tool_calls": [..]}``, ``{"tool": .., "tool_input": ..}``; ``{"action": "Final Answer", ...}`` is an answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mastery.agents.types import AgentError, Tool

_LABEL = re.compile(r"^[ \t>*_#-]*(thought|action[ _]?input|action|input|final[ _]?answer|observation|answer)"
                    r"[ \t*_]*[:：][ \t*_]*", re.IGNORECASE | re.MULTILINE)
_FENCE = re.compile(r"^[ \t]*```[\w+-]*[ \t]*$", re.MULTILINE)
_BOLD = re.compile(r"\*\*([^*\n]+?)\*\*")
_CALL_SYNTAX = re.compile(r"^\s*[`'\"]?([\w .-]+?)[`'\"]?\s*[\[(](.*)[\])]\s*$", re.DOTALL)
_FINAL_NAMES = {"finalanswer", "final", "answer", "finish"}


class ParseError(AgentError):
    """The reply has no usable Action or Final Answer; the message says what was wrong, for the reminder."""


@dataclass(frozen=True)
class Parsed:
    kind: Literal["action", "final"]
    thought: str = ""
    action: str | None = None  # a tool name as given (resolved to a known tool when it could be)
    action_input: dict[str, Any] | None = None
    answer: str | None = None
    via: Literal["react", "json"] = "react"  # "json": found by the JSON fallback


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def resolve_tool_name(name: str, tools: Sequence[Tool]) -> str:
    """The known tool ``name`` means ("KB Search", "`calculator`", "calculator tool"), else ``name`` as given."""
    wanted = _norm(name)
    for tool in tools:
        if _norm(tool.name) == wanted:
            return tool.name
    inside = [t.name for t in tools if _norm(t.name) and _norm(t.name) in wanted]
    return inside[0] if len(inside) == 1 else name.strip().strip("`'\"")


def clean(text: str) -> str:
    """Drop markdown decoration that hides the labels: fences lines and bold markers."""
    text = _FENCE.sub("", text)
    return _BOLD.sub(r"\1", text)


def _strip_fences(text: str) -> str:
    text = text.strip()
    text = re.sub(r"^```[\w+-]*\s*\n?", "", text)
    return re.sub(r"\n?```\s*$", "", text).strip()


def input_to_arguments(raw: Any, tool: Tool | None) -> dict[str, Any]:
    """An Action Input (JSON text, a dict, or a bare string) as the tool's argument object."""
    if isinstance(raw, dict):
        return raw
    value: Any = raw
    if isinstance(raw, str):
        text = _strip_fences(raw)
        if text[:1] in "{[\"":
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                obj = first_json_object(text)
                value = obj if obj is not None else text
        else:
            value = text
        if isinstance(value, dict):
            return value
    required = list(tool.parameters.get("required", [])) if tool else []
    if tool is not None and len(required) != 1:
        raise ParseError(f"Action Input for {tool.name} must be a JSON object with the keys "
                         f"{', '.join(tool.parameters.get('properties', {}))}")
    key = required[0] if required else "input"
    if isinstance(value, str):
        value = value.strip().strip("`").strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
    return {key: value}


def parse_arguments_json(raw: str, tool: Tool | None) -> dict[str, Any]:
    """Native ``tool_calls`` arguments (JSON text that small models sometimes get wrong) as a dict."""
    if not raw or not raw.strip():
        return {}
    return input_to_arguments(raw, tool)


def _sections(text: str) -> list[tuple[str, str]]:
    matches = list(_LABEL.finditer(text))
    out = []
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        label = _norm(m.group(1))
        label = {"actioninput": "input", "input": "input", "finalanswer": "final", "answer": "final"}.get(label, label)
        out.append((label, text[m.end():end].strip()))
    return out


def parse_reply(text: str, tools: Sequence[Tool]) -> Parsed:
    """The step a reply asks for, or a ParseError saying precisely what is missing."""
    if not text or not text.strip():
        raise ParseError("the reply was empty")
    by_name = {t.name: t for t in tools}
    sections = _sections(clean(text))
    thought = next((body for label, body in sections if label == "thought"), "")
    # Stop at the first Observation: anything after it is the model imagining the tool's answer.
    cut = next((i for i, (label, _) in enumerate(sections) if label == "observation"), len(sections))
    sections = sections[:cut]
    action_i = next((i for i, (label, _) in enumerate(sections) if label == "action"), None)
    final_i = next((i for i, (label, _) in enumerate(sections) if label == "final"), None)
    if action_i is not None and (final_i is None or action_i < final_i):
        body = sections[action_i][1]
        first, _, rest = body.partition("\n")
        name, raw_input = first.strip(), None
        if m := _CALL_SYNTAX.match(first):
            name, raw_input = m.group(1), m.group(2)
        elif first.strip().startswith("{") and (obj := first_json_object(body)) is not None:
            call = _call_from_json(obj, tools)
            if call is not None:
                return Parsed(kind=call.kind, thought=thought, action=call.action, action_input=call.action_input,
                              answer=call.answer, via="json")
        name = name.strip().strip("`'\"").rstrip(".")
        if _norm(name) in _FINAL_NAMES:
            answer = next((b for lbl, b in sections[action_i + 1:] if lbl == "input"), rest.strip())
            if answer:
                return Parsed(kind="final", thought=thought, answer=_clean_answer(answer))
        if not name:
            raise ParseError("'Action:' has no tool name")
        resolved = resolve_tool_name(name, tools)
        if raw_input is None:
            raw_input = next((b for lbl, b in sections[action_i + 1:] if lbl == "input"), None)
        if raw_input is None and rest.strip():
            raw_input = rest.strip()
        if raw_input is None:
            raise ParseError(f"'Action: {resolved}' has no 'Action Input:' line")
        return Parsed(kind="action", thought=thought, action=resolved,
                      action_input=input_to_arguments(raw_input, by_name.get(resolved)))
    if final_i is not None:
        answer = _clean_answer(sections[final_i][1])
        if not answer:
            raise ParseError("'Final Answer:' is empty")
        return Parsed(kind="final", thought=thought, answer=answer)
    for obj in json_objects(text):
        call = _call_from_json(obj, tools)
        if call is not None:
            return Parsed(kind=call.kind, thought=thought or _text_before_json(text), action=call.action,
                          action_input=call.action_input, answer=call.answer, via="json")
    if sections:
        raise ParseError("the reply has no 'Action:' line and no 'Final Answer:' line")
    raise ParseError("the reply does not use the format: write 'Thought:', then 'Action:' and 'Action Input:', "
                     "or 'Final Answer:'")


def _clean_answer(text: str) -> str:
    text = _strip_fences(text)
    return re.split(r"\n\s*(?:Thought|Action|Question)\s*:", text, flags=re.IGNORECASE)[0].strip()


def _text_before_json(text: str) -> str:
    return text.split("{", 1)[0].strip()[:300]


def _call_from_json(obj: Any, tools: Sequence[Tool]) -> Parsed | None:
    """A tool call (or final answer) in one of the JSON shapes models write, else None."""
    if isinstance(obj, list):
        return next((c for o in obj if (c := _call_from_json(o, tools)) is not None), None)
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("tool_calls"), list):
        return _call_from_json(obj["tool_calls"], tools)
    if isinstance(obj.get("function"), dict):
        return _call_from_json(obj["function"], tools)
    name = next((obj[k] for k in ("name", "action", "tool", "tool_name", "function") if isinstance(obj.get(k), str)),
                None)
    if name is None:
        answer = next((obj[k] for k in ("final_answer", "answer") if k in obj), None)
        return Parsed(kind="final", answer=str(answer).strip()) if answer not in (None, "") else None
    raw = next((obj[k] for k in ("arguments", "action_input", "parameters", "args", "tool_input", "input")
                if k in obj), None)
    if _norm(name) in _FINAL_NAMES:
        return Parsed(kind="final", answer=str(raw if not isinstance(raw, dict) else next(iter(raw.values()), ""))
                      .strip()) if raw not in (None, "", {}) else None
    resolved = resolve_tool_name(name, tools)
    tool = next((t for t in tools if t.name == resolved), None)
    if tool is None and raw is None:
        return None  # {"name": "Alice"} is data, not a call
    try:
        args = input_to_arguments(raw if raw is not None else {}, tool)
    except ParseError:
        return None
    return Parsed(kind="action", action=resolved, action_input=args)


def json_objects(text: str) -> list[Any]:
    """Every top-level JSON object or array in ``text`` (prose and fences around them are fine)."""
    decoder = json.JSONDecoder()
    out, i = [], 0
    while (starts := [p for p in (text.find("{", i), text.find("[", i)) if p >= 0]):
        start = min(starts)
        try:
            obj, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            i = start + 1
            continue
        out.append(obj)
        i = end
    return out


def first_json_object(text: str) -> dict[str, Any] | None:
    return next((o for o in json_objects(text) if isinstance(o, dict)), None)
