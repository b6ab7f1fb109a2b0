"""Every row of a batch checked against the signature, one reason per rejected row.

A column is converted to the array type its signature dtype maps to (as
:func:`modelyard.models.runtimes.build_inputs` would), value by value where the file's
type differs (CSV text, a Parquet column of another type): a value that does not
convert, a missing value in a column trained without any, and, with
``serving.value_checks: reject``, a number outside the trained range or an unseen
category, rejects its row. The first failing column (in signature order) is the
row's reason.

>>> import pyarrow as pa
>>> from modelyard.models.signature import ColumnSpec, Signature
>>> sig = Signature(columns=[ColumnSpec(name="age", dtype="int", min=18, max=90)])
>>> checked = check_batch(sig, pa.record_batch({"age": ["31", "x", None, "95"]}), "reject")
>>> checked.good.tolist()
[True, False, False, False]
>>> for reason in checked.reasons[1:]:
...     print(reason)
expected int, got 'x'
expected int (no missing values), got null
expected number in [18, 90], got 95
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from modelyard.models.signature import ColumnSpec, Signature, allows_null

__all__ = ["CheckedBatch", "check_batch"]

ValueChecks = Literal["reject", "warn", "log"]
_NUMERIC = frozenset({"float", "int", "bool"})
_TRUE = frozenset({"true", "t", "yes", "1", "1.0"})
_FALSE = frozenset({"false", "f", "no", "0", "0.0"})


@dataclass(frozen=True, eq=False)
class CheckedBatch:
    """The batch's signature columns converted, which rows passed, and why others did not."""

    #: one array per signature column, every row (a rejected row's value is meaningless)
    columns: dict[str, np.ndarray]
    good: np.ndarray
    #: the failing column per row (None for a good row)
    reject_columns: list[str | None]
    #: the reason per row (None for a good row)
    reasons: list[str | None]

    @property
    def rejected(self) -> int:
        return int((~self.good).sum())


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _plain(array: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(array.type):
        return array.dictionary_decode()
    return array


def _is_text(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def _is_number(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_decimal(kind)
    )


def _parse_each(texts: np.ndarray, parse: Callable[[str], float]) -> tuple[np.ndarray, np.ndarray]:
    """Values parsed one by one: the floats (NaN for null) and where a value did not parse."""
    values = np.full(len(texts), np.nan)
    bad = np.zeros(len(texts), dtype=bool)
    for i, text in enumerate(texts):
        if text is None:
            continue
        try:
            values[i] = parse(str(text).strip())
        except ValueError:
            bad[i] = True
    return values, bad


def _bool_of(text: str) -> float:
    lowered = text.lower()
    if lowered in _TRUE:
        return 1.0
    if lowered in _FALSE:
        return 0.0
    raise ValueError(text)


def _numeric(spec: ColumnSpec, array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A numeric column as numpy (int64/bool when whole and of that kind, else float64
    with NaN for missing), and where a value did not convert."""
    kind = array.type
    rows = len(array)
    if pa.types.is_null(kind):
        return np.full(rows, np.nan), np.zeros(rows, dtype=bool)
    if _is_number(kind):
        whole = array.null_count == 0
        if spec.dtype == "int" and whole and pa.types.is_integer(kind):
            return np.asarray(pc.cast(array, pa.int64())), np.zeros(rows, dtype=bool)
        if spec.dtype == "bool" and whole and pa.types.is_boolean(kind):
            return np.asarray(array, dtype=bool), np.zeros(rows, dtype=bool)
        floats = pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False)
        return np.asarray(floats, dtype=np.float64), np.zeros(rows, dtype=bool)
    if _is_text(kind):
        if spec.dtype == "bool":
            return _parse_each(array.to_numpy(zero_copy_only=False), _bool_of)
        try:  # the fast path: every value converts
            floats = pc.cast(pc.utf8_trim_whitespace(array), pa.float64())
            return floats.to_numpy(zero_copy_only=False), np.zeros(rows, dtype=bool)
        except pa.ArrowInvalid:
            return _parse_each(array.to_numpy(zero_copy_only=False), float)
    # another type (a timestamp, a list...): no row of it is a number
    return np.full(rows, np.nan), np.asarray(array.is_valid())


def _text(array: pa.Array) -> np.ndarray:
    if not _is_text(array.type):
        array = pc.cast(array, pa.string())
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=object)


def _datetime(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd  # pandas parses the many spellings of a time; only this dtype needs it

    if pa.types.is_timestamp(array.type) or pa.types.is_date(array.type):
        stamps = pc.cast(array, pa.timestamp("ns", tz=getattr(array.type, "tz", None)))
        values = pd.Series(stamps.to_pandas()).to_numpy()
        return np.asarray(values), np.zeros(len(array), dtype=bool)
    texts = pd.Series(_text(array))
    parsed = pd.to_datetime(texts, errors="coerce", utc=True)
    bad = (parsed.isna() & texts.notna()).to_numpy()
    return np.asarray(parsed.dt.tz_localize(None).to_numpy()), bad


def _missing(values: np.ndarray, array: pa.Array) -> np.ndarray:
    if values.dtype.kind == "f":
        return np.asarray(np.isnan(values))
    if values.dtype.kind == "M":
        return np.asarray(np.isnat(values))
    if values.dtype == object:
        return np.fromiter((v is None for v in values), dtype=bool, count=len(values))
    return np.asarray(array.is_null())


def _out_of_range(spec: ColumnSpec, values: np.ndarray) -> np.ndarray | None:
    if values.dtype.kind not in "iuf" or (spec.min is None and spec.max is None):
        return None
    numbers = values.astype(np.float64, copy=False)
    low = -np.inf if spec.min is None else spec.min
    high = np.inf if spec.max is None else spec.max
    with np.errstate(invalid="ignore"):  # NaN is missing, not out of range
        return np.asarray((numbers < low) | (numbers > high))


def _range_text(spec: ColumnSpec) -> str:
    low = "-inf" if spec.min is None else _number(spec.min)
    high = "inf" if spec.max is None else _number(spec.max)
    return f"number in [{low}, {high}]"


def _unknown(spec: ColumnSpec, values: np.ndarray) -> np.ndarray | None:
    if spec.categories is None or spec.dtype not in ("string", "category"):
        return None
    known = frozenset(spec.categories)
    return np.fromiter(
        (v is not None and v not in known for v in values), dtype=bool, count=len(values)
    )


def check_batch(
    signature: Signature, batch: pa.RecordBatch, value_checks: ValueChecks
) -> CheckedBatch:
    """The signature's columns of ``batch`` converted and checked, row by row."""
    rows = batch.num_rows
    good = np.ones(rows, dtype=bool)
    reject_columns: list[str | None] = [None] * rows
    reasons: list[str | None] = [None] * rows
    columns: dict[str, np.ndarray] = {}

    # ``why`` is called before ``reject`` returns: the loop's variables it reads are current
    def reject(mask: np.ndarray, spec: ColumnSpec, why: Callable[[int], str]) -> None:
        for i in np.flatnonzero(mask & good).tolist():
            reject_columns[i] = spec.name
            reasons[i] = why(i)
        good[mask] = False

    for spec in signature.columns:
        array = _plain(batch.column(spec.name))
        if spec.dtype in _NUMERIC:
            values, bad = _numeric(spec, array)
        elif spec.dtype == "datetime":
            values, bad = _datetime(array)
        else:
            values, bad = _text(array), np.zeros(rows, dtype=bool)
        columns[spec.name] = values
        if bad.any():
            originals = array.to_pylist()
            reject(bad, spec, lambda i: f"expected {spec.dtype}, got {_short(originals[i])}")  # noqa: B023
        if not allows_null(signature, spec):
            missing = _missing(values, array) & ~bad
            if missing.any():
                reject(
                    missing,
                    spec,
                    lambda i: f"expected {spec.dtype} (no missing values), got null",  # noqa: B023
                )
        if value_checks != "reject":
            continue
        outside = _out_of_range(spec, values)
        if outside is not None and outside.any():
            shown = _range_text(spec)
            reject(outside, spec, lambda i: f"expected {shown}, got {_number(values[i])}")  # noqa: B023
        unknown = _unknown(spec, values)
        if unknown is not None and unknown.any():
            listed = ", ".join((spec.categories or [])[:10])
            listed += ", ..." if len(spec.categories or []) > 10 else ""
            reject(
                unknown,
                spec,
                lambda i: (
                    f"expected one of the training categories ({listed}), "  # noqa: B023
                    f"got {_short(values[i])}"  # noqa: B023
                ),
            )
    return CheckedBatch(columns, good, reject_columns, reasons)
