"""The crew's script for the one fake (:class:`mastery.llm.fake.ScriptedChat`): deterministic, instant, and
able to misbehave on purpose.

    llm = ScriptedChat(crew_script(verdicts=("REVISE", "APPROVE")))

The lab's tiny preset and the tests run the real CrewAI machinery against it. It recognises the agent from
CrewAI's system prompt ("You are Researcher. ...") and answers like a small model would:

- researcher: first a tool call written as JSON in the content (what Qwen-0.5B does), then notes that cite
  the first source id it saw;
- summariser: plain prose without CrewAI's "Final Answer:" marker (the adapter must repair it);
- critic: the next verdict from ``verdicts`` (then APPROVE); as editor, a rewritten report.

``mode="garbage"`` answers every call with text that is neither a tool call nor an answer; ``mode="empty"``
with nothing.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from typing import Any, Literal

from mastery.core.errors import ConfigError
from mastery.llm.fake import Responder

_ID = re.compile(r"\[([^\]\n]{1,40})\]")


def crew_script(verdicts: Sequence[str] = ("APPROVE",), mode: Literal["normal", "garbage", "empty"] = "normal"
                ) -> Responder:
    """A responder for a ScriptedChat that plays the crew's three agents (one instance per crew run: the
    critic's verdicts are used up in order)."""
    if mode not in ("normal", "garbage", "empty"):
        raise ConfigError(f"mode must be normal, garbage or empty, got {mode!r}")
    verdicts = list(verdicts)
    reviews = [0]
    lock = threading.Lock()

    def respond(messages: list[dict[str, Any]], system: str) -> str:
        if mode == "empty":
            return ""
        if mode == "garbage":
            return "}}{{ ??? lorem ipsum <tool>"
        prompt = "\n".join([*([system] if system else []), *(str(m.get("content") or "") for m in messages)])
        turns = sum(m.get("role") == "assistant" for m in messages)
        head = prompt[:200]
        first_id = next((m for m in _ID.findall(prompt.split("Sources:", 1)[-1]) if re.match(r"T\d{4}", m)),
                        "T0000")
        if "You are Researcher" in head:
            if turns == 0:  # CrewAI appends the tool's observation as an assistant turn
                topic = re.search(r"Topic: (.+)", prompt)
                query = (topic.group(1) if topic else "persistence")[:60]
                return json.dumps({"name": "kb_search", "arguments": {"query": query}})
            seen = re.search(r"Observation:\s*\[([^\]]+)\]", prompt.rsplit("Current Task:", 1)[-1])
            return f"Final Answer: The search found technique [{seen.group(1) if seen else first_id}]."
        if "You are Summariser" in head:
            return f"Adversaries abuse this technique [{first_id}]. Defenders watch for it in logs."
        if "You are Critic" in head:
            if "Reviewer notes:" in prompt:
                return f"Final Answer: Adversaries abuse this technique [{first_id}], as the source describes. " \
                       "Defenders detect it by monitoring process and task creation."
            with lock:
                verdict = verdicts[reviews[0]] if reviews[0] < len(verdicts) else "APPROVE"
                reviews[0] += 1
            return f"VERDICT: {verdict}" + ("" if verdict == "APPROVE" else "\nAdd how it is detected.")
        return "Final Answer: ok"

    return respond
