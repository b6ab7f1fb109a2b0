"""``FeatureStore``: plan/apply recorded in the metadata store, materialize, incremental.

Runs on every metadata backend (``settings``) and, for materialization, every online
backend (``online_store``). The online answer is checked against the offline one: the
point-in-time join at ``end - 1µs`` is the oracle.
"""

from __future__ import annotations

import itertools
import math
import random
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from modelyard.config import Settings
from modelyard.errors import InvalidInputError, NotFoundError
from modelyard.features.online import FeatureStatus, OnlineStore
from modelyard.features.repo import canonical_json, decode_definition, load_definitions
from modelyard.features.store import FeatureStore

SEED = 20131
T0 = datetime(2013, 1, 1, tzinfo=UTC)
US = timedelta(microseconds=1)
_examples = itertools.count()

FEATURES = """\
from datetime import timedelta
from modelyard.features import Entity, Feature, FeatureService, FeatureView, FileSource

carrier = Entity("carrier", join_keys=["carrier"])
flights = FileSource("data/flights.parquet", timestamp_field="ts",
                     created_timestamp_field="created")
delays = FeatureView("delays", entities=[carrier], source=flights,
                     features=[Feature("delay", "float"), Feature("n", "int")]{ttl})
{extra}
model = FeatureService("model", features=[delays])
"""


def _frame(seed: int = SEED, rows: int = 200) -> pd.DataFrame:
    rng = random.Random(seed)
    ts = [T0 + timedelta(hours=rng.randrange(0, 24 * 20)) for _ in range(rows)]
    return pd.DataFrame(
        {
            "carrier": [rng.choice(["AA", "UA", "DL", "B6", "WN"]) for _ in range(rows)],
            "ts": pd.to_datetime(ts, utc=True),
            "created": pd.to_datetime(
                [t + timedelta(minutes=rng.randrange(0, 90)) for t in ts], utc=True
            ),
            "delay": [rng.choice([rng.uniform(-10, 60), math.nan]) for _ in range(rows)],
            "n": [rng.randrange(0, 100) for _ in range(rows)],
        }
    )


def _write_source(root: Path, frame: pd.DataFrame) -> None:
    (root / "data").mkdir(exist_ok=True)
    frame.to_parquet(root / "data" / "flights.parquet", index=False)


def _write_features(root: Path, ttl: str = "", extra: str = "") -> None:
    text = FEATURES.format(ttl=f", ttl={ttl}" if ttl else "", extra=textwrap.dedent(extra))
    (root / "features.py").write_text(text)


@pytest.fixture
def project(settings: Settings) -> Path:
    root = settings.project_dir
    _write_source(root, _frame())
    _write_features(root)
    return root


@pytest.fixture
def store(settings: Settings, project: Path) -> Any:
    s = FeatureStore(settings)
    yield s
    s.close()


def _actions(plan: Any) -> list[tuple[str, str, str]]:
    return [(c.kind, c.name, c.action) for c in plan.changes]


# -- plan and apply ----------------------------------------------------------------------


def test_plan_shows_added_changed_and_removed(store: FeatureStore, project: Path) -> None:
    assert _actions(store.plan()) == [
        ("entity", "carrier", "add"),
        ("view", "delays", "add"),
        ("service", "model", "add"),
    ]
    store.apply()
    assert [c.action for c in store.plan().changes] == ["unchanged"] * 3
    _write_features(project, ttl="timedelta(hours=6)", extra="")
    assert _actions(store.plan()) == [
        ("entity", "carrier", "unchanged"),
        ("view", "delays", "change"),
        ("service", "model", "unchanged"),
    ]
    (project / "features.py").write_text(
        "from modelyard.features import Entity\ncarrier = Entity('carrier', ['carrier'])\n"
    )
    plan = store.plan()
    assert _actions(plan) == [
        ("entity", "carrier", "unchanged"),
        ("service", "model", "remove"),
        ("view", "delays", "remove"),
    ]
    assert [c.name for c in plan.pending] == ["model", "delays"]


