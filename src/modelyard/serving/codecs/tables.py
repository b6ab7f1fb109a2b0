"""Tables as JSON spells them (records, rows, columns) turned into checked ``Inputs``.

>>> from modelyard.models.signature import ColumnSpec, Signature
>>> sig = Signature(columns=[ColumnSpec(name="age", dtype="int"),
...                          ColumnSpec(name="plan", dtype="string")])
>>> inputs = inputs_from_table(sig, [{"age": 31, "plan": "pro"}], "$.instances", max_rows=10)
>>> inputs.columns[0].tolist(), inputs.columns[1].tolist()
([31], ['pro'])
>>> inputs_from_table(sig, [[31, 7]], "$.instances", max_rows=10)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
modelyard.errors.InvalidInputError: 1 problem ...: expected string, got 7 - at $.instances[0][1]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from modelyard.models.runtimes import Inputs
from modelyard.models.signature import Signature
from modelyard.serving.codecs.columns import (
    Loc,
    allows_null,
    assemble,
    column_from_values,
    plain_numbers,
)
from modelyard.serving.codecs.problems import ProblemList, key, short_repr

__all__ = [
    "check_row_count",
    "inputs_from_columns",
    "inputs_from_records",
    "inputs_from_rows",
    "inputs_from_table",
]

_SCALARS = (str, int, float, bool, type(None))
TABLE = "records (objects of column: value), rows (arrays in signature order) or columns"


def check_row_count(rows: int, loc: str, max_rows: int, found: ProblemList) -> None:
    """A problem for an empty request or one over ``max_rows``."""
    if rows > max_rows:
        found.add(loc, f"at most {max_rows} rows per request", f"{rows} rows", raw=True)
    elif rows == 0:
        found.add(loc, "at least 1 row", "0 rows", raw=True)


def _convert(
    signature: Signature,
    sources: Mapping[str, tuple[Sequence[Any], Loc]],
    missing_loc: Callable[[str], str],
    found: ProblemList,
) -> Inputs | None:
    if not found and len(sources) == len(signature.columns):
        try:
            plain = plain_numbers(signature, [sources[name][0] for name in signature.names])
        except KeyError:  # a column is missing: the general path names it
            plain = None
        if plain is not None:
            return plain
    return _convert_each(signature, sources, missing_loc, found)


def _convert_each(
    signature: Signature,
    sources: Mapping[str, tuple[Sequence[Any], Loc]],
    missing_loc: Callable[[str], str],
    found: ProblemList,
) -> Inputs | None:
    """``_convert`` one column at a time, each value checked (and every problem named)."""
    columns = []
    for spec in signature.columns:
        source = sources.get(spec.name)
        if source is None:
            wanted = f"a column {spec.name!r} ({spec.dtype})"
            found.add(missing_loc(spec.name), wanted, "nothing", raw=True)
            continue
        values, loc = source
        column = column_from_values(
            spec, values, allow_null=allows_null(signature, spec), loc=loc, found=found
        )
        if column is not None:
            columns.append(column)
    return None if found else assemble(signature, columns)


def _field_loc(loc: str, name: str) -> Loc:
    return lambda i: f"{loc}[{i}].{key(name)}"


def _cell_loc(loc: str, j: int) -> Loc:
    return lambda i: f"{loc}[{i}][{j}]"


def _item_loc(loc: str, name: str) -> Loc:
    return lambda i: f"{loc}.{key(name)}[{i}]"


def _unknown(signature: Signature, name: str, loc: str, found: ProblemList) -> None:
    if signature.extra_columns == "reject":
        known = ", ".join(signature.names[:10])
        found.add(loc, f"one of the model's columns ({known})", name)


def inputs_from_records(
    signature: Signature, records: Sequence[Any], loc: str, found: ProblemList
) -> Inputs | None:
    """Inputs from ``[{column: value}, ...]``; a key absent from some records is a null there."""
    known = set(signature.names)
    seen: set[str] = set()
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            found.add(f"{loc}[{i}]", "an object of column: value", record)
            continue
        for name in record.keys() - known - seen:
            seen.add(name)
            _unknown(signature, name, f"{loc}[{i}].{key(name)}", found)
    if found:
        return None
    present: set[str] = set().union(*records)
    sources: dict[str, tuple[Sequence[Any], Loc]] = {
        name: ([r.get(name) for r in records], _field_loc(loc, name))
        for name in signature.names
        if name in present
    }
    return _convert(signature, sources, lambda n: f"{loc}[*].{n}", found)


def inputs_from_rows(
    signature: Signature,
    rows: Sequence[Any],
    loc: str,
    found: ProblemList,
    *,
    names: Sequence[Any] | None = None,
    names_loc: str = "",
) -> Inputs | None:
    """Inputs from ``[[v, ...], ...]``: in signature order, or in the order of ``names``."""
    if names is None:
        names = signature.names
    else:
        seen: set[str] = set()
        for j, name in enumerate(names):
            if not isinstance(name, str):
                found.add(f"{names_loc}[{j}]", "a column name (string)", name)
            elif name in seen:
                found.add(f"{names_loc}[{j}]", "each column named once", name)
            seen.add(str(name))
            if isinstance(name, str) and name not in signature.names:
                _unknown(signature, name, f"{names_loc}[{j}]", found)
    width = len(names)
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            got = f"an array of {len(row)}" if isinstance(row, list) else short_repr(row)
            found.add(f"{loc}[{i}]", f"an array of {width} values ({TABLE})", got, raw=True)
    if found:
        return None
    wanted = set(signature.names)
    sources: dict[str, tuple[Sequence[Any], Loc]] = {
        name: ([row[j] for row in rows], _cell_loc(loc, j))
        for j, name in enumerate(names)
        if name in wanted
    }
    return _convert(signature, sources, lambda n: names_loc or loc, found)


def inputs_from_columns(
    signature: Signature, mapping: Mapping[str, Any], loc: str, found: ProblemList
) -> Inputs | None:
    """Inputs from ``{column: [values]}``, every list as long as the first."""
    known = set(signature.names)
    length: tuple[str, int] | None = None
    for name, values in mapping.items():
        if name not in known:
            _unknown(signature, name, f"{loc}.{key(name)}", found)
        elif not isinstance(values, list):
            found.add(f"{loc}.{key(name)}", "an array of the column's values", values)
        elif length is None:
            length = (name, len(values))
        elif len(values) != length[1]:
            wanted = f"{length[1]} values, as many as {length[0]!r}"
            found.add(f"{loc}.{key(name)}", wanted, f"{len(values)} values", raw=True)
    if found:
        return None
    sources: dict[str, tuple[Sequence[Any], Loc]] = {
        name: (values, _item_loc(loc, name)) for name, values in mapping.items() if name in known
    }
    return _convert(signature, sources, lambda n: f"{loc}.{n}", found)


def _row_count(data: Any) -> int:
    if isinstance(data, list):
        return len(data)
    for values in data.values():
        if isinstance(values, list):
            return len(values)
    return 1 if data else 0


def inputs_from_table(
    signature: Signature,
    data: Any,
    loc: str,
    *,
    max_rows: int,
    found: ProblemList | None = None,
) -> Inputs:
    """Inputs from records, rows or a mapping of columns; raises with every problem."""
    found = ProblemList() if found is None else found
    if not isinstance(data, list | dict):
        found.add(loc, TABLE, data)
        found.raise_if_any()
    check_row_count(_row_count(data), loc, max_rows, found)
    found.raise_if_any()
    inputs: Inputs | None
    if isinstance(data, dict):
        inputs = inputs_from_columns(signature, data, loc, found)
    elif isinstance(data[0], dict):
        inputs = inputs_from_records(signature, data, loc, found)
    elif len(signature.columns) == 1 and isinstance(data[0], _SCALARS):
        inputs = inputs_from_rows(signature, [[v] for v in data], loc, found)
    else:
        inputs = inputs_from_rows(signature, data, loc, found)
    found.raise_if_any()
    assert inputs is not None  # no problems means every column was built
    return inputs
