"""Materialization: a view's latest row per entity, from its source to an online store.

DuckDB reads the source once into a temporary table (it spills to disk, so memory stays
bounded), picks the latest row per entity by the offline tie rules (latest event time,
then latest availability time with nulls losing, then the later row of the source), and
streams the winners to the online store in Arrow record batches. The online store's
monotonic writes make reruns and out-of-order runs converge.

A window selects the rows: event time in ``[start, end)`` and, for incremental runs,
availability after a watermark. A row is available at ``max(created, event)`` (it has
arrived, and its event has happened; ``created_timestamp_field``, else the event time).
The watermark a run records is the latest availability among its rows available before
``end``: a row left out because its event is at or after ``end`` is available after that
mark, so a later run takes it (a watermark taken over later availabilities would skip it
and lose it).

A run can be cut into partitions by entity key (``Partition``: DuckDB's ``hash`` of the
join keys modulo their count, the same in every process): each partition reads every
source row of its keys, in source order, so its winners are the whole run's winners of
those keys and its watermark is the whole run's over its rows. The Ray engine writes the
partitions in parallel (:mod:`modelyard.features.partitioned`); the store's monotonic
writes keep the newer value whichever partition, or run, writes last.

Aggregations are computed as of ``end`` over ``[end - window, end)`` (what the offline
join gives at ``end - 1µs``), from the rows in ``[start, end)``; an incremental run
recomputes them from every row, since a window slides even without new rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from modelyard.errors import StorageError
from modelyard.features.definitions import FeatureView, parse_window
from modelyard.features.online.base import CREATED_TIMESTAMP, EVENT_TIMESTAMP, OnlineStore

__all__ = ["BATCH_ROWS", "Partition", "Window", "materialize_view"]

#: rows per Arrow record batch written to the online store
BATCH_ROWS = 100_000


@dataclass(frozen=True)
class Window:
    """Rows with event time in ``[start_us, end_us)`` and availability after ``after_us``."""

    start_us: int | None
    end_us: int
    after_us: int | None


@dataclass(frozen=True)
class Partition:
    """The entities whose keys hash to ``index`` modulo ``count``."""

    index: int
    count: int

    def sql(self, keys: list[str]) -> str:
        """The filter on the source's key columns."""
        return f"hash({', '.join(keys)}) % {int(self.count)} = {int(self.index)}"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _ts(us: int) -> str:
    return f"make_timestamptz({int(us)})"


def _raw_sql(view: FeatureView, window: Window, partition: Partition | None = None) -> str:
    source = view.source
    event = f"CAST({_q(source.timestamp_field)} AS TIMESTAMPTZ)"
    created = (
        f"CAST({_q(source.created_timestamp_field)} AS TIMESTAMPTZ)"
        if source.created_timestamp_field
        else "CAST(NULL AS TIMESTAMPTZ)"
    )
    select = ", ".join(
        [f"{_q(k)} AS __k{i}" for i, k in enumerate(view.join_keys)]
        + [f"{event} AS __t", f"{created} AS __c"]
        + [f"{f.sql} AS __f{i}" for i, f in enumerate(view.features)]
        + [f"{_q(a.column)} AS __a{i}" for i, a in enumerate(view.aggregations)]
    )
    where = [f"{event} IS NOT NULL", f"{event} < {_ts(window.end_us)}"]
    where += [f"{_q(k)} IS NOT NULL" for k in view.join_keys]  # a null key matches nothing
    if partition is not None:
        where.append(partition.sql([_q(k) for k in view.join_keys]))
    if window.start_us is not None:
        where.append(f"{event} >= {_ts(window.start_us)}")
    # Aggregations need every row of their windows, not only the new ones.
    if window.after_us is not None and not view.aggregations:
        where.append(f"{_available(event, created)} > {_ts(window.after_us)}")
    return f"SELECT {select} FROM {source.relation()} WHERE {' AND '.join(where)}"


def _available(event: str, created: str) -> str:
    """When a row reached the online store: it has arrived and its event has happened."""
    return f"greatest(coalesce({created}, {event}), {event})"


def _winners_sql(columns: list[str], keys: list[str]) -> str:
    """``columns`` of the latest row per entity in ``__raw`` (offline rule 4), as ``__w.*``.

    Latest event time, then availability (null loses), then the later row of the source:
    one hash aggregate keyed on that order, far cheaper than a row_number() window. The
    order key is never null (``__t`` is not null here), so no row is skipped.
    """
    packed = ", ".join(columns)
    order = "(__t, __c IS NOT NULL, coalesce(__c, '-infinity'::TIMESTAMPTZ), rowid)"
    return (
        f"SELECT {', '.join(keys)}, arg_max(struct_pack({packed}), {order}) AS __w"
        f" FROM __raw GROUP BY {', '.join(keys)}"
    )


