"""Prompt optimisation of the Research Assistant, measured: the same questions answered with each change on its
own and all together, answer latency as ratios to the baseline, and key-fact correctness on the evaluation set
beside it (a change that is faster but answers worse is not an optimisation).

    result = measure(llm, retriever, sample_questions(6))     # llm: an LLMClient on llama.cpp's server
    result["variants"]["all"]["ratios"]["latency_p50"]       # < 1: faster than the baseline

The changes (:data:`VARIANTS`):

- ``prompt_cache``: llama.cpp's prompt cache (``cache_prompt``, the server's default) over prompts that keep a
  stable prefix: the system prompt and worked turns come first and never change, the passages and the question
  last, so each call reads only what is new since the last call of its kind (the server keeps earlier prompts in
  RAM, ``cache_ram_mib``). The other variants send ``cache_prompt: false``: every prompt is read from its first
  token.
- ``critic_reuse``: the cache, and the critic continuing the draft's conversation
  (:attr:`BrainSettings.critic_reuses_draft`): the slot's KV cache then holds all but the critic's instruction.
- ``fewer_passages``: 3 passages of at most 600 characters instead of 4 of 1200 (the re-ranked best are kept).
- ``short_template``: a shorter system prompt and one worked turn instead of two
  (:attr:`BrainSettings.short_template`).

Every variant has its own llama.cpp server (:func:`variant_servers`): one server's prompt cache would hand a
variant the prompts another variant had just sent for the same question (measured on the 0.5B: with one shared
server the cached variant took 96% of its prompt tokens from the cache and looked 5x faster; with a server each,
8%). Each answer's latency is the whole answer, wall clock (route, retrieval, draft, check, critic, revision),
from its trace (:mod:`.monitoring`); the server's own timings give the prompt tokens it read and those it took
from its cache. Questions are interleaved (every variant answers question 1, then question 2, ...) so that a
busy machine slows every variant alike.

Why the cache alone gains little here: the embedded server has one slot (``n_parallel = 1``), and the route,
draft and critic prompts start differently, so each call finds the previous call's prompt in the slot and shares
only the chat template's first tokens with it. Slots per purpose (llama.cpp picks the slot whose prompt is most
similar) would keep each stable prefix warm.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mastery.apps.assistant.events import Question
from mastery.apps.assistant.monitoring import TracedBrain, TraceStore, summarize

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    cache_prompt: bool = False
    settings: dict[str, Any] = field(default_factory=dict)  # BrainSettings fields


VARIANTS: dict[str, Variant] = {
    "baseline": Variant(),
    "prompt_cache": Variant(cache_prompt=True),
    # measured on the 0.5B (3 questions, a server each): 0.69x the baseline's latency, but the model asked to check
    # its own answer in the same conversation rejected good drafts and the revisions said "I don't know" (1 of 3
    # correct against 2 of 3): not in "all"
    "critic_reuse": Variant(cache_prompt=True, settings={"critic_reuses_draft": True}),
    "fewer_passages": Variant(settings={"k": 3, "context_chars": 600}),
    "short_template": Variant(settings={"short_template": True}),
    "all": Variant(cache_prompt=True, settings={"k": 3, "context_chars": 600, "short_template": True}),
}
PDF_DOCUMENTS = ("libtasn1.pdf", "shared-mime-info-spec.pdf", "debian-faq.en.pdf")


class CacheControl:
    """A ChatModel wrapper that sends llama.cpp's ``cache_prompt`` with every call and keeps the server's
    timings (``prompt_n``: prompt tokens read, ``cache_n``: prompt tokens taken from the cache)."""

    def __init__(self, llm: Any, cache_prompt: bool) -> None:
        self.llm, self.cache_prompt = llm, cache_prompt
        self.model = getattr(llm, "model", "")
        self.timings: list[dict[str, Any]] = []

    def _body(self) -> dict[str, Any]:
        return {"cache_prompt": self.cache_prompt}

    def chat(self, messages: Any, **kwargs: Any) -> Any:
        completion = self.llm.chat(messages, **{**kwargs, "extra_body": self._body()})
        self.timings.append(dict(completion.server_timings or {}))
        return completion

    def stream(self, messages: Any, **kwargs: Any) -> Any:
        inner = self.llm.stream(messages, **{**kwargs, "extra_body": self._body()})
        outer = self

        class _Stream:
            def __iter__(self) -> Any:
                return iter(inner)

            def read(self) -> Any:
                completion = inner.read()
                outer.timings.append(dict(completion.server_timings or {}))
                return completion

        return _Stream()


@contextlib.contextmanager
def variant_servers(model: str, variants: Sequence[str], threads: int | None = None) -> Iterator[dict[str, Any]]:
    """One embedded llama.cpp server (and its warmed-up client) per variant, stopped on exit."""
    from mastery.llm.client import LLMClient
    from mastery.llm.server import EmbeddedServer
    from mastery.llm.settings import load_settings

    alias = Path(model).stem if model.endswith(".gguf") else model
    with contextlib.ExitStack() as stack:
        clients = {}
        for name in variants:
            server = stack.enter_context(EmbeddedServer(model, threads=threads, alias=alias))
            client = LLMClient(load_settings(backend="openai", base_url=server.url, model=alias, timeout_s=600.0),
                               device=f"llama.cpp on {server.device}, {threads or 'default'} threads")
            client.chat("Say OK.", max_tokens=4)  # the first call pays for warming up: not the measurement's
            clients[name] = client
        yield clients


def sample_questions(n: int = 6, documents: Sequence[str] = PDF_DOCUMENTS) -> list[Any]:
    """``n`` questions of the evaluation set, one document after the other (and about one in six that no
    document answers), always the same ones for the same ``n``."""
    from mastery.eval.assistant_tasks import QUESTIONS

    pools = [[q for q in QUESTIONS if q.source == d] for d in documents]
    unanswerable = [q for q in QUESTIONS if not q.answerable]
    out: list[Any] = []
    i = 0
    while len(out) < n and (any(pools) or unanswerable):
        if unanswerable and (len(out) + 1) % 6 == 0:
            out.append(unanswerable.pop(0))
        elif pools[i % len(pools)]:
            out.append(pools[i % len(pools)].pop(0))
            i += 1
        else:
            i += 1
            if not any(pools) and unanswerable:
                out.append(unanswerable.pop(0))
    return out


def pdf_knowledge_base(folder: str | Path, documents: Sequence[str] = PDF_DOCUMENTS, collection: str = "docs") -> Any:
    """A knowledge base in ``folder`` holding the registered PDFs as the ingest reads them (kept between runs:
    a file already there is not embedded again)."""
    from mastery.assets.loaders import load_kb_pdfs
    from mastery.retrieval.kb import KnowledgeBase

    kb = KnowledgeBase.open(folder)
    have = {r["source"] for r in kb.sources(collection)} if collection in kb.collections() else set()
    missing = [d for d in documents if d not in have]
    if missing:
        start = time.perf_counter()
        kb.ingest_files([p for p in load_kb_pdfs() if p.name in missing], collection)
        log.info("event=prompt_opt_kb ingested=%s seconds=%.0f", ",".join(missing), time.perf_counter() - start)
    return kb


def _median(xs: Sequence[float | None]) -> float | None:
    ys = [x for x in xs if x is not None]
    return statistics.median(ys) if ys else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def measure(llm: Any, retriever: Any, questions: Sequence[Any], variants: Sequence[str] = tuple(VARIANTS), *,
            brain_factory: Callable[..., Any] | None = None, clock: Callable[[], int] = time.time_ns,
            progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Answer every question with every variant (interleaved); per variant the answers, the monitoring summary,
    ``llm``: one ChatModel for all, or ``{variant: ChatModel}`` (:func:`variant_servers`).
    quality (key facts on answerable questions, refusals on the others) and the ratios to ``baseline``.
    ``clock``: what the traces time answers with (a :class:`~.monitoring.SimulatedClock` for a fake LLM)."""
    from mastery.apps.assistant.graph import BrainSettings, ResearchBrain
    from mastery.eval.assistant_tasks import key_facts_found, refused

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or "baseline" not in variants:
        from mastery.core.errors import ConfigError

        raise ConfigError(f"variants must include baseline and come from {', '.join(VARIANTS)}; got {list(variants)}")
    make = brain_factory or ResearchBrain
    runs = {}
    for name in variants:
        v = VARIANTS[name]
        chat = CacheControl(llm[name] if isinstance(llm, dict) else llm, v.cache_prompt)
        store = TraceStore(":memory:")
        brain = TracedBrain(make(chat, retriever, settings=replace(BrainSettings(), **v.settings)), store, clock)
        runs[name] = (chat, store, brain, [])
    for qi, q in enumerate(questions):
        for name in variants:
            chat, store, brain, rows = runs[name]
            before = len(chat.timings)
            events = list(brain.answer(Question(q.question, session_id=f"{name}-{qi}", owner="bench")))
            answer = next((e.data for e in events if e.kind == "answer"), {"text": "", "refused": True})
            trace = store.answers(limit=1)[0]
            timings = chat.timings[before:]
            rows.append({"id": q.id, "answerable": q.answerable, "route": trace["route"],
                         "latency_s": round(trace["latency_s"], 3),
                         "time_to_first_token_s": trace["time_to_first_token_s"],
                         "prompt_tokens": trace["input_tokens"], "completion_tokens": trace["output_tokens"],
                         "llm_calls": trace["llm_calls"],
                         "prompt_tokens_read": sum(int(t.get("prompt_n") or 0) for t in timings),
                         "prompt_tokens_cached": sum(int(t.get("cache_n") or 0) for t in timings),
                         "correct": key_facts_found(answer["text"], q),
                         "refused": bool(answer.get("refused")) or refused(answer["text"]),
                         "answer": answer["text"][:200]})
            progress(f"{q.id} {name}: {trace['latency_s']:.1f}s, correct={rows[-1]['correct']}")
    one = next(iter(llm.values())) if isinstance(llm, dict) else llm
    out: dict[str, Any] = {"questions": [q.id for q in questions], "model": getattr(one, "model", "?"),
                           "servers": "one per variant" if isinstance(llm, dict) else "shared", "variants": {}}
    for name in variants:
        chat, store, brain, rows = runs[name]
        answerable = [r for r in rows if r["answerable"]]
        others = [r for r in rows if not r["answerable"]]
        out["variants"][name] = {
            "settings": {"cache_prompt": VARIANTS[name].cache_prompt, **VARIANTS[name].settings},
            "latency_p50_s": _median([r["latency_s"] for r in rows]),
            "latency_total_s": round(sum(r["latency_s"] for r in rows), 3),
            "ttft_p50_s": _median([r["time_to_first_token_s"] for r in rows]),
            "prompt_tokens_p50": _median([r["prompt_tokens"] for r in rows]),
            "prompt_tokens_read_total": sum(r["prompt_tokens_read"] for r in rows),
            "prompt_tokens_cached_total": sum(r["prompt_tokens_cached"] for r in rows),
            "key_facts_correct": sum(r["correct"] for r in answerable), "answerable": len(answerable),
            "refused_unanswerable": sum(r["refused"] for r in others), "unanswerable": len(others),
            "summary": summarize(store.answers(), store.calls()), "answers": rows}
        brain.close()
    base = out["variants"]["baseline"]
    for v in out["variants"].values():
        v["ratios"] = {"latency_p50": _ratio(v["latency_p50_s"], base["latency_p50_s"]),
                       "latency_total": _ratio(v["latency_total_s"], base["latency_total_s"]),
                       "ttft_p50": _ratio(v["ttft_p50_s"], base["ttft_p50_s"]),
                       "prompt_tokens_read": _ratio(v["prompt_tokens_read_total"] or None,
                                                    base["prompt_tokens_read_total"] or None)}
        v["quality_unchanged"] = (v["key_facts_correct"] >= base["key_facts_correct"]
                                  and v["refused_unanswerable"] >= base["refused_unanswerable"])
    return out


def ratio_table(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per variant: the ratios to the baseline (after / before: below 1 is faster) and the quality."""
    return [{"variant": name, "latency_p50_s": v["latency_p50_s"], "latency_ratio": v["ratios"]["latency_p50"],
             "total_ratio": v["ratios"]["latency_total"], "ttft_ratio": v["ratios"]["ttft_p50"],
             "prompt_read_ratio": v["ratios"]["prompt_tokens_read"],
             "key_facts": f"{v['key_facts_correct']}/{v['answerable']}",
             "refused_unanswerable": f"{v['refused_unanswerable']}/{v['unanswerable']}",
             "quality_unchanged": v["quality_unchanged"]} for name, v in result["variants"].items()]
