"""Crash-safe ingestion: a real ingest process killed with SIGKILL at each step, the size cap and progress.

The child process runs the ingest with ``kb.checkpoint`` set to print a line and block on stdin at one named
step ("intent", "batch N", "commit", "cleanup"); the test reads that line and kills it there, so every kill
lands exactly where it is meant to, with no sleeps.
"""

from __future__ import annotations

import fcntl
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from mastery.core.progress import Progress
from mastery.retrieval.chunking import source_key
from mastery.retrieval.documents import DocumentError
from mastery.retrieval.kb import KnowledgeBase
from tests.test_kb import HashEmbedder, corpus  # noqa: F401  (corpus: the shared fixture)

REPO = Path(__file__).resolve().parents[1]
SIZE, OVERLAP = 100, 0
CHILD = """
import sys
from mastery.retrieval.kb import KnowledgeBase
from tests.test_kb import HashEmbedder

store, stop, *paths = sys.argv[1:]
kb = KnowledgeBase.open(store, HashEmbedder())
kb.write_batch = 2  # many batches: a kill between two of them is possible


def pause(step):
    if step == stop:
        print("paused at", step, flush=True)
        sys.stdin.readline()  # the test kills this process here


kb.checkpoint = pause
kb.ingest_files(paths, "docs", chunk_size=SIZE, chunk_overlap=OVERLAP)
print("finished", flush=True)
""".replace("SIZE", str(SIZE)).replace("OVERLAP", str(OVERLAP))


