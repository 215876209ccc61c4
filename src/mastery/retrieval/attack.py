"""MITRE ATT&CK Enterprise techniques (from the registry's STIX copy) as retrieval Documents.

This is the threat-intel corpus the RAG labs and Cyber-Sentinel's agent search: one Document per
current (not revoked, not deprecated) technique or sub-technique, with its ATT&CK ID, tactics,
platforms and link as metadata.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mastery.retrieval.types import Document

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
