"""``training_set``: a training set from the feature store as a pipeline step.

Real parts: a project in ``tmp_path`` with a Parquet source read by DuckDB and a SQLite
metadata store. The oracle of the step's output is ``FeatureStore.get_historical_features``
over the same entity rows (for a window: the rows picked by hand, instant by instant);
the fingerprint must change with the source's bytes, the applied definitions and the
entity source, and must not change when nothing did.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, seed
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from modelyard.config import Settings, init_project, load_settings
from modelyard.errors import ConflictError, InvalidInputError
from modelyard.features.offline import entities_in_window
from modelyard.features.store import FeatureStore
from modelyard.pipelines import PipelineRun, feature_steps, pipeline, run_pipeline, step
from modelyard.pipelines.cache import changed_parts
from modelyard.pipelines.context import StepContext, step_context
from modelyard.pipelines.executors import client_for
from modelyard.pipelines.feature_steps import (
    CACHE_PARTS_TAG,
    build_training_set,
    file_digest,
    parse_bound,
    source_digest,
    training_set,
    training_set_fingerprint,
)
from modelyard.pipelines.lineage import lineage_of
from modelyard.pipelines.records import PipelineRecords
from modelyard.tracking.client import TrackingClient
from modelyard.tracking.digest import digest_frame, digest_path
from modelyard.tracking.fluent import use_run

SEED = 20131
T0 = datetime(2013, 1, 1, tzinfo=UTC)
CARRIERS = ["AA", "UA", "DL", "B6", "WN"]
_examples = itertools.count()

FS_FEATURES = """\
from datetime import timedelta
from modelyard.features import Entity, Feature, FeatureService, FeatureView, FileSource

carrier = Entity("carrier", join_keys=["carrier"])
flights = FileSource("data/flights.parquet", timestamp_field="ts",
                     created_timestamp_field="created")
delays = FeatureView("delays", entities=[carrier], source=flights,
                     features=[Feature("delay", "float"), Feature("n", "int")]{ttl})
model = FeatureService("model", features=[delays])
"""


def fs_source_frame(seed: int = SEED, rows: int = 120) -> pd.DataFrame:
    rng = random.Random(seed)
    ts = [T0 + timedelta(hours=rng.randrange(0, 24 * 60)) for _ in range(rows)]
    return pd.DataFrame(
        {
            "carrier": [rng.choice(CARRIERS) for _ in range(rows)],
            "ts": pd.to_datetime(ts, utc=True),
            "created": pd.to_datetime(
                [t + timedelta(minutes=rng.randrange(0, 90)) for t in ts], utc=True
            ),
            "delay": [rng.choice([rng.uniform(-10, 60), math.nan]) for _ in range(rows)],
            "n": [rng.randrange(0, 100) for _ in range(rows)],
        }
    )


def fs_write_source(root: Path, frame: pd.DataFrame) -> Path:
    (root / "data").mkdir(exist_ok=True)
    path = root / "data" / "flights.parquet"
    frame.to_parquet(path, index=False)
    return path


def fs_write_features(root: Path, ttl: str = "") -> None:
    (root / "features.py").write_text(FS_FEATURES.format(ttl=f", ttl={ttl}" if ttl else ""))


def fs_apply(settings: Settings) -> None:
    with FeatureStore(settings) as store:
        store.apply()


def fs_project(root: Path) -> Settings:
    """A project with an applied view over a Parquet source, SQLite metadata."""
    init_project(root)
    base = load_settings(root, environ={})
    settings = msgspec.structs.replace(
        base, features=msgspec.structs.replace(base.features, definitions_cache_s=0)
    )
    fs_write_source(root, fs_source_frame())
    fs_write_features(root)
    fs_apply(settings)
    return settings


def fs_entities(rows: int = 30, seed: int = 7) -> pd.DataFrame:
    rng = random.Random(seed)
    return pd.DataFrame(
        {
            "carrier": [rng.choice([*CARRIERS, "ZZ"]) for _ in range(rows)],
            "event_timestamp": pd.to_datetime(
                [T0 + timedelta(hours=rng.randrange(-24, 24 * 70)) for _ in range(rows)],
                utc=True,
            ),
            "label": [rng.randrange(2) for _ in range(rows)],
        }
    )


@pytest.fixture
def fs_settings(tmp_path: Path) -> Settings:
    return fs_project(tmp_path / "project")


@pytest.fixture
def fs_fresh_digests(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with an empty per-process digest cache."""
    monkeypatch.setattr(feature_steps, "_digests", feature_steps.DigestCache())
    yield


