"""Point-in-time joins: DuckDB's answer against a brute-force oracle of the written spec."""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from modelyard.errors import InvalidInputError
from modelyard.features.definitions import (
    Aggregation,
    Entity,
    Feature,
    FeatureService,
    FeatureView,
    FileSource,
    SqlSource,
)
from modelyard.features.offline import get_historical_features
from modelyard.features.online import OnlineStore, SQLiteOnlineStore
from modelyard.features.skew import check_view_skew
from modelyard.features.validation import check_views

T0 = datetime(2024, 1, 1, tzinfo=UTC)
CARRIER = Entity("carrier", join_keys=["carrier"])
_files = itertools.count()


def at(minute: float) -> datetime:
    return T0 + timedelta(minutes=minute)


@dataclass(frozen=True)
class Row:
    """One source row; ``rid`` is its position, exposed as a feature to see who won."""

    key: str
    event: datetime | None
    created: datetime | None
    f1: float | None
    f2: float | None


def write_source(folder: Path, rows: list[Row]) -> str:
    frame = pd.DataFrame(
        {
            "carrier": pd.Series([r.key for r in rows], dtype=str),
            "ts": pd.Series([r.event for r in rows], dtype="datetime64[us, UTC]"),
            "created": pd.Series([r.created for r in rows], dtype="datetime64[us, UTC]"),
            "f1": pd.Series([r.f1 for r in rows], dtype="float64"),
            "f2": pd.Series([r.f2 for r in rows], dtype="float64"),
            "rid": pd.Series(range(len(rows)), dtype="int64"),
        }
    )
    path = folder / f"source_{next(_files)}.parquet"
    frame.to_parquet(path)
    return str(path)


def make_view(path: str, ttl: timedelta | None = None, created: bool = True) -> FeatureView:
    return FeatureView(
        "delays",
        entities=[CARRIER],
        source=FileSource(path, "ts", "created" if created else None),
        features=[Feature("f1"), Feature("f2"), Feature("rid", "int")],
        ttl=ttl,
    )


def entities(rows: list[tuple[str, datetime]], **labels: list[Any]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "carrier": pd.Series([k for k, _ in rows], dtype=str),
            "event_timestamp": pd.Series([t for _, t in rows], dtype="datetime64[us, UTC]"),
        }
    )
    for name, values in labels.items():
        frame[name] = values
    return frame


def oracle(
    entity_rows: list[tuple[str, datetime]],
    source: list[Row],
    ttl: timedelta | None,
    as_served: bool,
) -> list[tuple[float | None, float | None, int | None]]:
    """The eight rules, literally: filter every source row, then take the maximum."""
    if as_served:
        return served_oracle(entity_rows, source, ttl)
    out: list[tuple[float | None, float | None, int | None]] = []
    for key, t in entity_rows:
        candidates = []
        for rid, row in enumerate(source):
            time, tie = (row.created, row.event) if as_served else (row.event, row.created)
            if row.key != key or time is None:  # rule 1
                continue
            if time > t:  # rule 2
                continue
            if ttl is not None and time < t - ttl:  # rule 3
                continue
            # rule 4: latest time, then latest tie-breaking time (null lowest), then row order
            candidates.append(((time, tie is not None, tie or T0, rid), row, rid))
        if not candidates:  # rule 6
            out.append((None, None, None))
            continue
        _, best, rid = max(candidates, key=lambda c: c[0])
        out.append((best.f1, best.f2, rid))  # rule 5: every feature from the one row
    return out


def served_oracle(
    entity_rows: list[tuple[str, datetime]], source: list[Row], ttl: timedelta | None
) -> list[tuple[float | None, float | None, int | None]]:
    """``as_served``, literally: of the rows available at t (created and event both <= t),
    the latest (event, created, row); null when its event is older than t - ttl."""
    out: list[tuple[float | None, float | None, int | None]] = []
    for key, t in entity_rows:
        available = [
            ((row.event, row.created, rid), row, rid)
            for rid, row in enumerate(source)
            if row.key == key
            and row.event is not None
            and row.created is not None
            and max(row.event, row.created) <= t
        ]
        if not available:
            out.append((None, None, None))
            continue
        _, best, rid = max(available, key=lambda c: c[0])
        assert best.event is not None
        if ttl is not None and best.event < t - ttl:
            out.append((None, None, None))
            continue
        out.append((best.f1, best.f2, rid))
    return out


def _clean(value: Any) -> float | None:
    if value is None or pd.isna(value):
        return None
    return float(value)


