"""Monitoring of the Research Assistant: one trace per answer with a span per LLM call (GenAI attributes), the
p50/p95 aggregation, and the /monitoring page behind the API's keys.

The brain is the real LangGraph graph on the ScriptedChat fake with simulated timings."""

from __future__ import annotations

from typing import Any

import pytest

from mastery.apps.assistant.events import Event, Question
from mastery.apps.assistant.graph import ResearchBrain
from mastery.apps.assistant.monitoring import (
    CALL_ATTRIBUTES,
    GEN_AI_INPUT_TOKENS,
    GEN_AI_OUTPUT_TOKENS,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_TTFT,
    PURPOSE,
    ROOT_SPAN,
    ROUTE,
    SimulatedSpeed,
    TimedChat,
    TracedBrain,
    TraceStore,
    missing_attributes,
    percentiles,
    summarize,
)
from mastery.llm.fake import ScriptedChat
from mastery.retrieval.types import Hit

PASSAGE = "Libtasn1 is a library for Abstract Syntax Notation One (ASN.1) structures and DER encoding."


class OneDocRetriever:
    name = "one-doc"

    def search(self, query: str, k: int = 10) -> list[Hit]:
        return [Hit("libtasn1.pdf:1", PASSAGE, 0.9, 1, {"source": "libtasn1.pdf", "page": 1, "similarity": 0.9})]


def fake_llm(critic: str = '{"ok": true, "problem": ""}') -> ScriptedChat:
    def respond(messages: list[dict[str, Any]], system: str) -> str:
        system = system or next((m["content"] for m in messages if m.get("role") == "system"), "")
        if "You route" in system:
            question = messages[-1]["content"].lower()
            return ('{"route": "direct", "reason": "small talk"}' if "hello" in question else
                    '{"route": "kb", "reason": "in the documents"}')
        if "You check an answer" in system or messages[-1]["content"].startswith("Check your answer above"):
            return critic
        if "helpful assistant" in system:
            return "Hello! How can I help?"
        return "Libtasn1 is a library for ASN.1 structures and DER encoding [1]."

    return ScriptedChat(respond)


def ask(brain: TracedBrain, text: str, session: str = "s1", owner: str = "alice") -> list[Event]:
    return list(brain.answer(Question(text=text, session_id=session, owner=owner, extra={"request_id": "r1"})))


@pytest.fixture
def traced(tmp_path: Any) -> Any:
    store = TraceStore(tmp_path / "traces.sqlite")
    brain = TracedBrain(ResearchBrain(TimedChat(fake_llm(), SimulatedSpeed(100.0, 10.0, 0.1), model="fake-0.5b"),
                                      OneDocRetriever()), store)
    yield brain, store
    brain.close()


def test_one_trace_per_answer_with_a_span_per_llm_call(traced: Any) -> None:
    brain, store = traced
    kb_events = ask(brain, "What is libtasn1?")
    direct_events = ask(brain, "hello there", session="s2")
    spans = store.spans()
    roots = [s for s in spans if s["name"] == ROOT_SPAN]
    assert len(roots) == 2 and len({s["trace_id"] for s in spans}) == 2
    for events in (kb_events, direct_events):
        calls = next(e.data["calls"] for e in events if e.kind == "usage")
        route = next(e.data["route"] for e in events if e.kind == "route")
        trace = next(r["trace_id"] for r in roots if r["attributes"][ROUTE] == route)
        children = [s for s in spans if s["trace_id"] == trace and s["parent_id"]]
        assert [c["attributes"][PURPOSE] for c in children] == [c["purpose"] for c in calls]
        for span, call in zip(children, calls, strict=True):
            a = span["attributes"]
            assert all(k in a for k in CALL_ATTRIBUTES)
            assert a[GEN_AI_REQUEST_MODEL] == "fake-0.5b" and span["name"] == "chat fake-0.5b"
            assert a[GEN_AI_INPUT_TOKENS] == call["prompt_tokens"] > 0
            assert a[GEN_AI_OUTPUT_TOKENS] == call["completion_tokens"] > 0
            assert a[ROUTE] == route
            # the span lasts the call's measured latency, inside its answer's span
            assert span["end_ns"] - span["start_ns"] == pytest.approx(call["latency_s"] * 1e9, abs=1e3)
            assert span["parent_id"] == next(r["span_id"] for r in roots if r["trace_id"] == trace)
        root = next(r for r in roots if r["trace_id"] == trace)
        assert root["attributes"][GEN_AI_INPUT_TOKENS] == sum(c["prompt_tokens"] for c in calls)
    kb_calls = [s for s in spans if s["parent_id"] and s["attributes"][ROUTE] == "kb"]
    assert [s["attributes"][PURPOSE] for s in kb_calls] == ["route", "draft", "critic"]
    draft = next(s for s in kb_calls if s["attributes"][PURPOSE] == "draft")
    critic = next(s for s in kb_calls if s["attributes"][PURPOSE] == "critic")
    assert draft["attributes"][GEN_AI_TTFT] > 0.1 and GEN_AI_TTFT not in critic["attributes"]  # not streamed
    assert missing_attributes(store) == []


