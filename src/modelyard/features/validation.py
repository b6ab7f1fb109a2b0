"""Checks of a feature view against its source: columns present, types right, times aware.

Every problem names the view and the column; ``check_views`` reports them all at once.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from modelyard.errors import InvalidInputError, Problem
from modelyard.features.definitions import FeatureType, FeatureView, FileSource
from modelyard.features.keys import DUCKDB_INTS, KeyType, column_key_type

if TYPE_CHECKING:
    import duckdb

__all__ = ["AWARE", "check_views", "key_types", "source_columns", "time_kind"]

#: DuckDB's timezone-aware timestamp types (a tz-aware nanosecond Parquet column, as
#: pandas writes by default, reads as TIMESTAMPTZ_NS); values are UTC instants
AWARE = frozenset({"TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ_NS"})
_INTS = DUCKDB_INTS
# ISO time text ending in a UTC offset after its clock time (Z, +01, +01:00, +0100)
_TEXT_OFFSET = r"\d{2}:\d{2}(:\d{2}([.,]\d+)?)?([zZ]|[+-]\d{2}(:?\d{2})?)$"
_FLOATS = {"FLOAT", "DOUBLE", "REAL"}
_NUMERIC_AGGREGATIONS = {"sum", "mean", "min", "max", "std"}


def _fits(dtype: FeatureType, kind: str) -> bool:
    numeric = kind in _INTS or kind in _FLOATS or kind.startswith("DECIMAL")
    if dtype == "float":
        return numeric
    if dtype == "int":
        return kind in _INTS
    if dtype == "bool":
        return kind == "BOOLEAN"
    if dtype == "string":
        return kind == "VARCHAR"
    return kind in AWARE


def _missing_file(source: FileSource) -> str | None:
    """Why a local source file cannot be read (absent, or a glob with no match), or None."""
    path = source.path
    if "://" in path:
        return None
    if any(c in path for c in "*?["):
        return None if glob.glob(path, recursive=True) else f"{path} matches no files"
    return None if Path(path).exists() else f"{path} does not exist"


def source_columns(con: duckdb.DuckDBPyConnection, view: FeatureView) -> dict[str, str]:
    """Column name to DuckDB type of the view's source."""
    import duckdb

    source = view.source
    where = f"views.{view.name}.source"
    missing = _missing_file(source) if isinstance(source, FileSource) else None
    if missing is not None:
        raise InvalidInputError(f"View {view.name!r}: its source file {missing}", loc=where)
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {source.relation()}").fetchall()
    except duckdb.Error as exc:
        # DuckDB's first line says what is wrong; the rest repeats our SQL.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        what = source.path if isinstance(source, FileSource) else "query"
        raise InvalidInputError(
            f"View {view.name!r}: cannot read its source {what}: {first}", loc=where
        ) from exc
    return {str(row[0]): str(row[1]) for row in rows}


def time_kind(
    con: duckdb.DuckDBPyConnection, view: FeatureView, columns: dict[str, str], field: str
) -> str:
    """The column's DuckDB type, as ``TIMESTAMP WITH TIME ZONE`` for any aware one.

    A CSV column of times is text (``VARCHAR``) when DuckDB cannot sniff one type for it
    (every value empty, or mixed formats): it counts as aware when every value is an ISO
    time with a UTC offset that DuckDB parses (each converted to UTC).
    """
    kind = columns[field]
    if kind in AWARE:
        return "TIMESTAMP WITH TIME ZONE"
    if kind != "VARCHAR":
        return kind
    import duckdb

    col = '"' + field.replace('"', '""') + '"'
    try:
        [(bad,)] = con.execute(
            f"SELECT count(*) FROM {view.source.relation()} WHERE {col} IS NOT NULL AND"
            f" (NOT regexp_matches({col}, '{_TEXT_OFFSET}')"
            f" OR try_cast({col} AS TIMESTAMPTZ) IS NULL)"
        ).fetchall()
    except duckdb.Error:
        return kind
    return "TIMESTAMP WITH TIME ZONE" if bad == 0 else "VARCHAR times without a UTC offset"


