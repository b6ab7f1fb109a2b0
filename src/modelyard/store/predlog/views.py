"""DuckDB over the log: views ``predictions``, ``feedback`` and ``errors`` for monitoring.

The views read the Parquet tree in place (``read_parquet`` with hive partitioning, so
each row also has the partition's ``day``), plus the records still in segments as of
``connect`` (call it again to see newer ones), one row per (record_id, row, route).
``record_id`` is the server's unique id of a prediction (``request_id`` in records older
than it); join labels on it. ``unmatched_feedback`` holds labels for ids no prediction had;
one whose id names a record the log holds now (made by another replica and shipped since,
say) is in ``feedback`` instead, joined to it: by record id, or by request id to the
records made before the label arrived.
``errors`` holds one row per request answered with a 4xx/5xx status (``ErrorRecord``).

With ``shipped`` (``shipping.ShippedLog``: every replica's log in the artifact store), the
views hold the shipped files too, read through fsspec and Arrow as of ``connect`` (DuckDB's
own S3 support needs an extension that is not at hand offline), after the records in
segments and before the local Parquet files are read: a record shipped meanwhile is
still seen, and the views' deduplication on record ids shows it once.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from modelyard.store.predlog.layout import (
    ERRORS,
    FEEDBACK,
    PREDICTIONS,
    UNMATCHED,
    UNMATCHED_SEGMENTS,
)
from modelyard.store.predlog.reader import live_errors, live_feedback, live_predictions
from modelyard.store.predlog.shipping import ShippedLog
from modelyard.store.predlog.tables import (
    ERROR_SCHEMA,
    FEEDBACK_SCHEMA,
    PREDICTION_SCHEMA,
    concat,
    fill_record_ids,
)

__all__ = ["connect"]


def _with_day(table: pa.Table) -> pa.Table:
    return table.append_column("day", pc.cast(table.column("time"), pa.date32()))


def _with_shipped(
    live: pa.Table, shipped: ShippedLog | None, kind: str, schema: pa.Schema
) -> pa.Table:
    """``live`` and every shipped file of ``kind`` as one table."""
    if shipped is None:
        return live
    tables = shipped.tables(kind)
    if not tables:
        return live
    table = concat([live, *tables], schema)
    return fill_record_ids(table) if "request_id" in table.column_names else table


def _source(con: duckdb.DuckDBPyConnection, folder: Path, live: pa.Table, name: str) -> str:
    con.register(name, _with_day(live))
    if not any(folder.rglob("*.parquet")):
        return f"SELECT * FROM {name}"
    pattern = str(folder / "**" / "*.parquet").replace("'", "''")
    return (
        f"SELECT * FROM read_parquet('{pattern}', hive_partitioning = true, "
        f"union_by_name = true) UNION ALL BY NAME SELECT * FROM {name}"
    )


def connect(
    root: str | os.PathLike[str], shipped: ShippedLog | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with views ``predictions``, ``feedback``, ``errors``.

    >>> import tempfile
    >>> con = connect(tempfile.mkdtemp())
    >>> con.execute("SELECT count(*) FROM predictions").fetchone()
    (0,)
    """
    base = Path(root)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    live = _with_shipped(live_predictions(base), shipped, PREDICTIONS, PREDICTION_SCHEMA)
    predictions = _source(con, base / PREDICTIONS, live, "live_predictions")
    live = _with_shipped(live_feedback(base), shipped, FEEDBACK, FEEDBACK_SCHEMA)
    feedback = _source(con, base / FEEDBACK, live, "live_feedback")
    live = _with_shipped(
        live_feedback(base, UNMATCHED_SEGMENTS), shipped, UNMATCHED, FEEDBACK_SCHEMA
    )
    unmatched = _source(con, base / UNMATCHED, live, "live_unmatched")
    # files written before record ids existed name a record by its request id
    filled = "* REPLACE (coalesce(nullif(record_id, ''), request_id) AS record_id)"
    distinct = 'DISTINCT ON (record_id, "row", route)'
    con.execute(
        f"CREATE VIEW predictions AS SELECT {distinct} * FROM "
        f"(SELECT {filled} FROM ({predictions}))"
    )
    # a label for an id no record had when it arrived (say, a record of another replica
    # not yet shipped) joins the record it names once the log holds it: by record id
    # (unique), or by the client's request id of a record made before the label came
    con.execute(f"CREATE VIEW _unmatched_raw AS SELECT DISTINCT * FROM ({unmatched})")
    con.execute(
        "CREATE VIEW _late_feedback AS "
        "SELECT u.* REPLACE (p.record_id AS record_id) FROM _unmatched_raw u "
        "JOIN (SELECT DISTINCT record_id FROM predictions) p ON p.record_id = u.request_id "
        "UNION "
        "SELECT u.* REPLACE (p.record_id AS record_id) FROM _unmatched_raw u "
        "JOIN (SELECT DISTINCT record_id, request_id, time FROM predictions) p "
        "ON p.request_id = u.request_id AND p.time <= u.time"
    )
    con.execute(
        f"CREATE VIEW feedback AS SELECT DISTINCT * FROM (SELECT {filled} FROM ({feedback}) "
        "UNION ALL BY NAME SELECT * FROM _late_feedback)"
    )
    con.execute(
        "CREATE VIEW unmatched_feedback AS SELECT u.* FROM _unmatched_raw u "
        "ANTI JOIN _late_feedback l ON l.request_id = u.request_id AND l.time = u.time"
    )
    live = _with_shipped(live_errors(base), shipped, ERRORS, ERROR_SCHEMA)
    errors = _source(con, base / ERRORS, live, "live_errors")
    con.execute(f"CREATE VIEW errors AS SELECT DISTINCT ON (record_id) * FROM ({errors})")
    return con