def _kill_ingest_at(store: Path, stop: str, paths: list[Path], while_paused: Callable[[], None] | None = None) -> None:
    """Run an ingest in a child process and SIGKILL it when it reaches ``stop`` ("end": let it finish).

    Every write to ``store`` happens in children, and this process opens it only afterwards: an embedded
    Chroma client caches its vector index in memory and does not see other processes' writes."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(store), stop, *map(str, paths)], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(120, proc.kill)  # a child that never reaches the step ends the wait
    watchdog.start()
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if stop == "end" and line.strip() == "finished":
            assert proc.wait() == 0
            return
        if line.strip() != f"paused at {stop}":
            proc.kill()
            raise AssertionError(f"the ingest did not stop at {stop!r}: {line!r} {proc.communicate()[1][-2000:]}")
        if while_paused:
            while_paused()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _snapshot(kb: KnowledgeBase, collection: str = "docs") -> list[tuple[str, str]]:
    """What every read sees: (id, content hash) of each visible chunk."""
    return [(d.id, d.metadata["content_hash"]) for d in kb.documents(collection)]


def _raw_count(kb: KnowledgeBase, collection: str = "docs") -> int:
    """Chunks physically in the store, hidden ones included."""
    return kb.client.get_collection(collection, embedding_function=None).count()


def _reference(tmp_path: Path, name: str, paths: list[Path]) -> list[tuple[str, str]]:
    """The collection a clean ingest of ``paths`` produces (same paths, so the same ids)."""
    ref = KnowledgeBase.open(tmp_path / name, HashEmbedder())
    ref.ingest_files(paths, "docs", chunk_size=SIZE, chunk_overlap=OVERLAP)
    return _snapshot(ref)


def _files(corpus: Path) -> list[Path]:  # noqa: F811
    return sorted(p for p in corpus.rglob("*") if p.suffix in {".pdf", ".md", ".html", ".txt"})


def _assert_whole(kb: KnowledgeBase, expected: list[tuple[str, str]]) -> None:
    """Visible state is ``expected``, nothing else is stored, nothing is hidden."""
    assert _snapshot(kb) == expected
    assert _raw_count(kb) == kb.count("docs") == len(expected)
    assert "kb:hidden" not in (kb.client.get_collection("docs", embedding_function=None).metadata or {})


@pytest.mark.parametrize("stop", ["intent", "batch 1", "batch 3", "commit", "cleanup"])
def test_first_ingest_killed_at_each_step(tmp_path, corpus, stop):  # noqa: F811
    paths = _files(corpus)
    after = _reference(tmp_path, "ref", paths)
    store = tmp_path / "kb"
    _kill_ingest_at(store, stop, paths)
    kb = KnowledgeBase.open(store, HashEmbedder())
    committed = stop in ("commit", "cleanup")
    if committed:
        assert kb.collections() == ["docs"] and _snapshot(kb) == after
    else:  # the collection the killed ingest made is not there for readers; its chunks are hidden
        assert kb.collections() == []
        written = 2 * int(stop.split()[1]) if stop.startswith("batch") else 0
        assert _raw_count(kb) == written
    again = kb.ingest_files(paths, "docs", chunk_size=SIZE, chunk_overlap=OVERLAP)
    if committed:  # a first ingest retires nothing, so its commit already left the final state
        assert (again.added, again.unchanged, again.chunks, again.interrupted) == (0, len(paths), 0, False)
    else:
        assert again.interrupted and again.added == len(paths)
        assert again.resumed_chunks == written and again.chunks == len(after) - written  # resumed, not redone
    _assert_whole(kb, after)


@pytest.mark.parametrize("stop", ["intent", "batch 1", "batch 2", "commit", "cleanup"])
def test_replacing_ingest_killed_at_each_step(tmp_path, corpus, stop):  # noqa: F811
    paths = _files(corpus)
    store = tmp_path / "kb"
    _kill_ingest_at(store, "end", paths)
    before = _reference(tmp_path, "ref-before", paths)
    notes_key = source_key(str((corpus / "notes.md").resolve()))  # chunk ids start with their file's key
    old_notes = sum(i.startswith(notes_key) for i, _ in before)
    (corpus / "notes.md").write_text("# Notes\n\n" + "Durians smell strong and taste sweet. " * 30)
    after = _reference(tmp_path, "ref-after", paths)
    assert after != before and old_notes > 0
    _kill_ingest_at(store, stop, paths)

    kb = KnowledgeBase.open(store, HashEmbedder())
    committed = stop in ("commit", "cleanup")
    assert _snapshot(kb) == (after if committed else before)
    assert kb.count("docs") == len(after if committed else before)
    seen = {h.id for h in kb.query("durians smell strong", "docs", k=50)}
    assert seen <= {i for i, _ in (after if committed else before)}  # queries see no hidden chunk
    assert bool(kb.documents("docs", contains="Durians")) == committed
    if stop not in ("intent", "cleanup"):  # nothing written yet / the hidden chunks already deleted
        assert _raw_count(kb) > kb.count("docs")  # hidden chunks are there: the filter is what hides them

    again = kb.ingest_files(paths, "docs", chunk_size=SIZE, chunk_overlap=OVERLAP)
    assert again.interrupted
    if committed:
        assert (again.replaced, again.unchanged, again.chunks) == (0, len(paths), 0)
        assert again.cleaned_chunks == (old_notes if stop == "commit" else 0)  # the replaced version's chunks
    else:
        assert (again.replaced, again.unchanged) == (1, len(paths) - 1) and again.deleted_chunks == old_notes
        assert again.resumed_chunks == (0 if stop == "intent" else 2 * int(stop.split()[1]))
    _assert_whole(kb, after)


def test_a_killed_first_ingest_does_not_bind_the_collection_to_its_model(tmp_path, corpus):  # noqa: F811
    store = tmp_path / "kb"
    _kill_ingest_at(store, "batch 1", _files(corpus))
    other = HashEmbedder()
    other.name = "another-model"
    kb = KnowledgeBase.open(store, other)
    assert kb.ingest_files(_files(corpus), "docs", chunk_size=SIZE, chunk_overlap=OVERLAP).added == 4
    assert kb.stats("docs")[0].embedder == "another-model" and kb.count("docs") == _raw_count(kb)


def _try_lock(path: Path) -> bool:
    with open(path, "a+b") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh, fcntl.LOCK_UN)
        return True


def test_ingests_into_one_folder_take_turns_and_a_kill_frees_the_lock(tmp_path, corpus):  # noqa: F811
    store, seen = tmp_path / "kb", []
    _kill_ingest_at(store, "batch 1", _files(corpus), while_paused=lambda: seen.append(_try_lock(
        store / "mastery-ingest.lock")))
    assert seen == [False] and _try_lock(store / "mastery-ingest.lock")  # held while it ran, freed by the kill


def test_unchanged_means_every_chunk_is_stored(tmp_path, corpus):  # noqa: F811
    paths = _files(corpus)
    kb = KnowledgeBase.open(tmp_path / "kb", HashEmbedder())
    kb.ingest_files(paths, "docs", chunk_size=SIZE, chunk_overlap=OVERLAP)
    full = _snapshot(kb)
    lost = [d.id for d in kb.documents("docs", where={"source": "guide.pdf"})][:2]
    kb.client.get_collection("docs", embedding_function=None).delete(ids=lost)  # chunks vanish behind our back
    again = kb.ingest_files(paths, "docs", chunk_size=SIZE, chunk_overlap=OVERLAP)
    assert (again.repaired, again.unchanged, again.chunks, again.interrupted) == (1, len(paths) - 1, 2, False)
    _assert_whole(kb, full)


def test_a_store_cut_short_before_manifests_is_repaired(tmp_path, corpus):  # noqa: F811
    """The reported failure: 1,000 of 3,014 chunks stored by the old code, then "unchanged" for ever."""
    from mastery.retrieval.chunking import chunk_file
    from mastery.retrieval.documents import load_file

    paths = _files(corpus)
    kb = KnowledgeBase.open(tmp_path / "kb", HashEmbedder())
    guide = chunk_file(load_file(corpus / "guide.pdf"), SIZE, OVERLAP)
    partial = guide[:3]  # the old layout: ids without a version, no manifest, only the first batch written
    col = kb.client.get_or_create_collection("docs", embedding_function=None, metadata={"embedder": "test-hash-64"})
    col.add(ids=[d.id for d in partial], embeddings=kb.embedder.embed([d.text for d in partial]),
            documents=[d.text for d in partial],
            metadatas=[{**d.metadata, "chunking": f"{SIZE}/{OVERLAP}"} for d in partial])
    result = kb.ingest_files(paths, "docs", chunk_size=SIZE, chunk_overlap=OVERLAP)
    assert (result.added, result.replaced, result.deleted_chunks) == (len(paths) - 1, 1, 3)
    _assert_whole(kb, _reference(tmp_path, "ref", paths))
    assert len(kb.documents("docs", where={"source": "guide.pdf"})) == len(guide)


# -- the size cap ---------------------------------------------------------------------------------
def test_oversized_files_are_refused_before_anything_is_written(tmp_path, corpus):  # noqa: F811
    big = corpus / "big.txt"
    big.write_text("word " * 400_000)  # 2 MB
    kb = KnowledgeBase.open(tmp_path / "kb", HashEmbedder())
    with pytest.raises(DocumentError, match=r"big\.txt: 2\.0 MB is over the knowledge-base limit of 1 MB") as info:
        kb.ingest_files([corpus], "docs", max_file_mb=1)
    assert "\n" not in str(info.value) and kb.embedder.calls == 0
    assert kb.collections() == [] and kb.client.list_collections() == []
    kept = kb.ingest_files([corpus], "docs", max_file_mb=1, skip_errors=True)
    assert kept.added == 4 and "big.txt" in kept.skipped[0]
    assert kb.ingest_files([corpus], "docs", max_file_mb=3).added == 1  # under a larger cap it goes in


def test_cli_size_cap_is_one_line_and_exit_2(tmp_path, corpus, monkeypatch, capsys):  # noqa: F811
    from mastery import cli
    from mastery.retrieval import kb as kb_module

    monkeypatch.setattr(kb_module, "SentenceEmbedder", lambda device="auto": HashEmbedder())
    monkeypatch.setenv("MASTERY_KB_MAX_FILE_MB", "0.0001")  # 100 bytes: guide.pdf is larger
    store = ["--kb-dir", str(tmp_path / "clikb"), "--quiet"]
    assert cli.main(["kb", "ingest", str(corpus), *store]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "guide.pdf" in err and "limit of 0.0001 MB" in err
    assert cli.main(["kb", "ingest", str(corpus), "--max-file-mb", "0", *store]) == 2
    assert "must be > 0 MB" in capsys.readouterr().err
    assert cli.main(["kb", "ingest", str(corpus), "--max-file-mb", "5", *store]) == 0
    assert "4 added" in capsys.readouterr().out


# -- progress ------------------------------------------------------------------------------------
class Recorder(Progress):
    def __init__(self) -> None:
        self.stages: list[tuple[str, int | None]] = []
        self.steps: list[int] = []

    def stage(self, name, total=None):
        self.stages.append((name, total))

    def step(self, n=1, **info):
        self.steps.append(n)


def test_progress_counts_chunks_embedded(tmp_path, corpus):  # noqa: F811
    kb = KnowledgeBase.open(tmp_path / "kb", HashEmbedder())
    kb.write_batch = 3
    progress = Recorder()
    result = kb.ingest_files([corpus], "docs", chunk_size=SIZE, chunk_overlap=OVERLAP, progress=progress)
    assert progress.stages == [("embed docs", result.chunks)]
    assert sum(progress.steps) == result.chunks and max(progress.steps) == 3 and len(progress.steps) > 2
