"""The result of comparing a window to a reference: one ``ColumnDrift`` per column.

``DriftReport.columns`` holds the features, ``DriftReport.outputs`` the model's outputs
(scores, predictions), which are the primary alarm: ``prediction_drift``. ``ranked()``
orders the features by ``score``: the effect relative to its practical minimum (or the
missing-rate change relative to its minimum, whichever is larger) times the feature's
importance, normalised so the most important feature weighs 1.

>>> column = ColumnDrift(name="age", kind="numeric", test="ks", statistic=0.5,
...     p_value=0.001, effect_name="wasserstein", effect=0.4, drifted=True)
>>> report = DriftReport(n_reference=100, n_current=50, columns={"age": column})
>>> report.drifted_columns, report.prediction_drift
(['age'], False)
>>> report.to_dict()["columns"]["age"]["p_adjusted"] is None
True
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["ColumnDrift", "DriftReport"]


@dataclass(frozen=True, kw_only=True)
class ColumnDrift:
    """How one column (feature or output) moved between the reference and the window."""

    name: str
    kind: Literal["numeric", "categorical"]
    test: Literal["ks", "chi2"]
    statistic: float
    """KS distance or chi-square statistic; NaN when there was nothing to test."""
    p_value: float
    effect_name: Literal["wasserstein", "jensenshannon"]
    effect: float
    p_adjusted: float = math.nan
    threshold: float = math.nan
    """``max(calibrated null quantile at this window size, practical minimum)``."""
    distribution_drifted: bool = False
    drifted: bool = False
    """The distribution or the missing rate drifted."""
    psi: float = math.nan
    wasserstein: float | None = None
    """Wasserstein-1 of the winsorised values over the reference's robust scale."""
    jensenshannon: float | None = None
    out_of_range_share: float = 0.0
    unseen_share: float = 0.0
    missing_reference: float = 0.0
    missing_current: float = 0.0
    missing_p: float = 1.0
    missing_p_adjusted: float = math.nan
    missing_drifted: bool = False
    importance: float = 1.0
    score: float = 0.0
    n_reference: int = 0
    n_current: int = 0
    findings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-able values (NaN and infinities as None)."""
        return {key: _plain(value) for key, value in dataclasses.asdict(self).items()}


@dataclass(frozen=True, kw_only=True)
class DriftReport:
    """Every column's comparison, the report-level findings, and the alarms."""

    n_reference: int
    n_current: int
    columns: dict[str, ColumnDrift] = field(default_factory=dict)
    outputs: dict[str, ColumnDrift] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    missing_columns: list[str] = field(default_factory=list)
    """Features of the reference missing from the window: they fail the check."""

    @property
    def alarm(self) -> bool:
        """Whether the check fails: prediction drift, a drifted or a missing feature."""
        return self.prediction_drift or bool(self.drifted_columns or self.missing_columns)

    @property
    def drifted_columns(self) -> list[str]:
        """Names of the features that drifted, in column order."""
        return [name for name, column in self.columns.items() if column.drifted]

    @property
    def drifted_outputs(self) -> list[str]:
        """Names of the model outputs that drifted."""
        return [name for name, column in self.outputs.items() if column.drifted]

    @property
    def prediction_drift(self) -> bool:
        """Whether any model output drifted: the primary alarm."""
        return any(column.drifted for column in self.outputs.values())

    def ranked(self, *, drifted_only: bool = False) -> list[ColumnDrift]:
        """Features as causes: drifted first, then by ``score`` (effect x importance)."""
        columns = [c for c in self.columns.values() if c.drifted or not drifted_only]
        return sorted(columns, key=lambda c: (not c.drifted, -_key(c.score), c.name))

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-able builtins (no numpy scalars, NaN as None)."""
        return {
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "prediction_drift": self.prediction_drift,
            "drifted_columns": self.drifted_columns,
            "drifted_outputs": self.drifted_outputs,
            "missing_columns": list(self.missing_columns),
            "alarm": self.alarm,
            "findings": list(self.findings),
            "columns": {name: c.to_dict() for name, c in self.columns.items()},
            "outputs": {name: c.to_dict() for name, c in self.outputs.items()},
        }


def _key(value: float) -> float:
    return value if math.isfinite(value) else -math.inf


def _plain(value: Any) -> Any:
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, int):
        return int(value)
    number = float(value)
    return number if math.isfinite(number) else None