def key_types(view: FeatureView, columns: dict[str, str] | None = None) -> list[KeyType]:
    """The type of each join key of ``view`` (in ``join_keys`` order), from its source.

    ``columns`` are the source's column types when already known (else it is described).
    """
    if columns is None:
        import duckdb

        con = duckdb.connect(":memory:")
        try:
            columns = source_columns(con, view)
        finally:
            con.close()
    out: list[KeyType] = []
    for key in view.join_keys:
        if key not in columns:
            raise InvalidInputError(
                f"View {view.name!r}: its source has no join key column {key!r}; "
                f"its columns: {', '.join(columns)}",
                loc=f"views.{view.name}.{key}",
            )
        found = column_key_type(columns[key])
        if found is None:
            raise InvalidInputError(
                f"View {view.name!r}: expected string or integer join keys in {key!r}, "
                f"got {columns[key]}",
                loc=f"views.{view.name}.{key}",
            )
        out.append(found)
    return out


def _expression_type(con: duckdb.DuckDBPyConnection, view: FeatureView, sql: str) -> str | None:
    import duckdb

    try:
        rows = con.execute(f"DESCRIBE SELECT {sql} AS x FROM {view.source.relation()}").fetchall()
    except duckdb.Error:
        return None
    return str(rows[0][1])


def _problems(con: duckdb.DuckDBPyConnection, view: FeatureView) -> list[Problem]:
    columns = source_columns(con, view)
    out: list[Problem] = []
    shown = ", ".join(columns)

    def missing(column: str, expected: str) -> None:
        out.append(Problem(f"{view.name}.{column}", expected, f"no such column (has {shown})"))

    for key in view.join_keys:
        if key not in columns:
            missing(key, "a join key column")
        elif column_key_type(columns[key]) is None:
            out.append(Problem(f"{view.name}.{key}", "string or integer join keys", columns[key]))
    source = view.source
    for field in (source.timestamp_field, source.created_timestamp_field):
        if field is None:
            continue
        if field not in columns:
            missing(field, "a timezone-aware timestamp column")
        elif (time := time_kind(con, view, columns, field)) not in AWARE:
            out.append(Problem(f"{view.name}.{field}", "timezone-aware timestamps", time))
    for feature in view.features:
        if feature.expression is None:
            kind = columns.get(feature.name)
            if kind is None:
                missing(feature.name, f"a {feature.dtype} column")
                continue
        else:
            kind = _expression_type(con, view, feature.expression)
            if kind is None:
                out.append(
                    Problem(
                        f"{view.name}.{feature.name}",
                        "a valid DuckDB expression over the source",
                        feature.expression,
                    )
                )
                continue
        if not _fits(feature.dtype, kind):
            out.append(Problem(f"{view.name}.{feature.name}", f"{feature.dtype} values", kind))
    for aggregation in view.aggregations:
        kind = columns.get(aggregation.column)
        if kind is None:
            missing(aggregation.column, f"a column to {aggregation.fn}")
        elif aggregation.fn in _NUMERIC_AGGREGATIONS and not _fits("float", kind):
            out.append(
                Problem(
                    f"{view.name}.{aggregation.column}",
                    f"numbers to {aggregation.fn}",
                    kind,
                )
            )
    return out


def check_views(views: Sequence[FeatureView]) -> None:
    """Raise one ``InvalidInputError`` listing every problem of ``views`` with their sources."""
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        problems = [p for view in views for p in _problems(con, view)]
    finally:
        con.close()
    if problems:
        lines = "\n".join(f"- {p.loc}: expected {p.expected}, got {p.got}" for p in problems)
        raise InvalidInputError(
            f"{len(problems)} problem(s) in the feature views' sources:\n{lines}",
            problems=problems,
        )
