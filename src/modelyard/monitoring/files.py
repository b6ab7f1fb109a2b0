"""The two data files of ``monitor drift --reference FILE --current FILE``: Parquet or CSV.

Parquet files carry their column types and are read as they are. A CSV file is read
whole by Python's ``csv`` module (strict): a malformed file (an unterminated quote, a
row with more or fewer fields than the header, bytes that are not UTF-8) is an
``InvalidInputError`` naming the line where the bad row starts, so a file is read
either completely or not at all, never silently cut short. Blank lines are skipped;
the cells ``NULLS`` are missing.

A CSV column's type is decided once for both sides, so the two files are read the same
way and swapping them gives the same verdicts:

- when one side is a Parquet file, its type decides (the reference's when both are);
- else the column is numeric when at least ``NUMERIC_SHARE`` of the non-missing cells
  of both files together parse as numbers, else a date-time when that share parses as
  ISO 8601 times, else categorical (strings).

Cells of a numeric or date-time column that do not parse are read as missing, and a
finding counts them per side ("reference column 'x': 1 of 5,000 cells are not numbers
(e.g. 'oops') and count as missing"), so one bad cell neither turns a column into
categories nor hides its drift.

>>> import pathlib, tempfile
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "a.csv").write_text("x,c\\n1.5,a\\noops,b\\n" + "2.5,a\\n" * 30)
>>> _ = (folder / "b.csv").write_text("x,c\\n3,a\\n4,b\\n")
>>> pair = read_pair(folder / "a.csv", folder / "b.csv")
>>> pair.reference.schema.types, pair.current.column("x").to_pylist()
([DataType(double), DataType(string)], [3.0, 4.0])
>>> pair.findings
["reference column 'x': 1 of 32 cells are not numbers (e.g. 'oops') and count as missing"]
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray

from modelyard.errors import InvalidInputError
from modelyard.monitoring.frames import NUMERIC_SHARE

__all__ = ["NULLS", "FilePair", "read_csv", "read_data_file", "read_pair"]

#: CSV cells read as missing
NULLS: Final = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", "None")
_CHUNK: Final = 65_536
Kind = Literal["numeric", "datetime", "categorical"]


class FilePair(NamedTuple):
    """Both files as Arrow tables, their CSV columns typed alike, and what reading found."""

    reference: pa.Table
    current: pa.Table
    findings: list[str]


class _Side(NamedTuple):
    table: pa.Table
    typed: bool
    """A Parquet file: its types stand."""
    what: str


def read_pair(reference: Path, current: Path) -> FilePair:
    """Read ``--reference`` and ``--current``; see the module docstring."""
    sides = [
        _Side(read_data_file(reference, "--reference"), _is_parquet(reference), "reference"),
        _Side(read_data_file(current, "--current"), _is_parquet(current), "current"),
    ]
    findings: list[str] = []
    names = list(dict.fromkeys([*sides[0].table.column_names, *sides[1].table.column_names]))
    converted: list[dict[str, pa.ChunkedArray]] = [{}, {}]
    for name in names:
        present = [(i, side) for i, side in enumerate(sides) if name in side.table.column_names]
        if all(side.typed for _, side in present):
            continue
        kind = _decide(name, [side for _, side in present])
        for i, side in present:
            if side.typed:
                continue
            column, finding = _convert(side.table.column(name), kind)
            converted[i][name] = column
            if finding:
                findings.append(f"{side.what} column {name!r}: {finding}")
    tables = [_replace(side.table, converted[i]) for i, side in enumerate(sides)]
    return FilePair(tables[0], tables[1], findings)


def read_data_file(path: Path, option: str) -> pa.Table:
    """A Parquet file as it is, or a CSV (``.csv``; ``.tsv``: tab-separated) as strings."""
    if not path.is_file():
        raise InvalidInputError(
            f"Expected a Parquet or CSV file, got {str(path)!r}: "
            + ("a folder" if path.is_dir() else "no such file"),
            loc=option,
        )
    suffix = path.suffix.lower()
    if _is_parquet(path):
        try:
            return pq.read_table(path)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise InvalidInputError(
                f"Expected a Parquet file, got {str(path)!r}: {exc}", loc=option
            ) from None
    if suffix in (".csv", ".tsv"):
        return read_csv(path, option, delimiter="\t" if suffix == ".tsv" else ",")
    raise InvalidInputError(f"Expected a .parquet or .csv file, got {path.name!r}", loc=option)


def read_csv(path: Path, option: str, *, delimiter: str = ",") -> pa.Table:
    """Every row of a CSV file as string columns (``NULLS`` missing), or an error naming
    the line where a malformed row starts; see the module docstring."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return _read_rows(csv.reader(handle, delimiter=delimiter, strict=True), option)
    except UnicodeDecodeError as exc:
        line = _line_of(path, exc.start)
        raise InvalidInputError(
            f"Expected UTF-8 text, got the byte 0x{exc.object[exc.start]:02x} at line {line}",
            loc=option,
        ) from None
    except OSError as exc:
        raise InvalidInputError(f"Expected a readable file, got {exc}", loc=option) from None


