"""L23 research crew: search backends (offline KB; web parsers on canned pages), the crew against a scripted
fake LLM (bounds, REVISE -> APPROVE, garbage and empty output), the CLI's errors, and one real-LLM run (slow)."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from mastery.agents.crew.crew import (
    CrewSettings,
    copied_fraction,
    find_cited,
    manager_objections,
    parse_verdict,
    run_crew,
    strip_prompt_echo,
    usable_report,
)
from mastery.agents.crew.llm import OFFLINE_ENV, react_from_json_call
from mastery.agents.crew.scripted import crew_script
from mastery.agents.crew.search import (
    DuckDuckGoSearch,
    KBSearch,
    SearchBackend,
    SearchError,
    SearxNGSearch,
    make_search,
)
from mastery.agents.tools import call_tool
from mastery.cli import main
from mastery.core.errors import ConfigError
from mastery.llm.fake import ScriptedChat
from mastery.retrieval.bm25 import BM25Retriever
from mastery.retrieval.types import Document, RetrievalError
from tests import llm_server as shared
from tests.conftest import needs_mirror
from tests.llm_server import needs_llm

llm_server = shared.llm_server

DOCS = [
    Document("attack:T1053.005", "T1053.005 Scheduled Task/Job: Scheduled Task\nAdversaries may abuse the Windows "
             "Task Scheduler (schtasks) for persistence.", {"technique_id": "T1053.005", "name": "Scheduled Task"}),
    Document("attack:T1547.001", "T1547.001 Registry Run Keys\nPrograms in run keys start at logon.",
             {"technique_id": "T1547.001", "name": "Registry Run Keys"}),
    Document("attack:T1003.001", "T1003.001 LSASS Memory\nAdversaries read LSASS process memory for credentials.",
             {"technique_id": "T1003.001", "name": "LSASS Memory"}),
]
TOPIC = "How do attackers use scheduled tasks for persistence?"


# -- search ------------------------------------------------------------------------------------------
def test_kb_search_offline_over_documents():
    search = KBSearch(documents=DOCS, dense=False)
    assert isinstance(search, SearchBackend) and search.source == ""  # opened on the first search
    hits = search.search("scheduled task persistence", 2)
    assert hits[0].citation() == "T1053.005" and hits[0].rank == 1
    assert search.source == "in memory (3 techniques); bm25"
    with pytest.raises(RetrievalError, match="query is empty"):
        search.search("  ")
    with pytest.raises(RetrievalError, match="k must be a positive integer"):
        DuckDuckGoSearch().search("x", 0)  # the web backends share the same input check


def test_kb_search_uses_the_knowledge_base_when_it_has_documents_and_falls_back_otherwise():
    class FakeKB:
        location = "fake"

        def __init__(self, n):
            self.n = n

        def count(self, collection):
            return self.n

        def retriever(self, collection, kind, **kwargs):
            assert (collection, kind) == ("attack", "bm25")
            return BM25Retriever(DOCS[2:])  # only T1003.001: where the hits came from is plain

    assert KBSearch(kb=FakeKB(0), documents=DOCS, dense=False).search("scheduled tasks", 1)[0].citation() \
        == "T1053.005"
    chroma = KBSearch(kb=FakeKB(5), documents=DOCS, dense=False)
    assert chroma.search("LSASS credentials", 3)[0].citation() == "T1003.001"
    assert chroma.source == "knowledge base fake, collection attack (5 documents); bm25"


class FirstLast:
    """A re-ranker that scores by the passage's last character: deterministic, and unlike any first stage."""

    name = "first-last"

    def score(self, query, texts):
        return np.array([ord(t.strip()[-1]) for t in texts], dtype=np.float64)


