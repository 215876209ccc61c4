"""Automatic text categories for error analysis of a sentiment classifier (positive / negative reviews).

Each review is measured once (:func:`text_features`), then cut into slices (:func:`text_categories`):

- **negation** and **contrast** (but, however, although...): nearly every long review has one, so the
  slice is the reviews *dense* in them: per 100 words, at or above the set's upper ``quantile``;
- **sarcasm cues**: a short list of surface patterns ("yeah right", "oh great", scare quotes around praise
  or a genre word, "so bad it's good", "?!"). Sarcasm cannot be read off the surface; these are cues,
  with unmeasured precision, and the report says so;
- **length**: the quartiles of the set's word counts (a long review is truncated by the model);
- **contradicting score**: a numeric rating in the text on the other side of the label ("7/10" in a
  negative review, "2 out of 10" in a positive one);
- **contradicting words**: more strong words of the opposite polarity than of the label's own ("awful"
  and "waste" in a positive review that says "brilliant" once).

The last two need the true label: they describe reviews whose words argue against their own rating.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mastery.core.errors import ConfigError

NEGATION, CONTRAST, SARCASM = "negation", "contrast words", "sarcasm cues"
CONTRA_SCORE, CONTRA_WORDS = "contradicting score", "contradicting words"
LENGTH_SLICES = ("length Q1 (shortest)", "length Q2", "length Q3", "length Q4 (longest)")
TEXT_SLICES = (NEGATION, CONTRAST, SARCASM, CONTRA_SCORE, CONTRA_WORDS, *LENGTH_SLICES)

_WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")
_NEGATION = re.compile(r"\b(?:not|no|never|nothing|nobody|none|neither|nor|nowhere|hardly|barely|without|cannot)\b"
                       r"|\b[a-z]+n['’]t\b")
_CONTRAST = re.compile(r"\b(?:but|however|although|though|nevertheless|nonetheless|whereas|despite|"
                       r"in spite of|on the other hand)\b")
_SARCASM = re.compile(
    r"\byeah,? right\b|\boh,? (?:great|joy|wonderful|brilliant|goody|sure)\b|\bgee\b"
    r"|\bwhat a (?:surprise|shock|shocker)\b|\bthanks a lot\b|\bso bad (?:that )?it['’]?s (?:good|funny|hilarious)\b"
    r"|\?!|!\?|\bnot!"
    # ("as if" is left out: in reviews it is mostly literal, "to live as if one's life is significant")
    r"|[\"“](?:masterpiece|classic|genius|brilliant|great|best|acting|actors?|plot|story|script|comedy|horror|"
    r"thriller|scary|funny|talent|entertainment|film|movie|special effects|twist)[\"”]")
# A score in the text: "7/10", "3.5 / 5", "2 out of 10" (scales 10 and 5 only; "3/4 of the film" is not a score).
_SCORE = re.compile(r"\b(\d{1,2}(?:\.\d)?)\s*(?:/|out of)\s*(10|5)\b")
POSITIVE_WORDS = frozenset({"masterpiece", "excellent", "brilliant", "superb", "wonderful", "amazing", "perfect",
                            "outstanding", "fantastic", "terrific", "magnificent", "gem", "loved", "best"})
NEGATIVE_WORDS = frozenset({"awful", "terrible", "worst", "horrible", "waste", "boring", "dreadful", "pathetic",
                            "crap", "garbage", "stinker", "lame", "stupid", "atrocious", "unwatchable", "mediocre",
                            "disappointing", "poorly"})
SCORE_HIGH, SCORE_LOW = 0.7, 0.4  # a score >= 7/10 reads positive, <= 4/10 negative (IMDb's own split)


def normalise(text: str) -> str:
    """Lower case, IMDb's ``<br />`` line breaks as spaces."""
    return re.sub(r"<br\s*/?>", " ", text).lower()


@dataclass(frozen=True)
class TextFeatures:
    """Measurements per review, each (N,)."""

    words: np.ndarray
    negations: np.ndarray
    contrasts: np.ndarray
    sarcasm: np.ndarray
    positive_words: np.ndarray
    negative_words: np.ndarray
    high_score: np.ndarray  # bool: the text holds a score >= SCORE_HIGH of its scale
    low_score: np.ndarray  # bool: a score <= SCORE_LOW

    @property
    def negation_per_100(self) -> np.ndarray:
        return 100 * self.negations / np.maximum(self.words, 1)

    @property
    def contrast_per_100(self) -> np.ndarray:
        return 100 * self.contrasts / np.maximum(self.words, 1)


