"""The domain classifier: can a model tell the reference rows from the window's?

Per-column tests miss a change in how columns move together (a correlation that flips,
with every marginal unchanged). A gradient-boosted classifier trained to separate the
two samples does not: an AUC near 0.5 means no difference it can find, well above 0.5 a
shift, whichever columns carry it.

At most ``max_rows // 2`` rows are drawn from each side; 30% of them, stratified, are held
out. Categories are encoded as ordinal codes (shared between the two sides), numbers are
used as they are (missing values are handled by the model). The AUC's confidence
interval uses the Hanley-McNeil (1982) standard error, which needs no resampling; the
importances are permutation importances (drop in AUC) on the held-out rows, three
repeats. ``drifted`` is True when the interval's lower end is above 0.5 and the AUC is
at least ``min_auc`` (0.55 by default), so a huge sample does not flag a negligible edge.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> same = domain_classifier({"x": rng.normal(size=2000)}, {"x": rng.normal(size=2000)})
>>> same.drifted
False
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from modelyard.errors import InvalidInputError
from modelyard.monitoring.frames import column_kind, read_frame, read_numeric

__all__ = ["DomainClassifierResult", "domain_classifier"]


@dataclass(frozen=True, kw_only=True)
class DomainClassifierResult:
    """The held-out AUC of telling reference from window, with its interval."""

    auc: float
    ci_low: float
    ci_high: float
    n_reference: int
    """Reference rows used (after subsampling)."""
    n_current: int
    importances: dict[str, float] = field(default_factory=dict)
    """Feature -> mean drop in held-out AUC when the feature is shuffled."""
    drifted: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-able builtins."""
        return {
            "auc": self.auc,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "importances": dict(self.importances),
            "drifted": self.drifted,
        }


def hanley_mcneil(auc: float, n_positive: int, n_negative: int) -> float:
    """The Hanley-McNeil standard error of an AUC.

    >>> round(hanley_mcneil(0.5, 100, 100), 4)
    0.0409
    """
    q1 = auc / (2.0 - auc)
    q2 = 2.0 * auc * auc / (1.0 + auc)
    variance = (
        auc * (1.0 - auc)
        + (n_positive - 1) * (q1 - auc * auc)
        + (n_negative - 1) * (q2 - auc * auc)
    ) / (n_positive * n_negative)
    return math.sqrt(max(variance, 0.0))


def domain_classifier(
    reference: Any,
    current: Any,
    *,
    max_rows: int = 20_000,
    seed: int = 0,
    max_iter: int = 30,
    confidence: float = 0.95,
    min_auc: float = 0.55,
) -> DomainClassifierResult:
    """Train a classifier to tell ``current`` rows from ``reference`` rows; see the module."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    ref_frame, cur_frame = read_frame(reference, "reference"), read_frame(current, "current")
    names = [name for name in ref_frame.columns if name in cur_frame.columns]
    if not names or ref_frame.n_rows < 10 or cur_frame.n_rows < 10:
        raise InvalidInputError(
            "Expected at least 10 rows on each side and a column in common, got "
            f"{ref_frame.n_rows} and {cur_frame.n_rows} rows, {len(names)} common columns",
            loc="current",
        )
    rng = np.random.default_rng(seed)
    ref_rows = _subsample(rng, ref_frame.n_rows, max_rows // 2)
    cur_rows = _subsample(rng, cur_frame.n_rows, max_rows // 2)
    features = np.column_stack(
        [
            _encode(name, ref_frame.columns[name], cur_frame.columns[name], ref_rows, cur_rows)
            for name in names
        ]
    )
    labels = np.concatenate([np.zeros(ref_rows.size), np.ones(cur_rows.size)])
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=0.3, stratify=labels, random_state=seed
    )
    model = HistGradientBoostingClassifier(
        max_iter=max_iter, early_stopping=False, random_state=seed
    ).fit(x_train, y_train)
    auc = float(roc_auc_score(y_test, model.predict_proba(x_test)[:, 1]))
    n_pos, n_neg = int(y_test.sum()), int(y_test.size - y_test.sum())
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    margin = z * hanley_mcneil(auc, n_pos, n_neg)
    shuffled = permutation_importance(
        model, x_test, y_test, scoring="roc_auc", n_repeats=3, random_state=seed
    )
    importances = {
        name: float(value) for name, value in zip(names, shuffled.importances_mean, strict=True)
    }
    low, high = max(0.0, auc - margin), min(1.0, auc + margin)
    return DomainClassifierResult(
        auc=auc,
        ci_low=low,
        ci_high=high,
        n_reference=int(ref_rows.size),
        n_current=int(cur_rows.size),
        importances=importances,
        drifted=bool(low > 0.5 and auc >= min_auc),
    )


def _subsample(rng: np.random.Generator, n: int, limit: int) -> NDArray[np.intp]:
    if n <= limit:
        return np.arange(n)
    return np.sort(rng.choice(n, size=limit, replace=False))


def _encode(
    name: str,
    reference: pd.Series,
    current: pd.Series,
    ref_rows: NDArray[np.intp],
    cur_rows: NDArray[np.intp],
) -> NDArray[np.float64]:
    """One feature for both sides: numbers as float64, categories as shared ordinal codes."""
    if column_kind(name, reference) == "numeric":
        return np.concatenate(
            [
                read_numeric(name, reference).values[ref_rows],
                read_numeric(name, current).values[cur_rows],
            ]
        )
    both = pd.concat(
        [reference.iloc[ref_rows].astype(object), current.iloc[cur_rows].astype(object)],
        ignore_index=True,
    )
    missing = both.isna().to_numpy()
    codes, _ = pd.factorize(both.map(str, na_action="ignore"))
    encoded = codes.astype(np.float64)
    encoded[missing] = np.nan
    return encoded
