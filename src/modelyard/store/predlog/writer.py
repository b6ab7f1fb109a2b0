"""The prediction log writer: callers queue encoded records, one thread commits them in groups.

A caller checks and encodes its record (msgpack, framed with length and crc32), queues
it and waits. The writer thread takes every record queued so far, appends them all with
one ``write`` per segment and makes them durable with one ``fsync``, then wakes every
caller of the group at once: under load many records share one fsync, while a lone
caller waits for nothing but its own write.

Memory stays bounded: bytes queued and not yet committed never exceed
``max_pending_bytes`` (a single larger record is let through alone). A caller who finds
no room waits, an ``async`` one without blocking its event loop, so a slow disk slows
the callers down instead of filling the memory, and no record is ever dropped silently.
A failed write or fsync reaches every caller of the group as StorageError; the writer
then starts a fresh segment, so later appends work again once the disk recovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from modelyard.errors import InvalidInputError, StorageError
from modelyard.store.predlog.frames import MAGIC, frame
from modelyard.store.predlog.layout import (
    ERROR_SEGMENTS,
    FEEDBACK_SEGMENTS,
    SEGMENTS,
    UNMATCHED_SEGMENTS,
)
from modelyard.store.predlog.lookup import RecentRecords, RecordRef
from modelyard.store.predlog.records import (
    ErrorRecord,
    FeedbackRecord,
    PredictionRecord,
    encode_error,
    encode_feedback,
    encode_prediction,
)
from modelyard.store.predlog.segments import FsyncFn, SegmentFile, WriteFn

__all__ = ["LogStats", "PredictionLog"]

_log = logging.getLogger(__name__)

_PREDICTION, _FEEDBACK, _UNMATCHED, _BARRIER, _ROTATE, _ERROR = 0, 1, 2, 3, 4, 5
_RECORDS = (_PREDICTION, _FEEDBACK, _UNMATCHED, _ERROR)
#: a log is idle (an append may commit inline) once no commit ended for this long
_IDLE_S = 150e-6


class _Entry:
    """One queued record (or a flush barrier) and how to wake its caller."""

    __slots__ = ("data", "error", "event", "future", "kind", "loop")

    def __init__(self, kind: int, data: bytes) -> None:
        self.kind = kind
        self.data = data
        self.future: asyncio.Future[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.event: threading.Event | None = None
        self.error: StorageError | None = None


@dataclass(frozen=True)
class LogStats:
    """Counters of one PredictionLog since it was opened."""

    records: int  # prediction records committed
    feedback: int  # feedback records committed
    commits: int  # groups written
    fsyncs: int
    bytes: int  # framed bytes written
    pending_bytes: int  # queued, not yet committed
    peak_pending_bytes: int
    errors: int  # groups that failed
    error_records: int = 0  # records of failed requests committed (``append_error``)


def _settle(futures: list[asyncio.Future[None]], error: StorageError | None) -> None:
    for future in futures:
        if future.done():
            continue  # the caller was cancelled; its record was still written
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(_copy(error))


def _copy(error: StorageError) -> StorageError:
    # each waiter raises its own instance: one exception shared by many tasks would
    # collect all their tracebacks
    copy = StorageError(error.message)
    copy.__cause__ = error.__cause__
    return copy


class PredictionLog:
    """A durable, append-only log of predictions and feedback under one folder.

    One per server worker process; each writes its own segment files. In durable mode
    (the default) ``append`` returns only once the record is fsync'ed; otherwise once it
    is queued (and it reaches disk within one group's write).

    >>> import tempfile
    >>> from modelyard.store.predlog import read_predictions
    >>> root = tempfile.mkdtemp()
    >>> with PredictionLog(root) as log:
    ...     log.append_blocking(PredictionRecord(
    ...         request_id="r1", time_us=1_700_000_000_000_000, model="churn", version=3,
    ...         rows=1, inputs={"age": [31]}, outputs={"label": [1]}, latency_us=850))
    ...     log.stats.records
    1
    >>> read_predictions(root).column("input.age").to_pylist()
    [31]
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        durable: bool = True,
        max_pending_bytes: int = 32 * 2**20,
        segment_bytes: int = 64 * 2**20,
        commit_delay_ms: float = 0.0,
        _write: WriteFn = os.write,
        _fsync: FsyncFn = os.fdatasync,
    ) -> None:
        for name, value in (
            ("max_pending_bytes", max_pending_bytes),
            ("segment_bytes", segment_bytes),
        ):
            if value < 1:
                raise InvalidInputError(f"Expected an integer >= 1, got {value}", loc=name)
        if commit_delay_ms < 0:
            raise InvalidInputError(
                f"Expected a delay >= 0, got {commit_delay_ms}", loc="commit_delay_ms"
            )
        self.root = Path(root)
        self.durable = durable
        self.max_pending_bytes = max_pending_bytes
        self.segment_bytes = segment_bytes
        self._delay = commit_delay_ms / 1000
        self._write = _write
        self._fsync_fn = _fsync
        self._dirs = {
            _PREDICTION: self.root / SEGMENTS,
            _FEEDBACK: self.root / FEEDBACK_SEGMENTS,
            _UNMATCHED: self.root / UNMATCHED_SEGMENTS,
            _ERROR: self.root / ERROR_SEGMENTS,
        }
        self._segments: dict[int, SegmentFile | None] = dict.fromkeys(_RECORDS)
        self._cond = threading.Condition()
        self._queue: deque[_Entry] = deque()
        self._space: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._pending = 0
        self._busy = False  # a group is being committed (by the thread or inline)
        self._idle_since = 0.0  # time.monotonic() when the last commit ended
        self._peak = 0
        self._counts = {
            "records": 0,
            "feedback": 0,
            "error_records": 0,
            "commits": 0,
            "fsyncs": 0,
            "bytes": 0,
        }
        self._errors = 0
        self._closed = False
        self._pid = os.getpid()
        #: the records appended lately, for feedback lookups by record id without a scan
        self.recent = RecentRecords()
        self._thread = threading.Thread(target=self._run, name="modelyard-prediction-log")
        self._thread.daemon = True  # acknowledged records are on disk already; close() drains
        self._thread.start()

    def __repr__(self) -> str:
        return f"PredictionLog({str(self.root)!r}, durable={self.durable})"

    # -- callers ------------------------------------------------------------------------

    async def append(self, record: PredictionRecord) -> None:
        """Log ``record``; durable: return once it is on disk, else once it is queued."""
        await self._submit_async(_PREDICTION, frame(encode_prediction(record)))
        self._remember(record)

    def append_blocking(self, record: PredictionRecord) -> None:
        """``append`` for synchronous callers (threads); blocks while the queue is full."""
        self._submit_blocking(_PREDICTION, frame(encode_prediction(record)))
        self._remember(record)

    def _remember(self, record: PredictionRecord) -> None:
        self.recent.add(
            RecordRef(
                record.key,
                record.request_id,
                record.model,
                record.version,
                record.rows,
                record.route,
            )
        )

    async def append_feedback(self, record: FeedbackRecord) -> None:
        """Log a label for an earlier prediction, as ``append`` does."""
        await self._submit_async(_FEEDBACK, frame(encode_feedback(record)))

    def append_feedback_blocking(self, record: FeedbackRecord) -> None:
        """``append_feedback`` for synchronous callers."""
        self._submit_blocking(_FEEDBACK, frame(encode_feedback(record)))

    async def append_unmatched_feedback(self, record: FeedbackRecord) -> None:
        """Keep a label whose id matched no prediction record, apart from the joined ones."""
        await self._submit_async(_UNMATCHED, frame(encode_feedback(record)))

    async def append_error(self, record: ErrorRecord) -> None:
        """Log a request the server answered with an error status, as ``append`` does."""
        await self._submit_async(_ERROR, frame(encode_error(record)))

    def append_error_blocking(self, record: ErrorRecord) -> None:
        """``append_error`` for synchronous callers."""
        self._submit_blocking(_ERROR, frame(encode_error(record)))

    def flush(self) -> None:
        """Block until every record queued before this call is written and fsync'ed."""
        self._barrier(_BARRIER)

    def rotate(self) -> None:
        """Close the segments written so far (fsync'ed), so compaction may take them.

        The next record starts a fresh segment. Segments holding no record stay open.
        """
        self._barrier(_ROTATE)

    def _barrier(self, kind: int) -> None:
        entry = _Entry(kind, b"")
        entry.event = threading.Event()
        with self._cond:
            self._check_open()
            self._enqueue(entry)
        entry.event.wait()
        if entry.error is not None:
            raise _copy(entry.error)

    def close(self) -> None:
        """Commit everything queued, stop the writer and close the segments; idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        error: OSError | None = None
        for kind, segment in self._segments.items():
            if segment is None:
                continue
            try:
                self._sync(segment)
            except OSError as exc:
                error = exc
            segment.close()
            self._segments[kind] = None
        if error is not None:
            raise StorageError(f"Prediction log {self.root} failed to sync on close: {error}")

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def pending_bytes(self) -> int:
        """Bytes queued and not yet committed to disk."""
        return self._pending

    @property
    def stats(self) -> LogStats:
        """A snapshot of the counters."""
        with self._cond:
            return LogStats(
                **self._counts,
                pending_bytes=self._pending,
                peak_pending_bytes=self._peak,
                errors=self._errors,
            )

    # -- queue --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"Prediction log {self.root} is closed; open a new PredictionLog")
        if os.getpid() != self._pid:
            raise StorageError(
                f"Prediction log {self.root} was opened in another process; "
                "open one PredictionLog per worker process, after fork"
            )

    def _has_room(self, size: int) -> bool:
        return self._pending == 0 or self._pending + size <= self.max_pending_bytes

    def _enqueue(self, entry: _Entry) -> None:
        self._queue.append(entry)
        self._pending += len(entry.data)
        self._peak = max(self._peak, self._pending)
        self._cond.notify_all()

    async def _submit_async(self, kind: int, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        entry = _Entry(kind, data)
        # Never commit on the event loop's thread: a slow write or fsync would stall every
        # request of the worker (and, under load, each record would pay its own fsync).
        if self.durable:
            entry.loop, entry.future = loop, loop.create_future()
        while True:
            with self._cond:
                self._check_open()
                if self._has_room(len(data)):
                    self._enqueue(entry)
                    break
                space: asyncio.Future[None] = loop.create_future()
                self._space.append((loop, space))
            await space
        if entry.future is not None:
            await entry.future

    def _submit_blocking(self, kind: int, data: bytes) -> None:
        entry = _Entry(kind, data)
        if self.durable and self._commit_inline(entry):
            return
        if self.durable:
            entry.event = threading.Event()
        with self._cond:
            self._check_open()
            while not self._has_room(len(data)):
                self._cond.wait()
                self._check_open()
            self._enqueue(entry)
        if entry.event is not None:
            entry.event.wait()
            if entry.error is not None:
                raise _copy(entry.error)

    def _commit_inline(self, entry: _Entry) -> bool:
        """Commit ``entry`` on the caller's thread when nothing else is queued or writing.

        Only for blocking callers (threads): an event loop never commits on its own thread.
        A lone caller then skips two thread hand-offs (to the writer and back), which
        cost about as much as the write itself. "Nothing else" includes the recent past:
        right after a commit (within ``_IDLE_S``) more records are likely on their way,
        and they go to the writer thread, which commits them as one group.
        """
        with self._cond:
            self._check_open()
            idle = time.monotonic() - self._idle_since >= _IDLE_S
            if self._queue or self._busy or self._delay or not idle:
                return False
            self._busy = True
        error = self._commit([entry])
        with self._cond:
            self._committed([entry], error)
            self._cond.notify_all()
        if error is not None:
            raise _copy(error)
        return True

    # -- writer thread ------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.0
        while True:
            with self._cond:
                while (not self._queue or self._busy) and not self._closed:
                    self._cond.wait()
                while self._busy:  # closing: let an inline commit finish
                    self._cond.wait()
                if not self._queue:
                    return
            if self._delay:
                time.sleep(self._delay)  # let a larger group gather
            with self._cond:
                batch = list(self._queue)
                self._queue.clear()
                self._busy = True
            error = self._commit(batch)
            if error is not None and not self.durable and not self._closed:
                # acknowledged already: keep the records and retry, the full queue pushing back
                self._retry(batch, error)
                backoff = min(1.0, backoff * 2 or 0.01)
                time.sleep(backoff)
                continue
            backoff = 0.0
            self._finish(batch, error)

    def _commit(self, batch: list[_Entry]) -> StorageError | None:
        parts: dict[int, list[bytes]] = {kind: [] for kind in _RECORDS}
        barrier = rotate = False
        for entry in batch:
            if entry.kind == _BARRIER:
                barrier = True
            elif entry.kind == _ROTATE:
                barrier = rotate = True
            else:
                parts[entry.kind].append(entry.data)
        touched: list[SegmentFile] = []
        try:
            for kind, chunks in parts.items():
                if chunks:
                    data = b"".join(chunks)
                    segment = self._segment_for(kind, len(data))
                    touched.append(segment)
                    segment.write(data, self._write)
            if barrier:  # flush(): everything written so far, even by non-durable groups
                touched = [s for s in self._segments.values() if s is not None]
            if self.durable or barrier:
                for segment in touched:
                    self._sync(segment)
            if rotate:
                for kind, held in self._segments.items():
                    if held is not None and held.size > len(MAGIC):
                        held.close()  # synced above; releases the lock for compaction
                        self._segments[kind] = None
        except OSError as exc:
            for kind, current in self._segments.items():
                if current is not None and current in touched:
                    current.close()  # a torn frame may end it: continue in a fresh segment
                    self._segments[kind] = None
            records = sum(e.kind in _RECORDS for e in batch)
            error = StorageError(
                f"Prediction log {self.root} could not write {records} record(s): {exc}. "
                "Check the disk (space, permissions); later appends retry."
            )
            error.__cause__ = exc
            return error
        return None

    def _segment_for(self, kind: int, size: int) -> SegmentFile:
        segment = self._segments[kind]
        if (
            segment is not None
            and segment.size > len(MAGIC)
            and (segment.size + size > self.segment_bytes)
        ):
            if not self.durable:
                self._sync(segment)
            segment.close()  # releases the lock: compaction may take it now
            segment = None
        if segment is None:
            segment = SegmentFile.create(self._dirs[kind], self._write)
            self._segments[kind] = segment
        return segment

    def _sync(self, segment: SegmentFile) -> None:
        self._fsync_fn(segment.fd)
        with self._cond:
            self._counts["fsyncs"] += 1

    def _retry(self, batch: list[_Entry], error: StorageError) -> None:
        _log.warning("%s", error.message)
        with self._cond:
            self._busy = False
            self._errors += 1
            records = [e for e in batch if e.kind in _RECORDS]
            self._queue.extendleft(reversed(records))
        self._wake([e for e in batch if e.kind not in _RECORDS], error)

    def _committed(self, batch: list[_Entry], error: StorageError | None) -> None:
        """Count a group that was written (or failed) and mark the log idle; holds _cond."""
        self._busy = False
        self._idle_since = time.monotonic()
        if error is not None:
            self._errors += 1
            return
        self._counts["commits"] += 1
        self._counts["records"] += sum(e.kind == _PREDICTION for e in batch)
        self._counts["feedback"] += sum(e.kind in (_FEEDBACK, _UNMATCHED) for e in batch)
        self._counts["error_records"] += sum(e.kind == _ERROR for e in batch)
        self._counts["bytes"] += sum(len(e.data) for e in batch)

    def _finish(self, batch: list[_Entry], error: StorageError | None) -> None:
        with self._cond:
            self._pending -= sum(len(e.data) for e in batch)
            self._committed(batch, error)
            if error is not None and not self.durable:
                _log.error("%s (records lost while closing)", error.message)
            space, self._space = self._space, []
            self._cond.notify_all()
        for loop, future in space:
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(_settle, [future], None)
        self._wake(batch, error)

    def _wake(self, batch: list[_Entry], error: StorageError | None) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for entry in batch:
            if entry.future is not None and entry.loop is not None:
                by_loop.setdefault(entry.loop, []).append(entry.future)
            elif entry.event is not None:
                entry.error = error
                entry.event.set()
        for loop, futures in by_loop.items():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, futures, error)
