"""Metric gates: one metric of the candidate on the evaluation rows against a threshold.

Binary classification: ``auc``, ``log_loss``, ``brier``, ``accuracy``, ``f1``,
``precision``, ``recall`` (the positive class is the model's second class, predicted
when its probability is above 0.5, as ``predict`` does); regression: ``rmse``, ``mae``,
``r2``. Values come from ``sklearn.metrics``; the interval of AUC is DeLong's
(``gates.statistics``), of the others a seeded percentile bootstrap over the rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn import metrics as skm

from modelyard.errors import InvalidInputError, did_you_mean
from modelyard.gates.base import GateContext, GateResult
from modelyard.gates.statistics import METRICS, auc_delong

__all__ = [
    "BINARY_METRICS",
    "HIGHER_IS_BETTER",
    "METRIC_NAMES",
    "REGRESSION_METRICS",
    "MetricGate",
    "compute_metric",
    "target",
]


def _binary(fn: Callable[..., Any], *, threshold: bool = False) -> Callable[..., float]:
    def compute(y: np.ndarray, s: np.ndarray) -> float:
        if threshold:
            return float(fn(y, s > 0.5, zero_division=0.0))
        return float(fn(y, s))

    return compute


BINARY_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "auc": _binary(skm.roc_auc_score),
    "log_loss": lambda y, s: float(skm.log_loss(y, np.clip(s, 0.0, 1.0), labels=[False, True])),
    "brier": _binary(skm.brier_score_loss),
    "accuracy": lambda y, s: float(skm.accuracy_score(y, s > 0.5)),
    "f1": _binary(skm.f1_score, threshold=True),
    "precision": _binary(skm.precision_score, threshold=True),
    "recall": _binary(skm.recall_score, threshold=True),
}
REGRESSION_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "rmse": lambda y, s: float(math.sqrt(skm.mean_squared_error(y, s))),
    "mae": lambda y, s: float(skm.mean_absolute_error(y, s)),
    "r2": lambda y, s: float(skm.r2_score(y, s)),
}
METRIC_NAMES = (*BINARY_METRICS, *REGRESSION_METRICS)
_CELLS_PER_CHUNK = 4_000_000  # resampled (replicate, row) cells held at once
#: metrics where more is better (the others are losses)
HIGHER_IS_BETTER = frozenset({"auc", "accuracy", "f1", "precision", "recall", "r2"})


def check_metric(name: Any, loc: str) -> str:
    """``name`` if it is a known metric, else InvalidInputError naming ``loc``."""
    if not isinstance(name, str) or name not in METRIC_NAMES:
        raise InvalidInputError(
            f"Expected a metric name, got {name!r}."
            + did_you_mean(str(name), list(METRIC_NAMES), "metrics"),
            loc=loc,
        )
    return name


def compute_metric(name: str, y: np.ndarray, scores: np.ndarray) -> float:
    """``name`` of ``scores`` against ``y`` (booleans for a binary metric)."""
    fn = BINARY_METRICS.get(name) or REGRESSION_METRICS[name]
    return fn(y, scores)


def target(ctx: GateContext, metric: str) -> np.ndarray:
    """The label column as the metric needs it: booleans (positive class) or floats.

    Raises InvalidInputError naming the label when it does not fit the model: a value
    that is not one of a binary classifier's classes, or a non-number for regression.
    """
    labels = ctx.labels()
    if metric in BINARY_METRICS:
        classes = ctx.candidate_model.manifest.classes
        if ctx.candidate_model.manifest.task != "classification" or not classes:
            raise InvalidInputError(
                f"Expected a binary classifier for the metric {metric!r}, got a "
                f"{ctx.candidate_model.manifest.task} model",
                loc="metric",
            )
        if len(classes) != 2:
            raise InvalidInputError(
                f"Expected a binary classifier for {metric!r}, got {len(classes)} classes",
                loc="metric",
            )
        text = np.asarray([str(v) for v in labels])
        unknown = sorted(set(text.tolist()) - set(classes))
        if unknown:
            raise InvalidInputError(
                f"Expected label values among the model's classes {classes}, got {unknown[:5]}",
                loc=ctx.label,
            )
        return np.asarray(text == classes[1])
    try:
        values = np.asarray(labels, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"Expected numeric labels for {metric!r}, got {labels.dtype}", loc=ctx.label
        ) from exc
    if not np.isfinite(values).all():
        raise InvalidInputError(
            f"Expected finite labels for {metric!r}, got missing or infinite values",
            loc=ctx.label,
        )
    return values


def bootstrap_ci(
    name: str,
    y: np.ndarray,
    scores: np.ndarray,
    *,
    n_boot: int,
    alpha: float,
    seed: int,
) -> tuple[float, float] | None:
    """A seeded percentile bootstrap interval of ``name`` over the rows (None if undefined).

    Every metric here is a function of per-row means (``statistics.METRICS``), so each
    replicate is a mean over resampled columns of one matrix, many replicates at once.
    """
    metric = METRICS[name]
    rows = metric.rows(np.asarray(y, dtype=np.float64), np.asarray(scores, dtype=np.float64))
    n = rows.shape[1]
    if n == 0 or n_boot < 1:
        return None
    rng = np.random.default_rng(seed)
    chunk = max(1, _CELLS_PER_CHUNK // n)
    values: list[np.ndarray] = []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        means = rows[:, idx].mean(axis=2)  # (k, replicates)
        values.append(np.asarray(metric.combine(means), dtype=np.float64))
    replicates = np.concatenate(values)
    replicates = replicates[np.isfinite(replicates)]
    if len(replicates) < max(10, n_boot // 2):
        return None
    low, high = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.6g}"


class MetricGate:
    """A metric of the candidate on the evaluation rows within ``min``/``max``."""

    kind = "metric"

    def __init__(
        self,
        metric: str,
        min: float | None = None,
        max: float | None = None,
        *,
        name: str | None = None,
        required: bool = True,
        alpha: float = 0.05,
        n_boot: int = 200,
        seed: int = 0,
    ) -> None:
        self.metric = check_metric(metric, "metric")
        if min is None and max is None:
            raise InvalidInputError(
                f"Expected min or max for the metric gate on {metric!r}, got neither", loc="min"
            )
        for key, value in (("min", min), ("max", max)):
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise InvalidInputError(f"Expected a finite number, got {value!r}", loc=key)
        self.min = None if min is None else float(min)
        self.max = None if max is None else float(max)
        self.name = name or f"metric:{metric}"
        self.required = required
        self.alpha = alpha
        self.n_boot = n_boot
        self.seed = seed

    def __repr__(self) -> str:
        return f"MetricGate({self.metric!r}, min={self.min}, max={self.max})"

    def _fail(self, summary: str, numbers: dict[str, Any] | None = None) -> GateResult:
        return GateResult(self.name, self.kind, False, self.required, summary, numbers or {}, None)

    def evaluate(self, ctx: GateContext) -> GateResult:
        try:
            y = target(ctx, self.metric)
        except InvalidInputError as exc:
            return self._fail(f"{self.metric} cannot be measured: {exc}")
        scores = ctx.scores("candidate")
        if len(y) == 0:
            return self._fail(f"{self.metric} cannot be measured: no evaluation rows")
        if self.metric == "auc" and (y.all() or not y.any()):
            return self._fail("auc cannot be measured: the evaluation rows hold one class only")
        value = compute_metric(self.metric, y, np.asarray(scores, dtype=np.float64))
        ci: tuple[float, float] | None
        if self.metric == "auc":
            estimate = auc_delong(y, scores, alpha=self.alpha)
            ci = (estimate.low, estimate.high)
        else:
            ci = bootstrap_ci(
                self.metric, y, scores, n_boot=self.n_boot, alpha=self.alpha, seed=self.seed
            )
        bounds = []
        passed = math.isfinite(value)
        if self.min is not None:
            passed = passed and value >= self.min
            bounds.append(f">= {_fmt(self.min)}")
        if self.max is not None:
            passed = passed and value <= self.max
            bounds.append(f"<= {_fmt(self.max)}")
        summary = f"{self.metric} {_fmt(value)} " + " and ".join(bounds)
        if not passed:
            summary = f"{self.metric} {_fmt(value)} not " + " and ".join(bounds)
        numbers = {
            "value": value if math.isfinite(value) else None,
            "min": self.min,
            "max": self.max,
            "rows": len(y),
        }
        return GateResult(self.name, self.kind, passed, self.required, summary, numbers, ci)
