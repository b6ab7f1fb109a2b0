"""The metric buffer: ``log_metric`` appends in microseconds; a flusher writes in batches.

Points are written when ``max_points`` are waiting, every ``interval_ms`` by a
background thread, on ``flush()``, and at interpreter exit.

The contract with the caller: once ``add`` returns, the buffer owns the point.

- A store that is unavailable (an outage, a restart) is not the caller's error: the
  points stay in memory and are retried with backoff; the outage is logged once when
  it starts and once when the store is back.
- Memory is bounded: when ``capacity`` points are waiting, ``add`` blocks until the
  flusher makes room, and after ``full_wait_s`` raises ``StorageError`` *before*
  taking the point, so an error from ``add`` always means "not kept".
- Every batch carries an id that the store records with it in one transaction, so a
  batch retried after a commit whose answer was lost is not written twice.
- A batch the store refuses for what it holds (a point that passed the checks at the
  call but not the database) is split in halves until the bad point is alone; that
  point is logged once and dropped, and every other point is written.
"""

from __future__ import annotations

import logging
import reprlib
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from modelyard.errors import InvalidInputError, StorageError

__all__ = ["MetricBuffer", "MetricSink", "Point", "RejectedPointsError"]

#: stands in for the flusher thread once the buffer was stopped
_STOPPED = threading.Thread(name="modelyard-flusher-stopped")
#: how many times a batch is retried while the store answers before it is split
_STRIKES = 3
_BACKOFF_MIN_S = 0.05
_BACKOFF_MAX_S = 5.0

_log = logging.getLogger(__name__)
_SHORT = reprlib.Repr()  # a huge int or key in the log is cut short
_SHORT.maxstring, _SHORT.maxlong = 120, 60

#: (run_id, key, value, step, timestamp_ms)
Point = tuple[str, str, float, int, int]


class RejectedPointsError(InvalidInputError):
    """The store refused a batch for what it holds (not because it is unavailable)."""


class MetricSink(Protocol):
    """Where the buffer writes: an idempotent batch writer."""

    def write_metrics(self, batch_id: str, points: Sequence[Point]) -> None:
        """Write ``points`` once: a batch id already written is a no-op.

        Raises ``RejectedPointsError`` when a point cannot be stored, ``StorageError``
        when the store fails.
        """

    def metric_batch_written(self, batch_id: str) -> bool:
        """Whether a batch with this id was committed."""