def got(frame: pd.DataFrame) -> list[tuple[float | None, float | None, float | None]]:
    return [
        (_clean(a), _clean(b), _clean(c))
        for a, b, c in zip(frame["f1"], frame["f2"], frame["rid"], strict=True)
    ]


def expect(
    rows: list[tuple[float | None, float | None, int | None]],
) -> list[tuple[float | None, float | None, float | None]]:
    return [(_clean(a), _clean(b), _clean(c)) for a, b, c in rows]


# -- the oracle on random data ----------------------------------------------------------

minutes = st.integers(min_value=0, max_value=6)
values = st.one_of(st.none(), st.floats(min_value=-5, max_value=5, allow_nan=False))


@st.composite
def source_rows(draw: st.DrawFn) -> list[Row]:
    rows = []
    for _ in range(draw(st.integers(min_value=0, max_value=12))):
        event = draw(minutes)
        # created before the event too (a forecast), and late arrivals of older events
        delay = draw(st.one_of(st.none(), st.integers(min_value=-2, max_value=3)))
        rows.append(
            Row(
                key=draw(st.sampled_from(["a", "b"])),
                event=at(event),
                created=None if delay is None else at(event + delay),
                f1=draw(values),
                f2=draw(values),
            )
        )
    return rows


entity_rows = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 9).map(at)),
    min_size=1,
    max_size=8,
)
ttls = st.one_of(
    st.none(), st.integers(min_value=1, max_value=3).map(lambda m: timedelta(minutes=m))
)


@seed(20240101)
@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(source=source_rows(), rows=entity_rows, ttl=ttls, as_served=st.booleans())
def test_matches_the_brute_force_oracle(
    tmp_path: Path,
    source: list[Row],
    rows: list[tuple[str, datetime]],
    ttl: timedelta | None,
    as_served: bool,
) -> None:
    view = make_view(write_source(tmp_path, source), ttl)
    result = get_historical_features(entities(rows), [view], as_served=as_served)
    assert got(result) == expect(oracle(rows, source, ttl, as_served))


# -- one hand-written case per rule ------------------------------------------------------


def test_rule1_every_join_key_must_match(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "carrier": ["AA", "AA", "UA"],
            "origin": ["JFK", "LGA", "JFK"],
            "ts": pd.to_datetime(["2024-01-01"] * 3, utc=True),
            "delay": [1.0, 2.0, 3.0],
        }
    )
    frame.to_parquet(tmp_path / "s.parquet")
    view = FeatureView(
        "route",
        entities=[CARRIER, Entity("origin", ["origin"])],
        source=FileSource(str(tmp_path / "s.parquet"), "ts"),
        features=[Feature("delay")],
    )
    ent = pd.DataFrame(
        {
            "carrier": ["AA", "UA", "UA"],
            "origin": ["LGA", "JFK", "LGA"],
            "event_timestamp": pd.to_datetime(["2024-01-02"] * 3, utc=True),
        }
    )
    result = get_historical_features(ent, [view])
    assert [_clean(v) for v in result["delay"]] == [2.0, 3.0, None]


def test_rule2_feature_time_is_inclusive_and_never_future(tmp_path: Path) -> None:
    view = make_view(write_source(tmp_path, [Row("a", at(5), None, 1.0, 1.0)]))
    result = get_historical_features(entities([("a", at(4)), ("a", at(5))]), [view])
    assert got(result) == [(None, None, None), (1.0, 1.0, 0.0)]


def test_rule3_ttl_is_inclusive_per_entity_row_and_never_falls_back(tmp_path: Path) -> None:
    source = [Row("a", at(0), None, 1.0, 1.0), Row("a", at(5), None, 2.0, 2.0)]
    view = make_view(write_source(tmp_path, source), ttl=timedelta(minutes=2))
    rows = [("a", at(1)), ("a", at(2)), ("a", at(3)), ("a", at(7)), ("a", at(8))]
    result = get_historical_features(entities(rows), [view])
    assert got(result) == [
        (1.0, 1.0, 0.0),
        (1.0, 1.0, 0.0),  # exactly ttl old: still fresh
        (None, None, None),  # too old
        (2.0, 2.0, 1.0),
        (None, None, None),  # latest is too old: no fallback to anything older
    ]