def test_apply_records_versions_and_removes_a_deleted_view(
    store: FeatureStore, project: Path
) -> None:
    store.apply()
    first = store.applied("view", "delays")
    assert first.version == 1
    assert store.get_view("delays").ttl is None
    assert store.apply().pending == []  # nothing changed: no new version
    assert store.applied("view", "delays").version == 1

    _write_features(project, ttl="timedelta(hours=6)")
    plan = store.apply()
    changed = next(c for c in plan.pending if c.name == "delays")
    assert (changed.action, changed.version_from, changed.version_to) == ("change", 1, 2)
    second = store.applied("view", "delays")
    assert second.version == 2 and second.sha256 != first.sha256
    assert store.get_view("delays").ttl == timedelta(hours=6)
    # the stored definition is the canonical JSON of the code's view
    code = load_definitions(project, ["features"]).views["delays"]
    assert second.definition == canonical_json(code)
    assert decode_definition("view", second.definition) == code

    (project / "features.py").write_text(
        "from modelyard.features import Entity\ncarrier = Entity('carrier', ['carrier'])\n"
    )
    store.apply()
    assert store.list_views() == []
    with pytest.raises(NotFoundError, match=r"No applied feature view named 'delays'"):
        store.get_view("delays")
    # bringing it back continues the version numbers
    _write_features(project)
    store.apply()
    assert store.applied("view", "delays").version == 3


def test_relative_file_sources_resolve_against_the_project(
    store: FeatureStore, project: Path
) -> None:
    store.apply()
    source = store.get_view("delays").source
    assert source.path == str(project / "data" / "flights.parquet")
    # the stored definition keeps the path as written, so moving the project changes nothing
    assert "data/flights.parquet" in store.applied("view", "delays").definition


def test_get_view_suggests_a_close_name(store: FeatureStore) -> None:
    store.apply()
    with pytest.raises(NotFoundError, match=r"Did you mean 'delays'\?"):
        store.get_view("delay")


def test_a_missing_column_names_the_view_and_the_column(store: FeatureStore, project: Path) -> None:
    _write_source(project, _frame().drop(columns=["n"]))
    with pytest.raises(InvalidInputError, match=r"- delays\.n: expected a int column, got no such"):
        store.apply()
    assert store.list_views() == []  # nothing recorded


def test_a_wrong_type_names_the_view_and_the_column(store: FeatureStore, project: Path) -> None:
    _write_source(project, _frame().assign(n=lambda f: f["n"].astype(str)))
    with pytest.raises(InvalidInputError, match=r"- delays\.n: expected int values, got VARCHAR"):
        store.apply()


def test_naive_timestamps_name_the_view_and_the_column(store: FeatureStore, project: Path) -> None:
    frame = _frame()
    frame["ts"] = frame["ts"].dt.tz_localize(None)
    _write_source(project, frame)
    with pytest.raises(
        InvalidInputError,
        match=r"- delays\.ts: expected timezone-aware timestamps, got TIMESTAMP",
    ) as info:
        store.apply()
    assert [p.loc for p in info.value.problems] == ["delays.ts"]


def test_a_missing_timestamp_column_names_the_view(store: FeatureStore, project: Path) -> None:
    _write_source(project, _frame().drop(columns=["created"]))
    with pytest.raises(InvalidInputError, match=r"- delays\.created: expected a timezone-aware"):
        store.apply()


def test_a_service_ref_to_an_unknown_feature_is_refused(store: FeatureStore, project: Path) -> None:
    _write_features(project, extra='bad = FeatureService("bad", features=["delays:nope"])\n')
    with pytest.raises(InvalidInputError, match=r"Service 'bad' refers to 'delays:nope'"):
        store.apply()


def test_a_missing_features_module_is_not_found(store: FeatureStore, project: Path) -> None:
    (project / "features.py").unlink()
    with pytest.raises(NotFoundError, match=r"No feature definitions module 'features'"):
        store.plan()


