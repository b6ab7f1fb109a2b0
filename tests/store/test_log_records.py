"""Prediction log records: checked on append, typed columns, round trips through segments."""

from __future__ import annotations

import datetime as dt
import tempfile
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelyard.errors import InvalidInputError
from modelyard.store.predlog import PredictionLog, PredictionRecord, compact, read_predictions
from modelyard.store.predlog.tables import typed_array

DAY_US = 86_400_000_000
T0 = 1_700_000_000_000_000


def _record(request_id: str = "r1", rows: int = 1, **changes: Any) -> PredictionRecord:
    fields: dict[str, Any] = {
        "request_id": request_id,
        "time_us": T0,
        "model": "churn",
        "version": 1,
        "rows": rows,
        "inputs": {"x": list(range(rows))},
        "outputs": {"label": [0] * rows},
        "latency_us": 100,
    }
    fields.update(changes)
    return PredictionRecord(**fields)


@pytest.mark.parametrize("field", ["inputs", "outputs", "features"])
def test_unequal_column_length_is_refused_naming_the_field(tmp_path: Any, field: str) -> None:
    bad = _record(rows=2, **{field: {"age": [31]}})
    with PredictionLog(tmp_path) as log:
        with pytest.raises(
            InvalidInputError, match=rf"Expected 2 values .*got 1 - at \$\.{field}\.age"
        ):
            log.append_blocking(bad)
        assert log.stats.records == 0
    assert read_predictions(tmp_path).num_rows == 0


def test_bad_route_and_rows_are_refused(tmp_path: Any) -> None:
    with PredictionLog(tmp_path) as log:
        with pytest.raises(InvalidInputError, match=r"route"):
            log.append_blocking(_record(route="sideways"))
        with pytest.raises(InvalidInputError, match=r"at \$\.rows"):
            log.append_blocking(_record(rows=0, inputs={}, outputs={}))
        with pytest.raises(InvalidInputError, match=r"JSON scalars"):
            log.append_blocking(_record(inputs={"x": [object()]}))


def test_values_are_typed_from_what_they_hold() -> None:
    assert str(typed_array([1, None, 3]).type) == "int64"
    assert str(typed_array([1, 2.5]).type) == "double"
    assert str(typed_array([True, None]).type) == "bool"
    assert str(typed_array(["a", None]).type) == "string"
    assert str(typed_array([None, None]).type) == "null"
    assert typed_array(["a", 1, True]).to_pylist() == ["a", "1", "true"]
    assert typed_array([2**70]).to_pylist() == [str(2**70)]


# a column's type follows its name, so the expected values are exact
_VALUES = {
    "i": st.integers(-(2**63), 2**63 - 1),
    "f": st.floats(allow_nan=False, allow_infinity=False),
    "b": st.booleans(),
    "s": st.text(max_size=8),
}
_NAMES = st.sampled_from([f"{kind}{n}" for kind in _VALUES for n in range(2)])


@st.composite
def _records(draw: st.DrawFn) -> list[PredictionRecord]:
    count = draw(st.integers(1, 12))
    times = draw(st.lists(st.integers(0, 3 * DAY_US), min_size=count, max_size=count, unique=True))
    records = []
    for i, offset in enumerate(times):
        rows = draw(st.integers(1, 4))

        def columns(rows: int = rows) -> dict[str, list[Any]]:
            names = draw(st.lists(_NAMES, max_size=3, unique=True))
            return {
                n: draw(st.lists(st.none() | _VALUES[n[0]], min_size=rows, max_size=rows))
                for n in names
            }

        records.append(
            PredictionRecord(
                request_id=f"req-{i}",
                time_us=T0 + offset,
                model=draw(st.sampled_from(["churn", "fraud/eu v2"])),
                version=draw(st.integers(1, 2)),
                rows=rows,
                inputs=columns(),
                outputs=columns(),
                features=draw(st.none() | st.builds(columns)),
                latency_us=draw(st.integers(0, 10**6)),
                route=draw(st.sampled_from(["primary", "canary", "shadow"])),
            )
        )
    return records


def _expected(records: list[PredictionRecord], names: list[str]) -> list[dict[str, Any]]:
    rows = []
    for r in sorted(records, key=lambda r: r.time_us):
        for i in range(r.rows):
            row: dict[str, Any] = dict.fromkeys(names)
            row.update(
                record_id=r.key,
                request_id=r.request_id,
                row=i,
                time=dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=r.time_us),
                model=r.model,
                version=r.version,
                latency_us=r.latency_us,
                route=r.route,
            )
            for prefix, columns in (
                ("input.", r.inputs),
                ("feature.", r.features),
                ("output.", r.outputs),
            ):
                for name, values in (columns or {}).items():
                    row[prefix + name] = values[i]
            rows.append(row)
    return rows


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=_records())
def test_round_trip_through_segments_and_parquet(records: list[PredictionRecord]) -> None:
    with tempfile.TemporaryDirectory() as root:
        with PredictionLog(root) as log:
            for record in records:
                log.append_blocking(record)
        live = read_predictions(root)
        assert live.to_pylist() == _expected(records, live.column_names)
        result = compact(root)
        assert result.records == len(records)
        compacted = read_predictions(root)
        assert compacted.num_rows == live.num_rows
        assert compacted.to_pylist() == _expected(records, compacted.column_names)
        one = read_predictions(
            root, model="fraud/eu v2", version=2, since_us=T0, until_us=T0 + DAY_US
        )
        keep = [
            r
            for r in records
            if r.model == "fraud/eu v2" and r.version == 2 and r.time_us < T0 + DAY_US
        ]
        assert one["request_id"].to_pylist() == [
            r.request_id for r in sorted(keep, key=lambda r: r.time_us) for _ in range(r.rows)
        ]
