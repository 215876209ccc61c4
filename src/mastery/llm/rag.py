"""Retrieval-augmented generation: top-k passages from a retriever, a numbered-context prompt, a streamed
answer, and citations checked in code.

    retriever = kb.retriever("docs", kind="hybrid")    # any Retriever (mastery.retrieval.types)
    answer = ask(llm, retriever, "What does DER stand for?", on_text=print_piece)
    answer.cited, answer.citations, answer.declined

A 0.5B model follows instructions loosely, so the prompt numbers the sources and asks for ``[n]``
citations, and the code then decides what was cited: bracketed numbers, ATT&CK technique IDs and source
names that match a *given* source count; numbers that match nothing are reported as invalid. A reply
that says it does not know (in any of the usual phrasings) is a decline.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mastery.llm.types import Completion, StreamingChatModel
from mastery.retrieval.types import Hit, Retriever

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You answer questions using only the numbered context passages. Answer in one sentence and cite the "
    "passage you used by its number in square brackets. If the passages do not contain the answer, reply "
    "exactly: I don't know."
)
# Two worked turns (one answer with a citation, one refusal): a 0.5B model copies a demonstrated format far
# more reliably than it follows written rules, and an inline example sentence gets copied verbatim.
_DEMO_CONTEXT = ("Context:\n[1] (falcon-guide.txt) The Falcon router restarts every Sunday at 03:00 to apply "
                 "updates.\n\n[2] (falcon-guide.txt) The Falcon router supports up to 64 wireless clients at the "
                 "same time.")
DEMO_TURNS = (
    {"role": "user", "content": _DEMO_CONTEXT + "\n\nQuestion: How many wireless clients can the Falcon router serve?"},
    {"role": "assistant", "content": "The Falcon router supports up to 64 wireless clients at the same time [2]."},
    {"role": "user", "content": _DEMO_CONTEXT + "\n\nQuestion: What colour is the Falcon router?"},
    {"role": "assistant", "content": "I don't know."},
)
DECLINE_TEXT = "I don't know."

_BRACKETS = re.compile(r"\[([\d,\s]+)\]")  # [1], [1, 2], [2,3]
_SOURCE_WORD = re.compile(r"(?:passage|source|context)s?\s+#?(\d+)", re.IGNORECASE)  # "passage 2"
_TECHNIQUE = re.compile(r"\bT\d{4}(?:\.\d{3})?\b")
_DECLINE = re.compile(
    r"\b(?:i\s+(?:do\s+not|don'?t)\s+know|(?:i\s+)?(?:cannot|can'?t|am\s+unable\s+to|unable\s+to)\s+"
    r"(?:answer|find|determine|tell|say)|no\s+(?:information|mention|answer)|not\s+(?:mentioned|provided|"
    r"specified|stated|found|included|covered|available)|(?:does|do)\s*(?:not|n'?t)\s+(?:contain|mention|provide|"
    r"say|specify|include|state|cover))\b", re.IGNORECASE)


@dataclass
class RagAnswer:
    question: str
    text: str  # the model's answer as streamed (or DECLINE_TEXT when the score gate answered)
    hits: list[Hit]  # the sources given, in prompt order ([1] is hits[0]; the best-ranked is the last)
    cited: list[int]  # 1-based numbers of the sources the final answer cites (verified or attached)
    model_cited: list[int]  # valid source numbers the model wrote itself
    invalid_citations: list[int]  # numbers the model cited that were not given
    support: list[float]  # per given source: share of the answer's content words found in it
    declined: bool  # the final answer is "I don't know"
    decline_reason: str | None  # "model" (it said so), "score_gate", "unsupported" (not grounded), None
    completion: Completion | None  # None when the score gate declined without asking the LLM
    retrieval_s: float = 0.0
    pieces: int = 0  # streamed text pieces
    prompt: list[dict[str, str]] = field(default_factory=list)

    @property
    def citations(self) -> list[str]:
        """How the cited sources are named: technique IDs or "source p.N"."""
        return [self.hits[i - 1].citation() for i in self.cited]

    @property
    def attached(self) -> bool:
        """The citation was attached by the code (the model cited nothing that supports its answer)."""
        return bool(self.cited) and not set(self.cited) & set(self.model_cited)

    def final_text(self) -> str:
        """What a user should read: the answer with its checked sources, or "I don't know" with the reason."""
        if self.declined:
            reason = {"score_gate": "no passage in the collection is close to the question",
                      "unsupported": "the model's answer is not supported by the retrieved passages",
                      "model": "the retrieved passages do not contain the answer"}.get(self.decline_reason or "", "")
            return f"{DECLINE_TEXT} ({reason})" if reason else DECLINE_TEXT
        sources = "; ".join(f"[{i}] {c}" for i, c in zip(self.cited, self.citations, strict=True))
        return f"{self.text.strip()}\n\nSources: {sources}" if sources else self.text.strip()


def build_prompt(question: str, hits: Sequence[Hit], context_chars: int | None = None) -> list[dict[str, str]]:
    """System instructions + "Context: [1] (source p.N) text ... Question: q"; each passage cut to context_chars."""
    if not question.strip():
        from mastery.llm.errors import LLMError

        raise LLMError("empty question")
    blocks = []
    for i, hit in enumerate(hits, start=1):
        text = " ".join(hit.text.split())
        if context_chars and len(text) > context_chars:
            text = text[:context_chars].rsplit(" ", 1)[0] + " ..."
        blocks.append(f"[{i}] ({hit.citation()}) {text}")
    context = "\n\n".join(blocks) if blocks else "(no passages)"
    return [{"role": "system", "content": SYSTEM_PROMPT}, *DEMO_TURNS,
            {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {question.strip()}"}]


def find_citations(text: str, hits: Sequence[Hit]) -> tuple[list[int], list[int]]:
    """(cited, invalid): 1-based source numbers the text cites, by [n], "passage n", technique ID or source
    name; and bracketed numbers that match no given source."""
    cited: set[int] = set()
    invalid: set[int] = set()
    numbers = [int(n) for group in _BRACKETS.findall(text) for n in re.findall(r"\d+", group)]
    numbers += [int(n) for n in _SOURCE_WORD.findall(text)]
    for n in numbers:
        (cited if 1 <= n <= len(hits) else invalid).add(n)
    ids = set(_TECHNIQUE.findall(text))
    lowered = text.lower()
    for i, hit in enumerate(hits, start=1):
        meta = hit.metadata
        if meta.get("technique_id") and meta["technique_id"] in ids:
            cited.add(i)
        source = str(meta.get("source", ""))
        if source and not meta.get("technique_id") and source.lower() in lowered:
            page = meta.get("page")
            # "guide.pdf p.3" names one page; a bare file name counts for every given chunk of that file
            if not page or re.search(rf"{re.escape(source.lower())}\W+(?:p\.?|page)\s*{page}\b", lowered) \
                    or not re.search(rf"{re.escape(source.lower())}\W+(?:p\.?|page)\s*\d", lowered):
                cited.add(i)
    return sorted(cited), sorted(invalid)


def is_decline(text: str) -> bool:
    """The answer's first sentence says the context does not answer the question (or the answer is empty).

    Only the first sentence: "X does Y [1]. The passages do not mention Z." is an answer, not a decline."""
    first = re.split(r"(?<=[.!?])\s|\n", text.strip().replace("\u2019", "'"), maxsplit=1)[0]
    return not first or bool(_DECLINE.search(first))


_STOP_WORDS = (
    "the a an and or of to in on for with by from at as is are was were be been it its this that these those "
    "which who what when where how why does do did has have had not no can will would should could may might "
    "than then there their they them you your we our i me my he she his her into about also only such any all "
    "each other more most some answer passage passages context question")
_STOP = frozenset(_STOP_WORDS.split(" "))
_WORD = re.compile(r"[a-z0-9]+(?:[.-][a-z0-9]+)*")


def content_words(text: str) -> list[str]:
    """Lower-case words that carry content: not stop words, not citation numbers, >= 3 chars or a number."""
    text = _BRACKETS.sub(" ", text.lower())
    return [w for w in _WORD.findall(text) if w not in _STOP and (len(w) > 2 or w.isdigit())]


def support_scores(text: str, hits: Sequence[Hit]) -> list[float]:
    """Per hit: the share of the answer's content words that occur in the hit (a 5-letter prefix match covers
    inflections: "deletes" ~ "deleted"). Words the model took from nowhere lower it: a hallucination check."""
    words = content_words(text)
    if not words:
        return [0.0 for _ in hits]
    scores = []
    for hit in hits:
        vocab = set(content_words(hit.text + " " + hit.citation()))
        prefixes = {w[:5] for w in vocab if len(w) >= 5}
        found = sum(w in vocab or (len(w) >= 6 and w[:5] in prefixes) for w in words)
        scores.append(found / len(words))
    return scores


def answer_from(question: str, text: str, hits: Sequence[Hit], completion: Completion | None, *,
                min_support: float = 0.6, gated: bool = False, **extra: Any) -> RagAnswer:
    """Check an answer against its sources: which citations are real and supported, whether it declined.

    A model citation counts when that source supports the answer (>= min_support of its content words);
    an answer that cites nothing supported gets the best-supporting source attached; an answer no source
    supports is declined as "unsupported" (the model made it up or used outside knowledge)."""
    model_cited, invalid = find_citations(text, hits)
    support = support_scores(text, hits)
    reason = "score_gate" if gated else "model" if is_decline(text) else None
    cited: list[int] = []
    if reason is None:
        cited = [i for i in model_cited if support[i - 1] >= min_support]
        if not cited:
            # ties go to the later passage: prompts list the best-ranked last
            best = max(reversed(range(len(hits))), key=lambda j: support[j], default=None)
            if best is not None and support[best] >= min_support:
                cited = [best + 1]
            else:
                reason = "unsupported"
    return RagAnswer(question=question, text=text, hits=list(hits), cited=cited, model_cited=model_cited,
                     invalid_citations=invalid, support=support, declined=reason is not None,
                     decline_reason=reason, completion=completion, **extra)


def best_similarity(hits: Sequence[Hit]) -> float | None:
    """The highest cosine a dense stage put on the hits (``metadata["similarity"]``), None when none did
    (a BM25-only retriever): what ``min_score`` gates on, whatever the retriever's own score scale is."""
    values = [float(h.metadata["similarity"]) for h in hits if h.metadata.get("similarity") is not None]
    return max(values, default=None)


