"""PII detection and redaction: each recogniser on valid and invalid values, redaction, the labelled set, metrics."""

from __future__ import annotations

import ipaddress
import re

import pytest

pytest.importorskip("presidio_analyzer")

from mastery.core.errors import ConfigError
from mastery.security import pii_eval
from mastery.security.pii import PIIDetector, PIISpan, get_pii_detector, resolve_overlaps
from mastery.security.pii_eval import GoldSpan, PIIExample
from tests.conftest import needs_mirror


@pytest.fixture(scope="module")
def detector() -> PIIDetector:
    return get_pii_detector()  # loads spaCy's tokenizer once for the module


def found(detector: PIIDetector, text: str) -> list[tuple[str, str]]:
    return [(s.entity_type, s.text) for s in detector.find(text)]


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, d in enumerate(int(c) for c in reversed(digits)):
        total += d if i % 2 == 0 else sum(divmod(2 * d, 10))
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    s = iban.replace(" ", "")
    return int("".join(str(int(c, 36)) for c in s[4:] + s[:4])) % 97 == 1


@pytest.mark.parametrize(("text", "expected"), [
    ("Pay with 4111 1111 1111 1111 today", [("CREDIT_CARD", "4111 1111 1111 1111")]),
    ("Pay with 4111 1111 1111 1112 today", []),  # Luhn fails
    ("Amex 3714-496353-98431 on file", [("CREDIT_CARD", "3714-496353-98431")]),
    ("Maestro 6759 3631 0001 is mine", [("CREDIT_CARD", "6759 3631 0001")]),  # Maestro issues 12 digits
    ("Maestro 6759 3631 0004 is mine", []),  # Luhn fails
    ("Order 4759 3631 0006 is mine", []),  # 12 digits pass Luhn but only Maestro (50, 56-69) is that short
    ("card 4111 1111 1111 1111 5 times", [("CREDIT_CARD", "4111 1111 1111 1111")]),  # longest valid prefix
])
def test_cards_need_luhn(detector: PIIDetector, text: str, expected: list[tuple[str, str]]) -> None:
    assert found(detector, text) == expected


def test_iban_needs_mod97(detector: PIIDetector) -> None:
    assert found(detector, "IBAN DE89 3704 0044 0532 0130 00 please") == [("IBAN_CODE", "DE89 3704 0044 0532 0130 00")]
    assert found(detector, "IBAN DE88 3704 0044 0532 0130 00 please") == []
    assert found(detector, "to GB82WEST12345698765432.") == [("IBAN_CODE", "GB82WEST12345698765432")]


def test_ssn_valid_and_never_issued(detector: PIIDetector) -> None:
    assert found(detector, "SSN 536-22-8726 on the form") == [("US_SSN", "536-22-8726")]
    for bad in ("000-12-3456", "666-12-3456", "536-00-8726", "078-05-1120"):
        assert found(detector, f"SSN {bad} on the form") == [], bad


def test_phone_numbers(detector: PIIDetector) -> None:
    assert found(detector, "ring +49 30 1234567 tomorrow") == [("PHONE_NUMBER", "+49 30 1234567")]
    # the bracketed trunk zero stays inside the span
    assert found(detector, "ring +49 (0) 30 1234567 tomorrow") == [("PHONE_NUMBER", "+49 (0) 30 1234567")]
    # an unassigned US area code counts only after a phone word
    assert found(detector, "Call me on 897-229-9045 please") == [("PHONE_NUMBER", "897-229-9045")]
    assert found(detector, "Batch 897-229-9045 shipped") == []
    for not_phone in ("on 03.06.1970 at noon", "see CVE-1999-44588 now", "ISBN 0-473-14251-1 here",
                      "OID 1.3.6.1.4.1.244.34"):
        assert [e for e, _ in found(detector, not_phone)] == [], not_phone