@needs_mirror  # MiniLM
@pytest.mark.parametrize("kb_present", [False, True])
def test_react_tool_and_crew_search_return_the_same_hits(kb_present, tmp_path, monkeypatch):
    """One ATT&CK search: the ReAct agent's kb_search and the crew's KBSearch agree, with or without a KB."""
    from mastery.agents import tools
    from mastery.retrieval import attack, rerank
    from mastery.retrieval.kb import KnowledgeBase, SentenceEmbedder

    monkeypatch.setattr(attack, "technique_documents", lambda **kw: list(DOCS))
    monkeypatch.setattr(rerank, "find_cross_encoder", lambda device="auto": FirstLast())
    monkeypatch.setattr(tools, "_DEFAULT_RETRIEVER", {})
    monkeypatch.delenv("MASTERY_CHROMA_URL", raising=False)
    monkeypatch.setenv("MASTERY_KB_DIR", str(tmp_path / "kb"))
    if kb_present:
        KnowledgeBase.open(tmp_path / "kb", SentenceEmbedder(device="cpu")).ingest_documents(
            list(reversed(DOCS)), "attack")
    react, crew = tools.default_retriever(), KBSearch()
    for query in ("scheduled tasks for persistence", "T1003.001", "programs that start at logon"):
        from_react = [h.metadata["technique_id"] for h in react.search(query, 3)]
        from_crew = [h.metadata["technique_id"] for h in crew.search(query, 3)]
        assert from_react == from_crew and len(from_react) == 3
    assert react.name == "hybrid+rerank" and react.source.startswith("knowledge base" if kb_present else "in memory")
    assert crew.source.startswith(react.source)
    out = call_tool(tools.kb_search_tool(), {"query": "T1003.001", "k": 1})  # the tool's default is that search
    assert out.startswith("1. T1003.001")


@needs_mirror
def test_kb_search_over_the_attack_corpus():
    hits = KBSearch(dense=False).search("scheduled tasks persistence", 3)
    assert "T1053.005" in [h.citation() for h in hits]


DDG_PAGE = """<div class="result"><h2><a rel="nofollow" class="result__a"
href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fattack.mitre.org%2Ftechniques%2FT1053%2F005%2F&amp;rut=x">Scheduled
<b>Task</b> | MITRE</a></h2><a class="result__snippet" href="#">Adversaries may abuse the <b>Task</b> Scheduler.</a>
</div><div class="result"><a class="result__a" href="https://example.org/cron">Cron jobs</a>
<a class="result__snippet" href="#">cron &amp; persistence</a></div>"""


def test_duckduckgo_parses_a_canned_page():
    hits = DuckDuckGoSearch.parse(DDG_PAGE, 5)
    assert [h.id for h in hits] == ["https://attack.mitre.org/techniques/T1053/005/", "https://example.org/cron"]
    assert hits[0].metadata["title"] == "Scheduled Task | MITRE"
    assert "Task Scheduler" in hits[0].text and hits[1].text.endswith("cron & persistence")
    with pytest.raises(SearchError, match="markup changed"):
        DuckDuckGoSearch.parse("<html>captcha</html>")


def test_searxng_parses_json_and_reports_transport_errors():
    payload = {"results": [{"url": "https://a.example/x", "title": "A", "content": "<b>alpha</b>", "engine": "bing"},
                           {"title": "no url"}, {"url": "https://b.example/", "title": "B", "content": "beta"}]}
    hits = SearxNGSearch.parse(payload, 5)
    assert [(h.rank, h.id, h.text) for h in hits] == [(1, "https://a.example/x", "A\nalpha"),
                                                       (2, "https://b.example/", "B\nbeta")]
    with pytest.raises(SearchError, match="no 'results'"):
        SearxNGSearch.parse({"error": "x"})
    ok = httpx.Client(transport=httpx.MockTransport(lambda req: httpx.Response(200, json=payload)))
    assert len(SearxNGSearch("http://searx.local", client=ok).search("alpha", 1)) == 1

    def down(request):
        raise httpx.ConnectError("no route", request=request)

    dead = httpx.Client(transport=httpx.MockTransport(down))
    with pytest.raises(SearchError, match=r"cannot reach .*no network"):
        SearxNGSearch("http://searx.local", client=dead).search("alpha")
    with pytest.raises(SearchError, match="needs a URL"):
        make_search("searxng")
    with pytest.raises(SearchError, match="unknown search backend"):
        make_search("google")