def fs_oracle(settings: Settings, entities: pd.DataFrame, **options: Any) -> pd.DataFrame:
    with FeatureStore(settings) as store:
        return store.get_historical_features(entities, "model", **options)


# -- the output -------------------------------------------------------------------------


def test_the_training_set_is_the_stores_historical_features(fs_settings: Settings) -> None:
    entities = fs_entities()
    frame, read, entity_digests = build_training_set(fs_settings, "model", entities)
    pd.testing.assert_frame_equal(frame, fs_oracle(fs_settings, entities))
    assert frame["delay"].notna().any()  # the join found rows: not an all-null oracle
    assert read.service == "model"
    assert set(read.definitions) == {"service:model", "view:delays"}
    assert read.sources["delays"] == file_digest(fs_settings.project_dir / "data/flights.parquet")
    assert entity_digests == {}


def test_options_reach_the_join(fs_settings: Settings) -> None:
    entities = fs_entities()
    for options in (
        {"as_served": True},
        {"full_feature_names": True},
        {"as_served": True, "full_feature_names": True},
    ):
        frame, _, _ = build_training_set(fs_settings, "model", entities, **options)
        pd.testing.assert_frame_equal(frame, fs_oracle(fs_settings, entities, **options))
    full, _, _ = build_training_set(fs_settings, "model", entities, full_feature_names=True)
    assert "delays__delay" in full.columns


@st.composite
def fs_entity_frames(draw: st.DrawFn) -> pd.DataFrame:
    rows = draw(st.integers(0, 25))
    hours = draw(st.lists(st.integers(-48, 24 * 70), min_size=rows, max_size=rows))
    carriers = draw(
        st.lists(st.sampled_from([*CARRIERS, "ZZ", "aa"]), min_size=rows, max_size=rows)
    )
    zone = draw(st.sampled_from([UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=9))]))
    index = draw(st.sampled_from(["range", "shuffled"]))
    frame = pd.DataFrame(
        {
            "carrier": pd.Series(carriers, dtype=object),
            "event_timestamp": pd.to_datetime(
                [T0 + timedelta(hours=h) for h in hours], utc=True
            ).tz_convert(zone),
            "label": list(range(rows)),
        }
    )
    if index == "shuffled":
        frame.index = list(reversed(range(100, 100 + rows)))
    return frame


@seed(SEED)
@hsettings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(entities=fs_entity_frames(), as_served=st.booleans())
def test_generated_entity_frames_match_the_store(
    fs_settings: Settings, entities: pd.DataFrame, as_served: bool
) -> None:
    frame, _, _ = build_training_set(fs_settings, "model", entities, as_served=as_served)
    pd.testing.assert_frame_equal(frame, fs_oracle(fs_settings, entities, as_served=as_served))


def fs_in_window_by_hand(
    entities: pd.DataFrame, start: datetime | None, end: datetime | None
) -> pd.DataFrame:
    keep = []
    for moment in entities["event_timestamp"]:
        instant = None if pd.isna(moment) else moment.to_pydatetime()
        keep.append(
            instant is not None
            and (start is None or instant >= start)
            and (end is None or instant < end)
        )
    return entities[pd.Series(keep, index=entities.index, dtype=bool)]


