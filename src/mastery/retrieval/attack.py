"""MITRE ATT&CK Enterprise techniques (from the registry's STIX copy) as retrieval Documents, and the one
search over them.

This is the threat-intel corpus the RAG labs and Cyber-Sentinel's agent search: one Document per
current (not revoked, not deprecated) technique or sub-technique, with its ATT&CK ID, tactics,
platforms and link as metadata.

Every caller that searches techniques (the ReAct agent's ``kb_search`` tool, the research crew's ``KBSearch``,
Cyber-Sentinel) opens the search the same way, so the same query gets the same hits everywhere::

    search = open_attack_search()          # a Retriever: search.search("T1055 process injection", 5)
    search.name, search.source             # "hybrid+rerank", "knowledge base ~/.cache/mastery/kb, ..."

- Where: the knowledge base's ``attack`` collection when it holds documents (``mastery kb ingest-attack``),
  else an in-memory index over the registered ATT&CK data (embeddings cached on disk by content).
- How, as L20 found best (:data:`~mastery.retrieval.hybrid.ATTACK_TUNING`): BM25 with headings counted 3
  times and technique IDs weighted 3.0, fused by RRF with MiniLM cosine search, then the top 20 re-ordered by
  the fine-tuned cross-encoder from the trained-model registry (``attack-cross-encoder``) when it is
  registered, its order fused with the hybrid order. Without it the search is the hybrid alone.
- ``dense=False`` is BM25 alone (no model is loaded): for tiny presets and tests, not for answers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mastery.core.errors import MasteryError
from mastery.retrieval.hybrid import ATTACK_TUNING, Scorer, SearchTuning
from mastery.retrieval.types import Document, Hit, Retriever

log = logging.getLogger(__name__)

# ATT&CK descriptions carry citations "(Citation: Source Name)" and Markdown links; neither helps retrieval.
_CITATION = re.compile(r"\s*\(Citation:[^)]*\)")
_MD_LINK = re.compile(r"\[([^\]]+)\]\((?:https?://[^)]*)\)")
_HTML_TAG = re.compile(r"</?code>")


@dataclass(frozen=True)
class Technique:
    technique_id: str  # "T1055.011"
    name: str  # "Extra Window Memory Injection"
    parent_name: str | None  # "Process Injection" for a sub-technique
    tactics: tuple[str, ...]  # ("defense-evasion", "privilege-escalation")
    platforms: tuple[str, ...]
    url: str
    description: str  # cleaned: no citations, no Markdown links
    detection: str

    @property
    def full_name(self) -> str:
        return f"{self.parent_name}: {self.name}" if self.parent_name else self.name

    @property
    def is_subtechnique(self) -> bool:
        return "." in self.technique_id


def clean_text(text: str) -> str:
    text = _CITATION.sub("", text or "")
    text = _MD_LINK.sub(r"\1", text)
    text = _HTML_TAG.sub("", text)
    return re.sub(r"[ \t]+", " ", text).strip()


def techniques(stix_objects: Iterable[dict[str, Any]] | None = None) -> list[Technique]:
    """Current ATT&CK techniques, sorted by ID. Reads the registry's STIX copy when none are given."""
    if stix_objects is None:
        from mastery.assets.loaders import load_attack_stix

        stix_objects = load_attack_stix()
    patterns = [o for o in stix_objects if o.get("type") == "attack-pattern"
                and not o.get("revoked") and not o.get("x_mitre_deprecated")]
    by_id: dict[str, dict[str, Any]] = {}
    for obj in patterns:
        ref = next((r for r in obj.get("external_references", []) if r.get("source_name") == "mitre-attack"), None)
        if ref and ref.get("external_id"):
            by_id[ref["external_id"]] = {**obj, "_ref": ref}
    out = []
    for tid, obj in sorted(by_id.items()):
        parent = by_id.get(tid.split(".")[0]) if "." in tid else None
        out.append(Technique(
            technique_id=tid,
            name=obj["name"],
            parent_name=parent["name"] if parent else None,
            tactics=tuple(p["phase_name"] for p in obj.get("kill_chain_phases", [])
                          if p.get("kill_chain_name") == "mitre-attack"),
            platforms=tuple(obj.get("x_mitre_platforms", [])),
            url=obj["_ref"].get("url", f"https://attack.mitre.org/techniques/{tid.replace('.', '/')}"),
            description=clean_text(obj.get("description", "")),
            detection=clean_text(obj.get("x_mitre_detection", "")),
        ))
    return out


