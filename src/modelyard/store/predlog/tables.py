"""Records as Arrow tables: one row per predicted row, one typed column per field.

A prediction table has the columns ``record_id`` (string, the server's unique id; the
``request_id`` for records older than it), ``request_id`` (string), ``row`` (int32), ``time``
(timestamp[us, UTC]), ``model`` (string), ``version`` (int64), ``latency_us`` (int64),
``route`` (string), then ``input.<name>``, ``feature.<view:feature>`` and
``output.<name>``, each typed from its values: bool, int64, float64 (ints mixed with
floats) or string; a column holding other mixes (say str and int) is a string column
with the non-strings written as JSON, and a column with no value at all has Arrow's
null type. A feedback table has ``record_id`` (the record labelled), ``request_id`` (the
id the label was sent for), ``row`` (int32, null = all rows),
``label`` (the label as JSON text, since labels may be of any type) and ``time``. An
error table has one row per failed request: ``record_id``, ``request_id``, ``time``,
``model``, ``version`` (null: failed before a version was chosen), ``route`` (null
likewise), ``protocol``, ``status`` (int32), ``error`` (the error type), ``latency_us``.

>>> from modelyard.store.predlog.records import PredictionRecord
>>> table = predictions_table([PredictionRecord(
...     request_id="r1", time_us=0, model="m", version=1, rows=2,
...     inputs={"x": [1, 2.5]}, outputs={"label": ["a", None]}, latency_us=5)])
>>> table.column_names[:3], table.column("input.x").type, table.column("row").to_pylist()
(['record_id', 'request_id', 'row'], DataType(double), [0, 1])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from modelyard.store.predlog.records import ErrorRecord, FeedbackRecord, PredictionRecord

__all__ = [
    "ERROR_SCHEMA",
    "FEEDBACK_SCHEMA",
    "PREDICTION_SCHEMA",
    "concat",
    "deduplicate",
    "errors_table",
    "feedback_table",
    "fill_record_ids",
    "predictions_table",
    "typed_array",
]

TIME = pa.timestamp("us", tz="UTC")
PREDICTION_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("request_id", pa.string()),
        ("row", pa.int32()),
        ("time", TIME),
        ("model", pa.string()),
        ("version", pa.int64()),
        ("latency_us", pa.int64()),
        ("route", pa.string()),
    ]
)
FEEDBACK_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("request_id", pa.string()),
        ("row", pa.int32()),
        ("label", pa.string()),
        ("time", TIME),
    ]
)
ERROR_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("request_id", pa.string()),
        ("time", TIME),
        ("model", pa.string()),
        ("version", pa.int64()),
        ("route", pa.string()),
        ("protocol", pa.string()),
        ("status", pa.int32()),
        ("error", pa.string()),
        ("latency_us", pa.int64()),
    ]
)
_PREFIXES = (("inputs", "input."), ("features", "feature."), ("outputs", "output."))
_NUMERIC = {pa.int64(), pa.float64()}


def _json(value: Any) -> str:
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def typed_array(values: Sequence[Any]) -> pa.Array:
    """``values`` (JSON values, None for missing) as one Arrow array typed from them."""
    kinds = {type(v) for v in values if v is not None}
    try:
        if not kinds:
            return pa.nulls(len(values))
        if kinds == {bool}:
            return pa.array(values, pa.bool_())
        if kinds == {int}:
            return pa.array(values, pa.int64())
        if kinds <= {int, float}:
            return pa.array(values, pa.float64())
        if kinds == {str}:
            return pa.array(values, pa.string())
    except (pa.ArrowInvalid, OverflowError):
        pass  # an int beyond int64: kept exactly, as text
    return pa.array([None if v is None else _json(v) for v in values], pa.string())


def predictions_table(records: Sequence[PredictionRecord]) -> pa.Table:
    """One row per predicted row of ``records``, in order."""
    total = sum(r.rows for r in records)
    fixed: dict[str, list[Any]] = {name: [] for name in PREDICTION_SCHEMA.names}
    groups: dict[str, dict[str, list[Any]]] = {prefix: {} for _, prefix in _PREFIXES}
    offset = 0
    for record in records:
        rows = record.rows
        fixed["record_id"] += [record.key] * rows
        fixed["request_id"] += [record.request_id] * rows
        fixed["row"] += range(rows)
        fixed["time"] += [record.time_us] * rows
        fixed["model"] += [record.model] * rows
        fixed["version"] += [record.version] * rows
        fixed["latency_us"] += [record.latency_us] * rows
        fixed["route"] += [record.route] * rows
        for field, prefix in _PREFIXES:
            columns = groups[prefix]
            for name, values in (getattr(record, field) or {}).items():
                column = columns.get(name)
                if column is None:
                    column = columns[name] = [None] * total
                column[offset : offset + rows] = values
        offset += rows
    arrays = [pa.array(fixed[f.name], f.type) for f in PREDICTION_SCHEMA]
    names = list(PREDICTION_SCHEMA.names)
    for prefix, columns in groups.items():
        for name, values in columns.items():
            names.append(prefix + name)
            arrays.append(typed_array(values))
    return pa.Table.from_arrays(arrays, names=names)


def feedback_table(records: Iterable[FeedbackRecord]) -> pa.Table:
    """One row per feedback record, the label as JSON text."""
    records = list(records)
    return pa.table(
        {
            "record_id": [r.record_id or r.request_id for r in records],
            "request_id": [r.request_id for r in records],
            "row": [r.row for r in records],
            "label": [msgspec.json.encode(r.label).decode() for r in records],
            "time": [r.time_us for r in records],
        },
        schema=FEEDBACK_SCHEMA,
    )


def errors_table(records: Iterable[ErrorRecord]) -> pa.Table:
    """One row per error record."""
    records = list(records)
    return pa.table(
        {
            "record_id": [r.record_id for r in records],
            "request_id": [r.request_id for r in records],
            "time": [r.time_us for r in records],
            "model": [r.model for r in records],
            "version": [r.version for r in records],
            "route": [r.route for r in records],
            "protocol": [r.protocol for r in records],
            "status": [r.status for r in records],
            "error": [r.error for r in records],
            "latency_us": [r.latency_us for r in records],
        },
        schema=ERROR_SCHEMA,
    )


def concat(tables: Sequence[pa.Table], schema: pa.Schema) -> pa.Table:
    """``tables`` as one, columns unified: ints with floats -> float64, other clashes -> string."""
    if not tables:
        return schema.empty_table()
    types: dict[str, set[pa.DataType]] = {}
    for table in tables:
        for field in table.schema:
            if field.type != pa.null():
                types.setdefault(field.name, set()).add(field.type)
    clashes = {n for n, ts in types.items() if len(ts) > 1 and not ts <= _NUMERIC}
    if clashes:
        tables = [_to_strings(t, clashes) for t in tables]
    return pa.concat_tables(tables, promote_options="permissive")


def _to_strings(table: pa.Table, names: set[str]) -> pa.Table:
    for i, field in enumerate(table.schema):
        if field.name in names and field.type != pa.string():
            if pa.types.is_boolean(field.type):
                # JSON spelling, as typed_array writes a bool inside a mixed column
                values = [None if v is None else _json(v) for v in table.column(i).to_pylist()]
                column = pa.array(values, pa.string())
            else:
                column = table.column(i).cast(pa.string())
            table = table.set_column(i, field.name, column)
    return table


def fill_record_ids(table: pa.Table) -> pa.Table:
    """``table`` with every ``record_id`` set: files older than record ids use ``request_id``."""
    if table.num_rows == 0 or table.column("record_id").null_count == 0:
        return table
    filled = pc.coalesce(table.column("record_id"), table.column("request_id"))
    return table.set_column(table.schema.get_field_index("record_id"), "record_id", filled)


def deduplicate(table: pa.Table, keys: list[str]) -> pa.Table:
    """``table`` keeping the first row of each distinct ``keys``, in order."""
    if table.num_rows == 0:
        return table
    index = "__modelyard_index"
    numbered = table.select(keys).append_column(index, pa.array(range(table.num_rows), pa.int64()))
    first = numbered.group_by(keys, use_threads=False).aggregate([(index, "min")])
    if first.num_rows == table.num_rows:
        return table
    keep = pc.sort_indices(first.column(f"{index}_min"))
    return table.take(first.column(f"{index}_min").take(keep))
