"""A labelled ATT&CK question set and the retrieval metrics computed on it (recall@k, MRR).

Every question's answer is one known technique (its Document id is ``attack:<ID>``). Five styles,
each stressing a different kind of retriever:

- ``description``: a sentence of the technique's description, lightly paraphrased (the technique's
  name masked, common ATT&CK wording swapped for synonyms): "What technique do attackers use to ...?"
- ``detection``: an analytic of the technique's ATT&CK v18 detection strategy ("Monitor ... for ...").
  This text is not part of the indexed Document, so it tests meaning, not word overlap.
- ``keyword``: three distinctive words of the description (not the name), as a user would type them.
- ``technique_id``: a question that only names the ID ("What is T1055.004?"): trivial for BM25,
  nearly impossible for a sentence embedding.
- ``scenario``: a real procedure example (a group's or malware's ``uses`` relationship) with the
  actor's name replaced by "An attacker": again text that is not in the indexed Document.

Train and eval questions come from disjoint sets of techniques (see :func:`build_question_set`), so
a re-ranker trained on the train questions is measured on techniques it never saw a positive for.
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mastery.core.errors import ConfigError
from mastery.retrieval.attack import Technique, clean_text
from mastery.retrieval.types import Hit

log = logging.getLogger(__name__)

STYLES = ("description", "detection", "keyword", "technique_id", "scenario")
MAX_WORDS = 60  # long analytics / procedures are cut so that a question stays a question

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'])")
# Swaps that weaken the exact word overlap between a description sentence and its document.
_SYNONYMS = (("adversaries", "attackers"), ("adversary", "attacker"), ("malicious", "harmful"),
             ("utilize", "use"), ("leverage", "abuse"), ("obtain", "get"), ("execute", "run"),
             ("legitimate", "benign"), ("in order to", "to"), ("information", "data"), ("may also", "can also"),
             ("may", "can"), ("additionally", "also"), ("utilities", "tools"), ("attempt to", "try to"))
_DESCRIPTION_OPENERS = ("Which ATT&CK technique matches this: {s}?", "What technique is this: {s}?",
                        "Name the technique where {s}")
_ID_TEMPLATES = ("What is {tid}?", "Explain MITRE ATT&CK technique {tid}.", "How do attackers carry out {tid}?",
                 "Describe {tid} in ATT&CK.")
_SCENARIO_TEMPLATES = ("{s} Which technique is this?", "{s} What ATT&CK technique does this describe?",
                       "Incident report: {s} Map this to an ATT&CK technique.")
_DETECTION_TEMPLATES = ("Which technique would this detection catch: {s}", "A detection rule says: {s} "
                        "What technique does it look for?")
_KEYWORD_STOP_TEXT = (
    "adversaries adversary attackers attacker malicious may also such other used using use which these "
    "those their there where within without through between including include includes various several "
    "different specific however often could would should furthermore moreover additionally although because "
    "before after while whether another"
)
_KEYWORD_STOP = frozenset(_KEYWORD_STOP_TEXT.split())


@dataclass(frozen=True)
class Question:
    """One labelled question: its text, the technique that answers it, its style and the source text."""

    text: str
    technique_id: str
    style: str
    source: str  # the sentence / analytic / procedure it was written from (for leakage checks)

    @property
    def doc_id(self) -> str:
        return f"attack:{self.technique_id}"


@dataclass(frozen=True)
class QuestionSet:
    train: list[Question]
    eval: list[Question]
    train_techniques: frozenset[str]
    eval_techniques: frozenset[str]
    dropped_overlaps: int = 0  # eval questions removed because their source text also fed a train question


# -- sources of question text in the STIX bundle ----------------------------------------------
@dataclass
class QuestionSources:
    """Per technique ID: analytic descriptions of its detection strategy and procedure examples."""

    detections: dict[str, list[str]] = field(default_factory=dict)
    procedures: dict[str, list[str]] = field(default_factory=dict)


def question_sources(stix_objects: Iterable[dict[str, Any]]) -> QuestionSources:
    """Detection analytics ("detects" relationships) and procedures ("uses" relationships) by technique ID."""
    objs = list(stix_objects)
    by_ref = {o["id"]: o for o in objs if "id" in o}

    def technique_id(ref: str) -> str | None:
        obj = by_ref.get(ref)
        if not obj or obj.get("revoked") or obj.get("x_mitre_deprecated"):
            return None
        ext = next((r for r in obj.get("external_references", []) if r.get("source_name") == "mitre-attack"), {})
        return ext.get("external_id")

    sources = QuestionSources(defaultdict(list), defaultdict(list))
    for rel in (o for o in objs if o.get("type") == "relationship"):
        tid = technique_id(rel.get("target_ref", ""))
        actor = by_ref.get(rel.get("source_ref", ""), {})
        if tid is None or not actor or actor.get("revoked") or actor.get("x_mitre_deprecated"):
            continue
        if rel.get("relationship_type") == "detects":
            for ref in actor.get("x_mitre_analytic_refs", []):
                text = clean_text(by_ref.get(ref, {}).get("description", ""))
                if len(text.split()) >= 6:
                    sources.detections[tid].append(text)
        elif rel.get("relationship_type") == "uses" and rel.get("description"):
            text = _anonymise(clean_text(rel["description"]), actor)
            if len(text.split()) >= 6:
                sources.procedures[tid].append(text)
    return QuestionSources(dict(sources.detections), dict(sources.procedures))


def _anonymise(text: str, actor: dict[str, Any]) -> str:
    """Replace the group's / software's name (and aliases) so the question does not name the actor."""
    subject = {"intrusion-set": "An attacker", "campaign": "An attacker", "tool": "An attacker's tool"}.get(
        actor.get("type", ""), "A piece of malware")
    names = [n for n in sorted({actor.get("name", ""), *actor.get("aliases", []), *actor.get("x_mitre_aliases", [])},
                               key=len, reverse=True) if n]
    if not names:
        return text
    pattern = re.compile("|".join(rf"(?<!\w){re.escape(n)}(?!\w)" for n in names))
    text = pattern.sub(subject, text, count=1)  # the first mention becomes the subject, later ones "it"
    return pattern.sub("it", text)


# -- question writers ------------------------------------------------------------------------
def _clip(text: str, max_words: int = MAX_WORDS) -> str:
    words = text.split()
    return " ".join(words[:max_words]) + (" ..." if len(words) > max_words else "")


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text.replace("\n", " "))
            if 8 <= len(s.split()) <= MAX_WORDS and not s.strip().startswith(("*", "-"))]


def paraphrase(sentence: str, technique: Technique) -> str:
    """Mask the technique's name and swap common ATT&CK wording for synonyms."""
    text = sentence.rstrip(".").strip()
    for name in sorted({technique.name, technique.parent_name or ""}, key=len, reverse=True):
        if name:
            text = re.sub(rf"(?i)(?<!\w){re.escape(name)}(?!\w)", "this technique", text)
    for old, new in _SYNONYMS:
        text = re.sub(rf"(?i)\b{re.escape(old)}\b", new, text)
    return text


