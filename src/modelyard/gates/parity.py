"""The parity gate: the serving runtime's scores against the native model's, row by row.

Both are computed as the server computes scores: arrays built from the evaluation rows by
:func:`modelyard.models.runtimes.build_inputs` with the candidate's signature, then the
serving runtime (``open_serving_runtime`` with the project's ``serving.runtime``) and
:class:`~modelyard.models.runtimes.NativeRuntime` (the flavor's own ``scores`` on a frame,
what ``serving.runtime: native`` serves). Every output column is compared (all class
probabilities, or the predictions), one thread as in a serving worker.

A row passes when ``|served - native| <= atol + rtol * |native|`` in every column (NaN
only matches NaN). The worst rows are listed with both scores. When the serving runtime
*is* the native model there is nothing to compare: the gate passes and says so.

``models optimize`` checks parity on the package's held-out rows before it names a
serving runtime; this gate checks it again on the evaluation rows, where a graph that
ignores categorical splits or rounds features to float32 shows up on data it was not
chosen on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from modelyard.errors import InvalidInputError, ModelyardError
from modelyard.gates.base import GateContext, GateResult, result_of
from modelyard.gates.candidate_runtime import features, serving_runtime, signature_of
from modelyard.models.optimize import one_thread
from modelyard.models.runtimes import NativeRuntime, build_inputs

__all__ = ["ParityGate"]

#: worst rows listed in the details
WORST_ROWS = 5


def _finite_or_none(value: float) -> float | None:
    return value if np.isfinite(value) else None


def _floats(values: np.ndarray) -> list[float | None]:
    return [_finite_or_none(float(v)) for v in values]


class ParityGate:
    """Max abs difference of the serving runtime's scores from the native model's."""

    kind = "parity"

    def __init__(
        self,
        atol: float = 1e-5,
        rtol: float = 0.0,
        *,
        name: str | None = None,
        required: bool = True,
    ) -> None:
        for key, value in (("atol", atol), ("rtol", rtol)):
            if not value >= 0:
                raise InvalidInputError(f"Expected {key} >= 0, got {value}", loc=key)
        self.atol = float(atol)
        self.rtol = float(rtol)
        self.name = name or "parity"
        self.required = required

    def _result(
        self,
        passed: bool,
        summary: str,
        numbers: Mapping[str, Any],
        details: tuple[Mapping[str, Any], ...] = (),
    ) -> GateResult:
        return result_of(
            self, passed, summary, {"atol": self.atol, "rtol": self.rtol, **numbers}, details
        )

    def evaluate(self, ctx: GateContext) -> GateResult:
        try:
            signature = signature_of(ctx)
            runtime = serving_runtime(ctx)
            inputs = build_inputs(signature, features(ctx))
        except ModelyardError as exc:
            return self._result(False, f"cannot compare the serving runtime: {exc}", {})
        rows = inputs.rows
        if isinstance(runtime, NativeRuntime):
            return self._result(
                True,
                "the serving runtime is the native model: nothing to compare",
                {"max_abs_diff": 0.0, "rows": rows, "runtime": runtime.name, "failing_rows": 0},
            )
        if rows == 0:
            return self._result(False, "no evaluation rows to compare", {"runtime": runtime.name})
        packaged = ctx.candidate_model
        native = NativeRuntime(packaged.native, signature, packaged.flavor.scores)
        with one_thread():
            try:
                want = np.asarray(native.scores(inputs), dtype=np.float64).reshape(rows, -1)
            except Exception as exc:  # the model failing on the rows is a verdict
                summary = f"the native model failed on the rows: {type(exc).__name__}: {exc}"
                return self._result(False, summary, {"runtime": runtime.name})
            try:
                got = np.asarray(runtime.scores(inputs), dtype=np.float64).reshape(rows, -1)
            except Exception as exc:
                summary = f"{runtime.name} failed on the rows: {type(exc).__name__}: {exc}"
                return self._result(False, summary, {"runtime": runtime.name})
        if got.shape != want.shape:
            summary = (
                f"{runtime.name} output shape {got.shape} differs from the native {want.shape}"
            )
            return self._result(False, summary, {"runtime": runtime.name, "rows": rows})
        return self._compare(runtime.name, got, want)

    def _compare(self, runtime: str, got: np.ndarray, want: np.ndarray) -> GateResult:
        rows = len(want)
        both_nan = np.isnan(got) & np.isnan(want)
        with np.errstate(invalid="ignore"):
            diff = np.where(both_nan | (got == want), 0.0, np.abs(got - want))
        diff = np.nan_to_num(diff, nan=np.inf)  # NaN against a number: as far apart as can be
        allowed = self.atol + self.rtol * np.nan_to_num(np.abs(want), nan=0.0, posinf=0.0)
        bad = ~(diff <= allowed)
        per_row = diff.max(axis=1)
        failing = int(bad.any(axis=1).sum())
        max_diff = float(per_row.max())
        worst = np.argsort(-per_row, kind="stable")[:WORST_ROWS]
        details = tuple(
            {
                "row": int(i),
                "abs_diff": _finite_or_none(float(per_row[i])),
                "native": _floats(want[i]),
                "served": _floats(got[i]),
            }
            for i in worst
            if per_row[i] > 0
        )
        numbers = {
            "max_abs_diff": _finite_or_none(max_diff),
            "rows": rows,
            "failing_rows": failing,
            "runtime": runtime,
        }
        shown = f"{max_diff:.3g}" if np.isfinite(max_diff) else "inf (a value is NaN or infinite)"
        tolerance = f"atol {self.atol:g}" + (f" + rtol {self.rtol:g}" if self.rtol else "")
        if failing:
            summary = (
                f"{runtime} differs from the native model on {failing} of {rows} rows: "
                f"max |diff| {shown} > {tolerance}"
            )
            return self._result(False, summary, numbers, details)
        summary = (
            f"{runtime} matches the native model on {rows} rows: max |diff| {shown} <= {tolerance}"
        )
        return self._result(True, summary, numbers, details)