def test_rule4_latest_wins_then_created_then_row_order(tmp_path: Path) -> None:
    source = [
        Row("a", at(1), at(9), 1.0, 1.0),  # older event, latest created: loses
        Row("a", at(2), at(3), 2.0, 2.0),
        Row("a", at(2), at(4), 3.0, 3.0),  # same event, later created: wins
        Row("a", at(2), at(2), 4.0, 4.0),
        Row("b", at(2), at(3), 5.0, 5.0),
        Row("b", at(2), at(3), 6.0, 6.0),  # full tie: the later row wins
        Row("b", at(2), None, 7.0, 7.0),  # a null created loses the tie
    ]
    view = make_view(write_source(tmp_path, source))
    result = get_historical_features(entities([("a", at(5)), ("b", at(5))]), [view])
    assert got(result) == [(3.0, 3.0, 2.0), (6.0, 6.0, 5.0)]


def test_rule5_winning_row_supplies_all_features_nulls_included(tmp_path: Path) -> None:
    source = [Row("a", at(0), None, 1.0, 1.0), Row("a", at(1), None, None, 2.0)]
    view = make_view(write_source(tmp_path, source))
    result = get_historical_features(entities([("a", at(2))]), [view])
    assert got(result) == [(None, 2.0, 1.0)]


def test_rule6_no_match_gives_nulls_and_keeps_the_row(tmp_path: Path) -> None:
    view = make_view(write_source(tmp_path, [Row("a", at(0), None, 1.0, 1.0)]))
    result = get_historical_features(entities([("zz", at(3)), ("a", at(3))]), [view])
    assert len(result) == 2
    assert got(result) == [(None, None, None), (1.0, 1.0, 0.0)]


def test_rule7_duplicates_order_index_and_labels_are_kept(tmp_path: Path) -> None:
    source = [Row("a", at(0), None, 1.0, 1.0), Row("b", at(0), None, 2.0, 2.0)]
    view = make_view(write_source(tmp_path, source))
    rows = [("b", at(1)), ("a", at(1)), ("b", at(1)), ("a", at(1))]
    ent = entities(rows, label=[1, 0, 1, 0])
    ent.index = pd.Index([40, 30, 40, 10])
    result = get_historical_features(ent, [view])
    assert list(result.index) == [40, 30, 40, 10]
    assert list(result.columns) == ["carrier", "event_timestamp", "label", "f1", "f2", "rid"]
    assert list(result["label"]) == [1, 0, 1, 0]
    assert list(result["carrier"]) == ["b", "a", "b", "a"]
    assert [_clean(v) for v in result["f1"]] == [2.0, 1.0, 2.0, 1.0]


def test_rule8_other_time_zones_compare_in_utc(tmp_path: Path) -> None:
    view = make_view(write_source(tmp_path, [Row("a", at(60), None, 1.0, 1.0)]))
    # 10:00 in New York is 15:00 UTC; the row is at 01:00 UTC
    ent = pd.DataFrame(
        {
            "carrier": ["a", "a"],
            "event_timestamp": pd.to_datetime(["2023-12-31 19:59", "2023-12-31 20:00"]).tz_localize(
                "America/New_York"
            ),
        }
    )
    result = get_historical_features(ent, [view])
    assert got(result) == [(None, None, None), (1.0, 1.0, 0.0)]


def test_rule8_naive_entity_times_need_assume_utc(tmp_path: Path) -> None:
    view = make_view(write_source(tmp_path, [Row("a", at(0), None, 1.0, 1.0)]))
    ent = pd.DataFrame({"carrier": ["a"], "event_timestamp": pd.to_datetime(["2024-01-01 00:01"])})
    with pytest.raises(InvalidInputError, match=r"entity frame.*'event_timestamp'.*naive"):
        get_historical_features(ent, [view])
    result = get_historical_features(ent, [view], assume_utc=True)
    assert got(result) == [(1.0, 1.0, 0.0)]


def test_rule8_naive_source_times_need_assume_utc(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"carrier": ["a"], "ts": pd.to_datetime(["2024-01-01 00:00"]), "delay": [1.5]}
    )
    frame.to_parquet(tmp_path / "naive.parquet")
    view = FeatureView(
        "naive_view",
        entities=[CARRIER],
        source=FileSource(str(tmp_path / "naive.parquet"), "ts"),
        features=[Feature("delay")],
    )
    ent = entities([("a", at(0))])
    with pytest.raises(InvalidInputError, match=r"View 'naive_view'.*column 'ts'.*TIMESTAMP"):
        get_historical_features(ent, [view])
    result = get_historical_features(ent, [view], assume_utc=True)
    assert list(result["delay"]) == [1.5]


