"""The modelyard side of the features benchmark (runs in the project's venv).

Historical retrieval with a 1-day ttl and with none, materialization of the whole range
into a fresh SQLite online store, then in-process online lookups. Prints one results line
(``common.MARKER``) and writes the retrieved frames to ``--work`` for the value check.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    ENTITY_FILE,
    ENTITY_KEY,
    FEATURE_FILE,
    FEATURES,
    best_time,
    emit,
    latencies,
    lookup_keys,
    side_args,
)

from modelyard.features import (
    Entity,
    Feature,
    FeatureView,
    FileSource,
    get_historical_features,
    get_online_features,
    open_online_store,
)

# The latest row per entity as one hash aggregate (about 4x faster here than a
# row_number() window over the same rows); ties on event time go to the later created.
LATEST_SQL = """
SELECT {key}, unnest(arg_max(
    struct_pack(event_timestamp, created_timestamp := created, {features}),
    (event_timestamp, created)
))
FROM read_parquet('{path}')
GROUP BY {key}
"""


def _views(data: Path) -> tuple[FeatureView, FeatureView]:
    driver = Entity("driver", [ENTITY_KEY])
    source = FileSource(str(data / FEATURE_FILE), "event_timestamp", "created")
    features = [Feature(name, "float") for name in FEATURES]
    with_ttl = FeatureView("stats_ttl", [driver], source, features, ttl=timedelta(days=1))
    no_ttl = FeatureView("stats", [driver], source, features)
    return with_ttl, no_ttl


FEATURES_PY = """
from modelyard.features import Entity, Feature, FeatureView, FileSource

driver = Entity("driver", [{key!r}])
stats = FeatureView(
    "stats",
    [driver],
    FileSource({path!r}, "event_timestamp", "created"),
    [{features}],
)
"""


def _has_feature_store() -> bool:
    """Whether ``modelyard.features.store.FeatureStore.materialize`` exists."""
    if importlib.util.find_spec("modelyard.features.store") is None:
        return False
    from modelyard.features import store as module

    return hasattr(getattr(module, "FeatureStore", None), "materialize")


def _feature_store_materialize(args: Any, url: str) -> tuple[float, int]:
    """A throwaway project whose features.py defines the view; apply, then a timed
    ``FeatureStore.materialize`` of the whole range (apply is not timed)."""
    from datetime import datetime

    from modelyard.config import init_project, load_settings
    from modelyard.features.store import FeatureStore

    root = args.work / "project"
    init_project(root)
    features = ", ".join(f"Feature({name!r}, 'float')" for name in FEATURES)
    text = FEATURES_PY.format(key=ENTITY_KEY, path=str(args.data / FEATURE_FILE), features=features)
    (root / "features.py").write_text(text)
    settings = load_settings(root, environ={"MODELYARD_ONLINE_STORE": url})
    with FeatureStore(settings) as fs:
        fs.apply()
        start = datetime.fromisoformat(args.start) - timedelta(days=1)
        end = datetime.fromisoformat(args.start) + timedelta(days=args.days + 1)
        began = time.perf_counter()
        done = fs.materialize(start, end, views=["stats"])
        took = time.perf_counter() - began
    return took, sum(r.rows for r in done)


def _materialize_here(view: FeatureView, path: Path, url: str) -> int:
    """The latest row per entity (DuckDB), written with ``store.write``."""
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        sql = LATEST_SQL.format(key=ENTITY_KEY, features=", ".join(FEATURES), path=path)
        table = con.sql(sql).to_arrow_table()
    finally:
        con.close()
    store = open_online_store(url)
    try:
        return store.write(view, table)
    finally:
        store.close()


def main() -> None:
    args = side_args("modelyard")
    entity_df = pd.read_parquet(args.data / ENTITY_FILE)
    with_ttl, no_ttl = _views(args.data)
    result: dict[str, Any] = {
        "library": "modelyard",
        "version": importlib.metadata.version("modelyard"),
    }

    for name, view in (("hist_ttl", with_ttl), ("hist_no_ttl", no_ttl)):
        best, times, frame = best_time(
            lambda view=view: get_historical_features(entity_df, [view]), args.repeats
        )
        result[f"{name}_s"] = best
        result[f"{name}_all_s"] = times
        result[f"{name}_rows"] = len(frame)
        frame[["row_id", *FEATURES]].to_parquet(args.work / f"{name}.parquet")

    # Materialization: once each, into fresh SQLite files.
    here_url = f"sqlite:///{args.work / 'online-benchmark-side.db'}"
    best, _, written = best_time(
        lambda: _materialize_here(no_ttl, args.data / FEATURE_FILE, here_url), 1
    )
    result["materialize_benchmark_side_s"] = best
    url = f"sqlite:///{args.work / 'online.db'}"
    if _has_feature_store():
        try:
            best, written = _feature_store_materialize(args, url)
            result["materialize_how"] = "FeatureStore.materialize (src/modelyard/features/store.py)"
        except Exception as exc:  # report it and fall back to the benchmark's own
            result["materialize_error"] = f"FeatureStore.materialize failed: {exc!r}"
    if "materialize_how" not in result:
        url = here_url
        result["materialize_how"] = (
            "benchmark-side: DuckDB arg_max latest row per entity + store.write "
            "(no usable FeatureStore.materialize)"
        )
    result["materialize_s"] = best
    result["materialized_rows"] = written

    store = open_online_store(url)
    refs = [f"{no_ttl.name}:{name}" for name in FEATURES]

    def lookup(keys: list[int]) -> Any:
        return get_online_features(store, {ENTITY_KEY: keys}, refs, [no_ttl]).values

    def read(keys: list[int]) -> Any:
        return store.read(no_ttl, [(k,) for k in keys]).values

    for size in (1, 100):
        batches = lookup_keys(args.entities, size, args.calls)
        result[f"online_{size}"] = latencies(lookup, batches)
        result[f"store_read_{size}"] = latencies(read, batches)

    # Every entity's online values, for the check against Feast's.
    keys = list(range(args.entities))
    out = get_online_features(store, {ENTITY_KEY: keys}, refs, [no_ttl])
    online = pd.DataFrame({ENTITY_KEY: keys})
    for name, ref in zip(FEATURES, refs, strict=True):
        online[name] = out.values[ref].to_numpy(zero_copy_only=False)
    online.to_parquet(args.work / "online.parquet")
    store.close()
    emit(result)


if __name__ == "__main__":
    main()
