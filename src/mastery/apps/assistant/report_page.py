"""``GET /monitoring``: the assistant's monitoring page, served by its API behind the same keys.

:func:`install_monitoring` (one call in :func:`mastery.apps.assistant.api.create_app`) wraps the API's brain in a
:class:`~.monitoring.TracedBrain`, so every answer is a trace in ``traces.sqlite`` beside the sessions database,
and adds the routes: an HTML page (``/monitoring/summary``: the same numbers as JSON) with p50/p95 answer latency, time
to first token and tokens per answer, per route and per model, the LLM calls per model and per purpose, the
cost, and the caller's own recent answers. The page shows no question or answer text: the numbers are
everyone's, the list is the caller's.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint signatures at runtime.
import html
import logging
from pathlib import Path
from typing import Annotated, Any

from mastery.apps.assistant.monitoring import TRACES_FILE, TracedBrain, TraceStore, summarize

log = logging.getLogger(__name__)

RECENT = 20  # the caller's answers listed under the tables


def install_monitoring(app: Any, settings: Any, keys: Any) -> TraceStore:
    """Trace every answer of ``settings.brain`` and serve ``GET /monitoring`` to key holders; the store."""
    import asyncio

    from fastapi import Depends
    from fastapi.responses import HTMLResponse, JSONResponse

    from mastery.apps.assistant.schemas import ErrorResponse
    from mastery.serving.auth import UNAUTHORIZED, owner_dependency

    if isinstance(settings.brain, TracedBrain):
        store = settings.brain.traces
    else:
        db = str(settings.db_path)
        store = TraceStore(":memory:" if db == ":memory:" else Path(db).with_name(TRACES_FILE))
        settings.brain = TracedBrain(settings.brain, store)
    app.state.traces = store
    Owner = Annotated[str, Depends(owner_dependency(keys))]

    async def read(owner: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        def query() -> tuple[dict[str, Any], list[dict[str, Any]]]:
            return summarize(store.answers(), store.calls()), store.answers(owner=owner, limit=RECENT)

        return await asyncio.to_thread(query)

    errors = {401: {"model": ErrorResponse, **UNAUTHORIZED[401]}}

    @app.get("/monitoring", summary="the monitoring page: latency, time to first token, tokens and cost per answer, "
                                    "per route and model",
             # not response_class=HTMLResponse: that would document the JSON 401 as text/html
             responses={200: {"description": "the page", "content": {"text/html": {"schema": {"type": "string"}}}},
                        **errors})
    async def monitoring(owner: Owner) -> Any:
        return HTMLResponse(render_page(*await read(owner)))

    @app.get("/monitoring/summary", summary="the monitoring page's numbers as JSON: the summary and your recent "
                                            "answers", responses={200: {"content": {"application/json": {"schema": {
                                                "type": "object"}}}}, **errors})
    async def monitoring_summary(owner: Owner) -> Any:
        summary, recent = await read(owner)
        return JSONResponse({"summary": summary, "recent": recent})

    return store


def _num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pair(stats: dict[str, Any], digits: int = 2) -> str:
    return f"{_num(stats.get('p50'), digits)} / {_num(stats.get('p95'), digits)}"


def _answers_table(title: str, groups: dict[str, dict[str, Any]]) -> str:
    head = ("<tr><th>" + html.escape(title) + "</th><th>answers</th><th>latency s (p50 / p95)</th>"
            "<th>first token s (p50 / p95)</th><th>tokens (p50 / p95)</th><th>LLM calls (p50)</th>"
            "<th>refused</th><th>cost USD</th></tr>")
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{g['answers']}</td><td>{_pair(g['latency_s'])}</td>"
        f"<td>{_pair(g['time_to_first_token_s'])}</td><td>{_pair(g['tokens'], 0)}</td>"
        f"<td>{_num(g['llm_calls']['p50'], 1)}</td><td>{g['refused']}</td><td>{g['cost_usd']:.6f}</td></tr>"
        for name, g in groups.items())
    return f"<table>{head}{rows}</table>"


def _calls_table(title: str, groups: dict[str, dict[str, Any]]) -> str:
    head = ("<tr><th>" + html.escape(title) + "</th><th>calls</th><th>latency s (p50 / p95)</th>"
            "<th>first token s (p50 / p95)</th><th>prompt tokens (p50 / p95)</th>"
            "<th>completion tokens (p50 / p95)</th><th>cost USD</th></tr>")
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{g['calls']}</td><td>{_pair(g['latency_s'])}</td>"
        f"<td>{_pair(g['time_to_first_token_s'])}</td><td>{_pair(g['input_tokens'], 0)}</td>"
        f"<td>{_pair(g['output_tokens'], 0)}</td><td>{g['cost_usd']:.6f}</td></tr>" for name, g in groups.items())
    return f"<table>{head}{rows}</table>"


def render_page(summary: dict[str, Any], recent: list[dict[str, Any]]) -> str:
    """The monitoring page as one self-contained HTML document (no scripts, no external files)."""
    overall = {"all answers": summary["overall"]} if summary["overall"]["answers"] else {}
    recent_rows = "".join(
        f"<tr><td>{html.escape(r['request_id'] or r['trace_id'][:16])}</td><td>{html.escape(r['route'])}</td>"
        f"<td>{html.escape(r['model'])}</td><td>{_num(r['latency_s'])}</td><td>{_num(r['time_to_first_token_s'])}"
        f"</td><td>{r['tokens']}</td><td>{r['llm_calls']}</td><td>{html.escape(r['status'])}</td></tr>"
        for r in recent)
    body = (
        "<h1>Research Assistant: monitoring</h1>"
        f"<p>{summary['overall']['answers']} answers traced (OpenTelemetry spans in the local trace store). "
        "Latency is the whole answer, wall clock; first token is when its first answer token was streamed.</p>"
        "<h2>Per answer</h2>" + _answers_table("overall", overall)
        + "<h2>Per route</h2>" + _answers_table("route", summary["per_route"])
        + "<h2>Per model</h2>" + _answers_table("model", summary["per_model"])
        + "<h2>LLM calls per model</h2>" + _calls_table("model", summary["calls_per_model"])
        + "<h2>LLM calls per purpose</h2>" + _calls_table("purpose", summary["calls_per_purpose"])
        + "<h2>Your recent answers</h2><table><tr><th>request</th><th>route</th><th>model</th><th>latency s</th>"
        "<th>first token s</th><th>tokens</th><th>LLM calls</th><th>status</th></tr>" + recent_rows + "</table>")
    style = ("body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;"
             "margin-bottom:1.5em}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}"
             "th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}")
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Assistant monitoring</title>"
            f"<style>{style}</style></head><body>{body}</body></html>")


def text_report(summary: dict[str, Any]) -> str:
    """The same numbers as the page, as plain-text tables (``mastery assistant monitor``)."""

    def table(title: str, groups: dict[str, dict[str, Any]], count: str) -> list[str]:
        lines = [f"{title:<22} {count:>7}  {'latency s p50/p95':>18}  {'1st token s p50/p95':>20}  "
                 f"{'tokens p50/p95':>15}  {'cost USD':>10}"]
        for name, g in groups.items():
            lines.append(f"{name[:22]:<22} {g[count]:>7}  {_pair(g['latency_s']):>18}  "
                         f"{_pair(g['time_to_first_token_s']):>20}  {_pair(g['tokens'], 0):>15}  "
                         f"{g['cost_usd']:>10.6f}")
        return [*lines, ""]

    out = [f"{summary['overall']['answers']} answers traced", ""]
    out += table("per route", summary["per_route"], "answers")
    out += table("per model", summary["per_model"], "answers")
    out += table("LLM calls per model", summary["calls_per_model"], "calls")
    out += table("LLM calls per purpose", summary["calls_per_purpose"], "calls")
    return "\n".join(out).rstrip() + "\n"