@seed(SEED)
@hsettings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    entities=fs_entity_frames(),
    start_h=st.one_of(st.none(), st.integers(-48, 24 * 70)),
    length_h=st.one_of(st.none(), st.integers(1, 24 * 30)),
)
def test_a_window_joins_the_rows_in_it_by_hand(
    fs_settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
    entities: pd.DataFrame,
    start_h: int | None,
    length_h: int | None,
) -> None:
    start = None if start_h is None else T0 + timedelta(hours=start_h)
    end = None if length_h is None else (start or T0) + timedelta(hours=length_h)
    chosen = fs_in_window_by_hand(entities, start, end)
    text = {"start": start and start.isoformat(), "end": end and end.isoformat()}
    # an upstream frame, cut to the window
    frame, _, _ = build_training_set(fs_settings, "model", entities, **text)
    pd.testing.assert_frame_equal(frame, fs_oracle(fs_settings, chosen))
    # the same rows from an entity source file
    path = tmp_path_factory.mktemp("entities") / f"rows{next(_examples)}.parquet"
    entities.to_parquet(path)
    from_file, _, digests = build_training_set(
        fs_settings, "model", entity_source=str(path), **text
    )
    pd.testing.assert_frame_equal(
        from_file, fs_oracle(fs_settings, fs_in_window_by_hand(pd.read_parquet(path), start, end))
    )
    assert digests == {str(path): file_digest(path)}


@seed(SEED)
@hsettings(max_examples=60, deadline=None)
@given(
    hours=st.lists(st.one_of(st.none(), st.integers(-100, 100)), max_size=20),
    zone=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
    start_h=st.one_of(st.none(), st.integers(-100, 100)),
    length_h=st.one_of(st.none(), st.integers(1, 100)),
)
def test_entities_in_window_keeps_exactly_the_rows_in_it(
    hours: list[int | None], zone: timezone, start_h: int | None, length_h: int | None
) -> None:
    times = [None if h is None else T0 + timedelta(hours=h) for h in hours]
    frame = pd.DataFrame(
        {
            "event_timestamp": pd.to_datetime(times, utc=True).tz_convert(zone),
            "row": range(len(hours)),
        },
        index=[f"r{i}" for i in range(len(hours))],
    )
    start = None if start_h is None else (T0 + timedelta(hours=start_h)).astimezone(zone)
    end = None if length_h is None else (start or T0) + timedelta(hours=length_h)
    got = entities_in_window(frame, start, end)
    pd.testing.assert_frame_equal(got, fs_in_window_by_hand(frame, start, end))


def test_entities_in_window_refuses_naive_and_reversed_bounds() -> None:
    frame = pd.DataFrame({"event_timestamp": pd.to_datetime(["2013-01-02"], utc=True)})
    with pytest.raises(InvalidInputError, match="timezone-aware start"):
        entities_in_window(frame, datetime(2013, 1, 1))
    with pytest.raises(InvalidInputError, match="start before end"):
        entities_in_window(frame, T0 + timedelta(days=1), T0)
    with pytest.raises(InvalidInputError, match="time column 'ts'"):
        entities_in_window(frame, T0, entity_time_column="ts")
    naive = pd.DataFrame({"event_timestamp": pd.to_datetime(["2013-01-02"])})
    with pytest.raises(InvalidInputError, match="naive"):
        entities_in_window(naive, T0)
    assert len(entities_in_window(naive, T0, assume_utc=True)) == 1


def test_bounds_are_dates_or_times_with_an_offset() -> None:
    assert parse_bound("2013-01-01", "start") == T0
    assert parse_bound("2013-01-01T06:00Z", "start") == T0 + timedelta(hours=6)
    assert parse_bound("2013-01-01T06:00+01:00", "end") == T0 + timedelta(hours=5)
    for bad in ("2013-01-01T06:00", "yesterday", "2013-13-01"):
        with pytest.raises(InvalidInputError, match="start") as info:
            parse_bound(bad, "start")
        assert repr(bad) in str(info.value)


