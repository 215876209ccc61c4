"""RAG: prompt, citation and refusal checks (no LLM), then `mastery rag ask` end to end with the real LLM."""

from __future__ import annotations

import pytest

from mastery.core.errors import MasteryError
from mastery.llm.fake import ScriptedChat
from mastery.llm.rag import (
    DECLINE_TEXT,
    answer_from,
    ask,
    build_prompt,
    content_words,
    find_citations,
    is_decline,
    support_scores,
)
from mastery.retrieval.types import Hit
from tests import llm_server as shared
from tests.llm_server import needs_llm

llm_server = shared.llm_server  # the session's one real embedded server (a fixture)

HITS = [
    Hit("a", "The Zephyr-9 keeps nightly snapshots for 42 days before it deletes them.", 0.8, 1,
        {"source": "zephyr.pdf", "page": 1}),
    Hit("b", "T1003.001 OS Credential Dumping: LSASS Memory\nAdversaries may read LSASS process memory.", 0.5, 2,
        {"source": "mitre-attack", "technique_id": "T1003.001"}),
    Hit("c", "Hold the blue button for 12 seconds to reset the password.", 0.3, 3,
        {"source": "zephyr.pdf", "page": 2}),
]


def test_prompt_numbers_and_cuts_the_passages():
    messages = build_prompt("How long are snapshots kept?", HITS, context_chars=40)
    user = messages[-1]["content"]
    assert messages[0]["role"] == "system" and "I don't know" in messages[0]["content"]
    assert user.startswith("Context:\n[1] (zephyr.pdf p.1) The Zephyr-9") and "[2] (T1003.001)" in user
    assert "[3] (zephyr.pdf p.2)" in user and user.endswith("Question: How long are snapshots kept?")
    assert "deletes them" not in user and " ..." in user  # cut to 40 characters at a word boundary
    assert [m["role"] for m in messages[1:-1]] == ["user", "assistant", "user", "assistant"]  # the worked turns


@pytest.mark.parametrize("text, cited, invalid", [
    ("Snapshots are kept for 42 days [1].", [1], []),
    ("See [1, 3] and [2][5].", [1, 2, 3], [5]),
    ("According to passage 2, LSASS memory.", [2], []),
    ("Adversaries read LSASS memory (T1003.001).", [2], []),
    ("It is in zephyr.pdf p.2.", [3], []),
    ("It is in zephyr.pdf.", [1, 3], []),  # a bare file name counts for every given chunk of it
    ("No citation at all.", [], []),
    ("[0] and [4]", [], [0, 4]),
])
def test_citations_are_found_and_checked_against_the_given_sources(text, cited, invalid):
    assert find_citations(text, HITS) == (cited, invalid)


@pytest.mark.parametrize("text, declined", [
    ("I don't know.", True), ("I do not know the answer.", True), ("I don\u2019t know.", True),
    ("The context does not mention a warranty.", True), ("The passages do not contain this information.", True),
    ("There is no information about that.", True), ("", True), ("I cannot answer that from the context.", True),
    ("Snapshots are kept for 42 days [1].", False),
    ("Snapshots are kept for 42 days [1]. The context does not mention backups.", False),  # first sentence only
])
def test_declines_are_recognised(text, declined):
    assert is_decline(text) is declined


def test_support_catches_answers_the_sources_do_not_contain():
    assert content_words("The Zephyr-9 keeps snapshots [1].") == ["zephyr-9", "keeps", "snapshots"]
    assert support_scores("The Zephyr-9 keeps nightly snapshots for 42 days [1].", HITS)[0] == 1.0
    made_up = answer_from("warranty?", "The Zephyr-9 has a warranty period of 12 months [3].", HITS, None)
    assert made_up.declined and made_up.decline_reason == "unsupported" and made_up.model_cited == [3]
    assert made_up.cited == [] and "not supported" in made_up.final_text()
    # right answer, wrong citation: the wrong one is dropped and the supporting source attached
    moved = answer_from("kept?", "Snapshots are kept for 42 days before it deletes them [3].", HITS, None)
    assert moved.cited == [1] and moved.attached and not moved.declined
    assert moved.final_text().endswith("Sources: [1] zephyr.pdf p.1")
    good = answer_from("kept?", "The Zephyr-9 keeps nightly snapshots for 42 days [1].", HITS, None)
    assert good.cited == [1] and not good.attached and good.citations == ["zephyr.pdf p.1"]
    refused = answer_from("x?", "I don't know.", HITS, None)
    assert refused.declined and refused.decline_reason == "model" and refused.cited == []


class _Retriever:
    name = "fixed"

    def search(self, query, k):
        return HITS[:k]


