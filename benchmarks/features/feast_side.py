"""The Feast side of the features benchmark (runs in Feast's own venv).

Feast 0.6x with its DuckDB offline store (not the default file/Dask store, which drops
entity rows at this size) and its SQLite online store, configured in code. The same
steps as ``modelyard_side.py``; prints one results line (``common.MARKER``).
"""

from __future__ import annotations

import importlib.metadata
import sys
import time
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


def main() -> None:
    args = side_args("feast")
    started = time.perf_counter()
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.infra.offline_stores.duckdb import DuckDBOfflineStoreConfig
    from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
    from feast.repo_config import RepoConfig
    from feast.types import Float64

    config = RepoConfig(
        project="bench",
        registry=str(args.work / "registry.db"),
        provider="local",
        offline_store=DuckDBOfflineStoreConfig(),
        online_store=SqliteOnlineStoreConfig(path=str(args.work / "online.db")),
        entity_key_serialization_version=3,
    )
    store = FeatureStore(config=config)
    driver = Entity(name="driver", join_keys=[ENTITY_KEY], value_type=ValueType.INT64)
    source = FileSource(
        path=str(args.data / FEATURE_FILE),
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )
    schema = [Field(name=name, dtype=Float64) for name in FEATURES]
    with_ttl = FeatureView(
        name="stats_ttl", entities=[driver], schema=schema, source=source, ttl=timedelta(days=1)
    )
    # Feast: a ttl of 0 (the default; None alike) means no ttl.
    no_ttl = FeatureView(
        name="stats", entities=[driver], schema=schema, source=source, ttl=timedelta(0)
    )
    store.apply([driver, with_ttl, no_ttl])
    result: dict[str, Any] = {
        "library": "feast",
        "version": importlib.metadata.version("feast"),
        "cold_start_s": time.perf_counter() - started,
    }
    entity_df = pd.read_parquet(args.data / ENTITY_FILE)

    for name, view in (("hist_ttl", with_ttl), ("hist_no_ttl", no_ttl)):
        refs = [f"{view.name}:{f}" for f in FEATURES]
        best, times, frame = best_time(
            lambda refs=refs: store.get_historical_features(
                entity_df=entity_df, features=refs
            ).to_df(),
            args.repeats,
        )
        result[f"{name}_s"] = best
        result[f"{name}_all_s"] = times
        result[f"{name}_rows"] = len(frame)
        frame[["row_id", *FEATURES]].to_parquet(args.work / f"{name}.parquet")

    start = datetime.fromisoformat(args.start) - timedelta(days=1)
    end = datetime.fromisoformat(args.start) + timedelta(days=args.days + 1)
    best, _, _ = best_time(
        lambda: store.materialize(start_date=start, end_date=end, feature_views=[no_ttl.name]),
        1,
    )
    result["materialize_s"] = best
    result["materialize_how"] = "FeatureStore.materialize (DuckDB offline -> SQLite online)"

    refs = [f"{no_ttl.name}:{f}" for f in FEATURES]

    def lookup(keys: list[int]) -> Any:
        rows = [{ENTITY_KEY: k} for k in keys]
        return store.get_online_features(features=refs, entity_rows=rows).to_dict()

    for size in (1, 100):
        result[f"online_{size}"] = latencies(lookup, lookup_keys(args.entities, size, args.calls))

    # Every entity's online values, for the check against modelyard's.
    parts = []
    for first in range(0, args.entities, 1000):
        keys = list(range(first, min(first + 1000, args.entities)))
        parts.append(pd.DataFrame(lookup(keys)))
    online = pd.concat(parts, ignore_index=True)
    online[[ENTITY_KEY, *FEATURES]].astype(float).to_parquet(args.work / "online.parquet")
    result["materialized_rows"] = int(online[FEATURES[0]].notna().sum())
    emit(result)


if __name__ == "__main__":
    main()