def test_bad_calls_name_the_argument(fs_settings: Settings, tmp_path: Path) -> None:
    entities = fs_entities()
    with pytest.raises(InvalidInputError, match="neither"):
        build_training_set(fs_settings, "model")
    with pytest.raises(InvalidInputError, match="both"):
        build_training_set(fs_settings, "model", entities, entity_source="x.parquet")
    with pytest.raises(InvalidInputError, match="start before end"):
        build_training_set(fs_settings, "model", entities, start="2013-02-01", end="2013-01-01")
    with pytest.raises(InvalidInputError, match=r"\.parquet file"):
        build_training_set(fs_settings, "model", entity_source="rows.csv")


# -- the fingerprint --------------------------------------------------------------------


def fs_params(**extra: Any) -> dict[str, Any]:
    return {"service": "model", **extra}


def test_nothing_changed_gives_the_same_fingerprint(
    fs_settings: Settings, fs_fresh_digests: None
) -> None:
    first = training_set_fingerprint(fs_settings, fs_params())
    assert "unavailable" not in first
    assert training_set_fingerprint(fs_settings, fs_params()) == first
    fs_apply(fs_settings)  # an apply with no change
    feature_steps._digests = feature_steps.DigestCache()  # another process: hashed again
    assert training_set_fingerprint(fs_settings, fs_params()) == first


def fs_same_size_other_bytes(path: Path) -> None:
    """Rewrite one byte of the file's data, keeping its size and its mtime."""
    before = path.stat()
    frame = pd.read_parquet(path)
    frame.loc[0, "n"] = int(frame.loc[0, "n"]) + 1  # an int64 in place: same size
    frame.to_parquet(path, index=False)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_the_source_content_decides_same_size_and_mtime_too(
    fs_settings: Settings, fs_fresh_digests: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = fs_settings.project_dir / "data" / "flights.parquet"
    monkeypatch.setattr(feature_steps, "RACY_NS", 50_000_000)  # 50 ms, for a short test
    time.sleep(0.1)  # the file is settled: its digest is kept in the per-process cache
    first = training_set_fingerprint(fs_settings, fs_params())
    assert training_set_fingerprint(fs_settings, fs_params()) == first
    assert len(feature_steps._digests) == 1
    fs_same_size_other_bytes(path)
    second = training_set_fingerprint(fs_settings, fs_params())
    assert second["sources"] != first["sources"]
    assert second["definitions"] == first["definitions"]


def test_the_digest_cache_hashes_a_settled_unchanged_file_once(
    tmp_path: Path, fs_fresh_digests: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    real = feature_steps.digest_path

    def counted(path: Any) -> Any:
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(feature_steps, "digest_path", counted)
    monkeypatch.setattr(feature_steps, "RACY_NS", 50_000_000)
    path = tmp_path / "f.bin"
    path.write_bytes(b"abcd")
    racy = file_digest(path)  # just written: not kept
    assert file_digest(path) == racy and len(calls) == 2
    time.sleep(0.1)
    assert file_digest(path) == racy and file_digest(path) == racy
    assert len(calls) == 3
    path.write_bytes(b"abce")  # same size; mtime restored below
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns - 10**9))
    assert file_digest(path) != racy


def test_a_definition_change_changes_the_fingerprint(
    fs_settings: Settings, fs_fresh_digests: None
) -> None:
    first = training_set_fingerprint(fs_settings, fs_params())
    fs_write_features(fs_settings.project_dir, ttl="timedelta(hours=6)")
    # not applied yet: the store still joins the applied definitions
    assert training_set_fingerprint(fs_settings, fs_params()) == first
    fs_apply(fs_settings)
    second = training_set_fingerprint(fs_settings, fs_params())
    assert second["definitions"]["view:delays"] != first["definitions"]["view:delays"]
    assert second["definitions"]["service:model"] == first["definitions"]["service:model"]
    assert second["sources"] == first["sources"]