def ask(llm: StreamingChatModel, retriever: Retriever, question: str, *, k: int = 3, max_tokens: int = 256,
        context_chars: int | None = 1200, min_score: float | None = None, min_support: float = 0.6,
        on_text: Callable[[str], None] | None = None, extra_body: dict[str, Any] | None = None) -> RagAnswer:
    """Retrieve the top-k passages with ``retriever``, prompt the LLM with them, stream the answer to ``on_text``,
    then check it (:func:`answer_from`).

    ``retriever`` is any :class:`~mastery.retrieval.types.Retriever`, typically
    ``kb.retriever("docs", kind="hybrid", where=...)`` from :class:`mastery.retrieval.kb.KnowledgeBase`.
    With ``min_score``, a question whose best passage is less similar (cosine, :func:`best_similarity`) is
    declined without calling the LLM; a retriever without a dense stage then declines every question.
    """
    start = time.perf_counter()
    # The best-ranked passage goes last, next to the question, numbered in reading order ([k] is the best).
    # Measured on L19 with Qwen2.5-Coder-1.5B: listed best-first, every answer from a wrong source took it
    # from a later passage although the right one was [1] (correct source 9/12); best-last, see docs/results/l19.
    hits = list(reversed(retriever.search(question, k)))
    best_cosine = best_similarity(hits)
    retrieval_s = time.perf_counter() - start
    prompt = build_prompt(question, hits, context_chars)
    if not hits or (min_score is not None and (best_cosine is None or best_cosine < min_score)):
        best = f"{best_cosine:.2f}" if best_cosine is not None else "none"
        log.info("event=rag_gate question=%r best_score=%s min_score=%s", question[:80], best, min_score)
        if on_text:
            on_text(DECLINE_TEXT)
        return answer_from(question, DECLINE_TEXT, hits, None, retrieval_s=retrieval_s, gated=True, prompt=prompt)
    stream = llm.stream(prompt, max_tokens=max_tokens, temperature=0.0, seed=0, extra_body=extra_body)
    pieces = 0
    for piece in stream:
        pieces += 1
        if on_text:
            on_text(piece)
    completion = stream.read()
    answer = answer_from(question, completion.text, hits, completion, min_support=min_support,
                         retrieval_s=retrieval_s, pieces=pieces, prompt=prompt)
    log.info("event=rag_answer retriever=%s k=%d cited=%s model_cited=%s declined=%s reason=%s",
             getattr(retriever, "name", "?"), k, answer.cited, answer.model_cited, answer.declined,
             answer.decline_reason)
    return answer


def open_knowledge_base(kb_dir: str | None = None, chroma_url: str | None = None, device: str = "auto") -> Any:
    """The knowledge base as `mastery kb` opens it: --chroma-url, else --kb-dir, else the env/default folder."""
    from mastery.retrieval.kb import KnowledgeBase, SentenceEmbedder

    return KnowledgeBase.open(chroma_url or kb_dir, SentenceEmbedder(device=device))
