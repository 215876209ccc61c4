"""The support-bot router as a LangGraph ``StateGraph``, checkpointed in SQLite.

    classify ──(intent has a policy)──> retrieve ──> draft ──> human_review ──(approve/edit)──> send ──> END
        └──────(other: no policy fits)───────────────────────────┘     └──(reject)──> END

``human_review`` calls ``interrupt()``: the run stops there and the checkpoint (a SQLite file) holds everything.
Any process can later resume the thread with the person's decision (``Command(resume=...)``): approve the
draft, send an edited text, or reject. ``send`` appends the email to a JSONL outbox once per thread (a replayed
send finds its key and writes nothing). Each thread is one conversation: one customer message, one reply.
"""

from __future__ import annotations

import logging
import operator
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypedDict

from mastery.agents.support import INTENTS
from mastery.agents.support.classify import FallbackClassifier, classify_message
from mastery.agents.support.drafting import draft_reply, send_email
from mastery.agents.support.policies import PolicyIndex, load_policies
from mastery.core.errors import MasteryError
from mastery.retrieval.types import content_hash

log = logging.getLogger(__name__)

ACTIONS = ("approve", "edit", "reject")
_THREAD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class SupportError(MasteryError):
    """A thread id is bad or unknown, a thread is not where the command needs it, or a decision is invalid."""


class SupportState(TypedDict, total=False):
    thread_id: str
    message: str
    intent: str
    confidence: float
    decided_by: str  # llm | llm_retry | keywords | embedding | none
    classification: dict[str, Any]  # attempts, raw replies, error, tokens
    second_opinion: dict[str, Any]  # the fallback classifier's intent too, shown to the reviewer when it differs
    policy_id: str | None  # the intent's policy: what the draft cites
    retrieved_ids: list[str]  # the intent's policy first, then other policies the message search found
    policy_text: str
    search_hits: list[dict[str, Any]]  # the message's hybrid search: section id, policy id, score
    draft: str | None  # None when escalated (no policy fits)
    draft_info: dict[str, Any]  # source (llm | llm+citation | template), problem, raw reply, tokens
    review: dict[str, Any]  # the person's decision: action, text
    sent: dict[str, Any] | None  # the outbox record
    status: str  # awaiting_review | sent | rejected
    events: Annotated[list[str], operator.add]  # one line per node, appended across the run


@dataclass
class BotSettings:
    classify_max_tokens: int = 24
    draft_max_tokens: int = 140
    max_policy_chars: int = 900
    search_k: int = 2  # other policies the message search may add
    retrieval: str = "hybrid"  # bm25 | hybrid (+ MiniLM): also enables the fallback's embedding stage
    device: str = "cpu"  # where MiniLM embeds
    seed: int = 0


@dataclass
class SupportDeps:
    """What the nodes use, created on first use: a process that only resumes a review needs none of it."""

    llm: Any = None  # a ChatModel, or None (classification falls back, drafts use the template)
    settings: BotSettings = field(default_factory=BotSettings)
    outbox: Path = Path("outbox.jsonl")
    index_factory: Callable[[], PolicyIndex] | None = None
    _index: PolicyIndex | None = None
    _fallback: FallbackClassifier | None = None

    # Methods, not properties: compiling a graph, LangGraph reads the attributes its node functions use (looking
    # for subgraphs), and a property would load MiniLM in a process that only resumes a review.
    def index(self) -> PolicyIndex:
        if self._index is None:
            factory = self.index_factory or (lambda: PolicyIndex(load_policies(), self.settings.retrieval,
                                                                 self.settings.device))
            self._index = factory()
        return self._index

    def fallback(self) -> FallbackClassifier:
        if self._fallback is None:
            index = self.index()
            self._fallback = FallbackClassifier(index.model, {p.intent: p.title for p in index.policies})
        return self._fallback


def check_decision(state: dict[str, Any], decision: Any) -> dict[str, str]:
    """The person's decision, normalised: {"action": approve|edit|reject, "text": what to send}."""
    if not isinstance(decision, dict) or decision.get("action") not in ACTIONS:
        raise SupportError(f"a review decision is one of {', '.join(ACTIONS)}, got {decision!r}")
    action, text = decision["action"], str(decision.get("text") or "").strip()
    if action == "approve":
        if not state.get("draft"):
            raise SupportError("nothing to approve: this message was escalated without a draft; reply with "
                               "--edit TEXT or --reject")
        text = state["draft"]
    elif action == "edit" and not text:
        raise SupportError("an edit needs the text to send (--edit TEXT)")
    return {"action": action, "text": text if action != "reject" else ""}