def test_the_entity_source_content_enters_the_fingerprint(
    fs_settings: Settings, fs_fresh_digests: None
) -> None:
    path = fs_settings.project_dir / "labels.parquet"
    fs_entities(seed=1).to_parquet(path)
    params = fs_params(entity_source="labels.parquet", start="2013-01-01")
    first = training_set_fingerprint(fs_settings, params)
    assert first["entity_source"] == file_digest(path)
    assert training_set_fingerprint(fs_settings, params) == first
    fs_entities(seed=2).to_parquet(path)
    assert training_set_fingerprint(fs_settings, params)["entity_source"] != first["entity_source"]


def test_an_unreadable_service_never_matches_a_key(fs_settings: Settings) -> None:
    first = training_set_fingerprint(fs_settings, fs_params(service="nope"))
    second = training_set_fingerprint(fs_settings, fs_params(service="nope"))
    assert "No applied feature service named 'nope'" in first["unavailable"]
    assert first["nonce"] != second["nonce"]
    (fs_settings.project_dir / "data" / "flights.parquet").unlink()
    missing = training_set_fingerprint(fs_settings, fs_params())
    assert "NotFoundError" in missing["unavailable"]


def test_glob_and_sql_sources_digest_their_content(tmp_path: Path) -> None:
    from modelyard.features.definitions import FileSource, SqlSource

    (tmp_path / "a.parquet").write_bytes(b"")  # placeholder replaced below
    fs_source_frame(seed=1).to_parquet(tmp_path / "a.parquet")
    fs_source_frame(seed=2).to_parquet(tmp_path / "b.parquet")
    pattern = FileSource(str(tmp_path / "*.parquet"), timestamp_field="ts")
    first = source_digest(pattern)
    assert source_digest(pattern) == first
    fs_source_frame(seed=3).to_parquet(tmp_path / "b.parquet")
    assert source_digest(pattern) != first
    (tmp_path / "b.parquet").rename(tmp_path / "c.parquet")  # a renamed file is another set
    assert source_digest(pattern) not in (
        first,
        source_digest(FileSource(str(tmp_path / "a.parquet"), "ts")),
    )
    one = SqlSource("SELECT 'AA' AS carrier, 1.5 AS delay", timestamp_field="ts")
    other = SqlSource("SELECT 'AA' AS carrier, 2.5 AS delay", timestamp_field="ts")
    assert source_digest(one) == source_digest(one) != source_digest(other)


# -- in a pipeline ----------------------------------------------------------------------


@step
def fs_load(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)


@step
def fs_train(frame: pd.DataFrame, scale: float = 1.0) -> dict[str, float]:
    """A stand-in model: what it learns depends on every feature value."""
    return {
        "rows": float(len(frame)),
        "delay": scale * float(frame["delay"].sum()),
        "n": float(frame["n"].sum()),
    }


@pipeline
def fs_flow(entities: Path = Path("entities.parquet"), scale: float = 1.0) -> None:
    rows = fs_load(entities)
    fs_train(training_set(service="model", entities=rows), scale=scale)


@pipeline
def fs_window_flow(start: str = "2013-01-10", end: str = "2013-02-10") -> None:
    fs_train(training_set(service="model", start=start, end=end, entity_source="entities.parquet"))


@pipeline
def fs_window_path_flow(rows: Path = Path("entities.parquet"), start: str = "2013-01-10") -> None:
    fs_train(training_set(service="model", start=start, entity_source=rows))


def fs_statuses(run: PipelineRun) -> dict[str, str]:
    return {name: result.status for name, result in run.steps.items()}


def fs_parts(settings: Settings, run_id: str) -> dict[str, Any]:
    client = TrackingClient(settings)
    try:
        parts: dict[str, Any] = json.loads(client.get_run(run_id).tags[CACHE_PARTS_TAG])
        return parts
    finally:
        client.close()


