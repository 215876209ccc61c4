"""Separate a reasoning model's ``<think>…</think>`` part from its answer, also while the reply streams.

DeepSeek-R1 (through Ollama, ``MASTERY_LLM_BACKEND=ollama``) writes its chain of thought first, between
``<think>`` and ``</think>``, then the answer. The thought is shown to the user as the thought process and
must never reach the answer, its citation check or the conversation memory.

    splitter = ThinkSplitter()
    for piece in stream:                          # "<th", "ink>The user asks", "...</think>", "It is [1]."
        for kind, text in splitter.feed(piece):   # ("thought", ...) or ("text", ...), in order
            ...
    rest = splitter.close()

Pieces cut a tag anywhere ("<th" + "ink>"), so the splitter holds back a tail that could still become a tag.
A ``<think>`` left open when the reply ends (cut by ``max_tokens``) makes everything after it thought.
Some chat templates put the opening ``<think>`` into the prompt, so the reply starts inside the thought and
only the ``</think>`` shows: with ``reasoning=True`` the splitter holds the start of the reply back until it
knows (a ``<think>`` or ``</think>`` arrives: thought; the reply ends without one: it was all answer).
"""

from __future__ import annotations

from typing import Literal

OPEN, CLOSE = "<think>", "</think>"
Kind = Literal["thought", "text"]
Part = tuple[Kind, str]


def _partial_tag_len(text: str) -> int:
    """Length of the longest tail of ``text`` that is the start of a tag (it may finish in the next piece)."""
    for n in range(min(len(text), len(CLOSE) - 1), 0, -1):
        tail = text[-n:]
        if OPEN.startswith(tail) or CLOSE.startswith(tail):
            return n
    return 0


class ThinkSplitter:
    """Incremental ``<think>`` parser: ``feed`` pieces, then ``close``; each returns ``(kind, text)`` parts."""

    def __init__(self, reasoning: bool = False) -> None:
        self._mode: Literal["pending", "thought", "text"] = "pending" if reasoning else "text"
        self._buf = ""
        self._text_started = False  # the answer's leading whitespace (after </think>) is dropped

    def feed(self, piece: str) -> list[Part]:
        self._buf += piece
        out: list[Part] = []
        while True:
            if self._mode == "pending":
                head = self._buf.lstrip()
                if head.startswith(OPEN):
                    self._buf, self._mode = head[len(OPEN):], "thought"
                    continue
                end = self._buf.find(CLOSE)
                if end >= 0:  # the template opened the thought: all so far was thought
                    self._emit(out, "thought", self._buf[:end])
                    self._buf, self._mode = self._buf[end + len(CLOSE):], "text"
                    continue
                return out  # undecided: hold everything back
            tag = CLOSE if self._mode == "thought" else OPEN
            at = self._buf.find(tag)
            stray = self._buf.find(OPEN if self._mode == "thought" else CLOSE)
            if stray >= 0 and (at < 0 or stray < at):  # a nested <think> or an orphan </think>: drop the tag
                self._emit(out, self._mode, self._buf[:stray])
                self._buf = self._buf[stray + len(OPEN if self._mode == "thought" else CLOSE):]
                continue
            if at >= 0:
                self._emit(out, self._mode, self._buf[:at])
                self._buf = self._buf[at + len(tag):]
                self._mode = "text" if self._mode == "thought" else "thought"
                continue
            keep = _partial_tag_len(self._buf)
            self._emit(out, self._mode, self._buf[: len(self._buf) - keep])
            self._buf = self._buf[len(self._buf) - keep:]
            return out

    def close(self) -> list[Part]:
        """The held-back rest: an unclosed thought stays thought; an undecided start was the answer."""
        out: list[Part] = []
        self._emit(out, "thought" if self._mode == "thought" else "text", self._buf)
        self._buf = ""
        return out

    def _emit(self, out: list[Part], kind: Kind, text: str) -> None:
        if kind == "text" and not self._text_started:
            text = text.lstrip()
            self._text_started = bool(text)
        if text:
            out.append((kind, text))


def split_think(text: str, reasoning: bool = False) -> tuple[str, str]:
    """(thought, answer) of a whole reply."""
    splitter = ThinkSplitter(reasoning)
    parts = splitter.feed(text) + splitter.close()
    thought = "".join(t for k, t in parts if k == "thought").strip()
    return thought, "".join(t for k, t in parts if k == "text").strip()
