"""Reading the log back: compacted Parquet plus the records still in segments.

Readers take the segments first and list the Parquet files after, so a segment that
compaction moves meanwhile is seen at least once; a (record_id, row, route) seen twice
(in a segment and in its Parquet file, when compaction died between the rename and the
delete) is returned once. ``record_id`` is the server's unique id of a prediction, so
two requests that reused a client id are two records. Torn tails are skipped. Rows come
ordered by time, ties in log order.

Labels for request ids that no prediction had are kept apart (``read_unmatched_feedback``)
and never joined to predictions.

With ``shipped`` (a ``shipping.ShippedLog``: every replica's log in the artifact store),
the shipped files are read too, after the local ones: a file shipped meanwhile is seen
at least once, and the deduplication returns it once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from modelyard.store.predlog.layout import (
    ERROR_SEGMENTS,
    ERRORS,
    FEEDBACK,
    FEEDBACK_SEGMENTS,
    PREDICTIONS,
    SEGMENTS,
    UNMATCHED,
    UNMATCHED_SEGMENTS,
    encode_part,
    utc_day,
)
from modelyard.store.predlog.records import (
    ErrorRecord,
    FeedbackRecord,
    PredictionRecord,
    decode_error,
    decode_feedback,
    decode_prediction,
)
from modelyard.store.predlog.segments import list_segments, read_segment
from modelyard.store.predlog.shipping import ShippedLog
from modelyard.store.predlog.tables import (
    ERROR_SCHEMA,
    FEEDBACK_SCHEMA,
    PREDICTION_SCHEMA,
    TIME,
    concat,
    deduplicate,
    errors_table,
    feedback_table,
    fill_record_ids,
    predictions_table,
)

__all__ = [
    "live_errors",
    "live_feedback",
    "live_predictions",
    "read_errors",
    "read_folder",
    "read_feedback",
    "read_predictions",
    "read_unmatched_feedback",
]

PredictionFilter = Callable[[PredictionRecord], bool]


def live_predictions(root: Path, keep: PredictionFilter | None = None) -> pa.Table:
    """The prediction records still in segments (live or closed), as one table."""
    records: list[PredictionRecord] = []
    for path in list_segments(root / SEGMENTS):
        scan = read_segment(path)
        if scan is not None:
            decoded = (decode_prediction(p, str(path)) for p in scan.frames)
            records += decoded if keep is None else filter(keep, decoded)
    return predictions_table(records)


def live_feedback(root: Path, segments: str = FEEDBACK_SEGMENTS) -> pa.Table:
    """The feedback records still in segments, as one table."""
    records: list[FeedbackRecord] = []
    for path in list_segments(root / segments):
        scan = read_segment(path)
        if scan is not None:
            records += (decode_feedback(p, str(path)) for p in scan.frames)
    return feedback_table(records)


def live_errors(root: Path) -> pa.Table:
    """The error records still in segments, as one table."""
    records: list[ErrorRecord] = []
    for path in list_segments(root / ERROR_SEGMENTS):
        scan = read_segment(path)
        if scan is not None:
            records += (decode_error(p, str(path)) for p in scan.frames)
    return errors_table(records)


def _subdirs(directory: Path, prefix: str, wanted: str | None = None) -> list[Path]:
    if wanted is not None:
        path = directory / f"{prefix}{wanted}"
        return [path] if path.is_dir() else []
    try:
        names = sorted(e.name for e in os.scandir(directory) if e.is_dir())
    except FileNotFoundError:
        return []
    return [directory / n for n in names if n.startswith(prefix)]


def _parquet_files(directory: Path) -> list[Path]:
    try:
        names = sorted(e.name for e in os.scandir(directory))
    except FileNotFoundError:
        return []
    return [directory / n for n in names if n.endswith(".parquet") and not n.startswith(".")]


def _read(path: Path) -> pa.Table | None:
    try:
        return pq.read_table(path, partitioning=None)
    except FileNotFoundError:
        return None


def read_folder(directory: Path) -> list[pa.Table]:
    """Every Parquet file of one partition folder.

    A file that vanishes between the listing and the read was merged into another
    (written before the input goes), so the folder is listed again for files not read
    yet; rows read twice this way are removed by the callers' deduplication.
    """
    tables: list[pa.Table] = []
    seen: set[Path] = set()
    while True:
        fresh = [p for p in _parquet_files(directory) if p not in seen]
        vanished = False
        for path in fresh:
            seen.add(path)
            table = _read(path)
            if table is None:
                vanished = True
            else:
                tables.append(table)
        if not vanished:
            return tables


def _time_mask(table: pa.Table, since_us: int | None, until_us: int | None) -> pa.Table:
    time = table.column("time")
    masks = []
    if since_us is not None:
        masks.append(pc.greater_equal(time, pa.scalar(since_us, TIME)))
    if until_us is not None:
        masks.append(pc.less(time, pa.scalar(until_us, TIME)))
    for mask in masks:
        table = table.filter(mask)
    return table


def read_predictions(
    root: str | os.PathLike[str],
    *,
    model: str | None = None,
    version: int | None = None,
    since_us: int | None = None,
    until_us: int | None = None,
    shipped: ShippedLog | None = None,
) -> pa.Table:
    """Every logged predicted row, one per (record_id, row, route), ordered by time.

    ``since_us`` is inclusive and ``until_us`` exclusive (UTC microseconds).

    >>> import tempfile
    >>> read_predictions(tempfile.mkdtemp()).column_names[:4]
    ['record_id', 'request_id', 'row', 'time']
    """
    base = Path(root)

    def keep(r: PredictionRecord) -> bool:
        return (
            (model is None or r.model == model)
            and (version is None or r.version == version)
            and (since_us is None or r.time_us >= since_us)
            and (until_us is None or r.time_us < until_us)
        )

    live = live_predictions(base, keep)
    first = None if since_us is None else utc_day(since_us)
    last = None if until_us is None else utc_day(until_us - 1)
    tables: list[pa.Table] = []
    wanted_model = None if model is None else encode_part(model)
    wanted_version = None if version is None else str(version)
    for model_dir in _subdirs(base / PREDICTIONS, "model=", wanted_model):
        for version_dir in _subdirs(model_dir, "version=", wanted_version):
            for day_dir in _subdirs(version_dir, "day="):
                day = day_dir.name.removeprefix("day=")
                if (first and day < first) or (last and day > last):
                    continue
                for table in read_folder(day_dir):
                    tables.append(_filter(table, model, version, since_us, until_us))
    if shipped is not None:  # after the local files: one shipped meanwhile is seen too
        for path in shipped.files(PREDICTIONS, model=model, version=version):
            day = path.rsplit("day=", 1)[-1].split("/", 1)[0]
            if (first and day < first) or (last and day > last):
                continue
            table = shipped.read(path)
            if table is not None:
                tables.append(_filter(table, model, version, since_us, until_us))
    table = fill_record_ids(concat([*tables, live], PREDICTION_SCHEMA))
    table = deduplicate(table, ["record_id", "row", "route"])
    return table.take(pc.sort_indices(table, [("time", "ascending")]))


def _filter(
    table: pa.Table,
    model: str | None,
    version: int | None,
    since_us: int | None,
    until_us: int | None,
) -> pa.Table:
    # the folders already narrowed it; a hashed long model name could still collide
    if model is not None:
        table = table.filter(pc.equal(table.column("model"), model))
    if version is not None:
        table = table.filter(pc.equal(table.column("version"), version))
    return _time_mask(table, since_us, until_us)


def read_feedback(root: str | os.PathLike[str], shipped: ShippedLog | None = None) -> pa.Table:
    """Every label matched to a prediction record, exact duplicates once, ordered by time.

    Columns: ``record_id`` (the record labelled), ``request_id`` (the id the label was
    sent for), ``row`` (null = all rows), ``label`` (JSON text: decode with
    ``json.loads``), ``time``.
    """
    return _read_feedback(Path(root), FEEDBACK_SEGMENTS, FEEDBACK, shipped)


def read_unmatched_feedback(
    root: str | os.PathLike[str], shipped: ShippedLog | None = None
) -> pa.Table:
    """Labels sent for ids no prediction record had when they arrived, kept apart.

    The columns of ``read_feedback``, ``record_id`` empty.
    """
    return _read_feedback(Path(root), UNMATCHED_SEGMENTS, UNMATCHED, shipped)


def _read_feedback(base: Path, segments: str, folder: str, shipped: ShippedLog | None) -> pa.Table:
    live = live_feedback(base, segments)
    tables: list[pa.Table] = []
    for day_dir in _subdirs(base / folder, "day="):
        tables += read_folder(day_dir)
    if shipped is not None:
        tables += shipped.tables(folder)
    table = fill_record_ids(concat([*tables, live], FEEDBACK_SCHEMA))
    table = deduplicate(table, FEEDBACK_SCHEMA.names)
    return table.take(pc.sort_indices(table, [("time", "ascending")]))


def read_errors(root: str | os.PathLike[str], shipped: ShippedLog | None = None) -> pa.Table:
    """Every logged failed request, one per ``record_id``, ordered by time.

    Columns: see ``tables.ERROR_SCHEMA`` (``version`` and ``route`` null when the request
    failed before a version was chosen).

    >>> import tempfile
    >>> read_errors(tempfile.mkdtemp()).column_names[:4]
    ['record_id', 'request_id', 'time', 'model']
    """
    base = Path(root)
    live = live_errors(base)
    tables: list[pa.Table] = []
    for day_dir in _subdirs(base / ERRORS, "day="):
        tables += read_folder(day_dir)
    if shipped is not None:
        tables += shipped.tables(ERRORS)
    table = deduplicate(concat([*tables, live], ERROR_SCHEMA), ["record_id"])
    return table.take(pc.sort_indices(table, [("time", "ascending")]))
