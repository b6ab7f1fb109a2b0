"""Statistics of promotion gates: DeLong's AUC tests, the paired bootstrap, non-inferiority.

- :func:`auc_delong`: ROC AUC with DeLong's variance and interval;
- :func:`paired_delong`: the difference of two correlated AUCs measured on the same rows
  (DeLong, DeLong & Clarke-Pearson 1988), computed with the midrank algorithm of
  Sun & Xu (2014) in O(n log n) rather than over every positive/negative pair;
- :func:`paired_bootstrap`: the difference of any metric between two models on the same
  rows, resampling rows jointly (seeded; percentile interval). Metrics that are functions
  of per-row means (:data:`METRICS`: log loss, Brier, accuracy, F1, ...) are resampled
  as whole matrices of means, a callable metric row-sample by row-sample;
- :func:`non_inferior`: whether a comparison rules out a loss larger than a margin.

A comparison is always ``a - b`` (candidate minus champion).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> y = rng.integers(0, 2, 2_000)
>>> a = y + rng.normal(size=y.size)
>>> comparison = paired_delong(y, a, a)
>>> comparison.diff, comparison.p_value
(0.0, 1.0)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import norm, rankdata  # type: ignore[import-untyped]

from modelyard.errors import InvalidInputError

__all__ = [
    "METRICS",
    "AucEstimate",
    "PairedComparison",
    "RowMetric",
    "auc_delong",
    "binary_labels",
    "delong_components",
    "group_auc",
    "jackknife_diffs",
    "metric_value",
    "non_inferior",
    "paired_bootstrap",
    "paired_delong",
]

Floats = NDArray[np.float64]
Bools = NDArray[np.bool_]


class AucEstimate(NamedTuple):
    """ROC AUC with DeLong's variance and its ``1 - alpha`` interval (clipped to [0, 1])."""

    auc: float
    low: float
    high: float
    variance: float


