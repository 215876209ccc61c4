"""One way to open the SQLite stores the services share between threads."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_store(path: str | Path) -> sqlite3.Connection:
    """A connection usable from any thread (callers serialise with their own lock), autocommit, rows by
    name, WAL so a reader never blocks on a writer; the folder is created when missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db
