"""Checks of a feature view against its source: columns present, types right, times aware.

Every problem names the view and the column; ``check_views`` reports them all at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from modelyard.errors import InvalidInputError, Problem
from modelyard.features.definitions import FeatureType, FeatureView

if TYPE_CHECKING:
    import duckdb

__all__ = ["check_views", "source_columns"]

_AWARE = "TIMESTAMP WITH TIME ZONE"
_INTS = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT"}
_INTS |= {"UINTEGER", "UBIGINT"}
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
    return kind == _AWARE


def source_columns(con: duckdb.DuckDBPyConnection, view: FeatureView) -> dict[str, str]:
    """Column name to DuckDB type of the view's source."""
    import duckdb

    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {view.source.relation()}").fetchall()
    except duckdb.Error as exc:
        raise InvalidInputError(
            f"Cannot read the source of view {view.name!r}: {exc}", loc=f"views.{view.name}"
        ) from exc
    return {str(row[0]): str(row[1]) for row in rows}


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
    source = view.source
    for field in (source.timestamp_field, source.created_timestamp_field):
        if field is None:
            continue
        if field not in columns:
            missing(field, "a timezone-aware timestamp column")
        elif columns[field] != _AWARE:
            out.append(Problem(f"{view.name}.{field}", "timezone-aware timestamps", columns[field]))
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
