"""A scripted ChatModel: replies come from a function of the conversation, so the graph's every path (good JSON,
garbage, an invented intent, an unusable draft) can be driven deterministically without a model."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from mastery.llm.client import Completion

Script = Callable[[list[dict[str, Any]], str], str]  # (messages, system prompt) -> reply text


class ScriptedChat:
    """Satisfies :class:`mastery.agents.types.ChatModel`; records every call in ``calls``."""

    def __init__(self, script: Script, name: str = "scripted") -> None:
        self.script, self.name = script, name
        self.calls: list[dict[str, Any]] = []
        self.device = f"{name} (no model)"
        self.server = None

    def chat(self, messages: Any, *, system: str | None = None, max_tokens: int = 256, temperature: float = 0.0,
             seed: int | None = 0, stop: list[str] | None = None, extra_body: dict[str, Any] | None = None,
             tools: Sequence[dict[str, Any]] | None = None) -> Completion:
        msgs = [{"role": "user", "content": messages}] if isinstance(messages, str) else [dict(m) for m in messages]
        text = self.script(msgs, system or "")
        for s in stop or []:  # the server would stop there too
            text = text.split(s, 1)[0]
        words = len(text.split())
        self.calls.append({"system": system, "messages": msgs, "reply": text})
        prompt = sum(len(str(m.get("content", "")).split()) for m in msgs) + len((system or "").split())
        return Completion(text=text, prompt_tokens=prompt, completion_tokens=words, latency_s=0.0,
                          time_to_first_token_s=None, model=self.name,
                          finish_reason="length" if words > max_tokens else "stop")


def last_user(messages: list[dict[str, Any]]) -> str:
    return next((str(m["content"]) for m in reversed(messages) if m.get("role") == "user"), "")


def _is_reminder(message: dict[str, Any]) -> bool:
    return str(message.get("content", "")).startswith("That is not a valid answer")


def customer_message(messages: list[dict[str, Any]]) -> str:
    """The customer's text in a classify call (the last user turn that is not a reminder; worked examples come
    before it) or a draft call (after 'Customer message:')."""
    text = last_user(messages)
    found = re.search(r"Customer message:\n(.*?)\n\nWrite the reply email", text, re.DOTALL)
    if found:
        return found.group(1)
    return next((str(m["content"]) for m in reversed(messages) if m.get("role") == "user" and not _is_reminder(m)),
                "")


def keyword_script(behaviour: dict[str, tuple[str, ...]]) -> Script:
    """A script keyed by a word of the customer's message: ``behaviour[word]`` lists the classify replies in order
    (the last repeats), and a draft call answers with a short email citing the policy in the prompt unless the
    word maps to a tuple whose first item is "GARBLED_DRAFT". Words are matched case-insensitively."""

    def script(messages: list[dict[str, Any]], system: str) -> str:
        message = customer_message(messages).lower()
        key = next((k for k in behaviour if k.lower() in message), None)
        replies = behaviour.get(key, ('{"intent": "other"}',)) if key else ('{"intent": "other"}',)
        if "reply email" in system or "support team" in system:
            if replies and replies[0] == "GARBLED_DRAFT":
                return "def reply():\n    return reply()\n" * 3
            prompt = last_user(messages)
            policy = re.search(r"Policy (POL-[A-Z]+) \(([^)]*)\):", prompt)
            pid, title = policy.groups() if policy else ("POL-NONE", "")
            # the first policy line that states a number: what a good draft would quote
            rule = next((line for line in prompt.splitlines() if re.search(r"\d", line) and "POL-" not in line), "")
            return (f"Dear customer,\n\nThank you for your message. Under our policy {pid} ({title}), {rule}\n\n"
                    "Best regards,\nCustomer Support")
        replies = tuple(r for r in replies if r != "GARBLED_DRAFT") or ('{"intent": "other"}',)
        turn = sum(1 for m in messages if _is_reminder(m))  # 0: first ask, 1: after the reminder
        return replies[min(turn, len(replies) - 1)]

    return script


# The tiny preset's script over dataset.TINY_EXAMPLES: each message takes a different path through the graph.
TINY_BEHAVIOUR = {
    "running shoes": ('{"intent": "refund"}',),  # good JSON on the first try
    "order #48213": ("Sure! The customer asks about", '```json\n{"intent": "shipping"}\n```'),  # prose, then JSON
    "charged twice": ('{"intent": "payments"}', '{"intent": "double_charge"}'),  # invented twice -> fallback
    "card number": ("GARBLED_DRAFT", '{"intent": "security"}'),  # right intent, unusable draft -> template
    "store in lisbon": ('{"intent": "other"}',),  # no policy fits -> escalate, no draft
}
