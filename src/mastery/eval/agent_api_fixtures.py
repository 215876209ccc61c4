"""The L24 agent API demo: the tools, the scripted LLMs' replies, the models they stand for and their prices,
and the questions for the runs on a real LLM. The lab, its tests and the load benchmark all use these.

    primary = ScriptedLLM(demo_script(), model=PRIMARY_MODEL)        # mastery.llm.scripted
    runner = RunnerSettings(backends=..., tools=demo_tools(), prices=parse_price_table(EXAMPLE_PRICES))
    keys, tokens = demo_keys(tmp)                                     # a key file with one key per DEMO_OWNERS
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PRIMARY_MODEL = "gpt-4o-mini"  # the scripted primary is priced as this hosted model (example list price)
FALLBACK_MODEL = "qwen2.5-coder-0.5b-instruct-q4_k_m"  # local: costs 0
EXAMPLE_PRICES = {"note": "example list prices (USD per 1M tokens), for illustration only",
                  "models": {"gpt-4o-mini": {"prompt_per_1m": 0.15, "completion_per_1m": 0.60},
                             "gpt-4o": {"prompt_per_1m": 2.50, "completion_per_1m": 10.00}}}
# (question, the number a correct answer contains) for the runs on the embedded LLM
EMBEDDED_QUESTIONS = [("What is 17 * 23 + 5?", "396"), ("What is (123 + 456) * 2?", "1158"),
                      ("What is 2 ** 10 - 24?", "1000"), ("What is sqrt(144) * 3?", "36")]

DEMO_OWNERS = ("l24", "intruder")  # the lab's client, and a second key holder who must not see its runs


def demo_keys(folder: str | Path, owners: tuple[str, ...] = DEMO_OWNERS) -> tuple[Any, dict[str, str]]:
    """A fresh key file in ``folder`` with one key per owner: ``(KeyStore, {owner: token})``."""
    from mastery.serving.auth import KeyStore

    store = KeyStore(Path(folder) / "api-keys.json")
    return store, {owner: store.create(owner)[1] for owner in owners}


def demo_tools() -> list[Any]:
    """The calculator (L21's) and ``lookup``, a tool that always fails (its service is "down")."""
    from mastery.agents.tools import calculator_tool
    from mastery.agents.types import Tool

    def lookup(args: dict[str, Any]) -> str:
        raise ConnectionError("the lookup service is down")

    return [calculator_tool(), Tool("lookup", "Look up a fact in the reference service.",
                                    {"type": "object", "properties": {"query": {"type": "string"}},
                                     "required": ["query"]}, lookup, timeout_s=2.0)]


def demo_script() -> Any:
    """Replies per question for the scripted LLMs (native tool calls, then an answer)."""
    from mastery.llm.fake import QuestionScript, tool_call

    count = [tool_call("calculator", expression=f"{i} + 1") for i in range(1, 40)]
    return QuestionScript({
        "[lookup]": [tool_call("lookup", query="phishing"), "The lookup service is down, so I cannot look it up."],
        "[slow]": count,
        "17 * 23": [tool_call("calculator", expression="17 * 23"), "391"],
        "6 * 7": [tool_call("calculator", expression="6 * 7"), "42"],
    }, default=["I can only answer the questions of this lab."])
    # Other questions (the fuzzer's) get a direct answer: no tool call, so no calculator (ast.parse) runs in a
    # worker thread while hypothesis parses source in the main one; CPython 3.11.7's ast is not thread-safe there.
