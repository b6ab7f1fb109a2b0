"""What the deployments pages show, from the prediction log and the traffic policy.

The log (``store.predlog.connect``, DuckDB) holds one row per predicted row of every
request the server *answered*: ``record_id`` names the request, ``route`` says whether
the primary, the canary or the shadow answered it, ``latency_us`` is the request's time
in the server. From it: requests per version and route, the request rate, the traffic
split and latency percentiles over time.

The log's ``errors`` view holds one row per request the server answered with a 4xx/5xx
status (``ErrorRecord``: status, error type, the version and route once chosen). The
error rate of a version and route is ``errors / (answered + errors)`` over the same
buckets; requests that failed before a version was chosen (unknown model, a body that
does not decode) have no version: they are counted per model, apart
(``UNVERSIONED_NOTE``). Shadow copies are never answers, so never errors either.

Times in the dicts are milliseconds since the epoch; latencies are milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from modelyard.config import Settings, TrafficSettings, duration_seconds
from modelyard.registry.entities import RegisteredModel
from modelyard.registry.traffic import StoredPolicy
from modelyard.store.predlog import connect
from modelyard.store.predlog.shipping import shipped_log

__all__ = [
    "BUCKET_WIDTHS_S",
    "ERRORS_NOTE",
    "MAX_BUCKETS",
    "UNVERSIONED_NOTE",
    "bucket_width",
    "deployment_detail",
    "deployments_index",
    "log_root",
    "parse_last",
]

#: the widths a time bucket may have (seconds): the smallest that keeps MAX_BUCKETS
BUCKET_WIDTHS_S = (1, 5, 15, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400, 28 * 86400)
MAX_BUCKETS = 60
ERRORS_NOTE = (
    "Error rate = errors / (answered + errors) per version and route: the server logs "
    "every request it answers with a 4xx or 5xx status beside the prediction log "
    "(status and error type, never the body)."
)
UNVERSIONED_NOTE = (
    "failed before a version was chosen (unknown model, a body that does not decode, "
    "a refused key): counted for the model, in no version's rate."
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


def _policy(
    name: str,
    settings: Settings,
    model: RegisteredModel | None,
    stored: Mapping[str, StoredPolicy],
) -> dict[str, Any]:
    """The policy served: the traffic store's, else ``serving.traffic``'s, else the default."""
    saved = stored.get(name)
    configured = saved is not None or name in settings.serving.traffic
    policy = (
        saved.policy if saved is not None else settings.serving.traffic.get(name, TrafficSettings())
    )
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
        "stored": None if saved is None else saved.to_dict(),
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


_ERROR_TOTALS = """
SELECT model, CAST(version AS BIGINT) AS version, route, count(*) AS errors,
       epoch_us(min(time)) AS first_us, epoch_us(max(time)) AS last_us
