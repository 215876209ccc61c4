"""The Research Assistant's evaluation set: its shape, every key fact on its gold page, unanswerable questions
answered by no document, and the scorers."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from mastery.eval.assistant_tasks import (
    ATTACK_SOURCE,
    DOCUMENTS,
    QUESTIONS,
    EvalQuestion,
    contains_fact,
    facts_found,
    key_facts_found,
    refused,
    source_correct,
    summary,
)
from tests.test_pdf_text import registered_pdf

PDF_ASSETS = {"libtasn1.pdf": "pdf-libtasn1-manual", "shared-mime-info-spec.pdf": "pdf-shared-mime-info-spec",
              "debian-faq.en.pdf": "pdf-debian-faq"}


def test_the_set_has_enough_questions_of_every_kind():
    counts = summary()
    assert len(QUESTIONS) >= 40 and counts["none"] >= 8
    assert set(counts) == {*DOCUMENTS, "none"} and all(counts[d] >= 8 for d in DOCUMENTS)
    assert len({q.id for q in QUESTIONS}) == len(QUESTIONS) and len({q.question for q in QUESTIONS}) == len(QUESTIONS)
    for q in QUESTIONS:
        assert q.question.endswith("?")
        if q.source == ATTACK_SOURCE:
            assert q.technique_id and q.key_facts and q.expected_source == q.technique_id
        elif q.source:
            assert q.source in PDF_ASSETS and q.pages and q.key_facts and not q.absent
            assert q.expected_source == f"{q.source} p.{'|'.join(map(str, q.pages))}"
        else:
            assert not q.answerable and q.absent and not q.key_facts and q.expected_source == ""
    with pytest.raises(dataclasses.FrozenInstanceError):
        QUESTIONS[0].question = "changed"  # type: ignore[misc]


@pytest.fixture(scope="module")
def corpus() -> dict[str, str]:
    """Gold text by key: "file.pdf p.N" for every PDF page (as the ingest extracts it), technique IDs for ATT&CK."""
    from mastery.assets.store import available
    from mastery.retrieval.attack import technique_documents
    from mastery.retrieval.documents import load_file

    texts = {}
    for source, asset in PDF_ASSETS.items():
        for page in load_file(registered_pdf(asset)).pages:
            texts[f"{source} p.{page.page}"] = page.text
    if not available("attack_stix"):
        pytest.skip("the ATT&CK data is not here (needs MASTERY_DATA_DIR with the shared datasets)")
    texts.update({d.metadata["technique_id"]: d.text for d in technique_documents()})
    return texts


def test_every_key_fact_occurs_in_its_gold_source(corpus):
    for q in (q for q in QUESTIONS if q.answerable):
        gold = [corpus[q.technique_id]] if q.technique_id else [corpus[f"{q.source} p.{p}"] for p in q.pages]
        for fact in q.key_facts:
            assert any(contains_fact(text, alt) for text in gold for alt in fact), (q.id, fact)


def test_no_document_holds_an_unanswerable_questions_answer(corpus):
    for q in (q for q in QUESTIONS if not q.answerable):
        found = [term for term in q.absent if any(contains_fact(text, term) for text in corpus.values())]
        assert not found, (q.id, found)


# -- scorers ----------------------------------------------------------------------------------------------
Q = EvalQuestion("t-1", "Who created Debian, and when?", "debian-faq.en.pdf", (10, 11), key_facts=(
    ("Murdock",), ("1993",)))
SHORT = EvalQuestion("t-2", "Which option?", "libtasn1.pdf", (10,), key_facts=(("-s", "--strict"),))
NONE = EvalQuestion("t-3", "Who won?", "", absent=("World Cup",))


def test_key_facts_need_every_fact_and_any_alternative():
    assert key_facts_found("Ian Murdock created it in 1993 [1].", Q)
    assert facts_found("Ian Murdock created it [1].", Q) == [True, False] and not key_facts_found("Ian Murdock.", Q)
    assert key_facts_found("It was created by IAN MURDOCK in 1993.", Q)  # case
    assert key_facts_found("Use -s.", SHORT) and key_facts_found("Pass --strict", SHORT)
    assert not key_facts_found("It is -strong- and uses DER-signatures", SHORT)  # a short fact must stand alone
    assert not contains_fact("I don't know", "no") and contains_fact("No, it is not.", "no")
    assert contains_fact("Deb’-ee-en — “quoted”", "Deb'-ee-en - \"quoted\"")  # typographic quotes and dashes
    assert not key_facts_found("anything at all", NONE)


def test_source_correct_and_refusals():
    def hit(**meta):
        return SimpleNamespace(metadata=meta)

    assert source_correct([hit(source="x.pdf", page=10), hit(source="debian-faq.en.pdf", page=11)], Q)
    assert not source_correct([hit(source="debian-faq.en.pdf", page=12)], Q)
    attack = next(q for q in QUESTIONS if q.source == ATTACK_SOURCE)
    assert source_correct([hit(source=ATTACK_SOURCE, technique_id=attack.technique_id)], attack)
    assert not source_correct([hit(source=ATTACK_SOURCE, technique_id="T0000")], attack)
    assert not source_correct([hit(source="debian-faq.en.pdf", page=10)], NONE)
    assert refused("I don't know.") and refused("I do not know the answer.")
    assert not refused("Ian Murdock founded Debian in 1993 [1].")
