"""Model performance per window: realised once labels mature, estimated before they do.

Realised metrics (only for windows whose share of labelled rows reached
``min_label_coverage``), each with a 95% confidence interval:

- classifiers: ROC AUC (binary; DeLong's variance, computed with midranks in
  O(n log n)), accuracy of the arg-max class (Wilson interval), log loss and Brier
  score (normal intervals over the per-row losses);
- regressors: MAE (normal interval) and RMSE (the MSE's normal interval, square-rooted).

Estimated metrics, for classifiers, from the scores alone (confidence-based performance
estimation, as NannyML's CBPE): if the scores are calibrated, a row with score ``p`` is
a positive with probability ``p``, so the expected confusion matrix at any threshold,
and the ROC curve through all of them, follow from the scores; the expected accuracy of
the arg-max class is the mean of the largest class probability. They are labelled
estimates, and once labels land the realised value is stored beside them with the
error of the estimate. ``calibration_error`` (expected calibration error over 10 equal
-width bins) tells whether the scores were calibrated enough to trust the estimate.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> p = rng.uniform(size=20_000)
>>> y = (rng.uniform(size=p.size) < p).astype(int)
>>> realised = roc_auc(y, p)
>>> realised.low < estimated_auc(p) < realised.high  # calibrated scores: the estimate holds
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.stats import norm  # type: ignore[import-untyped]

from modelyard.errors import InvalidInputError
from modelyard.gates.statistics import auc_delong

__all__ = [
    "Interval",
    "accuracy",
    "calibration_error",
    "classification_window",
    "estimated_accuracy",
    "estimated_auc",
    "regression_window",
    "roc_auc",
]

Z95 = float(norm.ppf(0.975))
Floats = NDArray[np.float64]


@dataclass(frozen=True)
class Interval:
    """A metric's value and its 95% confidence interval."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float | None]:
        return {
            k: _finite(v)
            for k, v in (("value", self.value), ("low", self.low), ("high", self.high))
        }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def roc_auc(labels: NDArray[Any], scores: Floats) -> Interval:
    """ROC AUC of binary ``labels`` (1 = positive) with DeLong's 95% interval.

    NaN when one class is absent or a score is not finite. DeLong's variance comes from
    :func:`modelyard.gates.statistics.auc_delong` (midranks, O(n log n)).
    """
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(s).all():
        return Interval(math.nan, math.nan, math.nan)
    estimate = auc_delong(y, s)
    return Interval(estimate.auc, estimate.low, estimate.high)


def accuracy(correct: NDArray[np.bool_]) -> Interval:
    """Share of correct rows with Wilson's 95% interval."""
    n = len(correct)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan)
    p = float(np.mean(correct))
    denominator = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denominator
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denominator
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def _mean_interval(values: Floats) -> Interval:
    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan)
    mean = float(np.mean(values))
    se = float(np.std(values, ddof=1)) / math.sqrt(n) if n > 1 else math.nan
    return Interval(mean, mean - Z95 * se, mean + Z95 * se)


def estimated_auc(scores: Floats) -> float:
    """The ROC AUC expected if ``scores`` are calibrated probabilities of the positive class.

    At each threshold the expected true positives are the sum of the scores above it and
    the expected false positives the sum of their complements; ties form one step.
    """
    p = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    p = p[np.isfinite(p)]
    if p.size == 0 or p.sum() == 0 or (1 - p).sum() == 0:
        return math.nan
    order = np.argsort(-p, kind="stable")
    sorted_p = p[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(sorted_p)), sorted_p.size - 1]
    tp = np.cumsum(sorted_p)[last_of_tie]
    fp = np.cumsum(1.0 - sorted_p)[last_of_tie]
    tpr = np.r_[0.0, tp / tp[-1]]
    fpr = np.r_[0.0, fp / fp[-1]]
    return float(np.trapezoid(tpr, fpr))


def estimated_accuracy(probabilities: Floats) -> float:
    """The accuracy expected of the arg-max class if the probabilities are calibrated."""
    matrix = np.asarray(probabilities, dtype=np.float64)
    if matrix.size == 0:
        return math.nan
    return float(np.mean(np.max(matrix, axis=1)))


def calibration_error(labels: NDArray[Any], scores: Floats, bins: int = 10) -> float:
    """Expected calibration error of positive-class ``scores`` over equal-width bins."""
    y = np.asarray(labels).astype(np.float64)
    p = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    if p.size == 0:
        return math.nan
    index = np.minimum((p * bins).astype(int), bins - 1)
    counts = np.bincount(index, minlength=bins)
    gap = np.abs(np.bincount(index, y, bins) - np.bincount(index, p, bins))
    return float(gap.sum() / counts.sum())