# -- as_served ---------------------------------------------------------------------------


def test_as_served_hides_a_late_backfill(tmp_path: Path) -> None:
    # an event at minute 1 that only arrived at minute 10
    source = [Row("a", at(0), at(0), 1.0, 1.0), Row("a", at(1), at(10), 2.0, 2.0)]
    view = make_view(write_source(tmp_path, source))
    rows = [("a", at(5)), ("a", at(10))]
    assert got(get_historical_features(entities(rows), [view])) == [
        (2.0, 2.0, 1.0),
        (2.0, 2.0, 1.0),
    ]
    assert got(get_historical_features(entities(rows), [view], as_served=True)) == [
        (1.0, 1.0, 0.0),
        (2.0, 2.0, 1.0),
    ]


def test_as_served_keeps_the_newer_event_over_a_late_older_one(tmp_path: Path) -> None:
    # an event at minute 5, then an *older* event (minute 2) that arrives at minute 8:
    # the online store keeps the newer event, so that is what was served at minute 9
    source = [Row("a", at(5), at(5), 1.0, 1.0), Row("a", at(2), at(8), 2.0, 2.0)]
    view = make_view(write_source(tmp_path, source))
    rows = [("a", at(6)), ("a", at(9))]
    assert got(get_historical_features(entities(rows), [view], as_served=True)) == [
        (1.0, 1.0, 0.0),
        (1.0, 1.0, 0.0),
    ]


def test_as_served_measures_the_ttl_on_event_time(tmp_path: Path) -> None:
    # an event at minute 0 that arrived at minute 3, with a 3-minute ttl: fresh at 3
    # (0 >= 3 - 3), stale at 4, as an online read at minute 4 reports it
    source = [Row("a", at(0), at(3), 1.0, 1.0)]
    view = make_view(write_source(tmp_path, source), ttl=timedelta(minutes=3))
    rows = [("a", at(2)), ("a", at(3)), ("a", at(4))]
    assert got(get_historical_features(entities(rows), [view], as_served=True)) == [
        (None, None, None),
        (1.0, 1.0, 0.0),
        (None, None, None),
    ]


_replays = itertools.count()


@seed(20240103)
@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(source=source_rows(), rows=entity_rows, ttl=ttls)
def test_as_served_equals_replaying_the_writes_into_a_real_online_store(
    tmp_path: Path,
    online_store: OnlineStore,
    source: list[Row],
    rows: list[tuple[str, datetime]],
    ttl: timedelta | None,
) -> None:
    """Each row is written when it became available (max(created, event)); rows that
    arrive together are one materialization batch (one winner per key); the store is
    read at each entity time. Offline ``as_served`` must give exactly what was read."""
    view = dataclasses.replace(
        make_view(write_source(tmp_path, source), ttl), name=f"served_{next(_replays)}"
    )
    offline = got(get_historical_features(entities(rows), [view], as_served=True))
    arrivals: dict[datetime, dict[str, tuple[Any, int, Row]]] = {}
    for rid, row in enumerate(source):
        if row.event is None or row.created is None:
            continue  # never available: no created time
        batch = arrivals.setdefault(max(row.event, row.created), {})
        order = (row.event, row.created, rid)
        if row.key not in batch or order > batch[row.key][0]:
            batch[row.key] = (order, rid, row)
    pending = sorted(arrivals.items(), key=lambda item: item[0])
    served: dict[int, tuple[float | None, float | None, float | None]] = {}
    for i, (key, t) in sorted(enumerate(rows), key=lambda item: item[1][1]):
        while pending and pending[0][0] <= t:
            _, batch = pending.pop(0)
            winners = list(batch.values())
            online_store.write(
                view,
                pa.table(
                    {
                        "carrier": [w[2].key for w in winners],
                        "event_timestamp": pa.array(
                            [w[2].event for w in winners], pa.timestamp("us", tz="UTC")
                        ),
                        "created_timestamp": pa.array(
                            [w[2].created for w in winners], pa.timestamp("us", tz="UTC")
                        ),
                        "f1": pa.array([w[2].f1 for w in winners], pa.float64()),
                        "f2": pa.array([w[2].f2 for w in winners], pa.float64()),
                        "rid": pa.array([w[1] for w in winners], pa.int64()),
                    }
                ),
            )
        read = online_store.read(view, [(key,)], now=t)
        served[i] = (
            _clean(read.values["f1"][0].as_py()),
            _clean(read.values["f2"][0].as_py()),
            _clean(read.values["rid"][0].as_py()),
        )
    assert offline == [served[i] for i in range(len(rows))]
    assert offline == expect(served_oracle(rows, source, ttl))


