"""Find and redact personal data and secrets in text, before it reaches an LLM and before an answer leaves.

Presidio splits the job in two: an *analyzer* runs recognisers over the text and returns scored spans, an
*anonymizer* rewrites those spans (here: each becomes ``<ENTITY_TYPE>``). A recogniser is a regular expression
plus, where the format has one, a *validation*: a Luhn check for card numbers, the ISO 7064 mod-97 check for
IBANs, ``ipaddress`` for IPs, libphonenumber's numbering plans for phones. Validation is what buys precision:
a 16-digit order number fails Luhn nine times in ten, a mistyped IBAN fails mod-97 ninety-six times in
ninety-seven. Words near a match ("card", "iban", "ssn") raise a weak pattern's score (Presidio's context
enhancer); a score threshold decides what counts.

Names and places have no checksum: they come from spaCy's statistical NER (``PERSON``, ``LOCATION``). They
are off by default because measured on this project's labelled set (:mod:`mastery.security.pii_eval`, seed 7)
they cost more than they bring: PERSON precision 0.46 at recall 0.77, LOCATION 0.35 at 0.63 (the small
English model calls ATT&CK software, config keys and PDF headings persons and places, and misreads Faker's
foreign names and towns); overall precision falls from 1.00 to 0.78 while recall falls from 0.99 to 0.92, and
p50 latency on 200 words rises from ~7 ms to ~45-57 ms on this shared 2-core machine. Ask for them with
``get_pii_detector(entities=ALL_ENTITIES)``.

Secrets have no owner but leak the same way: provider formats with a fixed prefix (AWS ``AKIA``, GitHub
``ghp_``/``github_pat_``, GitLab ``glpat-``, Slack ``xox?-``, Google ``AIza``, Stripe ``sk_live_``, OpenAI-style
``sk-``), PEM private keys, JWTs (their header must decode to JSON with ``alg``), ``Bearer`` tokens and
``api_key = ...``/``password: ...`` assignments whose value looks random
(a placeholder such as ``YOUR_API_KEY`` or ``os.environ[...]`` is not a secret). All are one entity type,
``SECRET``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from mastery.core.errors import ConfigError, require

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine

log = logging.getLogger(__name__)

SPACY_ASSET = "spacy-en-core-web-sm"
PATTERN_ENTITIES = ("CREDIT_CARD", "IBAN_CODE", "US_SSN", "PHONE_NUMBER", "EMAIL_ADDRESS", "IP_ADDRESS", "SECRET")
NER_ENTITIES = ("PERSON", "LOCATION")
ALL_ENTITIES = PATTERN_ENTITIES + NER_ENTITIES
DEFAULT_ENTITIES = PATTERN_ENTITIES  # NER off by default: see the module docstring and pii_eval's measurements
# Presidio's weakest accepted match is a valid phone number without context (0.4). SSNs written 3-2-4 score 0.5
# alone; the weak shapes (nine digits in a row, 5-4) score 0.05 and reach 0.4 only with "ssn"/"social security".
DEFAULT_THRESHOLD = 0.4
# Regions whose national formats the phone recogniser reads (international "+CC ..." numbers match anywhere):
# the locales of the labelled set. Each region is one more libphonenumber scan, so the list stays short.
PHONE_REGIONS = ("US", "GB", "DE", "FR", "IT", "ES", "NL")
PHONE_CONTEXT = ["phone", "number", "telephone", "tel", "cell", "mobile", "call", "fax", "contact", "reach"]
# A number outside the plan needs a word that only a phone takes ("card number 2708 0862 5915" must not do)
PHONE_WORDS = ["phone", "telephone", "tel", "cell", "mobile", "call", "fax", "whatsapp", "contact", "reach"]


@dataclass(frozen=True)
class PIISpan:
    """One finding: ``text[start:end]`` is a value of ``entity_type``."""

    entity_type: str
    start: int
    end: int
    score: float
    text: str


@dataclass(frozen=True)
class RedactResult:
    """The text with each span replaced by ``<ENTITY_TYPE>``, and the spans (offsets in the original text)."""

    text: str
    spans: tuple[PIISpan, ...]


_PRIVATE_MAIL_SUFFIXES = frozenset({"example", "test", "invalid", "localhost", "local", "internal", "corp", "lan",
                                    "home", "intranet", "private"})


def shannon_entropy(value: str) -> float:
    """Bits per character of ``value``'s own character distribution (random base62 is near 5, English near 3)."""
    if not value:
        return 0.0
    counts = Counter(value)
    return -sum(c / len(value) * math.log2(c / len(value)) for c in counts.values())


