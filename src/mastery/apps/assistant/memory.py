"""Per-session conversation memory: LangGraph checkpoints in one SQLite file, one thread per owner and session.

    memory = SessionMemory("runs/assistant/memory.sqlite")     # or ":memory:" (tests), or None: the default file
    graph = build_graph(...).compile(checkpointer=memory.saver)
    graph.invoke(state, memory.config("alice", "s1"))

The thread id is ``quote(owner) + "/" + quote(session_id)``: ``/`` never survives quoting, so no owner can
name a session that lands in another owner's thread ("alice/x" + "y" and "alice" + "x/y" differ), and the API
never has to trust a session id to be "its own".
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mastery.core.errors import ConfigError

MAX_ID_CHARS = 200


def thread_id(owner: str, session_id: str) -> str:
    """The checkpoint thread of ``owner``'s session ``session_id`` (both non-empty)."""
    for name, value in (("owner", owner), ("session id", session_id)):
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID_CHARS:
            raise ConfigError(f"the {name} must be 1-{MAX_ID_CHARS} characters, got {value!r}")
    return f"{quote(owner, safe='')}/{quote(session_id, safe='')}"


def default_memory_path() -> Path:
    """``<MASTERY_CACHE>/assistant/memory.sqlite``."""
    from mastery.core.settings import get_settings

    return get_settings().cache / "assistant" / "memory.sqlite"


class SessionMemory:
    """A SqliteSaver over one connection; ``close`` when done (or use as a context manager)."""

    def __init__(self, path: str | Path | None = None) -> None:
        from langgraph.checkpoint.sqlite import SqliteSaver

        location = str(path) if path is not None else str(default_memory_path())
        if location != ":memory:":
            Path(location).parent.mkdir(parents=True, exist_ok=True)
        self.path = location
        # check_same_thread=False: LangGraph runs nodes in worker threads and the API answers from a thread
        # pool; SqliteSaver serialises access to the connection itself.
        self._conn = sqlite3.connect(location, check_same_thread=False)
        try:
            self.saver = SqliteSaver(self._conn)
            self.saver.setup()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise ConfigError(f"{location} is not a checkpoint database ({exc})") from None

    @staticmethod
    def config(owner: str, session_id: str) -> dict[str, Any]:
        return {"configurable": {"thread_id": thread_id(owner, session_id)}}

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> SessionMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