def build_graph(deps: SupportDeps) -> Any:
    """The uncompiled StateGraph; compile it with a checkpointer (:class:`SupportBot` does)."""
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import interrupt

    s = deps.settings

    def classify(state: SupportState) -> dict[str, Any]:
        c = classify_message(deps.llm, state["message"], deps.fallback(), max_tokens=s.classify_max_tokens,
                             seed=s.seed)
        info = {"attempts": c.attempts, "raw": c.raw, "error": c.error, "prompt_tokens": c.prompt_tokens,
                "completion_tokens": c.completion_tokens}
        # the fallback costs nothing next to an LLM call: its intent is a second opinion for the person reviewing
        second = c if c.decided_by not in ("llm", "llm_retry") else deps.fallback().classify(state["message"])
        opinion = {"intent": second.intent, "decided_by": second.decided_by, "agrees": second.intent == c.intent}
        return {"intent": c.intent, "confidence": c.confidence, "decided_by": c.decided_by, "classification": info,
                "second_opinion": opinion,
                "events": [f"classify: {c.intent} (by {c.decided_by}, {c.attempts} LLM call(s))"
                           + ("" if opinion["agrees"] else f"; the {second.decided_by} fallback says {second.intent}")]}

    def retrieve(state: SupportState) -> dict[str, Any]:
        index = deps.index()
        policy = index.for_intent(state["intent"])
        assert policy is not None  # the router sends only intents with a policy here
        hits = index.search(state["message"], k=max(3, s.search_k * 3))
        found = list(dict.fromkeys(str(h.metadata["policy_id"]) for h in hits))[: s.search_k]
        retrieved = [policy.id, *(p for p in found if p != policy.id)]
        return {"policy_id": policy.id, "retrieved_ids": retrieved, "policy_text": policy.body,
                "search_hits": [{"id": h.id, "policy_id": h.metadata["policy_id"], "score": round(h.score, 6)}
                                for h in hits],
                "events": [f"retrieve: {policy.id}; message search: {', '.join(found) or 'nothing'}"]}

    def draft(state: SupportState) -> dict[str, Any]:
        policy = deps.index().policy(state["policy_id"] or "")
        d = draft_reply(deps.llm, policy, state["message"], max_tokens=s.draft_max_tokens,
                        max_policy_chars=s.max_policy_chars, seed=s.seed)
        info = {"source": d.source, "problem": d.problem, "raw": d.raw, "dropped_paragraphs": d.dropped_paragraphs,
                "prompt_tokens": d.prompt_tokens, "completion_tokens": d.completion_tokens}
        return {"draft": d.text, "draft_info": info,
                "events": [f"draft: {d.source}" + (f" ({d.problem})" if d.problem else "")]}

    def human_review(state: SupportState) -> dict[str, Any]:
        payload = {"thread_id": state.get("thread_id"), "intent": state.get("intent"),
                   "policy_id": state.get("policy_id"), "draft": state.get("draft"),
                   "escalated": not state.get("draft"), "second_opinion": state.get("second_opinion")}
        while True:  # an invalid decision asks again (each interrupt() call is its own resume slot)
            try:
                decision = check_decision(dict(state), interrupt(payload))
                break
            except SupportError as exc:
                payload = {**payload, "error": str(exc)}
        status = "rejected" if decision["action"] == "reject" else state.get("status", "awaiting_review")
        return {"review": decision, "status": status, "events": [f"review: {decision['action']}"]}

    def send(state: SupportState) -> dict[str, Any]:
        key = f"{state['thread_id']}:{content_hash(state['message'])[:12]}"
        record = send_email(deps.outbox, key=key, thread_id=state["thread_id"], text=state["review"]["text"],
                            policy_id=state.get("policy_id"), decision=state["review"]["action"])
        return {"sent": record, "status": "sent",
                "events": ["send: " + ("already in the outbox, not sent again" if record["duplicate"] else
                                       f"appended to {deps.outbox.name}")]}

    graph = StateGraph(SupportState)
    for name, fn in (("classify", classify), ("retrieve", retrieve), ("draft", draft),
                     ("human_review", human_review), ("send", send)):
        graph.add_node(name, fn)
    graph.add_edge(START, "classify")
    graph.add_conditional_edges("classify", lambda st: "retrieve" if st["intent"] in INTENTS else "human_review",
                                ["retrieve", "human_review"])
    graph.add_edge("retrieve", "draft")
    graph.add_edge("draft", "human_review")
    graph.add_conditional_edges("human_review", lambda st: END if st["review"]["action"] == "reject" else "send",
                                ["send", END])
    graph.add_edge("send", END)
    return graph


