"""One OpenAI-compatible client for every backend: the embedded llama.cpp server, Ollama, or any URL.

    with open_client() as llm:                        # settings from MASTERY_LLM_* env vars
        reply = llm.chat("Say hi", max_tokens=16)      # Completion: text, tokens, latency
        for piece in (stream := llm.stream("Count to 5")):
            print(piece, end="")
        stream.completion.completion_tokens

Every call is recorded (``client.calls``, a log line, and optionally a JSONL file): model, prompt and
completion tokens, latency, time to first token, and the error if it failed. Failures are
:mod:`mastery.llm.errors`: server down, model missing, timeout, bad response; never a retry loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mastery.llm.errors import LLMBadResponse, LLMError, LLMModelNotFound, LLMServerDown, LLMTimeout
from mastery.llm.settings import LLMSettings, load_settings
from mastery.llm.types import ChatStream, Completion, Messages, ToolCall

log = logging.getLogger(__name__)


def _as_messages(messages: Messages, system: str | None = None) -> list[dict[str, Any]]:
    out = [{"role": "user", "content": messages}] if isinstance(messages, str) else [dict(m) for m in messages]
    if system:
        out.insert(0, {"role": "system", "content": system})
    if not out or not any(m.get("content") for m in out):
        raise LLMError("empty prompt: give at least one message with content")
    return out


class LLMClient:
    """A :class:`~mastery.llm.types.StreamingChatModel` over one OpenAI-compatible server."""

    def __init__(self, settings: LLMSettings | None = None, *, base_url: str | None = None,
                 model: str | None = None, verify_model: bool = True, device: str = "") -> None:
        from openai import OpenAI

        self.settings = settings or load_settings()
        self.base_url = (base_url or self.settings.url).rstrip("/")
        self.model = model or self.settings.model_name
        self.device = device or f"{self.settings.backend} server at {self.base_url}"
        self.calls: list[dict[str, Any]] = []
        self.server: Any = None  # the EmbeddedServer that open_client started for this client, if any
        self._verify_model = verify_model
        # max_retries=0: a dead server must fail now, not after the SDK's exponential back-off.
        self._client = OpenAI(base_url=self.base_url, api_key=self.settings.api_key,
                              timeout=self.settings.timeout_s, max_retries=0)

    # -- models -------------------------------------------------------------------------------
    def models(self) -> list[str]:
        """Model ids the server lists (llama.cpp: its alias; Ollama: the pulled models)."""
        try:
            return [m.id for m in self._client.models.list()]
        except Exception as exc:  # translated into one of our errors
            raise self._translate(exc) from exc

    def check_model(self) -> None:
        """Raise LLMModelNotFound unless the server lists ``self.model``.

        llama.cpp answers any model name with the model it loaded, so asking it is the only way to
        notice a wrong name. Servers without a model list (HTTP 404) are trusted."""
        try:
            available = self.models()
        except LLMBadResponse:
            return
        names = set(available) | {a.split(":")[0] for a in available}  # Ollama: "llama3" matches "llama3:latest"
        if self.model not in names:
            raise LLMModelNotFound(f"model {self.model!r} is not served at {self.base_url}; available: "
                                   f"{', '.join(available) or 'none'} (set MASTERY_LLM_MODEL or --model)")
        self._verify_model = False

    # -- calls --------------------------------------------------------------------------------
    def chat(self, messages: Messages, *, system: str | None = None, max_tokens: int = 256,
             temperature: float = 0.0, seed: int | None = 0, stop: list[str] | None = None,
             extra_body: dict[str, Any] | None = None, tools: Sequence[dict[str, Any]] | None = None) -> Completion:
        """One completion, returned whole. ``tools`` (OpenAI function schemas) asks for native function
        calling; the calls the server recognised come back in ``Completion.tool_calls``."""
        msgs = _as_messages(messages, system)
        if self._verify_model:
            self.check_model()
        start = time.perf_counter()
        try:
            response = self._client.chat.completions.create(
                model=self.model, messages=msgs, max_tokens=max_tokens, temperature=temperature, seed=seed,
                stop=stop, extra_body=extra_body, **({"tools": list(tools)} if tools else {}))
        except Exception as exc:
            raise self._failed(exc, start, stream=False) from _cause(exc)
        latency = time.perf_counter() - start
        if not getattr(response, "choices", None):
            raise self._failed(LLMBadResponse(f"{self.base_url} answered without choices"), start, stream=False)
        choice = response.choices[0]
        usage = response.usage
        completion = Completion(
            text=choice.message.content or "", prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0, latency_s=latency,
            time_to_first_token_s=None, model=response.model or self.model, finish_reason=choice.finish_reason,
            usage_reported=usage is not None, server_timings=(response.model_extra or {}).get("timings"),
            tool_calls=tuple(ToolCall(id=c.id or f"call_{i}", name=c.function.name,
                                      arguments=c.function.arguments or "")
                             for i, c in enumerate(choice.message.tool_calls or []) if c.function))
        self._record(completion)
        return completion

    def stream(self, messages: Messages, *, system: str | None = None, max_tokens: int = 256,
               temperature: float = 0.0, seed: int | None = 0, stop: list[str] | None = None,
               extra_body: dict[str, Any] | None = None) -> ChatStream:
        """A streamed completion: iterate the returned ChatStream for text pieces; usage is still recorded."""
        msgs = _as_messages(messages, system)
        if self._verify_model:
            self.check_model()
        holder = ChatStream(iter(()))
        holder._pieces = self._stream_pieces(holder, msgs, max_tokens, temperature, seed, stop, extra_body)
        return holder

    def _stream_pieces(self, holder: ChatStream, msgs: list[dict[str, Any]], max_tokens: int, temperature: float,
                       seed: int | None, stop: list[str] | None, extra_body: dict[str, Any] | None) -> Iterator[str]:
        start = time.perf_counter()
        deadline = start + self.settings.timeout_s  # the SDK's timeout is per read; this bounds the whole call
        first: float | None = None
        parts: list[str] = []
        usage = timings = None
        finish = model = None
        try:
            response = self._client.chat.completions.create(
                model=self.model, messages=msgs, max_tokens=max_tokens, temperature=temperature, seed=seed,
                stop=stop, extra_body=extra_body, stream=True, stream_options={"include_usage": True})
            with contextlib.closing(response):
                for chunk in response:
                    model = chunk.model or model
                    usage = chunk.usage or usage
                    timings = (chunk.model_extra or {}).get("timings") or timings
                    if chunk.choices:
                        choice = chunk.choices[0]
                        finish = choice.finish_reason or finish
                        piece = choice.delta.content if choice.delta else None
                        if piece:
                            if first is None:
                                first = time.perf_counter() - start
                            parts.append(piece)
                            yield piece
                    if time.perf_counter() > deadline:
                        raise LLMTimeout(f"streamed answer from {self.base_url} took longer than "
                                         f"{self.settings.timeout_s:g}s (MASTERY_LLM_TIMEOUT)")
        except Exception as exc:
            raise self._failed(exc, start, stream=True) from _cause(exc)
        holder.completion = Completion(
            text="".join(parts), prompt_tokens=usage.prompt_tokens if usage else 0,
            # without usage, count streamed pieces: llama.cpp and Ollama send about one token per chunk
            completion_tokens=usage.completion_tokens if usage else len(parts), latency_s=time.perf_counter() - start,
            time_to_first_token_s=first, model=model or self.model, finish_reason=finish, stream=True,
            usage_reported=usage is not None, server_timings=timings)
        self._record(holder.completion)

    # -- records and errors ---------------------------------------------------------------------
    def _record(self, completion: Completion) -> None:
        record = {k: v for k, v in asdict(completion).items() if k not in ("text", "server_timings", "tool_calls")}
        record["tool_calls"] = len(completion.tool_calls)
        record.update(time=time.time(), backend=self.settings.backend, ok=True, chars=len(completion.text))
        self._save(record)
        log.info("event=llm_call backend=%s model=%s stream=%s prompt_tokens=%d completion_tokens=%d "
                 "latency_s=%.3f ttft_s=%s ok=true", self.settings.backend, completion.model, completion.stream,
                 completion.prompt_tokens, completion.completion_tokens, completion.latency_s,
                 "-" if completion.time_to_first_token_s is None else f"{completion.time_to_first_token_s:.3f}")

    def _failed(self, exc: BaseException, start: float, *, stream: bool) -> LLMError:
        error = self._translate(exc)
        latency = time.perf_counter() - start
        self._save({"time": time.time(), "backend": self.settings.backend, "model": self.model, "stream": stream,
                    "ok": False, "error": type(error).__name__, "message": str(error), "latency_s": latency})
        log.warning("event=llm_call backend=%s model=%s stream=%s latency_s=%.3f ok=false error=%s",
                    self.settings.backend, self.model, stream, latency, type(error).__name__)
        return error

    def _save(self, record: dict[str, Any]) -> None:
        self.calls.append(record)
        if self.settings.call_log:
            with Path(self.settings.call_log).open("a") as f:
                f.write(json.dumps(record) + "\n")

    def _translate(self, exc: BaseException) -> LLMError:
        import openai

        if isinstance(exc, LLMError):
            return exc
        if isinstance(exc, openai.APITimeoutError):
            return LLMTimeout(f"no answer from {self.base_url} within {self.settings.timeout_s:g}s "
                              "(raise MASTERY_LLM_TIMEOUT or ask for fewer tokens)")
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            hint = ("start one with 'mastery llm serve'" if self.settings.backend == "embedded" else
                    "start it ('ollama serve')" if self.settings.backend == "ollama" else "check the URL")
            return LLMServerDown(f"no LLM server answers at {self.base_url} ({type(cause).__name__}: "
                                 f"{str(cause)[:120] or 'connection failed'}); {hint} or set MASTERY_LLM_BASE_URL")
        if isinstance(exc, openai.NotFoundError):
            message = _error_message(exc)
            if "model" in message.lower():
                return LLMModelNotFound(f"model {self.model!r} not found at {self.base_url}: {message} "
                                        "(pull it, or set MASTERY_LLM_MODEL)")
            return LLMBadResponse(f"{self.base_url} has no such endpoint (HTTP 404: {message}); "
                                  "is it an OpenAI-compatible URL ending in /v1?")
        if isinstance(exc, openai.AuthenticationError):
            return LLMBadResponse(f"{self.base_url} rejected the API key (HTTP 401); set MASTERY_LLM_API_KEY")
        if isinstance(exc, openai.APIStatusError):
            return LLMBadResponse(f"LLM server at {self.base_url} answered HTTP {exc.status_code}: "
                                  f"{_error_message(exc)}")
        return LLMBadResponse(f"unusable answer from {self.base_url}: {type(exc).__name__}: {str(exc)[:200]}")


def _cause(exc: BaseException) -> BaseException | None:
    return None if isinstance(exc, LLMError) else exc  # our own errors are already the message


def _error_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if message:
            return str(message)[:200]
    return str(getattr(exc, "message", exc))[:200]


def server_healthy(base_url: str, timeout_s: float = 1.0) -> bool:
    """True when a llama.cpp-style /health (next to /v1) answers 200."""
    import httpx

    root = base_url.rstrip("/").removesuffix("/v1")
    try:
        return httpx.get(f"{root}/health", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def open_client(settings: LLMSettings | None = None, **overrides: Any) -> Iterator[LLMClient]:
    """A client for the configured backend. Embedded without a URL: use a running `mastery llm serve` on the
    default port if there is one, else start an embedded server for the duration of the block."""
    settings = settings or load_settings(**overrides)
    if settings.backend != "embedded" or settings.base_url or server_healthy(settings.url):
        yield LLMClient(settings)
        return
    from mastery.llm.server import EmbeddedServer

    log.info("event=llm_autostart reason='no server at %s; starting one for this command (keep one running "
             "with: mastery llm serve)'", settings.url)
    with EmbeddedServer(settings.model_name, threads=settings.threads, ctx=settings.ctx,
                        alias=embedded_alias(settings)) as server:
        client = LLMClient(settings, base_url=server.url, model=embedded_alias(settings),
                           device=f"llama.cpp on {server.device}, {settings.threads or 'default'} threads")
        client.server = server
        yield client


def embedded_alias(settings: LLMSettings) -> str:
    """The model name the embedded server answers to: the registry name, or a GGUF file's stem."""
    name = settings.model_name
    return Path(name).stem if name.endswith(".gguf") else name
