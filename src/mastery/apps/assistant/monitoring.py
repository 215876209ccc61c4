"""Monitoring of the Research Assistant: every answer as an OpenTelemetry trace in a local SQLite file, and the
numbers a person watches (p50/p95 latency, time to first token, tokens and cost per answer, per route and model).

    store = TraceStore("runs/traces.sqlite")
    brain = TracedBrain(ResearchBrain(llm, retriever), store)   # any Brain: the events pass through unchanged
    for ev in brain.answer(question): ...
    summary = summarize(store.answers(), store.calls())        # {"overall", "per_route", "per_model", ...}

One trace per answer: a root span ``assistant.answer`` (the whole answer, wall clock) and one child span per
LLM call, rebuilt from the run's ``usage`` event (:class:`~.events.LLMCall`), named and attributed by the
OpenTelemetry GenAI semantic conventions (``gen_ai.request.model``, ``gen_ai.usage.input_tokens``, ...) where
they exist and ``mastery.*`` where they do not (route, purpose, cost). A call's span starts when its graph step
started (the ``step`` event), after the earlier calls of that step, and lasts its measured latency.

Why OpenTelemetry and a SQLite exporter written here: the SDK is light and offline; its own exporters send to a
collector (OTLP) or print (console), and a monitoring page needs to query spans, so :class:`SQLiteSpanExporter`
appends each finished span as a row. MLflow tracing would also work offline but imports in seconds and
migrates a tracking database first.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mastery.apps.assistant.events import Brain, Event, Question, event

log = logging.getLogger(__name__)

SERVICE_NAME = "mastery-assistant"
ROOT_SPAN = "assistant.answer"
TRACES_FILE = "traces.sqlite"  # beside the API's sessions database (MASTERY_ASSISTANT_DIR)
# OpenTelemetry GenAI semantic conventions (opentelemetry-semantic-conventions 0.66, gen_ai_attributes)
GEN_AI_OPERATION = "gen_ai.operation.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_TTFT = "gen_ai.response.time_to_first_chunk"  # seconds; only streamed calls have one
GEN_AI_CONVERSATION = "gen_ai.conversation.id"
# no convention exists for these
ROUTE = "mastery.assistant.route"
PURPOSE = "mastery.llm.purpose"
LATENCY = "mastery.llm.latency_s"
COST = "mastery.llm.cost_usd"
# what every LLM-call span must carry (the lab's completeness check)
CALL_ATTRIBUTES = (GEN_AI_OPERATION, GEN_AI_REQUEST_MODEL, GEN_AI_RESPONSE_MODEL, GEN_AI_INPUT_TOKENS,
                   GEN_AI_OUTPUT_TOKENS, ROUTE, PURPOSE, LATENCY, COST)
ANSWER_ATTRIBUTES = (ROUTE, GEN_AI_CONVERSATION, "mastery.assistant.llm_calls", "mastery.assistant.refused",
                     GEN_AI_INPUT_TOKENS, GEN_AI_OUTPUT_TOKENS, COST)
# the graph step each call's purpose runs in (its span starts with the step)
_STEP_OF = {"route": "route", "route_retry": "route", "draft": "draft", "critic": "critic", "revise": "revise"}


class SQLiteSpanExporter:
    """An OpenTelemetry ``SpanExporter`` that appends finished spans to a SQLite table (thread-safe)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")  # the page reads while answers write
        self._db.execute("CREATE TABLE IF NOT EXISTS spans (trace_id TEXT, span_id TEXT PRIMARY KEY, parent_id TEXT, "
                         "name TEXT, start_ns INTEGER, end_ns INTEGER, status TEXT, attributes TEXT)")
        self._db.execute("CREATE INDEX IF NOT EXISTS spans_trace ON spans (trace_id)")
        self._db.commit()

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        rows = [(f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}",
                 f"{s.parent.span_id:016x}" if s.parent else None, s.name, s.start_time, s.end_time,
                 s.status.status_code.name, json.dumps(dict(s.attributes or {}))) for s in spans]
        try:
            with self._lock:
                self._db.executemany("INSERT OR REPLACE INTO spans VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
                self._db.commit()
        except sqlite3.Error as exc:  # monitoring must never break an answer
            log.warning("event=trace_export_failed error=%s", exc)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            self._db.row_factory = sqlite3.Row
            try:
                return list(self._db.execute(sql, args))
            finally:
                self._db.row_factory = None

    def shutdown(self) -> None:
        with self._lock:
            self._db.close()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


class TraceStore:
    """The traces of the assistant's answers: written through an OpenTelemetry tracer, read back as rows."""

    def __init__(self, path: str | Path) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        self.path = path
        self.exporter = SQLiteSpanExporter(path)
        # a provider of our own, not the global one: the app must not capture or disturb anyone else's spans
        self.provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))  # type: ignore[arg-type]
        self.tracer = self.provider.get_tracer("mastery.apps.assistant")
        if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":  # the SDK hands out a no-op tracer
            log.warning("OTEL_SDK_DISABLED=true: the assistant's answers are not traced (unset it to monitor them)")

    def close(self) -> None:
        self.provider.shutdown()

    # -- writing ---------------------------------------------------------------------------------
    def record(self, question: Question, timed: Sequence[tuple[int, Event]], start_ns: int, end_ns: int) -> str:
        """One answer's trace from its events (each with the ``time_ns`` it arrived); the trace id."""
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        route = next((e.data.get("route") for _, e in timed if e.kind == "route"), None)
        answer = next((e.data for _, e in timed if e.kind == "answer"), None)
        route = route or (answer or {}).get("route") or "none"
        error = next((e.data.get("message") for _, e in timed if e.kind == "error"), None)
        calls = [c for _, e in timed if e.kind == "usage" for c in e.data.get("calls", [])]
        first_token = next((t for t, e in timed if e.kind == "token"), None)
        step_start = {}
        for t, e in timed:
            if e.kind == "step" and e.data.get("status") == "start":
                step_start.setdefault(e.data.get("name"), []).append(t)
        attrs: dict[str, Any] = {
            ROUTE: route, GEN_AI_CONVERSATION: question.session_id, "mastery.owner": question.owner,
            "mastery.assistant.llm_calls": len(calls), "mastery.assistant.refused": bool((answer or {}).get("refused")),
            GEN_AI_INPUT_TOKENS: sum(int(c.get("prompt_tokens") or 0) for c in calls),
            GEN_AI_OUTPUT_TOKENS: sum(int(c.get("completion_tokens") or 0) for c in calls),
            COST: round(sum(float(c.get("cost_usd") or 0.0) for c in calls), 8),
            "mastery.assistant.models": ",".join(sorted({str(c.get("model") or "") for c in calls})),
        }
        if first_token is not None:
            attrs["mastery.assistant.time_to_first_token_s"] = round((first_token - start_ns) / 1e9, 6)
        for key in ("request_id", "turn_id"):
            if question.extra.get(key):
                attrs[f"mastery.{key}"] = str(question.extra[key])
        root = self.tracer.start_span(ROOT_SPAN, start_time=start_ns, attributes=attrs)
        if error:
            root.set_status(Status(StatusCode.ERROR, str(error)[:200]))
        ctx = trace.set_span_in_context(root)
        cursor: dict[str, int] = {}  # per step: where its next call starts
        for call in calls:
            purpose = str(call.get("purpose") or "llm")
            step = _STEP_OF.get(purpose, purpose)
            if step not in cursor:
                cursor[step] = (step_start.get(step) or [start_ns])[0]
            latency_ns = int(float(call.get("latency_s") or 0.0) * 1e9)
            begin = cursor[step]
            cursor[step] = begin + latency_ns
            model = str(call.get("model") or "unknown")
            span_attrs: dict[str, Any] = {
                GEN_AI_OPERATION: "chat", GEN_AI_REQUEST_MODEL: model, GEN_AI_RESPONSE_MODEL: model,
                GEN_AI_INPUT_TOKENS: int(call.get("prompt_tokens") or 0),
                GEN_AI_OUTPUT_TOKENS: int(call.get("completion_tokens") or 0),
                ROUTE: route, PURPOSE: purpose, LATENCY: float(call.get("latency_s") or 0.0),
                COST: float(call.get("cost_usd") or 0.0)}
            if call.get("time_to_first_token_s") is not None:
                span_attrs[GEN_AI_TTFT] = float(call["time_to_first_token_s"])
            # GenAI span name: "{operation} {model}"
            child = self.tracer.start_span(f"chat {model}", context=ctx, start_time=begin, attributes=span_attrs)
            child.end(end_time=begin + latency_ns)
        root.end(end_time=end_ns)
        return f"{root.get_span_context().trace_id:032x}"

    # -- reading ---------------------------------------------------------------------------------
    def spans(self, trace_id: str | None = None) -> list[dict[str, Any]]:
        where, args = ("WHERE trace_id = ?", (trace_id,)) if trace_id else ("", ())
        return [{**dict(r), "attributes": json.loads(r["attributes"])}
                for r in self.exporter.rows(f"SELECT * FROM spans {where} ORDER BY start_ns", args)]

    def answers(self, owner: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """One row per answer, newest first: route, models, latency, time to first token, tokens, cost."""
        rows = self.exporter.rows("SELECT * FROM spans WHERE name = ? ORDER BY start_ns DESC", (ROOT_SPAN,))
        out = []
        for r in rows:
            a = json.loads(r["attributes"])
            if owner is not None and a.get("mastery.owner") != owner:
                continue
            out.append({"trace_id": r["trace_id"], "start_ns": r["start_ns"], "status": r["status"],
                        "route": a.get(ROUTE, "none"), "model": a.get("mastery.assistant.models") or "none",
                        "latency_s": (r["end_ns"] - r["start_ns"]) / 1e9,
                        "time_to_first_token_s": a.get("mastery.assistant.time_to_first_token_s"),
                        "input_tokens": a.get(GEN_AI_INPUT_TOKENS, 0), "output_tokens": a.get(GEN_AI_OUTPUT_TOKENS, 0),
                        "tokens": a.get(GEN_AI_INPUT_TOKENS, 0) + a.get(GEN_AI_OUTPUT_TOKENS, 0),
                        "cost_usd": a.get(COST, 0.0), "llm_calls": a.get("mastery.assistant.llm_calls", 0),
                        "refused": a.get("mastery.assistant.refused", False),
                        "request_id": a.get("mastery.request_id", "")})
            if limit is not None and len(out) >= limit:
                break
        return out

    def calls(self) -> list[dict[str, Any]]:
        """One row per LLM call: model, purpose, route, latency, time to first token, tokens, cost."""
        rows = self.exporter.rows("SELECT * FROM spans WHERE parent_id IS NOT NULL ORDER BY start_ns")
        out = []
        for r in rows:
            a = json.loads(r["attributes"])
            out.append({"trace_id": r["trace_id"], "model": a.get(GEN_AI_REQUEST_MODEL, "unknown"),
                        "purpose": a.get(PURPOSE, "?"), "route": a.get(ROUTE, "none"),
                        "latency_s": a.get(LATENCY, (r["end_ns"] - r["start_ns"]) / 1e9),
                        "time_to_first_token_s": a.get(GEN_AI_TTFT), "input_tokens": a.get(GEN_AI_INPUT_TOKENS, 0),
                        "output_tokens": a.get(GEN_AI_OUTPUT_TOKENS, 0), "cost_usd": a.get(COST, 0.0)})
        return out


class TracedBrain:
    """Any :class:`~.events.Brain`, its answers recorded as traces; everything else passes to the inner brain."""

    def __init__(self, brain: Brain, store: TraceStore, clock: Callable[[], int] = time.time_ns) -> None:
        self.inner, self.traces, self.clock = brain, store, clock  # clock: ns since the epoch

    def answer(self, question: Question) -> Iterator[Event]:
        start_ns = self.clock()
        timed: list[tuple[int, Event]] = []
        try:
            for ev in self.inner.answer(question):
                timed.append((self.clock(), ev))
                yield ev
        except Exception as exc:
            timed.append((self.clock(), event("error", message=f"{type(exc).__name__}: {exc}")))
            raise
        finally:
            try:
                self.traces.record(question, timed, start_ns, self.clock())
            except Exception:  # monitoring must never break an answer
                log.exception("event=trace_record_failed")

    def close(self) -> None:
        try:
            if hasattr(self.inner, "close"):
                self.inner.close()
        finally:
            self.traces.close()

    def __getattr__(self, name: str) -> Any:  # history(), settings, llm ... of the inner brain
        return getattr(self.inner, name)


def default_traces_path(folder: str | Path | None = None) -> Path:
    """Where the API keeps its traces: ``folder`` (as ``mastery assistant serve --dir``), else
    MASTERY_ASSISTANT_DIR, else ``<cache>/assistant``."""
    from mastery.core.settings import get_settings

    s = get_settings()
    return Path(folder or s.assistant_dir or s.cache / "assistant") / TRACES_FILE


# -- aggregation -------------------------------------------------------------------------------------
def percentiles(values: Sequence[float | None]) -> dict[str, float | None]:
    """p50 and p95 (linear interpolation, numpy's default) of the values that are not None."""
    import numpy as np

    xs = [float(v) for v in values if v is not None]
    if not xs:
        return {"p50": None, "p95": None, "n": 0}
    return {"p50": round(float(np.percentile(xs, 50)), 6), "p95": round(float(np.percentile(xs, 95)), 6),
            "n": len(xs)}


def _group(rows: Sequence[dict[str, Any]], key: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(str(r.get(key)), []).append(r)
    return dict(sorted(out.items()))


def _answer_stats(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"answers": len(rows), "latency_s": percentiles([r["latency_s"] for r in rows]),
            "time_to_first_token_s": percentiles([r.get("time_to_first_token_s") for r in rows]),
            "tokens": percentiles([r["tokens"] for r in rows]),
            "input_tokens": percentiles([r["input_tokens"] for r in rows]),
            "output_tokens": percentiles([r["output_tokens"] for r in rows]),
            "llm_calls": percentiles([r["llm_calls"] for r in rows]),
            "cost_usd": round(sum(float(r.get("cost_usd") or 0.0) for r in rows), 8),
            "refused": sum(bool(r.get("refused")) for r in rows)}


def _call_stats(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"calls": len(rows), "latency_s": percentiles([r["latency_s"] for r in rows]),
            "time_to_first_token_s": percentiles([r.get("time_to_first_token_s") for r in rows]),
            "input_tokens": percentiles([r["input_tokens"] for r in rows]),
            "output_tokens": percentiles([r["output_tokens"] for r in rows]),
            "tokens": percentiles([r["input_tokens"] + r["output_tokens"] for r in rows]),
            "cost_usd": round(sum(float(r.get("cost_usd") or 0.0) for r in rows), 8)}


def summarize(answers: Sequence[dict[str, Any]], calls: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The monitoring numbers: per answer (overall, per route, per model) and per LLM call (per model, per
    purpose): p50/p95 latency, time to first token and tokens, with the total cost."""
    return {"overall": _answer_stats(answers),
            "per_route": {k: _answer_stats(v) for k, v in _group(answers, "route").items()},
            "per_model": {k: _answer_stats(v) for k, v in _group(answers, "model").items()},
            "calls_per_model": {k: _call_stats(v) for k, v in _group(calls, "model").items()},
            "calls_per_purpose": {k: _call_stats(v) for k, v in _group(calls, "purpose").items()}}


def missing_attributes(store: TraceStore) -> list[str]:
    """Completeness: every answer span and every LLM-call span with all its attributes, each answer with as
    many call spans as it says it made, streamed calls (draft, revise) with a time to first token."""
    problems = []
    spans = store.spans()
    children: dict[str, int] = {}
    for s in spans:
        if s["parent_id"]:
            children[s["trace_id"]] = children.get(s["trace_id"], 0) + 1
            missing = [a for a in CALL_ATTRIBUTES if a not in s["attributes"]]
            if s["attributes"].get(PURPOSE) in ("draft", "revise") and GEN_AI_TTFT not in s["attributes"]:
                missing.append(GEN_AI_TTFT)
            if missing:
                problems.append(f"{s['trace_id'][:8]} {s['name']}: missing {', '.join(missing)}")
    for s in (s for s in spans if s["name"] == ROOT_SPAN):
        missing = [a for a in ANSWER_ATTRIBUTES if a not in s["attributes"]]
        if missing:
            problems.append(f"{s['trace_id'][:8]} {ROOT_SPAN}: missing {', '.join(missing)}")
        said = s["attributes"].get("mastery.assistant.llm_calls", 0)
        if children.get(s["trace_id"], 0) != said:
            problems.append(f"{s['trace_id'][:8]}: {said} LLM calls but {children.get(s['trace_id'], 0)} spans")
    return problems


# -- simulated timings (the tiny lab and tests: a fake LLM that reports realistic latencies) --------------
@dataclass(frozen=True)
class SimulatedSpeed:
    """Seconds a CPU llama.cpp server would take: prompt tokens read at ``prefill_tps``, output written at
    ``decode_tps``, plus ``overhead_s`` per call (the 0.5B on 2 cores reads about 150 and writes about 15
    tokens/s)."""

    prefill_tps: float = 150.0
    decode_tps: float = 15.0
    overhead_s: float = 0.05


class SimulatedClock:
    """A clock (ns since the epoch) that only moves when told: :class:`TimedChat` moves it by each call's
    simulated latency, so a :class:`TracedBrain` reading it sees answers take the simulated time."""

    def __init__(self, start_ns: int = 1_700_000_000 * 10**9) -> None:
        self.now_ns = start_ns
        self._lock = threading.Lock()

    def __call__(self) -> int:
        return self.now_ns

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now_ns += round(seconds * 1e9)


class TimedChat:
    """A ChatModel wrapper that stamps each completion with :class:`SimulatedSpeed` timings (no sleeping), and
    moves ``clock`` (a :class:`SimulatedClock`, optional) by them: the first piece of a stream after the time to
    first token, the rest at its end."""

    def __init__(self, llm: Any, speed: SimulatedSpeed | None = None, model: str | None = None,
                 clock: SimulatedClock | None = None) -> None:
        self.llm, self.speed, self.clock = llm, speed or SimulatedSpeed(), clock
        self.model = model or getattr(llm, "model", "")

    def _advance(self, seconds: float) -> None:
        if self.clock is not None:
            self.clock.advance(seconds)

    def _timed(self, completion: Any, stream: bool) -> Any:
        s = self.speed
        first = s.overhead_s + completion.prompt_tokens / s.prefill_tps
        latency = first + completion.completion_tokens / s.decode_tps
        return replace(completion, model=self.model, latency_s=round(latency, 6),
                       time_to_first_token_s=round(first, 6) if stream else None)

    def chat(self, messages: Any, **kwargs: Any) -> Any:
        completion = self._timed(self.llm.chat(messages, **kwargs), stream=False)
        self._advance(completion.latency_s)
        return completion

    def stream(self, messages: Any, **kwargs: Any) -> Any:
        # a fake has its whole reply at once: drain it first, then hand the pieces out on the simulated clock
        inner = self.llm.stream(messages, **kwargs)
        pieces = list(inner)
        completion = self._timed(inner.read(), stream=True)
        outer = self

        class _Stream:
            def __init__(self) -> None:
                self.sent: int | None = None  # pieces handed out so far (None: not started)
                self.finished = False

            def __iter__(self) -> Iterator[str]:
                if self.sent is None:
                    self.sent = 0
                    outer._advance(completion.time_to_first_token_s)
                while self.sent < len(pieces):
                    self.sent += 1
                    yield pieces[self.sent - 1]

            def read(self) -> Any:
                for _ in self:
                    pass
                if not self.finished:  # read twice: the clock moves once
                    self.finished = True
                    outer._advance(completion.latency_s - completion.time_to_first_token_s)
                return completion

        return _Stream()
