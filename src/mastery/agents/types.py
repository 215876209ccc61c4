"""The agent vocabulary every agent part shares: tools, steps and results (the LLM an agent talks to is a
:class:`mastery.llm.types.ChatModel`).

The ReAct loop (:mod:`mastery.agents.react`), the resilient wrappers (:mod:`mastery.agents.resilience`),
the agent API (:mod:`mastery.serving.agent_api`) and the capstones all speak these types, so a trace
recorded by one is read by the others without conversion.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from mastery.core.errors import MasteryError

StepKind = Literal["tool", "final", "format_error", "tool_error", "give_up"]
RunStatus = Literal["answered", "max_steps", "gave_up", "failed", "timed_out"]


class ToolError(MasteryError):
    """A tool could not do what was asked (bad arguments, a failure, a time or memory limit).

    The agent shows the message to the model as the observation, so it should say what to change."""


class AgentError(MasteryError):
    """The agent cannot run at all (no tools, a bad setting); a run that merely fails is an AgentResult."""


@dataclass(frozen=True)
class Tool:
    """A function the model may call: ``fn(arguments) -> observation text``.

    ``parameters`` is a JSON schema object (the OpenAI ``tools`` format); ``timeout_s`` bounds one call
    (the runner enforces it); ``idempotent`` says a retry after a failure is safe."""

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[[dict[str, Any]], str]
    timeout_s: float = 30.0
    idempotent: bool = True

    def openai_schema(self) -> dict[str, Any]:
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


@dataclass
class Step:
    """One turn of an agent: what the model said, which tool it called with what, and what came back."""

    index: int
    kind: StepKind
    thought: str = ""
    action: str | None = None  # tool name (None for a final answer or a format error)
    action_input: dict[str, Any] | None = None
    observation: str | None = None
    answer: str | None = None  # kind == "final"
    raw: str = ""  # the model's text as received, for debugging parsers
    native: bool = False  # the call came through OpenAI ``tool_calls``, not parsed text
    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_latency_s: float = 0.0
    tool_latency_s: float = 0.0
    attempts: int = 1  # LLM calls this step took (a format retry makes it 2)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AgentResult:
    question: str
    status: RunStatus
    answer: str | None
    steps: list[Step] = field(default_factory=list)
    wall_s: float = 0.0
    backend: str = ""  # which LLM answered (the fallback's name when the primary failed)
    reason: str = ""  # for any status but "answered": why the run stopped, in one line

    @property
    def prompt_tokens(self) -> int:
        return sum(s.prompt_tokens for s in self.steps)

    @property
    def completion_tokens(self) -> int:
        return sum(s.completion_tokens for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens)
        return out


StepCallback = Callable[[Step], None]
