"""What the monitoring pages show, as plain dicts and plotly figure dicts.

Everything comes from the stored monitoring results (``MonitorResults``: the windows
``modelyard monitor run`` computed, and the alert incidents) and the agent's records
(``ActionStore``: what was done about an incident). The figures are plain
``{"data", "layout"}`` dicts the page's script hands to ``Plotly.newPlot``:

- ``heatmap``: one row per feature, one column per window, the cell = effect / threshold
  (capped at ``RATIO_CAP``; 1 is the threshold), ✕ on a drifted cell;
- ``prediction``: each model output's effect / threshold per window;
- ``perf-N``: one realised metric with its 95% interval (matured windows only) and the
  CBPE estimate from the scores alone;
- ``coverage``: the share of each window's rows that have a label.

Windows of one length are shown at a time (``monitor run --window`` may have stored
several): the latest window's length unless another is asked for.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from modelyard.agent.records import Action, ActionStore
from modelyard.registry.entities import RegisteredModel
from modelyard.store.monitor_results import Incident, MonitorResults, WindowResult

__all__ = [
    "MAX_HEATMAP_ROWS",
    "RATIO_CAP",
    "heatmap_figure",
    "monitoring_index",
    "ratio",
    "version_detail",
    "window_lengths",
]

MAX_HEATMAP_ROWS = 60
RATIO_CAP = 3.0
BLUE, ORANGE, GREY = "#2458d6", "#ff7f0e", "#9e9e9e"
BAND = "rgba(36,88,214,0.18)"
ALARM_SHADE, PENDING_SHADE = "rgba(198,40,40,0.13)", "rgba(120,120,120,0.13)"


def _ms(us: int | None) -> int | None:
    return None if us is None else us // 1000


def _labels(windows: Sequence[WindowResult]) -> list[str]:
    """Each window's start (UTC): the day alone when every window starts at midnight."""
    daily = all(w.start_us % 86_400_000_000 == 0 for w in windows)
    shape = "%Y-%m-%d" if daily else "%Y-%m-%d %H:%M"
    return [datetime.fromtimestamp(w.start_us / 1e6, UTC).strftime(shape) for w in windows]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def ratio(column: Mapping[str, Any]) -> float | None:
    """A column's effect over its threshold, or None when either is missing.

    >>> ratio({"effect": 0.3, "threshold": 0.1}), ratio({"effect": 0.3}), ratio({})
    (2.9999999999999996, None, None)
    >>> ratio({"effect": 1e300, "threshold": 1e-100}) == sys.float_info.max
    True
    """
    effect, threshold = _number(column.get("effect")), _number(column.get("threshold"))
    if effect is None or threshold is None or threshold <= 0:
        return None
    # past float64 (a huge effect over a tiny threshold): the largest finite ratio, still
    # "far past its threshold", and JSON a browser parses (it refuses Infinity)
    return max(-sys.float_info.max, min(sys.float_info.max, effect / threshold))


def monitoring_index(results: MonitorResults, models: Sequence[RegisteredModel]) -> dict[str, Any]:
    """Every monitored model version, its aliases and what is stored for it."""
    aliases: dict[tuple[str, int], list[str]] = {}
    for model in models:
        for alias, version in model.aliases.items():
            aliases.setdefault((model.name, version), []).append(alias)
    rows = [
        {
            "model": m.model,
            "version": m.version,
            "aliases": sorted(aliases.get((m.model, m.version), [])),
            "drift_windows": m.drift_windows,
            "performance_windows": m.performance_windows,
            "alarms": m.alarms,
            "last_end_ms": _ms(m.last_end_us) if m.last_end_us else None,
            "open_incidents": m.open_incidents,
        }
        for m in results.monitored()
    ]
    return {"versions": rows}


def window_lengths(windows: Sequence[WindowResult]) -> list[int]:
    """The distinct window lengths (seconds), the latest window's first."""
    lengths: list[int] = []
    for w in sorted(windows, key=lambda w: (w.end_us, w.start_us), reverse=True):
        length = (w.end_us - w.start_us) // 1_000_000
        if length not in lengths:
            lengths.append(length)
    return lengths