def test_missing_attributes_finds_an_incomplete_trace(traced: Any) -> None:
    brain, store = traced
    ask(brain, "What is libtasn1?")
    store.exporter._db.execute("UPDATE spans SET attributes = '{}' WHERE name LIKE 'chat %' AND "
                               "attributes LIKE '%\"draft\"%'")
    problems = missing_attributes(store)
    assert len(problems) == 1 and GEN_AI_INPUT_TOKENS in problems[0]


def test_a_failed_answer_is_still_traced(tmp_path: Any) -> None:
    store = TraceStore(tmp_path / "t.sqlite")

    class Broken:
        def answer(self, question: Question) -> Any:
            yield Event("route", {"route": "kb"})
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        list(TracedBrain(Broken(), store).answer(Question("q", "s", "o")))
    (row,) = store.answers()
    assert row["status"] == "ERROR" and row["route"] == "kb" and row["llm_calls"] == 0


def test_percentiles_on_known_numbers() -> None:
    assert percentiles([float(x) for x in range(1, 11)]) == {"p50": 5.5, "p95": 9.55, "n": 10}
    assert percentiles([None, 3.0]) == {"p50": 3.0, "p95": 3.0, "n": 1}
    assert percentiles([]) == {"p50": None, "p95": None, "n": 0}


def test_summary_groups_by_route_and_model() -> None:
    def row(route: str, model: str, latency: float, tokens: int) -> dict[str, Any]:
        return {"route": route, "model": model, "latency_s": latency, "time_to_first_token_s": latency / 4,
                "tokens": tokens, "input_tokens": tokens - 10, "output_tokens": 10, "llm_calls": 3,
                "cost_usd": 0.001, "refused": False}

    answers = [row("kb", "m1", x, 100 * x) for x in range(1, 21)] + [row("direct", "m2", 0.5, 40)]
    s = summarize(answers, [{"model": "m1", "purpose": "draft", "latency_s": 2.0, "time_to_first_token_s": 0.5,
                             "input_tokens": 300, "output_tokens": 30, "cost_usd": 0.0}])
    assert s["overall"]["answers"] == 21
    assert s["per_route"]["kb"]["latency_s"] == {"p50": 10.5, "p95": 19.05, "n": 20}
    assert s["per_route"]["kb"]["tokens"]["p95"] == pytest.approx(1905.0)
    assert s["per_route"]["kb"]["time_to_first_token_s"]["p50"] == pytest.approx(10.5 / 4)
    assert s["per_model"]["m2"]["latency_s"]["p50"] == 0.5 and s["per_model"]["m2"]["answers"] == 1
    assert s["per_route"]["kb"]["cost_usd"] == pytest.approx(0.02)
    assert s["calls_per_model"]["m1"]["calls"] == 1 and s["calls_per_purpose"]["draft"]["input_tokens"]["p50"] == 300


