"""The support workflow's scripts for the one fake (:class:`mastery.llm.fake.ScriptedChat`): replies come from a
function of the conversation, so the graph's every path (good JSON, garbage, an invented intent, an unusable
draft) can be driven deterministically without a model.

    llm = ScriptedChat(keyword_script(TINY_BEHAVIOUR))
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Script = Callable[[list[dict[str, Any]], str], str]  # a responder: (messages, system prompt) -> reply text


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
