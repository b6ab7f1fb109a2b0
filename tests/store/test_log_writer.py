"""The prediction log writer: group commit, backpressure on a slow disk, write errors."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from modelyard.errors import StorageError
from modelyard.store.predlog import (
    FeedbackRecord,
    PredictionLog,
    PredictionRecord,
    compact,
    read_feedback,
    read_predictions,
)
from modelyard.store.predlog.frames import frame
from modelyard.store.predlog.records import encode_prediction

T0 = 1_700_000_000_000_000


def _record(request_id: str, pad: int = 0) -> PredictionRecord:
    return PredictionRecord(
        request_id=request_id,
        time_us=T0,
        model="churn",
        version=1,
        rows=1,
        inputs={"x": [1.5], "pad": ["p" * pad]},
        outputs={"label": [1]},
        latency_us=10,
    )


def _slow_fsync(seconds: float) -> Any:
    def fsync(fd: int) -> None:
        time.sleep(seconds)
        os.fsync(fd)

    return fsync


def test_concurrent_appends_share_fsyncs(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, _fsync=_slow_fsync(0.002))

    async def main() -> None:
        await asyncio.gather(*(log.append(_record(f"r{i}")) for i in range(300)))

    asyncio.run(main())
    stats = log.stats
    log.close()
    assert stats.records == 300
    assert stats.fsyncs < 300 / 5, stats
    assert stats.commits == stats.fsyncs
    assert read_predictions(tmp_path).num_rows == 300


def test_one_caller_returns_once_fsynced(tmp_path: Path) -> None:
    synced: list[int] = []

    def fsync(fd: int) -> None:
        os.fsync(fd)
        synced.append(fd)

    with PredictionLog(tmp_path, _fsync=fsync) as log:
        for i in range(5):
            log.append_blocking(_record(f"r{i}"))
            assert len(synced) == i + 1  # durable: acknowledged only after its own fsync


def test_slow_disk_bounds_pending_bytes_and_loses_nothing(tmp_path: Path) -> None:
    limit = 4096
    biggest = len(frame(encode_prediction(_record("t0-0", pad=199))))
    log = PredictionLog(tmp_path, max_pending_bytes=limit, _fsync=_slow_fsync(0.004))
    per_producer = 40

    def thread_producer(t: int) -> None:
        for i in range(per_producer):
            log.append_blocking(_record(f"t{t}-{i}", pad=(i * 37) % 200))

    async def async_producers() -> None:
        async def produce(a: int) -> None:
            for i in range(per_producer):
                await log.append(_record(f"a{a}-{i}", pad=(i * 53) % 200))

        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0)
                ticks += 1

        tick = asyncio.create_task(ticker())
        await asyncio.gather(*(produce(a) for a in range(6)))
        tick.cancel()
        assert ticks > 100  # the event loop kept running while appends waited for room

    threads = [threading.Thread(target=thread_producer, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    asyncio.run(async_producers())
    for thread in threads:
        thread.join()
    stats = log.stats
    log.close()
    assert stats.records == 12 * per_producer
    assert stats.peak_pending_bytes <= limit + biggest, stats
    assert stats.peak_pending_bytes > limit // 2  # the producers did outrun the disk
    ids = read_predictions(tmp_path)["request_id"].to_pylist()
    assert sorted(ids) == sorted({f"{p}{n}-{i}" for p in "ta" for n in range(6) for i in range(40)})


class _FlakyDisk:
    """A write hook that fails with ``errno`` while ``failing``; ``torn`` writes half first."""

    def __init__(self, code: int, *, torn: bool = False) -> None:
        self.code = code
        self.torn = torn
        self.failing = False

    def __call__(self, fd: int, data: memoryview) -> int:
        if self.failing:
            if self.torn and len(data) > 1:
                os.write(fd, data[: len(data) // 2])
            raise OSError(self.code, os.strerror(self.code))
        return os.write(fd, data)


@pytest.mark.parametrize("torn", [False, True], ids=["nothing-written", "torn-write"])
def test_write_error_reaches_callers_and_the_log_recovers(tmp_path: Path, torn: bool) -> None:
    disk = _FlakyDisk(errno.ENOSPC if not torn else errno.EIO, torn=torn)
    log = PredictionLog(tmp_path, _write=disk)
    log.append_blocking(_record("before"))
    disk.failing = True
    with pytest.raises(StorageError, match=r"could not write 1 record\(s\): .*Check the disk"):
        log.append_blocking(_record("lost-1"))

    async def failing() -> list[BaseException | None]:
        return await asyncio.gather(
            *(log.append(_record(f"lost-a{i}")) for i in range(5)), return_exceptions=True
        )

    outcomes = asyncio.run(failing())
    assert all(isinstance(o, StorageError) for o in outcomes), outcomes
    disk.failing = False
    log.append_blocking(_record("after"))
    log.close()
    assert log.stats.errors >= 2
    ids = read_predictions(tmp_path)["request_id"].to_pylist()
    assert ids == ["before", "after"]
    result = compact(tmp_path)
    # the segment that failed is closed and cut back to its last whole frame
    assert result.torn == 0
    assert read_predictions(tmp_path)["request_id"].to_pylist() == ["before", "after"]


def test_non_durable_append_returns_queued_and_flush_writes(tmp_path: Path) -> None:
    synced: list[int] = []

    def fsync(fd: int) -> None:
        synced.append(fd)
        os.fsync(fd)

    log = PredictionLog(tmp_path, durable=False, _fsync=fsync)
    for i in range(50):
        log.append_blocking(_record(f"r{i}"))
    log.flush()
    assert synced  # flush makes it durable
    assert read_predictions(tmp_path).num_rows == 50
    log.close()
    log.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        log.append_blocking(_record("late"))


def test_segments_rotate_and_closed_ones_compact_while_the_writer_lives(tmp_path: Path) -> None:
    with PredictionLog(tmp_path, segment_bytes=2048) as log:
        for i in range(40):
            log.append_blocking(_record(f"r{i}"))
        segments = sorted((tmp_path / "segments").glob("*.seg"))
        assert len(segments) > 3
        result = compact(tmp_path)
        assert result.skipped_live == 1  # the one being written
        assert result.segments == len(segments) - 1
        assert read_predictions(tmp_path)["request_id"].to_pylist() == [f"r{i}" for i in range(40)]
    assert compact(tmp_path).segments == 1


def test_feedback_round_trip(tmp_path: Path) -> None:
    labels: list[tuple[str, Any, int | None]] = [
        ("r1", 1, None),
        ("r2", [0, 1, 1], None),
        ("r2", "spam", 2),
        ("r3", {"score": 0.5}, 0),
    ]

    async def main(log: PredictionLog) -> None:
        for i, (rid, label, row) in enumerate(labels[:2]):
            await log.append_feedback(
                FeedbackRecord(request_id=rid, label=label, row=row, time_us=T0 + i)
            )

    with PredictionLog(tmp_path) as log:
        asyncio.run(main(log))
        for i, (rid, label, row) in enumerate(labels[2:], start=2):
            log.append_feedback_blocking(
                FeedbackRecord(
                    request_id=rid, label=label, row=row, time_us=T0 + i * 86_400_000_000
                )
            )

    def check() -> None:
        table = read_feedback(tmp_path)
        got = [(r["request_id"], json.loads(r["label"]), r["row"]) for r in table.to_pylist()]
        assert got == labels

    check()
    assert compact(tmp_path).records == 4
    assert sorted(p.parent.name for p in (tmp_path / "feedback").rglob("*.parquet")) == [
        "day=2023-11-14",
        "day=2023-11-16",
        "day=2023-11-17",
    ]
    check()


def test_an_event_loop_never_commits_on_its_thread_an_idle_blocking_caller_does_and_a_burst_groups(
    tmp_path: Path,
) -> None:
    threads: list[int] = []

    def fsync(fd: int) -> None:
        os.fdatasync(fd)
        threads.append(threading.get_ident())

    log = PredictionLog(tmp_path, _fsync=fsync)
    loop_thread: list[int] = []

    async def one_at_a_time() -> None:
        loop_thread.append(threading.get_ident())
        for i in range(3):
            await log.append(_record(f"idle{i}"))
            await asyncio.sleep(0.01)  # idle between requests

    asyncio.run(one_at_a_time())
    assert len(threads) == 3
    assert loop_thread[0] not in threads  # a slow disk never stalls the event loop

    threads.clear()
    for i in range(3):
        log.append_blocking(_record(f"thread{i}"))
        time.sleep(0.01)
    assert threads == [threading.get_ident()] * 3  # an idle thread caller: no hand-off

    async def burst() -> None:
        await asyncio.gather(*(log.append(_record(f"burst{i}")) for i in range(100)))

    threads.clear()
    asyncio.run(burst())
    log.close()
    assert len(threads) < 100 / 5  # grouped by the writer thread
    assert read_predictions(tmp_path).num_rows == 106


def test_segments_are_zero_filled_ahead_and_cut_back_on_close(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    for i in range(10):
        log.append_blocking(_record(f"r{i}"))
    (segment,) = (tmp_path / "segments").iterdir()
    written = sum(len(frame(encode_prediction(_record(f"r{i}")))) for i in range(10)) + 8
    assert segment.stat().st_size > written  # the zero-filled space ahead of the data
    assert read_predictions(tmp_path).num_rows == 10  # readers stop at the zeros
    log.close()
    assert segment.stat().st_size == written
    assert compact(tmp_path).torn == 0
    assert read_predictions(tmp_path)["request_id"].to_pylist() == [f"r{i}" for i in range(10)]
