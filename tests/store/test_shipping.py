"""Shipping the prediction log to object storage: exactly once, read back as one log.

Every test ships to a real S3-compatible server (moto's server mode, ``s3_artifacts``);
the oracle is the set of records the test wrote, compared with what the readers return
and with the rows stored in the shipped objects themselves (no duplicate at rest).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

import msgspec
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from modelyard.config import ServingSettings, ShipSettings, init_project, load_settings
from modelyard.errors import InvalidInputError, StorageError
from modelyard.store.predlog import (
    FeedbackRecord,
    PredictionLog,
    PredictionRecord,
    compact,
    connect,
    find_records,
    read_feedback,
    read_predictions,
)
from modelyard.store.predlog.shipping import (
    ShippedLog,
    check_shipping,
    default_replica_id,
    replica_id_for,
    ship,
    ship_interval_s,
    shipped_log,
)
from tests.conftest import S3Artifacts

DAY_US = 86_400_000_000
T0 = 1_700_000_000_000_000  # 2023-11-14


def _record(
    i: int, *, model: str = "churn", version: int = 1, time_us: int = T0
) -> PredictionRecord:
    return PredictionRecord(
        record_id=f"rec-{i:06d}",
        request_id=f"req-{i}",
        time_us=time_us + i,
        model=model,
        version=version,
        rows=2,
        inputs={"x": [float(i), float(i) + 0.5]},
        outputs={"y": [i % 2, (i + 1) % 2]},
        latency_us=100 + i,
    )


def _write(root: Path, records: list[PredictionRecord]) -> None:
    with PredictionLog(root) as log:
        for record in records:
            log.append_blocking(record)


def _shipped_rows(url: str) -> Counter[tuple[str, int, str]]:
    """(record_id, row, route) of every row at rest in the shipped prediction objects."""
    shipped = ShippedLog(url)
    rows: Counter[tuple[str, int, str]] = Counter()
    for path in shipped.files("predictions"):
        table = shipped.read(path)
        assert table is not None
        for r in table.select(["record_id", "row", "route"]).to_pylist():
            rows[(r["record_id"], r["row"], r["route"])] += 1
    return rows


def _expected(records: list[PredictionRecord]) -> Counter[tuple[str, int, str]]:
    return Counter((r.record_id, row, r.route) for r in records for row in range(r.rows))


def _local_parquet(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.parquet") if not p.name.startswith(".")]


def test_shipping_moves_every_row_once_and_readers_see_it(
    s3_artifacts: S3Artifacts, tmp_path: Path
) -> None:
    url = f"{s3_artifacts.url}/predictions"
    root = tmp_path / "log"
    records = [_record(i) for i in range(20)] + [
        _record(100 + i, version=2, time_us=T0 + DAY_US) for i in range(5)
    ]
    _write(root, records)
    compact(root)
    result = ship(root, url, "replica-a", grace_s=0)
    assert result.rows == 50 and result.deleted == 2 and len(result.shipped) == 2
    assert _local_parquet(root) == [] and not list(root.rglob(".ship-*.json"))
    assert _shipped_rows(url) == _expected(records)  # every row at rest once
    keys = ShippedLog(url).files("predictions")
    assert all("/replica=replica-a/predictions/model=churn/version=" in k for k in keys)
    read = read_predictions(root, shipped=ShippedLog(url))
    assert read.num_rows == 50
    assert sorted(read.column("record_id").to_pylist()) == sorted(
        r.record_id for r in records for _ in range(2)
    )
    con = connect(root, ShippedLog(url))
    try:
        assert con.execute(
            "SELECT count(*), count(DISTINCT record_id) FROM predictions"
        ).fetchone() == (50, 25)
        days = con.execute(
            "SELECT DISTINCT CAST(day AS VARCHAR) FROM predictions ORDER BY 1"
        ).fetchall()
    finally:
        con.close()
    assert days == [("2023-11-14",), ("2023-11-15",)]
    # nothing new: a second shipment uploads nothing
    assert ship(root, url, "replica-a", grace_s=0).shipped == ()


def test_local_files_wait_for_their_grace_period_and_are_read_once_meanwhile(
    s3_artifacts: S3Artifacts, tmp_path: Path
) -> None:
    url = f"{s3_artifacts.url}/predictions"
    root = tmp_path / "log"
    records = [_record(i) for i in range(6)]
    _write(root, records)
    compact(root)
    now = time.time()
    first = ship(root, url, "a", grace_s=120, now=now)
    assert first.rows == 12 and first.pending == 1 and len(_local_parquet(root)) == 1
    # in the grace period the rows are both local and shipped: readers show them once
    assert read_predictions(root, shipped=ShippedLog(url)).num_rows == 12
    # more records arrive meanwhile: the next shipment leaves the waiting file alone
    later = [_record(50 + i) for i in range(3)]
    _write(root, later)
    compact(root)
    second = ship(root, url, "a", grace_s=120, now=now + 1)
    assert second.rows == 6 and second.pending == 2
    assert _shipped_rows(url) == _expected(records + later)
    third = ship(root, url, "a", grace_s=120, now=now + 200)
    assert third.deleted == 2 and third.shipped == () and _local_parquet(root) == []
    assert _shipped_rows(url) == _expected(records + later)


_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from modelyard.store.predlog import shipping

    root, url, point = sys.argv[1], sys.argv[2], sys.argv[3]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "after-note":
        original_put = shipping._Target.put
        def put(self, key, data):
            die()
        shipping._Target.put = put
    elif point == "after-upload":
        original_put = shipping._Target.put
        def put(self, key, data):
            original_put(self, key, data)
            die()
        shipping._Target.put = put
    elif point == "after-verify":
        original_write = shipping._write_note
        def write_note(path, note):
            original_write(path, note)
            if note.get("verified_at") is not None:
                die()
        shipping._write_note = write_note
    elif point == "mid-delete":
        original_unlink = shipping.Path.unlink
        count = [0]
        def unlink(self, missing_ok=False):
            if self.suffix == ".parquet":
                count[0] += 1
                if count[0] == 2:
                    die()
            return original_unlink(self, missing_ok=missing_ok)
        shipping.Path.unlink = unlink
    shipping.ship(root, url, "crashy", grace_s=0)
    sys.exit(3)  # not reached: the kill came first
    """
)


