"""Loading files for the knowledge base: PDF (with page numbers), Markdown, plain text and HTML.

Each file becomes a :class:`SourceFile` holding page-level :class:`Page` records: one per PDF page
that has extractable text, or a single page numbered 0 for formats without pages. PDF text comes from
:mod:`mastery.retrieval.pdf_text` (pypdfium2, words spaced; pages that look run together are re-extracted
another way), and each page records its extractor. Anything a user
can get wrong (a missing, unreadable, encrypted, empty, non-UTF-8 or unsupported file) raises
:class:`DocumentError` with the file's name and what to do.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from mastery.core.errors import MasteryError

log = logging.getLogger(__name__)

FORMATS = {".pdf": "pdf", ".md": "markdown", ".markdown": "markdown", ".txt": "text", ".text": "text",
           ".rst": "text", ".html": "html", ".htm": "html", ".xhtml": "html"}


class DocumentError(MasteryError):
    """A file could not be turned into text (missing, unreadable, encrypted, empty, not UTF-8, unsupported)."""


@dataclass(frozen=True)
class Page:
    """The text of one page of one file."""

    path: str  # absolute, resolved path: the file's identity in the knowledge base
    source: str  # the file name: what citations show and `--where source=...` matches
    page: int  # 1-based PDF page number; 0 for formats without pages
    text: str
    format: str  # "pdf", "markdown", "text" or "html"
    file_hash: str  # sha256 of the file's bytes
    extractor: str = ""  # PDF: the extractor whose text this is (see retrieval/pdf_text.py); "" otherwise


@dataclass(frozen=True)
class SourceFile:
    path: str
    source: str
    format: str
    file_hash: str
    n_pages: int  # pages in the file (PDF), 1 otherwise
    pages: tuple[Page, ...]  # only pages with text

    @property
    def n_chars(self) -> int:
        return sum(len(p.text) for p in self.pages)


def file_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DocumentError(f"{path.name}: unsupported file type '{path.suffix or '(none)'}'; supported: "
                            f"{', '.join(sorted(FORMATS))}")
    return fmt


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files given directly, plus every supported file under given folders (sorted), without duplicates."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS)
            if not found:
                raise DocumentError(f"{path}: folder holds no supported files ({', '.join(sorted(FORMATS))})")
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            raise DocumentError(f"{path}: no such file or folder")
    seen: set[Path] = set()
    unique = []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def load_file(path: str | Path) -> SourceFile:
    """Read one file into page-level text records (raises DocumentError)."""
    path = Path(path).expanduser()
    fmt = file_format(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DocumentError(f"{path}: no such file") from None
    except OSError as exc:
        raise DocumentError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not data.strip():
        raise DocumentError(f"{path.name}: the file is empty")
    file_hash = hashlib.sha256(data).hexdigest()
    resolved = str(path.resolve())
    if fmt == "pdf":
        texts, n_pages = _pdf_pages(path, data)
    else:
        text = _decode(path, data)
        texts, n_pages = [(0, html_to_text(text) if fmt == "html" else text, "")], 1
    pages = tuple(Page(resolved, path.name, number, cleaned, fmt, file_hash, extractor)
                  for number, raw, extractor in texts if (cleaned := normalize_text(raw)))
    if not pages:
        hint = " (a scanned PDF? run OCR first, e.g. ocrmypdf)" if fmt == "pdf" else ""
        raise DocumentError(f"{path.name}: no extractable text{hint}")
    log.debug("loaded %s: %d of %d pages with text", path.name, len(pages), n_pages)
    return SourceFile(resolved, path.name, fmt, file_hash, n_pages, pages)


def load_files(paths: Sequence[str | Path]) -> list[SourceFile]:
    return [load_file(p) for p in expand_paths(paths)]


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")  # a leading byte-order mark is dropped
    except UnicodeDecodeError as exc:
        raise DocumentError(f"{path.name}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                            "convert it, e.g. iconv -f latin1 -t utf-8") from None


def _pdf_pages(path: Path, data: bytes) -> tuple[list[tuple[int, str, str]], int]:
    """(page number, text, extractor) per page: pypdfium2, with run-together pages re-extracted (pdf_text.py)."""
    from mastery.retrieval.pdf_text import PdfTextError, extract_pdf

    if b"%PDF-" not in data[:1024]:  # readers accept the header anywhere in the first KiB
        raise DocumentError(f"{path.name}: not a PDF (no %PDF header)")
    try:
        # Many PDFs are encrypted only against editing, with an empty user password: those open.
        extracted = extract_pdf(data, path.name)
    except PdfTextError as exc:
        if exc.password:
            raise DocumentError(f"{path.name}: encrypted PDF (password required); decrypt it first, "
                                "e.g. qpdf --decrypt --password=... in.pdf out.pdf") from None
        raise DocumentError(f"{path.name}: unreadable PDF ({exc})") from None
    if extracted.n_pages == 0:
        raise DocumentError(f"{path.name}: the PDF has no pages")
    return [(p.page, p.text, p.extractor) for p in extracted.pages], extracted.n_pages


_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalize_text(text: str) -> str:
    """Unify line ends and runs of spaces, drop NULs and trailing spaces; keep paragraph breaks."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


# -- HTML --------------------------------------------------------------------------------------
_SKIP = {"script", "style", "noscript", "template", "svg", "head", "iframe", "object"}
_BLOCK = {"p", "div", "section", "article", "header", "footer", "main", "aside", "nav", "br", "hr", "tr", "table",
          "ul", "ol", "dl", "dt", "dd", "pre", "blockquote", "figure", "figcaption", "form", "title"}
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip_depth = 0
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        if tag in _SKIP:
            self.skip_depth += 1
        elif tag in _HEADINGS:
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag in ("td", "th"):
            self.parts.append(" | ")
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("br", "hr"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in _SKIP:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif tag in _HEADINGS or tag in ("p", "pre", "blockquote", "table", "ul", "ol"):
            self.parts.append("\n\n")
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self.skip_depth:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Visible text of an HTML page (title first; scripts, styles and the head dropped; headings as '#')."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    body = "".join(parser.parts)
    title = " ".join(parser.title.split())
    return f"{title}\n\n{body}" if title and title not in body[:500] else body


# -- a minimal PDF writer (tests and the lab's generated documents) ------------------------------
def write_text_pdf(path: str | Path, pages: Sequence[str], line_chars: int = 90) -> Path:
    """Write a valid PDF with one page per string (Helvetica, Latin-1 text, lines wrapped at
    ``line_chars``), so tests and the tiny lab need no PDF library and no files from outside."""
    import textwrap

    def escape(line: str) -> str:
        return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    objects: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>", b"",  # pages object filled in below
                            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"]
    kids = []
    for text in pages:
        lines = [w for para in text.split("\n") for w in (textwrap.wrap(para, line_chars) or [""])]
        ops = ["BT", "/F1 11 Tf", "14 TL", "56 790 Td"] + [f"({escape(line)}) Tj T*" for line in lines[:54]] + ["ET"]
        stream = "\n".join(ops).encode("latin-1", errors="replace")
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        content_no = len(objects)
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >> "
                       b"/Contents %d 0 R >>" % content_no)
        kids.append(len(objects))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % k for k in kids), len(kids))
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path = Path(path)
    path.write_bytes(bytes(out))
    return path