def test_monitoring_page_needs_a_key_and_shows_the_numbers(tmp_path: Any) -> None:
    from mastery.apps.assistant.api import AssistantAPISettings, create_app
    from mastery.retrieval.kb import KnowledgeBase
    from mastery.serving.agent_client import api_client
    from mastery.serving.auth import KeyStore
    from mastery.serving.server import ServerThread
    from tests.test_kb import HashEmbedder

    keys = KeyStore(tmp_path / "keys.json")
    token = keys.create("alice")[1]
    brain = ResearchBrain(TimedChat(fake_llm(), SimulatedSpeed(100.0, 10.0, 0.1), model="fake-0.5b"),
                          OneDocRetriever())
    settings = AssistantAPISettings(brain=brain, kb=KnowledgeBase.open(tmp_path / "kb", HashEmbedder()),
                                    collection="c", db_path=tmp_path / "sessions.db", uploads_dir=tmp_path / "up",
                                    keys=keys)
    app = create_app(settings)
    server = ServerThread(app).start()
    try:
        with api_client(server.url, token, timeout=30.0) as client:
            sid = client.post("/sessions", json={}).json()["id"]
            reply = client.post(f"/sessions/{sid}/answer", json={"question": "What is libtasn1?"})
            assert reply.status_code == 200, reply.text
            assert httpx_get(server.url + "/monitoring").status_code == 401
            assert httpx_get(server.url + "/monitoring", "wrong-key").status_code == 401
            page = client.get("/monitoring")
            data = client.get("/monitoring/summary").json()
            assert httpx_get(server.url + "/monitoring/summary").status_code == 401
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        (trace,) = data["recent"]
        tokens = trace["tokens"]
        assert trace["route"] == "kb" and trace["llm_calls"] == 3 and tokens > 0
        kb = data["summary"]["per_route"]["kb"]
        assert kb["answers"] == 1 and kb["tokens"]["p50"] == tokens
        assert data["summary"]["calls_per_model"]["fake-0.5b"]["calls"] == 3
        # the page shows the same numbers: the kb row with its token p50 / p95, the model's calls
        assert "<td>kb</td><td>1</td>" in page.text and f"{tokens} / {tokens}" in page.text
        assert "<td>fake-0.5b</td><td>3</td>" in page.text
        assert (tmp_path / "traces.sqlite").is_file()
    finally:
        server.stop()
        app.state.close()


def httpx_get(url: str, token: str | None = None) -> Any:
    import httpx

    return httpx.get(url, headers={"Authorization": f"Bearer {token}"} if token else {}, trust_env=False)


def test_prompt_optimisation_switches_keep_a_cacheable_prefix() -> None:
    """critic_reuses_draft: the critic's prompt starts with the draft's whole prompt and reply (what llama.cpp's
    slot holds); short_template: one worked turn and a shorter system prompt."""
    from mastery.apps.assistant.graph import BrainSettings

    plain, reused = fake_llm(), fake_llm()
    for llm, settings in ((plain, BrainSettings()), (reused, BrainSettings(critic_reuses_draft=True,
                                                                           short_template=True))):
        events = list(ResearchBrain(llm, OneDocRetriever(), settings=settings).answer(
            Question("What is libtasn1?", "s", "o")))
        assert [c["purpose"] for c in next(e.data for e in events if e.kind == "usage")["calls"]] == \
            ["route", "draft", "critic"]
        assert next(e.data for e in events if e.kind == "answer")["text"].endswith("[1].")
    (p_draft, p_critic), (r_draft, r_critic) = (llm.calls[1:3] for llm in (plain, reused))
    assert p_critic["system"] and p_critic["messages"][0]["content"] != p_draft["messages"][0]["content"]
    assert r_critic["system"] is None
    assert r_critic["messages"][:len(r_draft["messages"])] == r_draft["messages"]
    assert r_critic["messages"][len(r_draft["messages"])] == {"role": "assistant", "content": r_draft["reply"]}
    assert len(p_draft["messages"]) == 6 and len(r_draft["messages"]) == 4  # system, 2 or 1 worked turns, question
    assert len(r_draft["messages"][0]["content"]) < len(p_draft["messages"][0]["content"])
    assert r_draft["messages"][-1] == p_draft["messages"][-1]  # the same passages and question


