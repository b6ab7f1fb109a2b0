"""Time windows over the prediction log: what each window's rows were, and their labels.

The log is read through DuckDB (``modelyard.store.predlog.connect``), records not yet
compacted included, for one model version and the routes that answered (``primary``,
``canary`` and ``batch`` scoring logged by ``modelyard predict --log``; a ``shadow``
version's records are its own, read by asking for it).
Windows are aligned on multiples of their length from Monday 2000-01-03 00:00 UTC, so a
``1d`` window is a UTC day and a ``1w`` window a Monday-to-Monday week, whichever range
is asked for; a window that holds no row is skipped.

Labels come from the feedback beside the log, joined on the server's record id (the
server resolved the id the label was sent for when it arrived): a label with a row
number labels that row; one without labels every row of its request, or, when it is a
list, each row by position. The latest label of a row wins, whichever of the two kinds it is.

>>> parse_window("6h")
datetime.timedelta(seconds=21600)
>>> [w.isoformat() for w in window_bounds(dt(2013, 3, 1, 13), timedelta(days=1))]
['2013-03-01T00:00:00+00:00', '2013-03-02T00:00:00+00:00']
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from modelyard.errors import InvalidInputError
from modelyard.store import predlog
from modelyard.store.predlog.shipping import ShippedLog

__all__ = [
    "ORIGIN",
    "LogWindow",
    "dt",
    "parse_window",
    "read_log",
    "split_windows",
    "utc_us",
    "window_bounds",
]

ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)  # a Monday
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_WINDOW = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")


def dt(year: int, month: int, day: int, hour: int = 0) -> datetime:
    """A UTC datetime, for examples and tests."""
    return datetime(year, month, day, hour, tzinfo=UTC)


def parse_window(text: str) -> timedelta:
    """``"1d"``, ``"6h"``, ``"30m"``, ``"1w"``, ``"90s"`` as a timedelta."""
    match = _WINDOW.match(text) if isinstance(text, str) else None
    if match is None or int(match.group(1)) == 0:
        raise InvalidInputError(
            f"Expected a window like 1d, 6h, 30m or 1w (a positive number and a unit s, m, "
            f"h, d or w), got {text!r}",
            loc="window",
        )
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def window_bounds(when: datetime, length: timedelta) -> tuple[datetime, datetime]:
    """The aligned window holding ``when``."""
    steps = (when - ORIGIN) // length
    start = ORIGIN + steps * length
    return start, start + length


@dataclass(frozen=True)
class LogWindow:
    """One window's rows: model inputs, outputs and (when asked) labels."""

    start: datetime
    end: datetime
    inputs: pa.Table  # columns named as the model's inputs
    outputs: pa.Table  # columns named as the model's outputs ("proba_1", "label", ...)
    labels: pa.Array | None = None  # strings; null where no label arrived
    request_ids: pa.Array | None = None

    @property
    def rows(self) -> int:
        return int(self.inputs.num_rows)

    @property
    def labelled(self) -> int:
        return 0 if self.labels is None else int(len(self.labels) - self.labels.null_count)


def utc_us(when: datetime) -> int:
    """Microseconds since the epoch of a time with a zone (the log's time unit)."""
    if when.tzinfo is None:
        raise InvalidInputError(f"Expected a time with a zone, got {when.isoformat()}")
    return int(when.timestamp() * 1_000_000)


#: the routes whose rows monitoring reads by default: what a model answered (a shadow's
#: rows are its own experiment) and what batch scoring logged
MONITORED_ROUTES = ("primary", "canary", "batch")


def log_filter(
    model: str,
    version: int,
    routes: Sequence[str],
    since: datetime | None,
    until: datetime | None,
    *,
    alias: str = "",
) -> tuple[str, list[object]]:
    """The WHERE clause (and its parameters) of a version's logged rows in a time range.

    One builder for every reader of the log, so a chunked read (on Ray) and a whole read
    select the same rows.

    >>> log_filter("churn", 2, ("primary",), None, None, alias="p")
    ('p.model = ? AND p.version = ? AND p.route IN (?)', ['churn', 2, 'primary'])
    """
    prefix = f"{alias}." if alias else ""
    where = [
        f"{prefix}model = ?",
        f"{prefix}version = ?",
        f"{prefix}route IN ({', '.join('?' * len(routes))})",
    ]
    params: list[object] = [model, version, *routes]
    if since is not None:
        where.append(f"{prefix}time >= ?")
        params.append(since)
    if until is not None:
        where.append(f"{prefix}time < ?")
        params.append(until)
    return " AND ".join(where), params


