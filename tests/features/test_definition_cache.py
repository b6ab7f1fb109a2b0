"""The FeatureStore's cache of applied definitions: same answers, bounded staleness, no mix.

Every case runs on a real metadata store (SQLite, PostgreSQL) and, where values are read,
a real online store (SQLite, Redis). Two definition sets share a metadata store: A (no
ttl; the service asks for ``delay``) and B (ttl one hour; the service asks for ``delay``
and ``n``). At ``NOW`` (a day after the rows' event time) A serves every found row as
present and B as stale, so an answer tells which set it came from, and an answer that
mixes a service of one set with a view of the other shows itself.
"""

from __future__ import annotations

import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelyard.config import FeaturesSettings, Settings, init_project, load_settings
from modelyard.errors import InvalidInputError
from modelyard.features.online import FeatureStatus, OnlineStore
from modelyard.features.online import get_online_features as bare_online
from modelyard.features.repo import load_definitions, resolve_view
from modelyard.features.store import FeatureStore

T0 = datetime(2024, 1, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=1)
CARRIERS = ["AA", "UA", "DL", "B6"]  # B6 is never written: missing
WRITTEN = {"AA": (1.5, 10), "UA": (None, 20), "DL": (-3.25, 30)}

FEATURES = """\
from datetime import timedelta
from modelyard.features import Entity, Feature, FeatureService, FeatureView, FileSource

carrier = Entity("carrier", join_keys=["carrier"])
source = FileSource({path!r}, timestamp_field="ts")
delays = FeatureView("delays", entities=[carrier], source=source,
                     features=[Feature("delay", "float"), Feature("n", "int")]{ttl})
model = FeatureService("model", features={service})
{extra}
"""
A = {"ttl": "", "service": '["delays:delay"]'}
B = {"ttl": ", ttl=timedelta(hours=1)", "service": "[delays]"}


def _source(folder: Path) -> Path:
    path = folder / "flights.parquet"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        frame = pd.DataFrame(
            {
                "carrier": list(WRITTEN),
                "ts": pd.to_datetime([T0] * len(WRITTEN), utc=True),
                "delay": [v[0] for v in WRITTEN.values()],
                "n": [v[1] for v in WRITTEN.values()],
            }
        )
        frame.to_parquet(path, index=False)
    return path


def _write(root: Path, version: dict[str, str], extra: str = "") -> None:
    path = _source(root.parent / "data")
    text = FEATURES.format(path=str(path), extra=textwrap.dedent(extra), **version)
    (root / "features.py").write_text(text)


def _project(root: Path, db_url: str, version: dict[str, str], cache_s: float) -> Settings:
    init_project(root)
    _write(root, version)
    base = load_settings(root, environ={})
    features = msgspec.structs.replace(base.features, definitions_cache_s=cache_s)
    return msgspec.structs.replace(base, db_url=db_url, features=features)


def _fill(fs: FeatureStore) -> None:
    view = fs.get_view("delays")
    table = pa.table(
        {
            "carrier": list(WRITTEN),
            "event_timestamp": pa.array([T0] * len(WRITTEN), pa.timestamp("us", tz="UTC")),
            "delay": [v[0] for v in WRITTEN.values()],
            "n": [v[1] for v in WRITTEN.values()],
        }
    )
    fs.online_store.write(view, table)


def _answer(fs: FeatureStore, carriers: list[str], features: Any = "model") -> Any:
    got = fs.get_online_features({"carrier": carriers}, features, now=NOW)
    return (
        list(got.refs),
        {ref: got.values[ref].to_pylist() for ref in got.refs},
        {ref: got.status[ref].tolist() for ref in got.refs},
    )


def _which(answer: Any) -> str:
    """'A' or 'B' for a whole answer of one set (over AA, a written carrier); else fails."""
    refs, values, status = answer
    if refs == ["delays:delay"] and status["delays:delay"] == [FeatureStatus.PRESENT]:
        assert values["delays:delay"] == [1.5]
        return "A"
    if refs == ["delays:delay", "delays:n"] and all(
        s == [FeatureStatus.STALE] for s in status.values()
    ):
        assert values == {"delays:delay": [None], "delays:n": [None]}
        return "B"
    raise AssertionError(f"an answer mixing two applied definition sets: {answer}")


