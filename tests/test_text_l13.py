"""L13: byte-level BPE from scratch, skip-gram word2vec and the sentence-embedding classifier."""

import itertools
import random
from collections import Counter

import numpy as np
import pytest

from mastery.core.errors import MasteryError
from mastery.text.bpe import ByteBPE, TokenizerError, pretokenize, train_hf_bpe
from mastery.text.embed import logreg_head, tfidf_logreg
from mastery.text.word2vec import build_corpus, nearest_neighbours, skipgram_pairs, train_word2vec
from tests.conftest import needs_mirror

CORPUS = ("The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs!\n" * 20
          + "Ünïcödé wörds, 日本語のテキスト, emoji 🙂🙂👍🏽 and numbers 12345 67 8.\n" * 10
          + "to be or not to be, that is the question: whether 'tis nobler in the mind\n" * 15)

# Code-point ranges to draw random text from: ASCII, Latin-1, Greek/Cyrillic, combining marks, CJK,
# Hangul, emoji (4-byte UTF-8), variation selectors / ZWJ, whitespace of all sorts.
RANGES = [(0x20, 0x7E), (0x00, 0x1F), (0xA0, 0xFF), (0x370, 0x4FF), (0x300, 0x36F), (0x4E00, 0x9FFF),
          (0xAC00, 0xD7A3), (0x1F300, 0x1FAFF), (0xFE00, 0xFE0F), (0x200B, 0x200D), (0x2000, 0x2029),
          (0x10000, 0x10FFFF)]


def _random_text(rng: random.Random) -> str:
    chars = []
    for _ in range(rng.randint(1, 40)):
        lo, hi = rng.choice(RANGES)
        cp = rng.randint(lo, hi)
        chars.append(chr(cp) if not 0xD800 <= cp <= 0xDFFF else "x")
    return "".join(chars)


@pytest.fixture(scope="module")
def bpe() -> ByteBPE:
    return ByteBPE.train(CORPUS, 256 + 120)


def test_round_trip_on_many_random_strings(bpe):
    rng = random.Random(0)
    for _ in range(2000):
        text = _random_text(rng)
        ids = bpe.encode(text)
        assert bpe.decode(ids) == text
        assert all(0 <= i < bpe.vocab_size for i in ids)
    for text in ["🙂", "👨‍👩‍👧‍👦", "日本語", "e\u0301", "\x00", " ", "\n\n\t ", "a" * 500, CORPUS]:
        assert bpe.decode(bpe.encode(text)) == text
        assert bpe.decode(bpe.encode(text.encode("utf-8"))) == text  # UTF-8 bytes are accepted too


def test_pretokenizer_covers_every_character():
    rng = random.Random(1)
    for _ in range(500):
        text = _random_text(rng)
        assert "".join(pretokenize(text)) == text


def test_merges_compress_and_are_learned_in_frequency_order(bpe):
    assert bpe.vocab_size == 256 + 120
    text = "the fox and the dog"
    assert len(bpe.encode(text)) < len(text.encode("utf-8"))
    assert bpe.vocab[256:258] and all(len(t) >= 2 for t in bpe.vocab[256:])
    assert bpe.vocab.index(b" the") > 256  # a frequent word became a single token


def _naive_merges(corpus: str, n_merges: int) -> list[tuple[int, int]]:
    """Reference BPE that recounts every pair after each merge (slow, obviously correct)."""
    words = Counter(tuple(w.encode("utf-8")) for w in pretokenize(corpus))
    merges = []
    for k in range(n_merges):
        counts: Counter = Counter()
        for w, f in words.items():
            for p in itertools.pairwise(w):
                counts[p] += f
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        if counts[best] < 2:
            break
        merges.append(best)
        new_words: Counter = Counter()
        for w, f in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(256 + k)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] += f
        words = new_words
    return merges


def test_incremental_training_equals_naive_recount(bpe):
    assert bpe.merges == _naive_merges(CORPUS, 120)


