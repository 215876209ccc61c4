"""Heading-aware chunking: sections start at the document's numbered headings and questions, every chunk of a
section carries its question, pages stay one per chunk, the size cap holds, and pages without headings are
split exactly as before."""

from __future__ import annotations

from mastery.retrieval.chunking import (
    chunk_file,
    chunk_pages,
    chunking_label,
    find_headings,
    make_splitter,
    split_sections,
)
from mastery.retrieval.documents import Page, load_file
from tests.test_pdf_text import registered_pdf

ANSWER_1 = ("The Zephyr-9 keeps nightly snapshots for 42 days before it deletes them. " * 12).strip()
PAGE_1 = (
    "CHAPTER 1. BACKUPS 1.1. HOW LONG...\n"  # a running header: not a heading
    "Chapter 1\nBackups and snapshots\n"
    "1.1 How long does the Zephyr-9 keep its nightly snapshots?\n" + ANSWER_1 + "\n"
    "1.2 How do I reset the administrator\npassword?\n"
    "Hold the blue button on the back panel for 12 seconds until the status light blinks amber. Then\n"
    "log in with the printed default password and set a new one.\n"
    "1.3 Which firmware added encrypted replication?\n"
    "Firmware 7.3 added support for encrypted off-site replication to a second Zephyr-9, and the\n"
)
PAGE_2 = (
    "appliance refuses firmware whose signature does not verify, so every update must be signed by\n"
    "the vendor's release key before it is uploaded.\n"
    "Q: Can snapshots be copied to tape?\n"
    "Yes: the export command writes any snapshot to an LTO tape drive attached over SAS.\n"
)


def _pages(fmt: str = "pdf") -> list[Page]:
    return [Page("/docs/zephyr.pdf", "zephyr.pdf", n, text, fmt, "f" * 64, "pypdfium2")
            for n, text in ((1, PAGE_1), (2, PAGE_2))]


def test_headings_are_numbered_sections_questions_and_chapters():
    heads = [h for _, h in find_headings(PAGE_1 + PAGE_2)]
    assert heads == ["Chapter 1", "1.1 How long does the Zephyr-9 keep its nightly snapshots?",
                     "1.2 How do I reset the administrator password?",  # wrapped question joined
                     "1.3 Which firmware added encrypted replication?", "Q: Can snapshots be copied to tape?"]
    not_headings = ("2.1 ASN.1 syntax. . . . . . . . . . . . 2\n"  # a table-of-contents line
                    "1993, initially under the sponsorship of the Free\n"  # a body line starting with a number
                    "2 GB of memory are needed, at least,\n"  # a wrapped sentence
                    "00000010 74 65 78 74 2f 78 2d 64 |text/x-d|\n")  # a hex dump
    assert find_headings(not_headings) == []
    manual = "3.1 Invoking asn1Parser\nasn1Parser reads...\n2.1. Directory layout\nasn1 read value\n" \
             "int asn1_read_value (asn1 node const root, const char * name, [Function]\n"
    assert [h for _, h in find_headings(manual)] == [
        "3.1 Invoking asn1Parser", "2.1. Directory layout",
        "asn1 read value: int asn1_read_value (asn1 node const root, const char * name,"]


def test_sections_join_a_lone_chapter_title_to_its_first_question():
    sections = split_sections(PAGE_1)
    # The running header and the lone chapter title are too short to stand alone: they open question 1.1.
    assert [s.heading for s in sections] == [
        "1.1 How long does the Zephyr-9 keep its nightly snapshots?",
        "1.2 How do I reset the administrator password?", "1.3 Which firmware added encrypted replication?"]
    assert sections[0].text.startswith("CHAPTER 1. BACKUPS") and "Chapter 1\nBackups" in sections[0].text
    assert sum(len(s.text) for s in sections) == len(PAGE_1)  # nothing lost, nothing repeated
    cont = split_sections(PAGE_2, carried="1.3 Which firmware added encrypted replication?")
    assert cont[0].continued and cont[0].heading.startswith("1.3") and cont[1].heading.startswith("Q: Can")


def test_every_chunk_keeps_its_question_page_and_the_size_cap():
    docs = chunk_pages(_pages(), chunk_size=300, chunk_overlap=40)
    assert all(len(d.text) <= 300 for d in docs)
    snapshot = [d for d in docs if "42 days" in d.text]
    assert len(snapshot) >= 3  # the long answer was split under the cap...
    assert all(d.text.startswith("1.1 How long does the Zephyr-9") for d in snapshot)  # ...each piece keeps it
    assert all(d.metadata["section"].startswith("1.1 How long") and d.metadata["page"] == 1 for d in snapshot)
    reset = next(d for d in docs if "blue button" in d.text)
    assert reset.text.startswith("1.2 How do I reset the administrator\npassword?") and "amber" in reset.text
    # The answer that runs onto page 2 is cited as page 2 and carries the page-1 question it answers.
    signed = next(d for d in docs if "signature does not verify" in d.text)
    assert signed.metadata["page"] == 2 and signed.text.startswith("1.3 Which firmware added encrypted")
    tape = next(d for d in docs if "LTO tape" in d.text)
    assert tape.metadata["page"] == 2 and "Q: Can snapshots be copied to tape?" in tape.text
    assert "signature" not in tape.text  # the next question starts a new chunk
    for d in docs:  # `start` points at the chunk's own text in its page (a repeated heading comes before it)
        page, start = PAGE_1 if d.metadata["page"] == 1 else PAGE_2, d.metadata["start"]
        assert 0 <= page.find(d.text[-30:], start) - start <= len(d.text) - 30
    assert [d.metadata["chunk"] for d in docs if d.metadata["page"] == 2] == [0, 1]


def test_pages_without_headings_and_markdown_split_as_before():
    plain = "Alpha page about apples and orchards. " * 30
    pages = [Page("/docs/a.pdf", "a.pdf", 1, plain, "pdf", "f" * 64, "pypdfium2")]
    before = [p.page_content for p in make_splitter(200, 30, "text").create_documents([plain])]
    docs = chunk_pages(pages, 200, 30)
    assert [d.text for d in docs] == before and {d.metadata["section"] for d in docs} == {""}
    md = [Page("/docs/n.md", "n.md", 0, "# Notes\n\n1.1 What is this?\n\nText.", "markdown", "f" * 64)]
    assert [d.text for d in chunk_pages(md, 200, 30)] == ["# Notes\n\n1.1 What is this?\n\nText."]
    assert chunking_label(1000, 150).startswith("1000/150/v")


def test_debian_faq_chunks_follow_its_questions():
    faq = load_file(registered_pdf("pdf-debian-faq"))
    docs = chunk_file(faq)
    assert all(len(d.text) <= 1000 for d in docs)
    hold = [d for d in docs if "apt-mark hold" in d.text]
    assert hold and all(d.metadata["page"] == 40 and "7.12 How do I put a package on hold?" in d.text for d in hold)
    founder = next(d for d in docs if "created by Ian Murdock in 1993" in d.text)
    assert founder.metadata["page"] == 10 and founder.metadata["section"].startswith("1.2 What is Debian")
