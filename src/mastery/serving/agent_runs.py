"""Where agent runs live: a SQLite store (runs, steps, idempotency keys) and a bounded worker pool.

Every state change is written before it is announced, so a reader (``GET /runs/{id}``, the SSE stream)
never sees a step that a restart would lose. A run that was queued or running when the process died is
marked ``interrupted`` when the next process opens the same file, never left looking alive.

Every run has an owner (the API key's): ``get(run_id, owner=...)`` finds only that owner's runs, and an
Idempotency-Key is a key within one owner's namespace, so two owners can never collide on (or probe) a key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mastery.agents.resilience import FallbackChat, PriceTable, RetryingChat, RetryPolicy, RunCost, retrying_tool
from mastery.agents.types import AgentError, Step, Tool
from mastery.core.errors import ConfigError, MasteryError
from mastery.core.sqlite import open_store
from mastery.llm.types import ChatModel

log = logging.getLogger("mastery.serving.agent")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, status TEXT NOT NULL, question TEXT NOT NULL, params TEXT NOT NULL,
    answer TEXT, reason TEXT NOT NULL DEFAULT '', backend TEXT NOT NULL DEFAULT '',
    llm_retries INTEGER NOT NULL DEFAULT 0, tool_retries INTEGER NOT NULL DEFAULT 0,
    fallbacks INTEGER NOT NULL DEFAULT 0, errors TEXT NOT NULL DEFAULT '[]', cost TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL, started_at REAL, finished_at REAL, request_id TEXT NOT NULL DEFAULT '',
    idempotency_key TEXT, owner TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL REFERENCES runs(id), seq INTEGER NOT NULL, data TEXT NOT NULL, PRIMARY KEY (run_id, seq));
CREATE TABLE IF NOT EXISTS idempotency_keys (
    owner TEXT NOT NULL, key TEXT NOT NULL, body_hash TEXT NOT NULL, run_id TEXT NOT NULL REFERENCES runs(id),
    created_at REAL NOT NULL, PRIMARY KEY (owner, key));
CREATE INDEX IF NOT EXISTS runs_owner ON runs(owner, id);
"""
# A file from before owners: its runs get owner '' (no key can have that name, so nobody sees them) and its
# global idempotency table is dropped (keys were not scoped, so none of them can be trusted to one owner).
_MIGRATE_OWNERS = """
ALTER TABLE runs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
DROP TABLE IF EXISTS idempotency;
"""
LLM_RETRY = RetryPolicy(attempts=3, base_s=0.25, max_s=2.0)
TOOL_RETRY = RetryPolicy(attempts=2, base_s=0.1, max_s=1.0)
INTERRUPTED = "interrupted: the server stopped while this run was queued or running"


class QueueFull(MasteryError):
    """Every worker is busy and the queue is at its limit: try again later."""


class IdempotencyConflict(MasteryError):
    """The Idempotency-Key was used before with a different request body (by the same owner)."""

    def __init__(self) -> None:
        # nothing about the earlier request: not its run id, not its body
        super().__init__("this Idempotency-Key was already used with a different request body; "
                         "use a new key for a new request")


