"""Documents uploaded through the API, kept on disk and ingested into the knowledge base.

    upload = Upload(uploads_dir, "guide.pdf", limit_bytes)   # refuses a bad name or type at once
    for chunk in body: upload.write(chunk)                     # UploadTooLarge past the limit (nothing kept)
    result = upload.ingest(kb, "assistant")                     # {"source", "status", "chunks_added", ...}

Crash safety, step by step: the bytes go to ``<uploads>/.incoming/<random>.part`` (never seen by anyone);
a complete upload is fsynced and renamed over ``<uploads>/<name>`` in one ``os.replace`` (an earlier file of
that name is first hard-linked aside); then the knowledge base ingests it, itself crash-safe
(:mod:`mastery.retrieval.ingest`: a reader sees the old chunks or the new ones, never half). When the ingest
refuses the file (unreadable, encrypted, empty), the earlier file is put back, so a bad upload changes
nothing. A process killed mid-way leaves only ``.incoming`` leftovers, removed the next time the API starts.

The file name is the citation's ``source``: one file per name, and a new upload of a name replaces it.
The size limit is ``MASTERY_KB_MAX_FILE_MB``, the same the knowledge base enforces on every ingest.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from pathlib import Path
from typing import Any

from mastery.core.errors import MasteryError
from mastery.retrieval.documents import FORMATS

log = logging.getLogger(__name__)

INCOMING = ".incoming"
MAX_NAME_CHARS = 200
_NAME = re.compile(r"^[\w][\w .()+,=@~-]*$")  # letters, digits, space and a few punctuation marks; no path


class UploadError(MasteryError):
    """An upload the API refuses; ``status`` is the HTTP status it answers with."""

    status = 400


class UnsupportedUpload(UploadError):
    status = 415


class UploadTooLarge(UploadError):
    status = 413


class UnreadableUpload(UploadError):
    status = 422


def check_filename(name: str | None) -> str:
    """The upload's file name, or an UploadError saying what is wrong with it."""
    if not name or not name.strip():
        raise UploadError("no file name: send the file as multipart field 'file' or give ?filename=NAME.pdf")
    name = name.strip()
    if "/" in name or "\\" in name or name in (".", "..") or len(name) > MAX_NAME_CHARS or not _NAME.match(name):
        raise UploadError(f"file name {name[:60]!r} is not accepted: use up to {MAX_NAME_CHARS} letters, digits, "
                          "spaces and . _ - ( ) + , = @ ~, no folders")
    suffix = Path(name).suffix.lower()
    if suffix not in FORMATS:
        raise UnsupportedUpload(f"{name}: unsupported file type '{suffix or '(none)'}'; supported: "
                                f"{', '.join(sorted(FORMATS))}")
    return name


def limit_text(limit: int) -> str:
    return f"{limit / 1e6:g} MB (MASTERY_KB_MAX_FILE_MB)"


class Upload:
    """One upload in progress (see the module docstring). Not thread-safe: one writer."""

    def __init__(self, folder: str | Path, filename: str | None, limit: int) -> None:
        self.name = check_filename(filename)
        self.folder = Path(folder)
        self.limit = limit
        self.size = 0
        (self.folder / INCOMING).mkdir(parents=True, exist_ok=True)
        self.part = self.folder / INCOMING / f"{uuid.uuid4().hex}.part"
        self._fh: Any = open(self.part, "wb")  # noqa: SIM115 - closed by ingest() or discard()

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            self.discard()
            raise UploadTooLarge(f"{self.name}: larger than the upload limit of {limit_text(self.limit)}")
        self._fh.write(chunk)

    def discard(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self.part.unlink(missing_ok=True)

    def ingest(self, kb: Any, collection: str) -> dict[str, Any]:
        """Put the file in place and ingest it (blocking: it embeds). Returns the UploadResult fields."""
        from mastery.retrieval.documents import DocumentError

        if self.size == 0:
            self.discard()
            raise UnreadableUpload(f"{self.name}: the upload is empty")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        target = self.folder / self.name
        backup = self.folder / INCOMING / f"{self.part.stem}.prev"
        had_one = target.exists()
        if had_one:
            os.link(target, backup)  # the earlier file stays reachable until the new one is ingested
        os.replace(self.part, target)
        try:
            result = kb.ingest_files([target], collection, max_file_mb=self.limit / 1e6)
        except DocumentError as exc:
            _put_back(target, backup if had_one else None)
            raise UnreadableUpload(_one_line(str(exc), target)) from None
        except BaseException:
            _put_back(target, backup if had_one else None)
            raise
        backup.unlink(missing_ok=True)
        status = "added" if result.added else "replaced" if (result.replaced or result.repaired) else "unchanged"
        log.info("upload %s: %s, %d chunks into %s", self.name, status, result.chunks, collection)
        return {"source": self.name, "status": status, "chunks_added": result.chunks, "bytes": self.size,
                "collection": collection}


def _put_back(target: Path, backup: Path | None) -> None:
    if backup is not None:
        os.replace(backup, target)
    else:
        target.unlink(missing_ok=True)


def _one_line(message: str, path: Path) -> str:
    # the loader names the file by its full path; the client only needs its name
    return message.replace(str(path), path.name).splitlines()[0] if message else f"{path.name}: unreadable"


def clean_incoming(folder: str | Path) -> int:
    """Remove what uploads cut short by a crash left in ``.incoming``; how many files."""
    incoming = Path(folder) / INCOMING
    if not incoming.is_dir():
        return 0
    leftovers = [p for p in incoming.iterdir() if p.suffix in (".part", ".prev")]
    for path in leftovers:
        path.unlink(missing_ok=True)
    if leftovers:
        log.warning("removed %d leftover file(s) of interrupted uploads in %s", len(leftovers), incoming)
    return len(leftovers)