def _of_length(windows: Sequence[WindowResult], length_s: int) -> list[WindowResult]:
    return [w for w in windows if (w.end_us - w.start_us) // 1_000_000 == length_s]


def _shapes(indices: Sequence[int], colour: str, labels: Sequence[str]) -> list[dict[str, Any]]:
    """Shaded columns behind the windows ``indices`` (category x axis)."""
    return [
        {"type": "rect", "xref": "x", "yref": "paper", "x0": i - 0.5, "x1": i + 0.5, "y0": 0,
         "y1": 1, "fillcolor": colour, "line": {"width": 0}, "layer": "below"}
        for i in indices
        if i < len(labels)
    ]  # fmt: skip


def _layout(height: int, ytitle: str, **extra: Any) -> dict[str, Any]:
    return {
        "height": height,
        "margin": {"l": 70, "r": 20, "t": 20, "b": 60},
        "xaxis": {"type": "category"},
        "yaxis": {"title": {"text": ytitle}},
        "legend": {"orientation": "h", "y": -0.3},
        **extra,
    }


def _hover(column: Mapping[str, Any]) -> list[str]:
    def fmt(value: Any, spec: str) -> str:
        number = _number(value)
        return "—" if number is None else format(number, spec)

    drifted = column.get("drifted")
    return [
        fmt(column.get("effect"), ".3g"),
        fmt(column.get("threshold"), ".3g"),
        fmt(column.get("p_adjusted"), ".2g"),
        "not compared" if not column else ("drifted" if drifted else "no drift"),
    ]


_HOVER = (
    "%{y} · %{x}<br>effect / threshold %{z:.2f}<br>effect %{customdata[0]}, threshold "
    "%{customdata[1]}<br>adjusted p %{customdata[2]} · %{customdata[3]}<extra></extra>"
)


def heatmap_figure(windows: Sequence[WindowResult]) -> dict[str, Any] | None:
    """Features x windows, effect / threshold per cell; None when no feature was compared.

    Rows: the latest window's ranked causes first, then the other features in order of
    appearance; at most ``MAX_HEATMAP_ROWS``.
    """
    summaries = [w.summary for w in windows]
    found: list[str] = []
    for summary in summaries:
        for name in _mapping(summary.get("columns")):
            if name not in found:
                found.append(name)
    if not found:
        return None
    ranked = summaries[-1].get("ranked") if summaries else None
    first = [str(n) for n in ranked if n in found] if isinstance(ranked, list) else []
    names = first + [n for n in found if n not in first]
    shown = names[:MAX_HEATMAP_ROWS]
    labels = _labels(windows)
    cells = [[_mapping(_mapping(s.get("columns")).get(n)) for s in summaries] for n in shown]
    heatmap = {
        "type": "heatmap",
        "z": [[ratio(c) for c in row] for row in cells],
        "x": labels,
        "y": shown,
        "zmin": 0.0,
        "zmax": RATIO_CAP,
        "colorscale": [[0.0, "#f7fbff"], [1 / RATIO_CAP, "#fdd49e"], [1.0, "#b30000"]],
        "colorbar": {"title": {"text": "effect / threshold"}},
        "text": [["✕" if c.get("drifted") else "" for c in row] for row in cells],
        "texttemplate": "%{text}",
        "customdata": [[_hover(c) for c in row] for row in cells],
        "hovertemplate": _HOVER,
        "xgap": 1,
        "ygap": 1,
    }
    layout = _layout(120 + 22 * len(shown), "")
    layout["yaxis"] = {"autorange": "reversed", "type": "category", "automargin": True}
    return {"data": [heatmap], "layout": layout, "rows": len(shown), "features": len(names)}


def _prediction_figure(windows: Sequence[WindowResult]) -> dict[str, Any] | None:
    summaries = [w.summary for w in windows]
    names: list[str] = []
    for summary in summaries:
        for name in _mapping(summary.get("outputs")):
            if name not in names:
                names.append(name)
    if not names:
        return None
    labels = _labels(windows)
    traces = [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": name,
            "x": labels,
            "y": [ratio(_mapping(_mapping(s.get("outputs")).get(name))) for s in summaries],
        }
        for name in names
    ]
    alarms = [i for i, w in enumerate(windows) if w.alarm]
    shapes = _shapes(alarms, ALARM_SHADE, labels)
    shapes.append(
        {"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": 1, "y1": 1,
         "line": {"dash": "dash", "color": GREY}}
    )  # fmt: skip
    return {"data": traces, "layout": _layout(280, "effect / threshold", shapes=shapes)}


def _metric_figure(metric: str, windows: Sequence[WindowResult]) -> dict[str, Any]:
    labels = _labels(windows)
    realised = [
        _mapping(_mapping(w.summary.get("metrics")).get(metric)) if w.summary.get("matured") else {}
        for w in windows
    ]

    def values(key: str) -> list[float | None]:
        return [_number(r.get(key)) for r in realised]

    band = {"type": "scatter", "mode": "lines", "line": {"width": 0}, "hoverinfo": "skip"}
    traces = [
        {**band, "x": labels, "y": values("high"), "showlegend": False},
        {**band, "x": labels, "y": values("low"), "name": "95% interval", "fill": "tonexty",
         "fillcolor": BAND},
        {"type": "scatter", "mode": "lines+markers", "name": "realised", "x": labels,
         "y": values("value"), "line": {"color": BLUE}},
        {"type": "scatter", "mode": "lines+markers", "name": "estimated (CBPE)", "x": labels,
         "y": [_number(_mapping(w.summary.get("estimated")).get(metric)) for w in windows],
         "line": {"dash": "dash", "color": ORANGE}},
    ]  # fmt: skip
    pending = [i for i, w in enumerate(windows) if not w.summary.get("matured")]
    return {
        "data": traces,
        "layout": _layout(280, metric, shapes=_shapes(pending, PENDING_SHADE, labels)),
    }


