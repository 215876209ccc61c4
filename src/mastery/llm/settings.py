"""Which LLM to talk to: backend, URL, model, key, timeout, threads and context, from settings or arguments.

The values come from :mod:`mastery.core.settings` (environment, else ``.env``); arguments to
:func:`load_settings` win over them. The variables:

- ``MASTERY_LLM_BACKEND``: ``embedded`` (default: llama.cpp via xllamacpp, the registry GGUF),
  ``ollama`` (a local Ollama, e.g. the roadmap's Llama 3 / DeepSeek-R1) or ``openai`` (any
  OpenAI-compatible URL).
- ``MASTERY_LLM_BASE_URL``: the server's OpenAI-compatible base URL (ending in ``/v1``). Embedded:
  unset means "use a running ``mastery llm serve`` on the default port, else start one for this command".
- ``MASTERY_LLM_MODEL``, ``MASTERY_LLM_API_KEY``, ``MASTERY_LLM_TIMEOUT`` (seconds per call),
  ``MASTERY_LLM_THREADS`` (embedded server threads; falls back to ``MASTERY_THREADS``),
  ``MASTERY_LLM_CTX`` (embedded context length in tokens), ``MASTERY_LLM_CALL_LOG`` (append one JSON
  line per call to this file).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mastery.core.errors import ConfigError
from mastery.core.settings import BACKENDS, DEFAULT_LLM_CTX, DEFAULT_LLM_TIMEOUT_S, Settings, get_settings

EMBEDDED_MODEL = "qwen2.5-coder-0.5b-instruct-q4_k_m"  # registry name; also the alias the server answers to
# The full presets that judge answer quality (RAG, agents) run on the 1.5B: the 0.5B fails checks it passes
# (L19 correct source, L22 intent, L23 clean reports), at about 3x the time per token.
QUALITY_MODEL = "qwen2.5-coder-1.5b-instruct-q4_k_m"
EMBEDDED_PORT = 8765  # where `mastery llm serve` listens unless told otherwise
OLLAMA_URL = "http://127.0.0.1:11434/v1"
OLLAMA_MODEL = "llama3"


@dataclass(frozen=True)
class LLMSettings:
    backend: str = "embedded"
    base_url: str | None = None  # None (embedded only): a running `serve` on EMBEDDED_PORT, else a temporary server
    model: str | None = None  # None: the backend's default (embedded: the registry GGUF)
    api_key: str = "not-needed"  # local servers ignore it; the openai client insists on one
    timeout_s: float = DEFAULT_LLM_TIMEOUT_S
    threads: int | None = None  # embedded: llama.cpp threads (None: MASTERY_THREADS, else llama.cpp's default)
    ctx: int = DEFAULT_LLM_CTX  # embedded: context length in tokens
    call_log: str | None = None  # a JSONL file that gets one record per call

    def validate(self) -> LLMSettings:
        if self.backend not in BACKENDS:
            raise ConfigError(f"LLM backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend == "openai" and not self.base_url:
            raise ConfigError("the openai backend needs a URL: set MASTERY_LLM_BASE_URL (or --url)")
        if self.backend == "openai" and not self.model:
            raise ConfigError("the openai backend needs a model name: set MASTERY_LLM_MODEL (or --model)")
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"LLM base URL must start with http:// or https://, got {self.base_url!r}")
        if not self.timeout_s > 0:
            raise ConfigError(f"LLM timeout must be > 0 seconds, got {self.timeout_s}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"LLM threads must be >= 1, got {self.threads}")
        if self.ctx < 256:
            raise ConfigError(f"LLM context must be >= 256 tokens, got {self.ctx}")
        return self

    @property
    def model_name(self) -> str:
        """The model to ask for: the configured one, else the backend's default."""
        if self.model:
            return self.model
        return OLLAMA_MODEL if self.backend == "ollama" else EMBEDDED_MODEL

    @property
    def url(self) -> str:
        """The base URL to connect to (embedded without a URL: the default `serve` address)."""
        if self.base_url:
            return self.base_url.rstrip("/")
        return OLLAMA_URL if self.backend == "ollama" else f"http://127.0.0.1:{EMBEDDED_PORT}/v1"


def assistant_model() -> str | None:
    """The Research Assistant's model when neither ``--model`` nor ``MASTERY_LLM_MODEL`` names one: the 1.5B
    for the embedded backend (L30 measured both shelf models on its 56 questions: the 1.5B holds the key fact
    in 0.87 of its answers and cites the right source in 0.83, the 0.5B in 0.63 and 0.78, for a first token
    1.6 times later), else None (the backend's own default)."""
    s = get_settings()
    return QUALITY_MODEL if s.llm_model is None and s.llm_backend == "embedded" else None


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> LLMSettings:
    """The ``MASTERY_LLM_*`` settings (or those in ``env`` alone), then ``overrides`` (None values are
    ignored), validated."""
    s = get_settings() if env is None else Settings.from_env(env)
    values: dict[str, Any] = {
        "backend": s.llm_backend,
        "base_url": s.llm_base_url,
        "model": s.llm_model,
        "api_key": s.llm_api_key.get_secret_value() if s.llm_api_key is not None else None,
        "timeout_s": s.llm_timeout,
        "threads": s.llm_threads if s.llm_threads is not None else s.threads,
        "ctx": s.llm_ctx,
        "call_log": s.llm_call_log,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(LLMSettings)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"unknown LLM setting(s): {', '.join(sorted(unknown))}")
    return LLMSettings(**{k: v for k, v in values.items() if v is not None}).validate()