@pytest.mark.parametrize("point", ["after-note", "after-upload", "after-verify", "mid-delete"])
def test_a_sigkill_during_shipping_neither_loses_nor_duplicates_rows(
    s3_artifacts: S3Artifacts, tmp_path: Path, point: str
) -> None:
    url = f"{s3_artifacts.url}/predictions"
    root = tmp_path / "log"
    # three segments (three files in one partition, so a deletion can stop half-way)
    records = [_record(i) for i in range(12)]
    for part in (records[:4], records[4:8], records[8:]):
        _write(root, part)
    compact(root, merge=False)
    assert len(_local_parquet(root)) == 3
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(root), url, point],
        env={**os.environ, **s3_artifacts.env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    # restarted: the next shipment finishes what the killed one began
    ship(root, url, "crashy", grace_s=0)
    assert _local_parquet(root) == [] and not list(root.rglob(".ship-*.json"))
    assert _shipped_rows(url) == _expected(records)  # at rest: each row exactly once
    assert len(ShippedLog(url).files("predictions")) == 1  # the same object name again
    assert read_predictions(root, shipped=ShippedLog(url)).num_rows == 24


def test_readers_union_every_replica_and_the_local_tail(
    s3_artifacts: S3Artifacts, tmp_path: Path
) -> None:
    url = f"{s3_artifacts.url}/predictions"
    a, b = tmp_path / "a", tmp_path / "b"
    shipped_a = [_record(i) for i in range(4)]
    # records that look alike (same request id, time, payload) but are distinct records
    twin = _record(7)
    twins = [msgspec.structs.replace(twin, record_id=f"twin-{k}") for k in range(3)]
    _write(a, shipped_a + twins[:2])
    compact(a)
    ship(a, url, "a", grace_s=0)
    shipped_b = [_record(20 + i) for i in range(3)]
    _write(b, shipped_b + twins[2:])
    compact(b)
    ship(b, url, "b", grace_s=0)
    tail = [_record(40 + i) for i in range(2)]  # b's uncompacted tail, in segments
    _write(b, tail)
    expected = _expected(shipped_a + twins + shipped_b + tail)
    table = read_predictions(b, shipped=ShippedLog(url))
    got = Counter(
        (r["record_id"], r["row"], r["route"])
        for r in table.select(["record_id", "row", "route"]).to_pylist()
    )
    assert got == expected
    con = connect(b, ShippedLog(url))
    try:
        count = con.execute("SELECT count(*) FROM predictions").fetchone()
        twins_seen = con.execute(
            "SELECT count(DISTINCT record_id) FROM predictions WHERE request_id = 'req-7'"
        ).fetchone()
    finally:
        con.close()
    assert count == (sum(expected.values()),) and twins_seen == (3,)
    # a replica finds another replica's record by its id (feedback on any replica)
    found = find_records(b, ["rec-000001", "req-7"], ShippedLog(url))
    assert [r.record_id for r in found["rec-000001"]] == ["rec-000001"]
    assert sorted(r.record_id for r in found["req-7"]) == ["twin-0", "twin-1", "twin-2"]


def test_feedback_ships_and_joins_predictions_of_another_replica(
    s3_artifacts: S3Artifacts, tmp_path: Path
) -> None:
    url = f"{s3_artifacts.url}/predictions"
    a, b = tmp_path / "a", tmp_path / "b"
    _write(a, [_record(1), _record(2)])
    with PredictionLog(b) as log:  # a label received by replica b for a's record
        log.append_feedback_blocking(
            FeedbackRecord(
                request_id="rec-000001", record_id="rec-000001", label=1, time_us=T0 + 10
            )
        )
    for root, name in ((a, "a"), (b, "b")):
        compact(root)
        ship(root, url, name, grace_s=0)
    fresh = tmp_path / "monitor-host"  # a host with no log of its own
    labels = read_feedback(fresh, shipped=ShippedLog(url))
    assert labels.column("record_id").to_pylist() == ["rec-000001"]
    con = connect(fresh, ShippedLog(url))
    try:
        joined = con.execute(
            "SELECT p.record_id, p.row, f.label FROM predictions p JOIN feedback f "
            "USING (record_id) ORDER BY 1, 2"
        ).fetchall()
    finally:
        con.close()
    assert joined == [("rec-000001", 0, "1"), ("rec-000001", 1, "1")]


def test_retention_removes_shipped_days_older_than_it(
    s3_artifacts: S3Artifacts, tmp_path: Path
) -> None:
    url = f"{s3_artifacts.url}/predictions"
    root = tmp_path / "log"
    old = [_record(i, time_us=T0) for i in range(3)]
    new = [_record(10 + i, time_us=T0 + 40 * DAY_US) for i in range(3)]
    _write(root, old + new)
    compact(root)
    now = (T0 + 41 * DAY_US) / 1e6
    result = ship(root, url, "a", grace_s=0, retention_s=30 * 86_400, now=now)
    assert result.expired == 1
    assert _shipped_rows(url) == _expected(new)


def test_replica_ids_and_ship_settings(tmp_path: Path, s3_artifacts: S3Artifacts) -> None:
    assert default_replica_id(tmp_path / "x") == default_replica_id(tmp_path / "x")
    assert default_replica_id(tmp_path / "x") != default_replica_id(tmp_path / "y")
    root = tmp_path / "project"
    init_project(root)
    local = load_settings(root, environ={})
    assert ship_interval_s(local) == 0 and shipped_log(local) is None
    on_s3 = msgspec.structs.replace(local, artifacts=s3_artifacts.url)
    assert ship_interval_s(on_s3) == 60
    assert shipped_log(on_s3) is not None
    off = msgspec.structs.replace(
        on_s3, serving=msgspec.structs.replace(on_s3.serving, ship=ShipSettings(interval_s=0))
    )
    assert shipped_log(off) is None
    with pytest.raises(InvalidInputError, match=r"ship\.retention"):
        ShipSettings(retention="forever")
    with pytest.raises(InvalidInputError, match=r"ship\.interval_s"):
        ShipSettings(interval_s=-1)


@hyp_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(min_size=0, max_size=80))
def test_a_replica_id_is_accepted_exactly_when_it_is_a_safe_name(text: str) -> None:
    safe = (
        1 <= len(text) <= 64
        and text[0].isascii()
        and text[0].isalnum()
        and all(c.isascii() and (c.isalnum() or c in "._-") for c in text)
    )
    if safe:
        assert ServingSettings(replica_id=text).replica_id == text
    else:
        with pytest.raises(InvalidInputError, match=r"serving\.replica_id"):
            ServingSettings(replica_id=text)