_PLACEHOLDER_HINTS = ("xxxx", "your", "example", "changeme", "placeholder", "redacted", "dummy", "<", ">", "${",
                      "{{", "***", "...", "environ", "getenv", "env[", "secret_key_here", "insert")


def looks_random(value: str) -> bool:
    """Whether an assigned value looks like a real secret rather than a placeholder or a word.

    Three character classes (``Tr0ub4dor&3``), or a long two-class string of high entropy (a hex or base64 key).
    """
    low = value.lower()
    if len(value) < 8 or any(hint in low for hint in _PLACEHOLDER_HINTS):
        return False
    classes = sum((any(c.islower() for c in value), any(c.isupper() for c in value),
                   any(c.isdigit() for c in value), any(not c.isalnum() for c in value)))
    return classes >= 3 or (len(value) >= 16 and classes >= 2 and shannon_entropy(value) >= 3.0)


def _mixed_alnum(value: str) -> bool:
    """Generated keys mix lower case, upper case and digits; ``sk-learn-contrib-package`` does not."""
    return all(any(test(c) for c in value) for test in (str.islower, str.isupper, str.isdigit))


def _jwt_header_ok(token: str) -> bool:
    head = token.split(".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return False
    return isinstance(decoded, dict) and "alg" in decoded


# (name, regex, score, check). ``check`` None keeps the pattern's score (the prefix alone is distinctive);
# otherwise it must pass or the match is dropped. Patterns are case-sensitive (prefixes are exact) except the
# assignment keywords. ``\K`` (the ``regex`` module Presidio uses) keeps the keyword out of the span.
_SECRET_PATTERNS: tuple[tuple[str, str, float, Any], ...] = (
    ("aws_access_key_id", r"\b(?:AKIA|ASIA|ABIA|ACCA|AIDA|AROA|AGPA|ANPA|ANVA|APKA)[A-Z2-7]{16}\b", 0.9, None),
    ("github_token", r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36}\b", 0.9, None),
    ("github_pat", r"\bgithub_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}\b", 0.9, None),
    ("slack_token", r"\bxox[abposre]-(?:[A-Za-z0-9]+-){1,4}[A-Za-z0-9]{8,}\b", 0.9, None),
    ("gitlab_token", r"\bglpat-[A-Za-z0-9_-]{20,}", 0.9, None),
    ("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}\b", 0.9, None),
    ("stripe_key", r"\b(?:sk|rk)_live_[A-Za-z0-9]{20,}\b", 0.9, None),
    ("bearer_token", r"\bBearer\s+\K[A-Za-z0-9._~+/-]{16,}=*", 0.5, looks_random),
    ("openai_style_key", r"\bsk-(?:[a-z]{2,8}-)?[A-Za-z0-9_-]{20,}", 0.6, _mixed_alnum),
    ("private_key_pem", r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
                        r"(?:[\s\S]{0,8000}?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----)?", 0.95, None),
    ("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}", 0.5, _jwt_header_ok),
    ("assigned_secret",
     r"(?i)\b(?:[a-z0-9]+[_-])*(?:api[_-]?key|apikey|secret(?:[_-]?key)?|client[_-]?secret|access[_-]?key|"
     r"access[_-]?token|auth[_-]?token|bearer|token|passw(?:or)?d|passwd|pwd)[\"']?\s*(?:[:=]|=>|\bis\b)\s*"
     r"[\"']?\K[^\s\"'`,;]{8,200}", 0.5, looks_random),
)


def _recognizers(entities: tuple[str, ...]) -> list[Any]:
    """The recognisers for ``entities``, built on first use (Presidio imports are heavy)."""
    import phonenumbers
    import regex
    import tldextract
    from presidio_analyzer import AnalysisExplanation, EntityRecognizer, Pattern, PatternRecognizer, RecognizerResult
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        SpacyRecognizer,
        UsSsnRecognizer,
    )

    flags = regex.DOTALL | regex.MULTILINE

    class CardRecognizer(CreditCardRecognizer):
        """Presidio's Luhn check on a wider search: its own pattern misses Visa-19, Amex 4-6-5, 12-digit Maestro.

        A run of digit groups is tried from its longest prefix to its shortest (``4111 1111 1111 1111 5 times``
        holds a card in its first four groups), the first that passes Luhn wins.
        """

        # not inside a longer token: "xoxa-684735801756-..." holds a Luhn-valid 12-digit run
        RUN = regex.compile(r"(?<![\w-])[2-6]\d{3}(?:[ -]?\d{1,7}){1,6}(?![\w-])")

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None,
                    regex_flags: int | None = None) -> list[Any]:
            found = []
            for match in self.RUN.finditer(text):
                run = match.group()
                ends = [m.end() for m in regex.finditer(r"\d+", run)][::-1]
                for end in ends:
                    digits = "".join(c for c in run[:end] if c.isdigit())
                    # Maestro (50, 56-69) issues 12-digit cards; other brands 13-19 digits
                    shortest = 12 if digits[:2] in MAESTRO_PREFIXES else 13
                    if shortest <= len(digits) <= 19 and self.validate_result(digits):
                        why = AnalysisExplanation(self.name, 1.0, textual_explanation="Luhn checksum passed")
                        found.append(RecognizerResult(self.supported_entities[0], match.start(),
                                                      match.start() + end, 1.0, analysis_explanation=why))
                        break
            return found

    # tldextract's default extractor fetches the public-suffix list from the internet on first use; the
    # snapshot it ships is enough to tell a real domain from "file.txt@v2".
    offline_tlds = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    offline_tlds("example.com")  # reads the snapshot now (0.5 s), not inside the first request that has an "@"

    class OfflineEmailRecognizer(EmailRecognizer):
        """Presidio's e-mail check with a pattern that starts only where a run of address characters starts:
        Presidio's own retries every position inside every word (13 ms per 200 words here, now under 1 ms)."""

        PATTERNS: ClassVar = [Pattern("email", r"(?<![\w.!#$%&'*+/=?^`{|}~-])[\w!#$%&'*+/=?^`{|}~-]"
                                               r"[\w.!#$%&'*+/=?^`{|}~-]{0,63}"
                                               r"@\w+(?:-+\w+)*(?:\.\w+(?:-+\w+)*)+\b", 0.5)]

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None,
                    regex_flags: int | None = None) -> list[Any]:
            return super().analyze(text, entities, nlp_artifacts, regex_flags) if "@" in text else []

        def validate_result(self, pattern_text: str) -> bool:
            domain = pattern_text.rsplit("@", 1)[-1].lower()
            # private mail domains (RFC 2606/6761 special-use names, and the common intranet suffixes) are not
            # in the public-suffix list, but an address at corp.internal is as personal as one at gmail.com
            return bool(offline_tlds(domain).suffix) or domain.rsplit(".", 1)[-1] in _PRIVATE_MAIL_SUFFIXES

    class VersionAwareIpRecognizer(IpRecognizer):
        """Presidio's IPv4/IPv6 patterns checked by ``ipaddress``, minus dotted numbers that are not addresses.

        ``version 2.0.1.3`` and ``OID 1.3.6.1.4.1`` parse as IPv4; a dotted quad right after a version word or
        inside a longer dotted run is dropped. A bare ``1.2.3.4`` stays an address: nothing tells them apart.
        """

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None,
                    regex_flags: int | None = None) -> list[Any]:
            results = super().analyze(text, entities, nlp_artifacts, regex_flags)
            return [r for r in results if not _dotted_non_ip(text, r.start, r.end)]

    class PlausiblePhoneRecognizer(PhoneRecognizer):
        """libphonenumber's matcher, one pass per region, keeping two kinds of match.

        *Valid* numbers (the region's plan assigns them) score 0.4, and 0.75 with a word such as "phone" or
        "number" nearby. *Possible* ones (right length and shape, unassigned: an unused US area code, the UK's
        drama numbers 01632) count only after a word that only a phone takes ("call", "mobile", "tel") among the
        five before, with 7 digits or more: without that rule, "possible" took years and page numbers (40 false
        positives on 150 real passages, measured). Shapes libphonenumber accepts that are something else are
        dropped (:func:`_not_a_phone`).
        """

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
            # "+49 (0) 30 1234567", "+44(0)20 ...": the bracketed trunk zero is written, never dialled after the
            # country code, and libphonenumber then reads only the national part. It matches on a copy without
            # it; ``where`` maps the copy's offsets back.
            plain, where = _drop_trunk_zero(text)
            found: list[tuple[int, int, Any]] = []

            def keep(match: Any, region: str, score: float | None = None) -> None:
                result = self._get_recognizer_result(match, plain, region, nlp_artifacts)
                result.start, result.end = where[match.start], where[match.end - 1] + 1
                if score is not None:  # what 0.1 + Presidio's context boost would give; counted once
                    result.score = score
                    result.recognition_metadata[RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY] = True
                found.append((match.start, match.end, result))

            for region in self.supported_regions:
                for match in phonenumbers.PhoneNumberMatcher(plain, region, leniency=phonenumbers.Leniency.VALID):
                    if not _not_a_phone(match.raw_string, plain, match.start):
                        keep(match, region)
            if _PHONE_WORD.search(plain):  # the second pass costs as much as the first: only when it can count
                for region in self.supported_regions:
                    for match in phonenumbers.PhoneNumberMatcher(plain, region,
                                                                 leniency=phonenumbers.Leniency.POSSIBLE):
                        if (any(s < match.end and match.start < e for s, e, _ in found)
                                or _not_a_phone(match.raw_string, plain, match.start)
                                or sum(c.isdigit() for c in match.raw_string.split("x")[0]) < 7
                                or not _phone_word_before(plain, match.start)):
                            continue
                        keep(match, region, 0.45)
            return EntityRecognizer.remove_duplicates([r for _, _, r in found])

    class SecretRecognizer(PatternRecognizer):
        def __init__(self, name: str, pattern: str, score: float, check: Any) -> None:
            self._check = check
            super().__init__(supported_entity="SECRET", name=f"secret:{name}",
                             patterns=[Pattern(name, pattern, score)], global_regex_flags=flags,
                             context=["key", "token", "secret", "password", "credential"])

        def validate_result(self, pattern_text: str) -> bool | None:
            return None if self._check is None else bool(self._check(pattern_text))

    made: list[Any] = []
    if "CREDIT_CARD" in entities:
        made.append(CardRecognizer())
    if "IBAN_CODE" in entities:
        made.append(IbanRecognizer())
    if "US_SSN" in entities:
        made.append(UsSsnRecognizer())
    if "PHONE_NUMBER" in entities:
        made.append(PlausiblePhoneRecognizer(supported_regions=PHONE_REGIONS, context=PHONE_CONTEXT))
    if "EMAIL_ADDRESS" in entities:
        made.append(OfflineEmailRecognizer())
    if "IP_ADDRESS" in entities:
        made.append(VersionAwareIpRecognizer())
    if "SECRET" in entities:
        made.extend(SecretRecognizer(*spec) for spec in _SECRET_PATTERNS)
    if any(e in NER_ENTITIES for e in entities):
        made.append(SpacyRecognizer(supported_entities=[e for e in NER_ENTITIES if e in entities]))
    return made