@pytest.mark.parametrize("executor", ["inline", "local"])
def test_a_pipeline_reruns_the_training_set_only_when_its_data_changed(
    fs_settings: Settings, executor: str
) -> None:
    root = fs_settings.project_dir
    entities = fs_entities(rows=40)
    entities.to_parquet(root / "entities.parquet")
    first = run_pipeline(fs_flow, settings=fs_settings, executor=executor)
    assert fs_statuses(first) == dict.fromkeys(("fs_load", "training_set", "fs_train"), "completed")
    pd.testing.assert_frame_equal(
        first.load("training_set"),
        fs_oracle(fs_settings, pd.read_parquet(root / "entities.parquet")),
    )
    # lineage: the training set (kind features), the source file, and the tracked data set
    records = PipelineRecords(client_for(fs_settings).db)
    ts_run = first.steps["training_set"].run_id
    rows = {i.name: i for i in records.inputs_of(ts_run)}
    frame_digest = digest_frame(first.load("training_set")).digest
    assert rows["training_set"].kind == "features"
    assert rows["training_set"].digest == frame_digest
    assert "service model v1 views delays v1" in (rows["training_set"].description or "")
    source = root / "data" / "flights.parquet"
    assert (rows["source:delays"].kind, rows["source:delays"].digest) == (
        "file",
        digest_path(source).digest,
    )
    assert rows["entities"].kind == "output"
    client = TrackingClient(fs_settings)
    try:
        [tracked] = client.list_inputs(ts_run)
    finally:
        client.close()
    assert (tracked.name, tracked.digest) == ("training_set:model", frame_digest)
    keyed = fs_parts(fs_settings, ts_run)["fingerprint"]
    assert keyed["sources"] == {"delays": digest_path(source).digest}

    second = run_pipeline(fs_flow, settings=fs_settings, executor=executor)
    assert set(fs_statuses(second).values()) == {"cached"}

    # the source's content changes (its mtime put back): the training set and train rerun
    before = source.stat()
    changed = fs_source_frame()
    changed["delay"] = changed["delay"] + 1.0
    fs_write_source(root, changed)
    os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    third = run_pipeline(fs_flow, settings=fs_settings, executor=executor)
    assert fs_statuses(third) == {
        "fs_load": "cached",
        "training_set": "completed",
        "fs_train": "completed",
    }
    new_parts = fs_parts(fs_settings, third.steps["training_set"].run_id)
    assert changed_parts(fs_parts(fs_settings, ts_run), new_parts) == ["fingerprint"]
    pd.testing.assert_frame_equal(
        third.load("training_set"),
        fs_oracle(fs_settings, pd.read_parquet(root / "entities.parquet")),
    )
    assert third.load("fs_train")["delay"] != first.load("fs_train")["delay"]

    # a changed definition, applied: the training set reruns
    fs_write_features(root, ttl="timedelta(hours=6)")
    fs_apply(fs_settings)
    fourth = run_pipeline(fs_flow, settings=fs_settings, executor=executor)
    assert fourth.steps["training_set"].status == "completed"
    assert set(
        fs_statuses(run_pipeline(fs_flow, settings=fs_settings, executor=executor)).values()
    ) == {"cached"}


