"""Shipping a replica's prediction log to the artifact store, exactly once, and reading it back.

Each replica of a fleet keeps its log on its own disk; shipping moves the compacted
Parquet files to ``{artifacts}/predictions`` (object storage in a fleet), where every
reader finds every replica's records::

    {artifacts}/predictions/replica=<id>/predictions/model=<m>/version=<v>/day=<d>/<name>
    {artifacts}/predictions/replica=<id>/feedback/day=<d>/<name>      (and errors/,
                                                                       unmatched-feedback/)

One shipment of a partition folder (see ``ship``):

1. its Parquet files (those no earlier shipment or pending merge names) are listed in an
   intent note ``.ship-<digest>.json`` beside them (temporary file, fsync, rename); the
   object's name follows from the inputs' names (``<first segment>+<count>-<digest>``),
2. the inputs are read, deduplicated and uploaded as one object: a single PUT on object
   storage (visible only once complete), a temporary file and a rename in a folder,
3. the object is read back and its sha256 compared; only then is the note marked
   verified, and the local inputs are deleted ``grace_s`` later (a running query may
   have listed them; readers see the rows once meanwhile, deduplicating on record ids).

A crash at any step loses nothing and duplicates nothing: the next shipment finishes
every note first, uploading a note's inputs again to the same object name (an
overwrite, never a second object) until it is verified, and deleting the inputs of a
verified one. Only one process per log folder ships at a time (``.ship.lock``).
Credentials never appear here: s3fs reads them, and the endpoint, from the environment
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL_S3``...).

>>> import tempfile
>>> default_replica_id("/srv/log").count("-") >= 1
True
>>> ShippedLog(tempfile.mkdtemp()).tables("predictions")
[]
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from modelyard.config import Settings
from modelyard.errors import InvalidInputError, StorageError
from modelyard.store.predlog.layout import (
    ERRORS,
    FEEDBACK,
    PREDICTIONS,
    UNMATCHED,
    encode_part,
)
from modelyard.store.predlog.segments import fsync_dir
from modelyard.store.predlog.tables import (
    ERROR_SCHEMA,
    FEEDBACK_SCHEMA,
    PREDICTION_SCHEMA,
    concat,
    deduplicate,
    fill_record_ids,
)
from modelyard.store.urls import is_local_path, redact_text, redact_url

__all__ = [
    "CACHE_BYTES",
    "GRACE_S",
    "MERGE_LOCK",
    "SHIPPED",
    "ShipResult",
    "ShippedLog",
    "check_shipping",
    "default_replica_id",
    "replica_id_for",
    "ship",
    "ship_interval_s",
    "shipped_log",
    "shipping_claimed",
    "try_flock",
]

_log = logging.getLogger(__name__)

#: the folder of the artifact store that holds every replica's shipped log
SHIPPED = "predictions"
#: shipped inputs are deleted locally this long after their upload was verified
GRACE_S = 120.0
#: the default interval between shipments when the artifact store is object storage
DEFAULT_INTERVAL_S = 60.0
_NOTE = ".ship-"
_KINDS = (PREDICTIONS, FEEDBACK, UNMATCHED, ERRORS)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: bytes of shipped tables kept in memory by ``ShippedLog.read`` (per process)
CACHE_BYTES = 256 * 2**20
_CacheKey = tuple[str, str, tuple[str, ...] | None]
_CACHE: OrderedDict[_CacheKey, pa.Table] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def _remember(key: _CacheKey, table: pa.Table) -> None:
    with _CACHE_LOCK:
        _CACHE[key] = table
        _CACHE.move_to_end(key)
        total = sum(t.nbytes for t in _CACHE.values())
        while total > CACHE_BYTES and len(_CACHE) > 1:
            _, dropped = _CACHE.popitem(last=False)
            total -= dropped.nbytes


def default_replica_id(log_dir: str | os.PathLike[str]) -> str:
    """This host's name and a hash of the log folder: stable across restarts, unique per folder."""
    host = _UNSAFE.sub("-", socket.gethostname()).strip("-.")[:40] or "host"
    digest = hashlib.sha256(str(Path(log_dir).resolve()).encode()).hexdigest()[:8]
    return f"{host}-{digest}"


def replica_id_for(settings: Settings) -> str:
    """``serving.replica_id``, or the default one of this host and log folder."""
    return settings.serving.replica_id or default_replica_id(settings.prediction_log_dir)


