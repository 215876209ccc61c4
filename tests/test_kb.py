"""L18: document loading, chunking, the Chroma knowledge base (idempotent, atomic), its CLI and the PDF assets."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from mastery.core.errors import ConfigError, MasteryError
from mastery.retrieval.chunking import chunk_file, chunk_id, chunk_stats
from mastery.retrieval.documents import DocumentError, expand_paths, html_to_text, load_file, write_text_pdf
from mastery.retrieval.kb import KnowledgeBase, KnowledgeBaseError
from mastery.retrieval.types import Document
from tests.conftest import needs_mirror


class HashEmbedder:
    """Bag-of-words hashed into 64 dims: instant, deterministic, and shared words mean similar vectors."""

    name = "test-hash-64"

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, texts):
        self.calls += 1
        out = np.zeros((len(texts), 64), np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().replace(".", " ").replace(",", " ").split():
                out[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % 64] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


PAGES = ["Alpha page about apples and orchards. " * 8, "", "Gamma page about ransomware containment. " * 8]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    write_text_pdf(folder / "guide.pdf", PAGES)
    (folder / "notes.md").write_text("# Notes\n\n## Bananas\n\nBananas are yellow fruit.\n\n## Cherries\n\n"
                                     "Cherries are red.\n")
    (folder / "sub" / "page.html").write_text(
        "<html><head><title>VPN guide</title><style>p {color: red}</style><script>var x = 1;</script></head>"
        "<body><h1>VPN</h1><p>Connect with WireGuard &amp; your key.</p><ul><li>one</li><li>two</li></ul>"
        "</body></html>")
    (folder / "readme.txt").write_text("Plain text about kiwis.\n")
    (folder / "ignored.bin").write_bytes(b"\x00\x01")
    return folder


@pytest.fixture
def kb(tmp_path: Path) -> KnowledgeBase:
    return KnowledgeBase.open(tmp_path / "kb", HashEmbedder())


def _snapshot(kb: KnowledgeBase, collection: str) -> list[tuple[str, str]]:
    return [(d.id, d.metadata["content_hash"]) for d in kb.documents(collection)]


# -- loading -----------------------------------------------------------------------------------
def test_pdf_keeps_page_numbers_and_skips_empty_pages(corpus):
    f = load_file(corpus / "guide.pdf")
    assert f.format == "pdf" and f.n_pages == 3
    assert [p.page for p in f.pages] == [1, 3]
    assert "apples" in f.pages[0].text and "ransomware" in f.pages[1].text
    assert f.file_hash == hashlib.sha256((corpus / "guide.pdf").read_bytes()).hexdigest()
    assert f.path == str((corpus / "guide.pdf").resolve()) and f.source == "guide.pdf"


def test_markdown_html_and_text(corpus):
    md = load_file(corpus / "notes.md")
    assert md.format == "markdown" and md.pages[0].page == 0 and "## Bananas" in md.pages[0].text
    html = load_file(corpus / "sub" / "page.html").pages[0].text
    assert html.startswith("VPN guide") and "# VPN" in html and "WireGuard & your key." in html
    assert "color" not in html and "var x" not in html and "- one" in html
    assert load_file(corpus / "readme.txt").pages[0].text == "Plain text about kiwis."
    assert html_to_text("<p>a<br>b</p><table><tr><td>c</td><td>d</td></tr></table>").split() == \
        ["a", "b", "|", "c", "|", "d"]


def test_expand_paths_searches_folders_and_dedupes(corpus):
    found = expand_paths([corpus, corpus / "notes.md"])
    assert sorted(p.name for p in found) == ["guide.pdf", "notes.md", "page.html", "readme.txt"]
    empty = corpus.parent / "empty"
    empty.mkdir()
    with pytest.raises(DocumentError, match="no supported files"):
        expand_paths([empty])
    with pytest.raises(DocumentError, match="no such file"):
        expand_paths([corpus / "missing.pdf"])


def _encrypt(src: Path, dest: Path, user: str) -> Path:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(src))
    writer.encrypt(user_password=user, owner_password="owner", algorithm="AES-128")
    with open(dest, "wb") as fh:
        writer.write(fh)
    return dest


def test_bad_files_give_clear_errors(tmp_path):
    plain = write_text_pdf(tmp_path / "plain.pdf", ["secret text"])
    cases = {
        "locked.pdf": (_encrypt(plain, tmp_path / "locked.pdf", "pw"), "password required"),
        "broken.pdf": (tmp_path / "broken.pdf", "unreadable PDF"),
        "fake.pdf": (tmp_path / "fake.pdf", "not a PDF"),
        "latin1.txt": (tmp_path / "latin1.txt", "not valid UTF-8 \\(byte 0xe9"),
        "empty.md": (tmp_path / "empty.md", "empty"),
        "blank.pdf": (write_text_pdf(tmp_path / "blank.pdf", ["", ""]), "no extractable text"),
        "data.docx": (tmp_path / "data.docx", "unsupported file type '.docx'"),
    }
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> trailing garbage")
    (tmp_path / "fake.pdf").write_text("just text")
    (tmp_path / "latin1.txt").write_bytes("caf\u00e9".encode("latin-1"))
    (tmp_path / "empty.md").write_text("  \n")
    (tmp_path / "data.docx").write_bytes(b"PK")
    for name, (path, match) in cases.items():
        with pytest.raises(DocumentError, match=match) as info:
            load_file(path)
        assert name in str(info.value) and isinstance(info.value, MasteryError)
    # Encrypted only against editing (empty user password): it opens.
    opened = load_file(_encrypt(plain, tmp_path / "owner-only.pdf", ""))
    assert opened.pages[0].text == "secret text"


# -- chunking ----------------------------------------------------------------------------------
def test_chunks_have_stable_ids_and_metadata(corpus):
    f = load_file(corpus / "guide.pdf")
    chunks = chunk_file(f, chunk_size=120, chunk_overlap=30)
    assert chunks == chunk_file(load_file(corpus / "guide.pdf"), 120, 30)  # stable across runs
    assert {d.metadata["page"] for d in chunks} == {1, 3}
    assert all(len(d.text) <= 120 for d in chunks)
    first = chunks[0]
    assert first.id == chunk_id(f.path, 1, 0) and first.id.endswith(":1:0")
    assert set(first.metadata) >= {"source", "path", "page", "chunk", "content_hash", "file_hash", "start"}
    assert first.metadata["content_hash"] == first.content_hash
    page1 = [d for d in chunks if d.metadata["page"] == 1]
    assert [d.metadata["chunk"] for d in page1] == list(range(len(page1)))
    assert page1[0].text[-10:] in page1[1].text[:40]  # neighbours overlap


def test_identical_files_get_distinct_ids_and_sizes_are_checked(corpus, tmp_path):
    shutil.copy(corpus / "notes.md", tmp_path / "copy.md")
    a, b = chunk_file(load_file(corpus / "notes.md")), chunk_file(load_file(tmp_path / "copy.md"))
    assert [d.text for d in a] == [d.text for d in b] and not {d.id for d in a} & {d.id for d in b}
    for size, overlap in [(0, 0), (100, 100), (100, -1)]:
        with pytest.raises(ConfigError):
            chunk_file(load_file(corpus / "notes.md"), size, overlap)
    small, large = chunk_stats([load_file(corpus / "guide.pdf")], 80, 0), chunk_stats(
        [load_file(corpus / "guide.pdf")], 400, 0)
    assert small.n_chunks > large.n_chunks and small.mean_chars < large.mean_chars


# -- the knowledge base ------------------------------------------------------------------------
def test_ingest_is_idempotent_and_changes_replace(kb, corpus):
    first = kb.ingest_files([corpus], "docs", chunk_size=200, chunk_overlap=20)
    assert (first.added, first.replaced, first.unchanged) == (4, 0, 0) and kb.count("docs") == first.chunks > 4
    again = kb.ingest_files([corpus], "docs", chunk_size=200, chunk_overlap=20)
    assert (again.added, again.replaced, again.unchanged, again.chunks) == (0, 0, 4, 0)
    assert kb.count("docs") == first.chunks
    (corpus / "notes.md").write_text("# Notes\n\nDurians smell strong.\n")
    changed = kb.ingest_files([corpus], "docs", chunk_size=200, chunk_overlap=20)
    assert (changed.added, changed.replaced, changed.unchanged) == (0, 1, 3)
    assert not kb.documents("docs", contains="Bananas") and kb.documents("docs", contains="Durians")
    per_file = {r["source"]: r["chunks"] for r in kb.sources("docs")}
    assert per_file["notes.md"] == 1 and sum(per_file.values()) == kb.count("docs")
    rechunked = kb.ingest_files([corpus / "guide.pdf"], "docs", chunk_size=100, chunk_overlap=10)
    assert rechunked.replaced == 1  # new chunk settings re-chunk the file


def test_query_scores_are_cosine_and_filters_apply(kb, corpus):
    kb.ingest_files([corpus], "docs", chunk_size=300, chunk_overlap=0)
    hits = kb.query("ransomware containment", "docs", k=3)
    assert hits[0].metadata["source"] == "guide.pdf" and hits[0].metadata["page"] == 3
    assert hits[0].citation() == "guide.pdf p.3" and [h.rank for h in hits] == [1, 2, 3]
    assert all(a.score >= b.score for a, b in itertools.pairwise(hits))
    q, d = HashEmbedder().embed(["ransomware containment", hits[0].text])
    assert hits[0].score == pytest.approx(float(q @ d), abs=1e-4)
    only_md = kb.query("ransomware containment", "docs", k=5, where={"source": "notes.md"})
    assert only_md and {h.metadata["source"] for h in only_md} == {"notes.md"}
    assert kb.query("x", "docs", where={"page": {"$gte": 3}})[0].metadata["page"] == 3
    assert len(kb.query("fruit", "docs", k=100)) == kb.count("docs")


def test_errors_are_clear_and_change_nothing(kb, corpus, tmp_path):
    kb.ingest_files([corpus], "docs")
    before = _snapshot(kb, "docs")
    (tmp_path / "bad.pdf").write_bytes(b"%PDF-1.7 not really")
    (corpus / "notes.md").write_text("# Changed\n\nNew text that must not be written.\n")
    with pytest.raises(DocumentError, match=r"bad\.pdf"):
        kb.ingest_files([corpus, tmp_path / "bad.pdf"], "docs")
    assert _snapshot(kb, "docs") == before
    for call, match in [(lambda: kb.query("  ", "docs"), "empty query"),
                        (lambda: kb.query("x", "docs", k=0), "k must be"),
                        (lambda: kb.query("x", "nope-collection"), "unknown collection 'nope-collection'.*known: docs"),
                        (lambda: kb.stats("nope-collection"), "unknown collection"),
                        (lambda: kb.delete_collection("nope-collection"), "unknown collection"),
                        (lambda: kb.query("x", "docs", where={"page": {"$regex": 1}}), "bad where filter"),
                        (lambda: kb.ingest_files([corpus], "a"), "bad collection name")]:
        with pytest.raises(KnowledgeBaseError, match=match):
            call()
    assert _snapshot(kb, "docs") == before
    other = KnowledgeBase.open(kb.location, HashEmbedder())
    other.embedder.name = "another-model"
    with pytest.raises(KnowledgeBaseError, match="embedded with test-hash-64"):
        other.query("x", "docs")
    skipped = kb.ingest_files([corpus, tmp_path / "bad.pdf"], "docs", skip_errors=True)
    assert skipped.replaced == 1 and "bad.pdf" in skipped.skipped[0]


@pytest.mark.parametrize("first_time", [True, False])
def test_a_write_failing_half_way_restores_the_collection(kb, corpus, monkeypatch, first_time):
    from chromadb.api.models.Collection import Collection

    if not first_time:
        kb.ingest_files([corpus], "docs", chunk_size=100, chunk_overlap=0)
        (corpus / "notes.md").write_text("# Notes\n\n" + "Fresh paragraph about figs and dates. " * 20)
    before = _snapshot(kb, "docs") if not first_time else None
    original, calls = Collection.add, []

    def flaky_add(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Collection, "add", flaky_add)
    kb.write_batch = 2
    with pytest.raises(KnowledgeBaseError, match="restored to its previous state"):
        kb.ingest_files([corpus], "docs", chunk_size=100, chunk_overlap=0)
    monkeypatch.setattr(Collection, "add", original)
    assert len(calls) == 2  # the failed batch; the old chunks were never deleted, so nothing is re-added
    if first_time:
        assert "docs" not in kb.collections()  # the collection made for this ingest is gone again
    else:
        assert _snapshot(kb, "docs") == before
    done = kb.ingest_files([corpus], "docs", chunk_size=100, chunk_overlap=0)  # and a retry then works
    assert done.chunks > 0 and kb.count("docs") == sum(r["chunks"] for r in kb.sources("docs"))


def test_ready_documents_update_by_content_hash(kb):
    docs = [Document("t:1", "Process injection into a remote process", {"source": "x", "tactics": "a,b"}),
            Document("t:2", "Credential dumping from memory", {"source": "x", "tactics": "b"}),
            Document("t:3", "Phishing with an attachment", {"source": "x", "tactics": ""})]
    r = kb.ingest_documents(docs, "attack", list_fields=("tactics",))
    assert (r.added, r.unchanged, r.chunks) == (3, 0, 3)
    r = kb.ingest_documents([*docs[:2], Document("t:3", "Phishing with a link", {"source": "x"})], "attack")
    assert (r.added, r.replaced, r.unchanged, r.chunks, r.deleted_chunks) == (0, 1, 2, 1, 1)
    assert kb.documents("attack", contains="link")[0].id == "t:3" and kb.count("attack") == 3
    hits = kb.query("remote process", "attack", k=3, where={"tactics_list": {"$contains": "a"}})
    assert [h.id for h in hits] == ["t:1"] and hits[0].metadata["tactics_list"] == ["a", "b"]
    with pytest.raises(KnowledgeBaseError, match="duplicate document id"):
        kb.ingest_documents([docs[0], docs[0]], "attack")
    assert kb.stats("attack")[0].chunks == 3


def test_chroma_default_embedding_is_never_used(kb, corpus, monkeypatch):
    from chromadb.utils import embedding_functions

    def boom(*args, **kwargs):
        raise AssertionError("Chroma's default embedding function was used")

    monkeypatch.setattr(embedding_functions.DefaultEmbeddingFunction, "__call__", boom)
    kb.ingest_files([corpus], "docs")
    assert kb.query("apples", "docs")
    col = kb.client.get_collection("docs", embedding_function=None)
    assert col.configuration_json["embedding_function"] == {"type": "legacy"}  # none attached
    assert col.configuration_json["hnsw"]["space"] == "cosine"
    assert kb.embedder.calls >= 2


def test_store_persists_and_collections_can_be_deleted(tmp_path, corpus):
    kb = KnowledgeBase.open(tmp_path / "store", HashEmbedder())
    kb.ingest_files([corpus / "notes.md"], "docs")
    kb.ingest_files([corpus / "readme.txt"], "other")
    reopened = KnowledgeBase.open(str(tmp_path / "store"), HashEmbedder())
    assert reopened.collections() == ["docs", "other"]
    assert [(s.name, s.sources) for s in reopened.stats()] == [("docs", 1), ("other", 1)]
    reopened.delete_collection("other")
    assert reopened.collections() == ["docs"] and reopened.count("docs") > 0
    (tmp_path / "file").write_text("x")
    with pytest.raises(KnowledgeBaseError, match="is a file"):
        KnowledgeBase.open(tmp_path / "file", HashEmbedder())


def test_unreachable_server_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket is closed
    with pytest.raises(KnowledgeBaseError, match="cannot reach a Chroma server"):
        KnowledgeBase.open(f"http://127.0.0.1:{port}", HashEmbedder())


def test_chroma_server_mode(tmp_path, corpus):
    chroma = Path(sys.executable).parent / "chroma"
    if not chroma.exists():
        pytest.skip("the chroma CLI is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(chroma), "run", "--path", str(tmp_path / "srv"), "--host", "127.0.0.1", "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "NO_COLOR": "1"})
    watchdog = threading.Timer(60, proc.kill)  # a server that never says it listens ends the wait
    watchdog.start()
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            if "listening" in line.lower():
                break
        kb = KnowledgeBase.open(f"127.0.0.1:{port}", HashEmbedder())
        assert kb.ingest_files([corpus], "docs").added == 4
        assert kb.ingest_files([corpus], "docs").unchanged == 4
        assert kb.query("ransomware", "docs", where={"source": "guide.pdf"})[0].metadata["page"] == 3
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()


# -- the CLI -----------------------------------------------------------------------------------
def test_parse_where():
    from mastery.retrieval.cli import parse_where

    assert parse_where(None) is None
    assert parse_where(["source=a.pdf"]) == {"source": "a.pdf"}
    assert parse_where(["page>=3", "tactics_list~=persistence", "x!=true"]) == {"$and": [
        {"page": {"$gte": 3}}, {"tactics_list": {"$contains": "persistence"}}, {"x": {"$ne": True}}]}
    assert parse_where(None, '{"page": 2}') == {"page": 2}
    for bad in (["source"], ["=x"], ["page="]):
        with pytest.raises(MasteryError, match="bad --where"):
            parse_where(bad)
    with pytest.raises(MasteryError, match="JSON"):
        parse_where(None, "{nope")


def test_cli_ingest_query_stats_delete(tmp_path, corpus, monkeypatch, capsys):
    from mastery import cli
    from mastery.retrieval import kb as kb_module

    monkeypatch.setattr(kb_module, "SentenceEmbedder", lambda device="auto": HashEmbedder())
    store = ["--kb-dir", str(tmp_path / "clikb")]
    assert cli.main(["kb", "ingest", str(corpus), "--collection", "docs", "--chunk-size", "200", *store]) == 0
    assert "4 added, 0 replaced, 0 unchanged" in capsys.readouterr().out
    assert cli.main(["kb", "ingest", str(corpus), "--collection", "docs", "--chunk-size", "200", *store]) == 0
    assert "0 added, 0 replaced, 4 unchanged; 0 chunks written" in capsys.readouterr().out
    assert cli.main(["kb", "query", "ransomware containment", "--where", "source=guide.pdf", "-k", "2", *store]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all("[guide.pdf p." in line for line in out)
    assert cli.main(["kb", "stats", "--collection", "docs", *store]) == 0
    assert "docs: " in (out := capsys.readouterr().out) and "guide.pdf" in out
    assert cli.main(["kb", "query", "", *store]) == 2
    assert "query is empty" in capsys.readouterr().err
    assert cli.main(["kb", "query", "kiwis", "--retrieval", "bm25", "-k", "3", *store]) == 0
    assert "[readme.txt]" in capsys.readouterr().out.splitlines()[0]  # the one chunk with the word, first
    assert cli.main(["kb", "query", "x", "--collection", "missing-one", *store]) == 2
    assert "unknown collection 'missing-one'" in capsys.readouterr().err
    assert cli.main(["kb", "ingest", str(tmp_path / "nothing.pdf"), *store]) == 2
    assert cli.main(["kb", "delete", "docs", *store]) == 0
    assert cli.main(["kb", "stats", *store]) == 0
    assert "no collections" in capsys.readouterr().out


# -- retrievers by kind ---------------------------------------------------------------------------
KIND_DOCS = [
    Document("a", "backup retention is forty-two days for every nightly snapshot", {"source": "a.md"}),
    Document("b", "error code ZX-81 means the disk is full", {"source": "b.md"}),
    Document("c", "the cafeteria opens at nine and serves nightly snacks", {"source": "c.md"}),
]


class ReverseScorer:
    """A re-ranker that prefers the first stage's last candidate: its effect on the order is unmistakable."""

    name = "reverse"

    def score(self, query, texts):
        return np.arange(len(texts), dtype=np.float64)  # (N,): later candidates score higher


