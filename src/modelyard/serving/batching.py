"""Adaptive micro-batching, Triton-style: no wait when idle, coalesce when busy.

A request that finds the model idle is dispatched at once (with whatever else is already
queued). Requests that arrive while the model runs wait for it; when it finishes, the
next batch takes every waiting row up to ``max_batch_rows``, waiting at most
``max_delay_ms`` after the oldest request's arrival for the batch to fill. The queue is
bounded by rows; a request that would overflow it, or whose deadline has passed or
cannot be met by the time it would run, fails with ``Overloaded`` (429 with
Retry-After). The model runs in one worker thread, so the event loop keeps accepting.

>>> import asyncio, numpy as np
>>> from modelyard.models.runtimes import Inputs
>>> def double(x: Inputs) -> dict[str, np.ndarray]:
...     return {"y": x.columns[0] * 2}
>>> async def demo() -> list[float]:
...     batcher = Batcher(double, max_batch_rows=8, max_delay_s=0.001,
...                       max_queue_rows=64, timeout_s=1.0)
...     one = Inputs(("x",), (np.array([1.0]),), None)
...     two = Inputs(("x",), (np.array([2.0, 3.0]),), None)
...     a, b = await asyncio.gather(batcher.submit(one), batcher.submit(two))
...     batcher.close()
...     return [*a["y"].tolist(), *b["y"].tolist()]
>>> asyncio.run(demo())
[2.0, 4.0, 6.0]
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from modelyard.errors import ModelyardError
from modelyard.models.runtimes import Inputs

__all__ = ["BatchStats", "Batcher", "LoopBatcher", "Overloaded", "concat_inputs"]

Predict = Callable[[Inputs], dict[str, np.ndarray]]


class BatchCost:
    """A model call's cost as ``fixed + per_row * rows``, fitted over recent batches.

    Least squares over exponentially decayed sums, so it follows a model that slows
    down. With one batch size seen so far the whole cost is taken as per call: the
    optimistic reading, since queued rows then run as one batch whose time corrects the
    fit, and a request the model cannot reach in time still gets 429 at its deadline.

    >>> cost = BatchCost()
    >>> for rows in (1, 8, 1, 8, 32):
    ...     cost.observe(rows, 0.010 + 0.001 * rows)  # 10 ms per call, 1 ms per row
    >>> round(cost.fixed_s, 4), round(cost.per_row_s, 4)
    (0.01, 0.001)
    >>> round(cost.seconds(100, max_batch_rows=64), 3)  # two calls for 100 rows
    0.12
    """

    def __init__(self, decay: float = 0.9) -> None:
        self.decay = decay
        self._n = self._x = self._y = self._xx = self._xy = 0.0
        self.fixed_s = 0.0
        self.per_row_s = 0.0

    def observe(self, rows: int, seconds: float) -> None:
        d = self.decay
        self._n = d * self._n + 1
        self._x = d * self._x + rows
        self._y = d * self._y + seconds
        self._xx = d * self._xx + rows * rows
        self._xy = d * self._xy + rows * seconds
        spread = self._n * self._xx - self._x * self._x
        if spread > 1e-9 * max(1.0, self._n * self._xx):
            slope = (self._n * self._xy - self._x * self._y) / spread
            self.per_row_s = max(0.0, slope)
            self.fixed_s = max(0.0, (self._y - self.per_row_s * self._x) / self._n)
        else:  # one batch size so far: all of it per call (see the class docstring)
            self.fixed_s, self.per_row_s = self._y / self._n, 0.0

    def seconds(self, rows: int, max_batch_rows: int) -> float:
        """Expected seconds to run ``rows`` queued rows in calls of at most ``max_batch_rows``."""
        calls = -(-rows // max(1, max_batch_rows))
        return calls * self.fixed_s + rows * self.per_row_s


class Overloaded(ModelyardError):
    """The model cannot answer in time: the client should retry after ``retry_after_s``."""

    status: ClassVar[int] = 429
    type: ClassVar[str] = "overloaded"

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def concat_inputs(parts: list[Inputs]) -> Inputs:
    """Rows of several requests as one ``Inputs``, in order."""
    if len(parts) == 1:
        return parts[0]
    columns = tuple(
        np.concatenate([p.columns[j] for p in parts]) for j in range(len(parts[0].columns))
    )
    matrices = [p.matrix for p in parts]
    matrix = None if any(m is None for m in matrices) else np.vstack(matrices)  # type: ignore[arg-type]
    return Inputs(names=parts[0].names, columns=columns, matrix=matrix)


@dataclass
class _Waiting:
    inputs: Inputs
    future: asyncio.Future[dict[str, np.ndarray]]
    arrived: float
    deadline: float
    started: float = 0.0


@dataclass
class BatchStats:
    """Counters of one batcher: batches run, rows, requests shed."""

    batches: int = 0
    rows: int = 0
    shed: int = 0
    sizes: deque[int] = field(default_factory=lambda: deque(maxlen=1024))


class Batcher:
    """One model's queue and its single runner."""

    def __init__(
        self,
        predict: Predict,
        *,
        max_batch_rows: int,
        max_delay_s: float,
        max_queue_rows: int,
        timeout_s: float,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self._predict = predict
        self.max_batch_rows = max_batch_rows
        self.max_delay_s = max_delay_s
        self.max_queue_rows = max_queue_rows
        self.timeout_s = timeout_s
        self._on_batch = on_batch
        self._queue: deque[_Waiting] = deque()
        self._queued_rows = 0
        self._running = False
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelyard-model")
        #: seconds per batch call and per row, fitted over recent batches (for admission)
        self._cost = BatchCost()
        self._row_s = 0.0
        self.stats = BatchStats()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
        for waiting in self._queue:
            if not waiting.future.done():
                waiting.future.set_exception(Overloaded("The model is being unloaded"))
        self._queue.clear()

    def _admit(self, rows: int, now: float) -> None:
        if self._queued_rows + rows > self.max_queue_rows:
            self.stats.shed += 1
            raise Overloaded(
                f"The model's queue is full ({self._queued_rows} rows waiting); retry shortly",
                retry_after_s=max(0.05, self._cost.seconds(self._queued_rows, self.max_batch_rows)),
            )
        expected = self._cost.seconds(self._queued_rows + rows, self.max_batch_rows)
        if expected > self.timeout_s:
            self.stats.shed += 1
            raise Overloaded(
                f"The model cannot answer within {self.timeout_s * 1000:.0f} ms "
                f"({self._queued_rows} rows ahead); retry shortly",
                retry_after_s=expected,
            )

    async def submit(self, inputs: Inputs) -> dict[str, np.ndarray]:
        """The model's outputs for ``inputs``, computed in a batch with others."""
        outputs, _ = await self.submit_timed(inputs)
        return outputs

    async def submit_timed(self, inputs: Inputs) -> tuple[dict[str, np.ndarray], float]:
        """The outputs and the seconds the request waited in the queue."""
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        self._admit(inputs.rows, now)
        waiting = _Waiting(inputs, loop.create_future(), now, now + self.timeout_s)
        self._queue.append(waiting)
        self._queued_rows += inputs.rows
        if self._task is None or self._task.done():
            self._wakeup = asyncio.Event()
            self._task = loop.create_task(self._run())
        assert self._wakeup is not None  # created with the task
        self._wakeup.set()
        outputs = await waiting.future
        return outputs, max(0.0, waiting.started - waiting.arrived)

    def _take(self) -> list[_Waiting]:
        batch: list[_Waiting] = []
        rows = 0
        now = time.monotonic()
        while self._queue:
            head = self._queue[0]
            if now > head.deadline:
                self._queue.popleft()
                self._queued_rows -= head.inputs.rows
                self.stats.shed += 1
                if not head.future.done():
                    head.future.set_exception(
                        Overloaded("The request waited past its deadline", retry_after_s=0.1)
                    )
                continue
            if batch and rows + head.inputs.rows > self.max_batch_rows:
                break
            self._queue.popleft()
            self._queued_rows -= head.inputs.rows
            rows += head.inputs.rows
            batch.append(head)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wakeup is not None
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self._running_batch_was_busy and self._queued_rows < self.max_batch_rows:
                # Busy: give the batch until max_delay after its oldest request to fill.
                fill_by = self._queue[0].arrived + self.max_delay_s
                while self._queued_rows < self.max_batch_rows:
                    left = fill_by - time.monotonic()
                    if left <= 0:
                        break
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), left)
                    except TimeoutError:
                        break
            batch = self._take()
            if not batch:
                continue
            started = time.monotonic()
            for item in batch:
                item.started = started
            self._running_batch_was_busy = bool(self._queue)
            try:
                merged = concat_inputs([w.inputs for w in batch])
                outputs = await loop.run_in_executor(self._pool, self._predict, merged)
            except Exception as exc:  # deliberate: every waiting caller gets the model's error
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            elapsed = time.monotonic() - started
            rows = merged.rows
            per_row = elapsed / max(rows, 1)
            self._row_s = per_row if self._row_s == 0 else 0.8 * self._row_s + 0.2 * per_row
            self._cost.observe(rows, elapsed)
            self.stats.batches += 1
            self.stats.rows += rows
            self.stats.sizes.append(rows)
            if self._on_batch is not None:
                self._on_batch(rows, elapsed)
            offset = 0
            for item in batch:
                n = item.inputs.rows
                part = {k: v[offset : offset + n] for k, v in outputs.items()}
                offset += n
                if not item.future.done():
                    item.future.set_result(part)
            # more arrived while the model ran: the next batch coalesces
            self._running_batch_was_busy = bool(self._queue)

    _running_batch_was_busy: bool = False

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    @property
    def seconds_per_row(self) -> float:
        return self._row_s if math.isfinite(self._row_s) else 0.0


