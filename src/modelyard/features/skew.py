"""Training/serving skew: does the online store serve what the offline join would give?

Two checks. ``check_logged_skew`` takes feature vectors that were actually served (logged
with their request times, as the server's prediction log keeps them), recomputes each
offline as of the same moment and counts mismatches per feature: the real skew a model
saw. ``check_view_skew`` needs no log:

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

from modelyard.errors import InvalidInputError
from modelyard.features.definitions import FeatureView
from modelyard.features.offline import get_historical_features
from modelyard.features.online.base import OnlineStore
from modelyard.features.validation import source_columns

__all__ = ["LoggedSkewReport", "SkewReport", "check_logged_skew", "check_view_skew"]

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
    if value is None or value is pd.NaT or value is pd.NA:
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
        source_columns(con, view)  # an unreadable source: one line naming it
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


@dataclass(frozen=True)
class LoggedSkewReport:
    """Logged (served) feature vectors against the offline answer at the same moments.

    ``features`` maps each ref to ``{"checked", "mismatches", "served_null",
    "offline_null"}``: rows compared, rows whose values differ, and among them the rows
    where only the served or only the offline value was missing.
    """

    rows: int
    time_column: str
    features: dict[str, dict[str, int]]
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f["mismatches"] for f in self.features.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "time_column": self.time_column,
            "ok": self.ok,
            "features": self.features,
            "examples": self.examples,
        }


_PREFIXES = ("feature.", "input.")


def _normalized(log: pd.DataFrame) -> pd.DataFrame:
    """The log with the prediction log's ``feature.``/``input.`` column prefixes dropped."""
    renames: dict[str, str] = {}
    for column in map(str, log.columns):
        for prefix in _PREFIXES:
            if column.startswith(prefix) and column[len(prefix) :] not in log.columns:
                renames[column] = column[len(prefix) :]
    return log.rename(columns=renames) if renames else log


def _log_time(log: pd.DataFrame, time_column: str | None) -> str:
    if time_column is not None:
        if time_column not in log.columns:
            raise InvalidInputError(
                f"Expected a time column {time_column!r} in the log, got columns "
                f"{', '.join(map(str, log.columns))}",
                loc=f"log.{time_column}",
            )
        return time_column
    for candidate in ("time", "timestamp", "event_timestamp"):
        if candidate in log.columns:
            return candidate
    raise InvalidInputError(
        "Expected a time column in the log (time, timestamp or event_timestamp; or pass "
        f"--time-column), got columns {', '.join(map(str, log.columns))}",
        loc="log",
    )


def check_logged_skew(
    log: pd.DataFrame,
    views: list[FeatureView],
    *,
    on_demand: list[Any] | None = None,
    time_column: str | None = None,
    max_examples: int = 10,
) -> LoggedSkewReport:
    """Recompute every logged feature vector offline as of its time; count mismatches.

    ``log`` has one row per served vector: the join keys (and request fields of on-demand
    views), a timezone-aware time column and one column per served feature named by its
    ref (``view:feature``, optionally prefixed ``feature.`` as the prediction log writes
    it). Values are compared exactly (floats to 1e-12 relative); a null on one side only
    is a mismatch.
    """
    log = _normalized(log)
    time = _log_time(log, time_column)
    refs = [str(c) for c in log.columns if ":" in str(c)]
    if not refs:
        raise InvalidInputError(
            "Expected logged feature columns named view:feature, got columns "
            f"{', '.join(map(str, log.columns))}",
            loc="log",
        )
    entity_df = log.drop(columns=refs).reset_index(drop=True)
    offline = get_historical_features(
        entity_df,
        refs,
        views=views,
        on_demand=on_demand or [],
        full_feature_names=True,
        entity_time_column=time,
    )
    keys = [c for c in entity_df.columns if c != time]
    features: dict[str, dict[str, int]] = {}
    examples: list[dict[str, Any]] = []
    for ref in refs:
        served = [_plain(v) for v in log[ref].tolist()]
        view_name, _, name = ref.partition(":")
        expected = [_plain(v) for v in offline[f"{view_name}__{name}"].tolist()]
        counts = {"checked": len(served), "mismatches": 0, "served_null": 0, "offline_null": 0}
        for i, (got, want) in enumerate(zip(served, expected, strict=True)):
            if _same(got, want):
                continue
            counts["mismatches"] += 1
            counts["served_null"] += got is None
            counts["offline_null"] += want is None
            if len(examples) < max_examples:
                examples.append(
                    {
                        "row": i,
                        "time": _plain(entity_df[time].iloc[i]),
                        "keys": {k: _plain(entity_df[k].iloc[i]) for k in keys},
                        "feature": ref,
                        "served": got,
                        "offline": want,
                    }
                )
        features[ref] = counts
    return LoggedSkewReport(len(log), time, features, examples)
