"""Windows over the prediction log: ``parse_window``, ``split_windows``, ``read_log``.

``read_log`` reads a real log written with ``PredictionLog`` (some of it compacted to
Parquet) through DuckDB; window membership is checked against pandas' own flooring.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from modelyard.errors import InvalidInputError
from modelyard.monitoring.windows import (
    ORIGIN,
    dt,
    parse_window,
    read_log,
    split_windows,
    window_bounds,
)
from modelyard.store.predlog import FeedbackRecord, PredictionLog, PredictionRecord, compact

T0 = datetime(2024, 5, 6, tzinfo=UTC)  # a Monday


def _us(when: datetime) -> int:
    return int(when.timestamp() * 1_000_000)


# -- parse_window ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1d", 86_400),
        ("6h", 21_600),
        ("30m", 1_800),
        ("90s", 90),
        ("1w", 604_800),
        ("2w", 1_209_600),
        (" 12 h ", 43_200),
    ],
)
def test_parse_window_reads_a_number_and_a_unit(text: str, seconds: int) -> None:
    assert parse_window(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "d", "0d", "1y", "1.5d", "-1d", "1 day", "1d6h", "h1"])
def test_parse_window_refuses_anything_else_naming_the_window(text: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_window(text)
    assert caught.value.loc == "window"
    assert repr(text) in str(caught.value)


def test_parse_window_refuses_a_non_string() -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_window(86400)  # type: ignore[arg-type]
    assert caught.value.loc == "window"


def test_window_bounds_are_aligned_on_the_origin() -> None:
    assert ORIGIN.weekday() == 0
    assert window_bounds(dt(2013, 3, 1, 13), timedelta(days=1)) == (
        dt(2013, 3, 1),
        dt(2013, 3, 2),
    )
    # 2024-05-09 is a Thursday: its week runs from Monday 6th to Monday 13th
    assert window_bounds(dt(2024, 5, 9, 23), timedelta(weeks=1)) == (
        dt(2024, 5, 6),
        dt(2024, 5, 13),
    )
    # before the origin, floor division still gives the window holding the time
    assert window_bounds(dt(1999, 12, 31, 5), timedelta(hours=6)) == (
        dt(1999, 12, 31),
        dt(1999, 12, 31, 6),
    )


# -- split_windows --------------------------------------------------------------------------


def _table(times_us: np.ndarray) -> pa.Table:
    """A read_log-shaped table (sorted by time)."""
    times_us = np.sort(times_us)
    n = len(times_us)
    return pa.table(
        {
            "time": pa.array(times_us, pa.timestamp("us", tz="UTC")),
            "request_id": pa.array([f"r{i}" for i in range(n)]),
            "input.x": pa.array(np.arange(n, dtype=np.float64)),
            "output.proba_1": pa.array(np.linspace(0, 1, n)),
            "label": pa.array([None if i % 3 == 0 else "1" for i in range(n)], pa.string()),
        }
    )


@pytest.mark.parametrize(
    ("length", "floor"),
    [
        (timedelta(days=1), lambda s: s.dt.floor("D")),
        (timedelta(hours=6), lambda s: s.dt.floor("6h")),
        (
            timedelta(weeks=1),
            lambda s: (
                s.dt.tz_localize(None).dt.to_period("W-SUN").dt.start_time.dt.tz_localize(UTC)
            ),
        ),
    ],
    ids=["1d", "6h", "1w"],
)
def test_split_windows_puts_each_row_in_its_aligned_window(
    length: timedelta, floor: object
) -> None:
    rng = np.random.default_rng(3)
    # three weeks of rows, with gaps (days with no row at all)
    offsets = rng.integers(0, 21 * 86_400_000_000, size=2_000)
    offsets = offsets[(offsets // 86_400_000_000) % 5 != 2]  # every fifth day is empty
    times = _us(T0 - timedelta(days=2)) + offsets  # from a Saturday, midnight
    table = _table(times)
    windows = list(split_windows(table, length))

    stamps = pd.Series(pd.to_datetime(np.sort(times), unit="us", utc=True))
    expected = stamps.groupby(floor(stamps)).size()  # type: ignore[operator]
    assert [w.start for w in windows] == [t.to_pydatetime() for t in expected.index]
    assert [w.rows for w in windows] == expected.tolist()
    assert all(w.end - w.start == length for w in windows)
    for w in windows:
        mine = table.column("time").to_pandas()
        inside = (mine >= w.start) & (mine < w.end)
        assert (
            w.inputs.column("x").to_pylist() == table.column("input.x").to_numpy()[inside].tolist()
        )
        assert w.outputs.column_names == ["proba_1"]
        assert w.labels is not None and len(w.labels) == w.rows
        assert w.labelled == sum(v is not None for v in w.labels.to_pylist())
        assert w.request_ids is not None and len(w.request_ids) == w.rows
    # empty days are skipped, not returned as empty windows
    if length == timedelta(days=1):
        assert len(windows) == 21 - len([d for d in range(21) if d % 5 == 2])
        assert all(w.rows > 0 for w in windows)


def test_split_windows_clips_the_first_and_last_window_to_since_and_until() -> None:
    times = np.array([_us(T0 + timedelta(hours=h)) for h in (14, 20, 30, 50, 60)])
    since, until = T0 + timedelta(hours=13), T0 + timedelta(hours=61)
    windows = list(split_windows(_table(times), timedelta(days=1), since=since, until=until))
    assert [(w.start, w.end, w.rows) for w in windows] == [
        (since, T0 + timedelta(days=1), 2),
        (T0 + timedelta(days=1), T0 + timedelta(days=2), 1),
        (T0 + timedelta(days=2), until, 2),
    ]


def test_split_windows_of_an_empty_table_is_empty() -> None:
    assert list(split_windows(_table(np.array([], dtype=np.int64)), timedelta(days=1))) == []


# -- read_log -------------------------------------------------------------------------------


def _record(
    request_id: str,
    when: datetime,
    xs: list[float],
    *,
    model: str = "churn",
    version: int = 1,
    route: str = "primary",
) -> PredictionRecord:
    return PredictionRecord(
        request_id=request_id,
        time_us=_us(when),
        model=model,
        version=version,
        rows=len(xs),
        inputs={"x": xs, "other": ["a"] * len(xs)},
        outputs={"proba_1": [v / 10 for v in xs], "label": [1] * len(xs)},
        latency_us=100,
        route=route,
    )


def _read(root: Path, **kwargs: object) -> pa.Table:
    return read_log(root, "churn", 1, inputs=["x"], outputs=["proba_1"], **kwargs)  # type: ignore[arg-type]


def test_read_log_reads_one_model_version_of_primary_and_canary_routes(tmp_path: Path) -> None:
    root = tmp_path / "log"
    with PredictionLog(root) as log:
        log.append_blocking(_record("c", T0 + timedelta(hours=3), [3.0], route="canary"))
        log.append_blocking(_record("a", T0 + timedelta(hours=1), [1.0, 1.5]))
        log.append_blocking(_record("s", T0 + timedelta(hours=2), [9.0], route="shadow"))
        log.append_blocking(_record("v2", T0 + timedelta(hours=2), [8.0], version=2))
        log.append_blocking(_record("m", T0 + timedelta(hours=2), [7.0], model="fraud"))
        log.append_blocking(_record("b", T0 + timedelta(hours=2), [2.0]))
    table = _read(root)
    assert table.column_names == ["time", "request_id", "input.x", "output.proba_1"]
    assert table.column("request_id").to_pylist() == ["a", "a", "b", "c"]
    assert table.column("input.x").to_pylist() == [1.0, 1.5, 2.0, 3.0]
    assert table.column("output.proba_1").to_pylist() == pytest.approx([0.1, 0.15, 0.2, 0.3])
    times = table.column("time").to_pylist()
    assert times == sorted(times) and times[0] == T0 + timedelta(hours=1)
    # the shadow version's own records are read by asking for its route
    shadow = _read(root, routes=("shadow",))
    assert shadow.column("request_id").to_pylist() == ["s"]
    # since is inclusive, until exclusive
    clipped = _read(root, since=T0 + timedelta(hours=2), until=T0 + timedelta(hours=3))
    assert clipped.column("request_id").to_pylist() == ["b"]


def test_read_log_reads_compacted_and_live_records_in_time_order(tmp_path: Path) -> None:
    root = tmp_path / "log"
    with PredictionLog(root) as log:
        for i in range(0, 10, 2):  # even hours, across two UTC days
            log.append_blocking(_record(f"old{i}", T0 + timedelta(hours=20 + i), [float(i)]))
        log.append_feedback_blocking(FeedbackRecord(request_id="old0", label=1, time_us=_us(T0)))
    done = compact(root)
    assert done.records == 6
    assert list((root / "predictions").rglob("*.parquet"))
    assert not list((root / "segments").glob("*.seg"))
    with PredictionLog(root) as log:
        for i in range(1, 10, 2):  # odd hours: not compacted
            log.append_blocking(_record(f"new{i}", T0 + timedelta(hours=20 + i), [float(i)]))
        log.append_feedback_blocking(FeedbackRecord(request_id="new1", label=0, time_us=_us(T0)))
    assert list((root / "segments").glob("*.seg"))
    table = _read(root, labels=True)
    assert table.column("input.x").to_pylist() == [float(i) for i in range(10)]
    assert table.column("request_id").to_pylist()[:3] == ["old0", "new1", "old2"]
    assert table.column("label").to_pylist() == ["1", "0"] + [None] * 8


def test_read_log_joins_labels_from_feedback(tmp_path: Path) -> None:
    root = tmp_path / "log"
    at = T0 + timedelta(hours=1)
    later = _us(T0 + timedelta(days=1))
    with PredictionLog(root) as log:
        log.append_blocking(_record("rowed", at, [1.0, 2.0, 3.0]))
        log.append_blocking(_record("listed", at + timedelta(minutes=1), [4.0, 5.0, 6.0]))
        log.append_blocking(_record("single", at + timedelta(minutes=2), [7.0]))
        log.append_blocking(_record("twice", at + timedelta(minutes=3), [8.0]))
        log.append_blocking(_record("none", at + timedelta(minutes=4), [9.0, 10.0]))
        log.append_blocking(_record("rowtwice", at + timedelta(minutes=5), [11.0, 12.0]))
        log.append_feedback_blocking(
            FeedbackRecord(request_id="rowed", label="yes", row=1, time_us=later)
        )
        log.append_feedback_blocking(
            FeedbackRecord(request_id="listed", label=["a", "b", "c"], time_us=later)
        )
        log.append_feedback_blocking(FeedbackRecord(request_id="single", label=1, time_us=later))
        # the newer label is appended first: the time decides, not the order
        log.append_feedback_blocking(
            FeedbackRecord(request_id="twice", label="new", time_us=later + 2)
        )
        log.append_feedback_blocking(
            FeedbackRecord(request_id="twice", label="old", time_us=later + 1)
        )
        log.append_feedback_blocking(
            FeedbackRecord(request_id="rowtwice", label="first", row=0, time_us=later + 1)
        )
        log.append_feedback_blocking(
            FeedbackRecord(request_id="rowtwice", label="second", row=0, time_us=later + 5)
        )
    table = _read(root, labels=True)
    got = dict(
        zip(table.column("input.x").to_pylist(), table.column("label").to_pylist(), strict=True)
    )
    assert got == {
        1.0: None,
        2.0: "yes",
        3.0: None,
        4.0: "a",
        5.0: "b",
        6.0: "c",
        7.0: "1",
        8.0: "new",
        9.0: None,
        10.0: None,
        11.0: "second",
        12.0: None,
    }
    assert table.num_rows == 12  # joins add no rows
    windows = list(split_windows(table, timedelta(days=1)))
    assert len(windows) == 1 and windows[0].labelled == 7


def test_a_later_request_label_overrides_an_earlier_row_label(tmp_path: Path) -> None:
    root = tmp_path / "log"
    at = _us(T0 + timedelta(days=1))
    with PredictionLog(root) as log:
        log.append_blocking(_record("r", T0, [1.0, 2.0]))
        log.append_feedback_blocking(
            FeedbackRecord(request_id="r", label="early", row=0, time_us=at)
        )
        log.append_feedback_blocking(FeedbackRecord(request_id="r", label="late", time_us=at + 10))
    assert _read(root, labels=True).column("label").to_pylist() == ["late", "late"]


def test_read_log_of_an_empty_log_has_no_rows(tmp_path: Path) -> None:
    root = tmp_path / "log"
    with PredictionLog(root) as log:
        log.append_blocking(_record("m", T0, [7.0], model="fraud"))
    table = _read(root, labels=True)
    assert table.num_rows == 0
    assert list(split_windows(table, timedelta(days=1))) == []
