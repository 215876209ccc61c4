"""Resilience for agent runs: retries with exponential backoff and full jitter, a fallback chain of LLM
backends, retried idempotent tools, and what a run cost from a configurable price table.

    policy = RetryPolicy(attempts=3, base_s=0.2, max_s=2.0)
    llm = FallbackChat([RetryingChat(primary, policy, name="primary"), RetryingChat(backup, policy, name="backup")])
    agent = ReActAgent(llm, tools=[retrying_tool(t, policy) for t in tools])

Which LLM errors are worth a retry: the server is down or timed out, or it answered 5xx/429 (overloaded,
restarting). A missing model, a rejected key or a bad request will fail the same way again, so they are
raised at once (a :class:`FallbackChat` still tries its next backend). ``sleep`` and ``rng`` are
injectable, so tests check the delays without sleeping.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import random
import re
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from mastery.agents.types import AgentResult, Tool
from mastery.core.errors import ConfigError
from mastery.llm.errors import LLMBadResponse, LLMError, LLMModelNotFound, LLMServerDown, LLMTimeout
from mastery.llm.types import ChatModel

log = logging.getLogger(__name__)
T = TypeVar("T")

PRICE_TABLE_ENV = "MASTERY_PRICE_TABLE"
_HTTP_STATUS = re.compile(r"HTTP (\d{3})")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` calls at most; before retry ``k`` (1, 2, ...) wait ``uniform(0, min(max_s, base_s * 2**(k-1)))``.

    Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): clients that failed together
    spread out instead of hammering a recovering server in lock-step."""

    attempts: int = 3
    base_s: float = 0.25
    max_s: float = 4.0
    multiplier: float = 2.0

    def validate(self) -> RetryPolicy:
        if self.attempts < 1:
            raise ConfigError(f"retry attempts must be >= 1, got {self.attempts}")
        if self.base_s < 0 or self.max_s < 0 or self.multiplier < 1:
            raise ConfigError("retry base_s and max_s must be >= 0 and multiplier >= 1")
        return self

    def cap(self, retry: int) -> float:
        """The largest delay before retry number ``retry`` (1-based)."""
        return min(self.max_s, self.base_s * self.multiplier ** (retry - 1))

    def delay(self, retry: int, rng: random.Random) -> float:
        return rng.uniform(0.0, self.cap(retry))


NO_RETRY = RetryPolicy(attempts=1)


def http_status(exc: BaseException) -> int | None:
    """The HTTP status behind an LLM error: the OpenAI SDK's exception (``__cause__``), else the message."""
    status = getattr(exc.__cause__, "status_code", None)
    if isinstance(status, int):
        return status
    match = _HTTP_STATUS.search(str(exc))
    return int(match.group(1)) if match else None


def llm_retryable(exc: BaseException) -> bool:
    """Down, timed out, or 5xx/429: a later attempt may succeed. Model missing, 4xx: it will not."""
    if isinstance(exc, LLMModelNotFound):
        return False
    if isinstance(exc, LLMServerDown | LLMTimeout):
        return True
    if isinstance(exc, LLMBadResponse):
        return http_status(exc) in RETRY_STATUSES
    return False


def retry_call(fn: Callable[[], T], policy: RetryPolicy, *, retryable: Callable[[BaseException], bool],
               sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None,
               deadline: float | None = None, on_retry: Callable[[int, BaseException, float], None] | None = None,
               clock: Callable[[], float] = time.monotonic) -> T:
    """``fn()`` with up to ``policy.attempts`` tries. A retry that would start after ``deadline`` (a
    ``clock()`` value) is not made: the last error is raised instead."""
    rng = rng or random.Random()
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt == policy.attempts or not retryable(exc):
                raise
            wait = policy.delay(attempt, rng)
            if deadline is not None and clock() + wait >= deadline:
                raise
            if on_retry is not None:
                on_retry(attempt, exc, wait)
            sleep(wait)
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover


class RetryingChat:
    """A ChatModel that retries its inner model's retryable errors (see :func:`llm_retryable`).

    ``retries`` counts the extra calls made, ``errors`` the messages of every failed call. One instance
    per run: the counters are the run's (a lock keeps them right if it is shared anyway)."""

    def __init__(self, llm: ChatModel, policy: RetryPolicy = RetryPolicy(), *, name: str = "",
                 sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None,
                 deadline: float | None = None) -> None:
        self.llm, self.policy = llm, policy.validate()
        self.name = name or getattr(llm, "model", "") or type(llm).__name__
        self.model = getattr(llm, "model", self.name)
        self.sleep, self.rng, self.deadline = sleep, rng or random.Random(0), deadline
        self.retries = 0
        self.calls = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def _on_retry(self, attempt: int, exc: BaseException, wait: float) -> None:
        with self._lock:
            self.retries += 1
        log.warning("event=llm_retry backend=%s attempt=%d error=%s wait_s=%.3f", self.name, attempt,
                    type(exc).__name__, wait)

    def chat(self, messages: Any, **kwargs: Any) -> Any:
        def once() -> Any:
            with self._lock:
                self.calls += 1
            try:
                return self.llm.chat(messages, **kwargs)
            except Exception as exc:
                with self._lock:
                    self.errors.append(f"{self.name}: {type(exc).__name__}: {str(exc)[:200]}")
                raise

        return retry_call(once, self.policy, retryable=llm_retryable, sleep=self.sleep, rng=self.rng,
                          deadline=self.deadline, on_retry=self._on_retry)


