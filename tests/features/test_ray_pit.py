"""The feature layer's backfills on a real two-node Ray cluster.

Training sets with ``engine="ray"`` (entity rows partitioned by a stable hash of their
entity key, each partition an exact DuckDB join) are compared with the single-process
join on generated entity frames: duplicate keys and rows, null keys and times, times in
other zones (mixed offsets too), a shuffled and repeated index, labels, several views
(a composite key, aggregations, strings and booleans), on-demand features and
``as_served``. Materialization by partition is compared with the local run, store row by
store row, including windows written newest first; the out-of-order partitions are also
checked without a cluster on generated sources.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, seed
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from modelyard.cli.app import main
from modelyard.config import Settings, init_project, load_settings
from modelyard.errors import InvalidInputError
from modelyard.features.definitions import Entity, Feature, FeatureView, FileSource
from modelyard.features.materialize import Partition, Window, materialize_view
from modelyard.features.online import SQLiteOnlineStore
from modelyard.features.partitioned import partition_rows
from modelyard.features.store import FeatureStore

T0 = datetime(2013, 1, 1, tzinfo=UTC)
CARRIERS = ["AA", "UA", "DL", "B6", "WN"]
ORIGINS = ["JFK", "EWR", "LGA"]

FEATURES = """\
from datetime import timedelta
from modelyard.features import (Aggregation, Entity, Feature, FeatureService, FeatureView,
                                FileSource, on_demand_feature_view)

carrier = Entity("carrier", join_keys=["carrier"])
route = Entity("route", join_keys=["carrier", "origin"])
flights = FileSource("data/flights.parquet", timestamp_field="ts",
                     created_timestamp_field="created")
delays = FeatureView("delays", entities=[carrier], source=flights,
                     features=[Feature("delay", "float"), Feature("n", "int")],
                     ttl=timedelta(hours=30))
busy = FeatureView("busy", entities=[carrier], source=flights,
                   aggregations=[Aggregation("n", "sum", "2d"), Aggregation("delay", "last", "1d")])
gates = FeatureView("gates", entities=[route],
                    source=FileSource("data/gates.parquet", "ts", "created"),
                    features=[Feature("gate", "string"), Feature("open", "bool")])

@on_demand_feature_view(inputs=["delays:delay", "delays:n"],
                        request=[Feature("minutes_late", "float")],
                        features=[Feature("ratio", "float")])
def ratios(x):
    return {"ratio": (x["delay"] + x["minutes_late"]) / (x["n"] + 1)}