_VERSION_WORDS = re.compile(r"\b(?:version|release|build|firmware|ver|oid|patch|kernel)\b")
MAESTRO_PREFIXES = frozenset({"50", *map(str, range(56, 70))})


_SSN_SHAPE = re.compile(r"\d{3}([- ])\d{2}\1\d{4}")


_DATE_SHAPE = re.compile(r"\d{1,2}([./-])\d{1,2}\1\d{2,4}|\d{4}([./-])\d{1,2}\2\d{1,2}")


def _not_a_phone(value: str, text: str = "", start: int = 0) -> bool:
    """Shapes libphonenumber accepts that are something else: SSN-shaped (3-2-4 digits: no numbering plan here
    groups so), dates (``03.06.1970``), dotted runs with one-digit parts (OIDs, ``1.6 4.5``), a last group of
    one digit (ISBN ``0-473-14251-1``), or a match glued to a longer token by a hyphen or slash
    (``CVE-1999-44588``, ``0-208-60460-X``)."""
    core = value.split("x")[0].strip()
    if _SSN_SHAPE.fullmatch(core) or _DATE_SHAPE.fullmatch(core):
        return True
    end = start + len(value)
    if text and ((start >= 2 and text[start - 1] in "-/_" and text[start - 2].isalnum())
                 or (text[end:end + 1] in ("-", "/", "_") and text[end + 1:end + 2].isalnum())):
        return True
    if "." in core and any(len(part.strip()) == 1 for part in core.split(".")):
        return True
    groups = re.findall(r"\d+", core)
    return len(groups) > 2 and len(groups[-1]) == 1


