"""One deterministic train/test split of public attack prompts, shared by everything that uses them.

The prompt-injection classifier trains only on ``train`` prompts; the red team and the held-out evaluation
attack only with ``test`` prompts, so no score is measured on text a model has seen. The split is a hash of
the normalised text (not of a file position), so it survives re-ordering, de-duplication and new releases of
the prompt sets, and the same prompt always lands on the same side whichever module loads it.
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal

Split = Literal["train", "test"]
TEST_SHARE_PER_MILLE = 250  # one prompt in four is held out


def normalise(text: str) -> str:
    """Case, runs of whitespace and surrounding space do not make a different prompt."""
    return re.sub(r"\s+", " ", text).strip().lower()


def split_of(text: str) -> Split:
    """``"test"`` for about a quarter of all prompts, ``"train"`` for the rest; stable across runs and machines."""
    digest = hashlib.sha256(normalise(text).encode("utf-8")).digest()
    return "test" if int.from_bytes(digest[:4], "big") % 1000 < TEST_SHARE_PER_MILLE else "train"