def test_knowledge_base_hands_out_retrievers_by_kind(kb):
    from mastery.retrieval.hybrid import SearchTuning
    from mastery.retrieval.types import Retriever

    kb.ingest_documents(KIND_DOCS, "kinds")
    query = "what does ZX-81 mean for nightly backup retention?"
    dense = kb.retriever("kinds", "dense")
    assert isinstance(dense, Retriever) and dense.name == "dense"
    assert [h.id for h in dense.search(query, 3)] == [h.id for h in kb.query(query, "kinds", k=3)]
    assert all(h.metadata["similarity"] == h.score for h in dense.search(query, 3))
    bm25 = kb.retriever("kinds", "bm25")
    assert bm25.name == "bm25" and [h.id for h in bm25.search("ZX-81 disk", 3)] == ["b"]
    hybrid = kb.retriever("kinds", "hybrid").search("ZX-81 disk", 3)
    assert hybrid[0].id == "b" and "similarity" in hybrid[0].metadata  # fused, the dense cosine kept
    assert sorted(h.id for h in hybrid) == ["a", "b", "c"] and [h.rank for h in hybrid] == [1, 2, 3]
    # Re-ranked alone (fuse_k=None), the scorer's order wins: the hybrid's last candidate comes first.
    rerank = kb.retriever("kinds", "hybrid+rerank", scorer=ReverseScorer(), tuning=SearchTuning(fuse_k=None))
    assert rerank.name == "hybrid+rerank" and rerank.search("ZX-81 disk", 3)[0].id == hybrid[-1].id
    filtered = kb.retriever("kinds", "bm25", where={"source": "c.md"}).search("nightly", 3)
    assert [h.id for h in filtered] == ["c"]