def test_email_and_ip(detector: PIIDetector) -> None:
    assert found(detector, "mail bob.smith@example.com now") == [("EMAIL_ADDRESS", "bob.smith@example.com")]
    assert found(detector, "see notes@v2 later") == []
    # intranet and reserved mail domains are not public suffixes, but the address is still personal
    assert found(detector, "write jane.doe@acme.example or ops@corp.internal") == [
        ("EMAIL_ADDRESS", "jane.doe@acme.example"), ("EMAIL_ADDRESS", "ops@corp.internal")]
    assert found(detector, "built from release@v2.tar") == []
    assert found(detector, "from 192.168.0.12 and 2001:db8::1.") == [("IP_ADDRESS", "192.168.0.12"),
                                                                      ("IP_ADDRESS", "2001:db8::1")]
    for not_ip in ("upgrade to version 2.0.1.3", "OID 1.3.6.1.4.1.311 is", "host 999.1.1.1 is", "v1.2.3.4"):
        assert found(detector, not_ip) == [], not_ip


GH = "ghp_" + "aB3dE5gH7jK9mN1pQ3sT5vW7yZ0bC2eF4gH6"  # 36 after the prefix
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
       "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U")
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1b2c3d4\n-----END RSA PRIVATE KEY-----"


@pytest.mark.parametrize(("text", "secret"), [
    ("key AKIAQ2WX7LMNOPRSTUV3 leaked", "AKIAQ2WX7LMNOPRSTUV3"),
    (f"token {GH} leaked", GH),
    ("slack xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx ok",
     "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"),
    ("use sk-proj-abcD3fGh1jKlmN0pQrsTuvWx2yZ now", "sk-proj-abcD3fGh1jKlmN0pQrsTuvWx2yZ"),
    (f"auth {JWT} sent", JWT),
    (f"my key:\n{PEM}\nthanks", PEM),
    ('api_key = "f3a9Bx72kQpL0sZt8Yw4"', "f3a9Bx72kQpL0sZt8Yw4"),  # the value only, not the key name
    ("password: Tr0ub4dor&3x", "Tr0ub4dor&3x"),
    ("Authorization: Bearer 9fQ2xL7mK1pZ8rT4vW6yB3nD", "9fQ2xL7mK1pZ8rT4vW6yB3nD"),
    ("GOOGLE_KEY AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q now", "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"),
    ("gitlab glpat-xY7zQ2wE9rT4yU1iO3pA5 here", "glpat-xY7zQ2wE9rT4yU1iO3pA5"),
])
def test_secrets_found(detector: PIIDetector, text: str, secret: str) -> None:
    assert found(detector, text) == [("SECRET", secret)]


@pytest.mark.parametrize("text", [
    f"token {GH[:-1]} is short",  # 35 characters after ghp_
    "we use sk-learn-contributions-package daily",  # no digits, no upper case
    "eyJub3QganNvbg.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9P",  # header is not JSON
    "api_key = YOUR_API_KEY", "api_key=os.environ['API_KEY']", "password: hunter",
    "send it with Bearer authentication headers",
])
def test_secret_look_alikes_not_found(detector: PIIDetector, text: str) -> None:
    assert found(detector, text) == []


def test_redact_keeps_text_outside_spans(detector: PIIDetector) -> None:
    text = "Hi, I'm at bob@example.org or +49 30 1234567; card 4111111111111111, done."
    result = detector.redact(text)
    assert result.text == "Hi, I'm at <EMAIL_ADDRESS> or <PHONE_NUMBER>; card <CREDIT_CARD>, done."
    assert [text[s.start:s.end] for s in result.spans] == ["bob@example.org", "+49 30 1234567", "4111111111111111"]
    assert detector.redact(text) == result  # deterministic
    clean = "Nothing personal in version 1.2.3.4 of T1059.001."
    assert detector.redact(clean).text == clean and detector.redact(clean).spans == ()


