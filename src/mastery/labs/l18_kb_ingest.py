"""L18 · Vector databases: a knowledge base in ChromaDB (PDF/Markdown/HTML ingestion, idempotent updates,
atomic writes, metadata filters) plus the MITRE ATT&CK corpus for the RAG labs."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Interval, MinLen

from mastery.core.config import Fraction
from mastery.core.progress import Progress
from mastery.core.report import Report
from mastery.core.runtime import Device

# (query, where filter, what a correct hit is: a source file name or an ATT&CK ID prefix, collection)
DOC_QUERIES = (
    ("How do I decode DER encoded data into an ASN.1 structure?", None, "libtasn1.pdf"),
    ("What does the asn1_create_element function do?", None, "libtasn1.pdf"),
    ("How are glob patterns and magic bytes used to guess the MIME type of a file?", None,
     "shared-mime-info-spec.pdf"),
    ("Where do applications install their XML files describing new MIME types?", None, "shared-mime-info-spec.pdf"),
    ("How do I upgrade my system to a new Debian release?", None, "debian-faq.en.pdf"),
    ("What is the difference between the stable, testing and unstable distributions?", None, "debian-faq.en.pdf"),
)
ATTACK_QUERIES = (
    ("inject malicious code into the address space of another running process", None, "T1055"),
    ("dump credentials from LSASS process memory", None, "T1003.001"),
    ("spearphishing email with a malicious attachment", None, "T1566.001"),
    ("encrypt files on victim systems and demand a ransom", None, "T1486"),
    ("run malware at a set time or at startup", {"tactics_list": {"$contains": "persistence"}}, "T1053"),
)
# Techniques the tiny preset ingests (the ATT&CK queries' answers plus distractors).
TINY_ATTACK = ("T1003.001", "T1021.001", "T1027", "T1053.005", "T1055", "T1055.001", "T1059.001", "T1071.001",
               "T1078", "T1105", "T1110", "T1190", "T1486", "T1547.001", "T1566.001")


REQUIRES: tuple[str, ...] = ("attack_stix", "all-minilm-l6-v2")  # registered assets the tiny preset reads


@dataclass(frozen=True)
class Config:
    chunk_size: Annotated[int, Interval(ge=1, le=1_000_000)] = 1000  # characters per chunk
    chunk_overlap: Annotated[int, Interval(ge=0, le=1_000_000)] = 150  # characters shared by neighbouring chunks
    real_pdfs: bool = True  # the registered Debian documentation PDFs
    attack_subset: tuple[str, ...] = ()  # ATT&CK IDs to ingest; () = all current techniques
    k: Annotated[int, Interval(ge=1, le=1000)] = 3  # hits per query
    # MiniLM word pieces per chunk (longer chunks are truncated when embedded)
    max_seq_length: Annotated[int, Interval(ge=8, le=512)] = 256
    sweep_sizes: Annotated[tuple[Annotated[int, Interval(ge=1, le=1_000_000)], ...], MinLen(1)] = (
        250, 500, 1000, 1500, 2000)
    sweep_overlaps: tuple[Annotated[int, Interval(ge=0, le=1_000_000)], ...] = (0, 100, 200)
    min_query_hit_rate: Fraction = 0.8  # share of queries whose expected source/technique is in the top k
    device: Device = "auto"
    seed: int = 0

    def validate(self) -> None:
        from mastery.retrieval.chunking import check_sizes

        check_sizes(self.chunk_size, self.chunk_overlap)


# The numbers that summarise a run: the README table and the conformance test read them from here.
HEADLINE = ("reingest_added", "changed_replaced", "query_hit_rate")

PRESETS = {
    "tiny": Config(chunk_size=400, chunk_overlap=50, real_pdfs=False, attack_subset=TINY_ATTACK, max_seq_length=128,
                   sweep_sizes=(100, 200, 400), sweep_overlaps=(0, 50)),
    "full": Config(),
}


def run(config: Config, progress: Progress) -> Report:
    from mastery.nn.train import start_torch_report
    from mastery.retrieval.kb import KnowledgeBase, SentenceEmbedder

    report, device = start_torch_report("l18", config)
    embedder = SentenceEmbedder(device=str(device), max_seq_length=config.max_seq_length)
    with tempfile.TemporaryDirectory(prefix="mastery-l18-") as tmp:
        work = Path(tmp)
        kb = KnowledgeBase.open(work / "kb", embedder)
        report.note(f"Store: an embedded, persistent Chroma client in a temporary folder; collections use cosine "
                    f"distance; every vector comes from all-MiniLM-L6-v2 (384-d, max_seq_length "
                    f"{config.max_seq_length}) on {device}, passed to Chroma explicitly.")
        files: list[Any] = write_sample_corpus(work / "docs")
        _lifecycle(report, config, kb, work, files, progress)
        rows: list[dict[str, Any]] = []
        if config.real_pdfs:
            files = _real_pdfs(report, config, kb, progress)
            rows += _queries(kb, "pdfs", DOC_QUERIES, config.k)
        rows += _attack(report, config, kb, progress)
        _query_report(report, config, rows)
        _sweep(report, config, files, progress)
    return report


HANDBOOK_PAGES = (
    "Incident response handbook. Part 1: Preparation.\n"
    "Keep an up-to-date contact list of the security team, legal counsel and system owners. Centralise logs from "
    "servers, firewalls and endpoints and keep them for at least one year. Practise the plan twice a year with "
    "tabletop exercises, and make sure backups are tested by restoring them, not just by checking that they ran.",
    "Incident response handbook. Part 2: Containment.\n"
    "When ransomware is spreading, isolate infected machines from the network at once: unplug them or move them to a "
    "quarantine VLAN, disable the affected accounts and file shares, and block the attacker's command-and-control "
    "addresses at the firewall. Do not power infected hosts off: memory holds keys and evidence. Capture a memory "
    "image before any clean-up.",
    "Incident response handbook. Part 3: Lessons learned.\n"
    "Within two weeks of closing an incident, hold a blameless review: what happened, what detected it, how long each "
    "phase took, and which controls would have stopped it earlier. Track every follow-up action to completion.",
)
PASSWORD_POLICY = """# Password policy

