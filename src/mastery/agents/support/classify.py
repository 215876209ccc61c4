"""Intent classification: the LLM asked for a JSON object, one retry with a reminder, then a fallback classifier.

A 0.5B model mostly answers ``{"intent": "refund"}``, but it also invents intents ("phishing", "reseller"),
wraps the JSON in prose or code fences, or answers nothing. The parser is tolerant about the wrapping and
strict about the value: an intent outside the fixed list is a miss, never guessed at. After two misses (or an
LLM error) the fallback decides: keyword rules, then MiniLM similarity to each intent's description, else
"other". Every result records how it was decided.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mastery.agents.support import ALL_INTENTS, INTENTS, OTHER

log = logging.getLogger(__name__)

DESCRIPTIONS = {
    "refund": "return an item, money back for a purchase",
    "shipping": "delivery time, tracking, late or lost parcel, delivery address",
    "account_access": "forgotten password, cannot sign in, locked account, two-factor codes",
    "billing": "invoices, wrong or double charges, payments",
    "cancellation": "cancel, pause or end a subscription or plan",
    "privacy": "copy or deletion of personal data, marketing emails, data sharing",
    "security": "phishing, suspicious emails or SMS, someone else using the account, vulnerability reports",
    "warranty": "a device that broke or is faulty after use, repair, warranty claim",
    OTHER: "anything else: stores, jobs, products, partnerships, feedback",
}
SYSTEM_PROMPT = ("You route customer support emails. Intents:\n"
                 + "".join(f"{name}: {DESCRIPTIONS[name]}\n" for name in ALL_INTENTS)
                 + 'Reply with only a JSON object: {"intent": "<one intent>"}')
# Worked turns (none from the lab's message set): the 0.5B model copies the demonstrated format, so with them it
# stopped inventing intents ("phishing", "reseller") and sometimes answers "other"; without, 6 of 41 replies named
# an intent outside the list.
DEMO_TURNS = tuple(turn for message, intent in (
    ("My order arrived but the mug inside is cracked, I'd like my money back.", "refund"),
    ("Somebody changed my account email without my permission!", "security"),
    ("Do you offer gift cards?", OTHER),
    ("My e-reader won't turn on anymore, it's only a year old.", "warranty"),
) for turn in ({"role": "user", "content": message}, {"role": "assistant", "content": f'{{"intent": "{intent}"}}'}))
# No example value in the reminder: with '{"intent": "refund"}' as its example the model answered "refund" to
# every reminder.
REMINDER = ('That is not a valid answer. Reply with only a JSON object {"intent": "..."} where the intent is exactly '
            f"one of: {', '.join(ALL_INTENTS)}. If none fits, use other.")

# Keyword rules of the fallback: (pattern, weight). Whole words, case-insensitive; a strong cue weighs 2.
KEYWORDS: dict[str, tuple[tuple[str, float], ...]] = {
    "refund": ((r"refund", 2), (r"money back", 2), (r"return(ed|ing)?", 1), (r"send (it|them) back", 2),
               (r"wrong (colou?r|size|item)", 1)),
    "shipping": ((r"deliver(y|ed)", 1), (r"tracking", 2), (r"parcel", 1), (r"package", 1), (r"shipp?(ing|ed)", 1),
                 (r"arrive[ds]?", 1), (r"where is my order", 2), (r"express", 1), (r"address", 1)),
    "account_access": ((r"password", 2), (r"log ?in", 1), (r"sign[ -]?in", 1), (r"locked", 2),
                       (r"two[- ]factor|2fa", 2), (r"reset (link|email)", 2), (r"can'?t log", 2)),
    "billing": ((r"invoices?", 2), (r"charged", 2), (r"charges?", 1), (r"vat", 2), (r"payments?", 1),
                (r"bank statement", 2), (r"card", 1)),
    "cancellation": ((r"cancel(l?ed|l?ing)?", 2), (r"subscription", 1), (r"pause", 2), (r"membership", 1),
                     (r"(monthly|annual) plan", 1), (r"renew(ed|al)?", 1)),
    "privacy": ((r"gdpr", 2), (r"personal (data|information)", 2), (r"delete my (account|data)", 2),
                (r"copy of (all )?(my )?data", 2), (r"newsletters?", 2), (r"marketing", 1), (r"unsubscribe", 2),
                (r"sell my", 1)),
    "security": ((r"phishing", 2), (r"hack(ed)?", 2), (r"vulnerabilit(y|ies)", 2), (r"suspicious", 2),
                 (r"strange website", 2), (r"someone (logged|used)", 2), (r"did not make", 1), (r"scam", 2)),
    "warranty": ((r"warranty", 2), (r"repair", 2), (r"defect(ive)?", 2), (r"broke(n)?", 1), (r"stopped working", 2),
                 (r"dead pixels?", 2), (r"leaks?", 1), (r"stopped charging", 2), (r"faulty", 2), (r"claim", 1)),
}
_COMPILED = {intent: tuple((re.compile(rf"\b(?:{p})\b", re.IGNORECASE), w) for p, w in rules)
             for intent, rules in KEYWORDS.items()}
_JSON_OBJECT = re.compile(r"\{[^{}]*\}", re.DOTALL)


@dataclass
class Classification:
    intent: str
    confidence: float  # LLM: 1.0 first try, 0.5 after the reminder; keywords: share of the matched weight;
    #                    embedding: the cosine to the intent's description
    decided_by: str  # "llm", "llm_retry", "keywords", "embedding", "none" (fallback found nothing: other)
    attempts: int = 0  # LLM calls made
    raw: list[str] = field(default_factory=list)  # the model's replies, as received
    error: str | None = None  # why the LLM path failed, when it did
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def parse_intent(text: str) -> tuple[str | None, str | None]:
    """(intent, None) when ``text`` holds a JSON object naming a known intent, else (None, what was wrong).

    Tolerant of code fences, prose around the object and capitalisation; strict about the intent itself."""
    candidates = _JSON_OBJECT.findall(text or "")
    if not candidates:
        bare = (text or "").strip().strip('`"\'. ').lower()
        if bare in ALL_INTENTS:  # a bare intent name is unambiguous enough to accept
            return bare, None
        return None, "no JSON object" if (text or "").strip() else "empty reply"
    for candidate in candidates:
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict):
            value = data.get("intent", data.get("category"))
            if not isinstance(value, str):
                return None, "no 'intent' key"
            intent = value.strip().lower().replace(" ", "_").replace("-", "_")
            if intent in ALL_INTENTS:
                return intent, None
            return None, f"unknown intent {value!r}"
    return None, "invalid JSON"


class FallbackClassifier:
    """Keyword rules first (precise when they fire), then cosine similarity of MiniLM embeddings to each intent's
    title and description (``model`` None: skipped), else "other"."""

    def __init__(self, model: Any = None, titles: dict[str, str] | None = None, min_cosine: float = 0.35) -> None:
        self.model, self.min_cosine = model, min_cosine
        self._prototypes: np.ndarray | None = None
        self._texts = [f"{(titles or {}).get(i, i.replace('_', ' '))}: {DESCRIPTIONS[i]}" for i in INTENTS]

    def keyword_scores(self, message: str) -> dict[str, float]:
        return {intent: sum(w for rx, w in rules if rx.search(message)) for intent, rules in _COMPILED.items()}

    def classify(self, message: str) -> Classification:
        scores = self.keyword_scores(message)
        best = max(scores.values())
        if best > 0:
            # ties go to the first intent in INTENTS order: deterministic, and the tie shows as low confidence
            intent = next(i for i in INTENTS if scores[i] == best)
            return Classification(intent, round(best / sum(scores.values()), 4), "keywords")
        if self.model is not None:
            from mastery.text.embed import encode_texts

            if self._prototypes is None:
                self._prototypes = encode_texts(self.model, self._texts)  # (8, 384), normalised
            cos = self._prototypes @ encode_texts(self.model, [message])[0]  # (8,)
            i = int(np.argmax(cos))
            if cos[i] >= self.min_cosine:
                return Classification(INTENTS[i], round(float(cos[i]), 4), "embedding")
        return Classification(OTHER, 0.0, "none")


def classify_message(llm: Any, message: str, fallback: FallbackClassifier, *, max_tokens: int = 24,
                     retries: int = 1, seed: int = 0) -> Classification:
    """Ask ``llm`` (a ChatModel, or None to skip it) for the intent; on a miss, remind it ``retries`` times; then
    fall back. LLM errors (server down, timeout) also fall back: the graph must keep going."""
    from mastery.llm.errors import LLMError

    raw: list[str] = []
    tokens = [0, 0]
    problem = "no LLM"
    if llm is not None:
        messages: list[dict[str, str]] = [*DEMO_TURNS, {"role": "user", "content": message}]
        for attempt in range(1 + retries):
            try:
                reply = llm.chat(messages, system=SYSTEM_PROMPT, max_tokens=max_tokens, temperature=0.0, seed=seed)
            except LLMError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                log.warning("event=classify_llm_error error=%s", problem)
                break
            raw.append(reply.text)
            tokens[0] += reply.prompt_tokens
            tokens[1] += reply.completion_tokens
            intent, problem = parse_intent(reply.text)
            if intent is not None:
                return Classification(intent, 1.0 if attempt == 0 else 0.5, "llm" if attempt == 0 else "llm_retry",
                                      attempt + 1, raw, None, *tokens)
            log.info("event=classify_miss attempt=%d problem=%r", attempt + 1, problem)
            messages += [{"role": "assistant", "content": reply.text or "(empty)"},
                         {"role": "user", "content": REMINDER}]
    result = fallback.classify(message)
    result.attempts, result.raw, result.error = len(raw), raw, problem
    result.prompt_tokens, result.completion_tokens = tokens
    return result


def fallback_only(messages: Sequence[str], fallback: FallbackClassifier) -> list[Classification]:
    return [fallback.classify(m) for m in messages]
