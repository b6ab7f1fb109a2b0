"""Reading a frame one column at a time: as float64 numbers or as category counts.

A frame is a pandas DataFrame, a pyarrow Table, a mapping of column name to 1-d array,
or a Parquet file (its path). Columns are read one at a time, so at most one float64
copy of a column is alive.
Kinds follow ``modelyard.models.profile``: ints, floats, datetimes (epoch seconds) and
timedeltas (seconds) are numeric; booleans, strings, categories and other objects are
categorical, keyed by ``str(value)``. An object column that mixes numbers with a few
other cells (``[1.5, "oops", 2.0]``: dirty numbers) is numeric when at least
``NUMERIC_SHARE`` of its non-missing cells are numbers; the other cells are read as
missing and counted in a finding, so one bad cell neither turns a column into
categories nor hides its drift.

>>> frame = read_frame({"x": [1.0, None, 3.0], "c": ["a", "b", "a"]}, "data")
>>> frame.n_rows, column_kind("x", frame.columns["x"]), column_kind("c", frame.columns["c"])
(3, 'numeric', 'categorical')
>>> read_numeric("x", frame.columns["x"]).values.tolist()
[1.0, nan, 3.0]
>>> print(read_numeric("c", frame.columns["c"]).finding)  # doctest: +NORMALIZE_WHITESPACE
type changed: column 'c' arrived as str, not numbers;
3 of 3 cells are not numbers (e.g. 'a') and count as missing
>>> dirty = pd.Series([1.5, 2.0] * 20 + ["oops"], dtype=object)
>>> column_kind("d", dirty), read_numeric("d", dirty).finding
('numeric', "column 'd': 1 of 41 cells are not numbers (e.g. 'oops') and count as missing")
>>> read_counts("c", frame.columns["c"]).counts
{'a': 2, 'b': 1}
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from numpy.typing import NDArray

from modelyard.errors import InvalidInputError

__all__ = [
    "NUMERIC_SHARE",
    "Counts",
    "Frame",
    "Numbers",
    "column_kind",
    "not_numbers",
    "read_counts",
    "read_frame",
    "read_numeric",
]

#: an object column is numeric when at least this share of its non-missing cells are numbers
NUMERIC_SHARE: Final = 0.95
_MIXED: Final = frozenset({"mixed", "mixed-integer", "mixed-integer-float"})


class Frame(NamedTuple):
    """Rows and columns (pandas Series) of an input frame."""

    n_rows: int
    columns: Mapping[str, pd.Series]


class _LazyColumns(Mapping[str, pd.Series]):
    """Columns converted to pandas only when asked for, one at a time."""

    def __init__(self, names: list[str], load: Callable[[str], pd.Series]) -> None:
        self._names = names
        self._known = frozenset(names)
        self._load = load

    def __getitem__(self, name: str) -> pd.Series:
        if name not in self._known:
            raise KeyError(name)
        return self._load(name)

    def __contains__(self, name: object) -> bool:
        return name in self._known

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class Numbers(NamedTuple):
    """A column as float64, NaN where missing; ``finding`` names a type change."""

    values: NDArray[np.float64]
    finding: str | None = None


class Counts(NamedTuple):
    """A column as counts of its non-missing values (keyed by ``str``) and its missing."""

    counts: dict[str, int]
    missing: int
    rows: int
    finding: str | None = None


def read_frame(data: Any, what: str) -> Frame:
    """The columns of ``data`` as pandas Series; anything else is an InvalidInputError.

    ``data`` may also be the path of a Parquet file (or a ``pyarrow.parquet.ParquetFile``):
    its columns are then read from disk one at a time, as are a pyarrow Table's converted
    one at a time, so a wide frame never exists twice in memory.
    """
    if isinstance(data, pd.DataFrame):
        if not data.columns.is_unique:
            raise InvalidInputError("Expected unique column names", loc=what)
        return Frame(len(data), {str(name): data[name] for name in data.columns})
    if isinstance(data, str | os.PathLike) and str(data).lower().endswith((".parquet", ".pq")):
        return _from_parquet(Path(data), what)
    if type(data).__module__.partition(".")[0] == "pyarrow":
        if hasattr(data, "metadata") and hasattr(data, "read_row_group"):  # a ParquetFile
            return _parquet_frame(data)
        if hasattr(data, "column_names"):
            table = data
            names = [str(name) for name in table.column_names]
            if len(set(names)) != len(names):
                raise InvalidInputError("Expected unique column names", loc=what)
            return Frame(
                int(table.num_rows),
                _LazyColumns(names, lambda name: table.column(name).to_pandas()),
            )
    if isinstance(data, Mapping):
        return _from_mapping(data, what)
    raise InvalidInputError(
        "Expected a pandas DataFrame, a pyarrow Table or a mapping of name to 1-d array, "
        f"got {type(data).__name__}",
        loc=what,
    )


def _from_parquet(path: Path, what: str) -> Frame:
    try:
        handle = pq.ParquetFile(path, memory_map=True)
    except (OSError, ValueError) as exc:  # missing file, not Parquet
        raise InvalidInputError(
            f"Expected a readable Parquet file, got {path}: {exc}", loc=what
        ) from exc
    return _parquet_frame(handle)


def _parquet_frame(handle: Any) -> Frame:
    names = [str(name) for name in handle.schema_arrow.names]

    def load(name: str) -> pd.Series:
        # one thread: a single column gains nothing from the pool but its overhead
        series: pd.Series = handle.read(columns=[name], use_threads=False).column(0).to_pandas()
        return series

    return Frame(int(handle.metadata.num_rows), _LazyColumns(names, load))


def _from_mapping(data: Mapping[Any, Any], what: str) -> Frame:
    columns: dict[str, pd.Series] = {}
    n_rows: int | None = None
    for key, value in data.items():
        name = str(key)
        if isinstance(value, pd.Series):
            series = value.reset_index(drop=True)
        elif type(value).__module__.partition(".")[0] == "pyarrow":
            series = value.to_pandas()
        else:
            array = np.asarray(value)
            if array.ndim != 1:
                raise InvalidInputError(
                    f"Expected a 1-d array, got {array.ndim} dimensions", loc=f"{what}[{name!r}]"
                )
            series = pd.Series(array, copy=False)
            if array.dtype == object:  # [1.0, None] is numbers with a gap, not categories
                series = series.infer_objects()
        if n_rows is not None and len(series) != n_rows:
            raise InvalidInputError(
                f"Expected {n_rows} values like the other columns, got {len(series)}",
                loc=f"{what}[{name!r}]",
            )
        n_rows = len(series)
        columns[name] = series
    return Frame(n_rows or 0, columns)


def column_kind(name: str, series: pd.Series) -> Literal["numeric", "categorical"]:
    """``"numeric"`` or ``"categorical"`` by dtype; complex numbers are an error."""
    dtype = series.dtype
    types = pd.api.types
    if types.is_bool_dtype(dtype):
        return "categorical"
    if types.is_complex_dtype(dtype):
        raise InvalidInputError(
            f"Expected numbers, booleans, strings, categories or datetimes, got {dtype}",
            loc=f"column {name!r}",
        )
    if (
        types.is_numeric_dtype(dtype)
        or types.is_datetime64_any_dtype(dtype)
        or types.is_timedelta64_dtype(dtype)
    ):
        return "numeric"
    if types.is_object_dtype(dtype) and _mostly_numbers(series):
        return "numeric"
    return "categorical"


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def _mostly_numbers(series: pd.Series) -> bool:
    """Whether an object column is numbers with a few other cells (dirty numbers)."""
    if pd.api.types.infer_dtype(series, skipna=True) not in _MIXED:
        return False
    present = series.dropna()
    if present.empty:
        return False
    found = sum(1 for value in present.to_numpy() if _is_number(value))
    return found >= NUMERIC_SHARE * len(present)


def read_numeric(name: str, series: pd.Series) -> Numbers:
    """The column as float64; a non-numeric column is coerced and reported as a finding."""
    dtype = series.dtype
    types = pd.api.types
    if types.is_datetime64_any_dtype(dtype):
        if getattr(dtype, "tz", None) is not None:
            series = series.dt.tz_convert(None)
        return Numbers(_seconds(series.to_numpy(dtype="datetime64[ns]")))
    if types.is_timedelta64_dtype(dtype):
        return Numbers(_seconds(series.to_numpy(dtype="timedelta64[ns]")))
    kind = column_kind(name, series)
    if kind == "numeric" and not types.is_object_dtype(dtype):
        return Numbers(series.to_numpy(dtype=np.float64, na_value=np.nan))
    if types.is_bool_dtype(dtype):
        finding = f"type changed: column {name!r} arrived as {dtype}, not numbers; read as 0/1"
        return Numbers(series.to_numpy(dtype=np.float64, na_value=np.nan), finding)
    try:
        _check_cells(name, series.value_counts(dropna=True, sort=False).index.tolist())
        coerced = pd.to_numeric(series.astype(object), errors="coerce")
    except TypeError as exc:
        raise _bad_cells(name) from exc
    values = coerced.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = not_numbers(series, values)
    if kind == "numeric":  # dirty numbers: the count is the finding, if any cell failed
        return Numbers(values, bad and f"column {name!r}: {bad}")
    return Numbers(
        values,
        f"type changed: column {name!r} arrived as {dtype}, not numbers; "
        + (bad or "every cell parses as a number"),
    )


def not_numbers(series: pd.Series, values: NDArray[np.float64]) -> str | None:
    """``"k of n cells are not numbers (e.g. 'x') and count as missing"``, None when k is 0.

    ``values`` is ``series`` parsed (NaN where it did not parse); missing cells do not count.
    """
    failed = np.isnan(values) & series.notna().to_numpy()
    count = int(np.count_nonzero(failed))
    if not count:
        return None
    example = series.iloc[int(np.argmax(failed))]
    return (
        f"{count:,} of {len(series):,} cells are not numbers (e.g. {str(example)[:40]!r}) "
        "and count as missing"
    )


def read_counts(name: str, series: pd.Series, *, expect_categories: bool = True) -> Counts:
    """Counts of the column's values by ``str(value)``, and its missing count."""
    finding = None
    if expect_categories and column_kind(name, series) == "numeric":
        finding = (
            f"type changed: column {name!r} arrived as {series.dtype}, not categories; "
            "counted by str(value)"
        )
    try:
        found = series.value_counts(dropna=True, sort=False)
    except TypeError as exc:  # unhashable cells: lists, dicts
        raise _bad_cells(name) from exc
    values = found.index.tolist()
    _check_cells(name, values)
    counts: dict[str, int] = {}
    for value, count in zip(values, found.to_numpy().tolist(), strict=True):
        if count:
            key = str(value)
            counts[key] = counts.get(key, 0) + int(count)
    missing = len(series) - sum(counts.values())
    return Counts(counts, missing, len(series), finding)


def _check_cells(name: str, distinct: list[Any]) -> None:
    """Reject containers, checked once per distinct value (not per row)."""
    if any(isinstance(value, list | dict | set | tuple | np.ndarray) for value in distinct):
        raise _bad_cells(name)


def _bad_cells(name: str) -> InvalidInputError:
    return InvalidInputError(
        "Expected numbers, booleans, strings, categories or datetimes, "
        "got containers (lists, dicts, tuples) as cells",
        loc=f"column {name!r}",
    )


def _seconds(array: NDArray[Any]) -> NDArray[np.float64]:
    ticks = array.view(np.int64).astype(np.float64) / 1e9
    ticks[np.isnat(array)] = np.nan
    return ticks
