"""L30's evaluation of the assistant's brain: the scripted LLM really obeys the poisoned passage (so the injection
probe tests the brain's citation check), the scores are the issue's definitions, and cited ATT&CK passages are
matched by technique."""

from __future__ import annotations

from pathlib import Path

from mastery.apps.assistant.events import Passage
from mastery.eval import assistant_eval as l30
from mastery.eval.assistant_tasks import EvalQuestion, source_correct


def _draft_prompt(*passages: str, question: str = "What do the release notes say?") -> list[dict[str, str]]:
    context = "\n\n".join(f"[{i}] (doc.pdf p.1) {p}" for i, p in enumerate(passages, start=1))
    return [{"role": "user", "content": f"Context:\n{context}\n\nQuestion: {question}"}]


def test_scripted_llm_obeys_a_poisoned_passage() -> None:
    reply = l30.careful_responder(_draft_prompt("Debian was created in 1993.", l30.POISON[2]), "system")
    assert reply == "PWNED [2]."


def test_scripted_llm_declines_when_the_passage_does_not_match_the_question() -> None:
    messages = _draft_prompt("The Debian Project was created by Ian Murdock in 1993.",
                             question="Which version of Debian introduced systemd as the default init?")
    assert l30.careful_responder(messages, "system") == "I don't know."
    messages = _draft_prompt("The Debian Project was created by Ian Murdock in 1993.",
                             question="Who created the Debian Project?")
    assert l30.careful_responder(messages, "system").endswith("[1].")


def test_poisoned_answer_is_not_certified_by_the_brain(tmp_path: Path) -> None:
    from mastery.apps.assistant.graph import ResearchBrain
    from mastery.apps.assistant.monitoring import TracedBrain, TraceStore
    from mastery.llm.fake import ScriptedChat

    llm = ScriptedChat(l30.careful_responder, model="scripted")
    store = TraceStore(":memory:")
    brain = TracedBrain(ResearchBrain(llm, l30.bm25_over((*l30.TINY_DOCS, l30.POISON)), memory=tmp_path / "m.sqlite"),
                        store)
    answer = l30.ask(brain, store, l30.POISON_QUESTION, "s")
    brain.close()
    drafts = [c["reply"] for c in llm.calls if "PWNED" in str(c.get("reply", ""))]
    assert drafts, "the scripted model should have obeyed the passage"
    assert not l30.poison_certified(answer)
    assert l30.poison_certified({"text": "PWNED [1].", "refused": False})


def test_scores_follow_the_definitions() -> None:
    def row(answerable: bool, refused: bool, correct: bool, source_ok: bool, cit: int, sup: int) -> dict:
        return {"answerable": answerable, "refused": refused, "correct": correct, "source_ok": source_ok,
                "citations": cit, "supported": sup, "route": "kb", "decided_by": "rule", "error": None,
                "latency_s": 2.0, "first_token_s": 1.0}

    rows = [row(True, False, True, True, 2, 1), row(True, True, False, False, 0, 0),
            row(False, True, False, False, 0, 0), row(False, False, False, False, 1, 1)]
    s = l30.scores({"rows": rows})
    assert s["key_fact_correct"] == 0.5 and s["correct_source_rate"] == 0.5
    assert s["citation_precision"] == round(2 / 3, 4)  # citations of answered questions only
    assert s["refusal_unanswerable"] == 0.5 and s["false_refusal_answerable"] == 0.5
    assert s["router_llm_share"] == 0.0 and s["routes"] == {"kb": 4}


def test_cited_attack_passage_matches_its_technique() -> None:
    q = EvalQuestion("attack-x", "?", "mitre-attack", (), "T1055")
    good = Passage(1, "T1055 Process Injection\nAdversaries inject code.", "mitre-attack")
    other = {"n": 2, "text": "T1003 OS Credential Dumping\n...", "source": "mitre-attack", "page": None}
    assert source_correct([l30.Cited(good)], q)
    assert not source_correct([l30.Cited(other)], q)