@dataclass(frozen=True)
class PairedComparison:
    """``a - b`` of one metric measured on the same rows, with its interval and p-value.

    ``a`` and ``b`` are the two models' metric values; ``p_value`` is two-sided for
    ``diff == 0``; ``se`` the standard error of ``diff``; ``method`` "delong" or "bootstrap".
    """

    diff: float
    low: float
    high: float
    p_value: float
    se: float
    a: float = math.nan
    b: float = math.nan
    method: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able numbers (non-finite values become None)."""
        return {
            "a": _finite(self.a),
            "b": _finite(self.b),
            "diff": _finite(self.diff),
            "ci_low": _finite(self.low),
            "ci_high": _finite(self.high),
            "p_value": _finite(self.p_value),
            "se": _finite(self.se),
            "method": self.method,
        }


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


# -- inputs ------------------------------------------------------------------------------


def binary_labels(labels: ArrayLike, positive: Any = None) -> Bools:
    """Binary ``labels`` as booleans (True = the positive class).

    ``positive`` names the positive class (compared as text, so a class list read from a
    manifest matches integer or boolean labels); without it booleans are kept, 0/1 values
    map 1 to True, and two other values map the larger (sklearn's ``classes_[1]``) to True.
    """
    values = np.asarray(labels)
    if positive is not None:
        if values.dtype == bool and str(positive) in ("True", "False"):
            return values if str(positive) == "True" else ~values
        if values.dtype.kind in "iuf":
            with contextlib.suppress(TypeError, ValueError):
                return np.asarray(values == float(positive), dtype=bool)
        return np.asarray(values.astype(str) == str(positive), dtype=bool)
    if values.dtype == bool:
        return values
    distinct = np.unique(values)
    if len(distinct) <= 2 and set(distinct.tolist()) <= {0, 1}:
        return np.asarray(values == 1, dtype=bool)
    if len(distinct) == 2:
        return np.asarray(values == distinct[1], dtype=bool)
    shown = ", ".join(repr(v) for v in distinct[:5].tolist())
    raise InvalidInputError(
        f"Expected binary labels (two classes), got {len(distinct)} distinct values: {shown}",
        loc="labels",
    )


def _scores(scores: ArrayLike, rows: int, loc: str) -> Floats:
    try:
        values = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"Expected numeric scores, got {exc}", loc=loc) from None
    if values.ndim != 1 or len(values) != rows:
        raise InvalidInputError(
            f"Expected {rows} scores (one per label), got shape {values.shape}", loc=loc
        )
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise InvalidInputError(
            f"Expected finite scores, got {values[bad[0]]} at row {int(bad[0])} "
            f"({bad.size} non-finite)",
            loc=loc,
        )
    return values


# -- DeLong ------------------------------------------------------------------------------


def delong_components(y: Bools, scores: Floats) -> tuple[Floats, Floats, Floats]:
    """DeLong's structural components of one or more score vectors, by midranks.

    ``scores`` is ``(k, n)`` (or ``(n,)``); returns ``(auc (k,), v10 (k, m), v01 (k, n0))``
    where ``v10[i]`` is, per positive, the share of negatives it outranks (ties count a
    half) and ``v01[j]``, per negative, the share of positives that outrank it
    (Sun & Xu 2014: midranks among all rows minus midranks within the class).
    """
    s = np.atleast_2d(scores)
    positives, negatives = s[:, y], s[:, ~y]
    m, n = positives.shape[1], negatives.shape[1]
    ranks_all = rankdata(np.concatenate([positives, negatives], axis=1), axis=1)
    ranks_pos = rankdata(positives, axis=1)
    ranks_neg = rankdata(negatives, axis=1)
    v10 = (ranks_all[:, :m] - ranks_pos) / n
    v01 = 1.0 - (ranks_all[:, m:] - ranks_neg) / m
    return v10.mean(axis=1), v10, v01


def _delong_covariance(v10: Floats, v01: Floats) -> Floats:
    m, n = v10.shape[1], v01.shape[1]
    k = v10.shape[0]
    s10 = np.atleast_2d(np.cov(v10, ddof=1)) if m > 1 else np.zeros((k, k))
    s01 = np.atleast_2d(np.cov(v01, ddof=1)) if n > 1 else np.zeros((k, k))
    return np.asarray(s10 / m + s01 / n, dtype=np.float64)


def auc_delong(labels: ArrayLike, scores: ArrayLike, *, alpha: float = 0.05) -> AucEstimate:
    """ROC AUC of binary ``labels`` with DeLong's variance and ``1 - alpha`` interval.

    All NaN when one class is absent (the AUC is undefined).
    """
    y = binary_labels(labels)
    s = _scores(scores, len(y), "scores")
    if y.all() or not y.any():
        return AucEstimate(math.nan, math.nan, math.nan, math.nan)
    auc, v10, v01 = delong_components(y, s)
    variance = float(_delong_covariance(v10, v01)[0, 0])
    half = float(norm.ppf(1 - alpha / 2)) * math.sqrt(max(variance, 0.0))
    value = float(auc[0])
    return AucEstimate(value, max(0.0, value - half), min(1.0, value + half), variance)


def paired_delong(
    labels: ArrayLike, scores_a: ArrayLike, scores_b: ArrayLike, *, alpha: float = 0.05
) -> PairedComparison:
    """DeLong's test of ``AUC(a) - AUC(b)`` for two models scored on the same rows.

    The variance of the difference uses the covariance of the two AUCs' structural
    components, so correlated models (the usual case: a retrained champion) get the
    narrower, correct interval. All NaN when one class is absent.
    """
    y = binary_labels(labels)
    a = _scores(scores_a, len(y), "scores_a")
    b = _scores(scores_b, len(y), "scores_b")
    if y.all() or not y.any():
        nan = math.nan
        return PairedComparison(nan, nan, nan, nan, nan, method="delong")
    aucs, v10, v01 = delong_components(y, np.vstack([a, b]))
    cov = _delong_covariance(v10, v01)
    diff = float(aucs[0] - aucs[1])
    se = math.sqrt(max(float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]), 0.0))
    p_value = (1.0 if diff == 0.0 else 0.0) if se == 0.0 else float(2 * norm.sf(abs(diff) / se))
    half = float(norm.ppf(1 - alpha / 2)) * se
    return PairedComparison(
        diff, diff - half, diff + half, p_value, se, float(aucs[0]), float(aucs[1]), "delong"
    )


def group_auc(
    y: Bools,
    scores: Floats,
    codes: NDArray[np.intp],
    groups: int,
    *,
    score_order: NDArray[np.intp] | None = None,
) -> Floats:
    """ROC AUC per group (``codes`` in ``[0, groups)``) from one sort: midranks per group.

    ``score_order`` (``np.argsort(scores, kind="stable")``) may be passed to share the
    score sort between groupings; each grouping then costs one stable (radix) sort of
    its codes. NaN for a group without both classes.
    """
    if score_order is None:
        score_order = np.argsort(scores, kind="stable")
    by_score = codes[score_order]
    small = by_score.astype(np.int16) if groups < 2**15 else by_score
    order = score_order[np.argsort(small, kind="stable")]
    c, s, positive = codes[order], scores[order], y[order]
    rows = len(c)
    if rows == 0:
        return np.full(groups, math.nan)
    counts = np.bincount(c, minlength=groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    # a run of equal (group, score): its rows share the midrank within the group
    new_run = np.ones(rows, dtype=bool)
    new_run[1:] = (c[1:] != c[:-1]) | (s[1:] != s[:-1])
    run_id = np.cumsum(new_run) - 1
    run_first = np.flatnonzero(new_run)
    run_last = np.concatenate([run_first[1:], [rows]]) - 1
    position = np.arange(rows) - starts[c] + 1  # 1-based rank within the group
    midrank = ((position[run_first] + position[run_last]) / 2.0)[run_id]
    m = np.bincount(c, weights=positive, minlength=groups)
    n = counts - m
    rank_sum = np.bincount(c, weights=np.where(positive, midrank, 0.0), minlength=groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sum - m * (m + 1) / 2.0) / (m * n)
    return np.where((m > 0) & (n > 0), auc, math.nan)


# -- metrics as functions of per-row means -----------------------------------------------


@dataclass(frozen=True)
class RowMetric:
    """A metric that is a function of means of per-row values.

    ``rows(y, scores)`` gives a ``(k, n)`` matrix of per-row values; ``combine`` maps
    their ``(k, ...)`` means to the metric. Binary metrics read ``y`` as booleans and
    ``scores`` as the positive class's probability (the class is predicted above 0.5,
    as ``predict`` does); regression metrics read both as numbers.
    """

    name: str
    higher_is_better: bool
    binary: bool
    rows: Callable[[Floats, Floats], Floats]
    combine: Callable[[Floats], Floats]


def _ratio(numerator: Floats, denominator: Floats) -> Floats:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), 0.0)


def _confusion(y: Floats, p: Floats) -> Floats:
    predicted = (p > 0.5).astype(np.float64)
    return np.vstack([predicted * y, predicted * (1 - y), (1 - predicted) * y])


_EPS = 1e-15

#: metrics the bootstrap resamples as matrices and the slice gate groups by ``bincount``
METRICS: Mapping[str, RowMetric] = {
    metric.name: metric
    for metric in (
        RowMetric(
            "log_loss",
            False,
            True,
            lambda y, p: (
                -np.vstack(
                    [y * np.log(np.clip(p, _EPS, 1)) + (1 - y) * np.log(np.clip(1 - p, _EPS, 1))]
                )
            ),
            lambda c: c[0],
        ),
        RowMetric("brier", False, True, lambda y, p: np.vstack([(p - y) ** 2]), lambda c: c[0]),
        RowMetric(
            "accuracy",
            True,
            True,
            lambda y, p: np.vstack([((p > 0.5) == (y > 0.5)).astype(np.float64)]),
            lambda c: c[0],
        ),
        RowMetric("f1", True, True, _confusion, lambda c: _ratio(2 * c[0], 2 * c[0] + c[1] + c[2])),
        RowMetric("precision", True, True, _confusion, lambda c: _ratio(c[0], c[0] + c[1])),
        RowMetric("recall", True, True, _confusion, lambda c: _ratio(c[0], c[0] + c[2])),
        RowMetric("mae", False, False, lambda y, p: np.vstack([np.abs(p - y)]), lambda c: c[0]),
        RowMetric("mse", False, False, lambda y, p: np.vstack([(p - y) ** 2]), lambda c: c[0]),
        RowMetric(
            "rmse", False, False, lambda y, p: np.vstack([(p - y) ** 2]), lambda c: np.sqrt(c[0])
        ),
        RowMetric(
            "r2",
            True,
            False,
            lambda y, p: np.vstack([(p - y) ** 2, y, y * y]),
            lambda c: 1 - _ratio(c[0], c[2] - c[1] ** 2),
        ),
    )
}


def metric_value(name: str, y: ArrayLike, scores: ArrayLike) -> float:
    """One metric of :data:`METRICS` or ``auc`` on all rows."""
    if name == "auc":
        return auc_delong(y, scores).auc
    metric = _metric(name)
    values = metric.rows(np.asarray(y, dtype=np.float64), np.asarray(scores, dtype=np.float64))
    return float(metric.combine(values.mean(axis=1)))


def _metric(name: str) -> RowMetric:
    metric = METRICS.get(name)
    if metric is None:
        raise InvalidInputError(
            f"Expected a metric among {['auc', *METRICS]}, got {name!r}", loc="metric"
        )
    return metric


# -- the paired bootstrap ----------------------------------------------------------------

_CELLS_PER_CHUNK = 4_000_000  # resampled (replicate, row) cells held at once


def paired_bootstrap(
    labels: ArrayLike,
    scores_a: ArrayLike,
    scores_b: ArrayLike,
    metric_fn: str | Callable[[Any, Any], float],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    interval: str = "percentile",
) -> PairedComparison:
    """Bootstrap ``metric(a) - metric(b)``, resampling the same rows for both models.

    ``metric_fn`` is a name in :data:`METRICS` (resampled as whole matrices of per-row
    values) or any ``f(labels, scores) -> float`` (called per replicate; replicates where
    it is not finite are dropped). ``interval`` is "percentile" (the replicates'
    quantiles) or "bca" (bias-corrected and accelerated, Efron 1987, with the jackknife
    of a named metric computed in one pass); ``p_value`` is twice the smaller share of
    replicates on either side of 0.
    """
    if interval not in ("percentile", "bca"):
        raise InvalidInputError(
            f"Expected interval 'percentile' or 'bca', got {interval!r}", loc="interval"
        )
    if interval == "bca" and not (isinstance(metric_fn, str) and metric_fn in METRICS):
        raise InvalidInputError(
            f"Expected a metric among {list(METRICS)} for a BCa interval, got {metric_fn!r}",
            loc="metric_fn",
        )
    y_raw = np.asarray(labels)
    rows = len(y_raw)
    a = _scores(scores_a, rows, "scores_a")
    b = _scores(scores_b, rows, "scores_b")
    if n_boot < 2:
        raise InvalidInputError(f"Expected n_boot >= 2, got {n_boot}", loc="n_boot")
    if not 0 < alpha < 1:
        raise InvalidInputError(f"Expected 0 < alpha < 1, got {alpha}", loc="alpha")
    if rows == 0:
        nan = math.nan
        return PairedComparison(nan, nan, nan, nan, nan, method="bootstrap")
    rng = np.random.default_rng(seed)
    if metric_fn == "auc":
        metric_fn = _auc_value
    if isinstance(metric_fn, str):
        metric = _metric(metric_fn)
        y = binary_labels(y_raw).astype(np.float64) if metric.binary else _numbers(y_raw)
        per_row = np.vstack([metric.rows(y, a), metric.rows(y, b)])  # (2k, n)
        k = per_row.shape[0] // 2
        value_a = float(metric.combine(per_row[:k].mean(axis=1)))
        value_b = float(metric.combine(per_row[k:].mean(axis=1)))
        chunk = max(1, _CELLS_PER_CHUNK // rows)
        diffs = []
        for start in range(0, n_boot, chunk):
            size = min(chunk, n_boot - start)
            index = rng.integers(0, rows, size=(size, rows), dtype=_index_type(rows))
            # one flat gather per row-value vector (a 2-d fancy index is many times slower)
            means = np.vstack([values[index].mean(axis=1) for values in per_row])  # (2k, size)
            diffs.append(metric.combine(means[:k]) - metric.combine(means[k:]))
        replicates = np.concatenate(diffs)
    else:
        value_a, value_b = float(metric_fn(y_raw, a)), float(metric_fn(y_raw, b))
        replicates = np.empty(n_boot)
        for i in range(n_boot):
            index = rng.integers(0, rows, size=rows, dtype=_index_type(rows))
            replicates[i] = float(metric_fn(y_raw[index], a[index])) - float(
                metric_fn(y_raw[index], b[index])
            )
    replicates = replicates[np.isfinite(replicates)]
    diff = value_a - value_b
    if replicates.size < 2:
        return PairedComparison(diff, math.nan, math.nan, math.nan, math.nan, value_a, value_b)
    levels = np.array([alpha / 2, 1 - alpha / 2])
    if interval == "bca":
        levels = _bca_levels(replicates, diff, jackknife_diffs(str(metric_fn), y_raw, a, b), alpha)
    low, high = np.quantile(replicates, levels)
    below, above = float(np.mean(replicates <= 0)), float(np.mean(replicates >= 0))
    return PairedComparison(
        diff,
        float(low),
        float(high),
        min(1.0, 2 * min(below, above)),
        float(np.std(replicates, ddof=1)),
        value_a,
        value_b,
        "bootstrap",
    )


def jackknife_diffs(metric: str, labels: ArrayLike, a: Floats, b: Floats) -> Floats:
    """``metric(a) - metric(b)`` with each row left out in turn, from the per-row values."""
    row_metric = _metric(metric)
    values = np.asarray(labels)
    y = binary_labels(values).astype(np.float64) if row_metric.binary else _numbers(values)
    per_row = np.vstack([row_metric.rows(y, a), row_metric.rows(y, b)])
    k, n = per_row.shape[0] // 2, per_row.shape[1]
    if n < 2:
        return np.zeros(n)
    left_out = (per_row.sum(axis=1, keepdims=True) - per_row) / (n - 1)
    return np.asarray(row_metric.combine(left_out[:k]) - row_metric.combine(left_out[k:]))


def _bca_levels(replicates: Floats, estimate: float, jackknife: Floats, alpha: float) -> Floats:
    """The quantile levels of the BCa interval: bias ``z0`` and acceleration ``a``."""
    count = len(replicates)
    below = (np.sum(replicates < estimate) + 0.5 * np.sum(replicates == estimate)) / count
    z0 = float(norm.ppf(np.clip(below, 1 / (count + 1), count / (count + 1))))
    spread = jackknife.mean() - jackknife
    denominator = 6.0 * float(np.sum(spread**2)) ** 1.5
    acceleration = float(np.sum(spread**3)) / denominator if denominator > 0 else 0.0
    z = norm.ppf([alpha / 2, 1 - alpha / 2])
    return np.asarray(norm.cdf(z0 + (z0 + z) / (1 - acceleration * (z0 + z))), dtype=np.float64)


def _index_type(rows: int) -> type[np.int32] | type[np.int64]:
    """Row indices drawn as int32 when they fit (half the memory, faster to draw)."""
    return np.int32 if rows < 2**31 // 4096 else np.int64


def _auc_value(labels: Any, scores: Any) -> float:
    return auc_delong(labels, scores).auc


def _numbers(values: NDArray[Any]) -> Floats:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"Expected numeric labels for a regression metric, got {values.dtype}", loc="labels"
        ) from None


# -- the decision ------------------------------------------------------------------------


def non_inferior(comparison: PairedComparison, margin: float, higher_is_better: bool) -> bool:
    """Whether the interval of ``a - b`` rules out ``a`` being worse than ``b`` by ``margin``.

    Higher is better: the lower bound must exceed ``-margin``; lower is better (losses):
    the upper bound must stay under ``margin``. An undefined interval is not a pass.
    """
    if margin < 0 or not math.isfinite(margin):
        raise InvalidInputError(f"Expected a margin >= 0, got {margin}", loc="margin")
    if higher_is_better:
        return math.isfinite(comparison.low) and comparison.low > -margin
    return math.isfinite(comparison.high) and comparison.high < margin
