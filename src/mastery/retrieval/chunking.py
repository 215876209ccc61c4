"""Splitting pages into overlapping chunks (LangChain's RecursiveCharacterTextSplitter) as Documents.

A chunk never crosses a page boundary, so every chunk cites one page. Ids are stable:
``<source-key>:<page>:<chunk>``, where the source key is a short hash of the file's absolute path,
so two files with identical text keep distinct ids and a re-ingest of the same file yields the same ids.

PDF and plain-text pages are first cut at the document's own headings (:func:`find_headings`): numbered
sections ("3.1 Invoking asn1Parser", "2.1. Directory layout"), numbered questions ("7.14 How do I build
binary packages from a source package?"), "Q:" lines, "Chapter N" and Texinfo function entries
("... [Function]"). Each section is then split under the size cap as before. A piece that does not start
with its heading (the rest of a long answer, or an answer continued on the next page) gets the heading
as its first line, so a question always travels with its answer; the heading is also kept as the chunk's
``section`` metadata. A page without headings is split exactly as before.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from mastery.core.errors import ConfigError
from mastery.retrieval.documents import Page, SourceFile
from mastery.retrieval.types import Document, content_hash

DEFAULT_CHUNK_SIZE = 1000
DEFAULT_CHUNK_OVERLAP = 150
# Bumped whenever extraction or chunking changes what chunks a file yields, so the knowledge base re-ingests
# files it already holds (a file's stored version includes this label). 2: pypdfium2 text, heading sections.
CHUNKER_VERSION = 2
HEADING_FORMATS = ("pdf", "text")
MIN_SECTION_CHARS = 200  # a shorter section (a chapter title, a heading alone) joins the next one
MAX_HEADING_CHARS = 160  # longest heading repeated at the top of a continued section's chunks

_NUMBERED = re.compile(r"^(?P<num>\d{1,2}(?:\.\d{1,3}){0,4})\.?\s+[A-Z\"'“(][^\n]{0,110}$")
_QUESTION = re.compile(r"^(?:Q|Question)\s*\d*\s*[:.)]\s+\S.*$")
_CHAPTER = re.compile(r"^(?:Chapter|CHAPTER|Appendix|APPENDIX|Part|PART)\s+[0-9A-Z]{1,4}\.?$")
_TEXINFO_ENTRY = re.compile(r"\[(?:Function|Macro|Variable|Data Type|Command)\]$")
_TOC_LEADER = re.compile(r"(?:\.\s){3,}|\.{5,}")  # ". . . . 12": a table-of-contents line, not a heading
_BODY_END = re.compile(r"[,;]$")  # a wrapped sentence, not a heading


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


def chunking_label(chunk_size: int, chunk_overlap: int) -> str:
    """How a file was chunked, as stored in the knowledge base ("1000/150/v2")."""
    return f"{chunk_size}/{chunk_overlap}/v{CHUNKER_VERSION}"


@dataclass(frozen=True)
class Section:
    heading: str  # the heading that governs this text ("" before a document's first heading)
    start: int  # character offset in the page
    text: str
    continued: bool  # the text does not begin with its heading (it continues from an earlier page)


def find_headings(text: str) -> list[tuple[int, str]]:
    """(character offset of the line, heading text) for each heading line of a page (see the module docstring).
    A question heading wrapped onto a second short line ending in '?' is returned whole."""
    lines = text.split("\n")
    offsets, pos = [], 0
    for line in lines:
        offsets.append(pos)
        pos += len(line) + 1
    out: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        line = line.strip()
        if not line or _TOC_LEADER.search(line):
            continue
        if _TEXINFO_ENTRY.search(line):
            # "asn1 read value" / "int asn1_read_value (...) [Function]": the short title line above starts it.
            prev = lines[i - 1].strip() if i else ""
            if prev and len(prev) <= 40 and not _TEXINFO_ENTRY.search(prev):
                out.append((offsets[i - 1], f"{prev}: {_TEXINFO_ENTRY.sub('', line).strip()}"))
            else:
                out.append((offsets[i], _TEXINFO_ENTRY.sub("", line).strip()))
        elif (_NUMBERED.match(line) and not _BODY_END.search(line)) or _QUESTION.match(line) or _CHAPTER.match(line):
            heading = line
            nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
            if not heading.endswith(("?", ".", "!", ":")) and nxt.endswith("?") and len(nxt) <= 60:
                heading = f"{heading} {nxt}"
            out.append((offsets[i], heading))
    return out


def split_sections(text: str, carried: str = "") -> list[Section]:
    """The page cut at its headings; the text before the first heading continues ``carried`` (the previous
    page's last heading). Sections shorter than MIN_SECTION_CHARS are joined to the next one."""
    heads = find_headings(text)
    if not heads:
        return [Section(carried, 0, text, bool(carried))]
    bounds = ([(0, carried, bool(carried))] if heads[0][0] > 0 else []) + [(at, h, False) for at, h in heads]
    raw = [Section(h, start, text[start:end], continued)
           for (start, h, continued), end in zip(bounds, [b[0] for b in bounds[1:]] + [len(text)], strict=True)]
    merged: list[Section] = []
    for sec in raw:
        last = merged[-1] if merged else None
        # A short section joins the next one: a chapter title, or a page's running header (one line) before
        # its first question; the question names it. Lines that continue the previous page's answer stay apart.
        if last and len(last.text.strip()) < MIN_SECTION_CHARS and (
                not last.continued or last.text.strip().count("\n") == 0):
            merged.pop()
            sec = Section(sec.heading or last.heading, last.start, last.text + sec.text, False)
        merged.append(sec)
    return [s for s in merged if s.text.strip()]


def _section_pieces(section: Section, chunk_size: int, chunk_overlap: int) -> list[tuple[int, str]]:
    """(offset in the page, chunk text) for one section: split under the cap, the heading on every piece."""
    heading = section.heading[:min(MAX_HEADING_CHARS, chunk_size // 3)]
    prefix = f"{heading}\n" if heading else ""
    size = max(1, chunk_size - len(prefix))
    splitter = make_splitter(size, min(chunk_overlap, size - 1), "text")
    out = []
    for piece in splitter.create_documents([section.text]):
        body = piece.page_content
        offset = int(piece.metadata.get("start_index", 0))
        starts_with_heading = offset == 0 and not section.continued
        text = body if not prefix or starts_with_heading else prefix + body
        out.append((section.start + offset, text))
    return out


def chunk_pages(pages: Sequence[Page], chunk_size: int = DEFAULT_CHUNK_SIZE,
                chunk_overlap: int = DEFAULT_CHUNK_OVERLAP) -> list[Document]:
    """Documents for the chunks of ``pages``, numbered from 0 within each page.

    Metadata: source (file name), path, page (0 = no pages), chunk, start (character offset in the
    page), section (the heading the chunk falls under, "" if none), content_hash (of the chunk),
    file_hash (of the whole file), format and extractor (PDF: which extractor's text; "" otherwise).
    PDF and text pages are cut at their headings first.
    """
    check_sizes(chunk_size, chunk_overlap)
    splitters: dict[str, object] = {}
    docs = []
    carried: dict[str, str] = {}  # path -> the last heading seen, for text continued on the next page
    for page in pages:
        sections = split_sections(page.text, carried.get(page.path, "")) if page.format in HEADING_FORMATS else []
        if sections and any(s.heading for s in sections):
            carried[page.path] = sections[-1].heading
            pieces = [(start, text, s.heading) for s in sections
                      for start, text in _section_pieces(s, chunk_size, chunk_overlap)]
        else:  # no headings: the plain splitter over the whole page, as before
            if page.format not in splitters:
                splitters[page.format] = make_splitter(chunk_size, chunk_overlap, page.format)
            split = splitters[page.format].create_documents([page.text])  # type: ignore[attr-defined]
            pieces = [(int(p.metadata.get("start_index", -1)), p.page_content, "") for p in split]
        for i, (start, text, heading) in enumerate(pieces):
            docs.append(Document(
                id=chunk_id(page.path, page.page, i),
                text=text,
                metadata={"source": page.source, "path": page.path, "page": page.page, "chunk": i,
                          "start": start, "section": heading, "content_hash": content_hash(text),
                          "file_hash": page.file_hash, "format": page.format, "extractor": page.extractor},
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