FROM errors GROUP BY ALL
"""


def _error_totals(con: duckdb.DuckDBPyConnection, model: str | None = None) -> list[dict[str, Any]]:
    """Errors per model, version and route (version and route None: before one was chosen)."""
    query = _ERROR_TOTALS
    if model is not None:
        query = query.replace("GROUP BY", "WHERE model = $m GROUP BY")
    rows = con.execute(query, {} if model is None else {"m": model}).fetchall()
    return [
        {
            "model": r[0],
            "version": None if r[1] is None else int(r[1]),
            "route": r[2],
            "errors": int(r[3]),
            "first_ms": int(r[4]) // 1000,
            "last_ms": int(r[5]) // 1000,
        }
        for r in rows
    ]


def _rate(errors: int, answered: int) -> float:
    """``errors / (answered + errors)``; NaN when there was no request at all."""
    return errors / (answered + errors) if answered + errors else math.nan


def deployments_index(
    settings: Settings,
    models: list[RegisteredModel],
    stored: Mapping[str, StoredPolicy] | None = None,
) -> dict[str, Any]:
    """Every model with logged requests, errors or a traffic policy, with totals per version.

    ``stored``: the traffic store's policies by model (they win over ``serving.traffic``).
    """
    stored = stored or {}
    registered = {m.name: m for m in models}
    con = connect(log_root(settings), shipped_log(settings))
    try:
        totals = _totals(con)
        errors = _error_totals(con)
    finally:
        con.close()
    names = sorted(
        {t["model"] for t in totals}
        | {e["model"] for e in errors}
        | set(settings.serving.traffic)
        | set(stored)
    )
    out = []
    for name in names:
        mine = [t for t in totals if t["model"] == name]
        failed = [e for e in errors if e["model"] == name]
        answered = sum(t["requests"] for t in mine if t["route"] != "shadow")
        error_count = sum(e["errors"] for e in failed)
        out.append(
            {
                "name": name,
                "policy": _policy(name, settings, registered.get(name), stored),
                "versions": mine,
                "requests": sum(t["requests"] for t in mine),
                "errors": error_count,
                "unversioned_errors": sum(e["errors"] for e in failed if e["version"] is None),
                "error_rate": _rate(error_count, answered),
                "last_ms": max((t["last_ms"] for t in mine + failed), default=None),
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
        "errors_note": ERRORS_NOTE,
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
_ERROR_SERIES = """
SELECT CAST(version AS BIGINT) AS version, route,
       (epoch_us(time) - $origin) // $width AS bucket, count(*) AS errors
