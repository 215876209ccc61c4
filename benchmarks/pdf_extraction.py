"""PDF text extraction on the registered PDFs: pypdf vs pypdfium2 vs pdfplumber, and what it does to retrieval.

Part 1 (always): for each registered PDF and each extractor, the extraction time, the characters and words
extracted, the share of run-together "words" (holding a run of more than 25 letters: no English word is that
long, see mastery.retrieval.pdf_text) and the pages the ingest check would flag. PyMuPDF is not measured: it
is AGPL-3.0 and not installed.

Part 2 (``--retrieval``): the hit rate of the knowledge base's hybrid retriever (BM25 + MiniLM, RRF) on the
evaluation set's PDF questions (mastery.eval.assistant_tasks), per document, before (pypdf text, the plain
character splitter) and after (the ingest's pypdfium2 text with the run-together check, heading-aware chunks),
at k = 3 and 5: a hit is a chunk of the gold file (``file``) or of one of its gold pages (``page``) in the top k.
Both collections go into one temporary knowledge base (MiniLM on the CPU: a minute or two each).

Part 3 (``--answers``): every evaluation question on the PDFs, and the unanswerable ones, through
``mastery.llm.rag.ask`` (k = 3) with the configured LLM (default: the embedded 0.5B model), before and after:
key facts in the answer, a cited passage from the gold source, declines.

Prints the tables and one JSON object, also written to ``--json-out``.
Usage: python benchmarks/pdf_extraction.py [--retrieval [--answers]] [--json-out docs/results/pdf_extraction.json]
"""

from __future__ import annotations

import argparse
import io
import logging
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from _table import emit_json, print_table
from mastery.assets.loaders import load_kb_pdfs
from mastery.eval.assistant_tasks import ATTACK_SOURCE, QUESTIONS, EvalQuestion
from mastery.eval.rag_tasks import source_matches
from mastery.retrieval.chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE, chunk_file, make_splitter
from mastery.retrieval.documents import load_file, normalize_text
from mastery.retrieval.pdf_text import (
    PLUMBER_X_TOLERANCE_RATIO,
    extract_all,
    extract_pdf,
    long_words,
    looks_run_together,
)
from mastery.retrieval.types import Document


def _plumber_default(data: bytes) -> list[str]:
    import pdfplumber

    with pdfplumber.open(io.BytesIO(data)) as pdf:
        return [p.extract_text() or "" for p in pdf.pages]


VARIANTS = {
    "pypdf": lambda data: extract_all(data, "pypdf"),
    "pypdfium2": lambda data: extract_all(data, "pypdfium2"),
    "pdfplumber (3 pt gap, its default)": _plumber_default,
    f"pdfplumber ({PLUMBER_X_TOLERANCE_RATIO} x font size gap)": lambda data: extract_all(data, "pdfplumber"),
    "ingest: pypdfium2 + run-together check": lambda data: [p.text for p in extract_pdf(data).pages],
}


def extraction_rows(paths: list[Path]) -> list[dict[str, Any]]:
    rows = []
    for path in paths:
        data = path.read_bytes()
        for name, extract in VARIANTS.items():
            start = time.perf_counter()
            texts = extract(data)
            seconds = time.perf_counter() - start
            texts = [normalize_text(t) for t in texts]
            glued = [long_words(t) for t in texts]
            words = sum(total for _, total in glued)
            rows.append({"document": path.name, "extractor": name, "seconds": round(seconds, 3),
                         "pages": len(texts), "characters": sum(map(len, texts)), "words": words,
                         "run_together_share": round(sum(g for g, _ in glued) / max(1, words), 4),
                         "pages_flagged": sum(looks_run_together(t) for t in texts)})
    return rows


# -- retrieval before / after -----------------------------------------------------------------------------
def before_documents(path: Path, chunk_size: int, chunk_overlap: int) -> list[Document]:
    """The knowledge base as it was: pypdf page text, the plain recursive splitter on each page."""
    splitter = make_splitter(chunk_size, chunk_overlap, "text")
    docs = []
    for page, raw in enumerate(extract_all(path.read_bytes(), "pypdf"), start=1):
        text = normalize_text(raw)
        if not text:
            continue
        for i, piece in enumerate(splitter.create_documents([text])):
            docs.append(Document(f"{path.name}:{page}:{i}", piece.page_content,
                                 {"source": path.name, "page": page, "chunk": i}))
    return docs


def after_documents(path: Path, chunk_size: int, chunk_overlap: int) -> list[Document]:
    """The knowledge base as the ingest now builds it (load_file + chunk_file)."""
    return chunk_file(load_file(path), chunk_size, chunk_overlap)