def test_the_shipped_objects_are_parquet_a_reader_can_open_directly(
    s3_artifacts: S3Artifacts, tmp_path: Path
) -> None:
    url = f"{s3_artifacts.url}/predictions"
    root = tmp_path / "log"
    _write(root, [_record(i) for i in range(3)])
    compact(root)
    ship(root, url, "a", grace_s=0)
    shipped = ShippedLog(url)
    (path,) = shipped.files("predictions", model="churn", version=1)
    assert shipped.files("predictions", model="other") == []
    table = pq.read_table(path, filesystem=shipped.fs)
    assert table.num_rows == 6


def test_a_label_that_came_before_its_record_was_shipped_joins_it_once_shipped(
    s3_artifacts: S3Artifacts, tmp_path: Path
) -> None:
    """Replica b got labels for a's records before a shipped them: kept apart, then joined."""
    url = f"{s3_artifacts.url}/predictions"
    a, b = tmp_path / "a", tmp_path / "b"
    made = _record(1, time_us=T0)  # rec-000001 / req-1, made at T0 + 1
    _write(a, [made, _record(2, time_us=T0)])
    labels = [
        FeedbackRecord(request_id=request_id, label=1, time_us=when)
        for request_id, when in (
            ("rec-000001", T0 + 50),  # the record id: unique, joined whatever the time
            ("req-2", T0 + 60),  # a client id, after its record was made: joined
            ("req-2", T0 - 60),  # the same client id before any record had it: apart
            ("ghost", T0 + 70),  # no record at all: apart
        )
    ]

    async def keep_apart() -> None:
        with PredictionLog(b) as log:
            for label in labels:
                await log.append_unmatched_feedback(label)

    asyncio.run(keep_apart())
    for root, name in ((a, "a"), (b, "b")):
        compact(root)
        ship(root, url, name, grace_s=0)
    con = connect(tmp_path / "elsewhere", ShippedLog(url))
    try:
        joined = con.execute(
            "SELECT p.record_id, count(*) FROM predictions p JOIN feedback f USING (record_id) "
            "GROUP BY 1 ORDER BY 1"
        ).fetchall()
        apart = con.execute(
            "SELECT request_id, epoch_us(time) FROM unmatched_feedback ORDER BY 1"
        ).fetchall()
    finally:
        con.close()
    assert joined == [("rec-000001", 2), ("rec-000002", 2)]  # two rows each
    assert apart == [("ghost", T0 + 70), ("req-2", T0 - 60)]


