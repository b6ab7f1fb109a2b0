"""``Reference``: prepared once from data or a profile, then compared with many windows.

Every column is compared on its own (see ``columns``); then all p-values of the features,
the distribution tests and the missing-rate tests together, are corrected as one family
(``DriftSettings.correction``, Holm by default), so ``alpha`` bounds the chance that a
window without drift flags any feature. Model outputs form a family of their own: they
are the primary alarm, ``DriftReport.prediction_drift``.

A column drifts when its corrected p-value is below ``alpha`` and its effect exceeds its
threshold (see ``DriftSettings``), or when its missing rate moved significantly and by at
least ``min_missing_change``. A feature of the reference missing from the window is
``DriftReport.missing_columns`` and fails the check (``DriftReport.alarm``), as it does
not drift but is gone; a window that shares no feature with the reference is an error.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> data = {"x": rng.normal(size=5000), "c": rng.choice(["a", "b"], 5000)}
>>> reference = Reference.from_data(data)
>>> window = {"x": rng.normal(1.0, 1.0, size=2000), "c": rng.choice(["a", "b"], 2000)}
>>> report = reference.compare(window)
>>> report.drifted_columns
['x']
>>> [c.name for c in report.ranked()]
['x', 'c']
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from modelyard.errors import InvalidInputError
from modelyard.models.profile import NumericProfile, ReferenceProfile
from modelyard.monitoring.columns import TOP_K, CategoricalReference, NumericReference
from modelyard.monitoring.frames import Frame, column_kind, read_counts, read_frame, read_numeric
from modelyard.monitoring.report import ColumnDrift, DriftReport
from modelyard.monitoring.settings import DriftSettings
from modelyard.monitoring.stats import adjust_pvalues

__all__ = ["Reference"]

ColumnReference = NumericReference | CategoricalReference


class Reference:
    """The reference side of drift detection; build it with ``from_data``/``from_profile``."""

    def __init__(
        self,
        n_rows: int,
        columns: dict[str, ColumnReference],
        outputs: dict[str, ColumnReference] | None = None,
        importance: Mapping[str, float] | None = None,
    ) -> None:
        self.n_rows = n_rows
        self.columns = columns
        self.outputs = outputs or {}
        self.importance = _normalised(importance, list(columns))

    @classmethod
    def from_data(
        cls,
        data: Any,
        outputs: Any = None,
        importance: Mapping[str, float] | None = None,
        *,
        top_k: int = TOP_K,
    ) -> Reference:
        """Prepare the reference from raw data (and the model's outputs on it).

        ``data`` and ``outputs``: a pandas DataFrame, a pyarrow Table or a mapping of
        name to 1-d array. ``importance``: feature name -> model importance, for ranking.
        """
        frame = read_frame(data, "reference")
        if frame.n_rows == 0 or not frame.columns:
            raise InvalidInputError(
                f"Expected a reference with rows and columns, got {frame.n_rows} rows "
                f"and {len(frame.columns)} columns",
                loc="reference",
            )
        prepared_outputs: dict[str, ColumnReference] = {}
        if outputs is not None:
            prepared_outputs = _prepare(read_frame(outputs, "outputs"), top_k)
        return cls(frame.n_rows, _prepare(frame, top_k), prepared_outputs, importance)

    @classmethod
    def from_profile(cls, profile: ReferenceProfile) -> Reference:
        """Prepare the reference from a model package's ``ReferenceProfile``.

        >>> from modelyard.models.profile import build_profile
        >>> ref = Reference.from_profile(build_profile({"x": [1.0, 2.0, 3.0]}))
        >>> sorted(ref.columns)
        ['x']
        """
        if not isinstance(profile, ReferenceProfile):
            raise InvalidInputError(
                f"Expected a ReferenceProfile, got {type(profile).__name__}", loc="profile"
            )
        return cls(
            profile.n_rows,
            {name: _from_profile(name, p) for name, p in profile.columns.items()},
            {name: _from_profile(name, p) for name, p in profile.outputs.items()},
            profile.feature_importance,
        )

    def compare(
        self,
        current: Any,
        outputs: Any = None,
        settings: DriftSettings | None = None,
    ) -> DriftReport:
        """Compare a window (and the model's outputs on it) with this reference."""
        settings = settings or DriftSettings()
        frame = read_frame(current, "current")
        findings: list[str] = []
        if frame.n_rows == 0:
            findings.append("the current window is empty: nothing to compare")
        if self.columns and not any(name in frame.columns for name in self.columns):
            raise InvalidInputError(
                f"Expected the window to share columns with the reference "
                f"({_names(self.columns)}), got {_names(frame.columns)}",
                loc="current",
            )
        missing = [name for name in self.columns if name not in frame.columns]
        columns = _compare_all(self.columns, frame, settings, findings, "column")
        columns = _decide(columns, settings, self.importance)
        compared_outputs: dict[str, ColumnDrift] = {}
        if outputs is not None:
            output_frame = read_frame(outputs, "outputs")
            compared_outputs = _compare_all(
                self.outputs, output_frame, settings, findings, "output"
            )
            compared_outputs = _decide(compared_outputs, settings, None)
        elif self.outputs:
            findings.append("no model outputs given: prediction drift not checked")
        return DriftReport(
            n_reference=self.n_rows,
            n_current=frame.n_rows,
            columns=columns,
            outputs=compared_outputs,
            findings=findings,
            missing_columns=missing,
        )


def _names(columns: Mapping[str, Any]) -> str:
    names = list(columns)
    shown = ", ".join(repr(name) for name in names[:8])
    more = f" and {len(names) - 8} more" if len(names) > 8 else ""
    return f"columns {shown}{more}" if names else "no columns"


def _prepare(frame: Frame, top_k: int) -> dict[str, ColumnReference]:
    prepared: dict[str, ColumnReference] = {}
    for name, series in frame.columns.items():
        if column_kind(name, series) == "numeric":
            numbers = read_numeric(name, series)
            numeric = NumericReference.from_values(name, numbers.values)
            if numbers.finding:  # dirty numbers: how many cells did not parse
                numeric.findings.insert(0, f"reference: {numbers.finding}")
            prepared[name] = numeric
        else:
            read = read_counts(name, series, expect_categories=False)
            prepared[name] = CategoricalReference.from_counts(
                name, read.counts, read.missing, read.rows, top_k=top_k
            )
    return prepared


def _from_profile(name: str, profile: Any) -> ColumnReference:
    if isinstance(profile, NumericProfile):  # DatetimeProfile included
        return NumericReference.from_profile(name, profile)
    return CategoricalReference.from_profile(name, profile)


def _compare_all(
    references: dict[str, ColumnReference],
    frame: Frame,
    settings: DriftSettings,
    findings: list[str],
    what: str,
) -> dict[str, ColumnDrift]:
    results: dict[str, ColumnDrift] = {}
    for name, reference in references.items():
        series: pd.Series | None = frame.columns.get(name)
        if series is None:
            change = "the check fails" if what == "column" else "not compared"
            findings.append(
                f"{what} {name!r} of the reference is missing from the window: {change}"
            )
            continue
        results[name] = reference.compare(series, settings)
    for name in frame.columns:
        if name not in references:
            findings.append(f"{what} {name!r} is not in the reference: not compared")
    return results


def _decide(
    columns: dict[str, ColumnDrift],
    settings: DriftSettings,
    importance: Mapping[str, float] | None,
) -> dict[str, ColumnDrift]:
    """Correct the p-values as one family, then apply the thresholds."""
    drifts = list(columns.values())
    family = np.array([c.p_value for c in drifts] + [c.missing_p for c in drifts])
    adjusted = adjust_pvalues(family, settings.correction)
    decided: dict[str, ColumnDrift] = {}
    for i, column in enumerate(drifts):
        p_adjusted, missing_adjusted = float(adjusted[i]), float(adjusted[len(drifts) + i])
        distribution = bool(p_adjusted < settings.alpha and column.effect > column.threshold)
        change = abs(column.missing_current - column.missing_reference)
        missing = bool(missing_adjusted < settings.alpha and change >= settings.min_missing_change)
        weight = 1.0 if importance is None else importance.get(column.name, 0.0)
        decided[column.name] = dataclasses.replace(
            column,
            p_adjusted=p_adjusted,
            missing_p_adjusted=missing_adjusted,
            distribution_drifted=distribution,
            missing_drifted=missing,
            drifted=distribution or missing,
            importance=weight,
            score=weight * _strength(column, change, settings),
        )
    return decided


def _strength(column: ColumnDrift, change: float, settings: DriftSettings) -> float:
    """The larger of effect / practical minimum and missing change / its minimum."""
    minimum = settings.min_wasserstein if column.kind == "numeric" else settings.min_jensenshannon
    parts = [
        _ratio(column.effect, minimum or column.threshold),
        _ratio(change, settings.min_missing_change),
    ]
    return max(parts)


def _ratio(value: float, unit: float) -> float:
    if not math.isfinite(value):
        return 0.0
    if not unit > 0:
        return value
    return value / unit


def _normalised(
    importance: Mapping[str, float] | None, names: list[str]
) -> dict[str, float] | None:
    """Absolute importances divided by the largest; None when not given."""
    if importance is None:
        return None
    if not isinstance(importance, Mapping):
        raise InvalidInputError(
            f"Expected a mapping of feature name to importance, got {type(importance).__name__}",
            loc="importance",
        )
    values: dict[str, float] = {}
    for key, value in importance.items():
        try:
            number = abs(float(value))
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise InvalidInputError(
                f"Expected a finite number, got {value!r}", loc=f"importance[{key!r}]"
            )
        values[str(key)] = number
    top = max(values.values(), default=0.0)
    return {name: (values.get(name, 0.0) / top if top > 0 else 0.0) for name in names}
