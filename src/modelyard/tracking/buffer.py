"""The metric buffer: ``log_metric`` appends in microseconds; a flusher writes in batches.

Points are written when ``max_points`` are waiting, every ``interval_ms`` by a
background thread, on ``flush()``, and at interpreter exit. A failed write keeps the
points for the next try, so a store that is briefly unavailable loses nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["MetricBuffer", "Point"]

#: stands in for the flusher thread once the buffer was stopped
_STOPPED = threading.Thread(name="modelyard-flusher-stopped")

_log = logging.getLogger(__name__)

#: (run_id, key, value, step, timestamp_ms)
Point = tuple[str, str, float, int, int]


class MetricBuffer:
    """Thread-safe buffer of metric points in front of a batch writer."""

    def __init__(
        self,
        write: Callable[[list[Point]], None],
        *,
        max_points: int,
        interval_ms: int,
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        self._write = write
        self._max = max_points
        self._interval = interval_ms / 1000
        self._on_tick = on_tick
        self._points: list[Point] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, point: Point) -> None:
        if self._thread is None:
            self.start()  # e.g. in a forked child, which has no flusher thread yet
        with self._lock:
            self._points.append(point)
            full = len(self._points) >= self._max
        if full:
            self.flush()

    def extend(self, points: list[Point]) -> None:
        if self._thread is None:
            self.start()
        with self._lock:
            self._points.extend(points)
            full = len(self._points) >= self._max
        if full:
            self.flush()

    def __len__(self) -> int:
        return len(self._points)

    def flush(self) -> None:
        """Write every waiting point now; raises if the store fails (points are kept)."""
        with self._flush_lock:
            with self._lock:
                batch, self._points = self._points, []
            if not batch:
                return
            try:
                self._write(batch)
            except BaseException:
                with self._lock:
                    self._points[:0] = batch  # keep order; retried on the next flush
                raise

    def start(self) -> None:
        """Start the background flusher (idempotent; not after ``stop``)."""
        if self._thread is not None and (self._thread is _STOPPED or self._thread.is_alive()):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="modelyard-flusher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.flush()
                if self._on_tick is not None:
                    self._on_tick()
            except Exception:  # a background flush must never kill the thread
                _log.warning("modelyard: background metric flush failed; will retry", exc_info=True)

    def stop(self) -> None:
        """Stop the flusher and write what is left; later points are written by ``flush``."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self._thread = _STOPPED
        self.flush()

    def reset_after_fork(self) -> None:
        """In a forked child: the parent's thread and locks do not exist here."""
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._points = []
        self._thread = None