def hit_rates(retriever: Any, questions: list[EvalQuestion], ks: tuple[int, ...]) -> dict[str, Any]:
    per_doc: dict[str, dict[str, Any]] = {}
    misses = []
    for q in questions:
        hits = retriever.search(q.question, max(ks))
        row = per_doc.setdefault(q.source, {"questions": 0, **{f"{kind}@{k}": 0 for k in ks
                                                              for kind in ("file", "page")}})
        row["questions"] += 1
        for k in ks:
            row[f"file@{k}"] += any(source_matches(h, q.source) for h in hits[:k])
            row[f"page@{k}"] += any(source_matches(h, q.expected_source) for h in hits[:k])
        if not any(source_matches(h, q.expected_source) for h in hits[:max(ks)]):
            misses.append({"id": q.id, "top": [h.citation() for h in hits[:3]]})
    for row in per_doc.values():
        for key in [k for k in row if "@" in k]:
            row[key] = round(row[key] / row["questions"], 3)
    return {"per_document": per_doc, "misses": misses}


def answers(llm: Any, retriever: Any, questions: list[EvalQuestion], k: int) -> dict[str, Any]:
    """`mastery rag ask` on each question (hybrid, top k): key facts in the answer, a cited passage from the
    gold source, and declines, per document ("none" = the unanswerable questions)."""
    from mastery.eval.assistant_tasks import key_facts_found, source_correct
    from mastery.llm.rag import ask

    per_doc: dict[str, dict[str, Any]] = {}
    rows = []
    for q in questions:
        start = time.perf_counter()
        answer = ask(llm, retriever, q.question, k=k)
        cited = [answer.hits[i - 1] for i in answer.cited]
        row = per_doc.setdefault(q.document, {"questions": 0, "key_facts": 0, "cited_source": 0, "declined": 0})
        row["questions"] += 1
        correct = not answer.declined and key_facts_found(answer.text, q)
        row["key_facts"] += correct
        row["cited_source"] += source_correct(cited, q)
        row["declined"] += answer.declined
        rows.append({"id": q.id, "correct": correct, "declined": answer.declined, "cited": answer.citations,
                     "answer": answer.text.strip()[:200], "seconds": round(time.perf_counter() - start, 1)})
    for row in per_doc.values():
        for key in ("key_facts", "cited_source", "declined"):
            row[key] = round(row[key] / row["questions"], 3)
    return {"per_document": per_doc, "answers": rows}


def retrieval(paths: list[Path], chunk_size: int, chunk_overlap: int, ks: tuple[int, ...],
              with_answers: bool = False) -> dict[str, Any]:
    from contextlib import nullcontext

    from mastery.retrieval.kb import KnowledgeBase

    questions = [q for q in QUESTIONS if q.answerable and q.source != ATTACK_SOURCE]
    out: dict[str, Any] = {"chunk_size": chunk_size, "chunk_overlap": chunk_overlap, "k": list(ks),
                           "questions": len(questions)}
    if with_answers:
        from mastery.llm.client import open_client

        client: Any = open_client()
    else:
        client = nullcontext()
    with tempfile.TemporaryDirectory() as folder, client as llm:
        kb = KnowledgeBase.open(folder)
        for name, build in (("before", before_documents), ("after", after_documents)):
            docs = [d for p in paths for d in build(p, chunk_size, chunk_overlap)]
            start = time.perf_counter()
            kb.ingest_documents(docs, f"pdfs-{name}")
            seconds = time.perf_counter() - start
            retriever = kb.retriever(f"pdfs-{name}", "hybrid")
            out[name] = {"chunks": len(docs), "ingest_seconds": round(seconds, 1),
                         **hit_rates(retriever, questions, ks)}
            if llm is not None:
                unanswerable = [q for q in QUESTIONS if not q.answerable]
                out[name]["answers"] = answers(llm, retriever, questions + unanswerable, k=3)
                out[name]["answers"]["model"] = getattr(llm, "model", "?")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retrieval", action="store_true", help="also measure hybrid-retrieval hit rates")
    parser.add_argument("--answers", action="store_true", help="with --retrieval: also answer every question with "
                        "the configured LLM (`mastery rag ask`, default the 0.5B embedded model)")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    parser.add_argument("--chunk-overlap", type=int, default=DEFAULT_CHUNK_OVERLAP)
    parser.add_argument("--json-out", default="docs/results/pdf_extraction.json")
    args = parser.parse_args()
    # The ingest's re-extraction notes and each answer's rag_answer event show the run's progress on stderr.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("httpx", "chromadb", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    paths = load_kb_pdfs()
    rows = extraction_rows(paths)
    print_table(rows)
    report: dict[str, Any] = {"schema": 1, "machine": platform.machine(), "python": platform.python_version(),
                              "pymupdf": "not measured: AGPL-3.0, not installed", "extraction": rows}
    if args.retrieval:
        report["retrieval"] = retrieval(paths, args.chunk_size, args.chunk_overlap, (3, 5), args.answers)
        for name in ("before", "after"):
            print(f"\nretrieval {name}: {report['retrieval'][name]['chunks']} chunks")
            print_table([{"document": d, **r} for d, r in report["retrieval"][name]["per_document"].items()])
            if "answers" in report["retrieval"][name]:
                print(f"answers {name} ({report['retrieval'][name]['answers']['model']}, k=3):")
                print_table([{"document": d, **r}
                              for d, r in report["retrieval"][name]["answers"]["per_document"].items()])
    emit_json(report, args.json_out)


if __name__ == "__main__":
    main()