def _latest_sql(view: FeatureView) -> str:
    keys = [f"__k{i}" for i in range(len(view.join_keys))]
    columns = [f"{a} AS {_q(k)}" for a, k in zip(keys, view.join_keys, strict=True)]
    columns.append(f"__w.__t AS {EVENT_TIMESTAMP}")
    if view.source.created_timestamp_field:
        columns.append(f"__w.__c AS {CREATED_TIMESTAMP}")
    columns += [f"__w.__f{i} AS {_q(f.name)}" for i, f in enumerate(view.features)]
    packed = ["__t", "__c", *(f"__f{i}" for i in range(len(view.features)))]
    # Offline rule 4: latest event time, then availability (null loses), then source order.
    return f"SELECT {', '.join(columns)} FROM ({_winners_sql(packed, keys)})"


_AGGREGATE = {
    "count": "count",
    "sum": "sum",
    "mean": "avg",
    "min": "min",
    "max": "max",
    "std": "stddev_samp",
    "last": "arg_max_null",
}


def _aggregated_sql(view: FeatureView, end_us: int) -> str:
    """The latest row per entity with each aggregation as of ``end``, over ``[end - w, end)``.

    The row is written with ``created_timestamp = end - 1µs``: the online store's monotonic
    (event, created) rule then keeps the value of the latest ``end`` for the same latest
    event, so windows that slide without new rows still update, and older runs lose.
    """
    keys = [f"__k{i}" for i in range(len(view.join_keys))]
    windows = [parse_window(a.window) for a in view.aggregations]
    outputs = []
    for i, (aggregation, window) in enumerate(zip(view.aggregations, windows, strict=True)):
        since = end_us - int(window.total_seconds() * 1_000_000)
        args = f"__a{i}, __ord" if aggregation.fn == "last" else f"__a{i}"
        value = f"{_AGGREGATE[aggregation.fn]}({args}) FILTER (WHERE __t >= {_ts(since)})"
        cast = "BIGINT" if aggregation.fn == "count" else "DOUBLE"
        outputs.append(f"CAST({value} AS {cast}) AS __a{i}")
    columns = [f"l.{a} AS {_q(k)}" for a, k in zip(keys, view.join_keys, strict=True)]
    columns += [f"l.__t AS {EVENT_TIMESTAMP}", f"{_ts(end_us - 1)} AS {CREATED_TIMESTAMP}"]
    columns += [f"l.__f{i} AS {_q(f.name)}" for i, f in enumerate(view.features)]
    for i, aggregation in enumerate(view.aggregations):
        # an entity with no rows in the window counts 0, as the offline join does
        value = f"coalesce(g.__a{i}, 0)" if aggregation.fn == "count" else f"g.__a{i}"
        columns.append(f"{value} AS {_q(aggregation.output_name)}")
    oldest = end_us - int(max(windows).total_seconds() * 1_000_000)
    partition = ", ".join(keys)
    packed = ["__t", *(f"__f{i}" for i in range(len(view.features)))]
    return (
        f"WITH latest AS (SELECT {partition}, __w.* FROM ({_winners_sql(packed, keys)})),"
        " ranked AS (SELECT *, row_number() OVER (ORDER BY __t, __c NULLS FIRST, rowid)"
        f" AS __ord FROM __raw), grouped AS (SELECT {partition}, {', '.join(outputs)}"
        f" FROM ranked WHERE __t >= {_ts(oldest)} GROUP BY {partition})"
        f" SELECT {', '.join(columns)} FROM latest l LEFT JOIN grouped g USING ({partition})"
    )


def materialize_view(
    view: FeatureView,
    window: Window,
    store: OnlineStore,
    on_batch: Callable[[int], None] | None = None,
    partition: Partition | None = None,
) -> tuple[int, int | None]:
    """Write the view's winners in ``window``; (rows written, max availability µs seen).

    With ``partition``, only the entities of that partition (see the module docstring).
    """
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        # Read once, in source order, so rowid is the ingestion order of the last tie-break.
        con.execute(f"CREATE TEMP TABLE __raw AS {_raw_sql(view, window, partition)}")
        available = _available("__t", "__c")
        [(mark,)] = con.execute(
            f"SELECT epoch_us(max({available})) FROM __raw WHERE {available} < {_ts(window.end_us)}"
        ).fetchall()
        watermark = None if mark is None else int(mark)
        sql = _aggregated_sql(view, window.end_us) if view.aggregations else _latest_sql(view)
        reader: pa.RecordBatchReader = con.sql(sql).to_arrow_reader(BATCH_ROWS)
        written = 0
        for batch in reader:
            if batch.num_rows == 0:
                continue
            written += store.write(view, pa.Table.from_batches([batch]))
            if on_batch is not None:
                on_batch(written)
    except duckdb.Error as exc:
        raise StorageError(f"Materializing view {view.name!r} failed: {exc}") from exc
    finally:
        con.close()
    return written, watermark
