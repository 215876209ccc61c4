"""The Research Assistant API's request and response bodies (pydantic), as the OpenAPI page shows them.

Requests are strict (unknown fields refused, lengths bounded), so a 422 names the field a client got wrong.
Responses carry the brain's own event data (:mod:`mastery.apps.assistant.events`) as plain JSON.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mastery.serving.schemas import ErrorResponse, FieldError

MAX_QUESTION_CHARS = 2000
MAX_TITLE_CHARS = 200
SESSION_ID_PATTERN = r"^[0-9a-f]{32}$"
TurnStatus = Literal["running", "done", "error", "interrupted"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class SessionCreate(_Strict):
    title: str | None = Field(default=None, min_length=1, max_length=MAX_TITLE_CHARS,
                              description="a name for the session (default: its first question)")


class AskRequest(_Strict):
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS, description="what to ask")
    route: Literal["kb", "web", "direct"] | None = Field(
        default=None, description="force a route (knowledge base, web search, direct answer); "
                                  "default: the router decides")


class TurnView(BaseModel):
    """One question of a session and what the assistant answered."""

    id: str
    session_id: str
    question: str
    status: TurnStatus
    answer: str = ""
    citations: list[dict[str, Any]] = Field(default_factory=list, description="Citation dicts: n, sentence, "
                                                                              "supported, support_score")
    unsupported: list[str] = Field(default_factory=list, description="sentences the citation check flagged")
    refused: bool = False
    revised: bool = False
    route: dict[str, Any] | None = Field(default=None, description="the route event: route, reason, "
                                                                    "decided_by, web_available")
    passages: list[dict[str, Any]] = Field(default_factory=list, description="Passage dicts: n, text, source, "
                                                                            "page, score, kind")
    steps: list[dict[str, Any]] = Field(default_factory=list, description="step events: name, status, detail")
    thought: str = Field(default="", description="a reasoning model's <think> part, never in the answer")
    usage: list[dict[str, Any]] = Field(default_factory=list, description="LLMCall dicts of the run")
    error: str | None = None
    created_at: float
    finished_at: float | None = None
    request_id: str = ""


class SessionView(BaseModel):
    id: str
    title: str
    created_at: float
    updated_at: float
    turns: int


class SessionDetail(SessionView):
    history: list[TurnView]


class SessionList(BaseModel):
    sessions: list[SessionView]


class DocumentView(BaseModel):
    source: str = Field(description="the file name citations show")
    format: str
    pages: int = Field(description="pages with text (1 for formats without pages)")
    chunks: int


class DocumentList(BaseModel):
    collection: str
    documents: list[DocumentView]


class UploadResult(BaseModel):
    source: str
    status: Literal["added", "replaced", "unchanged"]
    chunks_added: int = Field(description="chunks written to the knowledge base by this upload")
    bytes: int
    collection: str


class PageView(BaseModel):
    """One page of a stored document, rebuilt from its chunks: what a citation opens."""

    source: str
    page: int = Field(description="1-based PDF page; 0 for formats without pages")
    text: str
    chunks: int


class LLMHealth(BaseModel):
    url: str | None
    reachable: bool | None = Field(description="the LLM server answered its health check (None: not checked)")


class KBHealth(BaseModel):
    collection: str
    chunks: int
    sources: int
    error: str | None = None


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    llm: LLMHealth
    kb: KBHealth
    guards: list[str] = Field(description="the guard checks that run: input, output, or none")
    running: int = Field(description="questions being answered now")


__all__ = ["MAX_QUESTION_CHARS", "AskRequest", "DocumentList", "DocumentView", "ErrorResponse", "FieldError",
           "Health", "KBHealth", "LLMHealth", "PageView", "SessionCreate", "SessionDetail", "SessionList",
           "SessionView", "TurnView", "UploadResult"]