def check_thread_id(thread_id: str) -> str:
    if not isinstance(thread_id, str) or not _THREAD_ID.fullmatch(thread_id):
        raise SupportError(f"bad thread id {thread_id!r}: use 1-64 letters, digits, '.', '_' or '-', starting "
                           "with a letter or digit")
    return thread_id


class SupportBot:
    """The compiled graph over a SQLite checkpoint file: ``ask`` runs a new thread to the review, ``review``
    resumes it with a decision, ``state``/``history`` read the checkpoint. Use as a context manager."""

    def __init__(self, db: str | Path, deps: SupportDeps | None = None, *, create: bool = True) -> None:
        from langgraph.checkpoint.sqlite import SqliteSaver

        self.db = Path(db)
        if not self.db.is_file() and not create:
            raise SupportError(f"no checkpoint database at {self.db}; start a conversation with "
                               "'mastery support ask' (or pass --db)")
        self.db.parent.mkdir(parents=True, exist_ok=True)
        self.deps = deps or SupportDeps(outbox=default_outbox(self.db))
        # check_same_thread=False: LangGraph runs nodes in a worker thread; SqliteSaver serialises access itself
        self._conn = sqlite3.connect(str(self.db), check_same_thread=False)
        try:
            self.graph = build_graph(self.deps).compile(checkpointer=SqliteSaver(self._conn))
            self._conn.execute("select name from sqlite_master limit 1").fetchall()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise SupportError(f"{self.db} is not a checkpoint database ({exc})") from None

    def __enter__(self) -> SupportBot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    @staticmethod
    def _config(thread_id: str) -> dict[str, Any]:
        return {"configurable": {"thread_id": check_thread_id(thread_id)}}

    def exists(self, thread_id: str) -> bool:
        return bool(self.graph.get_state(self._config(thread_id)).values)

    def state(self, thread_id: str) -> dict[str, Any]:
        """The thread's values plus ``next`` (nodes waiting) and ``status``; SupportError if it does not exist."""
        snap = self.graph.get_state(self._config(thread_id))
        if not snap.values:
            raise SupportError(f"no thread {thread_id!r} in {self.db}")
        values = dict(snap.values)
        values["next"] = list(snap.next)
        if "human_review" in snap.next:
            values["status"] = "awaiting_review"
        values.setdefault("status", "running" if snap.next else "done")
        return values

    def history(self, thread_id: str) -> list[dict[str, Any]]:
        """Every checkpoint of the thread, oldest first: step, the node(s) due next, and when it was written."""
        snaps = list(self.graph.get_state_history(self._config(thread_id)))
        return [{"step": snap.metadata.get("step"), "next": list(snap.next), "created_at": snap.created_at}
                for snap in reversed(snaps)]

    def check_new(self, thread_id: str, message: str) -> None:
        """SupportError unless ``ask`` can start this thread: a valid unused id and a non-empty message."""
        if not isinstance(message, str) or not message.strip():
            raise SupportError("the customer message is empty")
        if self.exists(thread_id):
            raise SupportError(f"thread {thread_id!r} already exists in {self.db} (status "
                               f"{self.state(thread_id)['status']}); one thread is one conversation, use a new id")

    def ask(self, thread_id: str, message: str) -> dict[str, Any]:
        """Start a thread with the customer's message and run it to the review interrupt."""
        self.check_new(thread_id, message)
        self.graph.invoke({"thread_id": thread_id, "message": message.strip(), "events": []},
                          self._config(thread_id))
        return self.state(thread_id)

    def review(self, thread_id: str, action: str, text: str | None = None) -> dict[str, Any]:
        """Resume a thread waiting for review with the person's decision; returns the final state."""
        from langgraph.types import Command

        current = self.state(thread_id)
        if current["status"] != "awaiting_review":
            raise SupportError(f"thread {thread_id!r} is not waiting for review (status {current['status']})")
        decision = check_decision(current, {"action": action, "text": text})  # fail here, not inside the graph
        self.graph.invoke(Command(resume=decision), self._config(thread_id))
        return self.state(thread_id)


def default_outbox(db: Path) -> Path:
    """The outbox next to the checkpoint file: ``support.sqlite`` -> ``support.outbox.jsonl``."""
    return db.with_name(f"{db.stem}.outbox.jsonl")