model = FeatureService("model", features=[delays, gates])
"""

REFS = [
    "delays:delay",
    "delays:n",
    "busy:n_sum_2d",
    "busy:delay_last_1d",
    "gates:gate",
    "gates:open",
    "ratios:ratio",
]


def _sources(root: Path) -> None:
    rng = random.Random(2013)
    rows = 400
    ts = [T0 + timedelta(hours=rng.randrange(0, 24 * 20)) for _ in range(rows)]
    flights = pd.DataFrame(
        {
            "carrier": [rng.choice(CARRIERS) for _ in range(rows)],
            "ts": pd.to_datetime(ts, utc=True),
            "created": pd.to_datetime(
                [t + timedelta(minutes=rng.randrange(-30, 90)) for t in ts], utc=True
            ),
            "delay": [rng.choice([rng.uniform(-10, 60), None]) for _ in range(rows)],
            "n": [rng.randrange(0, 100) for _ in range(rows)],
        }
    )
    ts = [T0 + timedelta(hours=rng.randrange(0, 24 * 20)) for _ in range(150)]
    gates = pd.DataFrame(
        {
            "carrier": [rng.choice(CARRIERS) for _ in range(150)],
            "origin": [rng.choice(ORIGINS) for _ in range(150)],
            "ts": pd.to_datetime(ts, utc=True),
            "created": pd.to_datetime(ts, utc=True),
            "gate": [rng.choice(["A1", "B2", None]) for _ in range(150)],
            "open": pd.array([rng.choice([True, False, None]) for _ in range(150)], "boolean"),
        }
    )
    (root / "data").mkdir()
    flights.to_parquet(root / "data" / "flights.parquet", index=False)
    gates.to_parquet(root / "data" / "gates.parquet", index=False)
    (root / "features.py").write_text(textwrap.dedent(FEATURES))


@pytest.fixture(scope="module")
def base_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ray-features") / "project"
    init_project(root)
    _sources(root)
    with FeatureStore(load_settings(root, environ={})) as store:
        store.apply()
    return root


def _settings(root: Path, ray_address: str) -> Settings:
    settings = load_settings(root, environ={})
    return msgspec.structs.replace(
        settings, ray=msgspec.structs.replace(settings.ray, address=ray_address)
    )


@pytest.fixture(scope="module")
def store(base_root: Path, ray_address: str) -> Any:
    with FeatureStore(_settings(base_root, ray_address)) as opened:
        yield opened


# -- training sets -----------------------------------------------------------------------

ZONES = ["UTC", "America/New_York", "Asia/Kolkata", "mixed", "naive"]


@st.composite
def entity_frames(draw: st.DrawFn) -> tuple[pd.DataFrame, str]:
    n = draw(st.integers(1, 40))
    carriers = draw(st.lists(st.sampled_from([*CARRIERS, "ZZ", None]), min_size=n, max_size=n))
    origins = draw(st.lists(st.sampled_from([*ORIGINS, None]), min_size=n, max_size=n))
    hours = draw(st.lists(st.none() | st.integers(0, 24 * 22), min_size=n, max_size=n))
    zone = draw(st.sampled_from(ZONES))
    instants = [None if h is None else T0 + timedelta(hours=h, minutes=7) for h in hours]
    if zone == "mixed":  # aware datetimes with different offsets: an object column
        offsets = [timezone_of(i) for i in range(n)]
        times: Any = pd.Series(
            [
                None if t is None else t.astimezone(z)
                for t, z in zip(instants, offsets, strict=True)
            ],
            dtype=object,
        )
    else:
        times = pd.Series(pd.to_datetime(instants, utc=True))
        if zone == "naive":
            times = times.dt.tz_localize(None)
        elif zone != "UTC":
            times = times.dt.tz_convert(zone)
    index = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    frame = pd.DataFrame(
        {
            "carrier": pd.Series(carriers, dtype=object),
            "origin": pd.Series(origins, dtype=object),
            "event_timestamp": times,
            "minutes_late": draw(st.lists(st.floats(-5, 50), min_size=n, max_size=n)),
            "label": draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)),
        }
    )
    frame.index = pd.Index(index, name="i")
    return frame, zone


def timezone_of(i: int) -> timezone:
    return timezone(timedelta(hours=(i % 5) - 2))


@seed(20131)
@hsettings(
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    case=entity_frames(),
    refs=st.lists(st.sampled_from(REFS), min_size=1, max_size=4, unique=True),
    partitions=st.sampled_from([2, 3, 5]),
    full=st.booleans(),
)
@pytest.mark.ray
def test_partitioned_join_equals_the_single_process_join(
    store: FeatureStore,
    case: tuple[pd.DataFrame, str],
    refs: list[str],
    partitions: int,
    full: bool,
) -> None:
    frame, zone = case
    options = {"full_feature_names": full, "assume_utc": zone == "naive"}
    expected = store.get_historical_features(frame, refs, engine="local", **options)
    got = store.get_historical_features(frame, refs, engine="ray", partitions=partitions, **options)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    pd.testing.assert_frame_equal(got[frame.columns], frame, check_exact=True)


@pytest.mark.ray
def test_as_served_a_service_and_the_default_partition_count(store: FeatureStore) -> None:
    rng = random.Random(5)
    frame = pd.DataFrame(
        {
            "carrier": [rng.choice(CARRIERS) for _ in range(300)],
            "origin": [rng.choice(ORIGINS) for _ in range(300)],
            "event_timestamp": pd.to_datetime(
                [T0 + timedelta(minutes=rng.randrange(0, 60 * 24 * 22)) for _ in range(300)],
                utc=True,
            ),
        }
    )
    for kwargs in ({"as_served": True}, {}):
        expected = store.get_historical_features(frame, "model", engine="local", **kwargs)
        got = store.get_historical_features(frame, "model", engine="ray", **kwargs)
        pd.testing.assert_frame_equal(got, expected, check_exact=True)
        assert expected["delay"].notna().sum() > 100  # the join found rows


@pytest.mark.ray
def test_bad_input_is_the_local_error(store: FeatureStore) -> None:
    frame = pd.DataFrame(
        {"carrier": ["AA", "UA"], "event_timestamp": pd.to_datetime(["2013-01-02"] * 2)}
    )
    for engine in ("local", "ray"):
        with pytest.raises(InvalidInputError, match="naive") as info:
            store.get_historical_features(frame, ["delays:delay"], engine=engine, partitions=2)
        assert info.value.loc == "entity_df.event_timestamp"
    ints = frame.assign(carrier=[1, 2], event_timestamp=frame.event_timestamp.dt.tz_localize("UTC"))
    with pytest.raises(InvalidInputError, match="join key") as info:
        store.get_historical_features(ints, ["delays:delay"], engine="ray", partitions=2)
    assert info.value.loc == "entity_df.carrier"
    with pytest.raises(InvalidInputError, match="local or ray"):
        store.get_historical_features(frame, ["delays:delay"], engine="spark")
    with pytest.raises(InvalidInputError, match="partitions"):
        store.get_historical_features(frame, ["delays:delay"], engine="ray", partitions=0)


def test_partitions_are_a_stable_hash_of_the_key() -> None:
    frame = pd.DataFrame({"a": ["x", "y", "x", None, "z"] * 20, "b": [1, 2, 1, 3, 4] * 20})
    parts = partition_rows(frame, ["a", "b"], 4)
    # equal keys together; fixed values (SipHash with pandas' fixed key, not hash())
    for key, group in frame.groupby(["a", "b"], dropna=False).groups.items():
        assert len(set(parts[list(group)])) == 1, key
    assert parts[:5].tolist() == partition_rows(frame.head(5), ["a", "b"], 4).tolist()
    assert len(set(parts.tolist())) > 1


# -- materialization ---------------------------------------------------------------------


def _online_rows(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    path = settings.features.online_store.removeprefix("sqlite:///")
    con = sqlite3.connect(path)
    try:
        names = [
            r[0]
            for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'fv_%'"
            )
        ]
        return {n: sorted(con.execute(f'SELECT * FROM "{n}"').fetchall(), key=repr) for n in names}
    finally:
        con.close()


@pytest.fixture
def copies(base_root: Path, tmp_path: Path, ray_address: str) -> Callable[[], list[Settings]]:
    def make() -> list[Settings]:
        out = []
        for name in ("local", "ray"):
            shutil.copytree(base_root, tmp_path / name)
            out.append(_settings(tmp_path / name, ray_address))
        return out

    return make


def _records(store: FeatureStore) -> list[tuple[Any, ...]]:
    return [
        (m.view, m.rows, m.start, m.end, m.watermark)
        for view in ("busy", "delays", "gates")
        for m in store.materializations(view)
    ]


@pytest.mark.ray
def test_materialize_on_ray_writes_what_local_writes(
    copies: Callable[[], list[Settings]],
) -> None:
    local, ray = copies()
    mid, end = T0 + timedelta(days=9), T0 + timedelta(days=21)
    with FeatureStore(local) as one, FeatureStore(ray) as other:
        seen: list[tuple[str, int]] = []

        def note(view: str, rows: int) -> None:
            seen.append((view, rows))

        # newest first, then an older window: the older values never replace newer ones
        for start, stop in ((mid, end), (None, mid)):
            a = one.materialize(start, stop, engine="local")
            seen.clear()
            b = other.materialize(start, stop, engine="ray", progress=note)
            assert [(r.view, r.rows, r.watermark) for r in b] == [
                (r.view, r.rows, r.watermark) for r in a
            ]
            assert seen and {v for v, _ in seen} == {r.view for r in b}
        assert _online_rows(ray) == _online_rows(local)
        assert sum(len(v) for v in _online_rows(ray).values()) > 10
        stamp = T0 + timedelta(days=12)
        a = one.materialize_incremental(stamp, engine="local")
        b = other.materialize_incremental(stamp, engine="ray")
        assert [(r.view, r.rows, r.watermark) for r in b] == [
            (r.view, r.rows, r.watermark) for r in a
        ]
        assert _online_rows(ray) == _online_rows(local)
        assert len(_records(other)) == len(_records(one)) == 9


@pytest.mark.ray
def test_an_in_memory_online_store_is_refused(base_root: Path, ray_address: str) -> None:
    settings = _settings(base_root, ray_address)
    settings = msgspec.structs.replace(
        settings,
        features=msgspec.structs.replace(settings.features, online_store="sqlite:///:memory:"),
    )
    with FeatureStore(settings) as s, pytest.raises(InvalidInputError) as info:
        s.materialize(None, T0 + timedelta(days=3), ["delays"], engine="ray")
    assert info.value.loc == "features.online_store"


# -- out-of-order partitions, no cluster -------------------------------------------------


@st.composite
def sources(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(0, 30))
    ts = draw(st.lists(st.integers(0, 20), min_size=n, max_size=n))
    return pd.DataFrame(
        {
            "k": draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=n, max_size=n)),
            "j": draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)),
            "ts": pd.Series([T0 + timedelta(hours=h) for h in ts], dtype="datetime64[us, UTC]"),
            "created": pd.Series(
                [
                    T0 + timedelta(hours=h, minutes=m)
                    for h, m in zip(
                        ts,
                        draw(st.lists(st.integers(-60, 60), min_size=n, max_size=n)),
                        strict=True,
                    )
                ],
                dtype="datetime64[us, UTC]",
            ),
            "v": pd.Series(
                draw(st.lists(st.integers(0, 9), min_size=n, max_size=n)), dtype="int64"
            ),
        }
    )


def _dump(store: SQLiteOnlineStore) -> list[tuple[Any, ...]]:
    try:
        rows = store.connection.execute('SELECT * FROM "fv_v"').fetchall()
    except sqlite3.OperationalError:
        return []
    return sorted(rows, key=repr)


@seed(7)
@hsettings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    source=sources(),
    count=st.integers(2, 4),
    cut=st.integers(1, 19),
    order=st.randoms(use_true_random=False),
)
def test_partitions_in_any_order_and_older_windows_last_equal_one_run(
    tmp_path_factory: pytest.TempPathFactory,
    source: pd.DataFrame,
    count: int,
    cut: int,
    order: random.Random,
) -> None:
    folder = tmp_path_factory.mktemp("parts")
    source.to_parquet(folder / "s.parquet", index=False)
    view = FeatureView(
        "v",
        entities=[Entity("kj", ["k", "j"])],
        source=FileSource(str(folder / "s.parquet"), "ts", "created"),
        features=[Feature("v", "int")],
    )
    end = (T0 + timedelta(hours=21)).timestamp()
    end_us, cut_us = int(end * 1e6), int((T0 + timedelta(hours=cut)).timestamp() * 1e6)
    whole = SQLiteOnlineStore(f"sqlite:///{folder / 'whole.db'}")
    parts = SQLiteOnlineStore(f"sqlite:///{folder / 'parts.db'}")
    try:
        rows, mark = materialize_view(view, Window(None, end_us, None), whole)
        runs = [
            (Partition(i, count), window)
            for i in range(count)
            for window in (Window(cut_us, end_us, None), Window(None, cut_us, None))
        ]
        order.shuffle(runs)
        marks = []
        for partition, window in runs:
            _, m = materialize_view(view, window, parts, partition=partition)
            marks.append(m)
        assert _dump(parts) == _dump(whole)
        split = [
            materialize_view(view, Window(None, end_us, None), parts, partition=Partition(i, count))
            for i in range(count)
        ]
        assert sum(r for r, _ in split) == rows
        assert max((m for _, m in split if m is not None), default=None) == mark
    finally:
        whole.close()
        parts.close()
    assert np.all(np.isin(partition_rows(source, ["k", "j"], count), range(count)))


@pytest.mark.ray
def test_cli_historical_and_materialize_take_engine(
    copies: Callable[[], list[Settings]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local, ray = copies()
    frame = pd.DataFrame(
        {
            "carrier": CARRIERS * 8,
            "origin": ORIGINS * 13 + ["JFK"],
            "event_timestamp": pd.to_datetime(
                [T0 + timedelta(hours=11 * i) for i in range(40)], utc=True
            ),
        }
    )
    tables = []
    for settings, engine in ((local, "local"), (ray, "ray")):
        monkeypatch.chdir(settings.project_dir)
        monkeypatch.setenv("RAY_ADDRESS", settings.ray.address or "")
        frame.to_parquet("entities.parquet")
        args = ["features", "historical", "entities.parquet", "--out", "out.parquet"]
        assert main([*args, "--service", "model", "--engine", engine]) == 0
        stop = "--end=2013-01-15T00:00:00+00:00"
        assert main(["features", "materialize", stop, "--engine", engine, "--json"]) == 0
        tables.append(pd.read_parquet("out.parquet"))
    pd.testing.assert_frame_equal(tables[1], tables[0], check_exact=True)
    assert _online_rows(ray) == _online_rows(local)
    capsys.readouterr()
    assert main(["features", "materialize", "--engine", "spark"]) == 2
    err = capsys.readouterr().err
    assert "--engine" in err and "local or ray" in err and "Traceback" not in err
