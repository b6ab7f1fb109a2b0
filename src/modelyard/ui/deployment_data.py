"""What the deployments pages show, from the prediction log and the traffic policy.

The log (``store.predlog.connect``, DuckDB) holds one row per predicted row of every
request the server *answered*: ``record_id`` names the request, ``route`` says whether
the primary, the canary or the shadow answered it, ``latency_us`` is the request's time
in the server. From it: requests per version and route, the request rate, the traffic
split and latency percentiles over time.

Errors are not in the log: the server counts failed requests only in its in-memory
Prometheus metrics (``/metrics``), so no error rate can be computed here, and the pages
say so (``ERRORS_NOT_PERSISTED``) instead of showing a number.

Times in the dicts are milliseconds since the epoch; latencies are milliseconds.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from modelyard.config import Settings, TrafficSettings, duration_seconds
from modelyard.registry.entities import RegisteredModel
from modelyard.store.predlog import connect

__all__ = [
    "BUCKET_WIDTHS_S",
    "ERRORS_NOT_PERSISTED",
    "MAX_BUCKETS",
    "bucket_width",
    "deployment_detail",
    "deployments_index",
    "log_root",
    "parse_last",
]

#: the widths a time bucket may have (seconds): the smallest that keeps MAX_BUCKETS
BUCKET_WIDTHS_S = (1, 5, 15, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400, 28 * 86400)
MAX_BUCKETS = 60
ERRORS_NOT_PERSISTED = (
    "Error rate: not available. The model server counts failed requests (by model, "
    "status and error type) only in memory, in its Prometheus metrics at /metrics "
    "(modelyard_errors, modelyard_requests by status); nothing about them is persisted, "
    "and the prediction log holds only the requests that were answered. So this page "
    "shows no error rate rather than a made-up one."
)
_ROUTE_ORDER = {"primary": 0, "canary": 1, "shadow": 2}


def log_root(settings: Settings) -> Path:
    """The prediction log's folder (``serving.log_dir``, relative to the project)."""
    return settings.prediction_log_dir


def parse_last(text: str | None) -> int | None:
    """The ``last`` query parameter (``24h``, ``7d``) in seconds; None for the whole log.

    >>> parse_last("2h"), parse_last(None), parse_last("all")
    (7200, None, None)
    """
    if text is None or text in ("", "all"):
        return None
    return duration_seconds("last", text)


def bucket_width(span_s: float) -> int:
    """The smallest width in ``BUCKET_WIDTHS_S`` that cuts ``span_s`` into at most MAX_BUCKETS.

    >>> bucket_width(0), bucket_width(3600), bucket_width(86400 * 30)
    (1, 300, 86400)
    """
    for width in BUCKET_WIDTHS_S:
        if span_s / width < MAX_BUCKETS:
            return width
    return BUCKET_WIDTHS_S[-1]


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat()


def _policy(name: str, settings: Settings, model: RegisteredModel | None) -> dict[str, Any]:
    configured = name in settings.serving.traffic
    policy = settings.serving.traffic.get(name, TrafficSettings())
    aliases = model.aliases if model is not None else {}

    def slot(alias: str | None, weight: float | None) -> dict[str, Any] | None:
        if alias is None:
            return None
        return {"alias": alias, "version": aliases.get(alias), "weight": weight}

    canary_weight = policy.canary_weight if policy.canary else None
    return {
        "configured": configured,
        "registered": model is not None,
        "primary": slot(policy.primary, None if canary_weight is None else 1 - canary_weight),
        "canary": slot(policy.canary, canary_weight),
        "shadow": slot(policy.shadow, None),
        "sticky_key": policy.sticky_key,
    }


_TOTALS = """
SELECT model, CAST(version AS BIGINT) AS version, route,
       count(DISTINCT record_id) AS requests, count(*) AS rows,
       epoch_us(min(time)) AS first_us, epoch_us(max(time)) AS last_us
FROM predictions GROUP BY ALL
"""


