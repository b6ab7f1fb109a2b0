"""The online store contract, run on SQLite and on Redis (the ``online_store`` fixture)."""

from __future__ import annotations

import itertools
import os
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from modelyard.errors import InvalidInputError
from modelyard.features import Entity, Feature, FeatureService, FeatureView, FileSource
from modelyard.features.online import (
    FeatureStatus,
    OnlineStore,
    RedisOnlineStore,
    SQLiteOnlineStore,
    get_online_features,
    open_online_store,
)

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
SOURCE = FileSource("data/x.parquet", timestamp_field="ts")
CUSTOMER = Entity("customer", join_keys=["customer_id"])

TYPED = FeatureView(
    "typed",
    entities=[CUSTOMER],
    source=SOURCE,
    features=[
        Feature("score", "float"),
        Feature("visits", "int"),
        Feature("active", "bool"),
        Feature("segment", "string"),
        Feature("seen_at", "datetime"),
    ],
)
SCORES = FeatureView(
    "scores",
    entities=[CUSTOMER, Entity("shop", join_keys=["shop"])],
    source=SOURCE,
    features=[Feature("score", "float")],
    ttl=timedelta(hours=1),
)


def _rows(keys: list[Any], times: list[datetime], scores: list[float | None]) -> pa.Table:
    return pa.table(
        {
            "customer_id": keys,
            "shop": ["s"] * len(keys),
            "event_timestamp": pa.array(times, pa.timestamp("us", tz="UTC")),
            "score": pa.array(scores, pa.float64()),
        }
    )


def test_round_trip_of_typed_values(online_store: OnlineStore) -> None:
    seen = [T0, None, T0 - timedelta(days=400, microseconds=7), T0]
    rows = pd.DataFrame(
        {
            "customer_id": [1, 2, 3, 4],
            "event_timestamp": pd.to_datetime([T0] * 4, utc=True),
            "score": [1.25, float("nan"), None, -1e300],
            "visits": pd.array([7, None, -(2**62), 0], dtype="Int64"),
            "active": pd.array([True, False, None, True], dtype="boolean"),
            "segment": ["a", None, "", "ünïcode:with,commas"],
            "seen_at": pd.Series(seen, dtype="datetime64[us, UTC]"),
        }
    )
    assert online_store.write(TYPED, rows) == 4
    result = online_store.read(TYPED, [(4,), (3,), (2,), (1,), (5,)], now=T0)
    assert result.status.tolist() == [0, 0, 0, 0, 2]
    got = {name: arr.to_pylist() for name, arr in result.values.items()}
    # NaN and null are the same "no value" on every backend.
    assert got["score"] == [-1e300, None, None, 1.25, None]
    assert got["visits"] == [0, -(2**62), None, 7, None]
    assert got["active"] == [True, None, False, True, None]
    assert got["segment"] == ["ünïcode:with,commas", "", None, "a", None]
    assert got["seen_at"] == [seen[3], seen[2], None, seen[0], None]
    assert result.values["visits"].type == pa.int64()
    assert result.event_timestamp.to_pylist() == [T0, T0, T0, T0, None]


def test_string_and_int_keys_never_meet(online_store: OnlineStore) -> None:
    # Before any write, nothing is held: any key is simply missing.
    assert online_store.read(SCORES, [("1", "s")], now=T0).status.tolist() == [2]
    online_store.write(SCORES, _rows([1, 2], [T0, T0], [1.0, 2.0]))
    # The view's keys are ints now: string keys are refused, on write and on read,
    # naming both types, never converted ("1" is not 1).
    with pytest.raises(InvalidInputError, match=r"holds int keys.*string keys"):
        online_store.write(SCORES, _rows(["1"], [T0], [10.0]))
    for bad in ("1", "01", 1.0, True):
        with pytest.raises(InvalidInputError, match=r"'customer_id' holds int keys.*got the"):
            online_store.read(SCORES, [(1, "s"), (bad, "s")], now=T0)
    result = online_store.read(SCORES, [(1, "s"), (2, "s"), (3, "s")], now=T0)
    assert result.values["score"].to_pylist() == [1.0, 2.0, None]
    numpy_key = online_store.read(SCORES, [(np.int64(2), np.str_("s"))], now=T0)
    assert numpy_key.values["score"].to_pylist() == [2.0]
    # A store opened afresh knows the types from what it holds.
    if isinstance(online_store, SQLiteOnlineStore):
        again: OnlineStore = SQLiteOnlineStore(online_store.url)
    else:
        assert isinstance(online_store, RedisOnlineStore)
        again = RedisOnlineStore(os.environ["MODELYARD_TEST_REDIS_URL"], prefix=online_store.prefix)
    try:
        with pytest.raises(InvalidInputError, match=r"holds int keys.*got the string '1'"):
            again.read(SCORES, [("1", "s")], now=T0)
    finally:
        again.close()