def test_resolve_overlaps_prefers_score_then_length() -> None:
    spans = [PIISpan("PHONE_NUMBER", 5, 15, 0.4, ""), PIISpan("CREDIT_CARD", 0, 19, 1.0, ""),
             PIISpan("EMAIL_ADDRESS", 20, 30, 0.5, ""), PIISpan("SECRET", 22, 40, 0.5, "")]
    assert [(s.entity_type, s.start) for s in resolve_overlaps(spans)] == [("CREDIT_CARD", 0), ("SECRET", 22)]


def test_detector_cache_and_bad_entity() -> None:
    assert get_pii_detector() is get_pii_detector()
    with pytest.raises(ConfigError, match="BANANA"):
        get_pii_detector(("EMAIL_ADDRESS", "BANANA"))


def test_generated_set_is_deterministic_and_gold_points_at_values() -> None:
    a = pii_eval.build_pii_set(n_synthetic=120, n_hard=40, seed=3, real_text=False)
    assert a == pii_eval.build_pii_set(n_synthetic=120, n_hard=40, seed=3, real_text=False)
    assert a != pii_eval.build_pii_set(n_synthetic=120, n_hard=40, seed=4, real_text=False)
    assert {ex.locale for ex in a if ex.source == "synthetic"} == set(pii_eval.LOCALES)
    assert all(not ex.spans for ex in a if ex.source == "hard_negative")
    checks = {
        "CREDIT_CARD": lambda v: luhn_ok(re.sub(r"\D", "", v)),
        "IBAN_CODE": iban_ok,
        "US_SSN": lambda v: re.fullmatch(r"\d{3}-\d{2}-\d{4}", v) is not None,
        "EMAIL_ADDRESS": lambda v: re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]+", v) is not None,
        "IP_ADDRESS": lambda v: ipaddress.ip_address(v) is not None,
        "PHONE_NUMBER": lambda v: sum(c.isdigit() for c in v) >= 7 and not v[0].isspace() and not v[-1].isspace(),
        "SECRET": lambda v: len(v) >= 8 and v == v.strip() and not v.startswith(("api_key", "password")),
        "PERSON": lambda v: v[:1].isupper(), "LOCATION": lambda v: v[:1].isupper(),
    }
    seen = set()
    for ex in a:
        for g in ex.spans:
            value = ex.text[g.start:g.end]
            assert checks[g.entity_type](value), (g.entity_type, value, ex.text)
            seen.add(g.entity_type)
    assert seen == set(checks)


def test_metrics_on_a_hand_made_set() -> None:
    examples = [PIIExample("abcde-xxxx-12345", (GoldSpan("EMAIL_ADDRESS", 0, 5), GoldSpan("PHONE_NUMBER", 11, 16)),
                           "hand"),
                PIIExample("4111-zz-99", (GoldSpan("CREDIT_CARD", 0, 4),), "hand")]
    predictions = [[PIISpan("EMAIL_ADDRESS", 1, 5, 1.0, "bcde"), PIISpan("PHONE_NUMBER", 6, 10, 0.4, "xxxx")],
                   [PIISpan("CREDIT_CARD", 0, 4, 1.0, "4111"), PIISpan("IP_ADDRESS", 8, 10, 0.6, "99")]]
    entities = ("CREDIT_CARD", "PHONE_NUMBER", "EMAIL_ADDRESS", "IP_ADDRESS")
    overlap = pii_eval.score_spans(examples, predictions, entities, "overlap").scores
    assert (overlap["ALL"].gold, overlap["ALL"].predicted, overlap["ALL"].tp) == (3, 4, 2)
    assert overlap["ALL"].precision == pytest.approx(0.5)
    assert overlap["ALL"].recall == pytest.approx(2 / 3)
    assert overlap["ALL"].f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert (overlap["PHONE_NUMBER"].fp, overlap["PHONE_NUMBER"].fn) == (1, 1)
    assert overlap["ALL"].covered == 1  # only the card is fully redacted; the e-mail loses "a"
    exact = pii_eval.score_spans(examples, predictions, entities, "exact")
    assert exact.scores["ALL"].tp == 1 and exact.scores["EMAIL_ADDRESS"].fn == 1
    assert {(e["kind"], e["entity"]) for e in exact.errors} == {
        ("fn", "EMAIL_ADDRESS"), ("fp", "EMAIL_ADDRESS"), ("fn", "PHONE_NUMBER"), ("fp", "PHONE_NUMBER"),
        ("fp", "IP_ADDRESS")}
    rows = pii_eval.metrics_table(exact)
    assert [r["entity"] for r in rows] == ["CREDIT_CARD", "PHONE_NUMBER", "EMAIL_ADDRESS", "IP_ADDRESS", "ALL"]
    assert rows[-1]["precision"] == 0.25 and rows[-1]["recall"] == round(1 / 3, 4)
    fig = pii_eval.metrics_figure(rows)
    assert len(fig.axes[0].patches) == 3 * len(rows)


