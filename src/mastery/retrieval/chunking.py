"""Splitting pages into overlapping chunks (LangChain's RecursiveCharacterTextSplitter) as Documents.

A chunk never crosses a page boundary, so every chunk cites one page. Ids are stable:
``<source-key>:<page>:<chunk>``, where the source key is a short hash of the file's absolute path,
so two files with identical text keep distinct ids and a re-ingest of the same file yields the same ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from mastery.core.errors import ConfigError
from mastery.retrieval.documents import Page, SourceFile
from mastery.retrieval.types import Document, content_hash

DEFAULT_CHUNK_SIZE = 1000
DEFAULT_CHUNK_OVERLAP = 150


def source_key(path: str) -> str:
    """16 hex digits identifying a file by its absolute path."""
    return hashlib.sha256(path.encode("utf-8")).hexdigest()[:16]


def chunk_id(path: str, page: int, chunk: int) -> str:
    return f"{source_key(path)}:{page}:{chunk}"


def check_sizes(chunk_size: int, chunk_overlap: int) -> None:
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
    if not 0 <= chunk_overlap < chunk_size:
        raise ConfigError(f"chunk_overlap must be >= 0 and < chunk_size ({chunk_size}), got {chunk_overlap}")


def make_splitter(chunk_size: int = DEFAULT_CHUNK_SIZE, chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
                  fmt: str = "text"):  # -> RecursiveCharacterTextSplitter
    """Character splitter that prefers paragraph, then line, then word breaks (Markdown: headings first)."""
    from langchain_text_splitters import Language, RecursiveCharacterTextSplitter

    check_sizes(chunk_size, chunk_overlap)
    if fmt == "markdown":
        return RecursiveCharacterTextSplitter.from_language(Language.MARKDOWN, chunk_size=chunk_size,
                                                            chunk_overlap=chunk_overlap, add_start_index=True)
    return RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap, add_start_index=True)


def chunk_pages(pages: Sequence[Page], chunk_size: int = DEFAULT_CHUNK_SIZE,
                chunk_overlap: int = DEFAULT_CHUNK_OVERLAP) -> list[Document]:
    """Documents for the chunks of ``pages``, numbered from 0 within each page.

    Metadata: source (file name), path, page (0 = no pages), chunk, start (character offset in the
    page), content_hash (of the chunk), file_hash (of the whole file) and format.
    """
    splitters: dict[str, object] = {}
    docs = []
    for page in pages:
        if page.format not in splitters:
            splitters[page.format] = make_splitter(chunk_size, chunk_overlap, page.format)
        pieces = splitters[page.format].create_documents([page.text])  # type: ignore[attr-defined]
        for i, piece in enumerate(pieces):
            text = piece.page_content
            docs.append(Document(
                id=chunk_id(page.path, page.page, i),
                text=text,
                metadata={"source": page.source, "path": page.path, "page": page.page, "chunk": i,
                          "start": int(piece.metadata.get("start_index", -1)), "content_hash": content_hash(text),
                          "file_hash": page.file_hash, "format": page.format},
            ))
    return docs


def chunk_file(file: SourceFile, chunk_size: int = DEFAULT_CHUNK_SIZE,
               chunk_overlap: int = DEFAULT_CHUNK_OVERLAP) -> list[Document]:
    return chunk_pages(file.pages, chunk_size, chunk_overlap)


@dataclass(frozen=True)
class ChunkStats:
    chunk_size: int
    chunk_overlap: int
    n_chunks: int
    mean_chars: float
    max_chars: int


def chunk_stats(files: Sequence[SourceFile], chunk_size: int, chunk_overlap: int) -> ChunkStats:
    """How many chunks, and how long, a splitting setting yields (no embedding: cheap)."""
    lengths = [len(d.text) for f in files for d in chunk_file(f, chunk_size, chunk_overlap)]
    return ChunkStats(chunk_size, chunk_overlap, len(lengths), sum(lengths) / max(1, len(lengths)),
                      max(lengths, default=0))