def _coverage_figure(windows: Sequence[WindowResult]) -> dict[str, Any]:
    labels = _labels(windows)
    bars = {
        "type": "bar",
        "x": labels,
        "y": [_number(w.summary.get("coverage")) for w in windows],
        "marker": {"color": [BLUE if w.summary.get("matured") else GREY for w in windows]},
        "name": "label coverage",
    }
    layout = _layout(220, "label coverage")
    layout["yaxis"] = {"range": [0, 1], "tickformat": ".0%", "title": {"text": "label coverage"}}
    return {"data": [bars], "layout": layout}


def _action(action: Action) -> dict[str, Any]:
    return {
        "id": action.id,
        "kind": action.kind,
        "state": action.state,
        "champion_version": action.champion_version,
        "candidate_version": action.candidate_version,
        "pipeline": action.pipeline,
        "decision": action.decision,
        "reason": action.reason,
        "created_ms": _ms(action.created_us),
        "updated_ms": _ms(action.updated_us),
        "created_by": action.created_by,
    }


def _incident(incident: Incident, actions: Sequence[Action]) -> dict[str, Any]:
    detail = {k: v for k, v in incident.detail.items() if k != "acknowledgements"}
    acked = incident.acknowledged
    return {
        "id": incident.id,
        "rule": incident.rule,
        "cause": incident.cause,
        "state": incident.state,
        "opened_ms": _ms(incident.opened_at_us),
        "updated_ms": _ms(incident.updated_at_us),
        "detail": detail,
        "acknowledged": None if acked is None else {**acked, "at_ms": _ms(acked.get("at_us"))},
        "acknowledgements": [
            {**a, "at_ms": _ms(a.get("at_us")) if isinstance(a.get("at_us"), int) else None}
            for a in incident.acknowledgements
        ],
        "actions": [_action(a) for a in actions if a.incident_id == incident.id],
    }


def version_detail(
    results: MonitorResults,
    actions: ActionStore,
    model: str,
    version: int,
    length_s: int | None = None,
) -> dict[str, Any]:
    """Drift, performance, incidents and agent actions of one monitored model version.

    ``length_s`` picks the window length shown (default: the latest window's); a length
    with no stored window shows nothing, and ``lengths`` lists the ones there are.
    """
    drift_all = results.windows(model, version, "drift")
    perf_all = results.windows(model, version, "performance")
    lengths = window_lengths([*drift_all, *perf_all])
    length = length_s if length_s is not None else (lengths[0] if lengths else None)
    drift = _of_length(drift_all, length) if length is not None else []
    perf = _of_length(perf_all, length) if length is not None else []
    figures: dict[str, Any] = {}
    heatmap = heatmap_figure(drift)
    if heatmap is not None:
        figures["heatmap"] = {"data": heatmap["data"], "layout": heatmap["layout"]}
    prediction = _prediction_figure(drift)
    if prediction is not None:
        figures["prediction"] = prediction
    metrics: list[str] = []
    for w in perf:
        for name in [*_mapping(w.summary.get("metrics")), *_mapping(w.summary.get("estimated"))]:
            if name not in metrics:
                metrics.append(name)
    for i, metric in enumerate(metrics):
        figures[f"perf-{i}"] = _metric_figure(metric, perf)
    if perf:
        figures["coverage"] = _coverage_figure(perf)
    incidents = results.incidents(model, version)
    agent = actions.list(model, limit=500) if incidents else []
    shown = [_incident(i, agent) for i in incidents]
    latest = drift[-1] if drift else None
    return {
        "model": model,
        "version": version,
        "lengths": lengths,
        "length_s": length,
        "drift_windows": len(drift),
        "performance_windows": len(perf),
        "latest": None
        if latest is None
        else {
            "start_ms": _ms(latest.start_us),
            "end_ms": _ms(latest.end_us),
            "rows": latest.rows,
            "alarm": latest.alarm,
            "prediction_drift": bool(latest.summary.get("prediction_drift")),
            "drifted": list(latest.summary.get("drifted_columns") or []),
            "missing": list(latest.summary.get("missing_columns") or []),
        },
        "heatmap_rows": heatmap["rows"] if heatmap else 0,
        "heatmap_features": heatmap["features"] if heatmap else 0,
        "metrics": metrics,
        "figures": figures,
        "open": [i for i in shown if i["state"] == "open"],
        "resolved": [i for i in shown if i["state"] != "open"],
        "awaiting": [
            _action(a) for a in actions.list(model, states=["awaiting_approval"], limit=50)
        ],
    }
