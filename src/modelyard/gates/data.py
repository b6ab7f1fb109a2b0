"""Data gates: the candidate's training set, read from its package's reference profile.

The profile (``models/profile.py``) is written when the package is, from (a sample
of at most 100,000 of) the training rows, so this gate needs no access to the
training data itself. It checks:

- ``min_rows``: the training rows profiled;
- ``max_missing``: the largest missing rate of any feature column;
- ``ranges``: ``{column: [low, high]}``, every training value of the column within;
- ``label_balance_tolerance``: the positive rate the candidate predicts on its own
  training rows (the mean of its positive-class probability: the profile keeps the
  model's outputs, not the labels) against the champion's, on its own training rows;
- ``max_missing_increase``: how much any column's missing rate may grow over the
  champion's training set (a column the champion had and the candidate lacks fails).

With no champion, the checks against it pass (the first version sets the reference).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from modelyard.errors import InvalidInputError, ModelyardError
from modelyard.gates.base import GateContext, GateResult
from modelyard.models.package import PackagedModel, read_profile
from modelyard.models.profile import NumericProfile, ReferenceProfile

__all__ = ["PROFILE_SAMPLE_ROWS", "DataGate"]

#: the most rows a package's profile is built from (models/package.py samples above it)
PROFILE_SAMPLE_ROWS = 100_000


def _number(value: Any, loc: str, *, low: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(f"Expected a finite number, got {value!r}", loc=loc)
    if low is not None and value < low:
        raise InvalidInputError(f"Expected a number >= {low}, got {value!r}", loc=loc)
    return float(value)


def _positive_rate(model: PackagedModel, profile: ReferenceProfile) -> float | None:
    classes = model.manifest.classes
    if model.manifest.task != "classification" or not classes or len(classes) != 2:
        return None
    output = profile.outputs.get(f"proba_{classes[1]}")
    if isinstance(output, NumericProfile) and output.mean is not None:
        return float(output.mean)
    return None


class DataGate:
    """Checks of the candidate's training data against thresholds and the champion's."""

    kind = "data"

    def __init__(
        self,
        *,
        min_rows: int | None = None,
        max_missing: float | None = None,
        ranges: Mapping[str, Any] | None = None,
        label_balance_tolerance: float | None = None,
        max_missing_increase: float | None = None,
        name: str | None = None,
        required: bool = True,
    ) -> None:
        if min_rows is not None and (
            isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 0
        ):
            raise InvalidInputError(f"Expected an integer >= 0, got {min_rows!r}", loc="min_rows")
        self.min_rows = min_rows
        self.max_missing = (
            None if max_missing is None else _number(max_missing, "max_missing", low=0.0)
        )
        self.label_balance_tolerance = (
            None
            if label_balance_tolerance is None
            else _number(label_balance_tolerance, "label_balance_tolerance", low=0.0)
        )
        self.max_missing_increase = (
            None
            if max_missing_increase is None
            else _number(max_missing_increase, "max_missing_increase", low=0.0)
        )
        if ranges is not None and not isinstance(ranges, Mapping):
            raise InvalidInputError(
                f"Expected a mapping of column to [low, high], got {ranges!r}", loc="ranges"
            )
        self.ranges: dict[str, tuple[float, float]] = {}
        for column, bounds in (ranges or {}).items():
            loc = f"ranges.{column}"
            if not isinstance(bounds, list | tuple) or len(bounds) != 2:
                raise InvalidInputError(f"Expected [low, high], got {bounds!r}", loc=loc)
            low, high = _number(bounds[0], loc), _number(bounds[1], loc)
            if low > high:
                raise InvalidInputError(f"Expected low <= high, got {bounds!r}", loc=loc)
            self.ranges[str(column)] = (low, high)
        self.name = name or "data"
        self.required = required

    def __repr__(self) -> str:
        return (
            f"DataGate(min_rows={self.min_rows}, max_missing={self.max_missing}, "
            f"ranges={self.ranges}, label_balance_tolerance={self.label_balance_tolerance})"
        )

    def _result(
        self, passed: bool, summary: str, numbers: dict[str, Any], details: list[dict[str, Any]]
    ) -> GateResult:
        return GateResult(
            self.name, self.kind, passed, self.required, summary, numbers, None, tuple(details)
        )

    def evaluate(self, ctx: GateContext) -> GateResult:
        try:
            profile = read_profile(ctx.artifact_store(), ctx.candidate_model.manifest)
        except ModelyardError as exc:
            return self._result(False, f"no training-data profile: {exc}", {}, [])
        problems: list[dict[str, Any]] = []
        numbers: dict[str, Any] = {"rows": profile.n_rows}
        if self.min_rows is not None:
            numbers["min_rows"] = self.min_rows
            if profile.n_rows < self.min_rows:
                problems.append(
                    {"check": "min_rows", "expected": self.min_rows, "got": profile.n_rows}
                )
            elif self.min_rows > PROFILE_SAMPLE_ROWS:
                problems.append(
                    {
                        "check": "min_rows",
                        "expected": self.min_rows,
                        "got": f"at least {profile.n_rows} (the profile samples at most "
                        f"{PROFILE_SAMPLE_ROWS} rows)",
                    }
                )
        rates = {name: col.missing_rate for name, col in profile.columns.items()}
        worst = max(rates, key=lambda c: rates[c]) if rates else None
        numbers["max_missing_rate"] = None if worst is None else rates[worst]
        numbers["max_missing_column"] = worst
        if self.max_missing is not None:
            numbers["max_missing"] = self.max_missing
            for column, rate in sorted(rates.items(), key=lambda kv: -kv[1]):
                if rate > self.max_missing:
                    problems.append(
                        {
                            "check": "max_missing",
                            "column": column,
                            "expected": self.max_missing,
                            "got": rate,
                        }
                    )
        for column, (low, high) in self.ranges.items():
            col = profile.columns.get(column)
            if not isinstance(col, NumericProfile):
                got = "no such column" if col is None else f"a {col.kind} column"
                problems.append({"check": "ranges", "column": column, "got": got})
                continue
            if col.min is not None and col.max is not None and (col.min < low or col.max > high):
                problems.append(
                    {
                        "check": "ranges",
                        "column": column,
                        "expected": [low, high],
                        "got": [col.min, col.max],
                    }
                )
        rate = _positive_rate(ctx.candidate_model, profile)
        numbers["positive_rate"] = rate
        reference = self._champion_profile(ctx, problems)
        numbers["champion_rows"] = None if reference is None else reference.n_rows
        if self.label_balance_tolerance is not None:
            numbers["label_balance_tolerance"] = self.label_balance_tolerance
            problems.extend(self._balance(ctx, rate, reference, numbers))
        if self.max_missing_increase is not None and reference is not None:
            numbers["max_missing_increase"] = self.max_missing_increase
            problems.extend(self._missing_growth(profile, reference))
        passed = not problems
        checks = sorted({p["check"] for p in problems})
        summary = (
            f"training data ok: {profile.n_rows} rows, max missing rate "
            f"{numbers['max_missing_rate'] if worst is not None else 'n/a'}"
            if passed
            else f"training data failed {', '.join(checks)}: {_describe(problems[0])}"
        )
        return self._result(passed, summary, numbers, problems)

    def _champion_profile(
        self, ctx: GateContext, problems: list[dict[str, Any]]
    ) -> ReferenceProfile | None:
        wanted = self.label_balance_tolerance is not None or self.max_missing_increase is not None
        if ctx.champion_model is None or not wanted:
            return None
        try:
            return read_profile(ctx.artifact_store(), ctx.champion_model.manifest)  # type: ignore[no-any-return]
        except ModelyardError as exc:
            problems.append({"check": "champion_profile", "got": f"none: {exc}"})
            return None

    def _balance(
        self,
        ctx: GateContext,
        rate: float | None,
        reference: ReferenceProfile | None,
        numbers: dict[str, Any],
    ) -> list[dict[str, Any]]:
        if rate is None:
            return [{"check": "label_balance", "got": "the candidate is not a binary classifier"}]
        numbers["champion_positive_rate"] = None
        if ctx.champion_model is None or reference is None:
            return []  # no champion (the first version sets the reference), or no profile
        champion_rate = _positive_rate(ctx.champion_model, reference)
        numbers["champion_positive_rate"] = champion_rate
        if champion_rate is None:
            return [{"check": "label_balance", "got": "the champion is not a binary classifier"}]
        assert self.label_balance_tolerance is not None
        if abs(rate - champion_rate) > self.label_balance_tolerance:
            return [
                {
                    "check": "label_balance",
                    "expected": f"within {self.label_balance_tolerance} of {champion_rate:.4g}",
                    "got": rate,
                }
            ]
        return []

    def _missing_growth(
        self, profile: ReferenceProfile, reference: ReferenceProfile
    ) -> list[dict[str, Any]]:
        assert self.max_missing_increase is not None
        found: list[dict[str, Any]] = []
        for column, before in sorted(reference.columns.items()):
            now = profile.columns.get(column)
            if now is None:
                found.append({"check": "max_missing_increase", "column": column, "got": "gone"})
                continue
            growth = now.missing_rate - before.missing_rate
            if growth > self.max_missing_increase:
                found.append(
                    {
                        "check": "max_missing_increase",
                        "column": column,
                        "expected": f"<= {before.missing_rate:.4g} + {self.max_missing_increase}",
                        "got": now.missing_rate,
                    }
                )
        return found


def _describe(problem: Mapping[str, Any]) -> str:
    where = f" {problem['column']}" if "column" in problem else ""
    expected = f" expected {problem['expected']}," if "expected" in problem else ""
    return f"{problem['check']}{where}:{expected} got {problem['got']}"