def test_an_older_write_never_overwrites_a_newer_one(online_store: OnlineStore) -> None:
    online_store.write(SCORES, _rows([1], [T0], [2.0]))
    online_store.write(SCORES, _rows([1], [T0 - timedelta(microseconds=1)], [1.0]))
    assert online_store.read(SCORES, [(1, "s")], now=T0).values["score"].to_pylist() == [2.0]
    online_store.write(SCORES, _rows([1], [T0 + timedelta(seconds=1)], [3.0]))
    assert online_store.read(SCORES, [(1, "s")], now=T0).values["score"].to_pylist() == [3.0]


def test_equal_event_times_keep_the_first_unless_created_later(online_store: OnlineStore) -> None:
    online_store.write(SCORES, _rows([1], [T0], [1.0]))
    online_store.write(SCORES, _rows([1], [T0], [2.0]))  # a same-time retry: no-op
    assert online_store.read(SCORES, [(1, "s")], now=T0).values["score"].to_pylist() == [1.0]
    later = _rows([1], [T0], [3.0]).append_column(
        "created_timestamp", pa.array([T0], pa.timestamp("us", tz="UTC"))
    )
    online_store.write(SCORES, later)
    assert online_store.read(SCORES, [(1, "s")], now=T0).values["score"].to_pylist() == [3.0]


def test_duplicate_keys_within_one_batch_keep_the_newest(online_store: OnlineStore) -> None:
    times = [T0, T0 + timedelta(minutes=5), T0 - timedelta(minutes=5)]
    online_store.write(SCORES, _rows([1, 1, 1], times, [1.0, 2.0, 3.0]))
    result = online_store.read(SCORES, [(1, "s")], now=T0)
    assert result.values["score"].to_pylist() == [2.0]


WRITES = [
    (key, T0 + timedelta(seconds=offset), float(key * 1000 + offset))
    for key in range(4)
    for offset in range(5)
]


_KEY_BASES = itertools.count(0, 100)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@seed(20240301)
@given(data=st.data())
def test_writes_in_any_order_converge(online_store: OnlineStore, data: st.DataObject) -> None:
    # The store outlives the examples, so each example writes its own fresh keys.
    base = next(_KEY_BASES)
    order = data.draw(st.permutations(range(len(WRITES))), label="order")
    batches = data.draw(st.integers(1, len(WRITES)), label="batch size")
    writes = [WRITES[i] for i in order]
    for start in range(0, len(writes), batches):
        chunk = writes[start : start + batches]
        online_store.write(
            SCORES,
            _rows(
                [base + k for k, _, _ in chunk], [t for _, t, _ in chunk], [v for *_, v in chunk]
            ),
        )
    # The oracle: per key, the value of the write with the greatest event time.
    oracle: dict[int, tuple[datetime, float]] = {}
    for key, t, value in WRITES:
        if key not in oracle or t > oracle[key][0]:
            oracle[key] = (t, value)
    keys = sorted(oracle)
    result = online_store.read(SCORES, [(base + k, "s") for k in keys], now=T0)
    assert result.values["score"].to_pylist() == [oracle[k][1] for k in keys]
    assert result.event_timestamp.to_pylist() == [oracle[k][0] for k in keys]


def test_ttl_is_checked_at_read_time_inclusively(online_store: OnlineStore) -> None:
    now = T0 + timedelta(hours=1)
    online_store.write(
        SCORES,
        _rows([1, 2, 3], [T0, T0 - timedelta(microseconds=1), now], [1.0, 2.0, 3.0]),
    )
    result = online_store.read(SCORES, [(1, "s"), (2, "s"), (3, "s"), (4, "s")], now=now)
    assert result.status.tolist() == [
        FeatureStatus.PRESENT,
        FeatureStatus.STALE,
        FeatureStatus.PRESENT,
        FeatureStatus.MISSING,
    ]
    # A stale value is served as null, exactly as the offline join would see it.
    assert result.values["score"].to_pylist() == [1.0, None, 3.0, None]
    later = online_store.read(SCORES, [(1, "s")], now=now + timedelta(microseconds=1))
    assert later.status.tolist() == [FeatureStatus.STALE]


def test_missing_keys_and_unknown_views_are_missing(online_store: OnlineStore) -> None:
    result = online_store.read(SCORES, [(1, "s"), (2, "s")], now=T0)
    assert result.status.tolist() == [2, 2]
    assert result.values["score"].to_pylist() == [None, None]
    assert len(online_store.read(SCORES, [], now=T0)) == 0


