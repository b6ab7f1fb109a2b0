"""DuckDB over the log: views ``predictions``, ``feedback`` and ``errors`` for monitoring.

The views read the Parquet tree in place (``read_parquet`` with hive partitioning, so
each row also has the partition's ``day``), plus the records still in segments as of
``connect`` (call it again to see newer ones), one row per (record_id, row, route).
``record_id`` is the server's unique id of a prediction (``request_id`` in records older
than it); join labels on it. ``unmatched_feedback`` holds labels for ids no prediction had.
``errors`` holds one row per request answered with a 4xx/5xx status (``ErrorRecord``).
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

__all__ = ["connect"]


def _with_day(table: pa.Table) -> pa.Table:
    return table.append_column("day", pc.cast(table.column("time"), pa.date32()))


def _source(con: duckdb.DuckDBPyConnection, folder: Path, live: pa.Table, name: str) -> str:
    con.register(name, _with_day(live))
    if not any(folder.rglob("*.parquet")):
        return f"SELECT * FROM {name}"
    pattern = str(folder / "**" / "*.parquet").replace("'", "''")
    return (
        f"SELECT * FROM read_parquet('{pattern}', hive_partitioning = true, "
        f"union_by_name = true) UNION ALL BY NAME SELECT * FROM {name}"
    )


def connect(root: str | os.PathLike[str]) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with views ``predictions``, ``feedback``, ``errors``.

    >>> import tempfile
    >>> con = connect(tempfile.mkdtemp())
    >>> con.execute("SELECT count(*) FROM predictions").fetchone()
    (0,)
    """
    base = Path(root)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    predictions = _source(con, base / PREDICTIONS, live_predictions(base), "live_predictions")
    feedback = _source(con, base / FEEDBACK, live_feedback(base), "live_feedback")
    unmatched = _source(
        con, base / UNMATCHED, live_feedback(base, UNMATCHED_SEGMENTS), "live_unmatched"
    )
    # files written before record ids existed name a record by its request id
    filled = "* REPLACE (coalesce(nullif(record_id, ''), request_id) AS record_id)"
    distinct = 'DISTINCT ON (record_id, "row", route)'
    con.execute(
        f"CREATE VIEW predictions AS SELECT {distinct} * FROM "
        f"(SELECT {filled} FROM ({predictions}))"
    )
    con.execute(f"CREATE VIEW feedback AS SELECT DISTINCT {filled} FROM ({feedback})")
    con.execute(f"CREATE VIEW unmatched_feedback AS SELECT DISTINCT * FROM ({unmatched})")
    errors = _source(con, base / ERRORS, live_errors(base), "live_errors")
    con.execute(f"CREATE VIEW errors AS SELECT DISTINCT ON (record_id) * FROM ({errors})")
    return con