def body_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class RunStore:
    """Thread-safe SQLite access (one connection, one lock; WAL so a reader never blocks on a writer)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = open_store(self.path)
        with self._lock:
            columns = {r["name"] for r in self._db.execute("PRAGMA table_info(runs)")}
            if columns and "owner" not in columns:
                self._db.executescript(_MIGRATE_OWNERS)
                log.warning("run store %s predates owners: its runs are now visible to no API key", self.path)
            self._db.executescript(_SCHEMA)
            cur = self._db.execute("UPDATE runs SET status='interrupted', reason=?, finished_at=? "
                                   "WHERE status IN ('queued', 'running')", (INTERRUPTED, time.time()))
        self.interrupted_on_open = cur.rowcount
        if self.interrupted_on_open:
            log.warning("marked %d unfinished run(s) interrupted", self.interrupted_on_open,
                        extra={"fields": {"event": "runs_interrupted", "count": self.interrupted_on_open}})

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(self, question: str, params: dict[str, Any], request_id: str, key: str | None,
               digest: str, owner: str) -> tuple[str, bool]:
        """A new queued run of ``owner``, or (same owner, key and body) the existing one: ``(run_id, created)``."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if key is not None:
                    row = self._db.execute("SELECT body_hash, run_id FROM idempotency_keys WHERE owner=? AND key=?",
                                           (owner, key)).fetchone()
                    if row is not None:
                        self._db.execute("COMMIT")
                        if row["body_hash"] != digest:
                            raise IdempotencyConflict()
                        return row["run_id"], False
                run_id = uuid.uuid4().hex
                self._db.execute("INSERT INTO runs (id, status, question, params, created_at, request_id, "
                                 "idempotency_key, owner) VALUES (?, 'queued', ?, ?, ?, ?, ?, ?)",
                                 (run_id, question, json.dumps(params), now, request_id, key, owner))
                if key is not None:
                    self._db.execute("INSERT INTO idempotency_keys VALUES (?, ?, ?, ?, ?)",
                                     (owner, key, digest, run_id, now))
                self._db.execute("COMMIT")
            except IdempotencyConflict:
                raise
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return run_id, True

    def delete(self, run_id: str) -> None:
        """Forget a run that was never queued (the pool refused it), with its idempotency key."""
        with self._lock:
            self._db.execute("DELETE FROM idempotency_keys WHERE run_id=?", (run_id,))
            self._db.execute("DELETE FROM runs WHERE id=?", (run_id,))

    def update(self, run_id: str, **values: Any) -> None:
        cols = ", ".join(f"{k}=?" for k in values)
        args = [json.dumps(v) if k in ("errors", "cost") else v for k, v in values.items()]
        with self._lock:
            self._db.execute(f"UPDATE runs SET {cols} WHERE id=?", (*args, run_id))

    def add_step(self, run_id: str, data: dict[str, Any]) -> int:
        with self._lock:
            seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM steps WHERE run_id=?",
                                   (run_id,)).fetchone()[0]
            self._db.execute("INSERT INTO steps VALUES (?, ?, ?)", (run_id, seq, json.dumps({**data, "seq": seq})))
        return int(seq)

    def steps(self, run_id: str, after: int = 0) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT data FROM steps WHERE run_id=? AND seq>? ORDER BY seq",
                                    (run_id, after)).fetchall()
        return [json.loads(r["data"]) for r in rows]

    def get(self, run_id: str, owner: str | None = None) -> dict[str, Any] | None:
        """The run, or None when there is none (or, with ``owner``, when it belongs to someone else)."""
        with self._lock:
            if owner is None:  # the worker pool's own reads
                row = self._db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
            else:
                row = self._db.execute("SELECT * FROM runs WHERE id=? AND owner=?", (run_id, owner)).fetchone()
        if row is None:
            return None
        run = dict(row)
        run.update(json.loads(run.pop("params")))
        run["errors"], run["cost"] = json.loads(run["errors"]), json.loads(run["cost"])
        run["wall_s"] = (run["finished_at"] - run["started_at"]
                         if run["finished_at"] is not None and run["started_at"] is not None else None)
        return run

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) AS n FROM runs GROUP BY status").fetchall()
        return {r["status"]: r["n"] for r in rows}


@dataclass(frozen=True)
class BackendSpec:
    """One OpenAI-compatible LLM endpoint; ``model`` is also the name the price table prices it as."""

    name: str
    base_url: str
    model: str
    timeout_s: float = 60.0
    api_key: str = "not-needed"


def openai_chat(spec: BackendSpec) -> ChatModel:
    from mastery.llm.client import LLMClient
    from mastery.llm.settings import load_settings

    settings = load_settings(env={}, backend="openai", base_url=spec.base_url, model=spec.model,
                             timeout_s=spec.timeout_s, api_key=spec.api_key)
    return LLMClient(settings, verify_model=False, device=f"{spec.name} at {spec.base_url}")


