"""The chat contract: what every LLM backend, wrapper and fake speaks, and what a call gives back.

    def summarise(llm: ChatModel, text: str) -> str:
        return llm.chat([{"role": "user", "content": text}], system="Be brief.", max_tokens=64).text

:class:`mastery.llm.client.LLMClient` (any OpenAI-compatible server), the resilient wrappers of
:mod:`mastery.agents.resilience` and the one fake, :class:`mastery.llm.fake.ScriptedChat`, all satisfy
:class:`ChatModel`; the client and the fake also stream (:class:`StreamingChatModel`). A call returns a
:class:`Completion`: the text, the token counts, the timings and the native tool calls, if any.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict

Messages = str | Sequence[dict[str, Any]]  # a bare prompt, or OpenAI-style turns (tool turns carry tool_calls)


class ToolCall(TypedDict):
    """A native (OpenAI ``tool_calls``) function call as the server parsed it.

    ``arguments`` is the raw JSON text the model wrote: parsing it is the caller's business, small models err."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float  # request sent -> last byte received
    time_to_first_token_s: float | None  # streaming only: request sent -> first text chunk
    model: str
    finish_reason: str | None = None  # "stop", "length" (max_tokens reached) or "tool_calls"
    stream: bool = False
    usage_reported: bool = True  # False: the server sent no usage, token counts are estimates
    server_timings: dict[str, float] | None = None  # llama.cpp's own prompt/predicted ms, when sent
    tool_calls: tuple[ToolCall, ...] = ()  # when ``tools=`` were given and the model called one natively

    @property
    def prompt_tokens_per_s(self) -> float | None:
        """Prompt processing speed seen by the caller: prompt tokens / time to first token."""
        if not self.time_to_first_token_s or not self.prompt_tokens:
            return None
        return self.prompt_tokens / self.time_to_first_token_s

    @property
    def generation_tokens_per_s(self) -> float | None:
        """Generation speed: tokens after the first / time after the first (whole call when not streamed)."""
        if self.time_to_first_token_s is not None and self.completion_tokens > 1:
            span = self.latency_s - self.time_to_first_token_s
            return (self.completion_tokens - 1) / span if span > 0 else None
        return self.completion_tokens / self.latency_s if self.latency_s > 0 and self.completion_tokens else None


class ChatStream:
    """Iterate to get text pieces as they arrive; afterwards ``completion`` holds the whole call's record.

    The producer of ``pieces`` sets ``completion`` when it is exhausted."""

    def __init__(self, pieces: Iterator[str]) -> None:
        self._pieces = pieces
        self.completion: Completion | None = None
        self._parts: list[str] = []

    def __iter__(self) -> Iterator[str]:
        for piece in self._pieces:
            self._parts.append(piece)
            yield piece

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def read(self) -> Completion:
        """Drain the stream (if not yet) and return its Completion."""
        for _ in self:
            pass
        assert self.completion is not None
        return self.completion


class ChatModel(Protocol):
    """What an agent, a workflow or a crew needs of an LLM: one completion per call."""

    def chat(self, messages: Messages, *, system: str | None = None, max_tokens: int = 256,
             temperature: float = 0.0, seed: int | None = 0, stop: list[str] | None = None,
             extra_body: dict[str, Any] | None = None, tools: Sequence[dict[str, Any]] | None = None) -> Completion:
        """``tools`` (OpenAI function schemas) asks for native function calling: the calls come back in
        ``Completion.tool_calls``."""
        ...


class StreamingChatModel(ChatModel, Protocol):
    """A ChatModel that can also hand out the answer piece by piece (RAG streams its answers)."""

    def stream(self, messages: Messages, *, system: str | None = None, max_tokens: int = 256,
               temperature: float = 0.0, seed: int | None = 0, stop: list[str] | None = None,
               extra_body: dict[str, Any] | None = None) -> ChatStream:
        ...
