"""Merging a partition's small Parquet files into one, so reading stays fast.

A server compacting every minute writes one small file per worker, model version and
day each time: a quiet day leaves 1,440 files per worker, and opening them costs more
than the rows they hold. Once a partition folder holds ``MERGE_AT`` small files, they
are read, deduplicated (one row per record id, row and route) and written as one
``merged-<digest>.parquet`` (temporary file, fsync, rename; the name follows from the
inputs, so a rerun writes the same file).

The inputs are not deleted at once: a reader (a DuckDB query) may have listed them
already. A hidden ``.pending-<digest>.json`` beside them names them; a later merge of
that folder deletes them once the note is ``GRACE_S`` old. Meanwhile every row is in
two files, which readers see once (they deduplicate on record ids), and a listed
input is never merged again. A crash at any step loses nothing: inputs go only after
the merged file is on disk, and a note left behind is finished by the next merge.
One merge per folder at a time (an exclusive lock on ``.merge.lock``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path

import pyarrow.parquet as pq

from modelyard.store.predlog.files import write_parquet
from modelyard.store.predlog.layout import ERRORS, FEEDBACK, PREDICTIONS, UNMATCHED
from modelyard.store.predlog.segments import fsync_dir
from modelyard.store.predlog.shipping import MERGE_LOCK, shipping_claimed, try_flock
from modelyard.store.predlog.tables import (
    ERROR_SCHEMA,
    FEEDBACK_SCHEMA,
    PREDICTION_SCHEMA,
    concat,
    deduplicate,
    fill_record_ids,
)

__all__ = ["GRACE_S", "MERGE_AT", "SMALL_BYTES", "merge_small_files"]

#: a folder's small files are merged once there are this many
MERGE_AT = 8
#: files below this size count as small
SMALL_BYTES = 32 * 2**20
#: merged inputs are deleted this long after their merge (readers may have listed them)
GRACE_S = 120.0


def _partitions(root: Path) -> list[tuple[Path, str]]:
    folders = [(d, PREDICTIONS) for d in (root / PREDICTIONS).glob("model=*/version=*/day=*")]
    for name in (FEEDBACK, UNMATCHED, ERRORS):
        folders += [(d, name) for d in (root / name).glob("day=*")]
    return sorted(folders)


def merge_small_files(root: str | os.PathLike[str], *, grace_s: float = GRACE_S) -> int:
    """Merge the small files of every partition under ``root``; return the files merged."""
    merged = 0
    for folder, kind in _partitions(Path(root)):
        merged += _merge_folder(folder, kind, grace_s)
    return merged


def _finish_pending(folder: Path, grace_s: float) -> set[str]:
    """Delete the inputs of merges older than ``grace_s``; the names still waiting."""
    waiting: set[str] = set()
    for note in sorted(folder.glob(".pending-*.json")):
        try:
            names = json.loads(note.read_text())["inputs"]
            age = time.time() - note.stat().st_mtime
        except (OSError, ValueError, KeyError):
            continue
        if age < grace_s:
            waiting.update(names)
            continue
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                (folder / name).unlink()
        fsync_dir(folder)
        note.unlink()
    return waiting


def _merge_folder(folder: Path, kind: str, grace_s: float) -> int:
    with try_flock(folder / MERGE_LOCK) as held:
        if not held:
            return 0
        waiting = _finish_pending(folder, grace_s)
        waiting |= shipping_claimed(folder)  # being shipped (see ``shipping``): left to it
        small = []
        for path in sorted(folder.glob("*.parquet")):
            with contextlib.suppress(FileNotFoundError):
                if path.name not in waiting and path.stat().st_size < SMALL_BYTES:
                    small.append(path)
        if len(small) < MERGE_AT:
            return 0
        names = [p.name for p in small]
        digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
        target = folder / f"merged-{digest}.parquet"
        tables = [pq.read_table(p, partitioning=None) for p in small]
        if kind == PREDICTIONS:
            table = fill_record_ids(concat(tables, PREDICTION_SCHEMA))
            table = deduplicate(table, ["record_id", "row", "route"])
        elif kind == ERRORS:
            table = deduplicate(concat(tables, ERROR_SCHEMA), ["record_id"])
        else:
            table = deduplicate(
                fill_record_ids(concat(tables, FEEDBACK_SCHEMA)), FEEDBACK_SCHEMA.names
            )
        write_parquet(table.combine_chunks(), target)  # one row group, not one per input
        note = folder / f".pending-{digest}.json"
        tmp = folder / f".pending-{digest}.tmp"
        tmp.write_text(json.dumps({"inputs": names, "merged": target.name}))
        os.replace(tmp, note)
        fsync_dir(folder)
        if grace_s <= 0:
            _finish_pending(folder, 0)
        return len(small)