def test_a_window_pipeline_reruns_when_the_window_or_entity_file_changes(
    fs_settings: Settings,
) -> None:
    root = fs_settings.project_dir
    entities = fs_entities(rows=60)
    entities.to_parquet(root / "entities.parquet")
    first = run_pipeline(fs_window_flow, settings=fs_settings, executor="inline")
    start, end = datetime(2013, 1, 10, tzinfo=UTC), datetime(2013, 2, 10, tzinfo=UTC)
    chosen = fs_in_window_by_hand(pd.read_parquet(root / "entities.parquet"), start, end)
    assert 0 < len(chosen) < len(entities)
    pd.testing.assert_frame_equal(first.load("training_set"), fs_oracle(fs_settings, chosen))
    rows = {
        i.name: i
        for i in PipelineRecords(client_for(fs_settings).db).inputs_of(
            first.steps["training_set"].run_id
        )
    }
    assert rows["entity_source_file"].digest == digest_path(root / "entities.parquet").digest
    assert "window [2013-01-10, 2013-02-10)" in (rows["training_set"].description or "")
    again = run_pipeline(fs_window_flow, settings=fs_settings, executor="inline")
    assert set(fs_statuses(again).values()) == {"cached"}
    wider = run_pipeline(
        fs_window_flow, {"end": "2013-02-20"}, settings=fs_settings, executor="inline"
    )
    assert wider.steps["training_set"].status == "completed"
    fs_entities(rows=60, seed=99).to_parquet(root / "entities.parquet")
    moved = run_pipeline(fs_window_flow, settings=fs_settings, executor="inline")
    assert moved.steps["training_set"].status == "completed"


def test_a_step_fails_when_its_data_changed_after_its_key(fs_settings: Settings) -> None:
    """The key named other source bytes than the run read: nothing is stored under it."""
    entities = fs_entities()
    client = client_for(fs_settings)
    keyed = training_set_fingerprint(fs_settings, fs_params())
    keyed["sources"] = {"delays": "0" * 64}  # the bytes the key was computed over
    run = client.start_run("fs", tags={CACHE_PARTS_TAG: json.dumps({"fingerprint": keyed})})
    context = StepContext(run.id, run.id, "training_set", fs_settings)
    with use_run(run), step_context(context):
        with pytest.raises(ConflictError, match="sources differ"):
            training_set.fn(service="model", entities=entities)
    assert context.recorded == []
    keyed["sources"] = training_set_fingerprint(fs_settings, fs_params())["sources"]
    run = client.start_run("fs", tags={CACHE_PARTS_TAG: json.dumps({"fingerprint": keyed})})
    context = StepContext(run.id, run.id, "training_set", fs_settings)
    with use_run(run), step_context(context):
        frame = training_set.fn(service="model", entities=entities)
    pd.testing.assert_frame_equal(frame, fs_oracle(fs_settings, entities))
    assert [r.name for r in context.recorded] == ["training_set", "source:delays"]


def test_the_digest_cache_is_not_part_of_the_steps_code(
    tmp_path: Path, fs_fresh_digests: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filling cache must not change the step's source hash (it once did: a dict)."""
    monkeypatch.setattr(feature_steps, "RACY_NS", 0)
    before = training_set.source_hash(tmp_path)
    path = tmp_path / "f.bin"
    path.write_bytes(b"abcd")
    os.utime(path, ns=(1, 1))
    file_digest(path)
    assert len(feature_steps._digests) == 1
    assert training_set.source_hash(tmp_path) == before


@seed(SEED)
@hsettings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    writes=st.lists(
        st.tuples(st.binary(min_size=8, max_size=8), st.booleans(), st.booleans()),
        min_size=1,
        max_size=5,
    )
)
def test_file_digests_always_follow_the_bytes(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    writes: list[tuple[bytes, bool, bool]],
) -> None:
    """Same-size rewrites, mtime restored or not, settled or racy: the digest is the bytes'."""
    monkeypatch.setattr(feature_steps, "_digests", feature_steps.DigestCache())
    monkeypatch.setattr(feature_steps, "RACY_NS", 20_000_000)
    path = tmp_path_factory.mktemp("digests") / "f.bin"
    path.write_bytes(b"\0" * 8)
    mtime = path.stat().st_mtime_ns
    for data, restore, settle in writes:
        if settle:
            time.sleep(0.03)
        assert file_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()
        path.write_bytes(data)
        if restore:
            os.utime(path, ns=(mtime, mtime))
        assert file_digest(path) == hashlib.sha256(data).hexdigest()