class FallbackChat:
    """A ChatModel that asks its backends in order and returns the first answer.

    Any :class:`LLMError` from a backend (after that backend's own retries) moves on to the next one;
    the last backend's error is raised when all fail. Sticky: once a backend has failed, later calls start
    at the one after it (one instance per run: a dead primary costs its retries once, not on every step).
    ``backend`` names the one that answered last,
    ``fallbacks`` counts the calls that needed a later backend, ``usage`` holds tokens per backend."""

    def __init__(self, backends: Sequence[ChatModel], names: Sequence[str] | None = None, *,
                 sticky: bool = True) -> None:
        if not backends:
            raise ConfigError("FallbackChat needs at least one backend")
        self.backends = list(backends)
        self.names = list(names) if names else [str(getattr(b, "name", f"backend{i}"))
                                                 for i, b in enumerate(self.backends)]
        if len(self.names) != len(self.backends):
            raise ConfigError("FallbackChat: one name per backend")
        self.sticky = sticky
        self._start = 0  # first backend to ask (moves on after a failure when sticky)
        self.backend = ""
        self.fallbacks = 0
        self.answered_by: Counter[str] = Counter()
        self.usage: dict[str, dict[str, int]] = {}  # backend name -> prompt/completion tokens
        self.errors: list[str] = []
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        return self.names[0]

    def chat(self, messages: Any, **kwargs: Any) -> Any:
        last: LLMError | None = None
        for i, (name, llm) in enumerate(zip(self.names, self.backends, strict=True)):
            if i < self._start and i + 1 < len(self.backends):
                continue
            try:
                completion = llm.chat(messages, **kwargs)
            except LLMError as exc:
                last = exc
                with self._lock:
                    self.errors.append(f"{name}: {type(exc).__name__}: {str(exc)[:200]}")
                if i + 1 < len(self.backends):
                    if self.sticky:
                        self._start = max(self._start, i + 1)
                    log.warning("event=llm_fallback from=%s to=%s error=%s", name, self.names[i + 1],
                                type(exc).__name__)
                continue
            with self._lock:
                self.backend = name
                self.answered_by[name] += 1
                self.fallbacks += i > 0
                used = self.usage.setdefault(name, {"prompt_tokens": 0, "completion_tokens": 0, "calls": 0})
                used["prompt_tokens"] += int(getattr(completion, "prompt_tokens", 0) or 0)
                used["completion_tokens"] += int(getattr(completion, "completion_tokens", 0) or 0)
                used["calls"] += 1
            return completion
        assert last is not None
        raise last


def retrying_tool(tool: Tool, policy: RetryPolicy = RetryPolicy(), *, sleep: Callable[[float], None] = time.sleep,
                  rng: random.Random | None = None, on_retry: Callable[[str, int, BaseException], None] | None = None,
                  ) -> Tool:
    """The same tool, retried on failure when it is idempotent (a non-idempotent tool is returned as is:
    repeating a side effect is worse than reporting the error).

    Each attempt runs through ``call_tool`` under the tool's own timeout; the wrapper's timeout covers
    all attempts and their waits, so the runner's outer limit never cuts a retry short."""
    if not tool.idempotent or policy.attempts <= 1:
        return tool
    from mastery.agents.tools import call_tool

    rng = rng or random.Random(0)

    def _note(attempt: int, exc: BaseException, wait: float) -> None:
        log.warning("event=tool_retry tool=%s attempt=%d error=%s wait_s=%.3f", tool.name, attempt,
                    str(exc)[:120], wait)
        if on_retry is not None:
            on_retry(tool.name, attempt, exc)

    def fn(arguments: dict[str, Any]) -> str:
        return retry_call(lambda: call_tool(tool, arguments), policy, retryable=lambda e: isinstance(e, Exception),
                          sleep=sleep, rng=rng, on_retry=_note)

    budget = tool.timeout_s * policy.attempts + sum(policy.cap(k) for k in range(1, policy.attempts)) + 1.0
    return replace(tool, fn=fn, timeout_s=budget)


# -- cost -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Price:
    prompt_per_1m: float = 0.0  # USD per million prompt (input) tokens
    completion_per_1m: float = 0.0  # USD per million completion (output) tokens