def _window(
    rows: int, labelled: int, min_label_coverage: float, estimated: dict[str, float | None]
) -> dict[str, Any]:
    """A window's summary before its metrics: coverage and whether its labels matured."""
    coverage = labelled / rows if rows else 0.0
    return {
        "rows": rows,
        "labelled": labelled,
        "coverage": coverage,
        "matured": bool(rows) and coverage >= min_label_coverage,
        "metrics": {},
        "estimated": estimated,
        "findings": [],
    }


def classification_window(
    classes: Sequence[str],
    probabilities: Floats,
    labels: Sequence[str | None] | NDArray[Any],
    *,
    min_label_coverage: float,
) -> dict[str, Any]:
    """Realised (when matured) and estimated metrics of one window of a classifier.

    ``probabilities`` has one column per class in ``classes`` order; ``labels`` holds
    each row's label as text (``str(label)``) or None when none arrived.
    """
    matrix = np.asarray(probabilities, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != len(classes):
        raise InvalidInputError(
            f"Expected one probability column per class ({len(classes)}), got shape {matrix.shape}",
            loc="probabilities",
        )
    rows = matrix.shape[0]
    text = np.array([None if v is None else str(v) for v in labels], dtype=object)
    known = np.array([v is not None for v in text], dtype=bool)
    unknown_classes = sorted({str(v) for v in text[known]} - set(classes))
    binary = len(classes) == 2
    estimated: dict[str, float | None] = {"accuracy": _finite(estimated_accuracy(matrix))}
    if binary:
        estimated["auc"] = _finite(estimated_auc(matrix[:, 1]))
        estimated["positive_rate"] = _finite(float(np.mean(matrix[:, 1]))) if rows else None
    result = _window(rows, int(known.sum()), min_label_coverage, estimated)
    if unknown_classes:
        result["findings"].append(
            f"labels that are not classes of the model were ignored: {unknown_classes[:5]}"
        )
    if not result["matured"]:
        return result
    index = {c: i for i, c in enumerate(classes)}
    usable = known & np.array([v in index for v in text], dtype=bool)
    y = np.array([index[v] for v in text[usable]], dtype=np.int64)
    p = matrix[usable]
    metrics: dict[str, Any] = {
        "accuracy": accuracy(np.argmax(p, axis=1) == y).to_dict(),
        "log_loss": _mean_interval(-np.log(np.clip(p[np.arange(len(y)), y], 1e-15, 1.0))).to_dict(),
    }
    if binary:
        metrics["auc"] = roc_auc(y == 1, p[:, 1]).to_dict()
        metrics["brier"] = _mean_interval((p[:, 1] - (y == 1)) ** 2).to_dict()
        metrics["positive_rate"] = accuracy(y == 1).to_dict()
        result["calibration_error"] = _finite(calibration_error(y == 1, p[:, 1]))
    result["metrics"] = metrics
    result["estimate_error"] = {
        name: (None if value is None or metrics.get(name, {}).get("value") is None
               else value - metrics[name]["value"])
        for name, value in estimated.items()
        if name in metrics
    }  # fmt: skip
    return result


def regression_window(
    predictions: Floats,
    labels: Sequence[Any] | NDArray[Any],
    *,
    min_label_coverage: float,
) -> dict[str, Any]:
    """Realised MAE and RMSE of one window of a regressor (no estimate without labels)."""
    predicted = np.asarray(predictions, dtype=np.float64)
    values = np.array([_number(v) for v in labels], dtype=np.float64)
    known = np.isfinite(values)
    rows = len(predicted)
    result = _window(rows, int(known.sum()), min_label_coverage, {})
    if not result["matured"]:
        return result
    errors = predicted[known] - values[known]
    mse = _mean_interval(errors**2)
    result["metrics"] = {
        "mae": _mean_interval(np.abs(errors)).to_dict(),
        "rmse": Interval(
            math.sqrt(mse.value), math.sqrt(max(0.0, mse.low)), math.sqrt(max(0.0, mse.high))
        ).to_dict(),
    }
    return result


def _number(value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def metric_value(summary: Mapping[str, Any], name: str) -> float | None:
    """A realised (``auc``) or estimated (``estimated_auc``) value from a window summary."""
    if name.startswith("estimated_"):
        value = summary.get("estimated", {}).get(name.removeprefix("estimated_"))
        return None if value is None else float(value)
    metric = summary.get("metrics", {}).get(name)
    return None if not metric or metric.get("value") is None else float(metric["value"])