# -- parsing helpers -----------------------------------------------------------------------------------
def test_verdicts_citations_and_json_calls_are_parsed_tolerantly():
    assert parse_verdict("VERDICT: APPROVE") == "APPROVE"
    assert parse_verdict("**Verdict**: revise - add detection") == "REVISE"
    assert parse_verdict("Looks good to me.") == "APPROVE"
    assert parse_verdict("It is fine but needs changes") == "REVISE"
    assert parse_verdict("}}{{") == "UNCLEAR"
    sources = [{"citation": c} for c in ("T1053", "T1053.005")]
    assert find_cited("Tasks [1053.005] and T1053. Also T1999.", sources) == (["T1053", "T1053.005"], ["T1999"])
    call = react_from_json_call('```json\n{"name": "kb_search", "arguments": {"query": "cron"}}\n```', {"kb_search"})
    assert call.endswith('Action: kb_search\nAction Input: {"query": "cron"}')
    assert react_from_json_call('{"name": "other", "arguments": {}}', {"kb_search"}) is None
    assert not usable_report("VERDICT: APPROVE")
    assert usable_report("Adversaries abuse the Windows task scheduler for persistence [T1053].")


# -- the crew on a scripted model ------------------------------------------------------------------------
def _run(verdicts=("APPROVE",), mode="normal", rounds=2):
    return run_crew(TOPIC, ScriptedChat(crew_script(verdicts, mode)), KBSearch(documents=DOCS, dense=False),
                    CrewSettings(rounds=rounds))


def test_crew_revise_then_approve_records_everything():
    r = _run(("REVISE", "APPROVE"))
    assert (r.status, r.verdicts, r.rounds) == ("approved", ["REVISE", "APPROVE"], 2)
    assert len(r.drafts) == 2 and r.final_report == r.drafts[-1] and "detect" in r.final_report
    assert r.tool_calls[0]["by"] == "model" and r.tool_calls[0]["ids"][0] == "T1053.005"  # JSON call rewritten
    assert r.cited == ["T1053.005"] and not r.invalid_citations
    assert r.llm_calls == sum(a["calls"] for a in r.per_agent.values()) == 6
    assert r.crewai_usage["total_tokens"] == r.prompt_tokens + r.completion_tokens > 0
    assert r.format_repairs >= 3 and json.loads(json.dumps(r.to_dict()))["approved"] is True


def test_manager_checks_catch_what_a_lenient_critic_approves():
    sources = [{"citation": "T1053.005", "text": "Adversaries may abuse the Windows Task Scheduler to perform task "
                "scheduling for initial or recurring execution of malicious code."}]
    pasted = "Adversaries may abuse the Windows Task Scheduler to perform task scheduling for initial or recurring."
    assert copied_fraction(pasted, [sources[0]["text"]]) == 1.0
    assert copied_fraction("Attackers schedule tasks to run their code again [T1053.005].", [sources[0]["text"]]) == 0
    objections = manager_objections(pasted + " Sources: [T9999]", sources)
    assert [o.split(" ")[0] for o in objections] == ["cite", "remove", "remove", "80%"]
    assert manager_objections("Attackers schedule tasks to run code again and again [T1053.005].", sources) == []
    echoed = ("This is the expected criteria for your final answer: The corrected report. You MUST return the actual "
              "complete content as the final answer, not a summary. Attackers schedule tasks [T1053.005].")
    assert strip_prompt_echo(echoed, "The corrected report.") == "Attackers schedule tasks [T1053.005]."
    bracketed = "[This is the expected criteria for your final answer: A report. Facts [T1]."
    assert strip_prompt_echo(bracketed, "A report.") == "Facts [T1]."