def ship_interval_s(settings: Settings) -> float:
    """Seconds between shipments; 0 when shipping is off (the default for a local folder)."""
    interval = settings.serving.ship.interval_s
    if interval is None:
        # on for object storage; a local folder or a process's memory is one host's
        one_host = is_local_path(settings.artifacts) or settings.artifacts.startswith("memory:")
        return 0.0 if one_host else DEFAULT_INTERVAL_S
    return interval


def check_shipping(settings: Settings) -> str | None:
    """Where this replica ships (``{artifacts}/predictions/replica=<id>``), checked once.

    None when shipping is off. Shipping runs in the compaction loop, so it needs
    ``serving.compact_interval_s`` above 0; and the artifact store must answer (a
    listing): a wrong endpoint or credentials fail here, at start-up, in one line,
    instead of in every shipment later.
    """
    if ship_interval_s(settings) <= 0:
        return None
    if settings.serving.compact_interval_s <= 0:
        raise InvalidInputError(
            "Expected serving.compact_interval_s above 0 while the prediction log is "
            "shipped (serving.ship.interval_s, on by default for object storage): "
            "shipments follow compactions; got 0. Set ship.interval_s: 0 to ship nothing",
            loc="serving.compact_interval_s",
        )
    url = _join(settings.artifacts, SHIPPED)
    replica = replica_id_for(settings)
    target = _Target(url, replica)
    try:  # a write and its removal: the bucket exists and the credentials may write
        target.put(".reachable", b"")
        target.fs.rm(f"{target.root}/.reachable")
    except Exception as exc:  # botocore's own errors are not OSError subclasses
        raise StorageError(
            f"The prediction log cannot be shipped to {redact_url(url)}: "
            f"{redact_text(str(exc), url)}. Check the `artifacts` setting and the "
            "credentials and endpoint in the environment (AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3)"
        ) from exc
    return f"{redact_url(url)}/replica={replica}"


def shipped_log(settings: Settings) -> ShippedLog | None:
    """The shipped log of every replica of the project (``{artifacts}/predictions``).

    None when there is none to read: shipping is off and the artifact store is object
    storage (not listed, to spare a request), or a local folder without shipped files.
    """
    url = _join(settings.artifacts, SHIPPED)
    if is_local_path(settings.artifacts):
        if not Path(url.removeprefix("file://")).is_dir():
            return None
    elif ship_interval_s(settings) <= 0:
        return None
    return ShippedLog(url)


def _join(url: str, name: str) -> str:
    return f"{url.rstrip('/')}/{name}"


def _filesystem(url: str) -> tuple[Any, str]:
    if is_local_path(url):
        return fsspec.filesystem("file"), str(Path(url.removeprefix("file://")).resolve())
    try:
        fs, root = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise InvalidInputError(
            f"Expected an artifact store URL the prediction log can be shipped to, got "
            f"{redact_url(url)!r}: {redact_text(str(exc), url)}",
            loc="artifacts",
        ) from exc
    return fs, str(root).rstrip("/")