def test_hf_tokenizers_learns_a_similar_vocabulary(bpe):
    hf = train_hf_bpe(CORPUS, 256 + 120)
    mine = set(bpe.token_strings()[256:])
    # this tiny, repetitive corpus has many count ties, which the two implementations break differently
    assert len(mine & set(hf.get_vocab())) / len(mine) > 0.6
    text = "the lazy fox is not the question"
    assert hf.decode(hf.encode(text).ids) == text
    assert len(bpe.encode(text)) == pytest.approx(len(hf.encode(text).ids), rel=0.3)


@pytest.mark.parametrize("bad, match", [("", "empty"), (b"", "empty"), (b"\xff\xfeabc", "not valid UTF-8"),
                                        (b"ok \xc3", "not valid UTF-8"), ("lone \ud800", "surrogate"),
                                        (123, "must be str")])
def test_bad_input_gives_a_clear_error(bpe, bad, match):
    with pytest.raises(TokenizerError, match=match) as info:
        bpe.encode(bad)
    assert isinstance(info.value, ValueError) and isinstance(info.value, MasteryError)


def test_bad_training_input_and_ids(bpe):
    with pytest.raises(TokenizerError, match="empty"):
        ByteBPE.train("", 300)
    with pytest.raises(TokenizerError, match="not valid UTF-8"):
        ByteBPE.train(b"\x80abc", 300)
    with pytest.raises(TokenizerError, match=">= 256"):
        ByteBPE.train("abc", 100)
    with pytest.raises(TokenizerError, match="token ids"):
        bpe.decode([10**6])
    with pytest.raises(TokenizerError, match="valid UTF-8"):
        bpe.decode([0xE6])  # the first byte of a 3-byte character alone
    assert bpe.decode([0xE6], errors="replace") == "\ufffd"


def test_skipgram_pairs_lie_within_the_window():
    ids = np.arange(50)
    counts = np.ones(50, dtype=np.int64)
    pairs = skipgram_pairs(ids, counts, window=3, rng=np.random.default_rng(0), subsample=1.0)
    assert pairs.shape[1] == 2 and len(pairs) > 50
    gaps = np.abs(pairs[:, 0] - pairs[:, 1])
    assert gaps.min() >= 1 and gaps.max() <= 3


def test_word2vec_learns_cooccurrence():
    rng = np.random.default_rng(0)
    groups = [["apple", "pear", "plum", "fig"], ["iron", "steel", "copper", "tin"]]
    sentences = []
    for _ in range(600):
        g = groups[rng.integers(2)]
        sentences.append(" ".join(rng.choice(g, size=6)))
    corpus = build_corpus(". ".join(sentences), min_count=1)
    result = train_word2vec(corpus, dim=16, window=2, negatives=3, epochs=2, batch_size=256, lr=0.02,
                            subsample=1.0, seed=0)
    assert result.embeddings.shape == (8, 16)
    assert result.losses[-1] < result.losses[0]
    neighbours = [w for w, _ in nearest_neighbours(result.embeddings, corpus.words, "apple", k=3)]
    assert set(neighbours) == {"pear", "plum", "fig"}
    with pytest.raises(KeyError, match="zebra"):
        nearest_neighbours(result.embeddings, corpus.words, "zebra")


def test_tfidf_and_logreg_heads_separate_easy_classes():
    texts = [f"great wonderful film {i}" for i in range(30)] + [f"awful boring film {i}" for i in range(30)]
    y = np.array([1] * 30 + [0] * 30)
    result, seconds = tfidf_logreg(texts[::2], y[::2], texts[1::2], y[1::2])
    assert result.f1 == 1.0 and seconds > 0
    x = np.vstack([np.random.default_rng(0).normal(m, 0.1, (20, 4)) for m in (0, 1)])
    yy = np.array([0] * 20 + [1] * 20)
    assert logreg_head(x, yy, x, yy).accuracy == 1.0


@needs_mirror
def test_minilm_embeddings_load_offline_and_cluster_by_meaning():
    from mastery.text.embed import encode_texts, load_sentence_model

    model = load_sentence_model(device="cpu", max_seq_length=64)
    emb = encode_texts(model, ["A wonderful, moving film.", "A great and touching movie.", "The stock market fell."])
    assert emb.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2
