"""Garbage collection for the artifact store: stale temporary files and unreferenced blobs.

What goes, each only once it is older than the grace period (default 24 hours):

* **temporary files** under the store's ``tmp/`` (a write killed before its rename) and
  the scratch folders packaging, loading and serving keep in the system's temporary
  folder (``modelyard-package-<pid>-*``, ``modelyard-load-<pid>-*``,
  ``modelyard-serve-<pid>-*``) whose process is gone;
* **unreferenced blobs**: objects whose sha256 is not in the set the caller passes (the
  registry layer computes it from every package, manifest file, run artifact and
  registry record; see ``modelyard.registry.gc``).

Why the grace period keeps a running writer safe: a write in progress keeps its
temporary file's modification time current, and a blob is referenced seconds after it
is stored (the package or artifact record follows its files). A writer that finds its
content already stored refreshes the object's modification time
(``ArtifactStore._put``), so an old unreferenced blob that a writer is about to reference
looks new. On a local store the collector closes the last gap: it renames a blob out
of ``objects/`` first, looks at its time again, and puts it back if a writer refreshed
it in between (a writer that found it gone writes it again itself). Age is judged by
the files' modification times, so a clock that jumps backwards only keeps more.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fsspec.implementations.local import LocalFileSystem

from modelyard.errors import InvalidInputError, StorageError
from modelyard.store.artifacts import ArtifactStore
from modelyard.store.processes import pid_alive
from modelyard.store.urls import redact_url

__all__ = [
    "DEFAULT_GRACE_S",
    "GcItem",
    "GcReport",
    "collect_garbage",
    "parse_grace",
    "ScratchKind",
    "scratch_prefix",
    "scratch_process",
]

#: how old a file must be before it can go, in seconds
DEFAULT_GRACE_S = 24 * 3600.0
_SCRATCH = re.compile(r"^modelyard-(package|load|serve)-(?:(\d+)-)?")
_SHA = re.compile(r"^[0-9a-f]{64}$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


ScratchKind = Literal["package", "load", "serve"]


def scratch_prefix(kind: ScratchKind, pid: int | None = None) -> str:
    """The prefix of this process's (or ``pid``'s) scratch folders: the collector skips
    live processes."""
    return f"modelyard-{kind}-{os.getpid() if pid is None else pid}-"


def scratch_process(name: str) -> tuple[str, int | None] | None:
    """The kind and the process id a scratch folder's name holds (None: no id, as older
    versions named them); None for a name that is not a scratch folder's.

    >>> scratch_process("modelyard-serve-4242-x1"), scratch_process("modelyard-load-ab")
    (('serve', 4242), ('load', None))
    >>> scratch_process("tmp1234") is None
    True
    """
    match = _SCRATCH.match(name)
    if match is None:
        return None
    return match.group(1), None if match.group(2) is None else int(match.group(2))


def parse_grace(text: str) -> float:
    """Seconds from ``"90"``, ``"90s"``, ``"30m"``, ``"24h"`` or ``"7d"``.

    >>> parse_grace("24h"), parse_grace("0"), parse_grace("1.5m")
    (86400.0, 0.0, 90.0)
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if match is None:
        raise InvalidInputError(
            f"Expected a duration like 30m, 24h or 7d (or seconds), got {text!r}", loc="grace"
        )
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


@dataclass(frozen=True)
class GcItem:
    """One thing the collector removed (or, in a dry run, would remove)."""

    kind: Literal["temp", "scratch", "blob"]
    path: str
    bytes: int
    age_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "bytes": self.bytes,
            "age_s": round(self.age_s, 1),
        }


@dataclass
class GcReport:
    """What a collection removed (or would), and what it kept and why."""

    dry_run: bool
    grace_s: float
    items: list[GcItem] = field(default_factory=list)
    kept_referenced: int = 0
    kept_young: int = 0

    @property
    def bytes(self) -> int:
        return sum(item.bytes for item in self.items)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "grace_s": self.grace_s,
            "removed" if not self.dry_run else "would_remove": [i.to_dict() for i in self.items],
            "bytes": self.bytes,
            "kept": {"referenced": self.kept_referenced, "younger_than_grace": self.kept_young},
        }


def _tree_stats(path: Path) -> tuple[int, float]:
    """Bytes under ``path`` and the newest modification time in it."""
    newest = path.lstat().st_mtime
    size = 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            with contextlib.suppress(FileNotFoundError):
                info = os.lstat(os.path.join(root, name))
                newest = max(newest, info.st_mtime)
                if name in files:
                    size += info.st_size
    return size, newest


