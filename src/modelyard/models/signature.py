"""The input signature of a model: names, order, types, nullability, ranges, categories.

Inferred from the training frame, stored in the package, and checked on every input.
A nullable integer column is an integer column that may be missing, not a reason to
drop the signature (as MLflow does).

>>> import pandas as pd
>>> frame = pd.DataFrame({"age": pd.array([31, None], dtype="Int64"), "plan": ["a", "b"]})
>>> sig = infer_signature(frame)
>>> [(c.name, c.dtype, c.nullable) for c in sig.columns]
[('age', 'int', True), ('plan', 'string', False)]
>>> sig.check_frame(pd.DataFrame({"age": [40], "plan": ["a"], "extra": [1]}))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
modelyard.errors.InvalidInputError: 1 problem with the input: unexpected column 'extra' (...)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import numpy as np

from modelyard.errors import InvalidInputError, Problem

__all__ = [
    "Change",
    "ColumnSpec",
    "DType",
    "Signature",
    "allows_null",
    "changes",
    "differences",
    "infer_signature",
]

DType = Literal["float", "int", "bool", "string", "category", "datetime"]
#: how many distinct values of a text column make it categorical with a vocabulary
MAX_VOCABULARY = 1000


class ColumnSpec(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One input column as the model was trained on it."""

    name: str
    dtype: DType
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None


class Signature(msgspec.Struct, frozen=True, kw_only=True):
    """The columns a model takes, in order, and what to do with surprises."""

    columns: list[ColumnSpec]
    #: "reject" an input with columns the model does not know, or "ignore" them
    extra_columns: Literal["reject", "ignore"] = "reject"
    #: "reject" missing values in columns trained without them, or "allow" them
    missing_values: Literal["reject", "allow"] = "reject"

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> ColumnSpec:
        for col in self.columns:
            if col.name == name:
                return col
        raise InvalidInputError(f"No column {name!r} in the signature", loc=name)

    def check_frame(self, frame: Any) -> list[Problem]:
        """Problems of a pandas frame against the signature; raises if there are any."""
        problems: list[Problem] = []
        present = set(map(str, frame.columns))
        for col in self.columns:
            if col.name not in present:
                problems.append(Problem(col.name, f"column of {col.dtype}", "nothing"))
        if self.extra_columns == "reject":
            for name in frame.columns:
                if str(name) not in {c.name for c in self.columns}:
                    problems.append(Problem(str(name), "no such column", "a column"))
        for col in self.columns:
            if col.name in present:
                problems.extend(_check_column(col, frame[col.name], self.missing_values))
        if problems:
            raise InvalidInputError(
                f"{len(problems)} problem{'s' if len(problems) > 1 else ''} with the input: "
                + "; ".join(_describe(p) for p in problems[:5]),
                problems=problems,
            )
        return problems


def _describe(problem: Problem) -> str:
    if problem.expected == "no such column":
        return f"unexpected column {problem.loc!r} (extra columns are rejected)"
    if problem.got == "nothing":
        return f"missing column {problem.loc!r}"
    return f"{problem.loc}: expected {problem.expected}, got {problem.got}"


_KINDS: dict[str, DType] = {"f": "float", "i": "int", "u": "int", "b": "bool", "M": "datetime"}


def _dtype_of(series: Any) -> DType:
    import pandas as pd

    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    if isinstance(dtype, pd.DatetimeTZDtype):
        return "datetime"
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    kind = getattr(dtype, "kind", "O")
    return _KINDS.get(kind, "string")


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def infer_signature(
    frame: Any,
    *,
    extra_columns: Literal["reject", "ignore"] = "reject",
    missing_values: Literal["reject", "allow"] = "reject",
) -> Signature:
    """The signature of a pandas DataFrame (or anything ``pandas.DataFrame()`` accepts)."""
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        try:
            frame = pd.DataFrame(frame)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"Expected a table-like training frame, got {type(frame).__name__}",
                loc="training_frame",
            ) from exc
    if frame.columns.duplicated().any():
        dup = frame.columns[frame.columns.duplicated()][0]
        raise InvalidInputError(f"Expected unique column names, got {dup!r} twice", loc=str(dup))
    columns = []
    for name in frame.columns:
        series = frame[name]
        dtype = _dtype_of(series)
        nullable = bool(series.isna().any())
        spec = ColumnSpec(name=str(name), dtype=dtype, nullable=nullable)
        present = series.dropna()
        if dtype in ("float", "int") and len(present):
            values = present.to_numpy(dtype="float64")
            values = values[np.isfinite(values)]
            if len(values):
                spec = msgspec.structs.replace(
                    spec, min=_finite(values.min()), max=_finite(values.max())
                )
        elif dtype == "category":
            spec = msgspec.structs.replace(spec, categories=[str(c) for c in series.cat.categories])
        elif dtype == "string":
            unique = present.astype(str).unique()
            if len(unique) <= MAX_VOCABULARY:
                spec = msgspec.structs.replace(spec, categories=sorted(unique.tolist()))
        columns.append(spec)
    return Signature(columns=columns, extra_columns=extra_columns, missing_values=missing_values)