_TRUNK_ZERO = re.compile(r"(?:(?<=\+\d)|(?<=\+\d\d)|(?<=\+\d\d\d))\s?\(0\)")


def _drop_trunk_zero(text: str) -> tuple[str, Sequence[int]]:
    """``text`` without each "(0)" after a country code, and for every kept character its offset in ``text``."""
    if "(0)" not in text:
        return text, range(len(text))
    keep = [True] * len(text)
    for m in _TRUNK_ZERO.finditer(text):
        keep[m.start():m.end()] = [False] * (m.end() - m.start())
    where = [i for i, k in enumerate(keep) if k]
    return "".join(text[i] for i in where), where
_PHONE_WORD = re.compile("|".join(PHONE_WORDS), re.IGNORECASE)


def _phone_word_before(text: str, start: int) -> bool:
    words = re.findall(r"\w+", text[max(0, start - 60):start].lower())[-5:]
    return any(cue in word for word in words for cue in PHONE_WORDS)


def _dotted_non_ip(text: str, start: int, end: int) -> bool:
    """A dotted quad that is part of a longer dotted number, or follows a version word, is not an address."""
    value = text[start:end]
    if ":" in value:  # IPv6 has no such look-alikes here
        return False
    before, after = text[max(0, start - 40):start].lower(), text[end:end + 2]
    if (before.endswith(".") and before[-2:-1].isdigit()) or (after[:1] == "." and after[1:2].isdigit()):
        return True
    if before.endswith("v"):  # v1.2.3.4
        return True
    return bool(_VERSION_WORDS.search(before))  # "version 2.0.1.3", 'OID to search (e.g. "1.2.3.4")' in libtasn1


