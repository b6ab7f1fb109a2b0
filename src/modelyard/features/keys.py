"""Join key types: a key compares with the source's type and is never coerced.

A view's join key is a **string** key (its source column is ``VARCHAR``) or an **integer**
key (any integer column type). Entity keys must have the same type, on every path: an
entity frame's key column of another type (``int64`` against ``VARCHAR``, floats, bools,
a mix of ``str`` and ``int``) is an ``InvalidInputError`` naming both types, and an online
read of a key of another type than the store holds is too. The string ``"01"`` and the
integer ``1`` are different keys and never meet.

Text with no types of its own (a CSV entity file, ``KEY=VALUE`` on the command line) is
parsed by ``parse_text_key``, the one documented cast: for a string key the text is the
key as written; for an integer key the text must be an integer written canonically
(ASCII digits, an optional ``-``, no leading zeros, no spaces), else it is refused.

>>> parse_text_key("01", "string", "carrier")
'01'
>>> parse_text_key("17", "int", "driver_id")
17
>>> parse_text_key("01", "int", "driver_id")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
modelyard.errors.InvalidInputError: Expected an integer key written like 17 in 'driver_id' ...
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from modelyard.errors import InvalidInputError

__all__ = [
    "DUCKDB_INTS",
    "KeyType",
    "arrow_key_type",
    "column_key_type",
    "frame_key_type",
    "parse_text_key",
    "value_type_name",
]

KeyType = Literal["string", "int"]
#: DuckDB's integer column types
DUCKDB_INTS = frozenset(
    {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT"}
    | {"UINTEGER", "UBIGINT", "UHUGEINT"}
)
_CANONICAL_INT = re.compile(r"-?(?:0|[1-9][0-9]*)\Z", re.ASCII)


def column_key_type(kind: str) -> KeyType | None:
    """The key type of a DuckDB column type; None when it cannot be a join key."""
    if kind == "VARCHAR":
        return "string"
    if kind in DUCKDB_INTS:
        return "int"
    return None


def arrow_key_type(dtype: pa.DataType) -> KeyType | None:
    """The key type of an Arrow type; None when it cannot be a join key."""
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "string"
    if pa.types.is_integer(dtype):
        return "int"
    return None


def value_type_name(value: Any) -> str:
    """``string`` or ``int`` for a key value of that type, else its Python type's name."""
    if isinstance(value, str | np.str_):
        return "string"
    if isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
        return "int"
    return type(value).__name__


def _names(values: Iterable[Any]) -> set[str]:
    return {value_type_name(v) for v in values if v is not None and not _is_na(v)}


def _is_na(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def frame_key_type(values: pd.Series[Any]) -> str | None:
    """``string``, ``int`` or a description of another type; None when every value is null."""
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if isinstance(dtype, pd.StringDtype):
        return "string" if bool(values.notna().any()) else None
    if pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
        names = _names(values.tolist())
        if not names:
            return None
        if len(names) == 1:
            return names.pop()
        return "a mix of " + " and ".join(sorted(names))
    return str(dtype)


def parse_text_key(text: Any, key_type: KeyType, where: str) -> Any:
    """Key text (a CSV cell, a command-line value) as a key of ``key_type``; None stays None."""
    if text is None or _is_na(text):
        return None
    text = str(text)
    if key_type == "string":
        return text
    if not _CANONICAL_INT.match(text):
        raise InvalidInputError(
            f"Expected an integer key written like 17 in {where!r} (the source's keys are "
            f"integers), got {text!r}",
            loc=where,
        )
    return int(text)
