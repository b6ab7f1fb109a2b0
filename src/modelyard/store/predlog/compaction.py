"""Compaction: closed segments become Parquet files partitioned by model, version and day.

A segment is compacted once no writer holds its lock (its writer rotated past it,
closed, or died). Each segment's records are split by (model, version, UTC day) and
written to ``predictions/model=<m>/version=<v>/day=<d>/<segment stem>.parquet``
(feedback: ``feedback/day=<d>/<segment stem>.parquet``, error records:
``errors/day=<d>/<segment stem>.parquet``): to a temporary file, fsync'ed,
renamed into place; only then is the segment deleted. A crash at any point loses
nothing, and running compaction again rewrites the same file names instead of adding
duplicates. Torn tails are left out. Partitions that gathered many small files then
get them merged into one (see ``merging``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from modelyard.errors import StorageError
from modelyard.store.predlog.files import write_parquet
from modelyard.store.predlog.layout import (
    ERROR_SEGMENTS,
    ERRORS,
    FEEDBACK,
    FEEDBACK_SEGMENTS,
    SEGMENTS,
    UNMATCHED,
    UNMATCHED_SEGMENTS,
    feedback_dir,
    prediction_dir,
    utc_day,
)
from modelyard.store.predlog.merging import merge_small_files
from modelyard.store.predlog.records import decode_error, decode_feedback, decode_prediction
from modelyard.store.predlog.segments import claim, fsync_dir, list_segments, remove_abandoned
from modelyard.store.predlog.tables import errors_table, feedback_table, predictions_table

__all__ = ["CompactionResult", "compact", "write_parquet"]

_log = logging.getLogger(__name__)
R = TypeVar("R")


@dataclass(frozen=True)
class CompactionResult:
    """What one ``compact`` run did."""

    segments: int = 0  # segments compacted and removed
    records: int = 0  # prediction, feedback and error records moved to Parquet
    files: tuple[Path, ...] = ()  # Parquet files written
    skipped_live: int = 0  # segments still held by a live writer
    torn: int = 0  # segments whose torn tail was left out
    merged: int = 0  # small Parquet files merged into larger ones (see ``merging``)


def compact(
    root: str | os.PathLike[str], *, now_us: int | None = None, merge: bool = True
) -> CompactionResult:
    """Move every closed segment under ``root`` into Parquet; return what was done.

    ``now_us`` is accepted for schedulers that pass the current time; compaction takes
    every closed segment whatever its age, since a segment is closed for good. With
    ``merge``, partitions holding many small files then get them merged (``merging``).

    >>> import tempfile
    >>> compact(tempfile.mkdtemp()).segments
    0
    """
    del now_us  # every closed segment is final: there is no reason to wait for it
    base = Path(root)
    started = time.monotonic()
    results = [
        _compact_dir(base, base / SEGMENTS, decode_prediction, _prediction_parts),
        _compact_dir(base, base / FEEDBACK_SEGMENTS, decode_feedback, _feedback_parts),
        _compact_dir(base, base / UNMATCHED_SEGMENTS, decode_feedback, _unmatched_parts),
        _compact_dir(base, base / ERROR_SEGMENTS, decode_error, _error_parts),
    ]
    try:
        merged = merge_small_files(base) if merge else 0
    except OSError as exc:
        raise StorageError(f"Merging small Parquet files under {base} failed: {exc}") from exc
    result = CompactionResult(
        segments=sum(r.segments for r in results),
        records=sum(r.records for r in results),
        files=tuple(f for r in results for f in r.files),
        skipped_live=sum(r.skipped_live for r in results),
        torn=sum(r.torn for r in results),
        merged=merged,
    )
    _log.info("compacted %s in %.3f s", result, time.monotonic() - started)
    return result


def _prediction_parts(root: Path, stem: str, records: Sequence[Any]) -> list[Path]:
    parts: dict[tuple[str, int, str], list[Any]] = {}
    for record in records:
        key = (record.model, record.version, utc_day(record.time_us))
        parts.setdefault(key, []).append(record)
    written = []
    for (model, version, day), group in parts.items():
        path = prediction_dir(root, model, version, day) / f"{stem}.parquet"
        write_parquet(predictions_table(group), path)
        written.append(path)
    return written


def _feedback_parts(
    root: Path, stem: str, records: Sequence[Any], folder: str = FEEDBACK
) -> list[Path]:
    parts: dict[str, list[Any]] = {}
    for record in records:
        parts.setdefault(utc_day(record.time_us), []).append(record)
    written = []
    for day, group in parts.items():
        path = feedback_dir(root, day, folder) / f"{stem}.parquet"
        write_parquet(feedback_table(group), path)
        written.append(path)
    return written


def _unmatched_parts(root: Path, stem: str, records: Sequence[Any]) -> list[Path]:
    return _feedback_parts(root, stem, records, UNMATCHED)


def _error_parts(root: Path, stem: str, records: Sequence[Any]) -> list[Path]:
    parts: dict[str, list[Any]] = {}
    for record in records:
        parts.setdefault(utc_day(record.time_us), []).append(record)
    written = []
    for day, group in parts.items():
        path = feedback_dir(root, day, ERRORS) / f"{stem}.parquet"
        write_parquet(errors_table(group), path)
        written.append(path)
    return written


def _compact_dir(
    root: Path,
    directory: Path,
    decode: Callable[[bytes, str], R],
    write_parts: Callable[[Path, str, Sequence[R]], list[Path]],
) -> CompactionResult:
    remove_abandoned(directory)
    segments = records = live = torn = 0
    files: list[Path] = []
    for path in list_segments(directory):
        with claim(path) as scan:
            if scan is None:
                live += path.exists()
                continue
            if scan.foreign:
                _log.warning("%s is not a prediction log segment; left alone", path)
                continue
            decoded = [decode(payload, str(path)) for payload in scan.frames]
            try:
                files += write_parts(root, path.stem, decoded)
                path.unlink()  # only now: the Parquet files hold every record
                fsync_dir(directory)
            except OSError as exc:
                raise StorageError(f"Compacting {path} failed: {exc}; nothing was lost") from exc
            segments += 1
            records += len(decoded)
            torn += scan.torn
    return CompactionResult(segments, records, tuple(files), live, torn)