def _count_round_trips(store: OnlineStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record each statement (SQLite) or each packet sent to the server (Redis)."""
    calls: list[str] = []
    if isinstance(store, SQLiteOnlineStore):
        store.connection.set_trace_callback(calls.append)
    else:
        import redis.connection

        send = redis.connection.AbstractConnection.send_packed_command

        def counting(self: Any, command: Any, check_health: bool = True) -> None:
            calls.append("send")
            send(self, command, check_health)

        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    return calls


def test_a_batch_of_100_keys_is_one_round_trip(
    online_store: OnlineStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(7)
    keys = list(range(200))
    online_store.write(SCORES, _rows(keys, [T0] * 200, [rng.random() for _ in keys]))
    online_store.read(SCORES, [(0, "s")], now=T0)  # warm up: connection, table lookup
    wanted = rng.sample(range(300), 100)
    calls = _count_round_trips(online_store, monkeypatch)
    result = online_store.read(SCORES, [(k, "s") for k in wanted], now=T0)
    assert len(calls) == 1, calls
    assert (result.status == 0).sum() == sum(k < 200 for k in wanted)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda t: t.drop_columns(["customer_id"]), r"'scores'.*'customer_id'.*at scores\."),
        (lambda t: t.drop_columns(["score"]), r"'scores'.*'score'.*at scores\.score"),
        (lambda t: t.drop_columns(["event_timestamp"]), r"'scores'.*at scores\.event_timestamp"),
        (
            lambda t: t.set_column(
                2, "event_timestamp", pa.array([datetime(2024, 1, 1)], pa.timestamp("us"))
            ),
            r"timezone-aware.*'event_timestamp'.*'scores'",
        ),
        (
            lambda t: t.set_column(3, "score", pa.array(["x"])),
            r"Expected float.*'score'.*'scores'",
        ),
    ],
)
def test_bad_rows_name_the_view_and_column(
    online_store: OnlineStore, change: Any, match: str
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        online_store.write(SCORES, change(_rows([1], [T0], [1.0])))


def test_bad_reads_name_the_view(online_store: OnlineStore) -> None:
    with pytest.raises(InvalidInputError, match=r"'scores' has no feature 'nope'.*scores\.nope"):
        online_store.read(SCORES, [(1, "s")], ["nope"], now=T0)
    with pytest.raises(InvalidInputError, match=r"2 value\(s\).*'scores'"):
        online_store.read(SCORES, [(1,)], now=T0)
    with pytest.raises(InvalidInputError, match="naive"):
        online_store.read(SCORES, [(1, "s")], now=datetime(2024, 1, 1))


def test_open_online_store_by_url(tmp_path: Any) -> None:
    store = open_online_store(f"sqlite:///{tmp_path / 'o.db'}")
    assert isinstance(store, SQLiteOnlineStore)
    store.close()
    assert issubclass(RedisOnlineStore, object)
    with pytest.raises(InvalidInputError, match="sqlite:/// or redis://"):
        open_online_store("postgresql://user:secret@host/db")
    try:
        open_online_store("mysql://user:secret@host/db")
    except InvalidInputError as err:
        assert "secret" not in str(err)


def test_get_online_features_reads_every_view_in_one_batch(
    online_store: OnlineStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    online_store.write(SCORES, _rows([1, 2], [T0, T0 - timedelta(hours=2)], [1.5, 2.5]))
    typed = pa.table(
        {
            "customer_id": [2],
            "event_timestamp": pa.array([T0], pa.timestamp("us", tz="UTC")),
            "score": [9.0],
            "visits": [3],
            "active": [True],
            "segment": ["b"],
            "seen_at": pa.array([T0], pa.timestamp("us", tz="UTC")),
        }
    )
    online_store.write(TYPED, typed)
    online_store.read_many([], now=T0)  # warm up
    online_store.read(SCORES, [(0, "s")], now=T0)
    online_store.read(TYPED, [(0,)], now=T0)
    calls = _count_round_trips(online_store, monkeypatch)
    service = FeatureService("model", features=["scores:score", "typed:visits", "typed:segment"])
    out = get_online_features(
        online_store,
        {"customer_id": [1, 2, 3], "shop": ["s", "s", "s"]},
        service,
        [SCORES, TYPED],
        now=T0,
    )
    if isinstance(online_store, RedisOnlineStore):
        assert len(calls) == 1, calls
    else:  # one query per view, in one read transaction
        assert sum(c.startswith("WITH") for c in calls) == 2, calls
    assert out.refs == service.refs()
    assert out.to_table().to_pydict() == {
        "scores:score": [1.5, None, None],
        "typed:visits": [None, 3, None],
        "typed:segment": [None, "b", None],
    }
    assert out.status["scores:score"].tolist() == [0, 1, 2]
    assert out.status["typed:visits"].tolist() == [2, 0, 2]


def test_get_online_features_names_bad_input(online_store: OnlineStore) -> None:
    with pytest.raises(InvalidInputError, match=r"join key column 'shop' of view 'scores'"):
        get_online_features(online_store, {"customer_id": [1]}, ["scores:score"], [SCORES])
    with pytest.raises(InvalidInputError, match=r"No feature view named 'nope'.*scores"):
        get_online_features(online_store, {"customer_id": [1]}, ["nope:x"], [SCORES])
    with pytest.raises(InvalidInputError, match=r"'scores' has no feature 'x'"):
        get_online_features(
            online_store, {"customer_id": [1], "shop": ["s"]}, ["scores:x"], [SCORES]
        )