def _scratch(report: GcReport, folder: Path, now: float) -> None:
    """Scratch folders of packaging, loading and serving whose process is gone, past the
    grace."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    for entry in entries:
        owner = scratch_process(entry.name)
        if owner is None or not entry.is_dir(follow_symlinks=False):
            continue
        pid = owner[1]
        if pid is not None and pid_alive(pid):
            report.kept_young += 1  # its process still runs: never touched
            continue
        path = Path(entry.path)
        try:
            size, newest = _tree_stats(path)
        except FileNotFoundError:
            continue  # its process removed it just now
        if now - newest <= report.grace_s:
            report.kept_young += 1
            continue
        if not report.dry_run:
            shutil.rmtree(path, ignore_errors=True)  # another user's folder may stay
            if path.exists():
                continue
        report.items.append(GcItem("scratch", str(path), size, now - newest))


def _mtime(fs: Any, path: str, info: dict[str, Any]) -> float:
    for key in ("mtime", "LastModified", "last_modified", "created"):
        value = info.get(key)
        if isinstance(value, int | float):
            return float(value)
        if value is not None and hasattr(value, "timestamp"):
            return float(value.timestamp())
    return float(fs.modified(path).timestamp())


def _files(store: ArtifactStore, folder: str) -> Iterator[tuple[str, int, float]]:
    """``(path, bytes, mtime)`` of every file under ``folder`` of the store."""
    if isinstance(store.fs, LocalFileSystem):
        for root, _, names in os.walk(folder):
            for name in names:
                path = os.path.join(root, name)
                with contextlib.suppress(FileNotFoundError):
                    info = os.stat(path)
                    yield path, info.st_size, info.st_mtime
        return
    if not store.fs.exists(folder):
        return
    for path, info in store.fs.find(folder, detail=True).items():
        yield path, int(info.get("size") or 0), _mtime(store.fs, path, info)


def _trash_dir(store: ArtifactStore) -> str:
    return os.path.join(store.root, "gc-trash")


def _restore_trash(store: ArtifactStore) -> None:
    """Blobs a killed collection left between its rename and its second look go back."""
    folder = _trash_dir(store)
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        sha = name.partition(".")[0]
        path = os.path.join(folder, name)
        if not _SHA.match(sha):
            continue
        final = os.path.join(store.root, "objects", sha[:2], sha[2:])
        os.makedirs(os.path.dirname(final), exist_ok=True)
        os.replace(path, final)  # the same bytes (its name is its address): judged again below


def _remove_blob(store: ArtifactStore, sha: str, path: str, grace_s: float) -> bool:
    """Remove one blob unless a writer refreshed it; True when it went."""
    if not isinstance(store.fs, LocalFileSystem):
        # no atomic rename-and-look on a remote store: look once more, just before
        if time.time() - _mtime(store.fs, path, store.fs.info(path)) <= grace_s:
            return False
        store.fs.rm(path)
        return True
    os.makedirs(_trash_dir(store), exist_ok=True)
    trash = os.path.join(_trash_dir(store), f"{sha}.{uuid.uuid4().hex}")
    try:
        os.replace(path, trash)  # from now on a writer finds no object and writes its own
    except FileNotFoundError:
        return False
    if time.time() - os.stat(trash).st_mtime <= grace_s:
        os.replace(trash, path)  # a writer refreshed it before the rename: it stays
        return False
    os.unlink(trash)
    return True


def collect_garbage(
    store: ArtifactStore,
    referenced: set[str],
    *,
    grace_s: float = DEFAULT_GRACE_S,
    dry_run: bool = False,
    scratch_dir: str | os.PathLike[str] | None = None,
) -> GcReport:
    """Remove stale temporary files and the blobs not in ``referenced`` (sha256s).

    Nothing younger than ``grace_s`` seconds goes; ``dry_run`` lists what would go and
    removes nothing. ``scratch_dir`` is where packaging keeps its scratch folders (the
    system's temporary folder unless given).
    """
    if grace_s < 0:
        raise InvalidInputError(f"Expected a grace period >= 0, got {grace_s}", loc="grace")
    clock = time.time()
    report = GcReport(dry_run=dry_run, grace_s=grace_s)
    try:
        if isinstance(store.fs, LocalFileSystem) and not dry_run:
            _restore_trash(store)
        for path, size, mtime in _files(store, f"{store.root}/tmp"):
            if clock - mtime <= grace_s:
                report.kept_young += 1
                continue
            report.items.append(GcItem("temp", path, size, clock - mtime))
            if not dry_run:
                with contextlib.suppress(FileNotFoundError):
                    store.fs.rm(path)
        _scratch(report, Path(scratch_dir or tempfile.gettempdir()), clock)
        for path, size, mtime in _files(store, f"{store.root}/objects"):
            prefix, tail = _object_name(path)
            sha = prefix + tail
            if len(prefix) != 2 or not _SHA.match(sha):
                continue  # not an object of ours: never touched
            if sha in referenced:
                report.kept_referenced += 1
                continue
            if clock - mtime <= grace_s:
                report.kept_young += 1
                continue
            if dry_run or _remove_blob(store, sha, path, grace_s):
                report.items.append(GcItem("blob", path, size, clock - mtime))
            else:
                report.kept_young += 1
    except OSError as exc:
        raise StorageError(f"Garbage collection in {redact_url(store.url)} failed: {exc}") from exc
    return report


def _object_name(path: str) -> tuple[str, str]:
    """The last two parts of an object path: ``("ab", "cdef...")``."""
    parts = path.replace("\\", "/").rstrip("/").split("/")
    return (parts[-2], parts[-1]) if len(parts) >= 2 else ("", parts[-1])
