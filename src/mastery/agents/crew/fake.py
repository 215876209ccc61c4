"""A scripted stand-in for the LLM: deterministic, instant, and able to misbehave on purpose.

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
from collections.abc import Sequence
from typing import Any

from mastery.llm.client import Completion

_ID = re.compile(r"\[([^\]\n]{1,40})\]")


def _text(messages: Any) -> str:
    return messages if isinstance(messages, str) else "\n".join(str(m.get("content") or "") for m in messages)


class ScriptedChat:
    def __init__(self, verdicts: Sequence[str] = ("APPROVE",), mode: str = "normal") -> None:
        if mode not in ("normal", "garbage", "empty"):
            raise ValueError(f"mode must be normal, garbage or empty, got {mode!r}")
        self.verdicts, self.mode = list(verdicts), mode
        self.model = "scripted"
        self.calls: list[dict[str, Any]] = []
        self._reviews = 0

    def chat(self, messages: Any, *, system: str | None = None, max_tokens: int = 256, temperature: float = 0.0,
             seed: int | None = 0, stop: list[str] | None = None, extra_body: dict[str, Any] | None = None,
             tools: Any = None) -> Completion:
        prompt = _text(messages)
        turns = 0 if isinstance(messages, str) else sum(m.get("role") == "assistant" for m in messages)
        reply = self._reply(prompt, turns)
        self.calls.append({"prompt": prompt, "reply": reply})
        # token counts: words, so the numbers are deterministic and of a plausible size
        return Completion(text=reply, prompt_tokens=len(prompt.split()), completion_tokens=len(reply.split()),
                          latency_s=0.0, time_to_first_token_s=None, model=self.model, finish_reason="stop")

    def _reply(self, prompt: str, turns: int) -> str:
        if self.mode == "empty":
            return ""
        if self.mode == "garbage":
            return "}}{{ ??? lorem ipsum <tool>"
        head = prompt[:200]
        first_id = next((m for m in _ID.findall(prompt.split("Sources:", 1)[-1]) if re.match(r"T\d{4}", m)), "T0000")
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
            verdict = self.verdicts[self._reviews] if self._reviews < len(self.verdicts) else "APPROVE"
            self._reviews += 1
            return f"VERDICT: {verdict}" + ("" if verdict == "APPROVE" else "\nAdd how it is detected.")
        return "Final Answer: ok"
