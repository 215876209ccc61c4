"""The history a user sees: sessions, their questions, final answers, citations and routes, in SQLite.

The brain keeps its own conversation memory (LangGraph checkpoints, keyed by the session id); this store is
what the API lists and the UI shows, so it holds what was *said*, not the graph's internal state:

    store = SessionStore("runs/assistant/sessions.db")
    sid = store.create_session("alice", "DER encodings")
    turn = store.start_turn(sid, "alice", "What is DER?", request_id)
    store.finish_turn(turn, TurnRecord(...))          # from the brain's events (see TurnRecord.add)
    store.session("alice", sid)                       # None for any other owner: the API answers 404

Every read is scoped by owner. A turn still ``running`` when the process stopped reads ``interrupted`` after a
restart. One connection behind a lock, WAL journal (readers never wait for a writer), schema version in
``PRAGMA user_version``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mastery.apps.assistant.events import Event
from mastery.core.errors import ConfigError
from mastery.core.sqlite import open_store

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, title TEXT NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_owner ON sessions (owner, updated_at);
CREATE TABLE IF NOT EXISTS turns (
    id TEXT PRIMARY KEY, session_id TEXT NOT NULL REFERENCES sessions (id), owner TEXT NOT NULL,
    seq INTEGER NOT NULL, question TEXT NOT NULL, status TEXT NOT NULL, record TEXT NOT NULL DEFAULT '{}',
    error TEXT, request_id TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL, finished_at REAL
);
CREATE INDEX IF NOT EXISTS turns_session ON turns (session_id, seq);
"""
INTERRUPTED = "the server stopped before this answer was finished"
TITLE_CHARS = 80  # a session named after its first question keeps this much of it


@dataclass
class TurnRecord:
    """What one answer leaves in the history, built from the brain's events as they pass."""

    route: dict[str, Any] | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    passages: list[dict[str, Any]] = field(default_factory=list)
    thought: str = ""
    draft: str = ""  # the token events joined: what was streamed before any answer event
    answer: dict[str, Any] | None = None
    usage: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def add(self, event: Event) -> None:
        data = event.data
        if event.kind == "route":
            self.route = dict(data)
        elif event.kind == "step":
            self.steps.append(dict(data))
        elif event.kind == "passages":
            self.passages = list(data.get("passages", []))
        elif event.kind == "thought":
            self.thought += str(data.get("text", ""))
        elif event.kind == "token":
            self.draft += str(data.get("text", ""))
        elif event.kind == "answer":
            self.answer = dict(data)
        elif event.kind == "usage":
            self.usage.extend(data.get("calls", []))
        elif event.kind == "error":
            self.error = str(data.get("message", "error"))

    def to_json(self) -> dict[str, Any]:
        answer = self.answer or {}
        return {"answer": answer.get("text", ""), "citations": answer.get("citations", []),
                "unsupported": answer.get("unsupported", []), "refused": bool(answer.get("refused", False)),
                "revised": bool(answer.get("revised", False)), "route": self.route, "passages": self.passages,
                "steps": self.steps, "thought": self.thought, "usage": self.usage}


class SessionStore:
    """Thread-safe SQLite access (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = open_store(self.path)
        with self._lock:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ConfigError(f"{self.path}: session store schema {version} is newer than this version "
                                  f"understands ({SCHEMA_VERSION}); upgrade mastery or use another --db")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            cur = self._db.execute("UPDATE turns SET status='interrupted', error=?, finished_at=? "
                                   "WHERE status='running'", (INTERRUPTED, time.time()))
        self.interrupted_on_open = cur.rowcount
        if self.interrupted_on_open:
            log.warning("marked %d unfinished answer(s) interrupted", self.interrupted_on_open)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- sessions ---------------------------------------------------------------------------------
    def create_session(self, owner: str, title: str | None = None) -> str:
        sid, now = uuid.uuid4().hex, time.time()
        with self._lock:
            self._db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?)", (sid, owner, title or "", now, now))
        return sid

    def sessions(self, owner: str, limit: int = 100) -> list[dict[str, Any]]:
        """The owner's sessions, the most recently used first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT s.*, (SELECT COUNT(*) FROM turns t WHERE t.session_id = s.id) AS turns FROM sessions s "
                "WHERE owner=? ORDER BY updated_at DESC, created_at DESC LIMIT ?", (owner, limit)).fetchall()
        return [_session(r) for r in rows]

    def session(self, owner: str, sid: str) -> dict[str, Any] | None:
        """The session with its history, or None when it is missing or another owner's."""
        with self._lock:
            row = self._db.execute(
                "SELECT s.*, (SELECT COUNT(*) FROM turns t WHERE t.session_id = s.id) AS turns FROM sessions s "
                "WHERE id=? AND owner=?", (sid, owner)).fetchone()
            if row is None:
                return None
            turns = self._db.execute("SELECT * FROM turns WHERE session_id=? ORDER BY seq", (sid,)).fetchall()
        return {**_session(row), "history": [_turn(t) for t in turns]}

    def owns(self, owner: str, sid: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM sessions WHERE id=? AND owner=?", (sid, owner)).fetchone() \
                is not None

    # -- turns ------------------------------------------------------------------------------------
    def start_turn(self, sid: str, owner: str, question: str, request_id: str = "") -> str:
        tid, now = uuid.uuid4().hex, time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM turns WHERE session_id=?",
                                       (sid,)).fetchone()[0]
                self._db.execute("INSERT INTO turns (id, session_id, owner, seq, question, status, request_id, "
                                 "created_at) VALUES (?, ?, ?, ?, ?, 'running', ?, ?)",
                                 (tid, sid, owner, seq, question, request_id, now))
                # a session created without a title is named after its first question
                self._db.execute("UPDATE sessions SET updated_at=?, title=CASE WHEN title='' THEN ? ELSE title END "
                                 "WHERE id=?", (now, question[:TITLE_CHARS], sid))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return tid

    def finish_turn(self, tid: str, record: TurnRecord) -> None:
        status = "error" if record.error or record.answer is None else "done"
        error = record.error or (None if record.answer is not None else "the brain ended without an answer")
        with self._lock:
            self._db.execute("UPDATE turns SET status=?, record=?, error=?, finished_at=? WHERE id=?",
                             (status, json.dumps(record.to_json()), error, time.time(), tid))

    def turn_status(self, tid: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT status FROM turns WHERE id=?", (tid,)).fetchone()
        return row["status"] if row is not None else None

    def turn(self, owner: str, tid: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM turns WHERE id=? AND owner=?", (tid, owner)).fetchone()
        return _turn(row) if row is not None else None


def _session(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "title": row["title"], "created_at": row["created_at"],
            "updated_at": row["updated_at"], "turns": row["turns"]}


def _turn(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "session_id": row["session_id"], "question": row["question"], "status": row["status"],
            **json.loads(row["record"] or "{}"), "error": row["error"], "created_at": row["created_at"],
            "finished_at": row["finished_at"], "request_id": row["request_id"]}
