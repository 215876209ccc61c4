"""The reply email: drafted by the LLM from the policy, checked in code, or built from a template; and the outbox.

The checks are what a 0.5B model needs: an empty, tiny, huge, looping or code-fenced draft is replaced by a
template built from the policy's own sentences (so it states the rules correctly, if stiffly); a usable draft
that forgot to cite the policy gets a reference line appended, and the record says so.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mastery.agents.support.policies import Policy
from mastery.core.errors import MasteryError

log = logging.getLogger(__name__)

SYSTEM_PROMPT = ("You are the customer support team. Reply to the customer's message in a short, polite email that "
                 "answers it with the rules in the policy. Cite the policy id in parentheses. At most 80 words. "
                 "Sign it: Customer Support")
# One worked turn: a 0.5B model copies a demonstrated email far more reliably than it follows written rules (without
# it, it wrote as the customer, with "[Your Name]" placeholders, and ran past the token limit).
_DEMO_POLICY = ("Policy POL-GIFT (Gift wrapping):\nGift wrapping costs $4 per item and can be added until the order "
                "ships. Wrapped items ship 1 day later.")
DEMO_TURNS = (
    {"role": "user", "content": _DEMO_POLICY + "\n\nCustomer message:\nCan you still gift wrap my order from "
     "this morning?\n\nWrite the reply email."},
    {"role": "assistant", "content": "Dear customer,\n\nThank you for your message. Under our policy POL-GIFT, gift "
     "wrapping can be added until your order ships and costs $4 per item; wrapped items ship 1 day later."
     "\n\nBest regards,\nCustomer Support"},
)
# The model's usual runaway is to go on past the signature, echoing the prompt's parts: stop there.
STOP = ["Customer message:", "\nPolicy POL-", "Write the reply email"]
SIGNATURE = "Customer Support"
MIN_CHARS, MAX_CHARS = 40, 1200  # of the body paragraph
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


class OutboxError(MasteryError):
    """The outbox file cannot be read or written."""


@dataclass
class Draft:
    text: str
    source: str  # "llm", "llm+citation" (the code appended the policy reference), "template"
    raw: str = ""  # the model's reply as received
    problem: str | None = None  # why the LLM draft was not used as is
    dropped_paragraphs: int = 0  # body paragraphs the model wrote after the first (not sent)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def draft_prompt(policy: Policy, message: str, max_policy_chars: int = 900) -> str:
    return (f"Policy {policy.id} ({policy.title}):\n{policy.excerpt(max_policy_chars)}\n\n"
            f"Customer message:\n{message}\n\nWrite the reply email.")


_GREETING_OR_SIGNOFF = re.compile(r"^(dear|hi|hello)\b[^\n]{0,40},?$|^(best regards|kind regards|regards|sincerely|"
                                  r"customer support)\b", re.IGNORECASE)


def first_paragraph(text: str, complete: bool = True) -> tuple[str, int]:
    """(the model's first body paragraph, how many more body paragraphs it wrote).

    After one good paragraph the 0.5B model tends to paste the rest of the policy, or the prompt, so the email keeps
    only the first (greeting and sign-off are fixed by :func:`compose_email`). ``complete`` False (the reply hit
    max_tokens): a paragraph counts only if a blank line closed it before the cut."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    if not complete:
        paragraphs = paragraphs[:-1]
    body = [p for p in paragraphs if not _GREETING_OR_SIGNOFF.match(p)]
    # one paragraph, one line: the model copies the policy's hard line breaks
    return (" ".join(body[0].split()), len(body) - 1) if body else ("", 0)


def compose_email(body: str) -> str:
    return f"Dear customer,\n\n{body}\n\nBest regards,\n{SIGNATURE}"


def draft_problem(text: str) -> str | None:
    """Why a draft's body is unusable (None: usable): empty, too short or long, code, an echo of the prompt, or the
    model looping."""
    stripped = (text or "").strip()
    if not stripped:
        return "empty"
    if len(stripped) < MIN_CHARS:
        return f"too short ({len(stripped)} chars)"
    if len(stripped) > MAX_CHARS:
        return f"too long ({len(stripped)} chars)"
    if re.search(r"customer message:|write the reply email|^#+ ", stripped, re.IGNORECASE | re.MULTILINE):
        return "echoes the prompt"
    if "```" in stripped or re.search(r"^\s*(def |import |class |<\?php|#include)", stripped, re.MULTILINE):
        return "code instead of an email"
    pieces = [p.strip().lower() for p in re.split(r"[\n.!?]+", stripped) if len(p.strip()) > 8]
    if pieces and Counter(pieces).most_common(1)[0][1] >= 3:
        return "repeats itself"
    words = stripped.split()
    if len(words) >= 20 and len(set(words)) / len(words) < 0.3:
        return "repeats itself"
    return None


def cites(text: str, policy_id: str) -> bool:
    return policy_id.lower() in (text or "").lower()


def _norm(text: str) -> str:
    """Lower case, one space for any whitespace run, every dash a hyphen: "3–5 business\ndays" = "3-5 business days"."""
    return " ".join(re.sub(r"[\u2010-\u2015-]", "-", text.lower()).split())


def mentions_key_fact(text: str, policy: Policy) -> bool:
    """The draft states at least one of the policy's key facts ("30 days"), case, spaces and dashes normalised."""
    body = _norm(text or "")
    return any(_norm(fact) in body for fact in policy.key_facts)


def key_sentences(policy: Policy, limit: int = 3) -> list[str]:
    """The policy's sentences that state a key fact, in order (at most ``limit``)."""
    flat = " ".join(line.strip() for line in policy.body.splitlines() if line.strip() and not line.startswith("#"))
    sentences = [s.strip() for s in _SENTENCE.split(flat) if s.strip()]
    chosen = [s for s in sentences if any(_norm(f) in _norm(s) for f in policy.key_facts)]
    return (chosen or sentences)[:limit]


def template_draft(policy: Policy) -> str:
    rules = " ".join(key_sentences(policy))
    return (f"Dear customer,\n\nThank you for contacting us. Your question is covered by our {policy.title.lower()} "
            f"policy (policy {policy.id}): {rules}\n\nIf anything is unclear, simply reply to this email.\n\n"
            "Best regards,\nCustomer Support")


def draft_reply(llm: Any, policy: Policy, message: str, *, max_tokens: int = 140, max_policy_chars: int = 900,
                seed: int = 0) -> Draft:
    """LLM draft checked by :func:`draft_problem`; an LLM error or an unusable draft gives the template."""
    from mastery.llm.errors import LLMError

    if llm is None:
        return Draft(template_draft(policy), "template", problem="no LLM")
    try:
        turns = [*DEMO_TURNS, {"role": "user", "content": draft_prompt(policy, message, max_policy_chars)}]
        reply = llm.chat(turns, system=SYSTEM_PROMPT,
                         max_tokens=max_tokens, temperature=0.0, seed=seed, stop=STOP)
    except LLMError as exc:
        log.warning("event=draft_llm_error error=%s", exc)
        return Draft(template_draft(policy), "template", problem=f"{type(exc).__name__}: {exc}")
    body, dropped = first_paragraph(reply.text or "", complete=reply.finish_reason != "length")
    problem = draft_problem(body) if body else ("cut off at max_tokens" if reply.finish_reason == "length"
                                                 else "no body paragraph")
    text = compose_email(body)
    tokens = (reply.prompt_tokens, reply.completion_tokens)
    if problem is not None:
        log.info("event=draft_fallback problem=%r", problem)
        return Draft(template_draft(policy), "template", reply.text, problem, dropped, *tokens)
    if not cites(text, policy.id):
        text = compose_email(f"{body} (Reference: policy {policy.id}, {policy.title}.)")
        return Draft(text, "llm+citation", reply.text, "no citation", dropped, *tokens)
    return Draft(text, "llm", reply.text, None, dropped, *tokens)


# -- the outbox ---------------------------------------------------------------------------------
def read_outbox(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise OutboxError(f"{path} line {n} is not JSON; fix or move the file") from None
    return records


def send_email(path: Path, *, key: str, thread_id: str, text: str, policy_id: str | None,
               decision: str) -> dict[str, Any]:
    """Append one email to the JSONL outbox unless one with the same ``key`` is there already (then return that
    record with ``duplicate: True``). A file lock makes check-and-append atomic across processes."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
        for record in read_outbox(path):
            if record.get("key") == key:
                log.info("event=send_duplicate thread=%s key=%s", thread_id, key)
                return {**record, "duplicate": True}
        record = {"key": key, "thread_id": thread_id, "policy_id": policy_id, "decision": decision, "text": text,
                  "sent_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        f.write(json.dumps(record) + "\n")
        f.flush()
    log.info("event=sent thread=%s key=%s chars=%d", thread_id, key, len(text))
    return {**record, "duplicate": False}