class LoopBatcher:
    """Coalescing for fast models, on the event loop: one model call per loop turn.

    A request that reaches the model queues its rows and, when it is the first of this
    loop turn, schedules a flush for the next turn; every request the worker reads in the
    same turn (under load, the requests of every connection that became readable
    together) joins it, and the flush runs them as one call of up to ``max_batch_rows``
    rows, in order. A lone request waits one loop turn, no thread hand-off; the server
    skips even that (:meth:`call_now`) when it is the only request in flight. The model
    runs on the loop's thread, so this is only for models that answer well under a
    millisecond (``batching.mode: auto`` measures that at warm-up); slower ones use
    :class:`Batcher`'s worker thread.

    A call that raises is retried one request at a time, so only the request whose rows
    make the model fail gets the error.

    >>> import asyncio, numpy as np
    >>> from modelyard.models.runtimes import Inputs
    >>> calls = []
    >>> def double(x: Inputs) -> dict[str, np.ndarray]:
    ...     calls.append(x.rows)
    ...     return {"y": x.columns[0] * 2}
    >>> async def demo() -> list[float]:
    ...     batcher = LoopBatcher(double, max_batch_rows=8)
    ...     one = Inputs(("x",), (np.array([1.0]),), None)
    ...     two = Inputs(("x",), (np.array([2.0, 3.0]),), None)
    ...     a, b = await asyncio.gather(batcher.submit(one), batcher.submit(two))
    ...     return [*a["y"].tolist(), *b["y"].tolist()]
    >>> asyncio.run(demo()), calls
    ([2.0, 4.0, 6.0], [3])
    """

    def __init__(
        self,
        predict: Predict,
        *,
        max_batch_rows: int,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self._predict = predict
        self.max_batch_rows = max_batch_rows
        self._on_batch = on_batch
        self._queue: list[tuple[Inputs, asyncio.Future[dict[str, np.ndarray]]]] = []
        self._queued_rows = 0
        self._scheduled = False
        self._closed = False
        self.stats = BatchStats()

    def close(self) -> None:
        self._closed = True
        queue, self._queue = self._queue, []
        self._queued_rows = 0
        for _, future in queue:
            if not future.done():
                future.set_exception(Overloaded("The model is being unloaded"))

    async def submit(self, inputs: Inputs) -> dict[str, np.ndarray]:
        """The model's outputs for ``inputs``, computed in one call with this turn's others."""
        outputs, _ = await self.submit_timed(inputs)
        return outputs

    def call_now(self, inputs: Inputs) -> dict[str, np.ndarray]:
        """The outputs of ``inputs`` alone, without waiting a loop turn: for a caller that
        knows no other request could join them (the only one in flight, nothing queued).
        Counted as a batch, as the loop turn would have; a failure is raised here.
        """
        if self._closed:
            raise Overloaded("The model is being unloaded", retry_after_s=0.1)
        began = time.perf_counter()
        outputs = self._predict(inputs)
        self._count(inputs.rows, time.perf_counter() - began)
        return outputs

    def _count(self, rows: int, elapsed: float) -> None:
        self.stats.batches += 1
        self.stats.rows += rows
        self.stats.sizes.append(rows)
        if self._on_batch is not None:
            self._on_batch(rows, elapsed)

    async def submit_timed(self, inputs: Inputs) -> tuple[dict[str, np.ndarray], float]:
        """The outputs and the seconds the request waited (one loop turn at most)."""
        if self._closed:
            raise Overloaded("The model is being unloaded", retry_after_s=0.1)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, np.ndarray]] = loop.create_future()
        self._queue.append((inputs, future))
        self._queued_rows += inputs.rows
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        outputs = await future
        return outputs, 0.0

    def _flush(self) -> None:
        self._scheduled = False
        queue, self._queue = self._queue, []
        self._queued_rows = 0
        start = 0
        while start < len(queue):
            rows = queue[start][0].rows
            end = start + 1
            while end < len(queue) and rows + queue[end][0].rows <= self.max_batch_rows:
                rows += queue[end][0].rows
                end += 1
            self._run(queue[start:end])
            start = end

    def _run(self, batch: list[tuple[Inputs, asyncio.Future[dict[str, np.ndarray]]]]) -> None:
        live = [(inputs, future) for inputs, future in batch if not future.done()]
        if not live:
            return
        began = time.perf_counter()
        try:
            merged = concat_inputs([inputs for inputs, _ in live])
            outputs = self._predict(merged)
        except Exception as exc:  # deliberate: each caller gets its own rows' answer
            if len(live) > 1:
                for item in live:
                    self._run([item])
                return
            live[0][1].set_exception(exc)
            return
        self._count(merged.rows, time.perf_counter() - began)
        if len(live) == 1:
            live[0][1].set_result(outputs)
            return
        offset = 0
        for inputs, future in live:
            n = inputs.rows
            future.set_result({k: v[offset : offset + n] for k, v in outputs.items()})
            offset += n

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    @property
    def seconds_per_row(self) -> float:
        return 0.0
