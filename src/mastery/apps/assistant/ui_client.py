"""The UI's side of the Research Assistant API: an authenticated client, and a turn rebuilt from the stream.

    client = AssistantClient("http://127.0.0.1:8020", token)    # Authorization: Bearer <token>
    sid = client.create_session()["id"]
    turn = TurnView()
    for kind, data in client.ask(sid, "Where do kiwis grow?"):   # the API's server-sent events, as they come
        turn.apply(kind, data)                                   # route, steps, passages, thought, tokens, answer
    print(turn.text, turn.cited_passages())

:class:`TurnView` holds what a turn shows (the answer, its route and reason, the steps, the thought process,
the passages its ``[n]`` cite) whether it is built event by event from a live stream or from a stored turn of
``GET /sessions/{id}``: the UI renders both with the same code. Nothing here imports Streamlit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mastery.core.errors import MasteryError
from mastery.serving.agent_client import api_client

CITATION = re.compile(r"\[(\d{1,3})\]")


class APIError(MasteryError):
    """The API answered with an error: its status and its one-line ``error`` text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


class AssistantClient:
    """The API's routes as methods; every call sends the key. ``timeout`` bounds each read, so a streamed
    answer may take longer in total as long as events keep coming."""

    def __init__(self, base_url: str, token: str, timeout: float = 300.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = api_client(self.base_url, token, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AssistantClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise APIError(0, f"cannot reach the assistant API at {self.base_url} ({type(exc).__name__})") from None
        _raise_for(response)
        return response.json()

    # -- routes -------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return dict(self._json("GET", "/health"))

    def sessions(self) -> list[dict[str, Any]]:
        """The caller's sessions, the most recent first (raises APIError 401 on a refused key)."""
        return list(self._json("GET", "/sessions")["sessions"])

    def create_session(self, title: str | None = None) -> dict[str, Any]:
        return dict(self._json("POST", "/sessions", json={"title": title} if title else {}))

    def session(self, session_id: str) -> dict[str, Any]:
        """One session with its ``history`` (the stored turns, oldest first)."""
        return dict(self._json("GET", f"/sessions/{session_id}"))

    def documents(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/documents")["documents"])

    def upload(self, filename: str, data: bytes) -> dict[str, Any]:
        """Add a file to the knowledge base: ``{source, status, chunks_added, bytes, collection}``."""
        return dict(self._json("POST", "/documents", files={"file": (filename, data)}))

    def page(self, source: str, page: int) -> dict[str, Any]:
        """One page of a document (``page`` 0 for formats without pages): ``{source, page, text, chunks}``."""
        from urllib.parse import quote

        return dict(self._json("GET", f"/documents/{quote(source, safe='')}/pages/{int(page)}"))

    def ask(self, session_id: str, question: str, route: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """The answer's events as (kind, data), from ``turn`` to ``done``, as the server sends them."""
        import httpx
        from httpx_sse import connect_sse

        body: dict[str, Any] = {"question": question, **({"route": route} if route else {})}
        try:
            with connect_sse(self._http, "POST", f"/sessions/{session_id}/ask", json=body) as source:
                if source.response.status_code != 200:
                    source.response.read()
                    _raise_for(source.response)
                for sse in source.iter_sse():
                    yield sse.event, json.loads(sse.data) if sse.data else {}
        except httpx.HTTPError as exc:
            raise APIError(0, f"the answer stream from {self.base_url} broke off ({type(exc).__name__})") from None


def _raise_for(response: Any) -> None:
    if response.status_code < 400:
        return
    try:
        message = str(response.json().get("error") or response.text)
    except ValueError:
        message = response.text[:200]
    raise APIError(response.status_code, message)


@dataclass
class TurnView:
    """One question and what the assistant answered, as the UI shows it."""

    question: str = ""
    text: str = ""  # the answer so far (streamed tokens), then the checked final answer
    route: dict[str, Any] | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    passages: list[dict[str, Any]] = field(default_factory=list)
    thought: str = ""
    citations: list[dict[str, Any]] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    refused: bool = False
    revised: bool = False
    error: str | None = None
    done: bool = False
    turn_id: str = ""
    _draft_step: str = "draft"
    _thought_step: str = ""

    def apply(self, kind: str, data: dict[str, Any]) -> None:
        """Fold one event of the stream into the view (unknown kinds are ignored: the contract may grow)."""
        if kind == "turn":
            self.turn_id = str(data.get("turn_id", ""))
        elif kind == "route":
            self.route = data
        elif kind == "step":
            self.steps.append(data)
        elif kind == "passages":
            self.passages = list(data.get("passages", []))
        elif kind == "thought":
            step = str(data.get("step", ""))
            if step != self._thought_step:  # a new step's thinking starts a new paragraph, named
                self.thought += ("\n\n" if self.thought else "") + (f"({step}) " if step else "")
                self._thought_step = step
            self.thought += str(data.get("text", ""))
        elif kind == "token":
            step = str(data.get("step", "draft"))
            if step != self._draft_step:  # a revision's tokens replace the draft's
                self.text, self._draft_step = "", step
            self.text += str(data.get("text", ""))
        elif kind == "answer":
            self.text = str(data.get("text", ""))
            self.citations = list(data.get("citations", []))
            self.unsupported = list(data.get("unsupported", []))
            self.refused, self.revised = bool(data.get("refused")), bool(data.get("revised"))
        elif kind == "error":
            self.error = str(data.get("message", "the assistant failed"))
        elif kind == "done":
            self.done = True

    @classmethod
    def from_stored(cls, turn: dict[str, Any]) -> TurnView:
        """A turn of ``GET /sessions/{id}`` (the API's TurnView)."""
        return cls(question=turn.get("question", ""), text=turn.get("answer", ""), route=turn.get("route"),
                   steps=list(turn.get("steps", [])), passages=list(turn.get("passages", [])),
                   thought=turn.get("thought", ""), citations=list(turn.get("citations", [])),
                   unsupported=list(turn.get("unsupported", [])), refused=bool(turn.get("refused")),
                   revised=bool(turn.get("revised")), error=turn.get("error"),
                   done=turn.get("status") != "running", turn_id=turn.get("id", ""))

    def cited_passages(self) -> list[dict[str, Any]]:
        """The passages the answer's ``[n]`` point to, in the order first cited (an ``[n]`` with no passage
        ``n`` is skipped: the citation check flags it)."""
        by_n = {int(p["n"]): p for p in self.passages if "n" in p}
        seen: list[int] = []
        for match in CITATION.finditer(self.text):
            n = int(match.group(1))
            if n in by_n and n not in seen:
                seen.append(n)
        return [by_n[n] for n in seen]

    def finished_steps(self) -> list[dict[str, Any]]:
        """Each step once, with its result: the "end" events (a step still running shows its "start")."""
        ended = {s.get("name") for s in self.steps if s.get("status") == "end"}
        return [s for s in self.steps if s.get("status") == "end" or s.get("name") not in ended]


def citation_label(passage: dict[str, Any]) -> str:
    """``[1] kiwis.pdf · p. 2`` (no page for formats without pages, the host for a web result)."""
    source = str(passage.get("source", "?"))
    if passage.get("kind") == "web":
        from urllib.parse import urlparse

        source = urlparse(source).netloc or source
    page = passage.get("page")
    return f"[{passage.get('n')}] {source}" + (f" · p. {page}" if page else "")


def session_label(title: str, turns: int) -> str:
    """How the sidebar names a session: its title (its first question, by default) and how many questions."""
    return f"{title[:48]} ({turns})"