def test_ask_streams_checks_and_gates():
    # the best hit (HITS[0]) is listed last, next to the question, as [2]: the model cites it by that number
    llm = ScriptedChat(["The Zephyr-9 keeps nightly snapshots for 42 days [2]."])
    streamed: list[str] = []
    answer = ask(llm, _Retriever(), "How long?", k=2, on_text=streamed.append, max_tokens=64)
    assert "".join(streamed) == "The Zephyr-9 keeps nightly snapshots for 42 days [2]." and len(streamed) == 9
    assert answer.pieces == 9 and answer.cited == [2] and answer.hits == [HITS[1], HITS[0]]
    prompt = llm.calls[0]["messages"][-1]["content"]
    assert prompt.index("[1]") < prompt.index("[2]") < prompt.index("42 days") < prompt.index("Question:")
    assert answer.completion is not None and answer.completion.stream and answer.completion.completion_tokens > 0
    asked = llm.calls[0]
    assert (asked["max_tokens"], asked["temperature"], asked["seed"]) == (64, 0.0, 0)
    assert "How long?" in asked["messages"][-1]["content"]
    assert "[2]" in asked["messages"][-1]["content"] and "[3]" not in asked["messages"][-1]["content"]  # k=2
    gated = ask(llm, _Retriever(), "Unrelated?", min_score=0.9, on_text=streamed.append)
    assert gated.declined and gated.decline_reason == "score_gate" and gated.completion is None
    assert len(llm.calls) == 1 and streamed[-1] == DECLINE_TEXT  # the LLM was not asked


@pytest.fixture(scope="module")
def zephyr_kb(tmp_path_factory):
    from mastery.eval.rag_tasks import RUNBOOK, ZEPHYR_PAGES
    from mastery.retrieval.documents import write_text_pdf
    from mastery.retrieval.kb import KnowledgeBase, SentenceEmbedder

    folder = tmp_path_factory.mktemp("rag")
    write_text_pdf(folder / "zephyr-handbook.pdf", ZEPHYR_PAGES)
    (folder / "runbook.md").write_text(RUNBOOK)
    kb = KnowledgeBase.open(folder / "kb", SentenceEmbedder(device="cpu"))
    kb.ingest_files([folder / "zephyr-handbook.pdf", folder / "runbook.md"], "docs", chunk_size=400,
                    chunk_overlap=0)
    return folder / "kb"


@needs_llm
def test_rag_ask_cli_answers_from_a_pdf_with_citations(llm_server, zephyr_kb, capsys):
    from mastery.cli import main

    code = main(["rag", "ask", "How many days does the Zephyr-9 keep nightly snapshots?", "--collection", "docs",
                 "--kb-dir", str(zephyr_kb), "--llm-url", llm_server.url, "--max-tokens", "40", "--device", "cpu"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "42" in out.out and "Sources: [3] zephyr-handbook.pdf p.1" in out.out
    assert "[3] zephyr-handbook.pdf p.1  (fused score" in out.out and "completion tokens" in out.err


@needs_llm
def test_rag_ask_declines_and_reports_bad_collections(llm_server, zephyr_kb, capsys):
    from mastery.cli import main

    code = main(["rag", "ask", "Who wrote the novel Moby-Dick?", "--collection", "docs", "--kb-dir",
                 str(zephyr_kb), "--llm-url", llm_server.url, "--max-tokens", "24", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0 and "I don't know" in out
    assert main(["rag", "ask", "anything", "--collection", "nope", "--kb-dir", str(zephyr_kb), "--llm-url",
                 llm_server.url, "--device", "cpu"]) == 2
    assert "nope" in capsys.readouterr().err


def test_the_score_gate_reads_the_dense_similarity_whatever_the_retriever_scores():
    from dataclasses import replace

    from mastery.llm.rag import best_similarity

    fused = [replace(h, score=1 / (60 + h.rank), metadata={**h.metadata, "similarity": sim})
             for h, sim in zip(HITS, (0.42, 0.93, None), strict=True)]
    assert best_similarity(fused) == 0.93 and best_similarity(HITS) is None

    class Fused:
        name = "hybrid"

        def search(self, query, k):
            return fused[:k]

    llm = ScriptedChat(["The Zephyr-9 keeps nightly snapshots for 42 days [1]."])
    passed = ask(llm, Fused(), "How long?", k=2, min_score=0.9)  # 0.93 >= 0.9 although every score is < 0.02
    assert not passed.declined and len(llm.calls) == 1
    gated = ask(llm, Fused(), "How long?", k=1, min_score=0.9)  # only the 0.42 passage is retrieved
    assert gated.decline_reason == "score_gate" and len(llm.calls) == 1
    with pytest.raises(MasteryError, match="query is empty"):
        from mastery.retrieval.hybrid import HybridRetriever

        ask(llm, HybridRetriever([Fused()]), " ")