def test_as_served_needs_a_created_field(tmp_path: Path) -> None:
    view = make_view(write_source(tmp_path, [Row("a", at(0), None, 1.0, 1.0)]), created=False)
    with pytest.raises(InvalidInputError, match=r"View 'delays' has no created_timestamp_field"):
        get_historical_features(entities([("a", at(1))]), [view], as_served=True)


# -- what to ask for ---------------------------------------------------------------------


def test_refs_and_services_resolve_against_views(tmp_path: Path) -> None:
    view = make_view(write_source(tmp_path, [Row("a", at(0), None, 1.0, 7.0)]))
    ent = entities([("a", at(1))])
    by_ref = get_historical_features(ent, ["delays:f2"], views=[view])
    assert list(by_ref.columns) == ["carrier", "event_timestamp", "f2"]
    assert list(by_ref["f2"]) == [7.0]
    service = FeatureService("model", features=["delays:f2", "delays:f1"])
    full = get_historical_features(ent, service, views=[view], full_feature_names=True)
    assert list(full.columns)[2:] == ["delays__f2", "delays__f1"]


def test_expression_features_and_sql_sources() -> None:
    source = SqlSource(
        "SELECT 'a' AS carrier, TIMESTAMPTZ '2024-01-01 00:00+00' AS ts, 3 AS x",
        timestamp_field="ts",
    )
    view = FeatureView(
        "sq", entities=[CARRIER], source=source, features=[Feature("x2", "int", "x * 2")]
    )
    result = get_historical_features(entities([("a", at(1))]), [view])
    assert list(result["x2"]) == [6]


# -- bad inputs --------------------------------------------------------------------------


def test_unknown_view_in_a_ref(tmp_path: Path) -> None:
    view = make_view(write_source(tmp_path, []))
    with pytest.raises(InvalidInputError, match=r"No feature view named 'delay'.*'delays'"):
        get_historical_features(entities([("a", at(1))]), ["delay:f1"], views=[view])


def test_unknown_feature_and_malformed_ref(tmp_path: Path) -> None:
    view = make_view(write_source(tmp_path, []))
    with pytest.raises(InvalidInputError, match=r"View 'delays' has no feature 'nope'"):
        get_historical_features(entities([("a", at(1))]), ["delays:nope"], views=[view])
    with pytest.raises(InvalidInputError, match=r"view:feature"):
        get_historical_features(entities([("a", at(1))]), ["delays"], views=[view])


def test_missing_source_column_names_view_and_column(tmp_path: Path) -> None:
    path = write_source(tmp_path, [])
    view = FeatureView(
        "delays", entities=[CARRIER], source=FileSource(path, "ts"), features=[Feature("gone")]
    )
    with pytest.raises(InvalidInputError, match=r"View 'delays'.*no column 'gone'"):
        get_historical_features(entities([("a", at(1))]), [view])
    view = FeatureView(
        "delays", entities=[CARRIER], source=FileSource(path, "when"), features=[Feature("f1")]
    )
    with pytest.raises(InvalidInputError, match=r"View 'delays'.*timestamp column 'when'"):
        get_historical_features(entities([("a", at(1))]), [view])


def test_missing_entity_columns(tmp_path: Path) -> None:
    view = make_view(write_source(tmp_path, []))
    ent = entities([("a", at(1))]).rename(columns={"carrier": "airline"})
    with pytest.raises(InvalidInputError, match=r"entity frame.*carrier.*'delays'"):
        get_historical_features(ent, [view])
    ent = entities([("a", at(1))])
    with pytest.raises(InvalidInputError, match=r"entity frame.*when"):
        get_historical_features(ent, [view], entity_time_column="when")


def test_output_name_clash(tmp_path: Path) -> None:
    view = make_view(write_source(tmp_path, []))
    ent = entities([("a", at(1))], f1=[0.0])
    with pytest.raises(InvalidInputError, match=r"'f1'.*already taken"):
        get_historical_features(ent, [view])


AGGREGATIONS = [
    Aggregation("f1", "count", "2m"),
    Aggregation("f1", "sum", "3m"),
    Aggregation("f1", "mean", "2m"),
    Aggregation("f1", "min", "4m"),
    Aggregation("f1", "max", "1m"),
    Aggregation("f1", "std", "3m"),
    Aggregation("f1", "last", "2m"),
]


