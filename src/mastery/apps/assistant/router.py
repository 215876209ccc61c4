"""The router: for each question, the knowledge base (``kb``), a web search (``web``) or a direct answer.

The LLM is asked for ``{"route": ..., "reason": ...}``; an unparsable reply gets one reminder, as the support
bot's intent classifier does (:mod:`mastery.agents.support.classify`); after a second miss, or an LLM error,
:func:`rule_route` decides:

1. a greeting, thanks or small talk, or an arithmetic expression -> ``direct``
   (an LLM ``direct`` for anything else is overruled when the knowledge base has a close passage);
2. words asking for fresh facts ("latest", "today", "news", ...) -> ``web`` when a backend is configured;
3. the knowledge base has a passage close to the question (cosine >= ``kb_min_similarity``) -> ``kb``;
4. a follow-up ("and its license?") -> the previous turn's route;
5. otherwise ``web`` when available, else ``kb``.

With no web backend (the offline default) the prompt says web search is unavailable and a ``web`` decision,
from the LLM or a route hint, becomes ``kb`` with the reason saying so.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mastery.agents.parsing import json_objects
from mastery.apps.assistant.think import split_think
from mastery.llm.types import ChatModel, Completion

log = logging.getLogger(__name__)

ROUTES = ("kb", "web", "direct")
_ALIASES = {"knowledge_base": "kb", "knowledgebase": "kb", "documents": "kb", "docs": "kb", "rag": "kb",
            "search": "web", "web_search": "web", "internet": "web", "answer": "direct", "none": "direct"}
NO_WEB = "web search is unavailable (no backend configured: MASTERY_ASSISTANT_WEB=none)"

_GREETING = re.compile(
    r"^\W*(?:hi|hello|hey|hiya|good\s+(?:morning|afternoon|evening)|thanks?(?:\s+you)?|thank\s+you(?:\s+very\s+much)?|"
    r"ok(?:ay)?|bye|goodbye|how\s+are\s+you|who\s+are\s+you|what\s+can\s+you\s+do)\b[\w\s,!.?']{0,20}$",
    re.IGNORECASE)
_ARITHMETIC = re.compile(r"^\s*(?:what\s+is|what's|calculate|compute|how\s+much\s+is)?\s*"
                         r"(?=[^a-z]*\d[^a-z]*[-+*/x×÷^%][^a-z]*\d)[\d\s.,()+\-*/x×÷^%=]+\??\s*$", re.IGNORECASE)
_FRESH = re.compile(r"\b(?:today|tonight|yesterday|latest|newest|current(?:ly)?|recent(?:ly)?|news|this\s+(?:week|"
                    r"month|year)|right\s+now|weather|stock\s+price|search\s+the\s+web|on\s+the\s+(?:web|internet)|"
                    r"20[2-9]\d)\b", re.IGNORECASE)
_FOLLOW_UP = re.compile(r"^\s*(?:and|also|what\s+about|how\s+about|and\s+what\s+about)\b|\b(?:it|its|it's|they|"
                        r"their|them|this|that|these|those|he|she|his|her)\b", re.IGNORECASE)


@dataclass
class RouteDecision:
    route: str
    reason: str
    decided_by: str  # "llm", "rule", or "user" (a route hint)
    web_available: bool
    attempts: int = 0  # LLM calls made
    raw: list[str] = field(default_factory=list)  # the LLM's replies (thought parts removed)
    thoughts: list[str] = field(default_factory=list)  # a reasoning model's <think> parts
    completions: list[Completion] = field(default_factory=list)
    error: str | None = None  # why the LLM did not decide


def is_follow_up(question: str) -> bool:
    """A short question that leans on the previous turn ("and what about its license?")."""
    return len(question.split()) <= 12 and bool(_FOLLOW_UP.search(question))


def is_small_talk(question: str) -> bool:
    """A greeting, thanks or small talk, or an arithmetic expression: what needs no sources."""
    return bool(_GREETING.match(question) or _ARITHMETIC.match(question))


def parse_route(text: str, web_available: bool) -> tuple[str | None, str, str | None]:
    """(route, reason, problem): tolerant of prose and fences around the JSON object, strict about the route."""
    objects = [o for o in json_objects(text or "") if isinstance(o, dict)]
    if not objects:
        return None, "", "empty reply" if not (text or "").strip() else "no JSON object"
    data = objects[0]
    value = data.get("route")
    if not isinstance(value, str):
        return None, "", "no 'route' key"
    route = value.strip().lower().replace(" ", "_").replace("-", "_")
    route = _ALIASES.get(route, route)
    if route not in ROUTES:
        return None, "", f"unknown route {value!r}"
    reason = " ".join(str(data.get("reason") or "").split())[:300] or "(no reason given)"
    return route, reason, None


def rule_route(question: str, *, web_available: bool, kb_similarity: Callable[[], float | None] | None = None,
               kb_min_similarity: float = 0.3, previous_route: str | None = None) -> tuple[str, str]:
    """(route, reason) by the rules in the module docstring. ``kb_similarity`` is asked only when needed (it
    searches the knowledge base): the best passage's cosine, or None when the search has no dense stage."""
    if _GREETING.match(question):
        return "direct", "a greeting or small talk needs no sources"
    if _ARITHMETIC.match(question):
        return "direct", "arithmetic needs no sources"
    fresh = _FRESH.search(question)
    if fresh and web_available:
        return "web", f"asks for something recent ({fresh.group(0)!r}): the documents may be out of date"
    best = kb_similarity() if kb_similarity is not None else None
    if best is not None and best >= kb_min_similarity:
        return "kb", f"the knowledge base has a passage close to the question (cosine {best:.2f})"
    if previous_route in ("kb", "web") and is_follow_up(question):
        return previous_route, "a follow-up of the previous question: same source"
    if web_available:
        return "web", ("nothing in the knowledge base is close to the question" if best is not None else
                       "the knowledge base cannot tell how close its passages are")
    return "kb", NO_WEB + "; using the knowledge base" + (" (asked for something recent)" if fresh else "")