def _description_question(sentence: str, technique: Technique, rng: random.Random) -> str:
    text = paraphrase(sentence, technique)
    lead = re.match(r"(?i)attackers can (?:also )?(.*)", text)
    if lead:  # "Adversaries may X" -> "What technique do attackers use to X?"
        return f"What technique do attackers use to {lead.group(1)}?"
    return rng.choice(_DESCRIPTION_OPENERS).format(s=text[0].lower() + text[1:])


def _keyword_question(technique: Technique, idf: dict[str, float], rng: random.Random) -> str | None:
    name_words = {w.lower() for w in re.findall(r"[A-Za-z]+", technique.full_name)}
    words = [w for w in re.findall(r"[A-Za-z][A-Za-z0-9_]{3,}", technique.description)]
    counts = Counter(w.lower() for w in words)
    first_form = {}
    for w in words:
        first_form.setdefault(w.lower(), w)
    ranked = sorted((w for w in counts if w not in name_words and w not in _KEYWORD_STOP),
                    key=lambda w: (-(1 + math.log(counts[w])) * idf.get(w, 0.0), w))
    if len(ranked) < 3:
        return None
    return " ".join(first_form[w] for w in rng.sample(ranked[:8], 3))


def _idf(items: Sequence[Technique]) -> dict[str, float]:
    df = Counter(w for t in items for w in {w.lower() for w in re.findall(r"[A-Za-z][A-Za-z0-9_]{3,}", t.description)})
    return {w: math.log(len(items) / c) for w, c in df.items()}