def _spacy_engine(ner: bool) -> Any:
    """Presidio's spaCy engine on a folder from the asset registry (no download, ever).

    Without NER the pipeline is the tokenizer alone (the full pipeline took 45 ms per 200 words here, the
    tokenizer with Presidio's bookkeeping 4 ms). Presidio then needs tokens and lemmas only for its context
    words, which it matches as substrings of the lower-cased token ("cards" contains "card"), so the
    lower-cased text stands in for the lemma.
    """
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    from mastery.assets.store import resolve

    path = str(resolve(SPACY_ASSET))

    class Engine(SpacyNlpEngine):
        def load(self) -> None:
            import spacy

            # the parser is never used (Presidio reads tokens, lemmas, entities); NER needs tok2vec+ner only
            exclude = ["parser"] if ner else ["tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer",
                                             "ner"]
            self.nlp = {"en": spacy.load(path, exclude=exclude)}
            if not ner:  # spaCy's 1M-character cap guards the parser's and NER's memory; a tokenizer needs none
                self.nlp["en"].max_length = 20_000_000

        def _doc_to_nlp_artifact(self, doc: Any, language: str) -> Any:
            if not ner:  # before the artifacts are built: they derive their keywords from the lemmas
                for token in doc:
                    token.lemma_ = token.lower_
            return super()._doc_to_nlp_artifact(doc, language)

    engine = Engine(models=[{"lang_code": "en", "model_name": path}])
    engine.load()
    return engine


