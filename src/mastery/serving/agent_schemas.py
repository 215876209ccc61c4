"""Request and response models of the agent API (pydantic v2).

The request model is strict and closed (extra fields are refused), so the OpenAPI schema the fuzzer reads
and the validator agree: anything the schema allows is a run the service will start.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from mastery.serving.schemas import ErrorResponse, FieldError, whole_number

MAX_QUESTION_CHARS = 2000
MAX_STEPS = 12
MAX_TIMEOUT_S = 600.0
MAX_KEY_CHARS = 200
# Why so few regex patterns: JSON Schema patterns are checked by Python's `re` in the fuzzer and by Rust's regex
# in pydantic-core, and the two disagree at the edges (`$` before a final newline, which characters `\s` means).
# A mismatch turns a request the schema allows into a 422. Explicit character classes behave the same in both.
NOT_BLANK = r"[^ \t\n\r\f\v]"

RunState = Literal["queued", "running", "answered", "max_steps", "gave_up", "failed", "timed_out", "interrupted"]
FINAL_STATES = frozenset({"answered", "max_steps", "gave_up", "failed", "timed_out", "interrupted"})

EXAMPLE_RUN = {"question": "What is 17 * 23?", "max_steps": 4, "tools": ["calculator"], "timeout_s": 60}


class RunRequestBase(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_RUN]})

    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS, pattern=NOT_BLANK,
                          description="what to ask the agent (must contain a non-space character)")
    # bounds before the whole-number validator, inside the union: elsewhere they reach the OpenAPI schema as
    # unknown "ge"/"le" keys and the fuzzer sends 237 as valid
    max_steps: Annotated[int, Field(ge=1, le=MAX_STEPS, strict=True), BeforeValidator(whole_number)] | None = Field(
        default=None, description="agent turns allowed (default: the server's)")
    timeout_s: float | None = Field(default=None, ge=1.0, le=MAX_TIMEOUT_S, allow_inf_nan=False, strict=True,
                                    description="wall-clock limit of the whole run in seconds (default: the "
                                                "server's); past it the run ends as timed_out")


def run_request_model(tool_names: list[str]) -> type[RunRequestBase]:
    """The request model for this server's tools: ``tools`` is an enum of their names, so a valid request
    never names a tool the server lacks."""
    names = Enum("ToolName", {n: n for n in tool_names}, type=str)  # type: ignore[misc]
    return create_model(
        "RunRequest", __base__=RunRequestBase,
        tools=(list[names] | None, Field(default=None, min_length=1, max_length=len(tool_names),  # type: ignore
                                         description="a subset of the server's tools (default: all)")))


class RunCreated(BaseModel):
    id: str
    status: RunState
    created: bool = Field(description="false: an earlier request with this Idempotency-Key made the run")
    links: dict[str, str]
    request_id: str


class StepView(BaseModel):
    seq: int = Field(description="1, 2, ... in the order the steps happened (the SSE event id)")
    index: int
    kind: str
    thought: str = ""
    action: str | None = None
    action_input: dict[str, Any] | None = None
    observation: str | None = None
    answer: str | None = None
    native: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_latency_s: float = 0.0
    tool_latency_s: float = 0.0
    attempts: int = 1
    error: str | None = None


class CostView(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    usd: float = 0.0
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)


class RunView(BaseModel):
    id: str
    status: RunState
    question: str
    answer: str | None = None
    reason: str = ""
    steps: list[StepView] = Field(default_factory=list)
    max_steps: int
    timeout_s: float
    tools: list[str]
    backend: str = Field("", description="the LLM backend that answered last (a fallback's name after a failover)")
    llm_retries: int = 0
    tool_retries: int = 0
    fallbacks: int = Field(0, description="LLM calls answered by a backend other than the first")
    errors: list[str] = Field(default_factory=list, description="every failed LLM call and tool error, in order")
    cost: CostView = Field(default_factory=CostView)
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    wall_s: float | None = None
    request_id: str = ""
    idempotency_key: str | None = None
    owner: str = Field("", description="the API key owner who started the run (only they can read it)")


class Health(BaseModel):
    status: Literal["ok"]
    workers: int
    queued: int
    running: int
    queue_limit: int
    backends: list[str]
    tools: list[str]


class Pricing(BaseModel):
    currency: str
    unit: str
    source: str
    default: dict[str, float]
    models: dict[str, dict[str, float]]
    backends: dict[str, str] = Field(description="backend name -> the model it is priced as")


__all__ = ["FINAL_STATES", "CostView", "ErrorResponse", "FieldError", "Health", "Pricing", "RunCreated",
           "RunRequestBase", "RunState", "RunView", "StepView", "run_request_model"]