class ShippedLog:
    """Every replica's shipped log under one URL: listed and read through fsspec and Arrow."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, self.root = _filesystem(url)
        self._local = is_local_path(url)

    def __repr__(self) -> str:
        return f"ShippedLog({redact_url(self.url)!r})"

    def files(
        self, kind: str, *, model: str | None = None, version: int | None = None
    ) -> list[str]:
        """The shipped Parquet files of ``kind`` (``predictions``, ``feedback``...), sorted."""
        if self._local and not os.path.isdir(self.root):
            return []
        try:
            self.fs.invalidate_cache(self.root)  # s3fs caches listings; others shipped since
            found = self.fs.find(self.root)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(
                f"Listing the shipped prediction log {redact_url(self.url)} failed: "
                f"{redact_text(str(exc), self.url)}"
            ) from exc
        prefix = self.root.rstrip("/") + "/"
        wanted = []
        for path in found:
            parts = str(path).removeprefix(prefix).split("/")
            if len(parts) < 3 or not parts[0].startswith("replica=") or parts[1] != kind:
                continue
            name = parts[-1]
            if not name.endswith(".parquet") or name.startswith("."):
                continue
            if model is not None and (len(parts) < 5 or parts[2] != f"model={encode_part(model)}"):
                continue
            if version is not None and (len(parts) < 5 or parts[3] != f"version={version}"):
                continue
            wanted.append(str(path))
        return sorted(wanted)

    def read(self, path: str, columns: list[str] | None = None) -> pa.Table | None:
        """One shipped file (None when retention removed it since it was listed).

        What was read is kept in memory (up to ``CACHE_BYTES`` in all, least recently
        used out first): a shipped object's rows never change (an upload again after a
        crash writes the same rows), so a long-lived reader (the UI, a server looking up
        feedback ids) downloads each object once.
        """
        key = (self.url, path, None if columns is None else tuple(columns))
        with _CACHE_LOCK:
            cached = _CACHE.get(key)
            if cached is not None:
                _CACHE.move_to_end(key)
                return cached
        try:
            wanted = columns
            if columns is not None:
                names = set(pq.read_schema(path, filesystem=self.fs).names)
                wanted = [c for c in columns if c in names]
            table = pq.read_table(path, filesystem=self.fs, columns=wanted, partitioning=None)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(
                f"Reading {path} of the shipped prediction log {redact_url(self.url)} failed: "
                f"{redact_text(str(exc), self.url)}"
            ) from exc
        _remember(key, table)
        return table

    def tables(
        self, kind: str, *, model: str | None = None, version: int | None = None
    ) -> list[pa.Table]:
        """Every shipped file of ``kind`` as a table (narrowed to a model and version)."""
        out = []
        for path in self.files(kind, model=model, version=version):
            table = self.read(path)
            if table is not None:
                out.append(table)
        return out


@dataclass(frozen=True)
class ShipResult:
    """What one ``ship`` run did."""

    shipped: tuple[str, ...] = ()  # objects uploaded and verified (relative to the URL)
    rows: int = 0  # rows in those objects
    deleted: int = 0  # local files deleted after their grace period
    pending: int = 0  # local files shipped, waiting for their grace period
    expired: int = 0  # shipped day folders removed by retention
    busy: bool = False  # another process of this log folder was shipping


def _partitions(root: Path) -> list[tuple[Path, str]]:
    folders = [(d, PREDICTIONS) for d in (root / PREDICTIONS).glob("model=*/version=*/day=*")]
    for name in (FEEDBACK, UNMATCHED, ERRORS):
        folders += [(d, name) for d in (root / name).glob("day=*")]
    return sorted(folders)


def shipping_claimed(folder: Path) -> set[str]:
    """The names of the files in ``folder`` that a shipment note holds (merging leaves them)."""
    names: set[str] = set()
    for note in folder.glob(f"{_NOTE}*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            names.update(json.loads(note.read_text())["inputs"])
    return names


def _merge_pending(folder: Path) -> set[str]:
    # inputs of a merge waiting for its grace period: their rows are in the merged file
    names: set[str] = set()
    for note in folder.glob(".pending-*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            names.update(json.loads(note.read_text())["inputs"])
    return names


#: the lock file of a partition folder, held by whoever merges or ships it
MERGE_LOCK = ".merge.lock"


@contextlib.contextmanager
def try_flock(path: Path) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` if no other process does (yields whether held)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _write_note(path: Path, note: dict[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w") as out:
        json.dump(note, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _combine(tables: list[pa.Table], kind: str) -> pa.Table:
    if kind == PREDICTIONS:
        table = deduplicate(fill_record_ids(concat(tables, PREDICTION_SCHEMA)), _PRED_KEYS)
    elif kind == ERRORS:
        table = deduplicate(concat(tables, ERROR_SCHEMA), ["record_id"])
    else:
        table = deduplicate(fill_record_ids(concat(tables, FEEDBACK_SCHEMA)), _FEEDBACK_KEYS)
    return table.combine_chunks()


_PRED_KEYS = ["record_id", "row", "route"]
_FEEDBACK_KEYS = list(FEEDBACK_SCHEMA.names)


class _Target:
    """Where one replica's files go: an fsspec filesystem and the replica's root in it."""

    def __init__(self, url: str, replica_id: str) -> None:
        self.url = url
        self.fs, base = _filesystem(url)
        self.root = f"{base}/replica={replica_id}"
        self.local = is_local_path(url)

    def put(self, key: str, data: bytes) -> None:
        path = f"{self.root}/{key}"
        if self.local:  # a folder: temporary file, fsync, rename
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
            try:
                with open(tmp, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            return
        # object storage: one PUT, visible only once complete (no rename on S3)
        self.fs.pipe_file(path, data)

    def digest(self, key: str) -> str | None:
        path = f"{self.root}/{key}"
        with contextlib.suppress(FileNotFoundError):
            return hashlib.sha256(self.fs.cat_file(path)).hexdigest()
        return None


def ship(
    root: str | os.PathLike[str],
    url: str,
    replica_id: str,
    *,
    grace_s: float = GRACE_S,
    retention_s: float | None = None,
    now: float | None = None,
) -> ShipResult:
    """Ship the compacted Parquet files under the log folder ``root`` to ``url``.

    ``url`` is the shipped log's root (``{artifacts}/predictions``); this replica's files
    go under ``replica=<replica_id>/``. Segments are not shipped: compact first.
    ``retention_s`` removes shipped day folders (every replica's) older than that.
    """
    base = Path(root)
    if not base.is_dir():
        return ShipResult()
    target = _Target(url, replica_id)
    with try_flock(base / ".ship.lock") as held:
        if not held:
            return ShipResult(busy=True)
        try:
            result = _ship(base, target, grace_s, time.time() if now is None else now)
            expired = 0 if retention_s is None else _expire(target, retention_s, now)
        except OSError as exc:
            raise StorageError(
                f"Shipping the prediction log {base} to {redact_url(url)} failed: "
                f"{redact_text(str(exc), url)}; nothing was lost (it is retried)"
            ) from exc
    return ShipResult(result.shipped, result.rows, result.deleted, result.pending, expired)


def _ship(base: Path, target: _Target, grace_s: float, now: float) -> ShipResult:
    shipped: list[str] = []
    rows = deleted = pending = 0
    for folder, kind in _partitions(base):
        with try_flock(folder / MERGE_LOCK) as held:
            if not held:
                continue  # a merge of this folder is running: next time
            # notes left by an earlier shipment (a crash, or inputs in their grace period)
            for note_path in sorted(folder.glob(f"{_NOTE}*.json")):
                done = _finish(folder, note_path, kind, target, grace_s, now)
                shipped += done[0]
                rows += done[1]
                deleted += done[2]
                pending += done[3]
            claimed = shipping_claimed(folder) | _merge_pending(folder)
            names = sorted(
                p.name
                for p in folder.glob("*.parquet")
                if not p.name.startswith(".") and p.name not in claimed
            )
            if not names:
                continue
            digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
            rel = folder.relative_to(base).as_posix()
            stem = names[0].removesuffix(".parquet")
            note = {
                "inputs": names,
                "key": f"{rel}/{stem}+{len(names)}-{digest}.parquet",
                "verified_at": None,
            }
            note_path = folder / f"{_NOTE}{digest}.json"
            _write_note(note_path, note)
            done = _finish(folder, note_path, kind, target, grace_s, now)
            shipped += done[0]
            rows += done[1]
            deleted += done[2]
            pending += done[3]
    return ShipResult(tuple(shipped), rows, deleted, pending)


def _finish(
    folder: Path, note_path: Path, kind: str, target: _Target, grace_s: float, now: float
) -> tuple[list[str], int, int, int]:
    """Upload (again) and verify one note's object; delete its inputs after the grace."""
    try:
        note = json.loads(note_path.read_text())
        names: list[str] = list(note["inputs"])
        key: str = note["key"]
    except (OSError, ValueError, KeyError, TypeError):
        _log.warning("%s is not a shipment note; left alone", note_path)
        return [], 0, 0, 0
    shipped: list[str] = []
    rows = 0
    if note.get("verified_at") is None:
        tables = []
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                tables.append(pq.read_table(folder / name, partitioning=None))
        if tables:
            table = _combine(tables, kind)
            buffer = io.BytesIO()
            pq.write_table(table, buffer)
            data = buffer.getvalue()
            expected = hashlib.sha256(data).hexdigest()
            target.put(key, data)
            if target.digest(key) != expected:
                raise OSError(f"the uploaded object {key} does not read back as written")
            shipped.append(key)
            rows = table.num_rows
        note["verified_at"] = now
        _write_note(note_path, note)
    present = [n for n in names if (folder / n).exists()]
    if now - float(note["verified_at"]) < grace_s:
        return shipped, rows, 0, len(present)
    for name in present:
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
    fsync_dir(folder)
    note_path.unlink()
    return shipped, rows, len(present), 0


def _expire(target: _Target, retention_s: float, now: float | None) -> int:
    """Remove shipped day folders (of every replica) older than ``retention_s``."""
    when = dt.datetime.fromtimestamp(time.time() if now is None else now, dt.UTC)
    cutoff = (when - dt.timedelta(seconds=retention_s)).date().isoformat()
    base = target.root.rsplit("/", 1)[0]
    fs = target.fs
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        fs.invalidate_cache(base)
    patterns = [f"{base}/replica=*/{PREDICTIONS}/model=*/version=*/day=*"]
    patterns += [f"{base}/replica=*/{name}/day=*" for name in (FEEDBACK, UNMATCHED, ERRORS)]
    for pattern in patterns:
        for folder in sorted(fs.glob(pattern)):
            day = str(folder).rsplit("day=", 1)[-1]
            if day < cutoff:
                fs.rm(folder, recursive=True)
                removed += 1
    return removed
