"""A research crew on the local LLM: a researcher searches, a summariser writes, a critic reviews and edits.

    result = run_crew("How do attackers use scheduled tasks for persistence?", chat_model, KBSearch())
    result.status, result.final_report, result.rounds, result.cited, result.per_agent

Manager: the revision loop is run by this module's code (an explicit manager flow), each agent's turn is a
one-task CrewAI ``Crew``. CrewAI's ``Process.hierarchical`` was tried first: its manager must call the
``Delegate work to coworker`` tool with an exact coworker role; the 0.5B model named two tools at once,
got an error, and then wrote the final answer itself without delegating (no search, no summariser, no
critic). A code manager makes the flow reliable and every bound explicit:

1. research: the researcher (with the ``kb_search`` tool, ``max_iter`` bounded) collects notes; every
   search is recorded. If the model never manages a search, the manager runs one on the topic itself
   (``fallback_search``), so later agents still get sources, and says so in the result.
2. draft: the summariser writes a short report citing the source IDs it was given.
3. review, at most ``rounds`` times: the critic answers ``VERDICT: APPROVE`` or ``VERDICT: REVISE`` with
   notes (parsed tolerantly; an unreadable verdict counts as REVISE). The manager then runs its own
   checks (:func:`manager_objections`: a retrieved source cited, no unknown IDs, no prompt echo, not
   pasted from the sources) and turns an APPROVE into REVISE when they fail; on REVISE with rounds left,
   the critic as editor rewrites the report using both sets of notes.

Every failure of the small model (unparseable tool calls, loops, empty output, a server error) ends in a
:class:`CrewResult` with a status and a one-line reason: never an exception from ``run_crew``, never a hang
(each LLM call has the client's timeout, each agent ``max_iter``, the run ``deadline_s``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from mastery.agents.crew.search import SearchBackend
from mastery.core.errors import ConfigError
from mastery.retrieval.types import Hit

log = logging.getLogger(__name__)

AGENTS = ("researcher", "summariser", "critic")
_TECHNIQUE = re.compile(r"\bT\d{4}(?:\.\d{3})?\b")
_BARE_ID = re.compile(r"\[\s*(\d{4}(?:\.\d{3})?)\s*\]")
_APPROVE = re.compile(r"\b(?:approve[ds]?|approval|accept(?:ed)?|lgtm|looks good|no (?:further )?changes)\b", re.I)
_REVISE = re.compile(r"\b(?:revise[ds]?|revision|reject(?:ed)?|needs? (?:work|changes)|not approved?)\b", re.I)
_PROMPT_ECHO = re.compile(r"(?:expected criteria|expected output|Sources:|Research notes:|Final Answer|Thought:|"
                          r"Action Input|your job depends)", re.I)
# CrewAI wraps each task in "This is the expected criteria for your final answer: ... not a summary."; the
# small model often repeats that wrapper before its answer. It is never content, so the manager drops it.
_ECHO_HEAD = r"\[?\s*This is the expected criteria for your final answer:\s*"
_ECHO_TAIL = r"\s*(?:You MUST return the actual complete content as the final answer, not a summary\.)?\s*"


def strip_prompt_echo(text: str, expected: str) -> str:
    """``text`` without CrewAI's task wrapper (with this task's ``expected`` output) that the model repeated."""
    return re.sub(_ECHO_HEAD + re.escape(expected.strip()) + _ECHO_TAIL, "", text or "", flags=re.I).strip()

_WORD = re.compile(r"[a-z0-9]+")
COPY_LIMIT = 0.6  # share of a report's 8-word runs found verbatim in the sources above which it is a paste
_VERDICT = re.compile(r"verdict\s*[:\-=]?\s*\**\s*(approve|approved|revise|revision|reject)", re.I)


@dataclass(frozen=True)
class CrewSettings:
    rounds: int = 2  # most critic reviews; the critic edits after each REVISE that has a review left after it
    k: int = 4  # hits per search
    passage_chars: int = 260  # each hit is cut to this in tool output and prompts (prompt tokens are the cost)
    max_iter_researcher: int = 3  # CrewAI's bound on one agent's think/act loop
    max_iter_writer: int = 2
    max_tokens: int = 220
    max_report_chars: int = 1500
    deadline_s: float | None = None  # stop starting new stages after this many seconds

    def validate(self) -> CrewSettings:
        if not 1 <= self.rounds <= 10:
            raise ConfigError(f"rounds must be between 1 and 10, got {self.rounds}")
        if self.k < 1 or self.passage_chars < 50 or self.max_tokens < 16:
            raise ConfigError("k must be >= 1, passage_chars >= 50 and max_tokens >= 16")
        if self.max_iter_researcher < 1 or self.max_iter_writer < 1:
            raise ConfigError("max_iter values must be >= 1")
        return self


@dataclass
class CrewResult:
    topic: str
    status: str = "failed"  # approved | max_rounds (not approved after all reviews) | failed | timed_out
    reason: str = ""
    final_report: str = ""
    research_notes: str = ""
    drafts: list[str] = field(default_factory=list)  # first draft, then each edit
    verdicts: list[str] = field(default_factory=list)  # APPROVE | REVISE | UNCLEAR per review
    critic_notes: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # query, ids, error, by (model|manager)
    sources: list[dict[str, str]] = field(default_factory=list)  # id, citation, title of every hit seen
    cited: list[str] = field(default_factory=list)  # source citations the final report names
    invalid_citations: list[str] = field(default_factory=list)  # technique IDs cited but never retrieved
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    crewai_usage: dict[str, int] = field(default_factory=dict)  # CrewAI's own UsageMetrics totals
    per_agent: dict[str, dict[str, float]] = field(default_factory=dict)  # calls, tokens, wall_s per agent
    format_repairs: int = 0  # model replies the adapter rewrote (JSON tool call, missing "Final Answer:")
    overrides: int = 0  # critic APPROVEs the manager turned into REVISE because its own checks failed
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def rounds(self) -> int:
        return len(self.verdicts)

    @property
    def approved(self) -> bool:
        return self.status == "approved"

    @property
    def fallback_search(self) -> bool:
        return any(c["by"] == "manager" for c in self.tool_calls)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(rounds=self.rounds, approved=self.approved, fallback_search=self.fallback_search)
        return out


def parse_verdict(text: str) -> str:
    """APPROVE, REVISE or UNCLEAR from a critic's reply: an explicit ``VERDICT: x`` wins, else whichever word
    family appears (REVISE when both do: a critic that mentions both has something to fix)."""
    if m := _VERDICT.search(text or ""):
        return "APPROVE" if m.group(1).lower().startswith("approve") else "REVISE"
    revise, approve = _REVISE.search(text or ""), _APPROVE.search(text or "")
    if revise:
        return "REVISE"
    return "APPROVE" if approve else "UNCLEAR"


def find_cited(text: str, sources: list[dict[str, str]]) -> tuple[list[str], list[str]]:
    """(cited, invalid): source citations named in ``text``; technique IDs in it that no search returned."""
    # Small models drop the "T" ("[1053.005]"): a bracketed bare ATT&CK number counts as that technique.
    text = _BARE_ID.sub(lambda m: f"[T{m.group(1)}]", text or "")
    known = {s["citation"] for s in sources}
    cited = [s["citation"] for s in sources if s["citation"] and re.search(
        rf"(?<![\w.]){re.escape(s['citation'])}(?!\w|\.\d)", text)]
    invalid = sorted({t for t in _TECHNIQUE.findall(text) if t not in known})
    return sorted(set(cited)), invalid


def copied_fraction(report: str, passages: list[str], n: int = 8) -> float:
    """Share of the report's n-word runs that appear word for word in the passages (0: own words, 1: pasted)."""
    def shingles(text: str) -> set[tuple[str, ...]]:
        words = _WORD.findall(text.lower())
        return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}

    mine = shingles(report)
    if not mine:
        return 0.0
    theirs = set().union(*(shingles(p) for p in passages)) if passages else set()
    return len(mine & theirs) / len(mine)


