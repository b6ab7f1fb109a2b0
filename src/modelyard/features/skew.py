"""Training/serving skew: does the online store serve what the offline join would give?

For a sample of a view's entities (distinct keys of its source, in key order), the value
served online as of the last materialization's end is compared with the point-in-time
join at the same moment (entity time ``end - 1µs``, since materialization covers event
times before ``end``). A difference means a missed or stale materialization, a source
changed after it was materialized, or a bug; either way what a model trained on the
offline data sees differs from what it is served.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from modelyard.features.definitions import FeatureView
from modelyard.features.offline import get_historical_features
from modelyard.features.online.base import OnlineStore

__all__ = ["SkewReport", "check_view_skew"]

_ENTITY_TIME = "__modelyard_entity_time"


@dataclass(frozen=True)
class SkewReport:
    """One view's comparison: entities checked, mismatches per feature, a few examples."""

    view: str
    as_of: datetime | None
    entities: int
    mismatches: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.as_of is not None and not any(self.mismatches.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "view": self.view,
            "as_of": None if self.as_of is None else self.as_of.isoformat(),
            "entities": self.entities,
            "ok": self.ok,
            "mismatches": self.mismatches,
            "examples": self.examples,
        }


def _plain(value: Any) -> Any:
    """A value as a comparable Python object; every kind of missing value is None."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
    return bool(a == b)


def _sample(view: FeatureView, end: datetime, limit: int) -> pd.DataFrame:
    import duckdb

    keys = ", ".join('"' + k.replace('"', '""') + '"' for k in view.join_keys)
    event = '"' + view.source.timestamp_field.replace('"', '""') + '"'
    not_null = " AND ".join(f"{k} IS NOT NULL" for k in keys.split(", "))
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        sql = (
            f"SELECT DISTINCT {keys} FROM {view.source.relation()} WHERE {not_null}"
            f" AND CAST({event} AS TIMESTAMPTZ) < ? ORDER BY {keys} LIMIT {int(limit)}"
        )
        return con.execute(sql, [end]).df()
    finally:
        con.close()


def check_view_skew(
    view: FeatureView, end: datetime | None, store: OnlineStore, sample: int = 1000
) -> SkewReport:
    """Compare the online values of ``view`` with the offline answer as of ``end``."""
    if end is None:
        return SkewReport(view.name, None, 0)  # never materialized: nothing served
    names = [f.name for f in view.features]
    at = end - timedelta(microseconds=1)
    entities = _sample(view, end, sample)
    if entities.empty or not names:
        return SkewReport(view.name, end, 0, dict.fromkeys(names, 0))
    entities[_ENTITY_TIME] = pd.Series([at] * len(entities), dtype="datetime64[us, UTC]")
    offline = get_historical_features(
        entities,
        [f"{view.name}:{n}" for n in names],
        views=[view],
        full_feature_names=True,
        entity_time_column=_ENTITY_TIME,
    )
    keys = list(entities[view.join_keys].itertuples(index=False, name=None))
    online = store.read(view, keys, names, now=at)
    mismatches = dict.fromkeys(names, 0)
    examples: list[dict[str, Any]] = []
    for name in names:
        served = [_plain(v) for v in online.values[name].to_pylist()]
        expected = [_plain(v) for v in offline[f"{view.name}__{name}"].tolist()]
        for key, got, want in zip(keys, served, expected, strict=True):
            if not _same(got, want):
                mismatches[name] += 1
                if len(examples) < 5:
                    examples.append(
                        {
                            "key": [_plain(k) for k in key],
                            "feature": name,
                            "online": got,
                            "offline": want,
                        }
                    )
    return SkewReport(view.name, end.astimezone(UTC), len(keys), mismatches, examples)