def _store(
    tmp_path: Path, name: str, db_url: str, version: dict[str, str], cache_s: float, **kw: Any
) -> FeatureStore:
    return FeatureStore(_project(tmp_path / name, db_url, version, cache_s), **kw)


# -- same answers ------------------------------------------------------------------------


def test_cached_answers_equal_uncached_and_bare_answers(
    tmp_path: Path, db_url: str, online_store: OnlineStore
) -> None:
    """Over generated entity sets and feature lists, before and after an apply of B."""
    cached = _store(tmp_path, "cached", db_url, A, 60.0, online_store=online_store)
    uncached = FeatureStore(
        msgspec.structs.replace(
            cached.settings,
            features=msgspec.structs.replace(cached.settings.features, definitions_cache_s=0.0),
        ),
        online_store=online_store,
    )
    root = cached.settings.project_dir

    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        carriers=st.lists(st.sampled_from(CARRIERS), min_size=0, max_size=12),
        wanted=st.sampled_from(
            ["model", ["delays:delay"], ["delays:n"], ["delays:n", "delays:delay"]]
        ),
    )
    def same(carriers: list[str], wanted: Any) -> None:
        code = load_definitions(root, ("features",))
        views = [resolve_view(v, root) for v in code.views.values()]
        features = code.services["model"] if wanted == "model" else wanted
        bare = bare_online(online_store, {"carrier": carriers}, features, views, NOW)
        oracle = (
            bare.refs,
            {r: bare.values[r].to_pylist() for r in bare.refs},
            {r: bare.status[r].tolist() for r in bare.refs},
        )
        assert _answer(cached, carriers, wanted) == oracle
        assert _answer(uncached, carriers, wanted) == oracle

    with cached, uncached:
        cached.apply()
        _fill(cached)
        same()
        _write(root, B)
        cached.apply()
        same()


# -- staleness ---------------------------------------------------------------------------


def test_an_apply_by_the_same_store_is_seen_at_once(
    tmp_path: Path, db_url: str, online_store: OnlineStore
) -> None:
    fs = _store(tmp_path, "one", db_url, A, 3600.0, online_store=online_store)
    with fs:
        fs.apply()
        _fill(fs)
        assert _which(_answer(fs, ["AA"])) == "A"
        _write(fs.settings.project_dir, B)
        fs.apply()
        assert _which(_answer(fs, ["AA"])) == "B"
        assert fs.get_view("delays").ttl == timedelta(hours=1)
        assert [v.ttl for v in fs.list_views()] == [timedelta(hours=1)]


def test_another_store_apply_is_seen_after_the_bound_and_not_before(
    tmp_path: Path, db_url: str, online_store: OnlineStore
) -> None:
    bound = 1.0
    reader = _store(tmp_path, "reader", db_url, A, bound, online_store=online_store)
    writer = _store(tmp_path, "writer", db_url, B, 0.0)
    with reader, writer:
        reader.apply()
        _fill(reader)
        assert _which(_answer(reader, ["AA"])) == "A"
        loaded = time.monotonic()
        writer.apply()
        seen = _which(_answer(reader, ["AA"]))
        if time.monotonic() - loaded < bound:  # a slow machine may already be past it
            assert seen == "A"  # cached: the metadata store is not read on each call
        time.sleep(bound)
        assert _which(_answer(reader, ["AA"])) == "B"


def test_a_long_bound_serves_the_cached_definitions(
    tmp_path: Path, db_url: str, online_store: OnlineStore
) -> None:
    reader = _store(tmp_path, "reader", db_url, A, 3600.0, online_store=online_store)
    writer = _store(tmp_path, "writer", db_url, B, 0.0)
    with reader, writer:
        reader.apply()
        _fill(reader)
        assert _which(_answer(reader, ["AA"])) == "A"
        writer.apply()
        assert _which(_answer(reader, ["AA"])) == "A"
        assert reader.get_view("delays").ttl is None
        # plan and apply read fresh: the reader's own apply puts A back and sees it
        assert [c.action for c in reader.plan().pending] == ["change", "change"]