FS_ON_DEMAND = """
import numpy as np
from modelyard.features import on_demand_feature_view


@on_demand_feature_view(
    inputs=["delays:delay"],
    request=[Feature("bonus", "float")],
    features=[Feature("total", "float")],
)
def totals(x):
    return {"total": np.nan_to_num(x["delay"]) + x["bonus"]}


model_od = FeatureService("model_od", features=[totals, "delays:n"])
"""


def test_an_on_demand_service_keys_its_code_and_its_input_views(
    fs_settings: Settings, fs_fresh_digests: None
) -> None:
    root = fs_settings.project_dir
    (root / "features.py").write_text((root / "features.py").read_text() + FS_ON_DEMAND)
    fs_apply(fs_settings)
    entities = fs_entities().assign(bonus=2.5)
    frame, read, _ = build_training_set(fs_settings, "model_od", entities)
    with FeatureStore(fs_settings) as store:
        oracle = store.get_historical_features(entities, "model_od")
    pd.testing.assert_frame_equal(frame, oracle)
    assert set(read.definitions) == {"service:model_od", "on_demand:totals", "view:delays"}
    first = training_set_fingerprint(fs_settings, fs_params(service="model_od"))
    text = (root / "features.py").read_text().replace('+ x["bonus"]', '+ 2 * x["bonus"]')
    (root / "features.py").write_text(text)
    fs_apply(fs_settings)
    second = training_set_fingerprint(fs_settings, fs_params(service="model_od"))
    changed = {
        k for k in first["definitions"] if first["definitions"][k] != second["definitions"][k]
    }
    assert changed == {"on_demand:totals"}


def test_an_entity_file_given_as_a_path_is_recorded_once(fs_settings: Settings) -> None:
    root = fs_settings.project_dir
    fs_entities(rows=40).to_parquet(root / "entities.parquet")
    first = run_pipeline(fs_window_path_flow, settings=fs_settings, executor="inline")
    start = datetime(2013, 1, 10, tzinfo=UTC)
    chosen = fs_in_window_by_hand(pd.read_parquet(root / "entities.parquet"), start, None)
    pd.testing.assert_frame_equal(first.load("training_set"), fs_oracle(fs_settings, chosen))
    records = PipelineRecords(client_for(fs_settings).db)
    rows = {i.name: i for i in records.inputs_of(first.steps["training_set"].run_id)}
    assert sorted(rows) == ["entity_source", "source:delays", "training_set"]
    assert rows["entity_source"].kind == "file"
    assert rows["entity_source"].digest == digest_path(root / "entities.parquet").digest
    assert (
        run_pipeline(fs_window_path_flow, settings=fs_settings, executor="inline")
        .steps["training_set"]
        .status
        == "cached"
    )
    fs_entities(rows=40, seed=5).to_parquet(root / "entities.parquet")
    third = run_pipeline(fs_window_path_flow, settings=fs_settings, executor="inline")
    assert third.steps["training_set"].status == "completed"


def test_lineage_reaches_the_feature_set_through_a_cached_training_set(
    fs_settings: Settings,
) -> None:
    """A model step rerun over a cached training set still traces back to the features."""
    root = fs_settings.project_dir
    fs_entities(rows=20).to_parquet(root / "entities.parquet")
    first = run_pipeline(fs_flow, settings=fs_settings, executor="inline")
    again = run_pipeline(fs_flow, {"scale": 2.0}, settings=fs_settings, executor="inline")
    assert fs_statuses(again) == {
        "fs_load": "cached",
        "training_set": "cached",
        "fs_train": "completed",
    }
    source = digest_path(root / "data" / "flights.parquet").digest
    for run in (first, again):
        tree = lineage_of(fs_settings, run.steps["fs_train"].run_id).root
        found = {(n.details.get("as"), n.details.get("kind"), n.id) for n in tree.walk()}
        frame = digest_frame(run.load("training_set")).digest
        assert ("training_set", "features", frame) in found
        assert ("source:delays", "file", source) in found
