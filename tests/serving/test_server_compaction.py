"""The server compacts its prediction log while it serves; readers see every row once.

Before, nothing called ``compact``: the log stayed in segments forever (14k rows took
seconds to read). Now every worker closes its segments and compacts closed ones every
``serving.compact_interval_s``; ``modelyard log compact`` does the same by hand.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from modelyard.cli.app import app as cli
from modelyard.config import ShipSettings
from modelyard.store.predlog import (
    PredictionLog,
    PredictionRecord,
    compact,
    connect,
    find_records,
    read_predictions,
)
from modelyard.store.predlog.layout import PREDICTIONS, SEGMENTS
from modelyard.store.predlog.merging import merge_small_files
from modelyard.store.predlog.shipping import shipped_log

from .conftest import NAME, SEED, Project, ServeFactory, make_frame, records, serving

PREDICT = f"/v1/models/{NAME}:predict"
_ROWS = records(make_frame(seed=SEED + 3, rows=6)[0])


def _load(url: str, requests: int, seed: int, acked: dict[str, int]) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=30) as http:
        for _ in range(requests):
            rows = rng.randint(1, 4)
            headers = {"X-Request-ID": rng.choice(["a", "b", "c"])}  # reused client ids
            answer = http.post(PREDICT, json={"instances": _ROWS[:rows]}, headers=headers)
            assert answer.status_code == 200, answer.text
            acked[answer.headers["X-Record-ID"]] = rows


def _row_counts(log_dir: Path) -> Counter[str]:
    table = read_predictions(log_dir)
    pairs = Counter(zip(table["record_id"].to_pylist(), table["row"].to_pylist(), strict=True))
    assert max(pairs.values(), default=1) == 1, "a row was read twice"
    return Counter(record for record, _ in pairs)


def test_a_live_server_compacts_and_every_acknowledged_row_is_read_once(
    project: Project, serve: ServeFactory
) -> None:
    settings = serving(project.settings, compact_interval_s=0.2)
    server = serve(settings)
    log_dir = server.log_dir
    acked: dict[str, int] = {}
    threads = [
        threading.Thread(target=_load, args=(server.url, 60, seed, acked)) for seed in range(4)
    ]
    for thread in threads:
        thread.start()
    reads = 0
    while any(t.is_alive() for t in threads):  # readers while compaction moves segments
        counts = _row_counts(log_dir)
        assert all(counts[r] == rows for r, rows in list(acked.items()) if r in counts)
        reads += 1
    for thread in threads:
        thread.join()
    assert len(acked) == 240 and reads > 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        parquet = list((log_dir / PREDICTIONS).rglob("*.parquet"))
        if parquet and not _segments_with_records(log_dir):
            break
        time.sleep(0.1)
    assert parquet, "the server never compacted"
    assert not _segments_with_records(log_dir), "closed segments were left"
    counts = _row_counts(log_dir)
    assert {r: counts[r] for r in acked} == acked
    con = connect(log_dir)
    try:
        total = con.execute("SELECT count(*) FROM predictions").fetchone()
    finally:
        con.close()
    assert total == (sum(acked.values()),)


def _segments_with_records(log_dir: Path) -> list[Path]:
    """Segments holding a record (a live writer's fresh segment holds only its header)."""
    return [p for p in (log_dir / SEGMENTS).glob("*.seg") if p.stat().st_size > 8]


def test_two_workers_compacting_one_log_lose_and_duplicate_nothing(
    project: Project, serve: ServeFactory
) -> None:
    """Two apps on one log folder, as two uvicorn workers are, both compacting."""
    settings = serving(project.settings, compact_interval_s=0.05)
    first, second = serve(settings), serve(settings)
    assert first.log_dir == second.log_dir
    acked: dict[str, int] = {}
    threads = [
        threading.Thread(target=_load, args=(server.url, 50, seed, acked))
        for seed, server in enumerate([first, second, first, second])
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first.stop()
    second.stop()
    counts = _row_counts(first.log_dir)
    assert {r: counts[r] for r in acked} == acked
    assert sum(counts.values()) == sum(acked.values())


_COMPACT = "import sys; from modelyard.store.predlog import compact; compact(sys.argv[1])"


def _write(root: Path, start: int, count: int) -> dict[str, int]:
    written = {}
    with PredictionLog(root, segment_bytes=4096) as log:  # many small segments
        for i in range(start, start + count):
            rows = 1 + i % 3
            log.append_blocking(
                PredictionRecord(
                    record_id=f"r{i}",
                    request_id="same",
                    time_us=1_700_000_000_000_000 + i * 3_600_000_000,  # across days
                    model="m",
                    version=1 + i % 2,
                    rows=rows,
                    inputs={"x": list(range(rows))},
                    outputs={"y": [0.5] * rows},
                    latency_us=1,
                )
            )
            written[f"r{i}"] = rows
    return written


def test_a_compaction_killed_at_any_moment_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    rng = random.Random(11)
    written: dict[str, int] = {}
    for round_ in range(8):
        written |= _write(tmp_path, round_ * 150, 150)
        process = subprocess.Popen([sys.executable, "-c", _COMPACT, str(tmp_path)])
        time.sleep(rng.uniform(0.0, 0.6))
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
        counts = _row_counts(tmp_path)
        assert dict(counts) == written, f"round {round_}"
    compact(tmp_path)
    assert dict(_row_counts(tmp_path)) == written
    assert not _segments_with_records(tmp_path)


def test_log_compact_command(project: Project, tmp_path: Path) -> None:
    written = _write(tmp_path / "log", 0, 40)
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "--project",
            str(project.settings.project_dir),
            "log",
            "compact",
            "--log-dir",
            str(tmp_path / "log"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.output)
    assert report["records"] == len(written) and report["segments"] >= 1
    assert dict(_row_counts(tmp_path / "log")) == written
    again = runner.invoke(
        cli,
        [
            "--project",
            str(project.settings.project_dir),
            "log",
            "compact",
            "--log-dir",
            str(tmp_path / "log"),
        ],
    )
    assert again.exit_code == 0 and "Compacted 0 segment(s)" in again.output


def _small_files(root: Path, records: int, per_segment: int, prefix: str = "s") -> dict[str, int]:
    written = {}
    with PredictionLog(root) as log:
        for i in range(records):
            rows = 1 + i % 2
            log.append_blocking(
                PredictionRecord(
                    record_id=f"{prefix}{i}",
                    request_id="same",
                    time_us=1_700_000_000_000_000 + i,  # one day: one partition
                    model="m",
                    version=1,
                    rows=rows,
                    inputs={"x": [i] * rows},
                    outputs={"y": [0.5] * rows},
                    latency_us=1,
                )
            )
            written[f"{prefix}{i}"] = rows
            if i % per_segment == per_segment - 1:
                log.rotate()
    return written


def _parquet_count(root: Path) -> int:
    return len(list((root / PREDICTIONS).rglob("*.parquet")))


def test_small_files_are_merged_and_read_once_before_and_after_the_grace(tmp_path: Path) -> None:
    """Before merging, a server compacting every minute left one small file per minute."""
    written = _small_files(tmp_path, 200, 5)
    result = compact(tmp_path)
    assert result.records == 200 and result.merged == 40
    assert _parquet_count(tmp_path) == 41  # the inputs wait out the grace beside the merge
    assert dict(_row_counts(tmp_path)) == written
    assert merge_small_files(tmp_path, grace_s=0) == 0  # nothing new to merge; inputs go
    assert _parquet_count(tmp_path) == 1
    assert dict(_row_counts(tmp_path)) == written
    con = connect(tmp_path)
    try:
        assert con.execute("SELECT count(*) FROM predictions").fetchone() == (
            sum(written.values()),
        )
    finally:
        con.close()
    assert find_records(tmp_path, ["s7"])["s7"][0].rows == 2


_MERGE = (
    "import sys; from modelyard.store.predlog.merging import merge_small_files; "
    "merge_small_files(sys.argv[1], grace_s=0)"
)


def test_a_merge_killed_at_any_moment_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    rng = random.Random(5)
    written: dict[str, int] = {}
    merged = 0
    for round_ in range(6):
        written |= _small_files(tmp_path, 60, 3, prefix=f"m{round_}-")
        compact(tmp_path, merge=False)
        process = subprocess.Popen([sys.executable, "-c", _MERGE, str(tmp_path)])
        time.sleep(rng.uniform(0.0, 1.5))
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        else:
            merged += 1
        process.wait()
        assert dict(_row_counts(tmp_path)) == written, f"round {round_}"
    merge_small_files(tmp_path, grace_s=0)
    merge_small_files(tmp_path, grace_s=0)
    assert dict(_row_counts(tmp_path)) == written
    assert _parquet_count(tmp_path) <= 8


def test_a_stopping_server_ships_its_whole_tail_on_the_way_out(
    project: Project, serve: ServeFactory, tmp_path: Path
) -> None:
    """SIGTERM (a scale-down, a rolling update) leaves nothing only on the replica's disk.

    Compaction and periodic shipping never run here (their interval is an hour): every
    acknowledged row reaches the shipped log through the worker's last shipment alone.
    """
    settings = serving(
        project.settings,
        compact_interval_s=3600.0,
        replica_id="leaving",
        ship=ShipSettings(interval_s=3600.0),
    )
    server = serve(settings)
    acked: dict[str, int] = {}
    _load(server.url, 40, 7, acked)
    server.stop()
    shipped = shipped_log(settings)
    assert shipped is not None and shipped.files("predictions"), "nothing was shipped"
    assert all("replica=leaving" in path for path in shipped.files("predictions"))
    empty = tmp_path / "another-host"  # a reader on a host with no local tail
    empty.mkdir()
    table = read_predictions(empty, shipped=shipped)
    pairs = Counter(zip(table["record_id"].to_pylist(), table["row"].to_pylist(), strict=True))
    assert max(pairs.values()) == 1
    assert dict(Counter(record for record, _ in pairs)) == acked
    assert not _segments_with_records(server.log_dir)
