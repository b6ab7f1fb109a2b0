"""Value checks past the types: numbers inside the trained range, categories seen in training.

One problem per column (its first offending row, and how many more), vectorised with
numpy. ``mode="reject"`` raises them as one 422; ``"warn"`` and ``"log"`` return them for
the caller to warn about or log, and the request goes on.

>>> from modelyard.models.signature import ColumnSpec, Signature
>>> from modelyard.models.runtimes import build_inputs
>>> sig = Signature(columns=[ColumnSpec(name="age", dtype="int", min=18, max=90),
...                          ColumnSpec(name="plan", dtype="string", categories=["a", "b"])])
>>> inputs = build_inputs(sig, {"age": [30, 120, 5], "plan": ["a", "z", "b"]})
>>> for p in check_values(sig, inputs, mode="warn"):
...     print(p.loc, "|", p.expected, "|", p.got)
age[1] | number in [18, 90] | 120 (and 1 more row)
plan[1] | one of the training categories (a, b) | "z"
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from modelyard.errors import InvalidInputError, Problem
from modelyard.models.runtimes import Inputs
from modelyard.models.signature import ColumnSpec, Signature
from modelyard.serving.codecs.problems import short_repr

__all__ = ["check_values"]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _problem(
    spec: ColumnSpec, bad: np.ndarray, values: np.ndarray, expected: str
) -> Problem | None:
    index = np.flatnonzero(bad)
    if not len(index):
        return None
    first = int(index[0])
    value = values[first]
    got = short_repr(value) if isinstance(value, str) else _number(float(value))
    if len(index) > 1:
        got += f" (and {len(index) - 1} more row{'s' if len(index) > 2 else ''})"
    return Problem(f"{spec.name}[{first}]", expected, got)


def _range(spec: ColumnSpec, values: np.ndarray) -> Problem | None:
    if values.dtype.kind not in "iuf" or (spec.min is None and spec.max is None):
        return None
    numbers = values.astype(np.float64, copy=False)
    low = -np.inf if spec.min is None else spec.min
    high = np.inf if spec.max is None else spec.max
    with np.errstate(invalid="ignore"):  # NaN is a missing value, not out of range
        bad = (numbers < low) | (numbers > high)
    shown = f"[{_number(low) if spec.min is not None else '-inf'}, "
    shown += f"{_number(high) if spec.max is not None else 'inf'}]"
    return _problem(spec, bad, values, f"number in {shown}")


def _category(spec: ColumnSpec, values: np.ndarray) -> Problem | None:
    if spec.categories is None or spec.dtype not in ("string", "category"):
        return None
    known = frozenset(spec.categories)
    bad = np.fromiter((v is not None and v not in known for v in values), bool, len(values))
    listed = ", ".join(spec.categories[:10]) + (", ..." if len(spec.categories) > 10 else "")
    return _problem(spec, bad, values, f"one of the training categories ({listed})")


class _Bounds:
    """A signature's numeric ranges as two vectors, for one comparison over the matrix."""

    def __init__(self, signature: Signature) -> None:
        self.signature = signature  # held, so the cache key (its id) is not reused
        numeric = all(spec.dtype in ("int", "float", "bool") for spec in signature.columns)
        self.only_ranges = numeric and not any(s.categories for s in signature.columns)
        self.low = np.array(
            [-np.inf if s.min is None else s.min for s in signature.columns], dtype=np.float64
        )
        self.high = np.array(
            [np.inf if s.max is None else s.max for s in signature.columns], dtype=np.float64
        )
        #: (column index, low, high) of the bounded numeric columns
        self.ranges = [
            (j, float(self.low[j]), float(self.high[j]))
            for j, s in enumerate(signature.columns)
            if s.min is not None or s.max is not None
        ]
        #: (column index, known categories) of the text columns with a vocabulary
        self.categories = [
            (j, frozenset(s.categories))
            for j, s in enumerate(signature.columns)
            if s.categories is not None and s.dtype in ("string", "category")
        ]


_BOUNDS: dict[int, _Bounds] = {}


def _bounds(signature: Signature) -> _Bounds:
    found = _BOUNDS.get(id(signature))
    if found is None or found.signature is not signature:
        if len(_BOUNDS) > 1024:  # signatures of unloaded versions
            _BOUNDS.clear()
        found = _BOUNDS[id(signature)] = _Bounds(signature)
    return found


def _all_fine(bounds: _Bounds, inputs: Inputs) -> bool:
    """Whether a few rows are all in range and known, checked in Python (no numpy calls)."""
    if inputs.columns and len(inputs.columns[0]) > _SMALL:
        return False
    for j, low, high in bounds.ranges:
        values = inputs.columns[j]
        if values.dtype.kind not in "iuf":
            return False
        if any(v < low or v > high for v in values.tolist()):  # NaN compares False
            return False
    for j, known in bounds.categories:
        if any(v is not None and v not in known for v in inputs.columns[j]):
            return False
    return True


#: up to this many rows, values are checked in Python first
_SMALL = 16


def check_values(
    signature: Signature, inputs: Inputs, *, mode: Literal["reject", "warn", "log"] = "reject"
) -> list[Problem]:
    """Out-of-range numbers and unseen categories; raises a 422 for them in ``"reject"``."""
    bounds = _bounds(signature)
    if inputs.matrix is not None and bounds.only_ranges:
        # the common case: every value in range, told by one comparison of the matrix
        with np.errstate(invalid="ignore"):  # NaN is missing, not out of range
            if not ((inputs.matrix < bounds.low) | (inputs.matrix > bounds.high)).any():
                return []
    elif _all_fine(bounds, inputs):
        return []
    problems = []
    for spec, values in zip(signature.columns, inputs.columns, strict=True):
        problem = _range(spec, values) or _category(spec, values)
        if problem is not None:
            problems.append(problem)
    if problems and mode == "reject":
        count = len(problems)
        described = "; ".join(
            f"expected {p.expected}, got {p.got} - at {p.loc}" for p in problems[:3]
        )
        raise InvalidInputError(
            f"{count} value{'s' if count > 1 else ''} outside what the model was trained on: "
            f"{described}",
            problems=problems,
        )
    return problems