FROM errors WHERE model = $m AND epoch_us(time) >= $since
GROUP BY ALL ORDER BY bucket
"""
_ERROR_KINDS = """
SELECT CAST(version AS BIGINT) AS version, route, status, error, count(*) AS errors
FROM errors WHERE model = $m AND epoch_us(time) >= $since
GROUP BY ALL ORDER BY errors DESC, status, error, version NULLS FIRST, route
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
    settings: Settings,
    name: str,
    model: RegisteredModel | None,
    last_s: int | None,
    stored: Mapping[str, StoredPolicy] | None = None,
) -> dict[str, Any] | None:
    """Totals, the traffic split and the per-bucket series of one model; None when the
    model has neither logged requests, a traffic policy nor a registry entry.

    ``last_s`` keeps the requests of the last that many seconds before the newest one.
    """
    con = connect(log_root(settings), shipped_log(settings))
    try:
        totals = _totals(con, name)
        error_totals = _error_totals(con, name)
        seen = totals + error_totals
        stored = stored or {}
        if (
            not seen
            and name not in settings.serving.traffic
            and name not in stored
            and model is None
        ):
            return None
        first_us = min((t["first_ms"] for t in seen), default=0) * 1000
        last_us = max((t["last_ms"] for t in seen), default=0) * 1000
        since_us = first_us if last_s is None else max(first_us, last_us - last_s * 1_000_000)
        width = bucket_width((last_us - since_us) / 1e6)
        width_us = width * 1_000_000
        origin = since_us - since_us % width_us
        params = {"m": name, "origin": origin, "width": width_us, "since": since_us}
        rows = con.execute(_SERIES, params).fetchall() if totals else []
        error_rows = con.execute(_ERROR_SERIES, params).fetchall() if error_totals else []
        kinds = (
            con.execute(_ERROR_KINDS, {"m": name, "since": since_us}).fetchall()
            if error_totals
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
    errors = _error_series(answered, error_rows, origin, width_us)
    return {
        "name": name,
        "policy": _policy(name, settings, model, stored),
        "totals": totals,
        "error_totals": error_totals,
        "split": split,
        "shadow": [
            {"label": s["label"], "requests": sum(s["requests"])}
            for s in ordered
            if s["route"] == "shadow"
        ],
        "series": ordered,
        "bucket_s": width,
        "since_ms": since_us // 1000 if seen else None,
        "until_ms": last_us // 1000 if seen else None,
        "figures": {**_figures(ordered, answered, width), **_error_figure(errors, width)},
        "errors": errors,
        "error_kinds": [
            {"version": v, "route": r, "status": int(s), "error": e, "errors": int(n)}
            for v, r, s, e, n in kinds
        ],
        "errors_note": ERRORS_NOTE,
        "unversioned_note": UNVERSIONED_NOTE,
        "value_checks": settings.serving.value_checks,
    }


def _error_series(
    answered: list[dict[str, Any]], rows: list[tuple[Any, ...]], origin: int, width_us: int
) -> dict[str, Any]:
    """Errors and the error rate per version and route over the buckets, and the errors
    of requests that failed before a version was chosen (counts only, for the model)."""
    answers: dict[tuple[int, str], dict[str, int]] = {
        (s["version"], s["route"]): dict(zip(s["time"], s["requests"], strict=True))
        for s in answered
    }
    failed: dict[tuple[int, str], dict[str, int]] = {}
    unversioned: dict[str, int] = {}
    for version, route, bucket, count in rows:
        time = _iso(origin + int(bucket) * width_us)
        if version is None:
            unversioned[time] = unversioned.get(time, 0) + int(count)
        else:
            key = (int(version), str(route))
            failed.setdefault(key, {})[time] = int(count)
    series = []
    order = sorted({*answers, *failed}, key=lambda k: (k[0], _ROUTE_ORDER.get(k[1], 9)))
    for version, route in order:
        ok = answers.get((version, route), {})
        bad = failed.get((version, route), {})
        times = sorted({*ok, *bad})  # ISO times in UTC sort in time order
        counts = [(ok.get(t, 0), bad.get(t, 0)) for t in times]
        answered_total = sum(a for a, _ in counts)
        error_total = sum(e for _, e in counts)
        series.append(
            {
                "label": _label(version, route),
                "version": version,
                "route": route,
                "time": times,
                "answered": [a for a, _ in counts],
                "errors": [e for _, e in counts],
                "rate": [_rate(e, a) for a, e in counts],
                "answered_total": answered_total,
                "errors_total": error_total,
                "rate_total": _rate(error_total, answered_total),
            }
        )
    times = sorted(unversioned)
    return {
        "series": series,
        "unversioned": {
            "time": times,
            "errors": [unversioned[t] for t in times],
            "total": sum(unversioned.values()),
        },
    }


def _error_figure(errors: dict[str, Any], width: int) -> dict[str, Any]:
    series, unversioned = errors["series"], errors["unversioned"]
    if not any(s["errors_total"] for s in series) and not unversioned["total"]:
        return {}
    data: list[dict[str, Any]] = [
        {"type": "scatter", "mode": "lines+markers", "name": s["label"], "x": s["time"],
         "y": s["rate"], "customdata": [[e, a] for e, a in zip(s["errors"], s["answered"],
                                                                  strict=True)],
         "hovertemplate": "%{y:.1%} (%{customdata[0]} errors, %{customdata[1]} answered)"}
        for s in series
    ]  # fmt: skip
    layout: dict[str, Any] = {
        **_LAYOUT,
        "yaxis": {"title": {"text": "error rate"}, "tickformat": ".1%", "rangemode": "tozero"},
        "title": {"text": f"Error rate per version ({_span(width)} buckets)"},
    }
    if unversioned["total"]:
        data.append(
            {"type": "bar", "name": "no version chosen (count)", "x": unversioned["time"],
             "y": unversioned["errors"], "yaxis": "y2", "opacity": 0.4}
        )  # fmt: skip
        layout["margin"] = {**_LAYOUT["margin"], "r": 70}  # room for the second axis
        layout["yaxis2"] = {
            "title": {"text": "errors, no version"},
            "overlaying": "y",
            "side": "right",
            "rangemode": "tozero",
        }
    return {"errors": {"data": data, "layout": layout}}


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
