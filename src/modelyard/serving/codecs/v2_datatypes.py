"""Whether the JSON values of a v2 tensor are values of its declared ``datatype``.

A tensor's ``datatype`` is a promise about every element: an ``INT8`` tensor holds whole
numbers from -128 to 127, an ``FP32`` tensor numbers that stay finite as float32, a
``BOOL`` tensor ``true``/``false``. The ranges are numpy's own (``np.iinfo``, and a cast
to the float type). ``null`` passes here: whether a column may miss a value is the
column's check.

>>> found = ProblemList()
>>> check_datatype([1, 1.5, 2.0, 300], "INT8", lambda k: f"$.data[{k}]", found)
>>> [(p.loc, p.got) for p in found.items]
[('$.data[1]', '1.5'), ('$.data[3]', '300')]
>>> found = ProblemList()
>>> check_datatype([1.0, 1e39, True], "FP32", lambda k: f"$.data[{k}]", found)
>>> [(p.loc, p.got) for p in found.items]
[('$.data[2]', 'true'), ('$.data[1]', '1e+39')]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from modelyard.serving.codecs.problems import ProblemList

__all__ = ["check_datatype"]

_NULL = type(None)
_INT_RANGES: dict[str, tuple[int, int]] = {
    name: (int(np.iinfo(kind).min), int(np.iinfo(kind).max))
    for name, kind in (
        ("INT8", np.int8),
        ("INT16", np.int16),
        ("INT32", np.int32),
        ("INT64", np.int64),
        ("UINT8", np.uint8),
        ("UINT16", np.uint16),
        ("UINT32", np.uint32),
        ("UINT64", np.uint64),
    )
}
_FLOAT_TYPES: dict[str, type[np.floating[Any]]] = {"FP16": np.float16, "FP32": np.float32}
_FLOAT_MAX = {name: float(np.finfo(kind).max) for name, kind in _FLOAT_TYPES.items()}


def _whole(value: Any, low: int, high: int) -> bool:
    kind = type(value)
    if kind is int:
        return bool(low <= value <= high)
    if kind is float:
        return bool(value.is_integer() and low <= value <= high)
    return kind is _NULL


def _finite_as(value: Any, kind: type[np.floating[Any]]) -> bool:
    if type(value) is _NULL:
        return True
    if type(value) not in (int, float):
        return False
    try:
        with np.errstate(over="ignore"):
            return bool(np.isfinite(kind(value)))
    except OverflowError:  # an int past float64
        return False


def check_datatype(
    values: Sequence[Any], datatype: str, loc: Callable[[int], str], found: ProblemList
) -> None:
    """Add a problem for each of ``values`` that is not a value of ``datatype``."""
    kinds = set(map(type, values))
    if datatype == "BOOL":
        if not kinds <= {bool, _NULL}:
            for k, value in enumerate(values):
                if type(value) not in (bool, _NULL):
                    found.add(loc(k), "boolean (a BOOL tensor)", value)
        return
    if datatype == "BYTES":
        return  # text: the column's check says what it must be
    if datatype in _INT_RANGES:
        low, high = _INT_RANGES[datatype]
        if kinds <= {int, _NULL}:
            present = [v for v in values if v is not None] if _NULL in kinds else values
            if not present or (low <= min(present) and max(present) <= high):
                return
        wanted = f"integer from {low} to {high} (an {datatype} tensor)"
        for k, value in enumerate(values):
            if not _whole(value, low, high):
                found.add(loc(k), wanted, value)
        return
    if bool in kinds or not kinds <= {int, float, _NULL}:
        for k, value in enumerate(values):
            if type(value) not in (int, float, _NULL):
                found.add(loc(k), f"number (an {datatype} tensor)", value)
    kind = _FLOAT_TYPES.get(datatype)
    if kind is None:
        return  # FP64: the column's check reports numbers past float64
    limit = _FLOAT_MAX[datatype]
    if kinds <= {int, float}:
        try:
            if len(values) == 0 or float(np.max(np.abs(np.array(values, np.float64)))) <= limit / 2:
                return  # well inside the range: the common case, one numpy pass
        except OverflowError:
            pass  # an int past float64: found below
    wanted = f"number within {datatype} range (|x| <= {limit:.6g})"
    for k, value in enumerate(values):
        if type(value) in (int, float) and abs(value) > limit / 2 and not _finite_as(value, kind):
            found.add(loc(k), wanted, value)
