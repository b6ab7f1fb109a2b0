"""The modelyard side of the features benchmark (runs in the project's venv).

Historical retrieval with a 1-day ttl and with none, materialization of the whole range
into a fresh SQLite online store, then in-process online lookups. Prints one results line
(``common.MARKER``) and writes the retrieved frames to ``--work`` for the value check.
"""

from __future__ import annotations

import importlib.metadata
import sys
from datetime import datetime, timedelta
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

from modelyard.config import init_project, load_settings
from modelyard.features import (
    Entity,
    Feature,
    FeatureView,
    FileSource,
    get_historical_features,
)
from modelyard.features.store import FeatureStore


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


def _project(args: Any, url: str) -> FeatureStore:
    """A throwaway project whose features.py defines the view, applied (not timed)."""
    root = args.work / "project"
    init_project(root)
    features = ", ".join(f"Feature({name!r}, 'float')" for name in FEATURES)
    text = FEATURES_PY.format(key=ENTITY_KEY, path=str(args.data / FEATURE_FILE), features=features)
    (root / "features.py").write_text(text)
    fs = FeatureStore(load_settings(root, environ={"MODELYARD_ONLINE_STORE": url}))
    fs.apply()
    return fs


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

    # Materialization: once, into a fresh SQLite file, by the top-level FeatureStore (as
    # Feast's is timed). A failure raises: the side exits non-zero and the run fails.
    fs = _project(args, f"sqlite:///{args.work / 'online.db'}")
    start = datetime.fromisoformat(args.start) - timedelta(days=1)
    end = datetime.fromisoformat(args.start) + timedelta(days=args.days + 1)
    best, _, done = best_time(lambda: fs.materialize(start, end, views=["stats"]), 1)
    result["materialize_s"] = best
    result["materialize_how"] = "FeatureStore.materialize (DuckDB -> SQLite online)"
    result["materialized_rows"] = sum(r.rows for r in done)

    refs = [f"{no_ttl.name}:{name}" for name in FEATURES]
    store = fs.online_store

    def lookup(keys: list[int]) -> Any:
        # the top level, as Feast's FeatureStore.get_online_features is timed
        return fs.get_online_features({ENTITY_KEY: keys}, refs).values

    def read(keys: list[int]) -> Any:
        return store.read(no_ttl, [(k,) for k in keys]).values

    for size in (1, 100):
        batches = lookup_keys(args.entities, size, args.calls)
        result[f"online_{size}"] = latencies(lookup, batches)
        result[f"store_read_{size}"] = latencies(read, batches)

    # Every entity's online values, by the same top-level call, for the check against Feast's.
    keys = list(range(args.entities))
    out = fs.get_online_features({ENTITY_KEY: keys}, refs)
    online = pd.DataFrame({ENTITY_KEY: keys})
    for name, ref in zip(FEATURES, refs, strict=True):
        online[name] = out.values[ref].to_numpy(zero_copy_only=False)
    online.to_parquet(args.work / "online.parquet")
    fs.close()
    emit(result)


if __name__ == "__main__":
    main()
