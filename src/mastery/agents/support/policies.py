"""The support policies this package ships (``policies/*.md``) as Documents, and a retriever over them.

Each file starts with a small header (``id``, ``intent``, ``title``, ``key_facts``) between ``---`` lines, then
Markdown. The key facts are the policy's concrete rules (days, amounts, where to click); a useful reply states at
least one of them (a draft check in L22). The files are package
data, read with :mod:`importlib.resources`, so an installed wheel finds them too.

Retrieval reuses L20's parts: BM25 over the policy sections, optionally fused by reciprocal rank with MiniLM
(``mode="hybrid"``); a section hit names its policy in ``metadata["policy_id"]``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from mastery.agents.support import INTENTS
from mastery.core.errors import MasteryError
from mastery.retrieval.types import Document, Hit

log = logging.getLogger(__name__)

RETRIEVAL_MODES = ("bm25", "hybrid")


class PolicyError(MasteryError):
    """A policy file is malformed, or a policy or intent is unknown."""


@dataclass(frozen=True)
class Policy:
    id: str  # e.g. POL-REFUND: what a reply cites
    intent: str
    title: str
    key_facts: tuple[str, ...]  # the concrete rules, as they are written ("30 days", "Account > Billing")
    body: str  # the Markdown after the header

    def excerpt(self, max_chars: int = 900) -> str:
        """The body without the title line or heading marks, cut at a line break near ``max_chars`` (prompt budget)."""
        # headings become plain lines: a small model copies Markdown headings into its reply
        text = "\n".join(line.lstrip("# ") for line in self.body.splitlines() if not line.startswith("# ")).strip()
        if len(text) <= max_chars:
            return text
        cut = text.rfind("\n", 0, max_chars)
        return text[: cut if cut > max_chars // 2 else max_chars].rstrip()


def parse_policy(text: str, name: str = "<policy>") -> Policy:
    """Parse one policy file: a ``---`` header of ``key: value`` lines, then the Markdown body."""
    parts = text.split("---", 2)
    if len(parts) != 3 or parts[0].strip():
        raise PolicyError(f"{name}: a policy starts with a '---' header block")
    header: dict[str, str] = {}
    for line in parts[1].strip().splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            raise PolicyError(f"{name}: header line {line!r} is not 'key: value'")
        header[key.strip()] = value.strip()
    missing = [k for k in ("id", "intent", "title", "key_facts") if not header.get(k)]
    if missing:
        raise PolicyError(f"{name}: header lacks {', '.join(missing)}")
    if header["intent"] not in INTENTS:
        raise PolicyError(f"{name}: unknown intent {header['intent']!r}; known: {', '.join(INTENTS)}")
    facts = tuple(f.strip() for f in header["key_facts"].split("|") if f.strip())
    return Policy(id=header["id"], intent=header["intent"], title=header["title"], key_facts=facts,
                  body=parts[2].strip())


def load_policies() -> list[Policy]:
    """Every shipped policy, sorted by file name; exactly one per intent."""
    folder = resources.files("mastery.agents.support").joinpath("policies")
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".md")), key=lambda f: f.name)
    policies = [parse_policy(f.read_text(encoding="utf-8"), f.name) for f in files]
    by_intent = {p.intent for p in policies}
    if len(by_intent) != len(policies) or by_intent != set(INTENTS):
        raise PolicyError(f"expected one policy per intent ({', '.join(INTENTS)}); found "
                          f"{', '.join(p.intent for p in policies) or 'none'}")
    return policies


def policy_documents(policies: Sequence[Policy], chunk_size: int = 450) -> list[Document]:
    """Policies split at Markdown headings into chunks of at most ``chunk_size`` characters; each chunk starts
    with its policy's title so a section like "How to cancel" still says which policy it belongs to."""
    from mastery.retrieval.chunking import make_splitter

    splitter = make_splitter(chunk_size, 0, "markdown")
    docs = []
    for policy in policies:
        for i, chunk in enumerate(c for c in splitter.split_text(policy.body) if c.strip()):
            text = chunk if chunk.startswith(f"# {policy.title}") else f"{policy.title}\n{chunk}"
            docs.append(Document(id=f"{policy.id}:{i}", text=text, metadata={
                "policy_id": policy.id, "intent": policy.intent, "title": policy.title, "source": policy.id,
                "chunk": i}))
    return docs


class PolicyIndex:
    """The policies by id and intent, and a search over their sections (BM25, or BM25 + MiniLM fused by RRF)."""

    def __init__(self, policies: Sequence[Policy], mode: str = "hybrid", device: str = "cpu",
                 embedder: Any = None, chunk_size: int = 450) -> None:
        from mastery.retrieval.bm25 import BM25Retriever
        from mastery.retrieval.hybrid import DenseRetriever, HybridRetriever

        if mode not in RETRIEVAL_MODES:
            raise PolicyError(f"retrieval mode must be one of {', '.join(RETRIEVAL_MODES)}, got {mode!r}")
        self.policies = list(policies)
        self.by_id = {p.id: p for p in self.policies}
        self.by_intent = {p.intent: p for p in self.policies}
        self.documents = policy_documents(self.policies, chunk_size)
        self.mode = mode
        # heading_boost 2: the title line ("Refunds and returns") is the strongest single clue in a section
        retrievers: list[Any] = [BM25Retriever(self.documents, heading_boost=2)]
        self.model = embedder
        if mode == "hybrid":
            if self.model is None:
                from mastery.text.embed import load_sentence_model

                self.model = load_sentence_model("all-minilm-l6-v2", device=device, max_seq_length=256)
            retrievers.append(DenseRetriever(self.documents, self.model))
        self.retriever = HybridRetriever(retrievers, depth=len(self.documents)) if len(retrievers) > 1 \
            else retrievers[0]

    def policy(self, policy_id: str) -> Policy:
        if policy_id not in self.by_id:
            raise PolicyError(f"unknown policy {policy_id!r}; known: {', '.join(self.by_id)}")
        return self.by_id[policy_id]

    def for_intent(self, intent: str) -> Policy | None:
        return self.by_intent.get(intent)

    def search(self, message: str, k: int = 3) -> list[Hit]:
        """Top ``k`` policy sections for the message (empty for an empty message or no matching word)."""
        if not message.strip():
            return []
        return self.retriever.search(message, k)

    def search_policies(self, message: str, k: int = 2) -> list[str]:
        """Distinct policy ids of the best sections, best first, at most ``k``."""
        ids: list[str] = []
        for hit in self.search(message, k=max(k * 3, 3)):
            pid = str(hit.metadata["policy_id"])
            if pid not in ids:
                ids.append(pid)
        return ids[:k]