def read_log(
    log_dir: str | Path,
    model: str,
    version: int,
    *,
    inputs: Sequence[str] | None,
    outputs: Sequence[str],
    since: datetime | None = None,
    until: datetime | None = None,
    labels: bool = False,
    features: bool = False,
    routes: Sequence[str] = MONITORED_ROUTES,
    columns: Sequence[str] = (),
    shipped: ShippedLog | None = None,
) -> pa.Table:
    """The logged rows of ``model`` v``version``, oldest first.

    Columns: ``time`` (timestamp, UTC), ``request_id``, each of ``columns`` (more of the
    log's own: ``record_id``, ``row``, ``latency_us``, ``route``), ``input.<name>`` for
    each of ``inputs`` the log holds (every one for None), ``output.<name>`` likewise,
    every ``feature.<view:feature>`` with ``features``, and ``label`` (string) with
    ``labels``. With ``shipped``, every replica's shipped log too (``predlog.shipping``).
    """
    con = predlog.connect(log_dir, shipped)
    try:
        present = {row[0] for row in con.execute("DESCRIBE predictions").fetchall()}
        if inputs is None:
            inputs = sorted(c[6:] for c in present if c.startswith("input."))
        own = ("record_id", "row", "latency_us", "route")
        unknown = [c for c in columns if c not in own]
        if unknown:
            raise InvalidInputError(
                f"expected columns among {', '.join(own)}, got {', '.join(unknown)}",
                loc="columns",
            )
        wanted = [*columns] + [f"input.{n}" for n in inputs] + [f"output.{n}" for n in outputs]
        if features:
            wanted += sorted(c for c in present if c.startswith("feature."))
        selected = ", ".join(f'p."{c}"' for c in wanted if c in present)
        where, params = log_filter(model, version, routes, since, until, alias="p")
        label = ""
        joins = ""
        if labels:
            # a row's own label, else its request's (a list is indexed by row)
            # the latest label of the row: its own, or its request's (a list by row)
            label = (
                ", CASE WHEN fr.label IS NOT NULL AND (fa.label IS NULL OR fr.t >= fa.t) "
                "THEN json_extract_string(fr.label, '$') WHEN json_type(fa.label) = 'ARRAY' "
                "THEN json_extract_string(fa.label, '$[' || p.\"row\" || ']') "
                "ELSE json_extract_string(fa.label, '$') END AS label"
            )
            # on the server's record id: clients may reuse their request ids
            joins = (
                ' LEFT JOIN (SELECT record_id, "row", arg_max(label, time) AS label, '
                'max(time) AS t FROM feedback WHERE "row" IS NOT NULL GROUP BY ALL) fr '
                'ON fr.record_id = p.record_id AND fr."row" = p."row"'
                " LEFT JOIN (SELECT record_id, arg_max(label, time) AS label, max(time) AS t "
                'FROM feedback WHERE "row" IS NULL GROUP BY ALL) fa '
                "ON fa.record_id = p.record_id"
            )
        query = (
            f"SELECT p.time, p.request_id{', ' + selected if selected else ''}{label} "
            f"FROM predictions p{joins} WHERE {where} "
            'ORDER BY p.time, p.request_id, p."row"'
        )
        return con.sql(query, params=params).to_arrow_table()
    finally:
        con.close()


def split_windows(
    table: pa.Table,
    length: timedelta,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[LogWindow]:
    """The non-empty aligned windows of a ``read_log`` table (sorted by time)."""
    if table.num_rows == 0:
        return
    times = pc.cast(table.column("time"), pa.int64()).to_numpy()
    step = int(length.total_seconds() * 1_000_000)
    origin = utc_us(ORIGIN)
    buckets = (times - origin) // step
    cuts = np.flatnonzero(np.diff(buckets)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [len(times)]])
    inputs = [c for c in table.column_names if c.startswith("input.")]
    outputs = [c for c in table.column_names if c.startswith("output.")]
    for first, last in zip(starts.tolist(), ends.tolist(), strict=True):
        part = table.slice(first, last - first)
        begin = ORIGIN + timedelta(microseconds=int(buckets[first]) * step)
        end = begin + length
        if since is not None:
            begin = max(begin, since)
        if until is not None:
            end = min(end, until)
        yield LogWindow(
            start=begin,
            end=end,
            inputs=part.select(inputs).rename_columns([c[6:] for c in inputs]),
            outputs=part.select(outputs).rename_columns([c[7:] for c in outputs]),
            labels=part.column("label").combine_chunks() if "label" in part.column_names else None,
            request_ids=part.column("request_id").combine_chunks(),
        )
