"""Compaction and readers: torn tails, crashes between steps, SIGKILL, DuckDB over the tree."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import duckdb

from modelyard.store.predlog import (
    PredictionLog,
    PredictionRecord,
    compact,
    connect,
    read_predictions,
)

DAY_US = 86_400_000_000
T0 = 1_700_000_000_000_000  # 2023-11-14T22:13:20Z


def _record(request_id: str, *, rows: int = 1, **changes: Any) -> PredictionRecord:
    fields: dict[str, Any] = {
        "request_id": request_id,
        "time_us": T0,
        "model": "churn",
        "version": 1,
        "rows": rows,
        "inputs": {"x": [float(i) for i in range(rows)]},
        "outputs": {"label": [i % 2 for i in range(rows)]},
        "latency_us": 10,
    }
    fields.update(changes)
    return PredictionRecord(**fields)


def _write(root: Path, records: list[PredictionRecord]) -> None:
    with PredictionLog(root) as log:
        for record in records:
            log.append_blocking(record)


def _segment(root: Path) -> Path:
    (segment,) = (root / "segments").glob("*.seg")
    return segment


def test_torn_tail_is_ignored_by_readers_and_compaction(tmp_path: Path) -> None:
    _write(tmp_path, [_record(f"r{i}", rows=2) for i in range(10)])
    segment = _segment(tmp_path)
    with open(segment, "r+b") as handle:
        handle.truncate(segment.stat().st_size - 7)  # the last record, cut mid-payload
    expected = [f"r{i}" for i in range(9) for _ in range(2)]
    assert read_predictions(tmp_path)["request_id"].to_pylist() == expected
    with open(segment, "ab") as handle:
        handle.write(b"\x00" * 64)  # a zero-filled tail, as a crash can leave
    assert read_predictions(tmp_path)["request_id"].to_pylist() == expected
    result = compact(tmp_path)
    assert (result.segments, result.records, result.torn) == (1, 9, 1)
    assert not segment.exists()
    assert read_predictions(tmp_path)["request_id"].to_pylist() == expected


def test_compaction_is_idempotent_and_a_crash_before_delete_duplicates_nothing(
    tmp_path: Path,
) -> None:
    _write(tmp_path, [_record(f"r{i}", rows=3, time_us=T0 + i * DAY_US // 2) for i in range(6)])
    segment = _segment(tmp_path)
    copy = tmp_path / "copy.bin"
    shutil.copy(segment, copy)
    first = compact(tmp_path)
    assert first.segments == 1 and len(first.files) == 4  # 6 half-days span 4 UTC days
    files = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.parquet"))
    shutil.copy(copy, segment)  # as if compaction died after the rename, before the delete
    table = read_predictions(tmp_path)
    assert table.num_rows == 18
    assert table.select(["request_id", "row"]).to_pylist() == [
        {"request_id": f"r{i}", "row": j} for i in range(6) for j in range(3)
    ]
    assert connect(tmp_path).execute("SELECT count(*) FROM predictions").fetchone() == (18,)
    again = compact(tmp_path)
    assert again.segments == 1
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.parquet")) == files
    assert read_predictions(tmp_path).num_rows == 18
    assert compact(tmp_path).segments == 0


def test_a_live_segment_is_not_compacted(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    log.append_blocking(_record("live"))
    result = compact(tmp_path)
    assert (result.segments, result.skipped_live) == (0, 1)
    assert _segment(tmp_path).exists()
    assert read_predictions(tmp_path)["request_id"].to_pylist() == ["live"]
    log.close()
    assert compact(tmp_path).segments == 1
    assert read_predictions(tmp_path)["request_id"].to_pylist() == ["live"]


def test_partitions_are_readable_by_duckdb_with_hive_partitioning(tmp_path: Path) -> None:
    records = [
        _record("a", model="churn", version=1, time_us=T0),
        _record("b", model="churn", version=2, time_us=T0, rows=2),
        _record("c", model="fraud/eu v2", version=1, time_us=T0 + DAY_US, inputs={"x": [3]}),
        _record("d", model="fraud/eu v2", version=1, time_us=T0 + DAY_US, inputs={"x": ["s"]}),
    ]
    _write(tmp_path, records)
    compact(tmp_path)
    assert (tmp_path / "predictions/model=fraud%2Feu%20v2/version=1/day=2023-11-15").is_dir()
    _write(tmp_path, [_record("e", model="churn", version=1, time_us=T0 + 1)])  # not compacted
    pattern = f"{tmp_path}/predictions/**/*.parquet"
    con = duckdb.connect()
    rows = con.execute(
        "SELECT model, version, CAST(day AS VARCHAR), count(*) FROM read_parquet(?, "
        "hive_partitioning = true, union_by_name = true) GROUP BY ALL ORDER BY ALL",
        [pattern],
    ).fetchall()
    assert rows == [
        ("churn", 1, "2023-11-14", 1),
        ("churn", 2, "2023-11-14", 2),
        ("fraud/eu v2", 1, "2023-11-15", 2),
    ]
    views = connect(tmp_path)
    got = views.execute(
        'SELECT request_id, "row", model, version, CAST(day AS VARCHAR), "input.x" '
        'FROM predictions ORDER BY request_id, "row"'
    ).fetchall()
    assert got == [
        ("a", 0, "churn", 1, "2023-11-14", "0.0"),
        ("b", 0, "churn", 2, "2023-11-14", "0.0"),
        ("b", 1, "churn", 2, "2023-11-14", "1.0"),
        ("c", 0, "fraud/eu v2", 1, "2023-11-15", "3"),
        ("d", 0, "fraud/eu v2", 1, "2023-11-15", "s"),
        ("e", 0, "churn", 1, "2023-11-14", "0.0"),
    ]
    mixed = read_predictions(tmp_path, model="fraud/eu v2")
    assert mixed["input.x"].to_pylist() == ["3", "s"]


_PRODUCER = textwrap.dedent(
    """
    import asyncio, sys, time
    from modelyard.store.predlog import PredictionLog, PredictionRecord

    async def worker(log, w):
        i = 0
        while True:
            rid = f"w{w}-{i}"
            await log.append(PredictionRecord(
                request_id=rid, time_us=time.time_ns() // 1000, model="churn", version=1,
                rows=2, inputs={"x": [i, -i]}, outputs={"label": [i % 2, 1]}, latency_us=i,
            ))
            sys.stdout.write(rid + "\\n")
            sys.stdout.flush()
            i += 1

    async def main():
        log = PredictionLog(sys.argv[1], segment_bytes=8192)
        await asyncio.gather(*(worker(log, w) for w in range(8)))

    asyncio.run(main())
    """
)


def test_every_acknowledged_prediction_survives_sigkill(tmp_path: Path) -> None:
    script = tmp_path / "producer.py"
    script.write_text(_PRODUCER)
    root = tmp_path / "log"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(root)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    acked: list[str] = []
    try:
        while len(acked) < 400:
            line = proc.stdout.readline()
            assert line, f"producer exited early with {proc.wait()}"
            acked.append(line.strip())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        acked += [line.strip() for line in proc.stdout if line.endswith("\n")]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    logged = read_predictions(root)
    ids = set(logged["request_id"].to_pylist())
    assert not set(acked) - ids, sorted(set(acked) - ids)[:5]
    assert logged.num_rows == 2 * len(ids)
    result = compact(root)
    assert result.skipped_live == 0  # the dead writer's locks went with it
    assert not list((root / "segments").glob("*.seg"))
    compacted = read_predictions(root)
    assert set(compacted["request_id"].to_pylist()) == ids
    assert compacted.num_rows == logged.num_rows