@hyp_settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=3),  # records written (one segment)
            st.integers(min_value=0, max_value=2),  # days after T0
            st.booleans(),  # compact after writing
            st.booleans(),  # ship after that
            st.sampled_from([0.0, 50.0, 200.0]),  # seconds the clock moves on
        ),
        min_size=1,
        max_size=6,
    )
)
def test_any_sequence_of_writes_and_shipments_keeps_every_row_exactly_once(
    steps: list[tuple[int, int, bool, bool, float]],
) -> None:
    """Generated interleavings (grace periods included): readers and storage agree."""
    with tempfile.TemporaryDirectory() as tmp:
        root, url = Path(tmp) / "log", str(Path(tmp) / "bucket" / "predictions")
        written: list[PredictionRecord] = []
        now = 1_000_000.0
        for count, day, do_compact, do_ship, advance in steps:
            batch = [
                _record(len(written) + i, version=1 + day % 2, time_us=T0 + day * DAY_US)
                for i in range(count)
            ]
            if batch:
                _write(root, batch)
            written += batch
            if do_compact:
                compact(root, merge=False)
            if do_ship:
                ship(root, url, "r", grace_s=120, now=now)
            now += advance
            table = read_predictions(root, shipped=ShippedLog(url))
            got = Counter(
                (r["record_id"], r["row"], r["route"])
                for r in table.select(["record_id", "row", "route"]).to_pylist()
            )
            assert got == _expected(written)  # never lost, never twice, at any moment
        compact(root, merge=False)
        ship(root, url, "r", grace_s=120, now=now)
        ship(root, url, "r", grace_s=120, now=now + 1_000)  # every grace period is over
        assert _local_parquet(root) == []
        assert _shipped_rows(url) == _expected(written)  # at rest: exactly once


def test_a_replica_checks_at_start_up_that_it_can_ship(
    s3_artifacts: S3Artifacts, tmp_path: Path
) -> None:
    root = tmp_path / "project"
    init_project(root)
    base = msgspec.structs.replace(load_settings(root, environ={}), artifacts=s3_artifacts.url)
    where = check_shipping(base)
    assert where == f"{s3_artifacts.url}/predictions/replica={replica_id_for(base)}"
    assert ShippedLog(f"{s3_artifacts.url}/predictions").files("predictions") == []
    missing = msgspec.structs.replace(base, artifacts="s3://no-such-bucket-h6/artifacts")
    with pytest.raises(StorageError, match="cannot be shipped to s3://no-such-bucket-h6"):
        check_shipping(missing)
    no_loop = msgspec.structs.replace(
        base, serving=msgspec.structs.replace(base.serving, compact_interval_s=0.0)
    )
    with pytest.raises(InvalidInputError, match="compact_interval_s"):
        check_shipping(no_loop)
    local = load_settings(root, environ={})
    assert check_shipping(local) is None  # a local artifact folder: shipping is off
