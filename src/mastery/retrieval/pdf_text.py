"""PDF text as a person reads it: words spaced, lines in reading order, one text per page.

Justified LaTeX (the Debian FAQ) sets its words without space characters: the gaps are glyph positions.
An extractor that only copies the characters of the content stream (pypdf) then returns
"anddescriptionsofthepackagescurrentlyavailable", which neither BM25 nor an embedding model can match.
Measured on the three registered PDFs (``benchmarks/pdf_extraction.py``, ``docs/results/pdf_extraction.json``;
shares are of whitespace-separated words holding a run of more than 25 letters):

- **pypdfium2** (PDFium; Apache-2.0/BSD) places spaces from glyph gaps: 0.01 % run-together words on the Debian
  FAQ (29,302 words), 0 % on the other two, and the fastest (0.2-1.1 s for the 73-page FAQ on a loaded
  2-core machine): the default.
- **pdfplumber** (pdfminer.six; MIT) with its default 3-point gap glues tight lines: 5.5 % on the FAQ and
  27 % on the shared-mime-info spec (16 of 17 pages flagged). With a gap relative to the font size
  (``x_tolerance_ratio`` 0.15) it matches pypdfium2, at 10-30x its time: the first fallback.
- **pypdf** (BSD-3-Clause): 13.7 % on the FAQ (10,030 "words" for the same text; 59 of 73 pages flagged),
  2-4 s: the last fallback.
- PyMuPDF also spaces words but is AGPL-3.0 (or commercial): not used, not installed.

Every page is checked after extraction (:func:`looks_run_together`); a page that fails is re-extracted by the
fallbacks and the least run-together text wins. Each page records the extractor that produced it.
"""

from __future__ import annotations

import io
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

EXTRACTORS = ("pypdfium2", "pdfplumber", "pypdf")
DEFAULT_EXTRACTOR = "pypdfium2"
FALLBACKS = ("pdfplumber", "pypdf")
# English words of more than 25 letters are all but absent from running text ("internationalization" has 20);
# identifiers are broken by '_', digits or '.', which end a letter run. A page where more than 2 % of the
# words hold such a run (at least 3 of them) was run together: pypdf's FAQ pages reach 60 %, pypdfium2's 0.4 %.
LONG_RUN_LETTERS = 25
RUN_TOGETHER_SHARE = 0.02
RUN_TOGETHER_MIN_WORDS = 3
# pdfplumber's gap between words as a share of the font size (its default is an absolute 3 points, which
# glues the FAQ's tight justified lines).
PLUMBER_X_TOLERANCE_RATIO = 0.15

_LETTER_RUN = re.compile(r"[^\W\d_]+")
# PDFium marks a hyphen it judged soft (a word broken at the line end) with U+FFFE, and a hyphen that was
# typeset as U+00AD: the word is joined again; line breaks between are dropped with it.
_SOFT_HYPHEN = re.compile("[\ufffe\u00ad](?:\r?\n)?")
_PDFIUM_LOCK = threading.Lock()  # PDFium is not thread-safe: one document at a time per process


class PdfTextError(Exception):
    """The PDF could not be opened (``password`` true when it needs one); documents.py words the message."""

    def __init__(self, message: str, password: bool = False) -> None:
        super().__init__(message)
        self.password = password


@dataclass(frozen=True)
class PageText:
    page: int  # 1-based
    text: str
    extractor: str  # which extractor's text this is
    run_together: float  # share of words holding a letter run longer than LONG_RUN_LETTERS


@dataclass(frozen=True)
class PdfText:
    n_pages: int
    pages: tuple[PageText, ...]  # every page, empty ones included
    reextracted: tuple[int, ...]  # pages the run-together check sent to the fallbacks


def long_words(text: str) -> tuple[int, int]:
    """(words holding a letter run longer than LONG_RUN_LETTERS, words) in ``text``."""
    words = text.split()
    glued = sum(1 for w in words if any(len(run) > LONG_RUN_LETTERS for run in _LETTER_RUN.findall(w)))
    return glued, len(words)


def run_together_share(text: str) -> float:
    glued, total = long_words(text)
    return glued / total if total else 0.0