def _totals(con: duckdb.DuckDBPyConnection, model: str | None = None) -> list[dict[str, Any]]:
    query = _TOTALS if model is None else _TOTALS.replace("GROUP BY", "WHERE model = $m GROUP BY")
    params = {} if model is None else {"m": model}
    rows = con.execute(query, params).fetchall()
    out = [
        {
            "model": r[0],
            "version": int(r[1]),
            "route": r[2],
            "requests": int(r[3]),
            "rows": int(r[4]),
            "first_ms": int(r[5]) // 1000,
            "last_ms": int(r[6]) // 1000,
        }
        for r in rows
    ]
    return sorted(out, key=lambda t: (t["model"], t["version"], _ROUTE_ORDER.get(t["route"], 9)))


def deployments_index(settings: Settings, models: list[RegisteredModel]) -> dict[str, Any]:
    """Every model with logged requests or a traffic policy, with totals per version."""
    registered = {m.name: m for m in models}
    con = connect(log_root(settings))
    try:
        totals = _totals(con)
    finally:
        con.close()
    names = sorted({t["model"] for t in totals} | set(settings.serving.traffic))
    out = []
    for name in names:
        mine = [t for t in totals if t["model"] == name]
        out.append(
            {
                "name": name,
                "policy": _policy(name, settings, registered.get(name)),
                "versions": mine,
                "requests": sum(t["requests"] for t in mine),
                "last_ms": max((t["last_ms"] for t in mine), default=None),
            }
        )
    # models with the primary alias but nothing logged: deployable, no traffic seen
    idle = [
        {"name": m.name, "aliases": m.aliases}
        for m in models
        if m.name not in names and "production" in m.aliases
    ]
    return {
        "models": out,
        "idle": idle,
        "log_dir": str(settings.serving.log_dir),
        "errors_note": ERRORS_NOT_PERSISTED,
    }


_SERIES = """
WITH req AS (
  SELECT record_id, route, CAST(any_value(version) AS BIGINT) AS version,
         epoch_us(min(time)) AS t, any_value(latency_us) AS latency_us, count(*) AS rows
  FROM predictions WHERE model = $m GROUP BY record_id, route
)
SELECT version, route, (t - $origin) // $width AS bucket, count(*) AS requests,
       sum(rows) AS rows,
       quantile_cont(latency_us, 0.5), quantile_cont(latency_us, 0.95),
       quantile_cont(latency_us, 0.99)
FROM req WHERE t >= $since
GROUP BY ALL ORDER BY bucket, version, route
"""


def _span(seconds: int) -> str:
    """``seconds`` in its largest whole unit.

    >>> _span(21600), _span(90), _span(86400 * 7)
    ('6 h', '90 s', '7 d')
    """
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _label(version: int, route: str) -> str:
    return f"v{version} {route}"


