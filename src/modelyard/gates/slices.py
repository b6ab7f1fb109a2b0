"""The slice gate: no slice of the evaluation rows regresses by more than ``max_drop``.

Slices come from each column of ``by`` (one slice per value; missing values form their
own slice) and each bucketed numeric column of ``buckets`` (edges ``[0, 500, 1500]``
give ``< 0``, ``[0, 500)``, ``[500, 1500)``, ``>= 1500``). Per slice the candidate's
metric is compared with the champion's on the same rows, or, without a champion, with
the candidate's metric over all rows. The drop is oriented so that positive is worse
(``reference - candidate`` when higher is better, the other way round for losses).
Slices under ``min_rows`` rows, or where the metric is undefined (one class only for
AUC), are reported as skipped. The result lists the worst slices first.

Each slice column is grouped once: AUC per group from one sort (midranks within each
group), the other metrics from per-row values summed with ``bincount``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from modelyard.errors import InvalidInputError
from modelyard.gates.base import GateContext, GateResult
from modelyard.gates.champion import evaluation_labels, higher_is_better, score_failure
from modelyard.gates.statistics import METRICS, group_auc

__all__ = ["SliceGate", "SliceOutcome", "slice_codes"]

Floats = NDArray[np.float64]


@dataclass(frozen=True)
class SliceOutcome:
    """One slice: its rows, the candidate's and the reference's metric, the drop."""

    slice: str
    column: str
    rows: int
    candidate: float
    reference: float
    drop: float
    skipped: str | None = None  # why it was not judged

    def to_dict(self) -> dict[str, Any]:
        def finite(value: float) -> float | None:
            return float(value) if math.isfinite(value) else None

        out: dict[str, Any] = {
            "slice": self.slice,
            "column": self.column,
            "rows": self.rows,
            "candidate": finite(self.candidate),
            "reference": finite(self.reference),
            "drop": finite(self.drop),
        }
        if self.skipped:
            out["skipped"] = self.skipped
        return out


def slice_codes(
    values: pd.Series, column: str, edges: Sequence[float] | None
) -> tuple[NDArray[np.intp], list[str]]:
    """Each row's slice code in ``[0, len(names))`` and the slices' names.

    Without ``edges`` a slice per distinct value; with them a slice per bucket.
    Missing values form a slice of their own.
    """
    if edges is None:
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        names = [f"{column}={value}" for value in uniques]
        codes = np.asarray(codes, dtype=np.intp)
    else:
        try:
            numbers = pd.to_numeric(values, errors="raise").to_numpy(dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"Expected a numeric column to bucket, got {values.dtype}", loc=column
            ) from None
        bounds = list(edges)
        codes = np.searchsorted(np.asarray(bounds, dtype=np.float64), numbers, side="right")
        codes = np.asarray(codes, dtype=np.intp)
        names = [f"{column} < {bounds[0]:g}"]
        names += [f"{low:g} <= {column} < {high:g}" for low, high in itertools.pairwise(bounds)]
        names.append(f"{column} >= {bounds[-1]:g}")
        codes[np.isnan(numbers)] = -1
    if (codes < 0).any():
        codes = np.where(codes < 0, len(names), codes)
        names.append(f"{column} is missing")
    return codes, names


def _group_metric(
    metric: str,
    y: NDArray[Any],
    scores: Floats,
    codes: NDArray[np.intp],
    groups: int,
    score_order: NDArray[np.intp] | None = None,
) -> Floats:
    if metric == "auc":
        return group_auc(np.asarray(y, dtype=bool), scores, codes, groups, score_order=score_order)
    row_metric = METRICS[metric]
    values = row_metric.rows(np.asarray(y, dtype=np.float64), scores)
    counts = np.bincount(codes, minlength=groups).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        sums = np.vstack([np.bincount(codes, weights=v, minlength=groups) for v in values])
        means: Floats = sums / counts
    out = np.asarray(row_metric.combine(means), dtype=np.float64)
    return np.where(counts > 0, out, math.nan)


def _overall(
    metric: str, y: NDArray[Any], scores: Floats, score_order: NDArray[np.intp] | None
) -> float:
    codes = np.zeros(len(scores), dtype=np.intp)
    return float(_group_metric(metric, y, scores, codes, 1, score_order)[0])


def _score_order(metric: str, scores: Floats | None) -> NDArray[np.intp] | None:
    """The stable sort of the scores, shared by every grouping (AUC only)."""
    if metric != "auc" or scores is None:
        return None
    return np.argsort(scores, kind="stable")


class SliceGate:
    """Per-slice regression of the candidate against the champion (or its own overall)."""

    kind = "slices"

    def __init__(
        self,
        by: Sequence[str] = (),
        buckets: Mapping[str, Sequence[float]] | None = None,
        metric: str = "auc",
        min_rows: int = 200,
        max_drop: float = 0.05,
        *,
        worst: int = 10,
        name: str | None = None,
        required: bool = True,
    ) -> None:
        self.higher_is_better = higher_is_better(metric)
        if isinstance(by, str):
            by = [by]
        self.by = list(by)
        self.buckets: dict[str, list[float]] = {}
        for column, edges in (buckets or {}).items():
            bounds = [float(e) for e in edges]
            if (
                not bounds
                or not all(math.isfinite(b) for b in bounds)
                or any(b <= a for a, b in itertools.pairwise(bounds))
            ):
                raise InvalidInputError(
                    f"Expected finite, increasing bucket edges, got {list(edges)}",
                    loc=f"buckets.{column}",
                )
            self.buckets[str(column)] = bounds
        if not self.by and not self.buckets:
            raise InvalidInputError(
                "Expected at least one slice column in by= or buckets=", loc="by"
            )
        if min_rows < 1:
            raise InvalidInputError(f"Expected min_rows >= 1, got {min_rows}", loc="min_rows")
        if not (math.isfinite(max_drop) and max_drop >= 0):
            raise InvalidInputError(f"Expected max_drop >= 0, got {max_drop}", loc="max_drop")
        self.metric, self.min_rows, self.max_drop = metric, int(min_rows), float(max_drop)
        self.worst = int(worst)
        self.name = name or f"slices:{metric}"
        self.required = required

    def __repr__(self) -> str:
        return (
            f"SliceGate(by={self.by}, buckets={self.buckets}, metric={self.metric!r}, "
            f"min_rows={self.min_rows}, max_drop={self.max_drop})"
        )

    def _failed(self, summary: str) -> GateResult:
        numbers = {"metric": self.metric, "max_drop": self.max_drop, "min_rows": self.min_rows}
        return GateResult(self.name, self.kind, False, self.required, summary, numbers, None)

    def slices(self, ctx: GateContext) -> tuple[list[SliceOutcome], float, float | None]:
        """Every slice's outcome, the candidate's overall metric and the champion's."""
        frame = ctx.frame
        y = evaluation_labels(ctx, self.metric)
        candidate = np.asarray(ctx.scores("candidate"), dtype=np.float64)
        champion = (
            None
            if ctx.champion_model is None
            else np.asarray(ctx.scores("champion"), dtype=np.float64)
        )
        order = _score_order(self.metric, candidate)
        order_champion = _score_order(self.metric, champion)
        overall = _overall(self.metric, y, candidate, order)
        overall_champion = (
            None if champion is None else _overall(self.metric, y, champion, order_champion)
        )
        dimensions: list[tuple[str, Sequence[float] | None]] = [(c, None) for c in self.by]
        dimensions += list(self.buckets.items())
        outcomes: list[SliceOutcome] = []
        for column, edges in dimensions:
            codes, names = slice_codes(frame[column], column, edges)
            groups = len(names)
            counts = np.bincount(codes, minlength=groups)
            mine = _group_metric(self.metric, y, candidate, codes, groups, order)
            if champion is None:
                theirs = np.full(groups, overall)
            else:
                theirs = _group_metric(self.metric, y, champion, codes, groups, order_champion)
            drops = theirs - mine if self.higher_is_better else mine - theirs
            for g, slice_name in enumerate(names):
                rows = int(counts[g])
                if rows == 0:
                    continue  # an empty bucket is no slice
                skipped = None
                if rows < self.min_rows:
                    skipped = f"{rows} rows < min_rows {self.min_rows}"
                elif not (math.isfinite(mine[g]) and math.isfinite(theirs[g])):
                    skipped = f"{self.metric} undefined (one class only)"
                outcomes.append(
                    SliceOutcome(
                        slice_name,
                        column,
                        rows,
                        float(mine[g]),
                        float(theirs[g]),
                        float(drops[g]),
                        skipped,
                    )
                )
        return outcomes, overall, overall_champion

    def evaluate(self, ctx: GateContext) -> GateResult:
        """Judge every slice; fail when any judged slice drops more than ``max_drop``."""
        absent = [c for c in [*self.by, *self.buckets] if c not in ctx.frame.columns]
        if absent:
            shown = ", ".join(map(str, list(ctx.frame.columns)[:20]))
            return self._failed(
                f"slice column(s) {absent} not in the evaluation data (columns: {shown})"
            )
        try:
            outcomes, overall, overall_champion = self.slices(ctx)
        except score_failure as exc:
            return self._failed(f"cannot slice {self.metric}: {exc}")
        judged = sorted(
            (o for o in outcomes if o.skipped is None), key=lambda o: (-o.drop, o.slice)
        )
        skipped = [o for o in outcomes if o.skipped is not None]
        failing = [o for o in judged if o.drop > self.max_drop]
        reference = "overall" if ctx.champion_model is None else "champion"
        numbers: dict[str, Any] = {
            "metric": self.metric,
            "reference": reference,
            "max_drop": self.max_drop,
            "min_rows": self.min_rows,
            "candidate_overall": _finite(overall),
            "champion_overall": None if overall_champion is None else _finite(overall_champion),
            "slices": len(judged),
            "skipped": len(skipped),
            "failing": len(failing),
            "worst_slice": judged[0].slice if judged else None,
            "worst_drop": _finite(judged[0].drop) if judged else None,
            "skipped_slices": [o.slice for o in skipped[:20]],
        }
        details = tuple(o.to_dict() for o in judged[: self.worst])
        details += tuple(o.to_dict() for o in skipped[: max(0, self.worst - len(details))])
        if not judged:
            summary = f"no slice with >= {self.min_rows} rows and a defined {self.metric}"
            return GateResult(
                self.name, self.kind, False, self.required, summary, numbers, None, details
            )
        worst = judged[0]
        verdict = ">" if failing else "<="
        summary = (
            f"{len(failing)} of {len(judged)} slices drop > {self.max_drop:g} in {self.metric} "
            f"vs {reference}; worst {worst.slice} drop {worst.drop:+.4f} {verdict} "
            f"{self.max_drop:g} ({len(skipped)} skipped)"
        )
        return GateResult(
            self.name, self.kind, not failing, self.required, summary, numbers, None, details
        )


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