_lock = threading.Lock()
_analyzers: dict[tuple[str, ...], AnalyzerEngine] = {}
_detectors: dict[tuple[tuple[str, ...], float], PIIDetector] = {}
_anonymizer: Any = None


def _analyzer(entities: tuple[str, ...]) -> AnalyzerEngine:
    """One analyzer per entity set, built once under a lock (two threads never load spaCy twice)."""
    with _lock:
        if entities not in _analyzers:
            require("presidio_analyzer", "security")
            require("spacy", "security")
            from presidio_analyzer import AnalyzerEngine, RecognizerRegistry

            registry = RecognizerRegistry(recognizers=_recognizers(entities), supported_languages=["en"])
            nlp = _spacy_engine(ner=any(e in NER_ENTITIES for e in entities))
            _analyzers[entities] = AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=["en"])
            log.info("PII analyzer ready for %s", ", ".join(entities))
        return _analyzers[entities]


def _anonymizer_engine() -> Any:
    global _anonymizer
    with _lock:
        if _anonymizer is None:
            require("presidio_anonymizer", "security")
            from presidio_anonymizer import AnonymizerEngine

            _anonymizer = AnonymizerEngine()
        return _anonymizer


def resolve_overlaps(spans: list[PIISpan]) -> list[PIISpan]:
    """Keep the best of overlapping findings: pattern before NER, then highest score, then longest, then earliest,
    then type name.

    Presidio returns every recogniser's result; a card number also parses as a phone number and an IBAN's digits
    can too. A validated match scores 1.0 and wins. spaCy's NER scores a flat 0.85 and calls IPv6 pieces and
    phone numbers persons: a value a pattern parsed beats its guess (IP recall fell from 1.0 to 0.90 without
    this rule).
    """
    kept: list[PIISpan] = []
    for span in sorted(spans, key=lambda s: (s.entity_type in NER_ENTITIES, -s.score, -(s.end - s.start), s.start,
                                             s.entity_type)):
        if all(span.end <= k.start or span.start >= k.end for k in kept):
            kept.append(span)
    return sorted(kept, key=lambda s: s.start)


