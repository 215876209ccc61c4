"""CrewAI offline, and a CrewAI ``BaseLLM`` that talks through our :class:`~mastery.llm.types.ChatModel`.

Why not ``crewai.LLM(model="openai/...", base_url=...)``: CrewAI's native OpenAI provider reports
``supports_function_calling() == True``, so every agent with a tool sends OpenAI ``tools=`` and reads only
native ``tool_calls``. The 0.5B Qwen model mostly writes the call as JSON in the *content* instead, which
CrewAI then takes as the final answer: the search never runs. This adapter keeps CrewAI on its text ReAct
protocol (``Action:`` / ``Action Input:``), rewrites a JSON-in-content call into that protocol, records
every call (agent, tokens, latency) and reports usage to CrewAI's own metrics. It still talks to the same
OpenAI-compatible endpoint, through :class:`mastery.llm.client.LLMClient` (or any ChatModel: the tests'
scripted fake).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import threading
from typing import Any

from mastery.core.paths import private_folder

log = logging.getLogger(__name__)

# Every switch CrewAI 1.15 reads before it phones home (found in its source, see docs/research_crew.md):
# telemetry (OpenTelemetry export to telemetry.crewai.com), run tracing (app.crewai.com), the PyPI version
# check, and the app-data folder (appdirs: ~/.local/share/<CREWAI_STORAGE_DIR>; an absolute path wins).
# Not OTEL_SDK_DISABLED, which CrewAI also honours: it turns off every OpenTelemetry tracer in the process,
# so after a crew ran the Research Assistant in the same process (`mastery labs demo`: L23, then L30)
# recorded no traces. CREWAI_DISABLE_TELEMETRY alone stops CrewAI's export.
OFFLINE_ENV = {
    "CREWAI_DISABLE_TELEMETRY": "true",
    "CREWAI_DISABLE_TRACKING": "true",
    "CREWAI_TRACING_ENABLED": "false",
    "CREWAI_DISABLE_VERSION_CHECK": "true",
}


def crewai_offline(storage_dir: str | None = None) -> Any:
    """Set CrewAI's opt-outs (before its first import) and return the ``crewai`` module.

    CrewAI keeps its memory and task outputs in ``CREWAI_STORAGE_DIR``: here ``storage_dir``, else
    ``MASTERY_CREWAI_DIR``, else ``<MASTERY_CACHE>/crewai`` (per user), always a private folder.
    """
    os.environ.update(OFFLINE_ENV)
    from mastery.core.settings import get_settings

    settings = get_settings()
    folder = private_folder(storage_dir or settings.crewai_dir or settings.cache / "crewai")
    os.environ["CREWAI_STORAGE_DIR"] = str(folder)
    import crewai

    return crewai


# A tool call written as JSON in the content: {"name": "search", "arguments": {...}} (optionally fenced)
_JSON_CALL = re.compile(r"\{.*\}", re.S)


def react_from_json_call(text: str, tool_names: set[str]) -> str | None:
    """``{"name": "kb_search", "arguments": {"query": "x"}}`` -> CrewAI's ``Action: kb_search\\nAction Input:
    {"query": "x"}``; None when the text holds no such call (or already speaks the ReAct protocol)."""
    if "Action:" in text or "Final Answer:" in text:
        return None
    match = _JSON_CALL.search(text)
    if not match:
        return None
    try:
        obj = json.loads(match.group(0))
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    name = obj.get("name") or obj.get("tool") or obj.get("action")
    args = obj.get("arguments", obj.get("parameters", obj.get("action_input")))
    if name not in tool_names:
        return None
    if isinstance(args, str):
        args = {"query": args}
    return f"Thought: I will search.\nAction: {name}\nAction Input: {json.dumps(args or {})}"


@functools.cache
def _adapter_class() -> type:
    crewai_offline()
    from crewai.llms.base_llm import BaseLLM
    from pydantic import PrivateAttr

    class ChatModelLLM(BaseLLM):
        """A CrewAI LLM over a ChatModel; ``calls`` records every request (agent role, tokens, latency)."""

        llm_type: str = "mastery"
        max_tokens: int | float | None = 256
        _chat: Any = PrivateAttr(default=None)
        _calls: list[dict[str, Any]] = PrivateAttr(default_factory=list)
        _lock: Any = PrivateAttr(default_factory=threading.Lock)

        def bind(self, chat_model: Any) -> ChatModelLLM:
            self._chat = chat_model
            return self

        @property
        def calls(self) -> list[dict[str, Any]]:
            return self._calls

        def supports_function_calling(self) -> bool:
            return False  # keep CrewAI on the text ReAct protocol (see the module docstring)

        def supports_stop_words(self) -> bool:
            return True

        def get_context_window_size(self) -> int:
            return int(self.additional_params.get("context_window", 4096))

        def call(self, messages: Any, tools: Any = None, callbacks: Any = None, available_functions: Any = None,
                 from_task: Any = None, from_agent: Any = None, response_model: Any = None) -> str:
            msgs = [{"role": "user", "content": messages}] if isinstance(messages, str) else [
                {"role": m["role"], "content": m.get("content") or ""} for m in messages]
            role = getattr(from_agent, "role", "") or "crew"
            stop = [s for s in self.stop_sequences if s][:4] or None
            try:
                completion = self._chat.chat(msgs, max_tokens=int(self.max_tokens or 256),
                                             temperature=self.temperature or 0.0, seed=self.seed, stop=stop)
            except Exception as exc:
                with self._lock:
                    self._calls.append({"agent": role, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:200],
                                        "prompt_tokens": 0, "completion_tokens": 0, "latency_s": 0.0})
                raise
            text = completion.text or ""
            tool_names = {getattr(t, "name", "") for t in (getattr(from_agent, "tools", None) or [])}
            rewritten = react_from_json_call(text, tool_names) if tool_names else None
            if not tool_names and text.strip() and "Final Answer:" not in text and "Action:" not in text:
                # A tool-less agent answered in plain prose: that *is* its answer. Without the marker CrewAI
                # rejects it as a format error and spends another iteration (or the whole budget) asking again.
                rewritten = f"Final Answer: {text.strip()}"
            with self._lock:
                self._calls.append({"agent": role, "ok": True, "prompt_tokens": completion.prompt_tokens,
                                    "completion_tokens": completion.completion_tokens,
                                    "latency_s": completion.latency_s, "chars": len(text),
                                    "repaired": rewritten is not None, "text": text[:400]})
            self._track_token_usage_internal({"prompt_tokens": completion.prompt_tokens,
                                              "completion_tokens": completion.completion_tokens,
                                              "total_tokens": completion.prompt_tokens + completion.completion_tokens})
            log.debug("event=crew_llm_call agent=%s prompt_tokens=%d completion_tokens=%d", role,
                      completion.prompt_tokens, completion.completion_tokens)
            return self._apply_stop_words(rewritten or text)

    return ChatModelLLM


def make_llm(chat_model: Any, *, max_tokens: int = 256, seed: int = 0, context_window: int = 4096) -> Any:
    """A CrewAI LLM instance bound to ``chat_model`` (an LLMClient or a scripted fake)."""
    cls = _adapter_class()
    llm = cls(model=getattr(chat_model, "model", "mastery-local") or "mastery-local", temperature=0.0,
              max_tokens=max_tokens, seed=seed, additional_params={"context_window": context_window})
    return llm.bind(chat_model)