def deployment_detail(
    settings: Settings, name: str, model: RegisteredModel | None, last_s: int | None
) -> dict[str, Any] | None:
    """Totals, the traffic split and the per-bucket series of one model; None when the
    model has neither logged requests, a traffic policy nor a registry entry.

    ``last_s`` keeps the requests of the last that many seconds before the newest one.
    """
    con = connect(log_root(settings))
    try:
        totals = _totals(con, name)
        if not totals and name not in settings.serving.traffic and model is None:
            return None
        first_us = min((t["first_ms"] for t in totals), default=0) * 1000
        last_us = max((t["last_ms"] for t in totals), default=0) * 1000
        since_us = first_us if last_s is None else max(first_us, last_us - last_s * 1_000_000)
        width = bucket_width((last_us - since_us) / 1e6)
        width_us = width * 1_000_000
        origin = since_us - since_us % width_us
        rows = (
            con.execute(
                _SERIES, {"m": name, "origin": origin, "width": width_us, "since": since_us}
            ).fetchall()
            if totals
            else []
        )
    finally:
        con.close()
    series: dict[str, dict[str, Any]] = {}
    for version, route, bucket, requests, count, p50, p95, p99 in rows:
        key = _label(int(version), route)
        item = series.setdefault(
            key,
            {
                "label": key,
                "version": int(version),
                "route": route,
                "time": [],
                "requests": [],
                "rows": [],
                "rate": [],
                "p50_ms": [],
                "p95_ms": [],
                "p99_ms": [],
            },
        )
        item["time"].append(_iso(origin + int(bucket) * width_us))
        item["requests"].append(int(requests))
        item["rows"].append(int(count))
        item["rate"].append(int(requests) / width)
        item["p50_ms"].append(float(p50) / 1000)
        item["p95_ms"].append(float(p95) / 1000)
        item["p99_ms"].append(float(p99) / 1000)
    ordered = sorted(series.values(), key=lambda s: (s["version"], _ROUTE_ORDER.get(s["route"], 9)))
    answered = [s for s in ordered if s["route"] != "shadow"]
    shown_total = sum(sum(s["requests"]) for s in answered)
    split = [
        {
            "label": s["label"],
            "route": s["route"],
            "version": s["version"],
            "requests": sum(s["requests"]),
            "share": sum(s["requests"]) / shown_total if shown_total else math.nan,
        }
        for s in answered
    ]
    return {
        "name": name,
        "policy": _policy(name, settings, model),
        "totals": totals,
        "split": split,
        "shadow": [
            {"label": s["label"], "requests": sum(s["requests"])}
            for s in ordered
            if s["route"] == "shadow"
        ],
        "series": ordered,
        "bucket_s": width,
        "since_ms": since_us // 1000 if totals else None,
        "until_ms": last_us // 1000 if totals else None,
        "figures": _figures(ordered, answered, width),
        "errors_note": ERRORS_NOT_PERSISTED,
        "value_checks": settings.serving.value_checks,
    }


_LAYOUT: dict[str, Any] = {
    "height": 300,
    "margin": {"l": 60, "r": 20, "t": 30, "b": 50},
    "legend": {"orientation": "h", "y": -0.25},
    "xaxis": {"type": "date"},
}


def _figures(
    series: list[dict[str, Any]], answered: list[dict[str, Any]], width: int
) -> dict[str, Any]:
    if not series:
        return {}
    rate = {
        "data": [
            {"type": "scatter", "mode": "lines+markers", "name": s["label"], "x": s["time"],
             "y": s["rate"]}
            for s in series
        ],
        "layout": {**_LAYOUT, "yaxis": {"title": {"text": "requests / s"}, "rangemode": "tozero"},
                   "title": {"text": f"Request rate ({_span(width)} buckets)"}},
    }  # fmt: skip
    latency_traces = []
    for s in series:
        for key, dash in (("p50_ms", "solid"), ("p95_ms", "dot"), ("p99_ms", "dash")):
            latency_traces.append(
                {"type": "scatter", "mode": "lines", "name": f"{s['label']} {key[:3]}",
                 "x": s["time"], "y": s[key], "line": {"dash": dash}, "legendgroup": s["label"]}
            )  # fmt: skip
    latency = {
        "data": latency_traces,
        "layout": {**_LAYOUT, "yaxis": {"title": {"text": "latency (ms)"}, "rangemode": "tozero"},
                   "title": {"text": "Latency p50 / p95 / p99 per version"}},
    }  # fmt: skip
    totals: dict[str, int] = {}
    for s in answered:
        for t, n in zip(s["time"], s["requests"], strict=True):
            totals[t] = totals.get(t, 0) + n
    split = {
        "data": [
            {"type": "bar", "name": s["label"], "x": s["time"],
             "y": [n / totals[t] for t, n in zip(s["time"], s["requests"], strict=True)]}
            for s in answered
        ],
        "layout": {**_LAYOUT, "barmode": "stack",
                   "yaxis": {"title": {"text": "share of requests"}, "tickformat": ".0%",
                             "range": [0, 1]},
                   "title": {"text": "Traffic split (answered requests)"}},
    }  # fmt: skip
    return {"rate": rate, "latency": latency, "split": split}
