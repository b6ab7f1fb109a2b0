"""Error records (requests answered with 4xx/5xx): encoding, segments, compaction, DuckDB."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelyard.errors import InvalidInputError
from modelyard.store.predlog import (
    ErrorRecord,
    PredictionLog,
    compact,
    connect,
    read_errors,
)
from modelyard.store.predlog.merging import MERGE_AT, merge_small_files
from modelyard.store.predlog.records import decode_error, encode_error

T0 = 1_700_000_000_000_000  # 2023-11-14T22:13:20Z
DAY_US = 86_400_000_000
COLUMNS = [
    "record_id",
    "request_id",
    "time_us",
    "model",
    "version",
    "route",
    "protocol",
    "status",
    "error",
    "latency_us",
]


def _error(record_id: str, **changes: Any) -> ErrorRecord:
    fields: dict[str, Any] = {
        "record_id": record_id,
        "request_id": record_id,
        "time_us": T0,
        "model": "churn",
        "protocol": "v1",
        "status": 422,
        "error": "invalid_input",
        "latency_us": 120,
        "version": 1,
        "route": "primary",
    }
    fields.update(changes)
    return ErrorRecord(**fields)


def _as_rows(records: list[ErrorRecord]) -> list[tuple[Any, ...]]:
    return sorted(tuple(getattr(r, c) for c in COLUMNS) for r in records)


def _read_rows(root: Path) -> list[tuple[Any, ...]]:
    table = read_errors(root).to_pylist()
    return sorted(
        tuple(int(row["time"].timestamp() * 1e6) if c == "time_us" else row[c] for c in COLUMNS)
        for row in table
    )


def _duckdb_rows(root: Path) -> list[tuple[Any, ...]]:
    con = connect(root)
    try:
        select = ", ".join("epoch_us(time)" if c == "time_us" else c for c in COLUMNS)
        found = con.execute(f"SELECT {select} FROM errors").fetchall()
    finally:
        con.close()
    return sorted(found)


def _names() -> st.SearchStrategy[str]:
    return st.text(min_size=1, max_size=40)


@st.composite
def _records(draw: st.DrawFn) -> list[ErrorRecord]:
    count = draw(st.integers(1, 12))
    out = []
    for i in range(count):
        chosen = draw(st.booleans())
        out.append(
            ErrorRecord(
                record_id=f"rec-{i}",
                request_id=draw(_names()),
                time_us=T0 + draw(st.integers(-3 * DAY_US, 3 * DAY_US)),
                model=draw(st.sampled_from(["churn", "fraud/eu v2", "_unknown", "ü"])),
                protocol=draw(st.sampled_from(["v1", "v2", "mlflow"])),
                status=draw(st.integers(400, 599)),
                error=draw(_names()),
                latency_us=draw(st.integers(0, 2**62)),
                version=draw(st.integers(0, 2**40)) if chosen else None,
                route=draw(st.sampled_from(["primary", "canary"])) if chosen else None,
            )
        )
    return out


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=_records())
def test_generated_error_records_read_back_equal_before_and_after_compaction(
    records: list[ErrorRecord],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with PredictionLog(root) as log:
            for record in records:
                assert decode_error(encode_error(record)) == record
                log.append_error_blocking(record)
            assert log.stats.error_records == len(records)
            assert log.stats.records == 0
        expected = _as_rows(records)
        assert _read_rows(root) == expected
        assert _duckdb_rows(root) == expected
        result = compact(root)
        assert result.records == len(records)
        assert not list((root / "error-segments").glob("*.seg"))
        assert _read_rows(root) == expected
        assert _duckdb_rows(root) == expected


def test_errors_survive_a_rerun_compaction_and_merging_without_duplicates(tmp_path: Path) -> None:
    records = []
    for batch in range(MERGE_AT):  # one segment, hence one small file, per batch
        mine = [_error(f"r{batch}-{i}", time_us=T0 + i) for i in range(3)]
        with PredictionLog(tmp_path) as log:
            for record in mine:
                log.append_error_blocking(record)
        records += mine
        compact(tmp_path, merge=False)
    # a segment compacted but left behind (a crash before its delete) is read once
    with PredictionLog(tmp_path) as log:
        log.append_error_blocking(records[0])
    assert merge_small_files(tmp_path, grace_s=0) == MERGE_AT
    (folder,) = (tmp_path / "errors").glob("day=*")
    assert [p.name[:7] for p in folder.glob("*.parquet")] == ["merged-"]
    assert _read_rows(tmp_path) == _as_rows(records)
    assert _duckdb_rows(tmp_path) == _as_rows(records)
    compact(tmp_path)
    assert _read_rows(tmp_path) == _as_rows(records)


def test_errors_and_predictions_are_kept_apart(tmp_path: Path) -> None:
    with PredictionLog(tmp_path) as log:
        log.append_error_blocking(_error("e1", version=None, route=None))
    con = connect(tmp_path)
    try:
        assert con.execute("SELECT count(*) FROM predictions").fetchone() == (0,)
        assert con.execute("SELECT version, route FROM errors").fetchall() == [(None, None)]
    finally:
        con.close()


@pytest.mark.parametrize(
    ("changes", "loc"),
    [
        ({"status": 200}, "$.status"),
        ({"status": 600}, "$.status"),
        ({"record_id": ""}, "$.record_id"),
        ({"request_id": "x" * 257}, "$.request_id"),
        ({"model": ""}, "$.model"),
        ({"error": "e" * 300}, "$.error"),
        ({"latency_us": -1}, "$.latency_us"),
        ({"time_us": 2**63}, "$.time_us"),
        ({"version": -1}, "$.version"),
        ({"route": "shadow!"}, "$.route"),
    ],
)
def test_an_error_record_that_cannot_be_logged_is_refused_naming_the_field(
    tmp_path: Path, changes: dict[str, Any], loc: str
) -> None:
    record = msgspec.structs.replace(_error("r1"), **changes)
    with PredictionLog(tmp_path) as log:
        with pytest.raises(InvalidInputError) as refused:
            log.append_error_blocking(record)
        assert refused.value.loc == loc
        log.append_error_blocking(_error("r2"))  # the log still works
    assert read_errors(tmp_path).column("record_id").to_pylist() == ["r2"]