def test_an_error_in_the_module_names_its_file(store: FeatureStore, project: Path) -> None:
    (project / "features.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(InvalidInputError, match=r"features\.py failed: RuntimeError: boom"):
        store.plan()


# -- materialize -------------------------------------------------------------------------


def _oracle(store: FeatureStore, frame: pd.DataFrame, end: datetime) -> dict[str, Any]:
    carriers = sorted(set(frame["carrier"]))
    entities = pd.DataFrame(
        {"carrier": carriers, "event_timestamp": pd.to_datetime([end - US] * len(carriers))}
    )
    out = store.get_historical_features(entities, ["delays:delay", "delays:n"])
    return {
        row.carrier: (_clean(row.delay), None if pd.isna(row.n) else int(row.n))
        for row in out.itertuples()
    }


def _clean(value: Any) -> Any:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def _online(store: FeatureStore, carriers: list[str], end: datetime) -> dict[str, Any]:
    got = store.get_online_features({"carrier": carriers}, "model", now=end - US)
    delays = got.values["delays:delay"].to_pylist()
    ns = got.values["delays:n"].to_pylist()
    return {c: (_clean(d), n) for c, d, n in zip(carriers, delays, ns, strict=True)}


@pytest.fixture
def served(settings: Settings, project: Path, online_store: OnlineStore) -> Any:
    s = FeatureStore(settings, online_store=online_store)
    yield s
    s.close()


@pytest.mark.parametrize("ttl", ["", "timedelta(hours=30)"])
def test_materialize_matches_the_offline_answer_at_end(
    served: FeatureStore, project: Path, ttl: str
) -> None:
    _write_features(project, ttl=ttl)
    served.apply()
    frame = _frame()
    carriers = [*sorted(set(frame["carrier"])), "XX"]
    for end in (T0 + timedelta(days=3, hours=5), T0 + timedelta(days=30)):
        results = served.materialize(None, end)
        assert [r.view for r in results] == ["delays"]
        expected = _oracle(served, frame, end) | {"XX": (None, None)}
        assert _online(served, carriers, end) == expected, f"seed {SEED}, end {end}"


def test_materialize_twice_and_out_of_order_converges(served: FeatureStore, project: Path) -> None:
    served.apply()
    frame = _frame()
    carriers = sorted(set(frame["carrier"]))
    late, early = T0 + timedelta(days=15), T0 + timedelta(days=4)
    served.materialize(None, late)
    served.materialize(None, late)
    served.materialize(T0, early)  # older values never overwrite newer ones
    assert _online(served, carriers, late) == _oracle(served, frame, late)
    history = served.materializations("delays")
    assert [(r.start, r.end) for r in history] == [(None, late), (None, late), (T0, early)]
    assert history[0].rows == len(carriers)


def test_materialize_streams_in_batches(
    served: FeatureStore, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelyard.features import materialize

    monkeypatch.setattr(materialize, "BATCH_ROWS", 2)
    served.apply()
    seen: list[tuple[str, int]] = []
    [result] = served.materialize(
        None, T0 + timedelta(days=30), progress=lambda v, n: seen.append((v, n))
    )
    # at most 2 rows a batch (DuckDB may hand out smaller ones), progress counts up to 5
    counts = [n for _, n in seen]
    assert {v for v, _ in seen} == {"delays"} and counts[-1] == 5 and len(counts) >= 3
    assert all(0 < b - a <= 2 for a, b in zip([0, *counts], counts, strict=False))
    assert result.rows == 5


def test_materialize_refuses_a_backwards_window(store: FeatureStore) -> None:
    store.apply()
    with pytest.raises(InvalidInputError, match=r"Expected start before end"):
        store.materialize(T0 + timedelta(days=2), T0)
    with pytest.raises(InvalidInputError, match=r"Expected a timezone-aware time"):
        store.materialize(None, datetime(2013, 1, 2))


def test_incremental_picks_up_a_late_arriving_row(served: FeatureStore, project: Path) -> None:
    base = pd.DataFrame(
        {
            "carrier": ["AA", "UA"],
            "ts": pd.to_datetime([T0, T0 + timedelta(hours=1)], utc=True),
            "created": pd.to_datetime([T0, T0 + timedelta(hours=1)], utc=True),
            "delay": [1.0, 2.0],
            "n": [1, 2],
        }
    )
    _write_source(project, base)
    served.apply()
    end = T0 + timedelta(days=2)
    [first] = served.materialize_incremental(end)
    assert (first.rows, first.watermark) == (2, T0 + timedelta(hours=1))
    assert _online(served, ["AA", "UA"], end) == {"AA": (1.0, 1), "UA": (2.0, 2)}

    # a backfill: AA's newer event arrives a day late, after the watermark
    late = pd.DataFrame(
        {
            "carrier": ["AA"],
            "ts": pd.to_datetime([T0 + timedelta(hours=3)], utc=True),
            "created": pd.to_datetime([T0 + timedelta(days=1)], utc=True),
            "delay": [9.0],
            "n": [9],
        }
    )
    _write_source(project, pd.concat([base, late], ignore_index=True))
    [second] = served.materialize_incremental(end)
    assert (second.rows, second.watermark) == (1, T0 + timedelta(days=1))
    assert _online(served, ["AA", "UA"], end) == {"AA": (9.0, 9), "UA": (2.0, 2)}
    # nothing new: no rows, the watermark stays
    [third] = served.materialize_incremental(end)
    assert (third.rows, third.watermark) == (0, T0 + timedelta(days=1))


def test_get_online_features_reports_missing_status(served: FeatureStore) -> None:
    served.apply()
    end = T0 + timedelta(days=30)
    served.materialize(None, end)
    got = served.get_online_features({"carrier": ["AA", "ZZ"]}, ["delays:n"], now=end)
    assert got.status["delays:n"].tolist() == [FeatureStatus.PRESENT, FeatureStatus.MISSING]


AGGREGATES = """
from modelyard.features import Aggregation
totals = FeatureView(
    "totals", entities=[carrier], source=flights, features=[Feature("delay", "float")],
    aggregations=[Aggregation("n", "sum", "1d"), Aggregation("n", "count", "2d"),
                  Aggregation("n", "mean", "12h"), Aggregation("n", "max", "3d"),
                  Aggregation("n", "last", "1d"), Aggregation("delay", "std", "2d")],
)
"""


def _agg_oracle(store: FeatureStore, carriers: list[str], end: datetime) -> list[list[Any]]:
    view = store.get_view("totals")
    entities = pd.DataFrame(
        {"carrier": carriers, "event_timestamp": pd.to_datetime([end - US] * len(carriers))}
    )
    out = store.get_historical_features(entities, [view])
    return [[_clean(out[name][i]) for name in view.feature_names] for i in range(len(carriers))]


def _agg_online(store: FeatureStore, carriers: list[str], end: datetime) -> list[list[Any]]:
    view = store.get_view("totals")
    refs = [f"totals:{n}" for n in view.feature_names]
    got = store.get_online_features({"carrier": carriers}, refs, now=end - US)
    return [[_clean(got.values[r][i].as_py()) for r in refs] for i in range(len(carriers))]


def _close(a: list[list[Any]], b: list[list[Any]]) -> bool:
    return all(
        (x is None and y is None)
        or (x is not None and y is not None and math.isclose(x, y, rel_tol=1e-9))
        for ra, rb in zip(a, b, strict=True)
        for x, y in zip(ra, rb, strict=True)
    )


def test_materialized_aggregations_match_the_offline_answer(
    served: FeatureStore, project: Path
) -> None:
    _write_features(project, extra=AGGREGATES)
    served.apply()
    carriers = sorted(set(_frame()["carrier"]))
    early, late = T0 + timedelta(days=4, hours=7), T0 + timedelta(days=9, hours=2)
    for end in (early, late):
        served.materialize(None, end, views=["totals"])
        online, offline = _agg_online(served, carriers, end), _agg_oracle(served, carriers, end)
        assert _close(online, offline), f"seed {SEED}, end {end}: {online} != {offline}"
    # an older run never overwrites the newer values
    served.materialize(None, early, views=["totals"])
    assert _close(_agg_online(served, carriers, late), _agg_oracle(served, carriers, late))
    # the window slides with no new rows: incremental recomputes the aggregations
    gap = T0 + timedelta(days=40)
    served.materialize_incremental(gap, views=["totals"])
    assert _close(_agg_online(served, carriers, gap), _agg_oracle(served, carriers, gap))
    assert [row[2] for row in _agg_online(served, carriers, gap)] == [0] * len(carriers)


# -- skew --------------------------------------------------------------------------------


def test_check_skew_is_clean_after_materialize_and_finds_a_changed_source(
    served: FeatureStore, project: Path
) -> None:
    served.apply()
    [never] = served.check_skew()
    assert (never.ok, never.as_of) == (False, None)
    end = T0 + timedelta(days=10)
    served.materialize(None, end)
    [report] = served.check_skew()
    assert report.ok, report.examples
    assert (report.as_of, report.entities) == (end, 5)
    # the source changes after materialization: one carrier's latest delay differs
    frame = _frame()
    latest = frame[frame["ts"] < end].sort_values(["ts", "created"]).groupby("carrier").tail(1)
    row = latest.index[latest["carrier"] == "AA"][0]
    frame.loc[row, ["delay", "n"]] = [123.0, 77]
    _write_source(project, frame)
    [report] = served.check_skew(sample=3)
    assert not report.ok and report.entities == 3
    assert report.mismatches == {"delay": 1, "n": 1}
    assert {e["key"][0] for e in report.examples} == {"AA"}
    with pytest.raises(InvalidInputError, match=r"Expected a sample of at least 1, got 0"):
        served.check_skew(sample=0)


def test_incremental_never_loses_a_row_whose_event_was_after_an_earlier_end(
    served: FeatureStore, project: Path
) -> None:
    # AA's row was created at 05:00 for an event at 10:00 (a schedule); UA's at 07:00.
    # A run to 08:00 leaves AA's row out (its event is after the end); the next run
    # must still take it although it was created before the first run's watermark.
    hours = [T0 + timedelta(hours=h) for h in (10, 5, 7, 7)]
    frame = pd.DataFrame(
        {
            "carrier": ["AA", "UA"],
            "ts": pd.to_datetime(hours[0::2], utc=True),
            "created": pd.to_datetime(hours[1::2], utc=True),
            "delay": [1.0, 2.0],
            "n": [1, 2],
        }
    )
    _write_source(project, frame)
    served.apply()
    [first] = served.materialize_incremental(T0 + timedelta(hours=8))
    assert (first.rows, first.watermark) == (1, T0 + timedelta(hours=7))
    end = T0 + timedelta(hours=12)
    [second] = served.materialize_incremental(end)
    assert second.rows == 1
    assert _online(served, ["AA", "UA"], end) == {"AA": (1.0, 1), "UA": (2.0, 2)}


@settings(
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@seed(20240105)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["AA", "UA", "DL"]),
            st.integers(0, 10),
            st.one_of(st.none(), st.integers(-4, 4)),
        ),
        min_size=1,
        max_size=10,
    ),
    ends=st.lists(st.integers(1, 16), max_size=4),
)
def test_incremental_runs_in_any_order_end_with_every_row(
    served: FeatureStore, project: Path, rows: list[tuple[str, int, int | None]], ends: list[int]
) -> None:
    """Whatever the ends of the incremental runs (and created before or after the event),
    a final run past every row leaves each entity's newest event online."""
    events = [T0 + timedelta(hours=e) for _, e, _ in rows]
    created = [
        None if d is None else t + timedelta(hours=d)
        for t, (_, _, d) in zip(events, rows, strict=True)
    ]
    frame = pd.DataFrame(
        {
            "carrier": [k for k, _, _ in rows],
            "ts": pd.Series(events, dtype="datetime64[us, UTC]"),
            "created": pd.Series(created, dtype="datetime64[us, UTC]"),
            "delay": [float(i) for i in range(len(rows))],
            "n": list(range(len(rows))),
        }
    )
    _write_source(project, frame)
    view = f"delays_{next(_examples)}"  # a fresh view (its own watermark) per example
    (project / "features.py").write_text(
        FEATURES.format(ttl="", extra="").replace('"delays"', f'"{view}"')
    )
    served.apply()
    for end in [*ends, 30]:
        served.materialize_incremental(T0 + timedelta(hours=end), views=[view])
    final = T0 + timedelta(hours=30)
    keys = sorted({k for k, _, _ in rows})
    got = served.online_store.read(served.get_view(view), [(k,) for k in keys], now=final)
    newest = {
        k: max(t for (kk, _, _), t in zip(rows, events, strict=True) if kk == k) for k in keys
    }
    assert got.event_timestamp.to_pylist() == [newest[k] for k in keys]