def react_agent(llm: ChatModel, tools: Sequence[Tool], *, max_steps: int, on_step: Callable[[Step], None],
                backend_name: str, mode: str = "text") -> Any:
    from mastery.agents.react import ReActAgent

    return ReActAgent(llm, tools, max_steps=max_steps, mode=mode, on_step=on_step, backend_name=backend_name)


@dataclass
class RunnerSettings:
    backends: Sequence[BackendSpec]
    tools: Sequence[Tool]
    prices: PriceTable = field(default_factory=PriceTable)
    workers: int = 2
    queue_limit: int = 16  # runs waiting for a worker; one more is refused with 429
    llm_retry: RetryPolicy = LLM_RETRY
    tool_retry: RetryPolicy = TOOL_RETRY
    chat_factory: Callable[[BackendSpec], ChatModel] = openai_chat
    agent_factory: Callable[..., Any] = react_agent
    # text ReAct by default, not "auto": on the embedded 0.5B model text mode answered 60% of L21's questions
    # and native function calling 20% (docs/results/l21.md); "native"/"auto" suit models that call tools well
    agent_mode: str = "text"
    sleep: Callable[[float], None] = time.sleep  # backoff waits (tests pass a fake)

    def validate(self) -> RunnerSettings:
        if not self.backends:
            raise ConfigError("the agent API needs at least one LLM backend")
        if len({b.name for b in self.backends}) != len(self.backends):
            raise ConfigError("LLM backend names must be distinct")
        if not self.tools or len({t.name for t in self.tools}) != len(self.tools):
            raise ConfigError("the agent API needs at least one tool, with distinct names")
        if self.workers < 1 or self.queue_limit < 0:
            raise ConfigError("workers must be >= 1 and queue_limit >= 0")
        self.llm_retry.validate()
        self.tool_retry.validate()
        return self


