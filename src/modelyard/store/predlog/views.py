"""DuckDB over the log: views ``predictions`` and ``feedback`` for monitoring queries.

The views read the Parquet tree in place (``read_parquet`` with hive partitioning, so
each row also has the partition's ``day``), plus the records still in segments as of
``connect`` (call it again to see newer ones), one row per (request_id, row, route).
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from modelyard.store.predlog.layout import FEEDBACK, PREDICTIONS
from modelyard.store.predlog.reader import live_feedback, live_predictions

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
    """An in-memory DuckDB connection with views ``predictions`` and ``feedback``.

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
    distinct = 'DISTINCT ON (request_id, "row", route)'
    con.execute(f"CREATE VIEW predictions AS SELECT {distinct} * FROM ({predictions})")
    con.execute(f"CREATE VIEW feedback AS SELECT DISTINCT * FROM ({feedback})")
    return con
