"""The one scripted chat model: every test and tiny preset talks to it, in process or over HTTP.

    llm = ScriptedChat(["Thought: ...\\nAction: calculator\\nAction Input: 6 * 7", "Final Answer: 42"])
    llm.chat("What is 6 * 7?").text                     # the reply for turn 0 of this conversation
    llm = ScriptedChat(lambda messages, system: "I don't know.")   # a responder decides from the conversation
    llm.calls[-1]["reply"]                              # every call is recorded

A reply is text, ``{"content": ..., "tool_calls": [{"name", "arguments"}]}`` (a native function call; the
arguments a dict or JSON text), or an exception, which is raised: a backend that fails. A list of replies
is played by the conversation's turn (:func:`conversation_turn`), not by arrival order, so concurrent
conversations each follow the script from its start; :func:`in_order` and :class:`QuestionScript` are
responders for the other orders. The HTTP server in :mod:`mastery.llm.scripted` serves the same fake.

It behaves like a server where that matters to callers: the text is cut at the first ``stop`` string and
at ``max_tokens`` (``finish_reason`` "length"), and token counts are a deterministic estimate (about four
characters a token), so a run's token totals are the same on every machine.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any, Literal

from mastery.core.errors import ConfigError
from mastery.llm.types import ChatStream, Completion, Messages, ToolCall

Reply = str | dict[str, Any] | BaseException
Responder = Callable[[list[dict[str, Any]], str], Reply]  # (messages without the system prompt, system) -> reply
CHARS_PER_TOKEN = 4  # the usual rule of thumb for English text under BPE tokenizers


def estimate_tokens(text: str) -> int:
    """A stable stand-in for a tokenizer: about four characters a token (0 for no text)."""
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def conversation_turn(messages: Sequence[dict[str, Any]]) -> int:
    """How far a conversation is: the number of assistant messages in it.

    An agent that keeps its whole transcript in one user message has none: its observations are counted."""
    turns = sum(1 for m in messages if m.get("role") == "assistant")
    if turns:
        return turns
    return sum(str(m.get("content") or "").count("Observation:") for m in messages if m.get("role") == "user")


def first_user_message(messages: Sequence[dict[str, Any]]) -> str:
    return next((str(m.get("content") or "") for m in messages if m.get("role") == "user"), "")


class ScriptedChat:
    """A :class:`~mastery.llm.types.StreamingChatModel` that answers from a script; records ``calls``.

    ``script``: a non-empty list of replies (by turn; the last repeats) or a responder
    ``(messages, system) -> reply``. Safe to share between threads."""

    def __init__(self, script: Sequence[Reply] | Responder = ("OK",), *, model: str = "scripted") -> None:
        if not callable(script):
            script = tuple(script)
            if not script:
                raise ConfigError("ScriptedChat needs at least one reply")
        self.script, self.model = script, model
        self.device = f"scripted replies ({model}, no model loaded)"
        self.server = None  # like an LLMClient that found its server running: nothing to stop
        self.calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def reply(self, messages: list[dict[str, Any]], system: str = "") -> dict[str, Any]:
        """The scripted reply as ``{"content", "tool_calls"}``; raises the script's exceptions."""
        raw = self.script(messages, system) if callable(self.script) else \
            self.script[min(conversation_turn(messages), len(self.script) - 1)]
        if isinstance(raw, BaseException):
            raise raw
        reply = {"content": raw} if isinstance(raw, str) else dict(raw)
        reply["content"] = str(reply.get("content") or "")
        reply["tool_calls"] = list(reply.get("tool_calls") or [])
        return reply

    def chat(self, messages: Messages, *, system: str | None = None, max_tokens: int = 256,
             temperature: float = 0.0, seed: int | None = 0, stop: list[str] | None = None,
             extra_body: dict[str, Any] | None = None, tools: Sequence[dict[str, Any]] | None = None) -> Completion:
        msgs = [{"role": "user", "content": messages}] if isinstance(messages, str) else [dict(m) for m in messages]
        record: dict[str, Any] = {"messages": msgs, "system": system, "tools": list(tools or []),
                                  "max_tokens": max_tokens, "temperature": temperature, "seed": seed, "stop": stop}
        try:
            reply = self.reply(msgs, system or "")
        except BaseException as exc:
            record.update(reply=None, error=f"{type(exc).__name__}: {exc}")
            self._record(record)
            raise
        text = reply["content"]
        for s in stop or []:  # a server stops generating there (and does not return the stop string)
            text = text.split(s, 1)[0]
        cut = estimate_tokens(text) > max_tokens
        if cut:
            text = text[: max_tokens * CHARS_PER_TOKEN]
        with self._lock:
            n = len(self.calls) + 1
        calls = tuple(ToolCall(id=f"call_{n}_{i}", name=str(c["name"]), arguments=c.get("arguments") if
                               isinstance(c.get("arguments"), str) else json.dumps(c.get("arguments") or {}))
                      for i, c in enumerate(reply["tool_calls"]))
        prompt = "\n".join(filter(None, [system, *(str(m.get("content") or "") for m in msgs)]))
        completion = Completion(
            text=text, prompt_tokens=estimate_tokens(prompt),
            completion_tokens=estimate_tokens(text + "".join(c["name"] + c["arguments"] for c in calls)),
            latency_s=0.0, time_to_first_token_s=None, model=self.model,
            finish_reason="tool_calls" if calls else "length" if cut else "stop", tool_calls=calls)
        record.update(reply=text, completion=completion)
        self._record(record)
        return completion

    def stream(self, messages: Messages, *, system: str | None = None, max_tokens: int = 256,
               temperature: float = 0.0, seed: int | None = 0, stop: list[str] | None = None,
               extra_body: dict[str, Any] | None = None) -> ChatStream:
        """The same reply as :meth:`chat`, handed out a word at a time."""
        completion = self.chat(messages, system=system, max_tokens=max_tokens, temperature=temperature, seed=seed,
                               stop=stop, extra_body=extra_body)

        def pieces() -> Iterator[str]:
            yield from re.findall(r"\s*\S+|\s+$", completion.text)
            holder.completion = replace(completion, stream=True, time_to_first_token_s=0.0)

        holder = ChatStream(pieces())
        return holder

    def _record(self, record: dict[str, Any]) -> None:
        with self._lock:
            self.calls.append(record)