class MetricBuffer:
    """Thread-safe, bounded buffer of metric points in front of a batch writer."""

    def __init__(
        self,
        sink: MetricSink,
        *,
        max_points: int,
        interval_ms: int,
        on_tick: Callable[[], None] | None = None,
        capacity: int = 1_000_000,
        full_wait_s: float = 60.0,
    ) -> None:
        self._sink = sink
        self._max = max_points
        self._capacity = max(capacity, max_points)
        self._full_wait_s = full_wait_s
        self._interval = interval_ms / 1000
        self._on_tick = on_tick
        self._points: list[Point] = []
        #: batches formed and not yet written: (id, points), oldest first
        self._batches: deque[tuple[str, list[Point]]] = deque()
        self._held = 0  # points in self._batches
        self._strikes = 0
        self._outage: str | None = None  # the first error of an outage in progress
        self._last_error: str | None = None
        self._backoff = _BACKOFF_MIN_S
        self.dropped = 0  # points the store refused, logged and dropped
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._kick = threading.Event()  # wakes the flusher early (an outage, stop)
        self._thread: threading.Thread | None = None

    # -- taking points -------------------------------------------------------------

    def add(self, point: Point) -> None:
        """Take one point (blocks while the buffer is full; see the module's contract)."""
        self.extend([point])

    def extend(self, points: list[Point]) -> None:
        """Take these points, all or none."""
        if self._thread is None:
            self.start()  # e.g. in a forked child, which has no flusher thread yet
        if len(points) > self._capacity:
            raise InvalidInputError(
                f"Expected at most {self._capacity} points in one call, got {len(points)}",
                loc="metrics",
            )
        deadline: float | None = None
        while True:
            with self._lock:
                if len(self._points) + self._held + len(points) <= self._capacity:
                    self._points.extend(points)
                    full = len(self._points) >= self._max
                    break
            # no room: write (or wait for the writer), then look again; nothing is taken yet
            now = time.monotonic()
            deadline = now + self._full_wait_s if deadline is None else deadline
            if now >= deadline:
                raise StorageError(
                    f"The metric buffer is full ({self._capacity} points waiting) and the "
                    f"metric store has not taken any for {self._full_wait_s:g} s "
                    f"({self._last_error or 'still writing'}); this point was not kept"
                )
            if self._flush_lock.acquire(timeout=min(deadline - now, 0.5)):
                try:
                    written = self._drain()
                finally:
                    self._flush_lock.release()
                if not written:
                    time.sleep(max(0.0, min(self._backoff, deadline - time.monotonic())))
        # write now on the caller's thread, unless the flusher is writing or retrying
        if full and self._outage is None and self._flush_lock.acquire(blocking=False):
            try:
                self._drain()
            finally:
                self._flush_lock.release()

    def __len__(self) -> int:
        """Points not yet written."""
        return len(self._points) + self._held

    # -- writing -------------------------------------------------------------------

    def flush(self, timeout_s: float | None = None) -> None:
        """Write every waiting point now.

        While the store is unavailable this retries with backoff; after ``timeout_s``
        (None: the buffer's ``full_wait_s``) it raises ``StorageError``. The points
        stay in the buffer either way and are written when the store is back.
        """
        wait = self._full_wait_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + wait
        while True:
            with self._flush_lock:
                if self._drain():
                    return
            left = deadline - time.monotonic()
            if left <= 0:
                raise StorageError(
                    f"The metric store is unavailable ({self._last_error}); {len(self)} points "
                    f"are kept in memory and will be written when it is back"
                )
            time.sleep(min(self._backoff, left))

    def _drain(self) -> bool:
        """With ``_flush_lock`` held: write batches until none is left (True) or an outage."""
        while True:
            if not self._batches:
                with self._lock:
                    if not self._points:
                        return True
                    taken = self._points[: self._max]
                    del self._points[: len(taken)]
                    self._batches.append((uuid.uuid4().hex, taken))
                    self._held += len(taken)
            batch_id, points = self._batches[0]
            if not self._write(batch_id, points):
                return False

    def _write(self, batch_id: str, points: list[Point]) -> bool:
        """Write the first batch; False when the store is unavailable (kept for a retry)."""
        try:
            self._sink.write_metrics(batch_id, points)
        except RejectedPointsError as exc:  # rolled back: nothing of it was written
            self._split(points, exc)
            return True
        except StorageError as exc:
            return self._after_failure(batch_id, points, exc)
        except Exception as exc:  # a driver's error on a value (OverflowError, ...)
            self._split(points, exc)
            return True
        self._done(len(points))
        if self._outage is not None:
            _log.warning("modelyard: the metric store is back; writing the kept points")
            self._outage = None
        self._backoff = _BACKOFF_MIN_S
        self._strikes = 0
        return True

    def _after_failure(self, batch_id: str, points: list[Point], exc: Exception) -> bool:
        try:
            written = self._sink.metric_batch_written(batch_id)
        except Exception:  # the store does not answer: an outage
            self._last_error = str(exc)
            if self._outage is None:
                self._outage = str(exc)
                _log.warning(
                    "modelyard: the metric store is unavailable (%s); %d points are kept in "
                    "memory and retried until it is back",
                    exc,
                    len(self),
                )
            self._backoff = min(self._backoff * 2, _BACKOFF_MAX_S)
            self._kick.set()  # the flusher retries from now on, whoever saw it first
            return False
        if written:  # the commit went through; only its answer was lost
            self._done(len(points))
            return True
        # the store answers but this write failed (locked, full, restarting): retry it
        self._last_error = str(exc)
        self._strikes += 1
        self._backoff = min(self._backoff * 2, _BACKOFF_MAX_S)
        if self._strikes < _STRIKES:
            return False
        if len(points) == 1:  # never dropped for such an error: kept and retried
            if self._outage is None:
                self._outage = str(exc)
                _log.warning(
                    "modelyard: the metric store keeps failing writes (%s); %d points are kept "
                    "in memory and retried",
                    exc,
                    len(self),
                )
            return False
        # it keeps failing while the store answers: halve the batch, in case one of its
        # points is what the store cannot take (the halves are retried the same way)
        self._strikes = 0
        self._split(points, exc)
        return True

    def _split(self, points: list[Point], exc: BaseException) -> None:
        """Replace the first batch by its halves; a single point is reported and dropped."""
        self._batches.popleft()
        if len(points) == 1:
            self.dropped += 1
            run_id, key, value, step, timestamp = (_SHORT.repr(v) for v in points[0])
            _log.error(
                "modelyard: the metric store refused a point, which was dropped: "
                "run %s, metric %s, value %s, step %s, timestamp %s: %s",
                run_id,
                key,
                value,
                step,
                timestamp,
                str(exc)[:300],
            )
            with self._lock:
                self._held -= 1
            return
        middle = len(points) // 2
        self._batches.appendleft((uuid.uuid4().hex, points[middle:]))
        self._batches.appendleft((uuid.uuid4().hex, points[:middle]))

    def _done(self, count: int) -> None:
        self._batches.popleft()
        with self._lock:
            self._held -= count

    # -- the flusher thread -------------------------------------------------------------

    def start(self) -> None:
        """Start the background flusher (idempotent; not after ``stop``)."""
        if self._thread is not None and (self._thread is _STOPPED or self._thread.is_alive()):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="modelyard-flusher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        wait = self._interval
        while True:
            self._kick.wait(wait)
            self._kick.clear()
            if self._stop.is_set():
                return
            try:
                with self._flush_lock:
                    written = self._drain()
                if written and self._on_tick is not None:
                    self._on_tick()
            except Exception:  # a background flush must never kill the thread
                _log.warning("modelyard: background metric flush failed; will retry", exc_info=True)
                written = False
            wait = self._interval if written else min(self._backoff, self._interval)

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop the flusher and write what is left; later points are written by ``flush``."""
        self._stop.set()
        self._kick.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self._thread = _STOPPED
        self.flush(timeout_s)

    def reset_after_fork(self) -> None:
        """In a forked child: the parent's thread, locks and points are not this process's."""
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._points = []
        self._batches = deque()
        self._held = 0
        self._outage = None
        self._strikes = 0
        self._thread = None