def aggregate_oracle(
    entity_rows: list[tuple[str, datetime]], source: list[Row], as_served: bool
) -> list[list[float | None]]:
    """Each aggregation over the rows with time in (t - window, t], literally."""
    out = []
    for key, t in entity_rows:
        row_out: list[float | None] = []
        for aggregation in AGGREGATIONS:
            window = timedelta(minutes=int(str(aggregation.window)[:-1]))
            inside = []
            for rid, row in enumerate(source):
                time, tie = (row.created, row.event) if as_served else (row.event, row.created)
                if row.key == key and time is not None and t - window < time <= t:
                    inside.append(((time, tie is not None, tie or T0, rid), row.f1))
            present = [v for _, v in inside if v is not None]
            if aggregation.fn == "count":
                row_out.append(float(len(present)))
            elif aggregation.fn == "last":
                row_out.append(max(inside, key=lambda c: c[0])[1] if inside else None)
            elif aggregation.fn == "std":
                row_out.append(statistics.stdev(present) if len(present) > 1 else None)
            elif not present:
                row_out.append(None)
            else:
                fns = {"sum": sum, "mean": statistics.fmean, "min": min, "max": max}
                row_out.append(float(fns[aggregation.fn](present)))
        out.append(row_out)
    return out


def close(a: list[list[float | None]], b: list[list[float | None]]) -> bool:
    return all(
        (x is None and y is None)
        or (x is not None and y is not None and math.isclose(x, y, abs_tol=1e-9))
        for ra, rb in zip(a, b, strict=True)
        for x, y in zip(ra, rb, strict=True)
    )


def aggregate_view(path: str) -> FeatureView:
    return FeatureView(
        "agg",
        entities=[CARRIER],
        source=FileSource(path, "ts", "created"),
        aggregations=AGGREGATIONS,
    )


@seed(20240102)
@settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(source=source_rows(), rows=entity_rows, as_served=st.booleans())
def test_aggregations_match_the_brute_force_oracle(
    tmp_path: Path, source: list[Row], rows: list[tuple[str, datetime]], as_served: bool
) -> None:
    view = aggregate_view(write_source(tmp_path, source))
    result = get_historical_features(entities(rows), [view], as_served=as_served)
    names = [a.output_name for a in AGGREGATIONS]
    assert list(result.columns)[2:] == names
    got_rows = [
        [_clean(v) for v in values] for values in zip(*(result[n] for n in names), strict=True)
    ]
    assert close(got_rows, aggregate_oracle(rows, source, as_served)), got_rows


def test_aggregation_window_excludes_its_start_and_includes_t(tmp_path: Path) -> None:
    source = [Row("a", at(0), None, 1.0, 0.0), Row("a", at(1), None, 2.0, 0.0)]
    view = FeatureView(
        "agg",
        entities=[CARRIER],
        source=FileSource(write_source(tmp_path, source), "ts"),
        features=[Feature("f1")],
        aggregations=[
            Aggregation("f1", "sum", "1m", name="f1_sum"),
            Aggregation("f1", "count", "1m"),
        ],
    )
    result = get_historical_features(entities([("a", at(1)), ("a", at(2)), ("b", at(2))]), [view])
    assert [_clean(v) for v in result["f1_sum"]] == [2.0, None, None]
    assert list(result["f1_count_1m"]) == [1, 0, 0]
    assert [_clean(v) for v in result["f1"]] == [2.0, 2.0, None]


def test_empty_entity_frame_gives_an_empty_result_with_the_columns(tmp_path: Path) -> None:
    view = make_view(write_source(tmp_path, [Row("a", at(0), None, 1.0, 1.0)]))
    ent = entities([], label=[])
    result = get_historical_features(ent, [view])
    assert len(result) == 0
    assert list(result.columns) == ["carrier", "event_timestamp", "label", "f1", "f2", "rid"]


def test_null_entity_time_matches_nothing(tmp_path: Path) -> None:
    view = make_view(write_source(tmp_path, [Row("a", at(0), None, 1.0, 1.0)]))
    ent = entities([("a", at(1))])
    ent.loc[0, "event_timestamp"] = pd.NaT
    assert got(get_historical_features(ent, [view])) == [(None, None, None)]