class RunManager:
    """Runs agent runs on ``workers`` threads; at most ``queue_limit`` more wait. ``version(run_id)`` grows
    with every stored change, so a stream polls a counter instead of the database."""

    def __init__(self, store: RunStore, settings: RunnerSettings) -> None:
        self.store, self.settings = store, settings.validate()
        self.tools = {t.name: t for t in settings.tools}
        self._pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="agent-run")
        self._lock = threading.Lock()
        self._pending = 0  # queued + running
        self._running = 0
        self._versions: dict[str, int] = {}

    @property
    def capacity(self) -> int:
        return self.settings.workers + self.settings.queue_limit

    def load(self) -> tuple[int, int]:
        with self._lock:
            return self._pending - self._running, self._running

    def version(self, run_id: str) -> int:
        return self._versions.get(run_id, 0)

    def _bump(self, run_id: str) -> None:
        with self._lock:
            self._versions[run_id] = self._versions.get(run_id, 0) + 1

    def submit(self, run_id: str) -> None:
        """Queue a stored run, or raise QueueFull (the caller deletes the run)."""
        with self._lock:
            if self._pending >= self.capacity:
                raise QueueFull(f"all {self.settings.workers} workers are busy and {self.settings.queue_limit} "
                                "runs are waiting; retry later")
            self._pending += 1
        self._pool.submit(self._execute, run_id)

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)

    def _execute(self, run_id: str) -> None:
        with self._lock:
            self._running += 1
        try:
            self._run(run_id)
        except AgentError as exc:  # the agent refused the run (e.g. a question of only control characters)
            log.warning("run refused by the agent: %s", exc,
                        extra={"fields": {"run_id": run_id, "event": "run_failed"}})
            self.store.update(run_id, status="failed", reason=str(exc)[:500], finished_at=time.time())
        except Exception as exc:  # a bug here must still end the run, never leave it "running"
            log.exception("run crashed", extra={"fields": {"run_id": run_id, "event": "run_crashed"}})
            self.store.update(run_id, status="failed", reason=f"internal error: {type(exc).__name__}: {exc}"[:500],
                              finished_at=time.time())
        finally:
            with self._lock:
                self._pending -= 1
                self._running -= 1
            self._bump(run_id)

    def _run(self, run_id: str) -> None:
        run = self.store.get(run_id)
        assert run is not None
        fields = {"run_id": run_id, "request_id": run["request_id"]}
        started = time.time()
        deadline = time.monotonic() + float(run["timeout_s"])
        self.store.update(run_id, status="running", started_at=started)
        self._bump(run_id)
        log.info("run started", extra={"fields": {**fields, "event": "run_started", "tools": run["tools"]}})
        errors: list[str] = []  # shared by every wrapper below: failures in the order they happened
        counters = {"tool_retries": 0}
        rng = random.Random(run_id)
        chats = []
        for spec in self.settings.backends:
            # no single LLM call may outlast the whole run's limit
            bounded = replace(spec, timeout_s=min(spec.timeout_s, float(run["timeout_s"])))
            chat = RetryingChat(self.settings.chat_factory(bounded), self.settings.llm_retry, name=spec.name,
                                sleep=self.settings.sleep, rng=rng, deadline=deadline)
            chat.errors = errors
            chats.append(chat)
        llm = FallbackChat(chats, names=[s.name for s in self.settings.backends])

        def tool_retry(name: str, attempt: int, exc: BaseException) -> None:
            counters["tool_retries"] += 1
            errors.append(f"tool {name} attempt {attempt}: {str(exc)[:200]}")

        tools = [retrying_tool(self.tools[name], self.settings.tool_retry, sleep=self.settings.sleep, rng=rng,
                               on_retry=tool_retry) for name in run["tools"]]

        def on_step(step: Step) -> None:
            data = step.to_dict()
            if step.error and step.kind == "tool_error":
                errors.append(f"tool {step.action}: {step.error[:200]}")
            seq = self.store.add_step(run_id, data)
            self.store.update(run_id, llm_retries=sum(c.retries for c in chats), fallbacks=llm.fallbacks,
                              tool_retries=counters["tool_retries"], errors=errors)
            self._bump(run_id)
            log.info("run step", extra={"fields": {**fields, "event": "run_step", "seq": seq, "kind": step.kind,
                                                   "action": step.action, "error": step.error}})

        agent = self.settings.agent_factory(llm, tools, max_steps=int(run["max_steps"]), on_step=on_step,
                                            backend_name=self.settings.backends[0].name,
                                            mode=self.settings.agent_mode)
        result = agent.run(run["question"], deadline=deadline)
        models = {s.name: s.model for s in self.settings.backends}
        usage: dict[str, dict[str, int]] = {}
        for name, used in llm.usage.items():
            into = usage.setdefault(models[name], {"prompt_tokens": 0, "completion_tokens": 0})
            into["prompt_tokens"] += used["prompt_tokens"]
            into["completion_tokens"] += used["completion_tokens"]
        cost = RunCost.from_usage(usage, self.settings.prices) if usage else RunCost(0, 0, 0.0, {})
        self.store.update(run_id, status=result.status, answer=result.answer, reason=result.reason,
                          backend=llm.backend or result.backend, llm_retries=sum(c.retries for c in chats),
                          tool_retries=counters["tool_retries"], fallbacks=llm.fallbacks, errors=errors,
                          cost=cost.to_dict(), finished_at=time.time())
        log.info("run finished", extra={"fields": {
            **fields, "event": "run_finished", "status": result.status, "steps": len(result.steps),
            "backend": llm.backend, "llm_retries": sum(c.retries for c in chats), "fallbacks": llm.fallbacks,
            "tokens": cost.total_tokens, "usd": cost.usd, "wall_s": round(time.time() - started, 3)}})
