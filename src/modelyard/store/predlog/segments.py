"""Segment files on disk: created locked, appended to, scanned, claimed for compaction.

A writer creates each segment under a hidden temporary name, takes an exclusive
``fcntl.flock`` on it, writes the header and only then renames it to ``<name>.seg``, so
a ``.seg`` file is either locked by a live writer or closed for good. The lock belongs
to the open file: it is released when the writer rotates to a new segment, closes, or
its process dies (even by SIGKILL). Compaction claims a segment by taking the same lock
without waiting, and skips the segment when it cannot.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from modelyard.store.predlog.frames import MAGIC, Scan, parse
from modelyard.store.predlog.layout import new_segment_name

__all__ = [
    "SegmentFile",
    "claim",
    "fsync_dir",
    "list_segments",
    "read_segment",
    "remove_abandoned",
]

WriteFn = Callable[[int, memoryview], int]
FsyncFn = Callable[[int], None]

_CREATING = ".creating"


def fsync_dir(directory: Path) -> None:
    """Make the names in ``directory`` (a new or renamed file) survive a power cut."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: bytes of zeros written ahead of the data: appends then land in space the file already
#: has, so their fdatasync need not commit a new file size or extent (about half the cost)
PREALLOCATE = 1 << 20


class SegmentFile:
    """One segment being written by this process, locked until ``close``.

    The file is zero-filled ahead of ``size`` in steps of ``PREALLOCATE`` (readers stop
    at the first zero frame length) and cut back to ``size`` on ``close``.
    """

    def __init__(self, path: Path, fd: int, size: int) -> None:
        self.path = path
        self.fd = fd
        self.size = size
        self.allocated = size

    @classmethod
    def create(cls, directory: Path, write: WriteFn) -> SegmentFile:
        """A new, locked segment in ``directory`` holding only the header."""
        directory.mkdir(parents=True, exist_ok=True)
        name = new_segment_name(time.time_ns() // 1000)
        tmp = directory / f".{name}{_CREATING}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o644)
        segment = cls(tmp, fd, 0)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            segment.write(MAGIC, write)
            path = directory / name
            os.rename(tmp, path)  # visible to compaction only once locked
            segment.path = path
            fsync_dir(directory)
        except BaseException:
            segment.close()
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return segment

    def write(self, data: bytes, write: WriteFn) -> None:
        """Append all of ``data`` at ``size`` (looping over short writes)."""
        if self.size + len(data) > self.allocated and self.size > 0:
            self._preallocate(self.size + len(data))
        os.lseek(self.fd, self.size, os.SEEK_SET)
        view = memoryview(data)
        while view:
            written = write(self.fd, view)
            self.size += written
            view = view[written:]
        self.allocated = max(self.allocated, self.size)

    def _preallocate(self, needed: int) -> None:
        end = (needed // PREALLOCATE + 1) * PREALLOCATE
        zeros = bytes(end - self.allocated)
        offset = self.allocated
        while offset < end:
            offset += os.pwrite(self.fd, zeros[offset - self.allocated :], offset)
        os.fsync(self.fd)  # the new size and extents, once per step
        self.allocated = end

    def close(self) -> None:
        """Cut the zero-filled tail, close the file, which releases the lock."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                if self.allocated > self.size:
                    os.ftruncate(self.fd, self.size)
                    os.fsync(self.fd)
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def list_segments(directory: Path) -> list[Path]:
    """The segment files in ``directory``, oldest first."""
    try:
        names = sorted(entry.name for entry in os.scandir(directory) if entry.is_file())
    except FileNotFoundError:
        return []
    return [directory / name for name in names if name.endswith(".seg") and name[0] != "."]


def read_segment(path: Path) -> Scan | None:
    """The complete frames of the segment at ``path``; None once compaction removed it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return parse(data)


@contextlib.contextmanager
def claim(path: Path) -> Iterator[Scan | None]:
    """The frames of a closed segment, locked for the ``with`` body; None when it is live.

    None too when the segment is gone (another compaction took it first).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None  # a live writer holds it
            return
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            yield None  # compacted and removed while we waited for the lock
            return
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read()
        yield parse(data)
    finally:
        os.close(fd)


def remove_abandoned(directory: Path) -> None:
    """Remove segments a writer died creating: they hold no record yet, only a header.

    Only files older than a minute, so a writer between ``open`` and ``flock`` keeps its own.
    """
    entries = []
    try:
        with os.scandir(directory) as found:
            for entry in found:
                if not entry.name.endswith(_CREATING):
                    continue
                try:
                    if entry.stat().st_mtime < time.time() - 60:
                        entries.append(entry.name)
                except FileNotFoundError:
                    continue  # its writer renamed it meanwhile: a live segment now
    except FileNotFoundError:
        return
    for name in entries:
        path = directory / name
        with contextlib.suppress(FileNotFoundError), claim(path) as scan:
            if scan is not None:
                path.unlink()
