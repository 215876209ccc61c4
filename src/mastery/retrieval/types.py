"""The two shapes every retriever shares: a Document to index and a Hit it returns."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

# Chroma (and most vector stores) accept only these metadata value types.
MetadataValue = str | int | float | bool


@dataclass(frozen=True)
class Document:
    """A unit of text to index: a chunk of a file, or one ATT&CK technique.

    ``id`` is stable across runs (a re-ingest of the same content yields the same ids);
    ``metadata`` holds flat values only (source, page, chunk, content_hash, technique_id, ...).
    """

    id: str
    text: str
    metadata: dict[str, MetadataValue] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        return content_hash(self.text)


@dataclass(frozen=True)
class Hit:
    """One retrieved document with its score (higher is better) and 1-based rank."""

    id: str
    text: str
    score: float
    rank: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def citation(self) -> str:
        """How an answer cites this hit: the technique ID, or [source p.N], or the source."""
        meta = self.metadata
        if meta.get("technique_id"):
            return str(meta["technique_id"])
        source = str(meta.get("source", self.id))
        return f"{source} p.{meta['page']}" if meta.get("page") else source


def content_hash(text: str) -> str:
    """sha256 of the UTF-8 text: equal content, equal hash, whatever the file is called."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
