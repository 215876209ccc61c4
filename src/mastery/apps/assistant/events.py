"""What the Research Assistant's brain emits while it answers: the one contract between the graph, the API
(server-sent events), the UI and the monitoring.

    for event in brain.answer(Question(text="What is libtasn1?", session_id="s1", owner="alice")):
        print(event.kind, event.data)

A run emits, in this order (some may be absent; ``step`` and ``thought`` events come between the others as
the graph's nodes run, and a revision sends ``thought``/``token`` events again, with ``step`` "revise"):

- ``route``     ``{"route": "kb"|"web"|"direct", "reason": str, "decided_by": "llm"|"rule"|"user",
                "web_available": bool, "attempts": int}``: "user" when ``Question.route_hint`` chose it;
                ``attempts`` counts the router's LLM calls
- ``step``      ``{"name": str, "status": "start"|"end", "detail": str}``: a graph node starting or ending
                (route, retrieve, draft, check, critic, revise), shown as the visible reasoning
- ``passages``  ``{"passages": [Passage as dict, ...]}``: what the answer may cite, numbered from 1; with
                ``"dropped": [{"source", "page", "reason"}]`` when the passage guard removed some (retrieved
                text that carries instructions never reaches the prompt)
- ``thought``   ``{"text": str, "step": str}``: a piece of a reasoning model's ``<think>`` part (concatenate the
                pieces of one step: "route", "draft", "critic", "revise"), never part of the answer
- ``token``     ``{"text": str, "step": "draft"|"revise"}``: a piece of the draft answer as the model writes it;
                pieces of "revise" replace the draft's
- ``answer``    ``{"text": str, "citations": [Citation as dict], "unsupported": [str], "refused": bool,
                "revised": bool, "route": str}``: the final answer after the citation check and the critic;
                ``"guarded": true`` added when a guard refused the question or withheld the answer,
                ``"redacted": true`` when the output guard rewrote it (the streamed tokens showed the raw draft;
                this text replaces them)
- ``usage``     ``{"calls": [LLMCall as dict, ...]}``: every LLM call of the run (monitoring)
- ``error``     ``{"message": str}``: the run failed; no ``answer`` follows

Events are plain data (JSON-serialisable ``data``) so the API can send them as they come and a client can
rebuild the answer from the stream alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

EventKind = Literal["route", "step", "passages", "thought", "token", "answer", "usage", "error"]
Route = Literal["kb", "web", "direct"]


@dataclass(frozen=True)
class Event:
    kind: EventKind
    data: dict[str, Any]


@dataclass(frozen=True)
class Passage:
    """A numbered passage the answer may cite as ``[n]``: a knowledge-base chunk or a web result."""

    n: int
    text: str
    source: str  # file name, or URL for a web result
    page: int | None = None  # 1-based PDF page, when known
    score: float | None = None
    kind: Literal["kb", "web"] = "kb"


@dataclass(frozen=True)
class Citation:
    """A ``[n]`` in the answer, and whether the check found passage ``n`` supports its sentence."""

    n: int
    sentence: str
    supported: bool
    support_score: float | None = None


@dataclass(frozen=True)
class LLMCall:
    """One LLM call of a run, for monitoring: tokens, time to first token, latency, model and cost."""

    purpose: str  # "route", "draft", "critic", ...
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    time_to_first_token_s: float | None = None
    cost_usd: float = 0.0


@dataclass(frozen=True)
class Question:
    text: str
    session_id: str
    owner: str
    route_hint: Route | None = None  # forces a route (tests, UI toggle); None lets the router decide
    extra: dict[str, Any] = field(default_factory=dict)


class Brain(Protocol):
    """The graph behind the API. ``answer`` yields events as they happen (the API streams them)."""

    def answer(self, question: Question) -> Iterator[Event]: ...


def event(kind: EventKind, **data: Any) -> Event:
    """An event whose dataclass values (Passage, Citation, LLMCall) are turned into plain dicts."""
    return Event(kind, {k: _plain(v) for k, v in data.items()})


def _plain(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
