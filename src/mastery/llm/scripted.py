"""A scripted OpenAI-compatible chat server for tests and benchmarks, with faults on demand.

    scripted = ScriptedLLM(["calling a tool ...", "Final Answer: 42"], model="scripted")
    with ServerThread(create_scripted_app(scripted)) as server:      # mastery.serving.server
        LLMClient(base_url=server.url + "/v1", model="scripted").chat("hi")
    scripted.set_faults([Fault("http_503", first=2)])                 # the next two calls fail with 503

Replies are chosen by the conversation's turn, not by arrival order: turn = the number of assistant
messages in the request, so concurrent agent runs each follow the script from its start. A reply is a
string (the message content) or ``{"content": ..., "tool_calls": [{"name", "arguments"}]}``; a callable
``responder(messages) -> reply`` replaces the list. Faults (:class:`Fault`) pick calls by their arrival
number: ``delay`` (answer late, to force client timeouts), ``http_500``/``http_503`` (an error body), and
``drop`` (headers, half a body, then the connection closes).
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint signatures at runtime.
import asyncio
import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger(__name__)

FaultKind = Literal["delay", "http_500", "http_503", "drop"]
Reply = str | dict[str, Any]


@dataclass(frozen=True)
class Fault:
    """Which calls fail how. Calls are numbered 1, 2, ... from the last ``set_faults``.

    ``first``: calls 1..first; ``every``: calls every, 2*every, ... (a fraction 1/every of them);
    neither: every call. ``delay_s`` is how late a ``delay`` fault answers."""

    kind: FaultKind
    first: int | None = None
    every: int | None = None
    delay_s: float = 2.0

    def applies(self, n: int) -> bool:
        if self.first is not None:
            return n <= self.first
        if self.every is not None:
            return n % self.every == 0
        return True


def _turn(messages: Sequence[dict[str, Any]]) -> int:
    turns = sum(1 for m in messages if m.get("role") == "assistant")
    if turns:
        return turns
    # an agent that keeps the whole transcript in one user message: count its observations instead
    return sum(str(m.get("content") or "").count("Observation:") for m in messages if m.get("role") == "user")


class ScriptedLLM:
    """The script, the faults and a record of the calls, shared by the app and the test that drives it."""

    def __init__(self, script: Sequence[Reply] | Callable[[list[dict[str, Any]]], Reply] = ("OK",), *,
                 model: str = "scripted", faults: Sequence[Fault] = ()) -> None:
        self.script, self.model = script, model
        self._lock = threading.Lock()
        self.set_faults(faults)

    def set_faults(self, faults: Sequence[Fault]) -> None:
        with self._lock:
            self.faults = list(faults)
            self.calls = 0
            self.outcomes: Counter[str] = Counter()  # "ok", or the fault kind

    def next_call(self) -> tuple[int, Fault | None]:
        with self._lock:
            self.calls += 1
            n = self.calls
            fault = next((f for f in self.faults if f.applies(n)), None)
            self.outcomes[fault.kind if fault else "ok"] += 1
        return n, fault

    def reply(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        if callable(self.script):
            raw = self.script(messages)
        else:
            raw = self.script[min(_turn(messages), len(self.script) - 1)]
        return {"content": raw} if isinstance(raw, str) else dict(raw)


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)  # a stable stand-in for a tokenizer: about 4 characters a token


def create_scripted_app(scripted: ScriptedLLM) -> Any:
    """The FastAPI app: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health``."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    app = FastAPI(title="scripted LLM", docs_url=None, redoc_url=None)
    app.state.scripted = scripted

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": scripted.model, "object": "model", "owned_by": "mastery"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        n, fault = scripted.next_call()
        if fault is not None and fault.kind in ("http_500", "http_503"):
            status = int(fault.kind[-3:])
            return JSONResponse({"error": {"message": f"scripted fault on call {n}", "type": "server_error",
                                           "code": status}}, status_code=status)
        if fault is not None and fault.kind == "delay":
            await asyncio.sleep(fault.delay_s)  # the client has usually given up by now
        if fault is not None and fault.kind == "drop":
            return _dropped()
        messages = list(body.get("messages") or [])
        reply = scripted.reply(messages)
        content = reply.get("content")
        calls = [{"id": f"call_{n}_{i}", "type": "function",
                  "function": {"name": c["name"], "arguments": c["arguments"] if isinstance(c["arguments"], str)
                               else json.dumps(c["arguments"])}}
                 for i, c in enumerate(reply.get("tool_calls") or [])]
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if calls:
            message["tool_calls"] = calls
        prompt = json.dumps(messages)
        completion_tokens = _tokens(str(content or "") + json.dumps(calls))
        return {"id": f"chatcmpl-{n}", "object": "chat.completion", "created": 0, "model": scripted.model,
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
                "usage": {"prompt_tokens": _tokens(prompt), "completion_tokens": completion_tokens,
                          "total_tokens": _tokens(prompt) + completion_tokens}}

    return app


def _dropped() -> Any:
    """A response that starts, sends half a JSON body, then fails: uvicorn closes the connection and the
    client sees it drop mid-answer (what a crashing or restarting server looks like)."""
    from starlette.responses import Response

    class Dropped(Response):
        async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": b'{"id": "chatcmpl-dropped", "choi',
                        "more_body": True})
            raise ConnectionAbortedError("scripted fault: connection dropped mid-response")

    return Dropped()


class QuestionScript:
    """A responder that plays one script per question: the first key found in the conversation's first user
    message picks the list of replies (by turn); ``default`` plays otherwise. Lets one server drive several
    scenarios at once (``ScriptedLLM(QuestionScript({...}))``)."""

    def __init__(self, plans: dict[str, Sequence[Reply]], default: Sequence[Reply] = ("I don't know.",)) -> None:
        self.plans, self.default = plans, default

    def __call__(self, messages: list[dict[str, Any]]) -> Reply:
        first = next((str(m.get("content") or "") for m in messages if m.get("role") == "user"), "")
        plan = next((p for key, p in self.plans.items() if key in first), self.default)
        return plan[min(_turn(messages), len(plan) - 1)]


def tool_call(name: str, **arguments: Any) -> dict[str, Any]:
    """A scripted reply that calls a tool the native (OpenAI ``tool_calls``) way."""
    return {"content": "", "tool_calls": [{"name": name, "arguments": arguments}]}