@dataclass(frozen=True)
class PriceTable:
    """USD per million tokens by model name (``fnmatch`` patterns allowed, exact names first).

    A model that is not listed costs ``default`` (zero: local models are free to run here), and
    :meth:`lookup` says whether the price was listed. File format (JSON or TOML)::

        [models."gpt-4o-mini"]
        prompt_per_1m = 0.15
        completion_per_1m = 0.60
    """

    models: Mapping[str, Price] = field(default_factory=dict)
    default: Price = Price()
    currency: str = "USD"
    source: str = "built-in (every model 0)"

    def lookup(self, model: str) -> tuple[Price, bool]:
        if model in self.models:
            return self.models[model], True
        for pattern, price in self.models.items():
            if fnmatch.fnmatchcase(model, pattern):
                return price, True
        return self.default, False

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        price, _ = self.lookup(model)
        return (prompt_tokens * price.prompt_per_1m + completion_tokens * price.completion_per_1m) / 1e6

    def to_dict(self) -> dict[str, Any]:
        return {"currency": self.currency, "source": self.source, "unit": "per 1M tokens",
                "default": vars(self.default).copy(), "models": {k: vars(v).copy() for k, v in self.models.items()}}


def _price(name: str, raw: Any, where: str) -> Price:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: price of {name!r} must be a table with prompt_per_1m and completion_per_1m")
    unknown = set(raw) - {"prompt_per_1m", "completion_per_1m"}
    if unknown:
        raise ConfigError(f"{where}: price of {name!r} has unknown key(s) {', '.join(sorted(unknown))}")
    values = {}
    for key in ("prompt_per_1m", "completion_per_1m"):
        value = raw.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e6:
            raise ConfigError(f"{where}: {name}.{key} must be a number in [0, 1e6), got {value!r}")
        values[key] = float(value)
    return Price(**values)


def parse_price_table(data: Mapping[str, Any], source: str = "<dict>") -> PriceTable:
    unknown = set(data) - {"currency", "default", "models", "note"}
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s) {', '.join(sorted(unknown))} "
                          "(expected currency, default, models, note)")
    models = data.get("models", {})
    if not isinstance(models, Mapping):
        raise ConfigError(f"{source}: 'models' must be a table of model name -> price")
    return PriceTable(models={str(k): _price(str(k), v, source) for k, v in models.items()},
                      default=_price("default", data.get("default", {}), source),
                      currency=str(data.get("currency", "USD")), source=source)


def load_price_table(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> PriceTable:
    """From ``path``, else the file named by ``MASTERY_PRICE_TABLE``, else the built-in all-zero table."""
    from mastery.core.settings import Settings, get_settings

    settings = get_settings() if env is None else Settings.from_env(env)
    path = path or settings.price_table
    if path is None:
        return PriceTable()
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"price table {file} does not exist (--price-table or {PRICE_TABLE_ENV})")
    text = file.read_text()
    try:
        data = tomllib.loads(text) if file.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"price table {file} is not valid {file.suffix.lstrip('.') or 'JSON'}: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"price table {file}: expected a table at the top level")
    return parse_price_table(data, str(file))


@dataclass(frozen=True)
class RunCost:
    prompt_tokens: int
    completion_tokens: int
    usd: float
    models: dict[str, dict[str, Any]]  # model -> tokens, usd, listed (False: priced at the default)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens, "usd": self.usd, "models": self.models}

    @classmethod
    def from_usage(cls, usage: Mapping[str, Mapping[str, int]], prices: PriceTable) -> RunCost:
        """``usage``: model name -> {"prompt_tokens", "completion_tokens"} (e.g. :attr:`FallbackChat.usage`
        with backend names mapped to their models)."""
        models, total_p, total_c, total = {}, 0, 0, 0.0
        for model, used in usage.items():
            p, c = int(used.get("prompt_tokens", 0)), int(used.get("completion_tokens", 0))
            usd = prices.cost(model, p, c)
            models[model] = {"prompt_tokens": p, "completion_tokens": c, "usd": usd,
                             "listed": prices.lookup(model)[1]}
            total_p, total_c, total = total_p + p, total_c + c, total + usd
        return cls(total_p, total_c, total, models)

    @classmethod
    def from_result(cls, result: AgentResult, prices: PriceTable, model: str | None = None) -> RunCost:
        """All of a run's tokens priced as ``model`` (default: the backend that answered last)."""
        name = model or result.backend or "unknown"
        return cls.from_usage({name: {"prompt_tokens": result.prompt_tokens,
                                      "completion_tokens": result.completion_tokens}}, prices)


__all__ = ["NO_RETRY", "FallbackChat", "Price", "PriceTable", "RetryPolicy", "RetryingChat", "RunCost",
           "http_status", "llm_retryable", "load_price_table", "parse_price_table", "retry_call", "retrying_tool"]