def technique_questions(technique: Technique, sources: QuestionSources, idf: dict[str, float], rng: random.Random,
                        per_style: int = 1, styles: Sequence[str] = STYLES) -> list[Question]:
    """Up to ``per_style`` questions of each style for one technique (fewer when it lacks source text)."""
    tid, out = technique.technique_id, []
    for style in styles:
        pairs: list[tuple[str, str]] = []  # (question, source text)
        if style == "description":
            pool = _sentences(technique.description)
            pairs = [(_description_question(s, technique, rng), s) for s in rng.sample(pool, min(per_style, len(pool)))]
        elif style == "detection":
            pool = sorted(set(sources.detections.get(tid, [])))
            pairs = [(rng.choice(_DETECTION_TEMPLATES).format(s=_clip(s)), s)
                     for s in rng.sample(pool, min(per_style, len(pool)))]
        elif style == "keyword":
            pairs = [(q, q) for q in (_keyword_question(technique, idf, rng) for _ in range(per_style)) if q]
        elif style == "technique_id":
            pairs = [(t.format(tid=tid), tid) for t in rng.sample(_ID_TEMPLATES, min(per_style, len(_ID_TEMPLATES)))]
        elif style == "scenario":
            pool = sorted(set(sources.procedures.get(tid, [])))
            pairs = [(rng.choice(_SCENARIO_TEMPLATES).format(s=_clip(s)), s)
                     for s in rng.sample(pool, min(per_style, len(pool)))]
        seen = set()
        for text, source in pairs:
            if text not in seen:
                seen.add(text)
                out.append(Question(text=text, technique_id=tid, style=style, source=source))
    return out


def build_question_set(items: Sequence[Technique], sources: QuestionSources, *, seed: int = 0,
                       eval_fraction: float = 0.5, train_per_style: int = 2,
                       styles: Sequence[str] = STYLES) -> QuestionSet:
    """Split techniques into train / eval (disjoint), then write questions for each side.

    Eval gets one question per style per technique; train gets up to ``train_per_style``.
    An eval question whose source text (e.g. a procedure shared by two techniques) also fed a
    train question is dropped, so no eval text was ever seen in training.
    """
    if not 0.0 < eval_fraction < 1.0:
        raise ConfigError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    unknown = set(styles) - set(STYLES)
    if unknown or not styles:
        raise ConfigError(f"unknown question styles {sorted(unknown)}; choose from {', '.join(STYLES)}")
    if len(items) < 2:
        raise ConfigError("need at least two techniques to split into train and eval")
    rng = random.Random(seed)
    ids = sorted(t.technique_id for t in items)
    rng.shuffle(ids)
    n_eval = min(len(ids) - 1, max(1, round(len(ids) * eval_fraction)))
    eval_ids = frozenset(ids[:n_eval])
    idf = _idf(items)
    train, evals = [], []
    for t in sorted(items, key=lambda t: t.technique_id):
        if t.technique_id in eval_ids:
            evals += technique_questions(t, sources, idf, rng, 1, styles)
        else:
            train += technique_questions(t, sources, idf, rng, train_per_style, styles)
    train_sources = {_norm(q.source) for q in train if q.style != "technique_id"}
    kept = [q for q in evals if q.style == "technique_id" or _norm(q.source) not in train_sources]
    log.info("questions: %d train (%d techniques), %d eval (%d techniques), %d eval dropped as overlapping",
             len(train), len(ids) - n_eval, len(kept), n_eval, len(evals) - len(kept))
    return QuestionSet(train=train, eval=kept, train_techniques=frozenset(ids[n_eval:]), eval_techniques=eval_ids,
                       dropped_overlaps=len(evals) - len(kept))


def stratified_sample(questions: Sequence[Question], n: int | None, seed: int = 0) -> list[Question]:
    """At most ``n`` questions, as equal a share of each style as the styles allow, in a seeded order."""
    if n is None or n >= len(questions):
        return list(questions)
    rng = random.Random(seed)
    by_style: dict[str, list[Question]] = defaultdict(list)
    for q in questions:
        by_style[q.style].append(q)
    for group in by_style.values():
        rng.shuffle(group)
    out: list[Question] = []
    while len(out) < n:  # round-robin over styles so a short style does not starve the others
        for style in sorted(by_style):
            if by_style[style] and len(out) < n:
                out.append(by_style[style].pop())
    return out


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


# -- metrics -----------------------------------------------------------------------------------
def first_relevant_rank(hits: Sequence[Hit], doc_id: str) -> int | None:
    """1-based position of the relevant document in the hit list, or None when it is missing."""
    return next((i for i, h in enumerate(hits, start=1) if h.id == doc_id), None)


def recall_at_k(ranks: Sequence[int | None], k: int) -> float:
    """Share of questions whose (single) relevant document is within the top k."""
    if not ranks:
        raise ConfigError("recall@k needs at least one question")
    return sum(1 for r in ranks if r is not None and r <= k) / len(ranks)


def mean_reciprocal_rank(ranks: Sequence[int | None], cutoff: int | None = None) -> float:
    """Mean of 1/rank (0 when the relevant document was not retrieved, or ranked below ``cutoff``)."""
    if not ranks:
        raise ConfigError("MRR needs at least one question")
    return sum(1.0 / r for r in ranks if r is not None and (cutoff is None or r <= cutoff)) / len(ranks)