def test_ingestion_order_holds_across_row_groups(tmp_path: Path) -> None:
    n = 30_000
    frame = pd.DataFrame(
        {
            "carrier": ["a"] * n,
            "ts": pd.Series([T0] * n, dtype="datetime64[us, UTC]"),
            "created": pd.Series([T0] * n, dtype="datetime64[us, UTC]"),
            "f1": [float(i) for i in range(n)],
            "f2": [0.0] * n,
            "rid": range(n),
        }
    )
    path = tmp_path / "big.parquet"
    frame.to_parquet(path, row_group_size=1000)
    result = get_historical_features(entities([("a", at(1))]), [make_view(str(path))])
    assert got(result) == [(n - 1.0, 0.0, n - 1.0)]


def test_aggregation_refs_and_missing_aggregation_columns(tmp_path: Path) -> None:
    path = write_source(tmp_path, [Row("a", at(0), None, 1.0, 2.0)])
    view = aggregate_view(path)
    result = get_historical_features(entities([("a", at(0.5))]), ["agg:f1_max_1m"], views=[view])
    assert list(result.columns)[2:] == ["f1_max_1m"]
    assert list(result["f1_max_1m"]) == [1.0]
    broken = FeatureView(
        "broken",
        entities=[CARRIER],
        source=FileSource(path, "ts"),
        aggregations=[Aggregation("nope", "sum", "1h")],
    )
    with pytest.raises(InvalidInputError, match=r"View 'broken'.*no column 'nope'"):
        get_historical_features(entities([("a", at(1))]), [broken])


# -- timestamps of any unit and zone, ttl forms, unreadable sources ---------------------

ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu"]


def _zoned(values: list[datetime | None], unit: str, zone: str) -> pd.Series[Any]:
    return (
        pd.Series(values, dtype="datetime64[us, UTC]")
        .dt.tz_convert(zone)
        .astype(f"datetime64[{unit}, {zone}]")
    )


def _csv_time(value: datetime | None, zone: str) -> str:
    return "" if value is None else pd.Timestamp(value).tz_convert(zone).isoformat()


def write_zoned_source(folder: Path, rows: list[Row], fmt: str, unit: str, zones: list[str]) -> str:
    """``rows`` as Parquet with times in ``unit`` and ``zones[0]``, or as CSV with each
    row's times written with the UTC offset of a zone of ``zones`` (mixed offsets)."""
    path = folder / f"zoned_{next(_files)}.{fmt}"
    if fmt == "parquet":
        frame = pd.DataFrame(
            {
                "carrier": pd.Series([r.key for r in rows], dtype=str),
                "ts": _zoned([r.event for r in rows], unit, zones[0]),
                "created": _zoned([r.created for r in rows], unit, zones[0]),
                "f1": pd.Series([r.f1 for r in rows], dtype="float64"),
                "f2": pd.Series([r.f2 for r in rows], dtype="float64"),
                "rid": pd.Series(range(len(rows)), dtype="int64"),
            }
        )
        frame.to_parquet(path)
        return str(path)
    lines = ["carrier,ts,created,f1,f2,rid"]
    for rid, r in enumerate(rows):
        zone = zones[rid % len(zones)]
        f1, f2 = ("" if v is None else repr(v) for v in (r.f1, r.f2))
        created = _csv_time(r.created, zones[(rid + 1) % len(zones)])
        lines.append(f"{r.key},{_csv_time(r.event, zone)},{created},{f1},{f2},{rid}")
    if not rows:  # DuckDB needs a row to sniff the types from
        return write_zoned_source(folder, rows, "parquet", unit, zones)
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@seed(20240104)
@settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    source=source_rows(),
    rows=entity_rows,
    ttl=ttls,
    as_served=st.booleans(),
    fmt=st.sampled_from(["parquet", "csv"]),
    unit=st.sampled_from(["ms", "us", "ns"]),
    zones=st.lists(st.sampled_from(ZONES), min_size=1, max_size=3),
    entity_unit=st.sampled_from(["s", "ms", "us", "ns"]),
    entity_zone=st.sampled_from(ZONES),
    arrow_backed=st.booleans(),
)
def test_times_of_any_unit_and_zone_join_as_their_utc_instants(
    tmp_path: Path,
    source: list[Row],
    rows: list[tuple[str, datetime]],
    ttl: timedelta | None,
    as_served: bool,
    fmt: str,
    unit: str,
    zones: list[str],
    entity_unit: str,
    entity_zone: str,
    arrow_backed: bool,
) -> None:
    view = make_view(write_zoned_source(tmp_path, source, fmt, unit, zones), ttl)
    frame = entities(rows)
    frame["event_timestamp"] = _zoned([t for _, t in rows], entity_unit, entity_zone)
    if arrow_backed:  # as read_parquet(dtype_backend="pyarrow") gives them
        frame = frame.convert_dtypes(dtype_backend="pyarrow")
    result = get_historical_features(frame, [view], as_served=as_served)
    assert got(result) == expect(oracle(rows, source, ttl, as_served))