def test_prompt_opt_measures_each_variant_against_the_baseline() -> None:
    from mastery.apps.assistant.prompt_opt import measure, ratio_table, sample_questions
    from mastery.eval.assistant_tasks import EvalQuestion

    sent: list[Any] = []

    class Recording(TimedChat):
        def chat(self, messages: Any, **kwargs: Any) -> Any:
            sent.append(kwargs.get("extra_body"))
            return super().chat(messages, **kwargs)

        def stream(self, messages: Any, **kwargs: Any) -> Any:
            sent.append(kwargs.get("extra_body"))
            return super().stream(messages, **kwargs)

    questions = [EvalQuestion("t-1", "What is libtasn1?", "libtasn1.pdf", (1,), key_facts=(("DER",),)),
                 EvalQuestion("t-2", "Which encoding does libtasn1 use?", "libtasn1.pdf", (1,),
                              key_facts=(("BER",),))]
    result = measure(Recording(fake_llm(), model="fake"), OneDocRetriever(), questions,
                     ["baseline", "critic_reuse", "all"])
    base, reuse, best = (result["variants"][v] for v in ("baseline", "critic_reuse", "all"))
    assert [r["id"] for r in base["answers"]] == ["t-1", "t-2"] and len(best["answers"]) == 2
    assert base["key_facts_correct"] == best["key_facts_correct"] == 1  # DER is in the answer, BER is not
    # the draft reads fewer tokens (one worked turn, a shorter system prompt); the critic more: it carries the
    # draft's conversation, which the server's cache holds
    draft_tokens = [v["summary"]["calls_per_purpose"]["draft"]["input_tokens"]["p50"] for v in (base, best)]
    critic_tokens = [v["summary"]["calls_per_purpose"]["critic"]["input_tokens"]["p50"] for v in (base, reuse)]
    assert draft_tokens[1] < draft_tokens[0] and critic_tokens[1] > critic_tokens[0]
    assert {str(b) for b in sent} == {"{'cache_prompt': False}", "{'cache_prompt': True}"}
    # 3 calls x 2 questions per variant: the baseline without the cache, the other two with it
    assert sent.count({"cache_prompt": False}) == 6 and sent.count({"cache_prompt": True}) == 12
    assert base["ratios"]["latency_p50"] == 1.0 and best["ratios"]["latency_p50"] is not None
    assert [row["variant"] for row in ratio_table(result)] == ["baseline", "critic_reuse", "all"]
    assert result["servers"] == "shared"
    assert len(sample_questions(6)) == 6 and sum(not q.answerable for q in sample_questions(6)) == 1


def test_simulated_clock_times_answers_by_their_llm_calls(tmp_path: Any) -> None:
    from mastery.apps.assistant.monitoring import SimulatedClock

    clock = SimulatedClock()
    llm = TimedChat(fake_llm(), SimulatedSpeed(100.0, 10.0, 0.1), model="fake", clock=clock)
    store = TraceStore(tmp_path / "t.sqlite")
    ask(TracedBrain(ResearchBrain(llm, OneDocRetriever()), store, clock), "What is libtasn1?")
    (answer,) = store.answers()
    calls = store.calls()
    assert [c["purpose"] for c in calls] == ["route", "draft", "critic"]
    # nothing but the LLM takes simulated time: the answer lasts exactly its calls. (Its first token is stamped
    # when the event reaches the tracer, and LangGraph's node thread may have moved the clock on by then.)
    assert answer["latency_s"] == pytest.approx(sum(c["latency_s"] for c in calls), abs=1e-6)
    earliest = calls[0]["latency_s"] + calls[1]["time_to_first_token_s"]
    assert earliest - 1e-6 <= answer["time_to_first_token_s"] <= calls[0]["latency_s"] + calls[1]["latency_s"] + 1e-6


def test_monitor_command_prints_the_summary(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from mastery.cli import main

    store = TraceStore(tmp_path / "traces.sqlite")
    brain = TracedBrain(ResearchBrain(TimedChat(fake_llm(), SimulatedSpeed(100.0, 10.0, 0.1), model="fake-0.5b"),
                                      OneDocRetriever()), store)
    ask(brain, "What is libtasn1?")
    ask(brain, "hello there", session="s2")
    brain.close()
    assert main(["assistant", "monitor", "--dir", str(tmp_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["per_route"]) == {"kb", "direct"} and summary["calls_per_model"]["fake-0.5b"]["calls"] == 5
    assert main(["assistant", "monitor", "--dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "2 answers traced" in text and any(line.startswith("kb ") for line in text.splitlines())
    assert main(["assistant", "monitor", "--dir", str(tmp_path / "nowhere")]) == 2
    assert "no traces at" in capsys.readouterr().err
