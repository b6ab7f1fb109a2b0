"""What the features pages show, as plain dicts: views, services, sources, freshness.

Everything comes from the applied definitions (``FeatureStore``) and the
``materializations`` table: the online store's freshness per view is its last
materialization (the data it holds runs up to that run's ``end``; ``watermark`` is the
newest availability time it saw). Skew checks are not stored by modelyard, so the view
page runs one on request (``check_skew`` over a small sample) and says so.

Times in the dicts are milliseconds since the epoch (the templates' ``fmt_time``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from modelyard.errors import ModelyardError
from modelyard.features.definitions import FeatureView, FileSource, SqlSource
from modelyard.features.store import FeatureStore
from modelyard.store.database import Database
from modelyard.store.schema import materializations as mat_t
from modelyard.store.urls import redact_url

__all__ = [
    "HISTORY_LIMIT",
    "features_index",
    "freshness",
    "materialization_history",
    "skew_check",
    "view_detail",
]

#: materializations shown on a view's page (newest first)
HISTORY_LIMIT = 200


def _ms(us: int | None) -> int | None:
    return None if us is None else us // 1000


def _seconds(delta: timedelta | None) -> float | None:
    return None if delta is None else delta.total_seconds()


def _source(view: FeatureView) -> dict[str, Any]:
    source = view.source
    if isinstance(source, FileSource):
        return {
            "kind": "file",
            "location": redact_url(source.path),
            "timestamp_field": source.timestamp_field,
            "created_timestamp_field": source.created_timestamp_field,
        }
    assert isinstance(source, SqlSource)
    return {
        "kind": "sql",
        "location": source.query,
        "timestamp_field": source.timestamp_field,
        "created_timestamp_field": source.created_timestamp_field,
    }


def _row(row: Any) -> dict[str, Any]:
    return {
        "id": int(row.id),
        "view": row.view,
        "start_ms": _ms(row.start),
        "end_ms": _ms(row.end),
        "watermark_ms": _ms(row.watermark),
        "rows": int(row.rows),
        "at_ms": int(row.at),
    }


def freshness(db: Database, views: Iterable[FeatureView], now_ms: int) -> dict[str, Any]:
    """Per view name: its last materialization, how far behind now its data is, and
    whether every value it holds is past the view's ttl (None: never materialized).

    One query for every view: the newest row of each.
    """
    latest = select(mat_t.c.view, func.max(mat_t.c.id).label("id")).group_by(mat_t.c.view)
    latest_sq = latest.subquery()
    query = select(mat_t).join(latest_sq, mat_t.c.id == latest_sq.c.id)
    with db.read() as conn:
        rows = {r.view: _row(r) for r in conn.execute(query).all()}
    out: dict[str, Any] = {}
    for view in views:
        last = rows.get(view.name)
        if last is None:
            out[view.name] = None
            continue
        behind_s = max(0.0, (now_ms - last["end_ms"]) / 1000)
        ttl_s = _seconds(view.ttl)
        out[view.name] = {
            **last,
            "behind_s": behind_s,
            "ran_ago_s": max(0.0, (now_ms - last["at_ms"]) / 1000),
            "expired": ttl_s is not None and behind_s > ttl_s,
        }
    return out


def _view(view: FeatureView) -> dict[str, Any]:
    types = view.feature_types
    return {
        "name": view.name,
        "description": view.description,
        "entities": [e.name for e in view.entities],
        "join_keys": view.join_keys,
        "features": [{"name": name, "dtype": types[name]} for name in view.feature_names],
        "expressions": {f.name: f.expression for f in view.features if f.expression},
        "aggregations": [
            {
                "name": a.output_name,
                "column": a.column,
                "fn": a.fn,
                "window": a.window if isinstance(a.window, str) else str(a.window),
            }
            for a in view.aggregations
        ],
        "ttl_s": _seconds(view.ttl),
        "source": _source(view),
    }


def features_index(store: FeatureStore, db: Database, now_ms: int) -> dict[str, Any]:
    """Views with their freshness, services, sources, entities and on-demand views."""
    views = store.list_views()
    fresh = freshness(db, views, now_ms)
    entities: dict[str, dict[str, Any]] = {}
    sources: dict[tuple[str, str], dict[str, Any]] = {}
    for view in views:
        for entity in view.entities:
            entities.setdefault(
                entity.name,
                {"name": entity.name, "join_keys": entity.join_keys, "views": []},
            )["views"].append(view.name)
        described = _source(view)
        key = (described["kind"], described["location"])
        sources.setdefault(key, {**described, "views": []})["views"].append(view.name)
    services = []
    for service in store.list_services():
        try:
            refs = service.refs()
        except ModelyardError as exc:  # stored before refs were checked: shown, not fatal
            refs = [f"(unreadable: {exc.message})"]
        services.append({"name": service.name, "description": service.description, "refs": refs})
    on_demand = [
        {
            "name": v.name,
            "inputs": list(v.inputs),
            "features": [f.name for f in v.features],
            "description": v.description,
        }
        for v in store.applied_on_demand()
    ]
    return {
        "views": [{**_view(v), "freshness": fresh[v.name]} for v in views],
        "services": services,
        "sources": list(sources.values()),
        "entities": sorted(entities.values(), key=lambda e: str(e["name"])),
        "on_demand": on_demand,
        "online_store": redact_url(store.settings.features.online_store),
    }


def materialization_history(
    db: Database, view: str, limit: int = HISTORY_LIMIT
) -> tuple[list[dict[str, Any]], int]:
    """The newest ``limit`` materializations of ``view`` (newest first) and how many there are."""
    query = select(mat_t).where(mat_t.c.view == view).order_by(mat_t.c.id.desc()).limit(limit)
    count = select(func.count()).select_from(mat_t).where(mat_t.c.view == view)
    with db.read() as conn:
        rows = [_row(r) for r in conn.execute(query).all()]
        total = int(conn.execute(count).scalar_one())
    return rows, total


def view_detail(store: FeatureStore, db: Database, name: str, now_ms: int) -> dict[str, Any]:
    """One applied view: its definition, freshness, history and the services using it.

    A name that is not an applied view is the store's NotFoundError (naming the known ones).
    """
    view = store.get_view(name)
    applied = store.applied("view", name)
    history, total = materialization_history(db, name)
    services = [
        s.name
        for s in store.list_services()
        if any(
            getattr(item, "name", None) == name
            or (isinstance(item, str) and item.split(":", 1)[0] == name)
            for item in s.features
        )
    ]
    return {
        "view": _view(view),
        "version": applied.version,
        "sha256": applied.sha256,
        "applied_ms": applied.applied_at,
        "freshness": freshness(db, [view], now_ms)[name],
        "history": history,
        "history_total": total,
        "services": services,
    }


def skew_check(store: FeatureStore, name: str, sample: int) -> dict[str, Any]:
    """``check_skew`` of one view now (online against the offline answer), as a dict.

    A check that cannot run (no source file, no online store) is reported in ``error``
    instead of failing the page.
    """
    try:
        report = store.check_skew([name], sample)[0]
    except ModelyardError as exc:
        return {"error": f"{exc.type}: {exc.message}", "sample": sample}
    found = report.to_dict()
    found["sample"] = sample
    found["mismatched"] = sum(found["mismatches"].values())
    return found