def test_pandas_default_nanosecond_aware_parquet_times_are_accepted(tmp_path: Path) -> None:
    # pandas writes tz-aware times as nanoseconds by default; DuckDB reads TIMESTAMPTZ_NS
    path = tmp_path / "ns.parquet"
    pd.DataFrame(
        {
            "carrier": ["a"],
            "ts": pd.Series([at(0)]).astype("datetime64[ns, Europe/Paris]"),
            "f1": [1.5],
        }
    ).to_parquet(path)
    view = FeatureView("ns", [CARRIER], FileSource(str(path), "ts", "ts"), [Feature("f1")])
    check_views([view])
    result = get_historical_features(entities([("a", at(0)), ("a", at(-1))]), [view])
    assert _plain(result["f1"]) == [1.5, None]


def test_entity_times_with_different_offsets_are_each_converted(tmp_path: Path) -> None:
    view = make_view(write_source(tmp_path, [Row("a", at(60), None, 1.0, 1.0)]))
    # 01:00 UTC written as 02:00+01:00, and 06:29+05:30 (00:59 UTC): pandas keeps objects
    times = pd.Series(
        [
            datetime.fromisoformat("2024-01-01T02:00+01:00"),
            datetime.fromisoformat("2024-01-01T06:29+05:30"),
        ],
        dtype=object,
    )
    frame = pd.DataFrame({"carrier": ["a", "a"], "event_timestamp": times})
    assert got(get_historical_features(frame, [view])) == [(1.0, 1.0, 0.0), (None, None, None)]


def _plain(values: Any) -> list[Any]:
    return [None if pd.isna(v) else v for v in values]


def test_a_ttl_is_a_timedelta_seconds_or_a_window(tmp_path: Path) -> None:
    path = write_source(tmp_path, [Row("a", at(0), None, 1.0, 1.0)])
    hour = make_view(path, timedelta(hours=1))
    for given_ttl in (3600, "1h", "60m"):
        view = dataclasses.replace(hour, ttl=given_ttl)
        assert view == hour and view.ttl == timedelta(hours=1)
    for bad in (1.5, True, "an hour", [1]):
        with pytest.raises(
            InvalidInputError, match=r"ttl of view 'delays' as a timedelta, whole seconds"
        ) as info:
            dataclasses.replace(hour, ttl=bad)
        assert info.value.loc == "views.delays.ttl" and "\n" not in str(info.value)
    with pytest.raises(InvalidInputError, match=r"positive ttl for view 'delays'"):
        dataclasses.replace(hour, ttl=0)


@pytest.mark.parametrize("kind", ["file", "glob", "csv", "sql"])
def test_an_unreadable_source_is_one_line_naming_it(tmp_path: Path, kind: str) -> None:
    source: FileSource | SqlSource = {
        "file": FileSource(str(tmp_path / "gone.parquet"), "ts"),
        "glob": FileSource(str(tmp_path / "parts" / "*.parquet"), "ts"),
        "csv": FileSource(str(tmp_path / "gone.csv"), "ts"),
        "sql": SqlSource("SELECT * FROM no_such_table", "ts"),
    }[kind]
    view = FeatureView("lost", [CARRIER], source, [Feature("f1")])
    for call in (
        lambda: get_historical_features(entities([("a", at(0))]), [view]),
        lambda: check_views([view]),
    ):
        with pytest.raises(InvalidInputError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and "LINE 1" not in message, message
        assert "View 'lost'" in message
        assert ("no_such_table" if kind == "sql" else str(tmp_path)) in message


def test_check_skew_on_an_unreadable_source_is_one_line(tmp_path: Path) -> None:
    view = FeatureView(
        "lost", [CARRIER], FileSource(str(tmp_path / "gone.parquet"), "ts"), [Feature("f1")]
    )
    store = SQLiteOnlineStore(f"sqlite:///{tmp_path / 'online.db'}")
    try:
        with pytest.raises(
            InvalidInputError, match=r"^View 'lost': its source file .*gone\.parquet does not exist"
        ):
            check_view_skew(view, at(10), store)
    finally:
        store.close()
