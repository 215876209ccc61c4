"""The L21 agent task set: labelled multi-step questions for a ReAct agent with a calculator, ATT&CK search and
Python, the tiny set with the replies Qwen2.5-0.5B really wrote (replayed by the scripted fake), and the scorer.

    llm = ScriptedChat(replay_script(TINY_QUESTIONS), model="replay")     # mastery.llm.fake
    answer_correct("The ID is T1059.001.", "T1059.001")                   # True
"""

from __future__ import annotations

import re
from typing import Any

# (id, category, question, expected). Expected: a number, or an ATT&CK ID (the first ID in the answer must match).
QUESTIONS = (
    ("calc-1", "calculator", "What is 17 * 23 + 5?", "396"),
    ("calc-2", "calculator", "A server handles 1250 requests per minute. How many requests is that in 24 hours?",
     "1800000"),
    ("calc-3", "calculator", "A team scans 48 hosts per hour. First compute how many hosts it scans in 9 hours, "
                             "then add 120.", "552"),
    ("calc-4", "calculator", "What is 25% of 840? Then multiply the result by 3.", "630"),
    ("calc-5", "calculator", "What is the square root of 1764, and what is that number times 3?", "126"),
    ("calc-6", "calculator", "A 3.5 GB log file is split into chunks of 250 MB. How many chunks is that? "
                             "(1 GB = 1000 MB)", "14"),
    ("attack-1", "kb_search", "Which ATT&CK technique ID covers PowerShell?", "T1059.001"),
    ("attack-2", "kb_search", "What is the ATT&CK technique ID of OS Credential Dumping: LSASS Memory?", "T1003.001"),
    ("attack-3", "kb_search", "Which ATT&CK technique ID is Scheduled Task (under Scheduled Task/Job)?", "T1053.005"),
    ("attack-4", "kb_search+calculator", "Find the ATT&CK technique ID for Scheduled Task, then use the calculator to "
                                         "multiply its 4-digit number (the digits after T) by 2.", "2106"),
    ("attack-5", "kb_search+calculator", "Look up the ATT&CK technique ID of Process Hollowing, then use the "
                                         "calculator to add 45 to its 4-digit number.", "1100"),
    ("python-1", "python", "Use Python to compute the sum of the squares of the integers from 1 to 20.", "2870"),
    ("python-2", "python", "Use Python to count how many prime numbers are below 100.", "25"),
    ("python-3", "python", "Use Python to compute the 15th Fibonacci number (F1 = F2 = 1).", "610"),
    ("python-4", "python", "Use Python to count the numbers from 1 to 1000 that are divisible by 7 or by 11.", "220"),
)

# The tiny preset replays replies in the shapes Qwen2.5-0.5B really wrote (see docs/agents_react.md): a clean chain,
# a reply without labels that the format reminder repairs, and a call written as JSON (the fallback).
TINY_QUESTIONS = (
    ("tiny-chain", "calculator", "A team scans 48 hosts per hour. First compute how many hosts it scans in 9 hours, "
                                 "then add 120.", "552"),
    ("tiny-retry", "kb_search", "Which ATT&CK technique ID covers PowerShell?", "T1059.001"),
    ("tiny-json", "python", "Use Python to compute the sum of the squares of the integers from 1 to 20.", "2870"),
)
REPLAYS = {
    "tiny-chain": ["Thought: I need to compute how many hosts it scans in 9 hours.\nAction: calculator\n"
                   'Action Input: {"expression": "48 * 9"}',
                   " Now add 120.\nAction: calculator\nAction Input: {\"expression\": \"432 + 120\"}",
                   " I know the answer\nFinal Answer: 552"],
    "tiny-retry": ["The technique is probably PowerShell, let me look.",
                   "**Thought:** I need to search the knowledge base.\n**Action:** `kb_search`\n"
                   "**Action Input:** PowerShell",
                   " The first result is PowerShell.\nFinal Answer: T1059.001"],
    "tiny-json": ['{"name": "python", "arguments": {"code": "sum(i**2 for i in range(1, 21))"}}',
                  " I know the answer\nFinal Answer: 2870"],
}
TINY_DOCS = (("T1059.001", "Command and Scripting Interpreter: PowerShell", "Adversaries may abuse PowerShell."),
             ("T1053.005", "Scheduled Task/Job: Scheduled Task", "Adversaries may abuse the Task Scheduler."),
             ("T1003.001", "OS Credential Dumping: LSASS Memory", "Adversaries may read LSASS process memory."))


def replay_script(questions: Any = TINY_QUESTIONS) -> Any:
    """A responder for :class:`mastery.llm.fake.ScriptedChat` that answers each of ``questions`` with its
    recorded replies (``REPLAYS``), in the order that question's calls arrive: a format retry re-sends the same
    turn and must get the next reply."""
    from mastery.llm.fake import QuestionScript

    return QuestionScript({f"Question: {q}": REPLAYS[qid] for qid, _, q, _ in questions if qid in REPLAYS},
                          by="call")


def tiny_documents() -> list[Any]:
    """``TINY_DOCS`` as ATT&CK documents (id ``attack:<technique>``) for a small in-memory search."""
    from mastery.retrieval.types import Document

    return [Document(id=f"attack:{tid}", text=f"{tid} {name}\n{body}", metadata={"technique_id": tid, "name": name})
            for tid, name, body in TINY_DOCS]


def answer_correct(answer: str | None, expected: str) -> bool:
    """Tolerant match: an ATT&CK ID must be the first ID in the answer; a number must be the first or the last
    number in it (thousands separators and a trailing .0 allowed)."""
    if not answer:
        return False
    if re.fullmatch(r"T\d{4}(?:\.\d{3})?", expected):
        ids = re.findall(r"\bT\d{4}(?:\.\d{3})?(?!\d)", answer, flags=re.IGNORECASE)
        return bool(ids) and ids[0].upper() == expected
    numbers = [float(n.replace(",", "")) for n in re.findall(r"-?\d[\d,]*(?:\.\d+)?", answer)]
    target = float(expected)
    return bool(numbers) and any(abs(n - target) <= 1e-6 * max(1.0, abs(target)) for n in (numbers[0], numbers[-1]))