def test_zero_disables_the_cache(tmp_path: Path, db_url: str, online_store: OnlineStore) -> None:
    reader = _store(tmp_path, "reader", db_url, A, 0.0, online_store=online_store)
    writer = _store(tmp_path, "writer", db_url, B, 0.0)
    with reader, writer:
        reader.apply()
        _fill(reader)
        assert _which(_answer(reader, ["AA"])) == "A"
        writer.apply()
        assert _which(_answer(reader, ["AA"])) == "B"
        reader.apply()
        assert _which(_answer(reader, ["AA"])) == "A"


@pytest.mark.parametrize("bound", [0.0, 0.02])
def test_answers_never_mix_two_applies(
    tmp_path: Path, db_url: str, online_store: OnlineStore, bound: float
) -> None:
    """A second store applies A and B in turn while the reader serves: each answer is one set."""
    reader = _store(tmp_path, "reader", db_url, A, bound, online_store=online_store)
    writer_a = _store(tmp_path, "writer_a", db_url, A, 0.0)
    writer_b = _store(tmp_path, "writer_b", db_url, B, 0.0)
    stop = threading.Event()
    applies = []

    def flip() -> None:
        while not stop.is_set():
            for writer in (writer_b, writer_a):
                writer.apply()
                applies.append(1)

    with reader, writer_a, writer_b:
        reader.apply()
        _fill(reader)
        thread = threading.Thread(target=flip)
        thread.start()
        seen: dict[str, int] = {"A": 0, "B": 0}
        try:
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline or min(seen.values()) == 0:
                seen[_which(_answer(reader, ["AA"]))] += 1
                if time.monotonic() > deadline + 30:
                    break
        finally:
            stop.set()
            thread.join()
        assert len(applies) >= 2
        assert min(seen.values()) > 0, seen  # both sets were served


# -- on-demand code ----------------------------------------------------------------------

ON_DEMAND = """
from modelyard.features import on_demand_feature_view

@on_demand_feature_view(inputs=["delays:n"], features=[Feature("n_plus", "int")])
def plus(x):
    return {{"n_plus": x["n"] + {k}}}
"""


def test_on_demand_code_applied_by_the_same_store_is_run_at_once(
    tmp_path: Path, db_url: str, online_store: OnlineStore
) -> None:
    fs = _store(tmp_path, "one", db_url, A, 3600.0, online_store=online_store)
    with fs:
        root = fs.settings.project_dir
        _write(root, A, ON_DEMAND.format(k=1))
        fs.apply()
        _fill(fs)
        got = fs.get_online_features({"carrier": ["AA"]}, ["plus:n_plus"], now=NOW)
        assert got.values["plus:n_plus"].to_pylist() == [11]
        _write(root, A, ON_DEMAND.format(k=100))
        fs.apply()
        got = fs.get_online_features({"carrier": ["AA"]}, ["plus:n_plus"], now=NOW)
        assert got.values["plus:n_plus"].to_pylist() == [110]


# -- the setting -------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_a_bad_bound_names_the_setting(value: float) -> None:
    with pytest.raises(InvalidInputError) as err:
        FeaturesSettings(definitions_cache_s=value)
    assert err.value.loc == "features.definitions_cache_s"
    assert "definitions_cache_s" in str(err.value)


def test_the_bound_is_read_from_modelyard_yaml(tmp_path: Path) -> None:
    root = tmp_path / "p"
    init_project(root)
    path = root / "modelyard.yaml"
    text = path.read_text().replace("features:\n", "features:\n  definitions_cache_s: 0.5\n", 1)
    path.write_text(text)
    assert load_settings(root, environ={}).features.definitions_cache_s == 0.5