def test_crew_respects_the_round_bound():
    r = _run(("REVISE",) * 5, rounds=3)
    assert r.status == "max_rounds" and r.rounds == 3 and "not approved after 3" in r.reason
    assert len(r.drafts) == 3  # the first draft plus an edit after each REVISE that had a review after it
    one = _run(("REVISE",), rounds=1)
    assert (one.status, one.rounds, len(one.drafts)) == ("max_rounds", 1, 1)


@pytest.mark.parametrize("mode, reason", [("garbage", "not a report"), ("empty", "no report")])
def test_crew_ends_cleanly_on_a_broken_model(mode, reason):
    r = _run(mode=mode)
    assert r.status == "failed" and reason in r.reason and r.final_report == ""
    assert r.fallback_search and r.sources  # the manager searched when the model could not
    assert r.llm_calls <= 8  # bounded by max_iter, no loop


def test_crew_settings_and_topic_are_validated():
    with pytest.raises(ConfigError, match="rounds"):
        CrewSettings(rounds=0).validate()
    with pytest.raises(ConfigError, match="empty topic"):
        run_crew(" ", ScriptedChat(crew_script()), KBSearch(documents=DOCS, dense=False))


def test_crewai_stays_offline(monkeypatch):
    import os
    import socket

    attempts: list[str] = []
    guarded = socket.socket.connect  # conftest's guard: loopback only

    def spy(self, address):  # type: ignore[no-untyped-def]
        if isinstance(address, tuple) and not str(address[0]).startswith(("127.", "::1", "localhost")):
            attempts.append(str(address))  # CrewAI may swallow the guard's error: record the attempt itself
        return guarded(self, address)

    monkeypatch.setattr(socket.socket, "connect", spy)
    r = _run(("REVISE", "APPROVE"))
    assert r.approved and attempts == []
    assert all(os.environ[k] == v for k, v in OFFLINE_ENV.items())
    assert os.path.isabs(os.environ["CREWAI_STORAGE_DIR"])
    # ...and the opt-outs leave other OpenTelemetry users in the process alone (the assistant's traces)
    from opentelemetry.sdk.trace import TracerProvider

    with TracerProvider().get_tracer("after-a-crew").start_as_current_span("probe") as span:
        assert span.is_recording()


# -- CLI -----------------------------------------------------------------------------------------------------
def test_crew_cli_errors(capsys):
    assert main(["crew", "run", "topic", "--search", "searxng", "--llm-url", "http://127.0.0.1:9/v1"]) == 2
    assert "needs a URL" in capsys.readouterr().err
    assert main(["crew", "run", "topic", "--rounds", "0", "--llm-url", "http://127.0.0.1:9/v1"]) == 2
    assert "rounds" in capsys.readouterr().err
    # a dead LLM server: every stage fails, the crew ends "failed" with a reason, exit code 1 (not a traceback)
    code = main(["crew", "run", "topic", "--bm25-only", "--llm-url", "http://127.0.0.1:9/v1", "--json"])
    out = capsys.readouterr().out
    assert code == 1 and json.loads(out)["status"] == "failed"


# -- the real model ------------------------------------------------------------------------------------------
@pytest.mark.slow
@needs_llm
@needs_mirror
def test_crew_with_the_embedded_llm(llm_server):
    from mastery.llm.client import LLMClient
    from mastery.llm.settings import load_settings

    client = LLMClient(load_settings(base_url=llm_server.url), model=llm_server.alias if hasattr(
        llm_server, "alias") else None, verify_model=False)
    r = run_crew(TOPIC, client, KBSearch(), CrewSettings(rounds=1))
    assert r.status in ("approved", "max_rounds", "failed") and r.rounds <= 1
    assert r.llm_calls >= 2 and r.prompt_tokens > 0 and r.sources
