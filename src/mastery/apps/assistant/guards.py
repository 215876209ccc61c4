"""Where the guard layer plugs into the Research Assistant: one object, checked before and after the LLM.

The guards themselves (prompt-injection and PII screens, output filters) come with L38; this module is the
socket they plug into, so adding them later changes no route and no graph node::

    guards = Guards(input=screen_prompt, output=screen_answer)        # each (text) -> text, or raise GuardRefusal
    chat = guards.wrap_chat(LLMClient(...))                           # every LLM call the brain makes is screened
    brain = ResearchBrain(chat, ..., input_guard=guards.check_input, output_guard=guards.check_output)
    create_app(AssistantAPISettings(brain=brain, guards=guards, guards_in_brain=True, ...))

:func:`mastery.apps.assistant.api.default_settings` wires exactly this. Three places see the text, all through
this one object:

- the question, before any LLM call: the ResearchBrain answers a refused question with a refusal (kept in the
  history and in its memory); for a brain that does not screen (``guards_in_brain=False``) the API does, and
  answers 400 with the guard's reason;
- every prompt the brain sends to the LLM and every completion it gets back, whatever node makes the call
  (router, draft, critic), because :meth:`Guards.wrap_chat` wraps the ChatModel the brain is built on;
- the final answer, before it is streamed, stored or returned: a refusal replaces it with the guard's reason
  and marks it ``refused`` and ``guarded`` (the brain does this, or the API for a brain that does not).

The ResearchBrain also drops each retrieved passage its ``passage`` guard refuses (retrieved text is data), and
:class:`GuardedChat` applies ``prompt``/``completion`` when they are given (else the input and output guards).
The guard layer itself is :func:`mastery.security.guardrails.build_guards`.

``MASTERY_ASSISTANT_GUARDS=false`` (or ``enabled=False``) turns every check off without unplugging them.
A guard returns the text to use (unchanged, or redacted) or raises :class:`GuardRefusal`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mastery.core.errors import MasteryError

log = logging.getLogger(__name__)

Guard = Callable[[str], str]  # the text to use, or raise GuardRefusal


class GuardRefusal(MasteryError):
    """A guard blocked a text; the message says why (shown to the user)."""


@dataclass(frozen=True)
class Guards:
    """Optional input and output guards; ``enabled`` switches both (default: ``MASTERY_ASSISTANT_GUARDS``)."""

    input: Guard | None = None
    output: Guard | None = None
    enabled: bool = True
    # Each retrieved passage, before the prompt is built (raise: the brain drops it; the ResearchBrain only).
    passage: Guard | None = None
    # What GuardedChat applies to every prompt and completion; None: the input and output guards. The guard
    # layer (mastery.security.guardrails) passes a light screen: the question, passages and answer have their own.
    prompt: Guard | None = None
    completion: Guard | None = None
    # A new screen for one answer's streamed pieces (``feed(piece) -> text to send``, ``flush() -> the rest``):
    # the guard layer passes a PII redactor, so a card number never reaches the client even as tokens.
    stream: Callable[[], Any] | None = None

    @classmethod
    def from_settings(cls, input: Guard | None = None, output: Guard | None = None) -> Guards:
        from mastery.core.settings import get_settings

        return cls(input=input, output=output, enabled=get_settings().assistant_guards)

    @property
    def active(self) -> list[str]:
        """Which checks run: ``["input", "output"]``, some of them, or none."""
        if not self.enabled:
            return []
        return [name for name in ("input", "output", "passage") if getattr(self, name) is not None]

    def new_stream(self) -> Any | None:
        """A fresh screen for one answer's token stream, or None when no stream screen is active."""
        return self.stream() if self.enabled and self.stream is not None else None

    def check_input(self, text: str) -> str:
        return self.input(text) if self.enabled and self.input is not None else text

    def check_output(self, text: str) -> str:
        return self.output(text) if self.enabled and self.output is not None else text

    def check_passage(self, text: str) -> str:
        return self.passage(text) if self.enabled and self.passage is not None else text

    def check_prompt(self, text: str) -> str:
        return self.prompt(text) if self.enabled and self.prompt is not None else self.check_input(text)

    def check_completion(self, text: str) -> str:
        return self.completion(text) if self.enabled and self.completion is not None else self.check_output(text)

    def wrap_chat(self, chat: Any) -> Any:
        """``chat`` itself when no guard is active, else a :class:`GuardedChat` around it."""
        return GuardedChat(chat, self) if self.active else chat


class GuardedChat:
    """A ChatModel (and StreamingChatModel) whose prompts pass the input guard and whose completions pass the
    output guard. Everything else (``model``, ``calls``, ``server``...) is the wrapped model's."""

    def __init__(self, chat: Any, guards: Guards) -> None:
        self._chat, self._guards = chat, guards

    def __getattr__(self, name: str) -> Any:
        return getattr(self._chat, name)

    def _screen(self, messages: Any, system: str | None) -> tuple[Any, str | None]:
        if isinstance(messages, str):
            messages = self._guards.check_prompt(messages)
        else:
            messages = [{**m, "content": self._guards.check_prompt(m["content"])}
                        if m.get("role") == "user" and isinstance(m.get("content"), str) else m for m in messages]
        return messages, system

    def chat(self, messages: Any, *, system: str | None = None, **options: Any) -> Any:
        messages, system = self._screen(messages, system)
        completion = self._chat.chat(messages, system=system, **options)
        return dataclasses.replace(completion, text=self._guards.check_completion(completion.text))

    def stream(self, messages: Any, *, system: str | None = None, **options: Any) -> Any:
        # The pieces reach the user as they come; the output guard sees the whole text when it is complete
        # (the API screens the final answer again before storing or returning it).
        messages, system = self._screen(messages, system)
        return self._chat.stream(messages, system=system, **options)
