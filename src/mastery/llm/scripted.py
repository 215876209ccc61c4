"""A scripted OpenAI-compatible chat server for tests and benchmarks, with faults on demand.

    scripted = ScriptedLLM(["calling a tool ...", "Final Answer: 42"], model="scripted")
    with ServerThread(create_scripted_app(scripted)) as server:      # mastery.serving.server
        LLMClient(base_url=server.url + "/v1", model="scripted").chat("hi")
    scripted.set_faults([Fault("http_503", first=2)])                 # the next two calls fail with 503

The answers come from the one fake, :class:`mastery.llm.fake.ScriptedChat` (a list of replies played by
the conversation's turn, or a responder ``(messages, system) -> reply``): a client talking to this server
gets what it would get from the fake in process, token counts included. The system prompt is taken out of
the messages and handed to the fake as ``system``, as :meth:`LLMClient.chat` put it in. Faults
(:class:`Fault`) pick calls by their arrival number: ``delay`` (answer late, to force client timeouts),
``http_500``/``http_503`` (an error body), and ``drop`` (headers, half a body, then the connection closes).
A request with ``"stream": true`` gets the reply as server-sent chunks, one per word, usage last.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint signatures at runtime.
import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mastery.llm.fake import Reply, Responder, ScriptedChat

log = logging.getLogger(__name__)

FaultKind = Literal["delay", "http_500", "http_503", "drop"]


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


class ScriptedLLM:
    """The fake behind the server, the faults, and a count of the calls by outcome, shared by the app and the
    test that drives it. ``script``: what :class:`ScriptedChat` takes, or a ScriptedChat."""

    def __init__(self, script: Sequence[Reply] | Responder | ScriptedChat = ("OK",), *,
                 model: str = "scripted", faults: Sequence[Fault] = ()) -> None:
        self.fake = script if isinstance(script, ScriptedChat) else ScriptedChat(script, model=model)
        self.model = model
        self._lock = threading.Lock()
        self.set_faults(faults)

    def set_faults(self, faults: Sequence[Fault]) -> None:
        with self._lock:
            self.faults = list(faults)
            self.arrivals = 0
            self.outcomes: Counter[str] = Counter()  # "ok", or the fault kind

    def next_call(self) -> tuple[int, Fault | None]:
        with self._lock:
            self.arrivals += 1
            n = self.arrivals
            fault = next((f for f in self.faults if f.applies(n)), None)
            self.outcomes[fault.kind if fault else "ok"] += 1
        return n, fault


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
        stop = body.get("stop")
        system = "\n\n".join(str(m.get("content") or "") for m in messages if m.get("role") == "system")
        completion = scripted.fake.chat([m for m in messages if m.get("role") != "system"], system=system or None,
                                        max_tokens=int(body.get("max_tokens") or 256),
                                        stop=[stop] if isinstance(stop, str) else stop,
                                        tools=body.get("tools"))
        calls = [{"id": f"call_{n}_{i}", "type": "function",
                  "function": {"name": c["name"], "arguments": c["arguments"]}}
                 for i, c in enumerate(completion.tool_calls)]
        if body.get("stream"):
            return _streamed(completion, scripted.model, n)
        message: dict[str, Any] = {"role": "assistant", "content": completion.text}
        if calls:
            message["tool_calls"] = calls
        return {"id": f"chatcmpl-{n}", "object": "chat.completion", "created": 0, "model": scripted.model,
                "choices": [{"index": 0, "message": message, "finish_reason": completion.finish_reason}],
                "usage": {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
                          "total_tokens": completion.prompt_tokens + completion.completion_tokens}}

    return app


def _streamed(completion: Any, model: str, n: int) -> Any:
    """The reply as OpenAI's server-sent chunks: one per word, then the finish reason, then the usage."""
    import json
    import re

    from starlette.responses import StreamingResponse

    def chunk(delta: dict[str, Any] | None, finish: str | None = None, usage: dict[str, int] | None = None) -> str:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        return "data: " + json.dumps({"id": f"chatcmpl-{n}", "object": "chat.completion.chunk", "created": 0,
                                      "model": model, "choices": choices, "usage": usage}) + "\n\n"

    def events() -> Any:
        for piece in re.findall(r"\S+\s*|\s+", completion.text):
            yield chunk({"content": piece})
        yield chunk({}, completion.finish_reason or "stop")
        yield chunk(None, usage={"prompt_tokens": completion.prompt_tokens,
                                 "completion_tokens": completion.completion_tokens,
                                 "total_tokens": completion.prompt_tokens + completion.completion_tokens})
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


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
