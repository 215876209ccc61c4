"""PDF text extraction: pypdfium2 keeps the Debian FAQ's word spacing, the run-together check flags glued pages
and sends them to the fallback extractors, and every page records its extractor."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from mastery.retrieval import pdf_text
from mastery.retrieval.documents import load_file, write_text_pdf
from mastery.retrieval.pdf_text import extract_all, extract_pdf, looks_run_together, run_together_share

PARAGRAPH = textwrap.fill((
    "The Debian Project was created by Ian Murdock in 1993, initially under the sponsorship of the Free "
    "Software Foundation's GNU project. Free software means that you have the freedom to distribute "
    "copies of free software, that you receive source code or can get it if you want it, that you can "
    "change the software or use pieces of it in new free programs. ") * 3, 90)  # lines as on a page


def registered_pdf(name: str) -> Path:
    """A registered PDF's verified local copy, or a skip saying how to get it (never fetched by a test)."""
    from mastery.assets.store import available, resolve

    if not available(name):
        pytest.skip(f"the registered PDF {name} is not here (mastery data pull {name})")
    return resolve(name, fetch=False)


def _glue(text: str) -> str:
    """What pypdf does to justified LaTeX: the spaces of each line gone."""
    return "\n".join(line.replace(" ", "") for line in text.split("\n"))


# -- the run-together check on synthetic text ------------------------------------------------------------
def test_detector_flags_glued_text_and_passes_normal_text():
    assert run_together_share(PARAGRAPH) == 0.0 and not looks_run_together(PARAGRAPH)
    glued = _glue(PARAGRAPH)
    assert run_together_share(glued) > 0.5 and looks_run_together(glued)
    # Half-glued (pdfplumber's default on tight lines): still flagged.
    lines = PARAGRAPH.split("\n")
    half = "\n".join(_glue(line) if i % 2 else line for i, line in enumerate(lines))
    assert looks_run_together(half)


def test_detector_spares_identifiers_urls_and_long_words():
    technical = ("Call asn1_der_decoding_startEnd() or see https://www.debian.org/doc/devel-manuals#maint-guide "
                 "for internationalization and ReverseSuffixTreeLeafNode details. ") * 10
    assert run_together_share(technical) == 0.0 and not looks_run_together(technical)
    # Two glued words on a short page are below the minimum count: a title page is not re-extracted for them.
    few = "Title\n" + "Thisisaverylongwordthatisglued andanotherverylongwordthatisglued too"
    assert run_together_share(few) > pdf_text.RUN_TOGETHER_SHARE and not looks_run_together(few)
    assert not looks_run_together("")


def test_pdfium_soft_hyphens_are_joined():
    assert pdf_text._clean("Pen\ufffetium and dis\ufffe\r\ntributions\r\nnext") == "Pentium and distributions\nnext"


# -- the fallback --------------------------------------------------------------------------------------------
def test_flagged_pages_are_re_extracted_and_record_the_extractor(monkeypatch, caplog):
    good, glued = PARAGRAPH, _glue(PARAGRAPH)
    calls = []

    def fake(name, texts):
        def extract(data):
            calls.append(name)
            return list(texts)
        return extract

    monkeypatch.setitem(pdf_text._FUNCTIONS, "pypdfium2", fake("pypdfium2", [good, glued, glued]))
    monkeypatch.setitem(pdf_text._FUNCTIONS, "pdfplumber", fake("pdfplumber", ["other", PARAGRAPH, glued]))
    monkeypatch.setitem(pdf_text._FUNCTIONS, "pypdf", fake("pypdf", ["other", "x", glued]))
    with caplog.at_level(logging.INFO, logger="mastery.retrieval.pdf_text"):
        out = extract_pdf(b"%PDF-1.4", "doc.pdf")
    assert out.n_pages == 3 and out.reextracted == (2, 3)
    assert [p.extractor for p in out.pages] == ["pypdfium2", "pdfplumber", "pypdfium2"]
    assert out.pages[0].text == good and out.pages[1].text == PARAGRAPH  # page 1 was never replaced
    assert out.pages[2].run_together > 0.5  # no extractor did better: the primary's text stays
    assert calls == ["pypdfium2", "pdfplumber", "pypdf"]  # page 3 still glued, so the last fallback was tried
    assert "doc.pdf: pages 2, 3 looked run together" in caplog.text and "p.2 pdfplumber" in caplog.text


def test_clean_pages_never_call_the_fallbacks(monkeypatch):
    monkeypatch.setitem(pdf_text._FUNCTIONS, "pypdfium2", lambda data: [PARAGRAPH])
    monkeypatch.setitem(pdf_text._FUNCTIONS, "pdfplumber", lambda data: pytest.fail("fallback called"))
    out = extract_pdf(b"%PDF-1.4")
    assert out.reextracted == () and out.pages[0].extractor == "pypdfium2"
    with pytest.raises(ValueError, match="unknown PDF extractor 'pymupdf'"):
        extract_all(b"", "pymupdf")


def test_loaded_pages_name_their_extractor(tmp_path):
    pdf = load_file(write_text_pdf(tmp_path / "a.pdf", ["First page text.", "Second page text."]))
    assert [(p.page, p.text, p.extractor) for p in pdf.pages] == [
        (1, "First page text.", "pypdfium2"), (2, "Second page text.", "pypdfium2")]
    (tmp_path / "b.md").write_text("# Notes\n")
    assert load_file(tmp_path / "b.md").pages[0].extractor == ""


# -- the real document that broke --------------------------------------------------------------------------
SENTENCE = "The Debian Project was created by Ian Murdock in 1993"


def test_debian_faq_keeps_its_word_spacing():
    path = registered_pdf("pdf-debian-faq")
    faq = load_file(path)
    page = next(p for p in faq.pages if p.page == 10)
    assert SENTENCE in page.text and page.extractor == "pypdfium2"
    assert "descriptions of the packages currently available" in " ".join(p.text for p in faq.pages[:10])
    assert not any(looks_run_together(p.text) for p in faq.pages)
    # pypdf's text of the same page is what used to be stored: run together, and flagged as such.
    old = extract_all(path.read_bytes(), "pypdf")[9]
    assert "TheDebianProjectwascreatedbyIanMurdock" in old and looks_run_together(old)


def test_fallback_repairs_pypdf_pages_of_the_debian_faq():
    data = registered_pdf("pdf-debian-faq").read_bytes()
    out = extract_pdf(data, "debian-faq.en.pdf", extractor="pypdf", fallbacks=("pypdfium2",))
    assert 10 in out.reextracted and len(out.reextracted) > 30
    page = out.pages[9]
    assert page.extractor == "pypdfium2" and SENTENCE in page.text and page.run_together == 0.0
