"""Drift between a reference (training) frame and a new batch: PSI, Kolmogorov-Smirnov and chi-squared.

Two questions per column. *How much* did the distribution move? The population stability index (PSI)
answers on a fixed scale: sum over bins of (p_batch - p_ref) * ln(p_batch / p_ref), with bins from the
reference's deciles for numbers and one bin per category (plus one for "missing") otherwise. The usual
reading, from credit scoring: below 0.1 stable, 0.1-0.2 a moderate shift, above 0.2 a significant one.
*Could chance alone explain it?* The two-sample Kolmogorov-Smirnov test (numbers) and the chi-squared test
of the 2 x k contingency table (categories) give a p-value. A column is flagged when either says so:
PSI above its threshold (a shift big enough to matter) or p below alpha (a shift too big for sampling
noise). PSI alone is noisy on small batches (its expected value with no drift is about
(bins - 1) * (1/n_ref + 1/n_batch)); a p-value alone flags trivial shifts on large ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

PSI_EPS = 1e-4  # floor for an empty bin's share: ln(0) is undefined, and 1e-4 is the common choice
NUMERIC = ("Age", "Fare", "SibSp", "Parch")
CATEGORICAL = ("Pclass", "Sex", "Embarked", "Survived")


def psi_from_shares(ref: np.ndarray, cur: np.ndarray, eps: float = PSI_EPS) -> float:
    """PSI of two distributions over the same bins (each sums to 1); empty bins floored at ``eps``."""
    p, q = np.maximum(np.asarray(ref, float), eps), np.maximum(np.asarray(cur, float), eps)
    return float(np.sum((q - p) * np.log(q / p)))


def _numeric_bins(ref: pd.Series, bins: int) -> np.ndarray:
    edges = np.unique(np.quantile(ref.dropna().to_numpy(float), np.linspace(0, 1, bins + 1)))
    # Open-ended outer bins: a batch value beyond the reference's range still lands somewhere.
    return np.r_[-np.inf, edges[1:-1], np.inf] if len(edges) > 2 else np.array([-np.inf, np.inf])


def _shares_numeric(values: pd.Series, edges: np.ndarray) -> np.ndarray:
    v = values.to_numpy(float)
    missing = np.isnan(v)
    # Right-closed bins (edges[i], edges[i+1]], as pandas.cut: a discrete value equal to an edge (SibSp = 0,
    # the reference's lowest decile) falls in the bin that ends there.
    idx = np.searchsorted(edges, v[~missing], side="left") - 1
    counts = np.bincount(np.clip(idx, 0, len(edges) - 2), minlength=len(edges) - 1)
    return np.r_[counts, missing.sum()] / max(len(v), 1)


def psi_numeric(ref: pd.Series, cur: pd.Series, bins: int = 10) -> float:
    """PSI over the reference's quantile bins (duplicate edges merged) plus a missing bin.

    A column with at most ``bins`` distinct values (SibSp, Parch) is binned by value instead: its deciles
    collapse onto a couple of edges and would hide a shift between, say, 1 and 3 siblings. Values above
    the reference's 95th percentile share one bin ("3 or more siblings"): single rare values (5 and 8
    siblings) made a clean batch score PSI 0.14 through the empty-bin floor alone.
    """
    ref, cur = pd.to_numeric(ref, errors="coerce"), pd.to_numeric(cur, errors="coerce")
    if ref.nunique() <= bins:
        top = float(ref.quantile(0.95))
        return psi_categorical(ref.clip(upper=top), cur.clip(upper=top))
    edges = _numeric_bins(ref, bins)
    return psi_from_shares(_shares_numeric(ref, edges), _shares_numeric(cur, edges))


def _category_counts(ref: pd.Series, cur: pd.Series) -> tuple[np.ndarray, np.ndarray, list[str]]:
    r, c = ref.astype(object).where(ref.notna(), "<missing>"), cur.astype(object).where(cur.notna(), "<missing>")
    r, c = r.map(str), c.map(str)
    cats = sorted(set(r) | set(c))
    return (r.value_counts().reindex(cats, fill_value=0).to_numpy(),
            c.value_counts().reindex(cats, fill_value=0).to_numpy(), cats)


def psi_categorical(ref: pd.Series, cur: pd.Series) -> float:
    """PSI over the union of categories (a category new in the batch is a bin with reference share 0)."""
    r, c, _ = _category_counts(ref, cur)
    return psi_from_shares(r / max(r.sum(), 1), c / max(c.sum(), 1))


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    kind: str  # "numeric" or "categorical"
    psi: float
    test: str  # "ks" or "chi2"
    statistic: float
    p_value: float
    flagged: bool
    reasons: tuple[str, ...]


@dataclass
class DriftResult:
    columns: list[ColumnDrift]
    psi_threshold: float
    alpha: float

    @property
    def flagged(self) -> list[str]:
        return [c.column for c in self.columns if c.flagged]

    def to_dict(self) -> dict[str, Any]:
        return {"flagged": self.flagged, "psi_threshold": self.psi_threshold, "alpha": self.alpha,
                "columns": [asdict(c) for c in self.columns]}

    def lines(self) -> list[str]:
        head = f"{'column':<10} {'PSI':>7} {'test':>5} {'p-value':>9}  flagged"
        rows = [f"{c.column:<10} {c.psi:>7.3f} {c.test:>5} {c.p_value:>9.2g}  "
                + ("YES: " + "; ".join(c.reasons) if c.flagged else "-") for c in self.columns]
        return [head, *rows]


def drift_report(reference: pd.DataFrame, batch: pd.DataFrame, numeric: Sequence[str] = NUMERIC,
                 categorical: Sequence[str] = CATEGORICAL, psi_threshold: float = 0.2, alpha: float = 0.01,
                 bins: int = 10) -> DriftResult:
    """PSI plus KS (numeric) or chi-squared (categorical) per column; flagged when PSI > threshold or p < alpha."""
    from scipy.stats import chi2_contingency, ks_2samp

    rows: list[ColumnDrift] = []
    for col in numeric:
        if col not in reference or col not in batch:
            continue
        r, c = pd.to_numeric(reference[col], errors="coerce"), pd.to_numeric(batch[col], errors="coerce")
        psi = psi_numeric(r, c, bins)
        if r.notna().any() and c.notna().any():
            ks = ks_2samp(r.dropna().to_numpy(float), c.dropna().to_numpy(float))
            stat, p = float(ks.statistic), float(ks.pvalue)
        else:
            stat, p = float("nan"), 1.0
        rows.append(_column(col, "numeric", psi, "ks", stat, p, psi_threshold, alpha))
    for col in categorical:
        if col not in reference or col not in batch:
            continue
        psi = psi_categorical(reference[col], batch[col])
        rc, cc, _ = _category_counts(reference[col], batch[col])
        table = np.vstack([rc, cc])
        table = table[:, table.sum(axis=0) > 0]
        if table.shape[1] >= 2:
            res = chi2_contingency(table)
            stat, p = float(res.statistic), float(res.pvalue)
        else:
            stat, p = 0.0, 1.0
        rows.append(_column(col, "categorical", psi, "chi2", stat, p, psi_threshold, alpha))
    return DriftResult(rows, psi_threshold, alpha)


def _column(col: str, kind: str, psi: float, test: str, stat: float, p: float, psi_threshold: float,
            alpha: float) -> ColumnDrift:
    reasons = []
    if psi > psi_threshold:
        reasons.append(f"PSI {psi:.3f} > {psi_threshold:g}")
    if p < alpha:
        reasons.append(f"{test} p {p:.2g} < {alpha:g}")
    return ColumnDrift(col, kind, psi, test, stat, p, bool(reasons), tuple(reasons))