def system_prompt(web_available: bool, kb_description: str) -> str:
    routes = [f"kb: questions answered by the knowledge base ({kb_description})"]
    if web_available:
        routes.append("web: recent events, news, or facts outside the knowledge base (searches the web)")
    routes.append("direct: greetings, thanks, small talk, arithmetic, questions about this conversation")
    unavailable = "" if web_available else "Web search is unavailable. "
    return ("You route a user's question to where its answer is. Routes:\n" + "\n".join(routes) + "\n"
            + unavailable + 'Reply with only a JSON object: {"route": "<one route>", "reason": "<a few words>"}')


def demo_turns(web_available: bool) -> list[dict[str, str]]:
    """Worked turns: with the routes written as "kb|web|direct" and no example, Qwen2.5-Coder-0.5B copied the
    template ({"route": "kb|direct"}) on every question; small models copy a demonstrated format far better."""
    examples = [("Thanks, that was helpful!", "direct", "small talk"),
                ("What is 17 * 3?", "direct", "arithmetic")]
    if web_available:
        examples.append(("What happened in the news today?", "web", "recent events"))
    # "kb" last and twice: a question about a named thing is the usual case, and the 0.5B model leans towards
    # the route of the nearest example
    examples += [("What is the maximum file size the importer accepts?", "kb", "a fact from the documents"),
                 ("What does the documentation say about the configuration file format?", "kb",
                  "about the documents")]
    return [turn for question, route, reason in examples for turn in (
        {"role": "user", "content": f"Question: {question}"},
        {"role": "assistant", "content": f'{{"route": "{route}", "reason": "{reason}"}}'})]


REMINDER = ('That is not a valid answer. Reply with only a JSON object {{"route": "...", "reason": "..."}} where '
            "route is exactly one of: {routes}.")


