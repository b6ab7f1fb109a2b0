"""The champion/challenger gate: the candidate is not worse than the alias holder.

Both models score the same evaluation rows; the difference ``candidate - champion`` of
the metric gets a paired interval (DeLong for AUC, the paired bootstrap otherwise) and
the gate passes when the interval's worse bound stays within the non-inferiority margin:
``low > -margin`` when higher is better (auc, accuracy, f1, ...), ``high < margin`` for
losses (log_loss, brier, rmse, ...).

Without a champion (nobody holds the alias yet) the gate fails saying so, with
``numbers["applicable"] = False`` so a runner can report it as not applicable.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from modelyard.errors import InvalidInputError, ModelyardError
from modelyard.gates.base import GateContext, GateResult
from modelyard.gates.statistics import (
    METRICS,
    PairedComparison,
    binary_labels,
    non_inferior,
    paired_bootstrap,
    paired_delong,
)

__all__ = ["ChampionGate", "evaluation_labels", "higher_is_better", "score_failure"]

#: what a model may raise on rows it cannot score (caught: a gate never raises for data)
score_failure = (ModelyardError, ValueError, TypeError, KeyError, LookupError)


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` (``auc`` or a name in METRICS) is better."""
    if metric == "auc":
        return True
    found = METRICS.get(metric)
    if found is None:
        raise InvalidInputError(
            f"Expected a metric among {['auc', *METRICS]}, got {metric!r}", loc="metric"
        )
    return found.higher_is_better


def evaluation_labels(ctx: GateContext, metric: str) -> NDArray[Any]:
    """The label column read for ``metric``: booleans (positive class) or numbers.

    A binary classifier's positive class is its second class (the one its scores are
    the probability of).
    """
    labels = ctx.labels()
    missing = int(pd.isna(labels).sum())
    if missing:
        raise InvalidInputError(
            f"Expected a label on every evaluation row, got {missing} of {len(labels)} missing",
            loc=ctx.label,
        )
    if metric != "auc" and not METRICS[metric].binary:
        try:
            return np.asarray(labels, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"Expected a numeric label for {metric}, got {labels.dtype}", loc=ctx.label
            ) from None
    classes = ctx.candidate_model.manifest.classes
    positive = classes[1] if classes and len(classes) == 2 else None
    return binary_labels(labels, positive)


def _alias(ctx: GateContext) -> str:
    return str(getattr(ctx, "against", None) or "the alias")


def _fmt(value: float, sign: bool = False) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:+.4f}" if sign else f"{value:.4f}"


class ChampionGate:
    """Candidate vs champion on the same rows with a paired test and a margin."""

    kind = "champion"

    def __init__(
        self,
        metric: str = "auc",
        margin: float = 0.01,
        alpha: float = 0.05,
        n_boot: int = 1000,
        seed: int = 0,
        interval: str = "percentile",
        *,
        name: str | None = None,
        required: bool = True,
    ) -> None:
        self.higher_is_better = higher_is_better(metric)
        if not (math.isfinite(margin) and margin >= 0):
            raise InvalidInputError(f"Expected a margin >= 0, got {margin}", loc="margin")
        if not 0 < alpha < 1:
            raise InvalidInputError(f"Expected 0 < alpha < 1, got {alpha}", loc="alpha")
        if n_boot < 2:
            raise InvalidInputError(f"Expected n_boot >= 2, got {n_boot}", loc="n_boot")
        self.metric, self.margin, self.alpha = metric, float(margin), float(alpha)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InvalidInputError(f"Expected a seed >= 0, got {seed!r}", loc="seed")
        if interval not in ("percentile", "bca"):
            raise InvalidInputError(
                f"Expected interval 'percentile' or 'bca', got {interval!r}", loc="interval"
            )
        self.n_boot, self.seed, self.interval = int(n_boot), int(seed), interval
        self.name = name or f"champion:{metric}"
        self.required = required

    def __repr__(self) -> str:
        return f"ChampionGate(metric={self.metric!r}, margin={self.margin}, alpha={self.alpha})"

    def _result(
        self, passed: bool, summary: str, numbers: dict[str, Any], ci: tuple[float, float] | None
    ) -> GateResult:
        base = {"metric": self.metric, "margin": self.margin, "alpha": self.alpha}
        return GateResult(self.name, self.kind, passed, self.required, summary, base | numbers, ci)

    def compare(self, ctx: GateContext) -> PairedComparison:
        """The paired comparison ``candidate - champion`` (raises for unusable data)."""
        y = evaluation_labels(ctx, self.metric)
        candidate, champion = ctx.scores("candidate"), ctx.scores("champion")
        if self.metric == "auc":
            return paired_delong(y, candidate, champion, alpha=self.alpha)
        return paired_bootstrap(
            y,
            candidate,
            champion,
            self.metric,
            n_boot=self.n_boot,
            seed=self.seed,
            alpha=self.alpha,
            interval=self.interval,
        )

    def evaluate(self, ctx: GateContext) -> GateResult:
        """Compare the candidate with the holder of the alias on the evaluation rows."""
        if ctx.champion is None or ctx.champion_model is None:
            alias = _alias(ctx)
            return self._result(
                False,
                f"no holder of {alias}: no champion to compare {self.metric} with",
                {"applicable": False},
                None,
            )
        try:
            comparison = self.compare(ctx)
        except score_failure as exc:
            return self._result(False, f"cannot compare {self.metric}: {exc}", {}, None)
        numbers: dict[str, Any] = {
            "applicable": True,
            "rows": len(ctx.frame),
            "champion_version": ctx.champion.version,
            "candidate": _finite(comparison.a),
            "champion": _finite(comparison.b),
            "diff": _finite(comparison.diff),
            "ci_low": _finite(comparison.low),
            "ci_high": _finite(comparison.high),
            "p_value": _finite(comparison.p_value),
            "se": _finite(comparison.se),
            "method": comparison.method
            + ("" if comparison.method != "bootstrap" else f" ({self.interval})"),
            "higher_is_better": self.higher_is_better,
        }
        if not (math.isfinite(comparison.low) and math.isfinite(comparison.high)):
            why = "one class only in the labels" if self.metric == "auc" else "no usable rows"
            return self._result(False, f"cannot compare {self.metric}: {why}", numbers, None)
        passed = non_inferior(comparison, self.margin, self.higher_is_better)
        level = round(100 * (1 - self.alpha))
        if self.higher_is_better:
            bound = (
                f"low {_fmt(comparison.low, True)} {'>' if passed else '<='} {-self.margin:+.4f}"
            )
        else:
            bound = (
                f"high {_fmt(comparison.high, True)} {'<' if passed else '>='} {self.margin:+.4f}"
            )
        summary = (
            f"{self.metric} {_fmt(comparison.a)} vs champion v{ctx.champion.version} "
            f"{_fmt(comparison.b)}: diff {_fmt(comparison.diff, True)}, {level}% CI "
            f"[{_fmt(comparison.low, True)}, {_fmt(comparison.high, True)}], {bound}, "
            f"p={comparison.p_value:.3g}"
        )
        return self._result(passed, summary, numbers, (comparison.low, comparison.high))


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