def manager_objections(report: str, sources: list[dict[str, str]]) -> list[str]:
    """What the manager's own checks find wrong with a report, each an instruction the editor can follow.

    The small critic approves almost anything; these checks are cheap, deterministic and catch what it
    misses: no citation, IDs no search returned, prompt text echoed back, sources pasted instead of summarised."""
    objections = []
    cited, invalid = find_cited(report, sources)
    if not cited:
        objections.append("cite at least one source id from the sources in []")
    if invalid:
        objections.append(f"remove ids no search returned: {', '.join(invalid)}")
    if _PROMPT_ECHO.search(report or ""):
        objections.append("remove the instructions copied from the prompt")
    copied = copied_fraction(report, [src.get("text", "") for src in sources])
    if copied > COPY_LIMIT:
        objections.append(f"{copied:.0%} of the report is copied word for word from the sources: summarise "
                          "in your own words")
    return objections


def usable_report(text: str, min_words: int = 6) -> bool:
    """Enough real words to be a report: garbage ("}}{{ ???") or a bare verdict is not."""
    return len(re.findall(r"[A-Za-z]{2,}", text or "")) >= min_words


def _source_block(hits: list[dict[str, str]], chars: int) -> str:
    return "\n".join(f"[{h['citation']}] {h['text'][:chars]}" for h in hits) or "(no sources)"