def technique_documents(items: Iterable[Technique] | None = None, max_chars: int | None = None) -> list[Document]:
    """One Document per technique: "ID Name" heading then its description (optionally cut to max_chars)."""
    docs = []
    for t in techniques() if items is None else items:
        body = t.description if max_chars is None else t.description[:max_chars]
        docs.append(Document(
            id=f"attack:{t.technique_id}",
            text=f"{t.technique_id} {t.full_name}\n{body}",
            metadata={"source": "mitre-attack", "technique_id": t.technique_id, "name": t.full_name,
                      "tactics": ",".join(t.tactics), "platforms": ",".join(t.platforms), "url": t.url,
                      "is_subtechnique": t.is_subtechnique},
        ))
    return docs


# -- the one ATT&CK search -----------------------------------------------------------------------------
@dataclass
class AttackSearch:
    """The ATT&CK search (a :class:`~mastery.retrieval.types.Retriever`) and where it looks."""

    retriever: Retriever
    source: str  # "knowledge base <location>, collection attack (N documents)" or "in memory (N techniques)"

    @property
    def name(self) -> str:
        return self.retriever.name

    def search(self, query: str, k: int = 10) -> list[Hit]:
        return self.retriever.search(query, k)


def open_attack_search(kb: Any = None, collection: str = "attack", *, documents: Sequence[Document] | None = None,
                       dense: bool = True, reranker: Scorer | Literal["auto"] | None = "auto",
                       device: str = "auto", tuning: SearchTuning = ATTACK_TUNING) -> AttackSearch:
    """The ATT&CK technique search (see the module docstring).

    ``kb``: a :class:`~mastery.retrieval.kb.KnowledgeBase` (default: the configured one, if any exists; an empty
    store is never created). ``documents``: the in-memory corpus (default: every current technique).
    ``reranker``: "auto" (:func:`mastery.retrieval.rerank.find_cross_encoder`), a scorer, or None for none.
    """
    scorer: Scorer | None = None
    if dense:
        if reranker == "auto":
            from mastery.retrieval.rerank import find_cross_encoder

            scorer = find_cross_encoder(device)
        else:
            scorer = reranker  # type: ignore[assignment]
    kind = "bm25" if not dense else "hybrid+rerank" if scorer is not None else "hybrid"
    kb = kb if kb is not None else _existing_kb()
    if kb is not None and (n := _count(kb, collection)):
        retriever = kb.retriever(collection, kind, tuning=tuning, scorer=scorer)
        source = f"knowledge base {kb.location}, collection {collection} ({n} documents)"
    else:
        from mastery.retrieval.hybrid import technique_search

        docs = list(technique_documents() if documents is None else documents)
        if not docs:
            from mastery.retrieval.types import RetrievalError

            raise RetrievalError("the ATT&CK search has no documents to search")
        model = None
        if dense:
            from mastery.assets.store import cache_dir
            from mastery.core.runtime import torch_device
            from mastery.text.embed import load_sentence_model

            model = load_sentence_model("all-minilm-l6-v2", device=torch_device(device), max_seq_length=256)
        retriever = technique_search(docs, model, cache_dir=cache_dir() / "retrieval" if model else None,
                                     tuning=tuning, scorer=scorer)
        source = f"in memory ({len(docs)} techniques)"
    log.info("ATT&CK search: %s over %s", retriever.name, source)
    return AttackSearch(retriever, source)


def _existing_kb() -> Any:
    from mastery.retrieval.kb import open_existing

    try:
        return open_existing()
    except MasteryError as exc:
        log.warning("knowledge base unusable (%s); searching ATT&CK in memory", exc)
        return None


def _count(kb: Any, collection: str) -> int:
    """Documents in ``collection``; 0 when it does not exist (the search then falls back, and says why)."""
    try:
        return int(kb.count(collection))
    except MasteryError as exc:
        log.info("ATT&CK search: %s; searching in memory", exc)
        return 0