def _check_column(col: ColumnSpec, series: Any, missing: str) -> list[Problem]:
    problems = []
    got = _dtype_of(series)
    numeric = {"float", "int", "bool"}
    compatible = (
        got == col.dtype
        or (col.dtype == "float" and got in ("int", "bool"))
        or (col.dtype in ("string", "category") and got in ("string", "category"))
    )
    if not compatible and not (col.dtype in numeric and got in numeric):
        problems.append(Problem(col.name, col.dtype, f"a column of {got}"))
        return problems
    if not col.nullable and missing == "reject" and bool(series.isna().any()):
        index = int(np.flatnonzero(series.isna().to_numpy())[0])
        problems.append(Problem(f"{col.name}[{index}]", f"{col.dtype} (no missing values)", "null"))
    return problems


# -- compatibility of two signatures ----------------------------------------------------------

#: what a :class:`Change` is about
ChangeKind = Literal["removed", "added", "type", "nullability", "categories", "range"]


def allows_null(signature: Signature, spec: ColumnSpec) -> bool:
    """Whether ``spec`` may hold a missing value under ``signature``'s policy."""
    return spec.nullable or signature.missing_values == "allow"


@dataclass(frozen=True)
class Change:
    """One reason ``other`` could not take a request ``primary`` takes.

    ``kind`` is removed (the primary takes the column, ``other`` rejects it as extra),
    added (``other`` needs a column the primary does not take; ``nullable`` says whether a
    null may be sent for it), type, nullability, categories or range.
    """

    kind: ChangeKind
    column: str
    message: str
    nullable: bool = False


def _listed(values: list[str]) -> str:
    shown = ", ".join(repr(v) for v in values[:5])
    return shown + (f" and {len(values) - 5} more" if len(values) > 5 else "")


def _narrowed_range(base: ColumnSpec, other: ColumnSpec, primary: str) -> str | None:
    low_base = float("-inf") if base.min is None else base.min
    high_base = float("inf") if base.max is None else base.max
    low = float("-inf") if other.min is None else other.min
    high = float("inf") if other.max is None else other.max
    if low > low_base or high < high_base:
        return (
            f"column {base.name!r} takes a narrower range: [{low}, {high}] here, "
            f"[{low_base}, {high_base}] in {primary} (value_checks: reject)"
        )
    return None


def _column_changes(
    base_sig: Signature,
    base: ColumnSpec,
    sig: Signature,
    other: ColumnSpec,
    strict: bool,
    primary: str,
) -> list[Change]:
    name = base.name
    if base.dtype != other.dtype:
        message = f"column {name!r} changed type: {base.dtype} in {primary}, {other.dtype} here"
        return [Change("type", name, message)]
    out = []
    if allows_null(base_sig, base) and not allows_null(sig, other):
        out.append(
            Change("nullability", name, f"column {name!r} may be null in {primary}, not here")
        )
    if other.categories is not None and (other.dtype == "category" or strict):
        missing = [c for c in (base.categories or []) if c not in set(other.categories)]
        if base.categories is None:
            message = f"column {name!r} takes any value in {primary}, only listed ones here"
            out.append(Change("categories", name, message))
        elif missing:
            message = (
                f"column {name!r} has narrowed categories: {_listed(missing)} "
                f"taken by {primary}, not here"
            )
            out.append(Change("categories", name, message))
    if strict and base.dtype in ("int", "float"):
        narrowed = _narrowed_range(base, other, primary)
        if narrowed is not None:
            out.append(Change("range", name, narrowed))
    return out


def changes(
    primary: Signature,
    other: Signature,
    *,
    strict_values: bool = False,
    called: str = "the primary",
) -> list[Change]:
    """Why ``other`` could not take every request ``primary`` takes, one :class:`Change` each.

    ``strict_values`` (the server's ``value_checks: reject``) also counts narrowed ranges
    and vocabularies of text columns, since a value outside them is then refused.
    ``called`` is how messages name ``primary`` ("the champion" for a promotion gate).
    """
    base = {spec.name: spec for spec in primary.columns}
    mine = {spec.name: spec for spec in other.columns}
    out = []
    for name in base:
        if name not in mine and other.extra_columns == "reject":
            out.append(Change("removed", name, f"column {name!r} is missing ({called} takes it)"))
    for name, spec in mine.items():
        if name not in base:
            message = f"column {name!r} ({spec.dtype}) is new: requests to {called} do not send it"
            out.append(Change("added", name, message, nullable=allows_null(other, spec)))
    for name, spec in mine.items():
        if name in base:
            out += _column_changes(primary, base[name], other, spec, strict_values, called)
    return out


def differences(primary: Signature, other: Signature, *, strict_values: bool = False) -> list[str]:
    """Why ``other`` could not take every request ``primary`` takes (empty: it can).

    >>> a = Signature(columns=[ColumnSpec(name="x", dtype="float"),
    ...                        ColumnSpec(name="k", dtype="int")])
    >>> b = Signature(columns=[ColumnSpec(name="k", dtype="float"),
    ...                        ColumnSpec(name="y", dtype="int")])
    >>> for line in differences(a, b):
    ...     print(line)
    column 'x' is missing (the primary takes it)
    column 'y' (int) is new: requests to the primary do not send it
    column 'k' changed type: int in the primary, float here
    """
    return [change.message for change in changes(primary, other, strict_values=strict_values)]