## Length and composition

Passwords must be at least 14 characters long. Long passphrases are preferred over complex short passwords;
do not require arbitrary symbols, and never impose periodic changes without evidence of compromise.

## Multi-factor authentication

Every remote login and every administrator account must use multi-factor authentication, preferably a
hardware security key (FIDO2) rather than SMS codes.

## Storage

Store passwords only as salted hashes with a memory-hard function such as Argon2id or scrypt.
"""
VPN_GUIDE = """<!DOCTYPE html><html><head><title>VPN set-up guide</title><style>body {font: 12px sans-serif}</style>
<script>console.log("analytics");</script></head><body>
<h1>Connecting to the company VPN</h1>
<p>Install the WireGuard client from the software centre, then import the configuration file you received by
e-mail. Your VPN password is the same as your directory password; the VPN also asks for your security key.</p>
<h2>Troubleshooting</h2>
<ul><li>If the tunnel connects but no internal site loads, check that DNS points at 10.0.0.53.</li>
<li>Split tunnelling is disabled: all traffic goes through the VPN while it is on.</li></ul>
<p>Contact the service desk &amp; quote your laptop's asset tag if the key is lost.</p>
</body></html>
"""


def write_sample_corpus(folder: Path) -> list[Path]:
    """The tiny corpus: a 3-page PDF, a Markdown policy and an HTML guide (generated, no licence issues)."""
    from mastery.retrieval.documents import write_text_pdf

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "password-policy.md").write_text(PASSWORD_POLICY, encoding="utf-8")
    (folder / "vpn-guide.html").write_text(VPN_GUIDE, encoding="utf-8")
    return [write_text_pdf(folder / "incident-handbook.pdf", HANDBOOK_PAGES), folder / "password-policy.md",
            folder / "vpn-guide.html"]


@contextmanager
def _failing_second_add() -> Iterator[None]:
    """Make the second Collection.add in this block raise: a write that dies half-way."""
    from chromadb.api.models.Collection import Collection

    original, calls = Collection.add, {"n": 0}

    def add(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("injected failure: disk full")
        return original(self, *args, **kwargs)

    Collection.add = add  # type: ignore[method-assign]
    try:
        yield
    finally:
        Collection.add = original  # type: ignore[method-assign]


def _snapshot(kb: Any, collection: str) -> list[tuple[str, str]]:
    return [(d.id, str(d.metadata.get("content_hash"))) for d in kb.documents(collection)]


def _lifecycle(report: Report, config: Config, kb: Any, work: Path, files: list[Path], progress: Progress) -> None:
    """Generated PDF + Markdown + HTML: ingest, re-ingest, change, atomic failure, filters, bad input."""
    from mastery.core.errors import MasteryError
    from mastery.retrieval.documents import write_text_pdf

    progress.stage("ingest lifecycle (generated documents)", None)
    size, overlap, name = config.chunk_size, config.chunk_overlap, "handbook"
    docs = list(files)
    first = kb.ingest_files(docs, name, size, overlap)
    n_first = kb.count(name)
    again = kb.ingest_files(docs, name, size, overlap)
    md = next(p for p in docs if p.suffix == ".md")
    old_text = md.read_text()
    md.write_text(old_text.replace("at least 14 characters", "at least 16 characters, a passphrase of four words"))
    changed = kb.ingest_files(docs, name, size, overlap)
    stale = kb.documents(name, contains="at least 14 characters")
    expected_chunks = sum(len(kb.documents(name, where={"source": p.name})) for p in docs)
    report.timing("first_ingest_embed_seconds", first.embed_seconds)
    report.metric("files_added", first.added)
    report.metric("first_ingest_chunks", first.chunks)
    report.metric("reingest_added", again.added + again.chunks)
    report.metric("changed_replaced", changed.replaced)
    report.check("first_ingest", first.added == len(docs) and n_first == first.chunks > 0,
                 f"all {len(docs)} generated files added and every chunk stored", f"{first.added} files, {n_first} "
                 "chunks")
    report.check("reingest_is_noop", again.added == again.replaced == again.chunks == 0 and again.unchanged == len(docs)
                 and kb.count(name) == n_first, "re-ingesting the same files writes nothing (content hashes)",
                 f"{again.unchanged} unchanged, {again.chunks} written")
    report.check("change_replaces", changed.replaced == 1 and changed.unchanged == len(docs) - 1 and not stale
                 and kb.count(name) == expected_chunks, "a changed file replaces its old chunks, others untouched",
                 f"{changed.replaced} replaced, {len(stale)} stale chunks left")

    # An ingest whose write dies after the old chunks were deleted must leave the collection as it was.
    before, stored_text = _snapshot(kb, name), md.read_text()
    md.write_text(old_text + "\n\n## Rotation\n\n" + "Rotate service account secrets every 90 days. " * 60)
    batch, kb.write_batch, error = kb.write_batch, 2, ""  # small batches: the failure lands mid-write
    try:
        with _failing_second_add():
            kb.ingest_files(docs, name, size, overlap)
    except MasteryError as exc:
        error = str(exc)
    finally:
        kb.write_batch = batch
        md.write_text(stored_text)  # the file again matches what the store holds
    report.check("failed_write_rolls_back", "restored" in error and _snapshot(kb, name) == before,
                 "a write failing half-way leaves exactly the previous ids and content hashes", error or "no error")

    # Bad input: each one a clear MasteryError, nothing in the store changes.
    broken = work / "bad" / "broken.pdf"
    broken.parent.mkdir()
    broken.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage, no xref, no trailer")
    locked = _encrypted_pdf(write_text_pdf(work / "bad" / "plain.pdf", ["secret"]), work / "bad" / "locked.pdf")
    attempts = {"unreadable PDF": lambda: kb.ingest_files([*docs, broken], name),
                "encrypted PDF": lambda: kb.ingest_files([locked], name),
                "empty query": lambda: kb.query("   ", name),
                "unknown collection": lambda: kb.query("x", "no-such-collection")}
    messages = {}
    for label, attempt in attempts.items():
        try:
            attempt()
            messages[label] = "NO ERROR"
        except MasteryError as exc:
            messages[label] = str(exc)
    ok = "NO ERROR" not in messages.values() and _snapshot(kb, name) == before
    report.check("bad_input_is_a_clear_error", ok, "unreadable/encrypted PDF, empty query, unknown collection each "
                 "raise a MasteryError and the collection is unchanged", "; ".join(messages.values())[:300])
    report.table("Bad input: the errors a user sees", [{"input": k, "error": v} for k, v in messages.items()])

    hits = kb.query("How do we isolate infected machines during a ransomware outbreak?", name, k=config.k)
    top = hits[0].metadata if hits else {}
    report.check("page_citation", top.get("source") == "incident-handbook.pdf" and top.get("page") == 2,
                 "the containment question's top hit is incident-handbook.pdf page 2", hits[0].citation() if hits else
                 "no hits")
    filtered = kb.query("minimum password length", name, k=config.k, where={"source": "vpn-guide.html"})
    report.check("where_filter", bool(filtered) and all(h.metadata["source"] == "vpn-guide.html" for h in filtered),
                 "a where={'source': ...} query returns only that file's chunks", len(filtered))
    report.table("Ingest lifecycle (generated documents)", [
        {"step": "ingest 3 files", "added": first.added, "replaced": first.replaced, "unchanged": first.unchanged,
         "chunks written": first.chunks},
        {"step": "ingest the same files again", "added": again.added, "replaced": again.replaced,
         "unchanged": again.unchanged, "chunks written": again.chunks},
        {"step": "edit the Markdown file, ingest", "added": changed.added, "replaced": changed.replaced,
         "unchanged": changed.unchanged, "chunks written": changed.chunks},
        {"step": "edit again, write fails half-way", "added": 0, "replaced": 0, "unchanged": len(docs),
         "chunks written": 0},
    ])


def _encrypted_pdf(src: Path, dest: Path) -> Path:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(src))
    writer.encrypt(user_password="s3cret", owner_password="owner", algorithm="AES-128")
    with open(dest, "wb") as fh:
        writer.write(fh)
    return dest


def _real_pdfs(report: Report, config: Config, kb: Any, progress: Progress) -> list[Any]:
    from mastery.assets.loaders import load_kb_pdfs
    from mastery.retrieval.chunking import chunk_file
    from mastery.retrieval.documents import load_file

    progress.stage("ingest the registered PDFs", None)
    paths = load_kb_pdfs()
    result = kb.ingest_files(paths, "pdfs", config.chunk_size, config.chunk_overlap)
    files = [load_file(p) for p in paths]
    rows = []
    for f in files:
        words = [w for p in f.pages for w in p.text.split()]
        # Words run together by the extractor show up as very long "words" (URLs and C identifiers excluded).
        glued = sum(len(w) >= 20 and "http" not in w and "_" not in w for w in words) / max(1, len(words))
        rows.append({"file": f.source, "pages": f.n_pages, "pages with text": len(f.pages), "characters": f.n_chars,
                     "chunks": len(chunk_file(f, config.chunk_size, config.chunk_overlap)),
                     "mean chars per word": round(sum(map(len, words)) / max(1, len(words)), 2),
                     "words >= 20 chars": round(glued, 4)})
    report.table("Registered PDFs (Debian documentation packages)", rows)
    report.metric("pdf_files", len(files))
    report.metric("pdf_pages", sum(f.n_pages for f in files))
    report.metric("pdf_chunks", kb.count("pdfs"))
    report.timing("pdf_load_chunk_seconds", result.load_seconds)
    report.timing("pdf_embed_seconds", result.embed_seconds)
    report.timing("pdf_write_seconds", result.write_seconds)
    report.timing("pdf_chunks_per_second", result.chunks / max(1e-9, result.load_seconds + result.embed_seconds
                                                                + result.write_seconds))
    report.check("pdfs_ingested", result.added == len(files) and kb.count("pdfs") == result.chunks > 0,
                 "every registered PDF added, chunks stored", f"{result.added} files, {result.chunks} chunks")
    worst = max(rows, key=lambda r: r["words >= 20 chars"])
    report.metric("pdf_max_long_word_share", worst["words >= 20 chars"])
    report.note(f"PDF text: pypdf keeps page numbers, so every chunk cites one page. Text quality varies: in "
                f"{worst['file']} {worst['words >= 20 chars']:.0%} of the 'words' are 20+ characters long (mean "
                f"{worst['mean chars per word']} characters per word), because that PDF (justified LaTeX) places words "
                "by position, without space characters, and pypdf runs them together "
                "('DebianGNU/Linuxincludescompletesource-code...'). MiniLM's word pieces still carry some of the "
                "topic (see the top scores per file below); a layout-aware extractor (pdfminer/PyMuPDF word boxes) "
                "or the package's plain-text FAQ would avoid it.")
    report.note(f"Ingest cost: reading and chunking {len(files)} PDFs ({sum(f.n_pages for f in files)} pages) took "
                f"{result.load_seconds:.1f} s, embedding the {result.chunks} chunks {result.embed_seconds:.1f} s and "
                f"writing them to Chroma {result.write_seconds:.1f} s: embedding is almost all of it "
                f"({report.timings['pdf_chunks_per_second']:.0f} chunks/s end to end on this device).")
    return files


def _attack(report: Report, config: Config, kb: Any, progress: Progress) -> list[dict[str, Any]]:
    from mastery.retrieval.attack import technique_documents, techniques
    from mastery.retrieval.kb import ATTACK_LIST_FIELDS

    progress.stage("ingest MITRE ATT&CK", None)
    items = techniques()
    if config.attack_subset:
        wanted = set(config.attack_subset)
        items = [t for t in items if t.technique_id in wanted]
    docs = technique_documents(items)
    result = kb.ingest_documents(docs, "attack", list_fields=ATTACK_LIST_FIELDS)
    again = kb.ingest_documents(docs, "attack", list_fields=ATTACK_LIST_FIELDS)
    report.metric("attack_documents", kb.count("attack"))
    report.metric("attack_reingest_written", again.chunks)
    report.timing("attack_embed_seconds", result.embed_seconds)
    report.timing("attack_docs_per_second", result.chunks / max(1e-9, result.embed_seconds + result.write_seconds))
    report.check("attack_ingested", kb.count("attack") == len(docs) == result.added and again.chunks == 0,
                 "one document per technique, re-ingest writes nothing", f"{kb.count('attack')} of {len(docs)}")
    report.note(f"ATT&CK: {len(docs)} current techniques and sub-techniques from the registry's STIX copy, one "
                "document each ('ID Name' + description, citations stripped) with technique_id, tactics, platforms "
                "and url as metadata; tactics/platforms are also stored as lists (tactics_list) so a query can filter "
                "on one tactic with {'tactics_list': {'$contains': 'persistence'}}. Descriptions average ~1,100 "
                f"characters, so MiniLM sees about the first {config.max_seq_length} word pieces of each.")
    return _queries(kb, "attack", ATTACK_QUERIES, config.k)


def _queries(kb: Any, collection: str, queries: tuple, k: int) -> list[dict[str, Any]]:
    rows = []
    for text, where, expected in queries:
        hits = kb.query(text, collection, k=k, where=where)
        found = [h.metadata.get("technique_id") or h.metadata.get("source") for h in hits]
        ok = any(str(f).startswith(expected) for f in found)
        filter_ok = all(_matches(h.metadata, where) for h in hits) if where else True
        rows.append({"collection": collection, "query": text, "filter": str(where or ""), "expected": expected,
                     "hit": ok, "top1": bool(found) and str(found[0]).startswith(expected), "filter held": filter_ok,
                     "top hits": "; ".join(f"{h.citation()} {h.score:.3f}" for h in hits)})
    return rows


def _matches(meta: dict[str, Any], where: dict[str, Any]) -> bool:
    key, cond = next(iter(where.items()))
    if isinstance(cond, dict) and "$contains" in cond:
        return cond["$contains"] in (meta.get(key) or [])
    return meta.get(key) == cond


def _query_report(report: Report, config: Config, rows: list[dict[str, Any]]) -> None:
    hit_rate = sum(r["hit"] for r in rows) / max(1, len(rows))
    top1 = sum(r["top1"] for r in rows) / max(1, len(rows))
    report.metric("query_top1_rate", round(top1, 6))
    filtered = [r for r in rows if r["filter"]]
    report.metric("query_hit_rate", round(hit_rate, 6))
    report.metric("queries", len(rows))
    report.table(f"Queries (top {config.k}; hit = the expected source or technique is among them)", rows)
    report.check("query_hit_rate", hit_rate >= config.min_query_hit_rate,
                 f"share of queries with the expected source/technique in the top {config.k} >= "
                 f"{config.min_query_hit_rate}", round(hit_rate, 4))
    report.check("tactic_filter", bool(filtered) and all(r["filter held"] for r in filtered),
                 "every hit of the tactic-filtered ATT&CK query has that tactic", len(filtered))
    _score_figure(report, rows)
    report.note(f"Queries: {sum(r['hit'] for r in rows)} of {len(rows)} have the expected file or technique in the "
                f"top {config.k}, {top1:.0%} at rank 1. This checks that ingestion, metadata and filters work end to "
                "end and that MiniLM routes a question to the right document; with a few dissimilar PDFs that is an "
                "easy bar. Whether the right passage is retrieved (recall@k on labelled questions) is measured in "
                "the RAG labs that build on this store.")
    by_file: dict[str, list[float]] = {}
    for r in rows:
        if r["collection"] == "pdfs" and r["top hits"]:
            by_file.setdefault(r["expected"], []).append(float(r["top hits"].split("; ")[0].rsplit(" ", 1)[1]))
    if by_file:
        report.note("Top-hit cosine scores of the PDF questions, per file: " + "; ".join(
            f"{name} {', '.join(f'{v:.2f}' for v in scores)}" for name, scores in by_file.items()) + ".")
    misses = [r for r in rows if not r["hit"]]
    if misses:
        report.note("Missed queries: " + "; ".join(f"'{r['query']}' (expected {r['expected']}, got "
                                                   f"{r['top hits']})" for r in misses))


def _score_figure(report: Report, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 0.45 * len(rows) + 1.5))
    labels, y = [], range(len(rows))
    for i, r in enumerate(rows):
        scores = [float(part.rsplit(" ", 1)[1]) for part in r["top hits"].split("; ") if part]
        top = r["top hits"].split("; ")[0].rsplit(" ", 1)[0] if scores else "-"
        ax.barh(i, scores[0] if scores else 0, color="tab:blue" if r["hit"] else "tab:red")
        ax.text((scores[0] if scores else 0) + 0.01, i, top, va="center", fontsize=8)
        labels.append(("[filtered] " if r["filter"] else "") + (r["query"][:55] + ("..." if len(r["query"]) > 55
                                                                                   else "")))
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="cosine similarity of the top hit (blue: expected source in top k, red: missed)",
           title="Queries against the knowledge base")
    fig.tight_layout()
    report.figure("query_scores", fig)
    plt.close(fig)


def _sweep(report: Report, config: Config, files: list[Any], progress: Progress) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mastery.retrieval.chunking import chunk_file, chunk_stats
    from mastery.retrieval.documents import SourceFile, load_file

    progress.stage("chunk-size sweep", None)
    loaded = [f if isinstance(f, SourceFile) else load_file(f) for f in files]
    start = time.perf_counter()
    rows = [chunk_stats(loaded, s, o) for o in config.sweep_overlaps for s in config.sweep_sizes if o < s]
    report.timing("sweep_seconds", time.perf_counter() - start)
    report.table("Chunk-size sweep (no embedding)", [
        {"chunk_size": r.chunk_size, "overlap": r.chunk_overlap, "chunks": r.n_chunks,
         "mean chars": round(r.mean_chars, 1), "max chars": r.max_chars} for r in rows])
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for o in config.sweep_overlaps:
        pts = [r for r in rows if r.chunk_overlap == o]
        axes[0].plot([r.chunk_size for r in pts], [r.n_chunks for r in pts], "o-", label=f"overlap {o}")
        axes[1].plot([r.chunk_size for r in pts], [r.mean_chars for r in pts], "o-", label=f"overlap {o}")
    axes[1].plot(config.sweep_sizes, config.sweep_sizes, "k:", label="chunk_size")
    axes[0].set(xlabel="chunk_size (characters)", ylabel="chunks", title="Number of chunks")
    axes[1].set(xlabel="chunk_size (characters)", ylabel="mean characters per chunk", title="Mean chunk length")
    for ax in axes[:2]:
        ax.legend()
        ax.grid(alpha=0.3)
    per_source = {f.source: len(chunk_file(f, config.chunk_size, config.chunk_overlap)) for f in loaded}
    lengths = [len(d.text) for f in loaded for d in chunk_file(f, config.chunk_size, config.chunk_overlap)]
    axes[2].hist(lengths, bins=30, color="tab:green")
    axes[2].axvline(config.chunk_size, color="k", ls=":")
    axes[2].set(xlabel="characters", ylabel="chunks", title=f"Chunk lengths at {config.chunk_size}/"
                f"{config.chunk_overlap} ({len(lengths)} chunks, {len(per_source)} files)")
    fig.tight_layout()
    report.figure("chunk_sweep", fig)
    plt.close(fig)
    report.note("Chunking: RecursiveCharacterTextSplitter tries paragraph, line, then word breaks (Markdown: headings "
                "first) and never crosses a page, so chunks are shorter than chunk_size on average and the count "
                "grows roughly like characters / (chunk_size - overlap). Smaller chunks give sharper citations but "
                "more vectors and less context per hit; MiniLM truncates anything past max_seq_length word pieces, so "
                "chunks much longer than ~1,000 characters are only partly embedded.")