def test_retrievers_see_new_documents_and_name_bad_input(kb):
    kb.ingest_documents(KIND_DOCS[:2], "kinds")
    bm25 = kb.retriever("kinds", "bm25")
    assert bm25.search("cafeteria", 3) == []
    kb.ingest_documents(KIND_DOCS, "kinds")  # the BM25 index is rebuilt when the collection grows
    assert [h.id for h in bm25.search("cafeteria", 3)] == ["c"]
    with pytest.raises(KnowledgeBaseError, match="unknown retrieval kind 'sparse'"):
        kb.retriever("kinds", "sparse")
    with pytest.raises(KnowledgeBaseError, match="unknown collection 'nope'"):
        kb.retriever("nope", "dense")
    with pytest.raises(MasteryError, match="query is empty"):
        kb.retriever("kinds", "hybrid").search("  ", 3)
    with pytest.raises(MasteryError, match="needs a re-ranker"):  # no cross-encoder registered in the test cache
        kb.retriever("kinds", "hybrid+rerank")


# -- ATT&CK and the real model -------------------------------------------------------------------
@needs_mirror
def test_attack_corpus_with_tactic_filter(kb):
    from mastery.retrieval.kb import ingest_attack

    result = ingest_attack(kb)
    assert result.added == kb.count("attack") == 691
    assert ingest_attack(kb).chunks == 0
    hits = kb.query("scheduled task", "attack", k=10, where={"tactics_list": {"$contains": "persistence"}})
    assert len(hits) == 10 and all("persistence" in h.metadata["tactics"] for h in hits)
    assert kb.documents("attack", where={"technique_id": "T1055"})[0].metadata["url"].startswith("https://attack")