def _read_rows(reader: Any, option: str) -> pa.Table:
    try:
        header = next(reader)
    except StopIteration:
        raise InvalidInputError("Expected a header line, got an empty file", loc=option) from None
    except csv.Error as exc:
        raise _malformed(exc, 1, option) from None
    if len(set(header)) != len(header):
        twice = sorted({name for name in header if header.count(name) > 1})
        raise InvalidInputError(
            f"Expected unique column names in the header, got {twice} more than once",
            loc=option,
        )
    width = len(header)
    parts: list[list[pa.Array]] = [[] for _ in header]
    chunk: list[list[str]] = []
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise _malformed(exc, start, option) from None
        if not record:  # a blank line
            continue
        if len(record) != width:
            raise InvalidInputError(
                f"Expected {width} fields like the header, got {len(record)} "
                f"in the row at line {start}",
                loc=option,
            )
        chunk.append(record)
        if len(chunk) == _CHUNK:
            _flush(chunk, parts)
    _flush(chunk, parts)
    nulls = pa.array(NULLS, type=pa.string())
    columns = []
    for arrays in parts:
        column = pa.chunked_array(arrays, type=pa.string())
        columns.append(pc.if_else(pc.is_in(column, value_set=nulls), None, column))
    return pa.table(columns, names=header)


def _flush(chunk: list[list[str]], parts: list[list[pa.Array]]) -> None:
    if chunk:
        for i, values in enumerate(zip(*chunk, strict=True)):
            parts[i].append(pa.array(values, type=pa.string()))
        chunk.clear()


def _malformed(exc: csv.Error, line: int, option: str) -> InvalidInputError:
    reason = str(exc)
    if "unexpected end of data" in reason:
        reason = "a quote that is never closed"
    return InvalidInputError(
        f"Expected a well-formed CSV, got {reason} in the row starting at line {line}",
        loc=option,
    )


def _line_of(path: Path, offset: int) -> int:
    with path.open("rb") as handle:
        return handle.read(offset).count(b"\n") + 1


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def _typed_kind(column: pa.ChunkedArray) -> Kind:
    kind = column.type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_temporal(kind):
        return "datetime"
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return "numeric"
    return "categorical"


class _Parsed(NamedTuple):
    """A string column's distinct values, their counts, and them parsed."""

    values: pa.Array
    counts: NDArray[np.int64]
    numbers: NDArray[np.float64]


def _distinct(column: pa.ChunkedArray) -> _Parsed:
    found = pc.value_counts(column.drop_null())
    values = found.field("values")
    counts = found.field("counts").to_numpy(zero_copy_only=False).astype(np.int64)
    numbers = pd.to_numeric(pd.Series(values.to_pylist(), dtype=object), errors="coerce")
    return _Parsed(values, counts, numbers.to_numpy(dtype=np.float64, na_value=np.nan))


def _times(values: pa.Array) -> NDArray[np.int64]:
    """ISO 8601 times as UTC nanoseconds; ``NaT``'s integer where a value does not parse."""
    parsed = pd.to_datetime(
        pd.Series(values.to_pylist(), dtype=object), format="ISO8601", utc=True, errors="coerce"
    )
    return parsed.to_numpy(dtype="datetime64[ns]").view(np.int64)


def _decide(name: str, sides: list[_Side]) -> Kind:
    """The one kind of a column that a CSV side holds (see the module docstring)."""
    for side in sides:
        if side.typed:
            return _typed_kind(side.table.column(name))
    parsed = [_distinct(side.table.column(name)) for side in sides]
    present = sum(int(p.counts.sum()) for p in parsed)
    numbers = sum(int(p.counts[~np.isnan(p.numbers)].sum()) for p in parsed)
    if numbers >= NUMERIC_SHARE * present:
        return "numeric"
    if all(not len(p.values) or _looks_like_time(p.values[0].as_py()) for p in parsed):
        nat = np.iinfo(np.int64).min
        times = sum(int(p.counts[_times(p.values) != nat].sum()) for p in parsed)
        if times >= NUMERIC_SHARE * present:
            return "datetime"
    return "categorical"


def _looks_like_time(value: str) -> bool:
    return len(value) >= 8 and value[:4].isdigit() and value[4] == "-"


def _convert(column: pa.ChunkedArray, kind: Kind) -> tuple[pa.ChunkedArray, str | None]:
    """A CSV side's string column as ``kind``, and the count of cells that did not parse."""
    if kind == "categorical":
        return column, None
    parsed = _distinct(column)
    if kind == "numeric":
        target: NDArray[Any] = parsed.numbers
        failed = np.isnan(target)
        what = "numbers"
    else:
        target = _times(parsed.values)
        failed = target == np.iinfo(np.int64).min
        what = "ISO 8601 times"
    positions = pc.index_in(column, value_set=parsed.values).to_numpy(zero_copy_only=False)
    known = ~np.isnan(positions)
    index = np.where(known, positions, 0).astype(np.intp)
    if kind == "numeric":
        values = np.where(known, target[index] if target.size else np.nan, np.nan)
        converted = pa.chunked_array([pa.array(values, type=pa.float64(), from_pandas=True)])
    else:
        stamps = target[index] if target.size else np.zeros(index.size, np.int64)
        mask = ~known | (failed[index] if target.size else True)
        converted = pa.chunked_array(
            [pa.array(stamps, type=pa.timestamp("ns", tz="UTC"), mask=mask)]
        )
    bad = int(parsed.counts[failed].sum())
    if not bad:
        return converted, None
    example = str(parsed.values[int(np.argmax(failed))].as_py())[:40]
    return converted, (
        f"{bad:,} of {len(column):,} cells are not {what} (e.g. {example!r}) and count as missing"
    )


def _replace(table: pa.Table, columns: dict[str, pa.ChunkedArray]) -> pa.Table:
    for name, column in columns.items():
        table = table.set_column(table.column_names.index(name), name, column)
    return table
