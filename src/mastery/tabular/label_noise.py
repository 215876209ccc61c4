"""Flipped labels: the fault a schema cannot see, caught (sometimes) by a model's disagreement.

A flipped Survived is still 0 or 1, so every schema check passes. What changes is agreement with the
features: a model trained on trusted data is confidently wrong about a flipped row more often than about
a clean one. The check counts *suspect* rows, those where the model gives the recorded label a
probability below ``1 - confidence`` (it is at least ``confidence`` sure of the other label), and asks
with a one-sided binomial test whether the batch has more suspects than the reference data has when
each row is scored out of fold (the rate of honest surprises: a third-class woman who died).

Its power is limited and depends on the batch size: a flip only becomes a suspect when the model was
confident about that passenger, so at a 5% flip rate on 180 rows the excess is a handful of rows and
may not reach significance. A flip the model was unsure about is invisible to it; those show up only
as a drop in accuracy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class LabelCheck:
    suspects: int
    rows: int
    rate: float
    baseline_rate: float
    p_value: float
    alpha: float
    suspect_index: tuple[int, ...]

    @property
    def alarm(self) -> bool:
        return self.p_value < self.alpha

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "alarm": self.alarm, "suspect_index": list(self.suspect_index)}


def _model(c: float) -> Any:
    from sklearn.linear_model import LogisticRegression

    from mastery.tabular import titanic

    return titanic.make_model(titanic.build_preprocessor(), LogisticRegression(C=c, max_iter=1000))


def suspects(proba_survived: np.ndarray, labels: np.ndarray, confidence: float) -> np.ndarray:
    """Boolean mask: the model gives the recorded label probability below ``1 - confidence``."""
    p_label = np.where(np.asarray(labels) == 1, proba_survived, 1.0 - np.asarray(proba_survived))
    return p_label < 1.0 - confidence


def label_check(reference: pd.DataFrame, batch: pd.DataFrame, confidence: float = 0.8, alpha: float = 0.01,
                folds: int = 5, seed: int = 0, c: float = 1.0) -> LabelCheck:
    """Suspect-label rate of ``batch`` vs the reference's out-of-fold rate (one-sided binomial test)."""
    from scipy.stats import binomtest
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from mastery.tabular import titanic

    x_ref, y_ref = titanic.split_xy(reference)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    oof = cross_val_predict(_model(c), x_ref, y_ref, cv=cv, method="predict_proba", n_jobs=1)[:, 1]
    baseline = float(suspects(oof, y_ref, confidence).mean())
    x_b, y_b = titanic.split_xy(batch)
    proba = _model(c).fit(x_ref, y_ref).predict_proba(x_b)[:, 1]
    mask = suspects(proba, y_b, confidence)
    k, n = int(mask.sum()), len(y_b)
    p = float(binomtest(k, n, max(baseline, 1e-6), alternative="greater").pvalue) if n else 1.0
    return LabelCheck(k, n, k / max(n, 1), baseline, p, alpha, tuple(int(i) for i in batch.index[mask]))