def test_detector_meets_goals_on_synthetic_set(detector: PIIDetector) -> None:
    examples = pii_eval.build_pii_set(n_synthetic=150, n_hard=60, seed=11, real_text=False)
    overall = pii_eval.evaluate(detector, examples).scores["ALL"]
    assert overall.gold > 150 and overall.recall >= 0.95 and overall.precision >= 0.9
    latency = pii_eval.measure_latency(detector, pii_eval.latency_texts(n=5, real_text=False))
    assert 0 < latency["p50_ms"] <= latency["p95_ms"] and latency["n"] == 5


@needs_mirror
def test_real_text_parts_keep_gold_aligned() -> None:
    examples = pii_eval.build_pii_set(n_synthetic=0, n_inserted=20, n_negative=20, n_hard=0, seed=5)
    inserted = [ex for ex in examples if ex.source.startswith("inserted:")]
    assert len(inserted) == 20 and {ex.source.split(":")[1] for ex in examples} <= {"pdf", "attack", "alpaca"}
    for ex in inserted:
        assert ex.spans and all(ex.text[g.start:g.end].strip() == ex.text[g.start:g.end] for g in ex.spans)
    for ex in examples:
        assert all(g.entity_type == "EMAIL_ADDRESS" and "@" in ex.text[g.start:g.end]
                   for g in ex.spans if ex.source.startswith("negative:"))


@pytest.mark.parametrize("size", [1, 5, 23])
def test_stream_redactor_matches_whole_text_redaction(detector: PIIDetector, size: int) -> None:
    from mastery.security.pii import StreamRedactor

    text = ("Sure. The customer wrote from bob.smith@example.com and paid with 4111 1111 1111 1111; "
            "the wire went to DE89 3704 0044 0532 0130 00. " * 2 + f"The key was:\n{PEM}\nand the token {GH}. "
            "Call +49 30 1234567 tomorrow. " + "Nothing else to add here at all. " * 4)
    stream = StreamRedactor(detector)
    pieces = [stream.feed(text[i:i + size]) for i in range(0, len(text), size)]
    assert sum(1 for p in pieces if p) >= 3  # text leaves before the end of the stream
    assert "".join(pieces) + stream.flush() == detector.redact(text).text
    assert stream.flush() == ""


def test_find_is_thread_safe(detector: PIIDetector) -> None:
    from concurrent.futures import ThreadPoolExecutor

    texts = [f"user{i}@example.com paid with 4111 1111 1111 1111 from 10.0.0.{i}" for i in range(24)]
    expected = [detector.find(t) for t in texts]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(detector.find, texts)) == expected


def test_patterns_win_over_ner_in_overlaps() -> None:
    spans = [PIISpan("PERSON", 0, 12, 0.85, ""), PIISpan("IP_ADDRESS", 3, 14, 0.6, "")]
    assert [s.entity_type for s in resolve_overlaps(spans)] == ["IP_ADDRESS"]