class _Recorder:
    """Turns every search (by the model through the tool, or by the manager) into a record and a source."""

    def __init__(self, backend: SearchBackend, k: int, chars: int, result: CrewResult) -> None:
        self.backend, self.k, self.chars, self.result = backend, k, chars, result
        self.hits: dict[str, dict[str, str]] = {}

    def search(self, query: str, by: str) -> str:
        from mastery.core.errors import MasteryError

        record: dict[str, Any] = {"query": str(query)[:200], "by": by, "ids": [], "error": None}
        self.result.tool_calls.append(record)
        try:
            hits: list[Hit] = self.backend.search(str(query), self.k)
        except MasteryError as exc:  # shown to the model as the observation: it may fix its query
            record["error"] = str(exc)
            return f"Search failed: {exc}"
        record["ids"] = [h.citation() for h in hits]
        for h in hits:
            text = " ".join(h.text.split())
            self.hits.setdefault(h.citation(), {"id": h.id, "citation": h.citation(), "text": text,
                                                "title": str(h.metadata.get("name") or h.metadata.get("title", ""))})
        self.result.sources = list(self.hits.values())
        return _source_block([self.hits[c] for c in record["ids"]], self.chars) if hits else "No results."


def _search_tool(recorder: _Recorder) -> Any:
    from crewai.tools import BaseTool
    from pydantic import BaseModel, Field

    class SearchArgs(BaseModel):
        query: str = Field(description="keywords to search for")

    class KBSearchTool(BaseTool):
        name: str = "kb_search"
        description: str = "Search the knowledge base. Returns passages, each starting with its source id in []."
        args_schema: type[BaseModel] = SearchArgs

        def _run(self, query: str = "", **kwargs: Any) -> str:
            return recorder.search(query or " ".join(str(v) for v in kwargs.values()), "model")

    return KBSearchTool()


def _agents(llm: Any, tool: Any, s: CrewSettings) -> dict[str, Any]:
    from crewai import Agent

    common = {"llm": llm, "allow_delegation": False, "verbose": False, "cache": False}
    return {
        "researcher": Agent(role="Researcher", goal="Find the facts the topic needs in the knowledge base",
                            backstory="You search the knowledge base before you answer.", tools=[tool],
                            max_iter=s.max_iter_researcher, **common),
        "summariser": Agent(role="Summariser", goal="Write a short, accurate report that cites its sources",
                            backstory="You write clear security briefings.", max_iter=s.max_iter_writer, **common),
        "critic": Agent(role="Critic", goal="Check the report against the sources, then approve it or fix it",
                        backstory="You are a strict reviewer and editor.", max_iter=s.max_iter_writer, **common),
    }


