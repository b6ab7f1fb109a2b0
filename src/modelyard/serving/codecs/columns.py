"""Typed columns from decoded values, checked against the signature, then ``Inputs``.

The conventions are :func:`modelyard.models.runtimes.build_inputs`'s: float64 for floats,
int64 and bool for ints and bools (float64 with NaN when a value is missing), object
arrays of ``str``/``None`` for text and categories, ``datetime64[ns]`` for datetimes.
Values are checked strictly: ``true`` is not a number, ``1`` is not a boolean (except in
one numeric matrix, where a bool column holds 0 or 1), ``"3"`` is not a number, and
``2.5`` is not an integer (``2.0`` is).

>>> from modelyard.models.signature import ColumnSpec
>>> found = ProblemList()
>>> spec = ColumnSpec(name="age", dtype="int")
>>> column_from_values(spec, [31, 40.0], allow_null=False, loc=str, found=found).tolist()
[31, 40]
>>> column_from_values(spec, [31, "x", 2.5], allow_null=False, loc=str, found=found)
>>> [(p.loc, p.expected, p.got) for p in found.items]
[('1', 'integer', '"x"'), ('2', 'integer', '2.5')]
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from modelyard.models.runtimes import NUMERIC, Inputs
from modelyard.models.signature import ColumnSpec, Signature, allows_null
from modelyard.serving.codecs.problems import MAX_PROBLEMS, ProblemList

__all__ = [
    "EXPECTED",
    "Loc",
    "allows_null",
    "assemble",
    "column_from_array",
    "column_from_values",
    "expected",
    "plain_numbers",
]

#: where the value at a (flat) index of a column came from, as a JSON path
Loc = Callable[[int], str]

EXPECTED = {
    "float": "number",
    "int": "integer",
    "bool": "boolean",
    "string": "string",
    "category": "string",
    "datetime": "ISO 8601 datetime string",
}
_NUMBER_TYPES = frozenset({int, float})
_NULL = type(None)
_INT64_LIMIT = 2.0**63
_OFFSET = re.compile(r"[T ].*[+-]\d\d:?\d\d$")


def expected(spec: ColumnSpec) -> str:
    return EXPECTED[spec.dtype]


def _report(
    found: ProblemList, mask: np.ndarray, loc: Loc, wanted: str, values: np.ndarray, null: str
) -> None:
    index = np.flatnonzero(mask)
    keep = max(0, MAX_PROBLEMS - len(found.items))
    for i in index[:keep].tolist():
        value = values[i].item()
        if isinstance(value, float) and math.isnan(value):
            found.add(loc(i), wanted, null, raw=True)
        else:
            found.add(loc(i), wanted, value)
    found.count(max(0, len(index) - keep))


def _not_null(spec: ColumnSpec) -> str:
    return f"{expected(spec)} (not null: column {spec.name!r} has no missing values)"


def column_from_array(
    spec: ColumnSpec,
    array: np.ndarray,
    *,
    allow_null: bool,
    loc: Loc,
    found: ProblemList,
    null: str = "NaN",
) -> np.ndarray:
    """A numeric column from a numeric (or bool) 1-d array; NaN is a missing value."""
    before = found.total
    if spec.dtype == "bool" and array.dtype.kind == "b":
        return array
    if spec.dtype == "int" and array.dtype.kind in "iub":
        if array.dtype == np.uint64 and len(array) and array.max() >= 2**63:
            _report(found, array >= 2**63, loc, "integer within int64", array, null)
        return array.astype(np.int64, copy=False)
    if array.dtype.kind == "b":
        array = array.astype(np.float64)
    values = array.astype(np.float64, copy=False)
    missing = np.isnan(values)
    if missing.any() and not allow_null:
        _report(found, missing, loc, _not_null(spec), values, null)
    if spec.dtype == "float":
        infinite = np.isinf(values)
        if infinite.any():
            _report(found, infinite, loc, "finite number", values, null)
        return values
    if spec.dtype == "int":
        finite = ~missing & np.isfinite(values)
        whole = np.zeros(len(values), dtype=bool)
        np.equal(values, np.trunc(values), out=whole, where=finite)
        bad = ~missing & ~(whole & (np.abs(values) < _INT64_LIMIT))
        if bad.any():
            _report(found, bad, loc, "integer", values, null)
    else:  # bool from numbers: only in a numeric matrix, where it is 0 or 1
        bad = ~missing & (values != 0) & (values != 1)
        if bad.any():
            _report(found, bad, loc, "boolean (0 or 1 in a numeric tensor)", values, null)
    if missing.any() or found.total > before:
        return values
    return values.astype(np.int64 if spec.dtype == "int" else bool)


def _by_element(
    spec: ColumnSpec,
    values: Sequence[Any],
    allowed: frozenset[type],
    allow_null: bool,
    loc: Loc,
    found: ProblemList,
) -> None:
    wanted = expected(spec)
    for i, value in enumerate(values):
        kind = type(value)
        if kind is _NULL:
            if not allow_null:
                found.add(loc(i), _not_null(spec), None)
        elif (
            kind not in allowed
            or (spec.dtype == "datetime" and not _datetime_ok(value))
            or (kind is float and spec.dtype == "int" and not value.is_integer())
        ):
            found.add(loc(i), wanted, value)
        elif kind is int and not _fits(value, spec.dtype):
            found.add(loc(i), "integer within int64" if spec.dtype == "int" else wanted, value)


def _fits(value: int, dtype: str) -> bool:
    if dtype == "int":
        return -(2**63) <= value < 2**63
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _datetime_ok(text: str) -> bool:
    if _OFFSET.search(text):
        return False
    try:
        np.datetime64(text.removesuffix("Z"), "ns")
    except ValueError:
        return False
    return True


def _objects(values: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


#: up to this many values, a float column is checked element by element in Python
_SMALL = 16


def column_from_values(
    spec: ColumnSpec,
    values: Sequence[Any],
    *,
    allow_null: bool,
    loc: Loc,
    found: ProblemList,
) -> np.ndarray | None:
    """A column from decoded JSON values; ``None`` (and problems in ``found``) when bad."""
    kinds = set(map(type, values))
    if spec.dtype in ("float", "int"):
        allowed = _NUMBER_TYPES
        if spec.dtype == "float" and kinds <= {int, float} and len(values) <= _SMALL:
            # a few plain numbers (the 1-row request): checked in Python, faster than numpy
            try:
                if all(math.isfinite(v) for v in values):
                    return np.array(values, dtype=np.float64)
            except OverflowError:  # an int past float64: the general path reports it
                pass
        if kinds <= {int, float, _NULL}:
            try:
                if kinds == {int} and spec.dtype == "int":
                    return np.array(values, dtype=np.int64)
                array = np.array(values, dtype=np.float64)
            except OverflowError:
                pass
            else:
                return column_from_array(
                    spec, array, allow_null=allow_null, loc=loc, found=found, null="null"
                )
    elif spec.dtype == "bool":
        allowed = frozenset({bool})
        if kinds <= {bool}:
            return np.array(values, dtype=bool)
        if kinds <= {bool, _NULL}:
            array = np.array(values, dtype=np.float64)
            return column_from_array(
                spec, array, allow_null=allow_null, loc=loc, found=found, null="null"
            )
    else:
        allowed = frozenset({str})
        ok = kinds <= {str} or (kinds <= {str, _NULL} and allow_null)
        if ok and spec.dtype != "datetime":
            return _objects(values)
        if ok:
            cleaned = [None if v is None else v.removesuffix("Z") for v in values]
            if not any(v is not None and _OFFSET.search(v) for v in cleaned):
                try:
                    return np.array(cleaned, dtype="datetime64[ns]")
                except ValueError:
                    pass
    before = found.total
    _by_element(spec, values, allowed, allow_null, loc, found)
    if found.total == before:  # pragma: no cover - every slow path finds a problem
        found.add(loc(0), expected(spec), values[0] if values else None)
    return None


_PLAIN = frozenset({int, float})
_INT = frozenset({int})


def plain_numbers(signature: Signature, values: Sequence[Sequence[Any]]) -> Inputs | None:
    """The common request in one pass: every column a float or an int, every value a plain
    number (an ``int`` in an int column), finite and within int64 where it must be.

    ``values`` holds each signature column's values, in signature order. The answer is
    what :func:`column_from_values` and :func:`assemble` give for the same values, built
    with one numpy call instead of one per column; ``None`` when any value needs their
    checks (a null, a boolean, text, ``2.0`` in an int column, an out-of-range number),
    so the caller takes the general path, which reports it.

    >>> from modelyard.models.signature import ColumnSpec
    >>> sig = Signature(columns=[ColumnSpec(name="age", dtype="int"),
    ...                          ColumnSpec(name="amount", dtype="float")])
    >>> inputs = plain_numbers(sig, [[31, 40], [9.5, 3]])
    >>> [c.dtype.name for c in inputs.columns], inputs.matrix.tolist()
    (['int64', 'float64'], [[31.0, 9.5], [40.0, 3.0]])
    >>> plain_numbers(sig, [[31, 40.0], [9.5, 3]]) is None  # 40.0: the general path
    True
    """
    specs = signature.columns
    if not specs or len(values) != len(specs):
        return None
    rows = len(values[0])
    ints = []
    for spec, column in zip(specs, values, strict=True):
        if len(column) != rows or spec.dtype not in ("float", "int"):
            return None
        if spec.dtype == "int":
            ints.append(column)
    if rows == 0 or not set(map(type, itertools.chain.from_iterable(values))) <= _PLAIN:
        return None
    if ints and set(map(type, itertools.chain.from_iterable(ints))) != _INT:
        return None
    try:
        block = np.array(values, dtype=np.float64)  # (columns, rows)
        typed = [
            np.array(column, dtype=np.int64) if spec.dtype == "int" else block[j]
            for j, (spec, column) in enumerate(zip(specs, values, strict=True))
        ]
    except OverflowError:  # past float64 or int64: the general path names the value
        return None
    if not np.isfinite(block).all():
        return None
    return Inputs(
        names=tuple(signature.names), columns=tuple(typed), matrix=np.ascontiguousarray(block.T)
    )


def assemble(signature: Signature, columns: Sequence[np.ndarray]) -> Inputs:
    """``Inputs`` from checked columns in signature order, with the numeric matrix."""
    matrix = None
    if columns and all(spec.dtype in NUMERIC for spec in signature.columns):
        matrix = np.empty((len(columns[0]), len(columns)), dtype=np.float64)
        for j, values in enumerate(columns):
            matrix[:, j] = values
    return Inputs(names=tuple(signature.names), columns=tuple(columns), matrix=matrix)