@needs_mirror
def test_minilm_knowledge_base_ranks_by_meaning(tmp_path, corpus):
    from mastery.retrieval.kb import SentenceEmbedder

    kb = KnowledgeBase.open(tmp_path / "kb", SentenceEmbedder(device="cpu", max_seq_length=64))
    kb.ingest_files([corpus], "docs", chunk_size=300, chunk_overlap=0)
    hits = kb.query("How do I stop malware that encrypts files from spreading?", "docs", k=2)
    assert hits[0].citation() == "guide.pdf p.3" and 0.0 < hits[0].score <= 1.0
    assert kb.stats("docs")[0].embedder == "all-minilm-l6-v2"


# -- the registered PDFs and the Debian package fetch path ------------------------------------------
def _deb(members: dict[str, bytes]) -> bytes:
    """A minimal .deb: ar archive with debian-binary, control.tar.gz and data.tar.xz."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    out = bytearray(b"!<arch>\n")
    for name, payload in [("debian-binary", b"2.0\n"), ("control.tar.gz", b"\x1f\x8b"), ("data.tar.xz",
                                                                                        data.getvalue())]:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(payload):<10}`\n".encode() + payload
        out += b"\n" if len(payload) % 2 else b""
    return bytes(out)


def test_debian_package_fetch_extracts_and_verifies(tmp_path, monkeypatch):
    import gzip
    import shutil
    import subprocess
    from dataclasses import replace

    from mastery.assets import store
    from mastery.assets.catalog import get_asset
    from mastery.core.errors import AssetError, ChecksumMismatch

    pdf = write_text_pdf(tmp_path / "doc.pdf", ["registered document"]).read_bytes()
    deb = _deb({"usr/share/doc/pkg/doc.pdf.gz": gzip.compress(pdf), "usr/share/doc/pkg/README": b"x"})
    asked = []

    def fake_apt(cmd, cwd, **_):  # `apt-get download pkg=version` writes the .deb into cwd
        asked.append(cmd)
        if cmd[-1] == "missing=1":
            return subprocess.CompletedProcess(cmd, 100, "", "E: Version '1' for 'missing' was not found")
        (Path(cwd) / "pkg_1_all.deb").write_bytes(deb)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_apt)
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setenv("MASTERY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MASTERY_DATA_DIR", str(tmp_path / "no-mirror"))
    asset = replace(get_asset("pdf-debian-faq"), name="toy-deb", urls=("debian:missing=1", "debian:pkg=1"),
                    filename="doc.pdf", sha256=hashlib.sha256(pdf).hexdigest(),
                    deb_member="usr/share/doc/pkg/doc.pdf.gz")
    path = store.resolve(asset)
    assert path == tmp_path / "cache" / "doc.pdf" and path.read_bytes() == pdf
    assert asked[:2] == [["apt-get", "download", "missing=1"], ["apt-get", "download", "pkg=1"]]
    assert load_file(path).pages[0].text == "registered document"
    with pytest.raises(ChecksumMismatch):
        store.resolve(replace(asset, filename="other.pdf", sha256="0" * 64))
    with pytest.raises(AssetError, match="no file usr/share/doc/pkg/missing"):
        store.resolve(replace(asset, filename="third.pdf", deb_member="usr/share/doc/pkg/missing",
                              urls=("debian:pkg=1",)))
    with pytest.raises(AssetError, match="apt-get download failed"):
        store.resolve(replace(asset, filename="fourth.pdf", urls=("debian:missing=1",)))
    assert not list((tmp_path / "cache").glob(".*partial"))


def test_registered_pdfs_have_source_license_and_checksum():
    from mastery.assets.catalog import get_asset
    from mastery.assets.loaders import KB_PDFS

    for name in KB_PDFS:
        asset = get_asset(name)
        assert asset.filename.endswith(".pdf") and len(asset.sha256) == 64 and asset.license and asset.size > 0
        assert asset.urls[0].startswith("debian:") and "=" in asset.urls[0] and asset.deb_member
