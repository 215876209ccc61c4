"""Byte-level byte-pair encoding written from scratch.

Text is UTF-8 encoded, split into GPT-2-style pre-tokens (a leading space joins the word after it),
and every pre-token starts as a sequence of byte ids 0-255. Training repeatedly merges the most
frequent adjacent pair into a new id. Pair counts are updated incrementally: a merge only touches
the words that contain the merged pair, and a lazy max-heap finds the next best pair, so a few
thousand merges on ~1 MB take seconds rather than minutes. Because the base vocabulary is all 256
bytes, any UTF-8 text (emoji, CJK, ...) encodes and decodes back exactly.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from mastery.core.errors import MasteryError

log = logging.getLogger(__name__)

# GPT-2's pre-tokenizer, written with the stdlib ``re`` (letters = \w minus digits and "_").
# The last alternative catches anything left, so the pieces always join back to the input.
PRETOKENIZE = re.compile(r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+|[\s\S]""")


class TokenizerError(MasteryError, ValueError):
    """The tokenizer was given input it cannot handle (empty text, invalid UTF-8, ...)."""


def as_text(data: str | bytes, what: str = "text") -> str:
    """Check ``data`` is non-empty text that UTF-8 can represent (bytes must be valid UTF-8)."""
    if isinstance(data, bytes | bytearray):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TokenizerError(f"{what} is not valid UTF-8 (byte {exc.start}: {exc.reason})") from None
    if not isinstance(data, str):
        raise TokenizerError(f"{what} must be str or UTF-8 bytes, got {type(data).__name__}")
    if not data:
        raise TokenizerError(f"{what} is empty")
    try:
        data.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TokenizerError(f"{what} is not valid UTF-8 (lone surrogate at character {exc.start})") from None
    return data


def pretokenize(text: str) -> list[str]:
    return PRETOKENIZE.findall(text)


def _pairs(word: list[int]) -> Iterable[tuple[int, int]]:
    return itertools.pairwise(word)


def _merge_word(word: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    out, i, a, b = [], 0, pair[0], pair[1]
    while i < len(word):
        if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


class ByteBPE:
    """A trained byte-level BPE: ``merges[k]`` = (left id, right id) that becomes id 256 + k."""

    def __init__(self, merges: list[tuple[int, int]] | None = None) -> None:
        self.merges: list[tuple[int, int]] = list(merges or [])
        self.vocab: list[bytes] = [bytes([i]) for i in range(256)]
        for a, b in self.merges:
            self.vocab.append(self.vocab[a] + self.vocab[b])
        self.ranks = {pair: k for k, pair in enumerate(self.merges)}
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    # -- training ------------------------------------------------------------------------------
    @classmethod
    def train(cls, corpus: str | bytes, vocab_size: int, min_frequency: int = 2) -> ByteBPE:
        """Learn ``vocab_size - 256`` merges (fewer if no pair occurs ``min_frequency`` times)."""
        corpus = as_text(corpus, "training corpus")
        if vocab_size < 256:
            raise TokenizerError(f"vocab_size must be >= 256 (the byte alphabet), got {vocab_size}")
        counts = Counter(pretokenize(corpus))
        words = [list(w.encode("utf-8")) for w in counts]  # unique pre-tokens as byte ids
        freqs = list(counts.values())
        pair_counts: dict[tuple[int, int], int] = defaultdict(int)
        where: dict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> indices of words containing it
        for idx, (w, f) in enumerate(zip(words, freqs, strict=True)):
            for p in _pairs(w):
                pair_counts[p] += f
                where[p].add(idx)
        heap = [(-c, p) for p, c in pair_counts.items()]  # ties: the smaller pair ids first
        heapq.heapify(heap)
        merges: list[tuple[int, int]] = []
        while len(merges) < vocab_size - 256 and heap:
            neg, pair = heapq.heappop(heap)
            if pair_counts.get(pair, 0) != -neg:
                continue  # stale heap entry: the count changed since it was pushed
            if -neg < min_frequency:
                break
            new_id = 256 + len(merges)
            merges.append(pair)
            changed: set[tuple[int, int]] = set()
            for idx in list(where[pair]):
                w, f = words[idx], freqs[idx]
                for p in _pairs(w):  # take the word's old pairs out ...
                    pair_counts[p] -= f
                    changed.add(p)
                new = _merge_word(w, pair, new_id)
                words[idx] = new
                for p in _pairs(new):  # ... and put its new pairs in
                    pair_counts[p] += f
                    where[p].add(idx)
                    changed.add(p)
            for p in changed:
                c = pair_counts[p]
                if c > 0:
                    heapq.heappush(heap, (-c, p))
                else:
                    pair_counts.pop(p, None)
                    where.pop(p, None)
            where.pop(pair, None)
        log.info("trained %d merges on %d unique pre-tokens", len(merges), len(words))
        return cls(merges)

    # -- encoding ------------------------------------------------------------------------------
    def _encode_word(self, piece: str) -> list[int]:
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        word = list(piece.encode("utf-8"))
        while len(word) > 1:
            best = min(_pairs(word), key=lambda p: self.ranks.get(p, 1 << 60))
            rank = self.ranks.get(best)
            if rank is None:
                break
            word = _merge_word(word, best, 256 + rank)
        if len(self._cache) < 200_000:
            self._cache[piece] = word
        return word

    def encode(self, text: str | bytes) -> list[int]:
        text = as_text(text)
        ids: list[int] = []
        for piece in pretokenize(text):
            ids += self._encode_word(piece)
        return ids

    def decode(self, ids: Iterable[int], errors: str = "strict") -> str:
        """Join the tokens' bytes and decode as UTF-8 (``errors`` as for bytes.decode)."""
        try:
            raw = b"".join(self.vocab[i] for i in ids)
        except (IndexError, TypeError):
            raise TokenizerError(f"token ids must be ints in [0, {self.vocab_size})") from None
        try:
            return raw.decode("utf-8", errors=errors)
        except UnicodeDecodeError as exc:
            raise TokenizerError(f"these tokens do not form valid UTF-8 (byte {exc.start})") from None

    def token_strings(self) -> list[str]:
        """Every token in GPT-2's printable byte-to-unicode form (how Hugging Face stores byte-level BPE)."""
        table = bytes_to_unicode()
        return ["".join(table[b] for b in tok) for tok in self.vocab]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 bytes to printable unicode characters."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars = keep[:]
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(keep, map(chr, chars), strict=True))


def train_hf_bpe(corpus: str, vocab_size: int, min_frequency: int = 2) -> Any:
    """Hugging Face ``tokenizers`` byte-level BPE with the same vocabulary size and no special tokens
    (returns a ``tokenizers.Tokenizer``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator([corpus], trainer=trainer)
    return tok
