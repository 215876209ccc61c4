"""L22 support-bot router: policies, classification with retry and fallback, drafts, the LangGraph flow with human
review, the outbox, resuming from SQLite in a new process, the CLI; one end-to-end run with the real local LLM."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from mastery.agents.support import INTENTS
from mastery.agents.support.classify import FallbackClassifier, classify_message, parse_intent
from mastery.agents.support.drafting import (
    draft_problem,
    draft_reply,
    first_paragraph,
    mentions_key_fact,
    read_outbox,
    send_email,
    template_draft,
)
from mastery.agents.support.graph import BotSettings, SupportBot, SupportDeps, SupportError
from mastery.agents.support.policies import PolicyIndex, load_policies, parse_policy
from mastery.agents.support.scripted import keyword_script
from mastery.cli import main
from mastery.llm.errors import LLMServerDown
from mastery.llm.fake import ScriptedChat
from tests import llm_server as shared
from tests.llm_server import needs_llm

llm_server = shared.llm_server  # the session's one real embedded server (a fixture)

BEHAVIOUR = {
    "running shoes": ('{"intent": "refund"}',),
    "order #48213": ("Sure! The customer asks about", '```json\n{"intent": "shipping"}\n```'),
    "charged twice": ('{"intent": "payments"}', '{"intent": "double_charge"}'),
    "opera tickets": ('{"intent": "tickets"}', "no idea"),
    "store in lisbon": ('{"intent": "other"}',),
    "card number": ("GARBLED_DRAFT", '{"intent": "security"}'),
}
MESSAGES = {
    "good": "I bought running shoes last week and they are too small. How do I send them back?",
    "retry": "Where is my order #48213? It was supposed to arrive on Monday.",
    "invented": "I was charged twice for the same order on March 3rd.",
    "unknown": "Can I buy opera tickets through your site?",
    "other": "Do you have a physical store in Lisbon?",
    "garbled": "A strange website asked for my card number. Is that you?",
}


@pytest.fixture(scope="module")
def index() -> PolicyIndex:
    return PolicyIndex(load_policies(), mode="bm25")


def make_bot(tmp_path: Path, index: PolicyIndex, llm=None) -> SupportBot:
    deps = SupportDeps(llm=llm if llm is not None else ScriptedChat(keyword_script(BEHAVIOUR)),
                       settings=BotSettings(retrieval="bm25"), outbox=tmp_path / "outbox.jsonl",
                       index_factory=lambda: index)
    return SupportBot(tmp_path / "support.sqlite", deps)


# -- policies and retrieval ----------------------------------------------------------------------
def test_policies_ship_one_per_intent_with_key_facts_in_the_text(index):
    policies = load_policies()
    assert sorted(p.intent for p in policies) == sorted(INTENTS)
    assert len({p.id for p in policies}) == len(policies)
    for p in policies:
        assert p.key_facts and all(mentions_key_fact(p.body, replace(p, key_facts=(f,))) for f in p.key_facts), p.id
    assert all(d.metadata["policy_id"] in index.by_id for d in index.documents)
    assert index.search_policies("my parcel never arrived, tracking shows nothing", 1) == ["POL-SHIP"]
    assert index.search("   ") == []
    with pytest.raises(SupportError.__mro__[1]):  # PolicyError and SupportError are both MasteryErrors
        parse_policy("no header here", "bad.md")


# -- classification --------------------------------------------------------------------------------
@pytest.mark.parametrize("text, intent", [
    ('{"intent": "refund"}', "refund"), ('```json\n{"intent": "Billing"}\n```', "billing"),
    ('Sure: {"intent": "account access"}', "account_access"), ("warranty", "warranty"),
    ('{"intent": "phishing"}', None), ("I think it is about money", None), ("", None), ('{"intent": ', None)])
def test_parse_intent_is_tolerant_of_wrapping_and_strict_about_the_value(text, intent):
    got, problem = parse_intent(text)
    assert got == intent
    assert (problem is None) == (intent is not None)


def test_classification_paths_and_llm_errors_fall_back():
    fallback = FallbackClassifier()
    llm = ScriptedChat(keyword_script(BEHAVIOUR))
    good = classify_message(llm, MESSAGES["good"], fallback)
    assert (good.intent, good.decided_by, good.attempts) == ("refund", "llm", 1)
    retry = classify_message(llm, MESSAGES["retry"], fallback)
    assert (retry.intent, retry.decided_by, retry.attempts) == ("shipping", "llm_retry", 2)
    assert "is exactly one of" in llm.calls[-1]["messages"][-1]["content"]  # the reminder
    invented = classify_message(llm, MESSAGES["invented"], fallback)
    assert (invented.intent, invented.decided_by, invented.attempts) == ("billing", "keywords", 2)
    assert "unknown intent" in invented.error

    down = classify_message(ScriptedChat([LLMServerDown("no LLM server answers at http://127.0.0.1:1/v1")]),
                            MESSAGES["good"], fallback)
    assert down.decided_by == "keywords" and down.intent == "refund" and "LLMServerDown" in down.error
    assert FallbackClassifier().classify("What is the meaning of life?").decided_by == "none"


# -- drafts ----------------------------------------------------------------------------------------
def test_draft_checks_trim_and_fall_back_to_the_template(index):
    policy = index.policy("POL-REFUND")
    assert draft_problem("") == "empty" and draft_problem("ok.") .startswith("too short")
    assert draft_problem("def f():\n    return 1\n" + "x" * 60) == "code instead of an email"
    assert draft_problem("We can help with that today. " * 5) == "repeats itself"
    body, dropped = first_paragraph("Dear customer,\n\nYou have 30 days to\nreturn it.\n\nHow to return\n1. Open "
                                    "Orders\n\nBest regards,\nCustomer Support")
    assert body == "You have 30 days to return it." and dropped == 1
    assert first_paragraph("Dear customer,\n\nYou have 30 days", complete=False) == ("", 0)
    template = template_draft(policy)
    assert "POL-REFUND" in template and mentions_key_fact(template, policy)
    garbled = draft_reply(ScriptedChat(lambda m, s: "def reply():\n    pass\n" * 4), policy, "refund please")
    assert garbled.source == "template" and garbled.problem == "code instead of an email"
    uncited = draft_reply(ScriptedChat(lambda m, s: "Dear customer,\n\nYou can return items within 30 days of "
                                       "delivery for a full refund.\n\nBest regards,\nCustomer Support"),
                          policy, "refund please")
    assert uncited.source == "llm+citation" and "POL-REFUND" in uncited.text


def test_send_is_idempotent_per_key(tmp_path):
    outbox = tmp_path / "out.jsonl"
    first = send_email(outbox, key="t1:abc", thread_id="t1", text="Hello", policy_id="POL-SHIP", decision="approve")
    again = send_email(outbox, key="t1:abc", thread_id="t1", text="Hello", policy_id="POL-SHIP", decision="approve")
    assert not first["duplicate"] and again["duplicate"]
    assert [r["text"] for r in read_outbox(outbox)] == ["Hello"]


# -- the graph -------------------------------------------------------------------------------------
def test_graph_routes_each_path_and_stops_for_review(tmp_path, index):
    with make_bot(tmp_path, index) as bot:
        states = {name: bot.ask(name, text) for name, text in MESSAGES.items()}
    assert {k: (s["intent"], s["decided_by"]) for k, s in states.items()} == {
        "good": ("refund", "llm"), "retry": ("shipping", "llm_retry"), "invented": ("billing", "keywords"),
        "unknown": ("other", "none"), "other": ("other", "llm"), "garbled": ("security", "llm")}
    assert all(s["status"] == "awaiting_review" and s["next"] == ["human_review"] for s in states.values())
    for name in ("unknown", "other"):  # escalated: straight to a person, no retrieval, no draft
        assert states[name].get("draft") is None and "policy_id" not in states[name]
    assert states["good"]["policy_id"] == "POL-REFUND" and states["good"]["retrieved_ids"][0] == "POL-REFUND"
    assert states["good"]["draft_info"]["source"] == "llm" and "POL-REFUND" in states["good"]["draft"]
    assert states["garbled"]["draft_info"]["source"] == "template"


def test_review_approve_edit_reject_and_escalation(tmp_path, index):
    with make_bot(tmp_path, index) as bot:
        for name in ("good", "retry", "invented", "other"):
            bot.ask(name, MESSAGES[name])
        draft = bot.state("good")["draft"]
        assert bot.review("good", "approve")["status"] == "sent"
        assert bot.review("retry", "edit", "Your parcel is on its way.")["sent"]["text"] == "Your parcel is on its way."
        rejected = bot.review("invented", "reject")
        assert rejected["status"] == "rejected" and not rejected.get("sent")
        with pytest.raises(SupportError, match="nothing to approve"):
            bot.review("other", "approve")
        with pytest.raises(SupportError, match="needs the text"):
            bot.review("other", "edit", "  ")
        assert bot.state("other")["status"] == "awaiting_review"  # a refused decision changes nothing
        # a bad decision that reaches the graph directly (not through review()) makes it ask again, with the reason
        from langgraph.types import Command

        paused = bot.graph.invoke(Command(resume={"action": "approve"}), {"configurable": {"thread_id": "other"}})
        assert "nothing to approve" in paused["__interrupt__"][0].value["error"]
        assert bot.state("other")["status"] == "awaiting_review"
        assert bot.review("other", "edit", "We have no store in Lisbon.")["status"] == "sent"
        with pytest.raises(SupportError, match="not waiting for review"):
            bot.review("good", "approve")
        with pytest.raises(SupportError, match="already exists"):
            bot.ask("good", "another message")
        assert [e.split(":")[0] for e in bot.state("good")["events"]] == ["classify", "retrieve", "draft", "review",
                                                                          "send"]
    texts = [r["text"] for r in read_outbox(tmp_path / "outbox.jsonl")]
    assert texts == [draft, "Your parcel is on its way.", "We have no store in Lisbon."]


def test_resume_in_a_new_process_from_the_sqlite_file(tmp_path, index):
    with make_bot(tmp_path, index) as bot:
        draft = bot.ask("restart-1", MESSAGES["good"])["draft"]
    db, outbox = tmp_path / "support.sqlite", tmp_path / "outbox.jsonl"
    cli = [sys.executable, "-m", "mastery.cli", "support"]
    done = subprocess.run([*cli, "review", "--thread", "restart-1", "--approve", "--db", str(db), "--outbox",
                           str(outbox)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "sent (approve)" in done.stdout and "POL-REFUND" in done.stdout
    assert [json.loads(line)["text"] for line in outbox.read_text().splitlines()] == [draft]
    with make_bot(tmp_path, index) as bot:  # this process sees what the other one wrote
        assert bot.state("restart-1")["status"] == "sent"
        assert [h["next"] for h in bot.history("restart-1")][-2:] == [["send"], []]


# -- the CLI ---------------------------------------------------------------------------------------
def test_cli_ask_review_show_and_errors(tmp_path, capsys):
    db = str(tmp_path / "s.sqlite")
    assert main(["support", "ask", "I forgot my password and the reset email never arrives.", "--thread", "c1",
                 "--db", db, "--no-llm", "--retrieval", "bm25"]) == 0
    out = capsys.readouterr().out
    assert "account_access" in out and "POL-ACCESS" in out and "draft (template" in out
    assert main(["support", "show", "--thread", "c1", "--db", db]) == 0
    assert "awaiting_review" in capsys.readouterr().out
    assert main(["support", "review", "--thread", "c1", "--reject", "--db", db]) == 0
    assert "rejected: nothing sent" in capsys.readouterr().out
    for argv, message in (
            (["show", "--thread", "bad id!", "--db", db], "bad thread id"),
            (["show", "--thread", "nope", "--db", db], "no thread 'nope'"),
            (["show", "--thread", "c1", "--db", str(tmp_path / "missing.sqlite")], "no checkpoint database"),
            (["review", "--thread", "c1", "--approve", "--db", db], "not waiting for review"),
            (["ask", "hello", "--thread", "c1", "--db", db, "--no-llm", "--retrieval", "bm25"], "already exists")):
        assert main(["support", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    (tmp_path / "junk.sqlite").write_text("not a database")
    assert main(["support", "show", "--thread", "c1", "--db", str(tmp_path / "junk.sqlite")]) == 2
    assert "not a checkpoint database" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["support", "review", "--thread", "c1", "--approve", "--reject", "--db", db])
    assert exc.value.code == 2


# -- the real model ---------------------------------------------------------------------------------
@needs_llm
def test_end_to_end_with_the_local_llm(llm_server, tmp_path, capsys):
    db = str(tmp_path / "s.sqlite")
    assert main(["support", "ask", "Please cancel my subscription, I don't use it anymore.", "--thread", "e2e",
                 "--db", db, "--retrieval", "bm25", "--llm-url", llm_server.url]) == 0
    out = capsys.readouterr().out
    assert "intent:  cancellation" in out and "POL-CANCEL" in out  # the model or the fallback: either routes it
    assert main(["support", "review", "--thread", "e2e", "--approve", "--db", db]) == 0
    records = read_outbox(tmp_path / "s.outbox.jsonl")
    assert len(records) == 1 and "POL-CANCEL" in records[0]["text"] and records[0]["decision"] == "approve"