def text_features(texts: Sequence[str]) -> TextFeatures:
    """Count words, negations, contrast words, sarcasm cues, strong words and numeric scores per text."""
    cols: dict[str, list] = {k: [] for k in ("words", "neg", "con", "sar", "pos_w", "neg_w", "hi", "lo")}
    for raw in texts:
        if not isinstance(raw, str):
            raise ConfigError(f"texts must be strings, got {type(raw).__name__}")
        text = normalise(raw)
        words = _WORD.findall(text)
        scores = [float(x) / float(scale) for x, scale in _SCORE.findall(text) if float(x) <= float(scale)]
        cols["words"].append(len(words))
        cols["neg"].append(len(_NEGATION.findall(text)))
        cols["con"].append(len(_CONTRAST.findall(text)))
        cols["sar"].append(len(_SARCASM.findall(text)))
        cols["pos_w"].append(sum(w in POSITIVE_WORDS for w in words))
        cols["neg_w"].append(sum(w in NEGATIVE_WORDS for w in words))
        cols["hi"].append(any(s >= SCORE_HIGH for s in scores))
        cols["lo"].append(any(s <= SCORE_LOW for s in scores))
    arr = {k: np.asarray(v, dtype=bool if k in ("hi", "lo") else np.int64) for k, v in cols.items()}
    return TextFeatures(arr["words"], arr["neg"], arr["con"], arr["sar"], arr["pos_w"], arr["neg_w"], arr["hi"],
                        arr["lo"])


@dataclass(frozen=True)
class TextThresholds:
    quantile: float
    negation_per_100: float  # negation: at least one, and negations per 100 words >= this
    contrast_per_100: float  # contrast words: at least one, and per 100 words >= this
    length_quartiles: tuple[float, float, float]  # word counts at 25%, 50%, 75%

    def rows(self) -> list[dict[str, object]]:
        q1, q2, q3 = self.length_quartiles
        upper = f"upper {self.quantile:.0%} quantile of the set"
        return [
            {"slice": NEGATION, "rule": f"negations per 100 words >= {self.negation_per_100:.3g}", "from": upper},
            {"slice": CONTRAST, "rule": f"contrast words per 100 words >= {self.contrast_per_100:.3g}",
             "from": upper},
            {"slice": SARCASM, "rule": "at least one sarcasm cue (fixed pattern list)", "from": "fixed"},
            {"slice": CONTRA_SCORE, "rule": f"a score >= {SCORE_HIGH:.0%} of its scale in a negative review, or <= "
                                            f"{SCORE_LOW:.0%} in a positive one (x/10, x/5, x out of 10)",
             "from": "IMDb's own split (<= 4 negative, >= 7 positive)"},
            {"slice": CONTRA_WORDS, "rule": "more strong words of the opposite polarity than of the label's own",
             "from": "fixed word lists"},
            *({"slice": name, "rule": rule, "from": "quartiles of the word counts"} for name, rule in
              zip(LENGTH_SLICES, (f"<= {q1:.0f} words", f"{q1:.0f} < words <= {q2:.0f}",
                                  f"{q2:.0f} < words <= {q3:.0f}", f"> {q3:.0f} words"), strict=True)),
        ]


def text_thresholds(features: TextFeatures, quantile: float = 0.1) -> TextThresholds:
    """Density cut-offs at the set's upper ``quantile`` and the word-count quartiles."""
    if not 0 < quantile < 0.5:
        raise ConfigError(f"quantile must lie in (0, 0.5), got {quantile}")
    q1, q2, q3 = (float(v) for v in np.quantile(features.words, (0.25, 0.5, 0.75)))
    return TextThresholds(quantile, float(np.quantile(features.negation_per_100, 1 - quantile)),
                          float(np.quantile(features.contrast_per_100, 1 - quantile)), (q1, q2, q3))


def text_categories(features: TextFeatures, labels: np.ndarray, thresholds: TextThresholds,
                    positive_label: int = 1) -> dict[str, np.ndarray]:
    """Slice name -> boolean mask (N,); ``labels`` are the true labels (1 = positive by default)."""
    labels = np.asarray(labels)
    if labels.shape != features.words.shape:
        raise ConfigError(f"labels have shape {labels.shape}, expected {features.words.shape}")
    positive = labels == positive_label
    q1, q2, q3 = thresholds.length_quartiles
    words = features.words
    return {
        NEGATION: (features.negations > 0) & (features.negation_per_100 >= thresholds.negation_per_100),
        CONTRAST: (features.contrasts > 0) & (features.contrast_per_100 >= thresholds.contrast_per_100),
        SARCASM: features.sarcasm > 0,
        CONTRA_SCORE: np.where(positive, features.low_score, features.high_score),
        CONTRA_WORDS: np.where(positive, features.negative_words > features.positive_words,
                               features.positive_words > features.negative_words),
        LENGTH_SLICES[0]: words <= q1, LENGTH_SLICES[1]: (words > q1) & (words <= q2),
        LENGTH_SLICES[2]: (words > q2) & (words <= q3), LENGTH_SLICES[3]: words > q3,
    }
