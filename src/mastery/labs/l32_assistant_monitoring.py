"""L32 · Research Assistant: monitoring and polish. Every answer of the assistant's brain becomes an OpenTelemetry
trace (a span per LLM call: model, prompt and completion tokens, time to first token, latency, route, cost) in a
local SQLite store; the monitoring summary gives p50/p95 latency and tokens per answer, per route and per model;
the traces are checked complete; and the prompt optimisations (llama.cpp's prompt cache with a stable prefix,
fewer and shorter passages, a shorter template) are measured against the baseline, quality beside latency."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Interval

from mastery.core.progress import Progress
from mastery.core.report import Report
from mastery.eval.assistant_eval import TINY_DOCS, bm25_over
from mastery.llm.settings import QUALITY_MODEL

HEADLINE = ("answers_traced", "llm_spans", "traces_complete", "llm_latency_p50_s", "llm_latency_p95_s",
            "tokens_per_answer_p50")
REQUIRES: tuple[str, ...] = ()  # registered assets the tiny preset reads

# The tiny preset's questions over L30's few sentences (the scripted LLM answers from the best passage).
TINY_QUESTIONS = ("What is libtasn1?", "How do comments begin in ASN.1 syntax?", "How does the magic file start?",
                  "Who created the Debian Project?", "hello there", "What license covers libtasn1?")


@dataclass(frozen=True)
class Config:
    # "embedded": the local LLM via llama.cpp (llm_model) over the registered PDFs; "scripted": a fake LLM with
    # simulated CPU timings over a few sentences (tiny)
    llm: Literal["embedded", "scripted"] = "embedded"
    questions: Annotated[int, Interval(ge=1, le=200)] = 12  # evaluation questions asked and traced
    prompt_opt_questions: Annotated[int, Interval(ge=0, le=200)] = 6  # per variant; 0: no prompt-opt measurement
    # llama.cpp threads (None: MASTERY_LLM_THREADS / MASTERY_THREADS)
    threads: Annotated[int, Interval(ge=1, le=1024)] | None = None
    llm_model: str | None = None  # a registry GGUF (None: the configured one, MASTERY_LLM_MODEL)
    # USD per million tokens to trace as cost (a local model is free to run; tiny prices it like a hosted one)
    price_prompt_per_1m: Annotated[float, Interval(ge=0, le=1000)] = 0.0
    price_completion_per_1m: Annotated[float, Interval(ge=0, le=1000)] = 0.0
    seed: int = 0


PRESETS = {
    "tiny": Config(llm="scripted", questions=len(TINY_QUESTIONS), prompt_opt_questions=2, price_prompt_per_1m=0.1,
                   price_completion_per_1m=0.4),
    "full": Config(llm_model=QUALITY_MODEL),
}


def _tiny_llm() -> Any:
    """The scripted fake: routes by keyword, answers with the best-ranked (last) passage, the critic sends the
    license answer back once (so a revision is traced too)."""
    import re

    from mastery.llm.fake import ScriptedChat

    def respond(messages: list[dict[str, Any]], system: str) -> str:
        system = system or next((m["content"] for m in messages if m.get("role") == "system"), "")
        last = str(messages[-1]["content"])
        if "You route" in system:
            if "hello" in last.lower():
                return '{"route": "direct", "reason": "small talk"}'
            return '{"route": "kb", "reason": "about the documents"}'
        if "You check an answer" in system or last.startswith("Check your answer above"):
            bad = "Question: What license" in str(messages)
            return '{"ok": false, "problem": "too vague"}' if bad else '{"ok": true, "problem": ""}'
        if "helpful assistant" in system:
            return "Hello! Ask me about your documents."
        context = next((str(m["content"]) for m in reversed(messages) if "Context:" in str(m["content"])), last)
        passages = re.findall(r"\[(\d+)\] \([^)]*\) ([^\n]+)", context.split("Question:")[0])
        if not passages:
            return "I don't know."
        n, text = passages[-1]
        return f"{text.split('. ')[0].rstrip('.')} [{n}]."

    return ScriptedChat(respond, model="scripted-0.5b")


@contextlib.contextmanager
def _open_llm(config: Config) -> Iterator[Any]:
    from mastery.apps.assistant.monitoring import SimulatedClock, SimulatedSpeed, TimedChat

    if config.llm == "scripted":  # the fake's simulated CPU timings move a clock the traces read
        yield TimedChat(_tiny_llm(), SimulatedSpeed(), clock=SimulatedClock())
        return
    from mastery.llm.client import open_client
    from mastery.llm.settings import load_settings

    with open_client(load_settings(threads=config.threads, model=config.llm_model, timeout_s=600.0)) as llm:
        yield llm


def _retriever(config: Config, tmp: Path) -> tuple[Any, list[Any]]:
    """(retriever, questions): the tiny sentences with BM25, or the registered PDFs with the assistant's own
    retriever (hybrid, re-ranked when measured) and the evaluation set."""
    if config.llm == "scripted":
        return bm25_over(TINY_DOCS), list(TINY_QUESTIONS)
    from mastery.apps.assistant.graph import open_kb_retriever
    from mastery.apps.assistant.prompt_opt import pdf_knowledge_base, sample_questions
    from mastery.core.settings import get_settings

    kb = pdf_knowledge_base(get_settings().cache / "benchmarks" / "assistant-prompt-opt-kb")
    return open_kb_retriever(kb, "docs"), sample_questions(config.questions)


def run(config: Config, progress: Progress) -> Report:
    from mastery.apps.assistant.events import Question
    from mastery.apps.assistant.graph import ResearchBrain
    from mastery.apps.assistant.monitoring import TracedBrain, TraceStore, missing_attributes, summarize
    from mastery.core.labs import new_report

    report = new_report("l32", config)
    with tempfile.TemporaryDirectory(prefix="l32-") as folder, _open_llm(config) as llm:
        tmp = Path(folder)
        inner = getattr(llm, "llm", llm)  # the scripted fake under its timings
        report.device = f"LLM: {llm.model} via {getattr(inner, 'device', '?')}"
        if getattr(llm, "server", None) is not None:
            report.timing("llm_server_load_seconds", llm.server.load_seconds)
        start = time.perf_counter()
        retriever, questions = _retriever(config, tmp)
        report.timing("retriever_seconds", time.perf_counter() - start)
        store = TraceStore(tmp / "traces.sqlite")
        from mastery.agents.resilience import Price, PriceTable

        prices = PriceTable({llm.model: Price(config.price_prompt_per_1m, config.price_completion_per_1m)},
                            source="lab config")
        clock = getattr(llm, "clock", None) or time.time_ns
        brain = TracedBrain(ResearchBrain(llm, retriever, memory=tmp / "memory.sqlite", prices=prices), store, clock)
        usage_calls = 0
        progress.stage("answer and trace", len(questions))
        for i, q in enumerate(questions):
            text = q if isinstance(q, str) else q.question
            events = list(brain.answer(Question(text, session_id=f"l32-{i}", owner="lab")))
            usage_calls += sum(len(e.data["calls"]) for e in events if e.kind == "usage")
            progress.step()
        answers, calls = store.answers(), store.calls()
        summary = summarize(answers, calls)
        problems = missing_attributes(store)
        spans = store.spans()
        client_calls = [c for c in getattr(inner, "calls", []) if c.get("ok", True) and c.get("reply", "") is not None]
        brain.close()

        report.metric("answers_traced", len(answers))
        report.metric("llm_spans", len(calls))
        report.metric("traces_complete", float(not problems))
        llm_latency = summary["calls_per_model"][next(iter(summary["calls_per_model"]))]["latency_s"] if calls \
            else {"p50": None, "p95": None}
        # the LLM's own latencies: simulated (deterministic) for the scripted fake, measured for the real model
        put = report.metric if config.llm == "scripted" else report.timing
        put("llm_latency_p50_s", llm_latency["p50"] or 0.0)
        put("llm_latency_p95_s", llm_latency["p95"] or 0.0)
        report.metric("tokens_per_answer_p50", summary["overall"]["tokens"]["p50"] or 0.0)
        report.metric("tokens_per_answer_p95", summary["overall"]["tokens"]["p95"] or 0.0)
        put("answer_latency_p50_s", summary["overall"]["latency_s"]["p50"] or 0.0)
        put("answer_latency_p95_s", summary["overall"]["latency_s"]["p95"] or 0.0)
        # stamped when the token event reaches the tracer: with the simulated clock LangGraph's node thread may be
        # a call ahead by then, so this stays a timing even for the fake
        report.timing("answer_first_token_p50_s", summary["overall"]["time_to_first_token_s"]["p50"] or 0.0)
        report.timing("answer_first_token_p95_s", summary["overall"]["time_to_first_token_s"]["p95"] or 0.0)
        report.metric("cost_usd_total", summary["overall"]["cost_usd"])

        report.check("one_trace_per_answer", len(answers) == len(questions) and
                     len({s["trace_id"] for s in spans}) == len(questions),
                     "one trace (root span assistant.answer) per question asked", f"{len(answers)}/{len(questions)}")
        report.check("one_span_per_llm_call", len(calls) == usage_calls == len(client_calls),
                     "a child span for every LLM call the brain reported and the client made",
                     f"{len(calls)} spans, {usage_calls} reported, {len(client_calls)} made")
        report.check("attributes_complete", not problems, "every span carries the GenAI attributes (model, input and "
                     "output tokens), route, purpose, latency and cost; streamed calls their time to first chunk",
                     "; ".join(problems[:3]) or "all present")
        tokens_agree = sum(c["input_tokens"] for c in calls) == sum(
            int(getattr(c.get("completion"), "prompt_tokens", c.get("prompt_tokens", 0)) or 0) for c in client_calls)
        report.check("tokens_match_the_client", tokens_agree, "the spans' input tokens add up to what the LLM client "
                     "recorded for the same calls")
        expected_cost = sum(c["input_tokens"] * config.price_prompt_per_1m + c["output_tokens"] *
                            config.price_completion_per_1m for c in calls) / 1e6
        report.check("cost_traced", abs(summary["overall"]["cost_usd"] - expected_cost) <= 1e-6 + 1e-6 * expected_cost,
                     "each answer's cost is its calls' tokens at the configured prices",
                     f"{summary['overall']['cost_usd']:.6f} USD")
        routes_ok = all(v["latency_s"]["p50"] is not None and v["latency_s"]["p95"] is not None
                        for v in summary["per_route"].values()) and len(summary["per_route"]) >= 1
        report.check("summary_per_route_and_model", routes_ok and bool(summary["per_model"]),
                     "p50/p95 latency per route and per model", ", ".join(summary["per_route"]))
        report.table("per_route", [{"route": k, "answers": v["answers"], "latency_p50_s": v["latency_s"]["p50"],
                                    "latency_p95_s": v["latency_s"]["p95"],
                                    "first_token_p50_s": v["time_to_first_token_s"]["p50"],
                                    "tokens_p50": v["tokens"]["p50"], "tokens_p95": v["tokens"]["p95"]}
                                   for k, v in summary["per_route"].items()])
        report.table("llm_calls_per_purpose", [
            {"purpose": k, "calls": v["calls"], "latency_p50_s": v["latency_s"]["p50"],
             "latency_p95_s": v["latency_s"]["p95"], "first_token_p50_s": v["time_to_first_token_s"]["p50"],
             "prompt_tokens_p50": v["input_tokens"]["p50"], "completion_tokens_p50": v["output_tokens"]["p50"]}
            for k, v in summary["calls_per_purpose"].items()])
        report.table("llm_calls_per_model", [
            {"model": k, "calls": v["calls"], "latency_p50_s": v["latency_s"]["p50"],
             "latency_p95_s": v["latency_s"]["p95"], "cost_usd": v["cost_usd"]} for k, v in
            summary["calls_per_model"].items()])

        opt = None
        if config.prompt_opt_questions:
            from mastery.apps.assistant.prompt_opt import measure, ratio_table, sample_questions

            opt_questions = sample_questions(config.prompt_opt_questions)
            if config.llm == "scripted":  # the fake knows only the tiny sentences: ask it those
                from mastery.eval.assistant_tasks import EvalQuestion

                opt_questions = [EvalQuestion(f"tiny-{i}", TINY_QUESTIONS[i], TINY_DOCS[i][0], (TINY_DOCS[i][1],),
                                              key_facts=((TINY_DOCS[i][2].split()[-1].rstrip("."),),))
                                 for i in range(config.prompt_opt_questions)]
            progress.stage("prompt optimisation", 1)
            if config.llm == "scripted":
                opt = measure(llm, retriever, opt_questions, clock=clock)
            else:  # a server per variant: one shared cache would hand a variant the prompts another just sent
                from mastery.apps.assistant.prompt_opt import VARIANTS, variant_servers
                from mastery.llm.settings import load_settings

                chosen = load_settings(threads=config.threads, model=config.llm_model)
                with variant_servers(chosen.model_name, list(VARIANTS), chosen.threads) as clients:
                    opt = measure(clients, retriever, opt_questions)
            progress.step()
            report.table("prompt_optimisation", ratio_table(opt))
            for name, v in opt["variants"].items():
                if name != "baseline":
                    put(f"{name}_latency_ratio", v["ratios"]["latency_p50"] or 0.0)
                    put(f"{name}_total_ratio", v["ratios"]["latency_total"] or 0.0)
                report.metric(f"{name}_key_facts_correct", v["key_facts_correct"])
            report.check("prompt_opt_measured", all(v["ratios"]["latency_p50"] for v in opt["variants"].values()),
                         "every variant answered every question and has its latency ratio to the baseline",
                         ", ".join(opt["variants"]))
            report.note("Prompt optimisation: ratios are after / before (below 1 is faster), measured on the same "
                        "questions, interleaved; quality is key-fact correctness on the evaluation set. "
                        + ("The scripted fake's latencies are simulated from its token counts with no prompt cache: "
                           "the prompt_cache variant only pays for its longer critic prompt there; the real server "
                           "takes that prefix from its KV cache." if config.llm == "scripted" else ""))
        _figure(report, answers, calls, opt)
        report.note("Traces: OpenTelemetry spans (one root per answer, a child per LLM call named 'chat <model>', "
                    "attributes from the GenAI semantic conventions) written by an in-process exporter to SQLite; "
                    "the API serves the same summary at GET /monitoring.")
    return report


def _figure(report: Report, answers: list[dict[str, Any]], calls: list[dict[str, Any]],
            opt: dict[str, Any] | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if opt else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.2))
    routes = sorted({a["route"] for a in answers})
    axes[0].boxplot([[a["tokens"] for a in answers if a["route"] == r] for r in routes], tick_labels=routes)
    axes[0].set_title("Tokens per answer, per route")
    axes[0].set_ylabel("prompt + completion tokens")
    purposes = sorted({c["purpose"] for c in calls})
    axes[1].boxplot([[c["latency_s"] for c in calls if c["purpose"] == p] for p in purposes], tick_labels=purposes)
    axes[1].set_title("LLM call latency, per purpose")
    axes[1].set_ylabel("seconds")
    if opt:
        names = list(opt["variants"])
        ratios = [opt["variants"][n]["ratios"]["latency_p50"] or 0.0 for n in names]
        colors = ["C2" if opt["variants"][n]["quality_unchanged"] else "C3" for n in names]
        axes[2].barh(names, ratios, color=colors)
        axes[2].axvline(1.0, color="k", lw=0.8)
        axes[2].invert_yaxis()
        axes[2].set_title("Answer latency p50 / baseline (red: quality fell)")
    fig.tight_layout()
    report.figure("monitoring", fig)
    plt.close(fig)