def run_crew(topic: str, chat_model: Any, backend: SearchBackend, settings: CrewSettings | None = None,
             on_stage: Callable[[str, int], None] | None = None) -> CrewResult:
    """Research ``topic`` with the three agents on ``chat_model`` (an LLMClient or any ChatModel)."""
    s = (settings or CrewSettings()).validate()
    if not isinstance(topic, str) or not topic.strip():
        raise ConfigError("empty topic: say what the crew should research")
    from mastery.agents.crew.llm import crewai_offline, make_llm

    crewai_offline()
    result = CrewResult(topic=topic.strip())
    start = time.perf_counter()
    llm = make_llm(chat_model, max_tokens=s.max_tokens)
    recorder = _Recorder(backend, s.k, s.passage_chars, result)
    agents = _agents(llm, _search_tool(recorder), s)
    wall = dict.fromkeys(AGENTS, 0.0)

    def turn(agent: str, description: str, expected: str, stage: str) -> str | None:
        from crewai import Crew, Process, Task

        if s.deadline_s is not None and time.perf_counter() - start > s.deadline_s:
            result.status, result.reason = "timed_out", f"deadline of {s.deadline_s:g}s reached before {stage}"
            return None
        if on_stage:
            on_stage(stage, len(llm.calls))
        task = Task(description=description, expected_output=expected, agent=agents[agent])
        t0 = time.perf_counter()
        try:
            out = Crew(agents=[agents[agent]], tasks=[task], process=Process.sequential, verbose=False,
                       tracing=False).kickoff()
            text = strip_prompt_echo(out.raw or "", expected)
        except Exception as exc:  # CrewAI raises plain exceptions (ValueError on empty LLM output, ...)
            result.errors.append(f"{stage}: {type(exc).__name__}: {str(exc)[:200]}")
            log.warning("event=crew_stage_failed stage=%s error=%s", stage, result.errors[-1])
            text = ""
        finally:
            wall[agent] += time.perf_counter() - t0
        if not text and not any(e.startswith(f"{stage}:") for e in result.errors):
            result.errors.append(f"{stage}: empty output")
        return text

    try:
        topic_text = result.topic
        notes = turn("researcher", f"Topic: {topic_text}\nUse the kb_search tool to find facts about the topic, "
                     "then list the key facts, each with its source id in [].", "Key facts with source ids.",
                     "research")
        if notes is None:
            return _finish(result, llm, wall, start)
        result.research_notes = notes or ""
        if not any(c["by"] == "model" and c["ids"] for c in result.tool_calls):
            # The model never got a search through: the manager searches, so the writers still see sources.
            recorder.search(topic_text, "manager")
        if not result.sources:
            result.status, result.reason = "failed", "no search returned any source"
            return _finish(result, llm, wall, start)
        sources = _source_block(list(recorder.hits.values())[: 2 * s.k], s.passage_chars)
        draft = turn("summariser", f"Topic: {topic_text}\nSources:\n{sources}\nResearch notes: "
                     f"{result.research_notes[:800]}\nWrite a report of 3 to 5 sentences on the topic. Use only "
                     "the sources. Cite each fact with its source id in [], e.g. [" +
                     result.sources[0]["citation"] + "].", "A short report with citations in [].", "draft")
        if not draft or not usable_report(draft):
            if draft is not None:
                result.status = "failed"
                result.reason = ("the summariser produced no report" if not draft else
                                 f"the summariser's output is not a report: {draft[:60]!r}")
            return _finish(result, llm, wall, start)
        result.drafts.append(draft[: s.max_report_chars])
        for review in range(1, s.rounds + 1):
            current = result.drafts[-1]
            reply = turn("critic", f"Sources:\n{sources}\nReport:\n{current}\nCheck the report against the "
                         "sources. Reply with VERDICT: APPROVE if it is accurate and cites sources in [], or "
                         "VERDICT: REVISE followed by what to fix.", "VERDICT: APPROVE or VERDICT: REVISE, "
                         "then notes.", f"review {review}")
            if reply is None:
                break
            verdict, objections = parse_verdict(reply), manager_objections(current, result.sources)
            if verdict == "APPROVE" and objections:  # the manager overrules an approval its checks disagree with
                verdict, result.overrides = "REVISE", result.overrides + 1
            if objections:
                reply = f"{reply[:400]}\n[manager] " + "; ".join(objections)
            result.verdicts.append(verdict)
            result.critic_notes.append(reply[:700])
            if result.verdicts[-1] == "APPROVE":
                result.status, result.reason = "approved", f"the critic approved in review {review}"
                break
            if review == s.rounds:
                result.status = "max_rounds"
                result.reason = (f"not approved after {s.rounds} review(s); the last draft is the report"
                                 + (f" ({'; '.join(objections)})" if objections else ""))
                break
            edited = turn("critic", f"Sources:\n{sources}\nReport:\n{current}\nReviewer notes: {reply[:500]}\n"
                          "Rewrite the report fixing these points. 3 to 5 sentences, cite source ids in [].",
                          "The corrected report.", f"edit {review}")
            if edited is None:
                break
            # An empty edit keeps the previous draft: the next review sees it again rather than nothing.
            result.drafts.append((edited if usable_report(edited) else current)[: s.max_report_chars])
    except Exception as exc:  # a bug or an unexpected CrewAI failure: report it, never crash the caller
        result.status, result.reason = "failed", f"{type(exc).__name__}: {str(exc)[:200]}"
        log.exception("event=crew_failed topic=%r", topic_text)
    return _finish(result, llm, wall, start)


def _finish(result: CrewResult, llm: Any, wall: dict[str, float], start: float) -> CrewResult:
    result.final_report = result.drafts[-1] if result.drafts else ""
    result.cited, result.invalid_citations = find_cited(result.final_report, result.sources)
    if result.status == "failed" and not result.reason:
        result.reason = result.errors[-1] if result.errors else "the crew stopped before a report"
    calls = llm.calls
    result.llm_calls = len(calls)
    result.prompt_tokens = sum(c["prompt_tokens"] for c in calls)
    result.completion_tokens = sum(c["completion_tokens"] for c in calls)
    result.format_repairs = sum(bool(c.get("repaired")) for c in calls)
    usage = llm.get_token_usage_summary()
    result.crewai_usage = {"total_tokens": usage.total_tokens, "prompt_tokens": usage.prompt_tokens,
                           "completion_tokens": usage.completion_tokens,
                           "successful_requests": usage.successful_requests}
    roles = {"Researcher": "researcher", "Summariser": "summariser", "Critic": "critic"}
    for name in AGENTS:
        mine = [c for c in calls if roles.get(c["agent"]) == name]
        result.per_agent[name] = {"calls": len(mine), "prompt_tokens": sum(c["prompt_tokens"] for c in mine),
                                  "completion_tokens": sum(c["completion_tokens"] for c in mine),
                                  "wall_s": round(wall[name], 3)}
    result.wall_s = time.perf_counter() - start
    log.info("event=crew_done status=%s rounds=%d calls=%d tokens=%d cited=%d", result.status, result.rounds,
             result.llm_calls, result.prompt_tokens + result.completion_tokens, len(result.cited))
    return result