def looks_run_together(text: str) -> bool:
    """Whether a page's words look run together (see RUN_TOGETHER_SHARE)."""
    glued, total = long_words(text)
    return glued >= RUN_TOGETHER_MIN_WORDS and glued / total > RUN_TOGETHER_SHARE


def _clean(text: str) -> str:
    return _SOFT_HYPHEN.sub("", text.replace("\r\n", "\n"))


def _pypdfium2(data: bytes) -> list[str]:
    import pypdfium2

    with _PDFIUM_LOCK:
        try:
            pdf = pypdfium2.PdfDocument(data)
        except pypdfium2.PdfiumError as exc:
            password = getattr(exc, "err_code", None) == pypdfium2.raw.FPDF_ERR_PASSWORD
            raise PdfTextError(str(exc), password=password) from None
        try:
            out = []
            for i in range(len(pdf)):
                page = pdf[i]
                textpage = page.get_textpage()
                out.append(_clean(textpage.get_text_range()))
                textpage.close()
                page.close()
            return out
        finally:
            pdf.close()


def _pdfplumber(data: bytes) -> list[str]:
    import pdfplumber

    try:
        with pdfplumber.open(io.BytesIO(data)) as pdf:
            return [_clean(p.extract_text(x_tolerance_ratio=PLUMBER_X_TOLERANCE_RATIO) or "") for p in pdf.pages]
    except Exception as exc:  # pdfminer raises PDFSyntaxError, PSEOF, PDFPasswordIncorrect...
        raise PdfTextError(f"{type(exc).__name__}: {exc}", password="Password" in type(exc).__name__) from None


def _pypdf(data: bytes) -> list[str]:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise PdfTextError("password required", password=True)
        return [_clean(p.extract_text() or "") for p in reader.pages]
    except PdfTextError:
        raise
    except Exception as exc:  # pypdf raises many types (PdfReadError, KeyError, struct errors) for broken files
        raise PdfTextError(f"{type(exc).__name__}: {exc}") from None


_FUNCTIONS: dict[str, Callable[[bytes], list[str]]] = {
    "pypdfium2": _pypdfium2, "pdfplumber": _pdfplumber, "pypdf": _pypdf}


def extract_all(data: bytes, extractor: str = DEFAULT_EXTRACTOR) -> list[str]:
    """Every page's text by one extractor, no checks (the benchmark compares extractors with this)."""
    if extractor not in _FUNCTIONS:
        raise ValueError(f"unknown PDF extractor {extractor!r}; choose one of {', '.join(EXTRACTORS)}")
    return _FUNCTIONS[extractor](data)


def extract_pdf(data: bytes, name: str = "PDF", extractor: str = DEFAULT_EXTRACTOR,
                fallbacks: Sequence[str] = FALLBACKS) -> PdfText:
    """Each page's text by ``extractor``; pages that look run together are re-extracted by ``fallbacks`` and the
    least run-together text is kept. Raises :class:`PdfTextError` when the primary extractor cannot open it."""
    texts = extract_all(data, extractor)
    pages = [PageText(i + 1, t, extractor, run_together_share(t)) for i, t in enumerate(texts)]
    flagged = [p.page for p in pages if looks_run_together(p.text)]
    for other in fallbacks if flagged else ():
        try:
            alt = extract_all(data, other)
        except PdfTextError as exc:
            log.warning("%s: fallback extractor %s failed (%s)", name, other, exc)
            continue
        for number in flagged:
            old = pages[number - 1]
            if number <= len(alt) and (share := run_together_share(alt[number - 1])) < old.run_together:
                pages[number - 1] = PageText(number, alt[number - 1], other, share)
        if not any(looks_run_together(pages[n - 1].text) for n in flagged):
            break
    if flagged:
        log.info("%s: pages %s looked run together with %s; re-extracted: %s", name, _ranges(flagged), extractor,
                 ", ".join(f"p.{n} {pages[n - 1].extractor} ({pages[n - 1].run_together:.1%})" for n in flagged))
    return PdfText(len(texts), tuple(pages), tuple(flagged))


def _ranges(numbers: Sequence[int]) -> str:
    return ", ".join(str(n) for n in numbers[:20]) + (f" (+{len(numbers) - 20} more)" if len(numbers) > 20 else "")