def history_text(turns: Sequence[dict[str, Any]]) -> str:
    """Earlier turns as "User: ... / Assistant: ..." lines (what the router and the draft are conditioned on)."""
    names = {"user": "User", "assistant": "Assistant"}
    return "\n".join(f"{names.get(str(t.get('role')), 'User')}: {' '.join(str(t.get('content', '')).split())}"
                     for t in turns)


class Router:
    """Decides a route per question: the LLM first (JSON, one reminder), then :func:`rule_route`."""

    def __init__(self, llm: ChatModel | None, *, web_available: bool, kb_description: str = "the user's documents",
                 kb_min_similarity: float = 0.3, max_tokens: int = 64, retries: int = 1,
                 reasoning: bool = False) -> None:
        self.llm, self.web_available, self.kb_description = llm, web_available, kb_description
        self.kb_min_similarity, self.max_tokens, self.retries, self.reasoning = \
            kb_min_similarity, max_tokens, retries, reasoning

    def _available(self, route: str, reason: str, decision: RouteDecision) -> RouteDecision:
        if route == "web" and not self.web_available:
            route, reason = "kb", f"{NO_WEB}; using the knowledge base (wanted web: {reason})"
        decision.route, decision.reason = route, reason
        return decision

    def decide(self, question: str, history: Sequence[dict[str, Any]] = (), *,
               kb_similarity: Callable[[], float | None] | None = None, previous_route: str | None = None,
               hint: str | None = None) -> RouteDecision:
        from mastery.llm.errors import LLMError

        decision = RouteDecision("kb", "", "user", self.web_available)
        if hint is not None:
            return self._available(hint, "chosen by the user", decision)
        problem = "no LLM"
        if self.llm is not None:
            context = f"Conversation so far:\n{history_text(history)}\n\n" if history else ""
            messages: list[dict[str, str]] = [*demo_turns(self.web_available),
                                              {"role": "user", "content": f"{context}Question: {question}"}]
            routes = ", ".join(r for r in ROUTES if r != "web" or self.web_available)
            for attempt in range(1 + self.retries):
                try:
                    reply = self.llm.chat(messages, system=system_prompt(self.web_available, self.kb_description),
                                          # a reasoning model thinks before its JSON: room for the thought
                                          max_tokens=self.max_tokens * (8 if self.reasoning else 1),
                                          temperature=0.0, seed=0)
                except LLMError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                    log.warning("event=route_llm_error error=%s", problem)
                    break
                decision.attempts += 1
                decision.completions.append(reply)
                thought, text = split_think(reply.text, self.reasoning)
                if thought:
                    decision.thoughts.append(thought)
                decision.raw.append(text)
                route, reason, problem = parse_route(text, self.web_available)
                if route is not None:
                    decision.decided_by = "llm"
                    if route == "direct" and not is_small_talk(question) and kb_similarity is not None:
                        # an uncited answer is the exception: the 0.5B model sent "How do I install a package
                        # on Debian?" to direct with the Debian FAQ in the knowledge base
                        best = kb_similarity()
                        if best is not None and best >= self.kb_min_similarity:
                            decision.decided_by = "rule"
                            route, reason = "kb", (f"the LLM said direct ({reason}), but the knowledge base has a "
                                                   f"passage close to the question (cosine {best:.2f})")
                    return self._available(route, reason, decision)
                log.info("event=route_miss attempt=%d problem=%r", attempt + 1, problem)
                messages += [{"role": "assistant", "content": text or "(empty)"},
                             {"role": "user", "content": REMINDER.format(routes=routes)}]
        route, reason = rule_route(question, web_available=self.web_available, kb_similarity=kb_similarity,
                                   kb_min_similarity=self.kb_min_similarity, previous_route=previous_route)
        decision.decided_by, decision.error = "rule", problem
        return self._available(route, reason, decision)