class PIIDetector:
    """``find`` and ``redact`` over one entity set; thread-safe after construction, deterministic."""

    def __init__(self, entities: tuple[str, ...] = DEFAULT_ENTITIES, threshold: float = DEFAULT_THRESHOLD) -> None:
        unknown = sorted(set(entities) - set(ALL_ENTITIES))
        if unknown:
            raise ConfigError(f"unknown PII entity {', '.join(unknown)}; choose from {', '.join(ALL_ENTITIES)}")
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"PII score threshold {threshold} is outside 0..1")
        self.entities = tuple(e for e in ALL_ENTITIES if e in entities)
        self.threshold = threshold
        self._analyzer = _analyzer(self.entities)

    def find(self, text: str) -> list[PIISpan]:
        """Non-overlapping findings in ``text``, in order of position."""
        if not text.strip():
            return []
        results = self._analyzer.analyze(text=text, language="en", entities=list(self.entities),
                                         score_threshold=self.threshold)
        return resolve_overlaps([PIISpan(r.entity_type, r.start, r.end, round(float(r.score), 4),
                                         text[r.start:r.end]) for r in results])

    def redact(self, text: str) -> RedactResult:
        """``text`` with every finding replaced by ``<ENTITY_TYPE>``; the rest of the text is unchanged."""
        spans = self.find(text)
        if not spans:
            return RedactResult(text, ())
        from presidio_analyzer import RecognizerResult
        from presidio_anonymizer.entities import OperatorConfig

        results = [RecognizerResult(s.entity_type, s.start, s.end, s.score) for s in spans]
        operators = {e: OperatorConfig("replace", {"new_value": f"<{e}>"}) for e in {s.entity_type for s in spans}}
        out = _anonymizer_engine().anonymize(text=text, analyzer_results=results, operators=operators)
        return RedactResult(out.text, tuple(spans))


def _replace(text: str, spans: Sequence[PIISpan]) -> str:
    out, pos = [], 0
    for span in spans:
        out += [text[pos:span.start], f"<{span.entity_type}>"]
        pos = span.end
    return "".join(out) + text[pos:]


_PEM_END = re.compile(r"-----END [A-Z0-9 ]+-----")


class StreamRedactor:
    """Redacts a stream of chunks (an LLM's tokens) and passes text on as soon as no finding can still grow
    into it.

    It holds back the last ``hold`` characters (longer than any card, IBAN or phone written with spaces), cuts
    only at whitespace (a key or token without spaces is never split) and never inside a finding, and holds
    everything from an unfinished ``-----BEGIN ... PRIVATE KEY-----`` until its END line or the stream's end.
    ``"".join(feed(c) for c in chunks) + flush()`` equals ``redact`` of the whole text whenever each finding's
    context words lie within ``hold`` characters of it.
    """

    def __init__(self, detector: PIIDetector, hold: int = 64) -> None:
        self.detector, self.hold, self._buffer = detector, hold, ""

    def feed(self, chunk: str) -> str:
        self._buffer += chunk
        if len(self._buffer) < 2 * self.hold:  # batch: one analysis per ~hold characters, not per token
            return ""
        limit = len(self._buffer) - self.hold
        begin = self._buffer.rfind("-----BEGIN")
        if begin != -1 and not _PEM_END.search(self._buffer, begin):
            limit = min(limit, begin)
        cut = max(self._buffer.rfind(" ", 0, limit), self._buffer.rfind("\n", 0, limit))
        spans = self.detector.find(self._buffer)
        cut = min([cut] + [s.start for s in spans if s.start < cut < s.end])
        if cut <= 0:
            return ""
        out = _replace(self._buffer[:cut], [s for s in spans if s.end <= cut])
        self._buffer = self._buffer[cut:]
        return out

    def flush(self) -> str:
        """The rest, redacted; the redactor is empty afterwards."""
        rest, self._buffer = self._buffer, ""
        return self.detector.redact(rest).text if rest else ""


def get_pii_detector(entities: tuple[str, ...] | None = None, threshold: float = DEFAULT_THRESHOLD) -> PIIDetector:
    """The shared detector for ``entities`` (default :data:`DEFAULT_ENTITIES`), built once per process."""
    wanted = tuple(entities or DEFAULT_ENTITIES)
    if set(wanted) - set(ALL_ENTITIES):
        return PIIDetector(wanted, threshold)  # raises, naming the unknown entity
    key = (tuple(e for e in ALL_ENTITIES if e in wanted), threshold)
    detector = _detectors.get(key)
    if detector is None:
        detector = PIIDetector(*key)  # _analyzer's lock makes a concurrent second build cheap and identical
        detector = _detectors.setdefault(key, detector)
    return detector