def tool_call(name: str, **arguments: Any) -> dict[str, Any]:
    """A reply that calls a tool the native (OpenAI ``tool_calls``) way."""
    return {"content": "", "tool_calls": [{"name": name, "arguments": arguments}]}


def in_order(*replies: Reply) -> Responder:
    """A responder that plays ``replies`` in call order, whatever the conversation (the last repeats)."""
    if not replies:
        raise ConfigError("in_order needs at least one reply")
    state = {"next": 0}
    lock = threading.Lock()

    def respond(messages: list[dict[str, Any]], system: str) -> Reply:
        with lock:
            i = min(state["next"], len(replies) - 1)
            state["next"] += 1
        return replies[i]

    return respond


class QuestionScript:
    """A responder that plays one list of replies per question: the first key found in the conversation's first
    user message picks the list (``default`` otherwise). Lets one fake drive several scenarios at once.

    ``by="turn"``: the reply for the conversation's turn (:func:`conversation_turn`); ``by="call"``: the
    replies in the order that question's calls arrive (an agent that re-asks after a format error sends the
    same turn twice and must get the next reply)."""

    def __init__(self, plans: dict[str, Sequence[Reply]], default: Sequence[Reply] = ("I don't know.",), *,
                 by: Literal["turn", "call"] = "turn") -> None:
        if not all(plans.values()) or not default:
            raise ConfigError("QuestionScript: every plan needs at least one reply")
        self.plans, self.default, self.by = plans, default, by
        self._asked: dict[str | None, int] = {}
        self._lock = threading.Lock()

    def __call__(self, messages: list[dict[str, Any]], system: str = "") -> Reply:
        first = first_user_message(messages)
        key = next((k for k in self.plans if k in first), None)
        plan = self.plans[key] if key is not None else self.default
        if self.by == "turn":
            i = conversation_turn(messages)
        else:
            with self._lock:
                i = self._asked.get(key, 0)
                self._asked[key] = i + 1
        return plan[min(i, len(plan) - 1)]
