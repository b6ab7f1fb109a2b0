"""The monitoring report as one self-contained HTML page: drift, causes, performance.

``render_report`` turns the monitor's JSON-able summary (drift per window, ranked causes,
distributions, performance, incidents) into a single document that works offline:
plotly.js is embedded once, inline, and no resource is loaded from a URL. It is pure
presentation: every number arrives computed; any part may be missing or empty, and then
its section says so instead of failing. Every string from ``data`` is escaped.

>>> page = render_report({"model": "churn", "version": 3, "windows": []})
>>> page.startswith("<!DOCTYPE html>") and "churn v3" in page and "No drift windows" in page
True
"""

from __future__ import annotations

import html
import itertools
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go  # type: ignore[import-untyped]
from plotly.offline import get_plotlyjs  # type: ignore[import-untyped]

__all__ = ["render_report", "write_report"]

MAX_HEATMAP_ROWS = 60
MAX_CAUSES = 50
MAX_DISTRIBUTIONS = 30
RATIO_CAP = 3.0
"""The heatmap's colour scale stops at 3x the threshold, so one huge shift cannot wash
out every moderate one."""

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
RED, GREY, BLUE, LIGHT_BLUE = "#d62728", "#9e9e9e", "#1f77b4", "rgba(31,119,180,0.18)"
ALARM_SHADE, PENDING_SHADE = "rgba(214,39,40,0.13)", "rgba(120,120,120,0.13)"

CSS = f"""
body {{ font-family: {FONT}; margin: 0 auto; max-width: 1200px; padding: 0 1.5rem 3rem;
  color: #222; line-height: 1.45; }}
h1 {{ margin-bottom: 0.2rem; }} h2 {{ border-bottom: 1px solid #ddd; padding-bottom: 0.2rem;
  margin-top: 2.5rem; }}
nav a {{ margin-right: 1rem; }} .meta {{ color: #555; margin: 0.2rem 0 1rem; }}
.banner {{ padding: 0.7rem 1rem; border-radius: 6px; font-weight: 600; }}
.banner.alarm {{ background: #fde2e1; border: 1px solid {RED}; }}
.banner.ok {{ background: #e3f4e1; border: 1px solid #2ca02c; }}
.banner.none {{ background: #eee; border: 1px solid #bbb; }}
table {{ border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; }}
th {{ background: #f4f4f4; }} td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
tr.drifted td, tr.open td {{ background: #fff1f0; }}
figure {{ margin: 0.5rem 0 1.5rem; }} figcaption, .note {{ color: #555; font-size: 0.9rem; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr));
  gap: 0.5rem 1rem; }}
.grid h3 {{ font-size: 0.95rem; margin: 0.5rem 0 0; }}
"""

SECTIONS = (
    ("drift", "Drift over time"),
    ("causes", "Why: ranked causes"),
    ("distributions", "Reference vs current"),
    ("performance", "Performance over time"),
    ("incidents", "Incidents"),
    ("findings", "Findings"),
)


def render_report(data: Mapping[str, Any]) -> str:
    """The whole report as one offline HTML document (plotly.js embedded once).

    >>> page = render_report({})
    >>> page.count("<script src=") == 0 and "No drift windows" in page
    True
    """
    windows = _mappings(data.get("windows"))
    causes = _mappings(data.get("causes"))
    title = _title(data)
    body = [
        _header(data, windows, title),
        _drift_section(windows, [str(cause.get("name")) for cause in causes]),
        _causes_section(causes, _mapping(data.get("domain_classifier"))),
        _distributions_section(_mapping(data.get("distributions")), causes, windows),
        _performance_section(_mappings(data.get("performance"))),
        _incidents_section(_mappings(data.get("incidents"))),
        _findings_section(data.get("findings"), windows),
    ]
    return _page(title, "\n".join(body))


def write_report(data: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Render the report and write it as UTF-8 to ``path`` (parent folders created).

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> written = write_report({"model": "churn"}, folder / "reports" / "churn.html")
    >>> written.name, written.stat().st_size > 1_000_000
    ('churn.html', True)
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_report(data), encoding="utf-8")
    return target


# -- page and header ------------------------------------------------------------------


def _page(title: str, body: str) -> str:
    # The "local" MathJax config is what plotly's own offline pages set: no CDN fetch.
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n<style>{CSS}</style>\n"
        "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>\n"
        f'<script type="text/javascript">{get_plotlyjs()}</script>\n'
        f"</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _title(data: Mapping[str, Any]) -> str:
    model = _text(data.get("model"), "unnamed model")
    version = data.get("version")
    return f"Monitoring report: {model}" + (f" v{_text(version)}" if version is not None else "")


def _header(data: Mapping[str, Any], windows: list[Mapping[str, Any]], title: str) -> str:
    reference = _mapping(data.get("reference"))
    source = reference.get("source")
    meta = [
        f"generated {_text(data.get('generated_at'), 'at an unknown time')}",
        f"reference: {_fmt(reference.get('rows'))} rows"
        + (f" ({_text(source)})" if source else ""),
        f"{len(windows)} window{'s' if len(windows) != 1 else ''}",
    ]
    nav = " ".join(f'<a href="#{anchor}">{name}</a>' for anchor, name in SECTIONS)
    return (
        f"<header>\n<h1>{title}</h1>\n<p class='meta'>{' · '.join(meta)}</p>\n"
        f"{_banner(windows, _mappings(data.get('incidents')))}\n<nav>{nav}</nav>\n</header>"
    )


def _banner(windows: list[Mapping[str, Any]], incidents: list[Mapping[str, Any]]) -> str:
    open_count = sum(1 for incident in incidents if incident.get("state") == "open")
    opened = f"{open_count} open incident{'s' if open_count != 1 else ''}"
    if not windows:
        return f"<p class='banner none'>No windows monitored yet · {opened}</p>"
    latest = windows[-1]
    drifted = len(_drifted_features(_mapping(latest.get("drift"))))
    state = "alarm" if latest.get("alarm") else "ok"
    headline = "ALARM in the latest window" if state == "alarm" else "No alarm in the latest window"
    features = f"{drifted} drifted feature{'s' if drifted != 1 else ''}"
    return f"<p class='banner {state}'>{headline} · {features} · {opened}</p>"


def _drifted_features(drift: Mapping[str, Any]) -> list[str]:
    listed = drift.get("drifted_columns")
    if isinstance(listed, list):
        return [str(name) for name in listed]
    columns = _mapping(drift.get("columns"))
    return [str(name) for name, c in columns.items() if _mapping(c).get("drifted")]


# -- drift over time ------------------------------------------------------------------


def _drift_section(windows: list[Mapping[str, Any]], ranked: list[str]) -> str:
    if not windows:
        return _section("drift", _note("No drift windows: nothing compared yet."))
    labels = _window_labels(windows)
    drifts = [_mapping(window.get("drift")) for window in windows]
    heatmap = _heatmap_figure(labels, drifts, ranked)
    return _section("drift", _prediction_figure(windows, labels, drifts) + "\n" + heatmap)


def _prediction_figure(
    windows: list[Mapping[str, Any]], labels: list[str], drifts: list[Mapping[str, Any]]
) -> str:
    names = _union(_mapping(drift.get("outputs")) for drift in drifts)
    if not names:
        return _note("No model outputs were compared: prediction drift not checked.")
    figure = go.Figure()
    for name in names:
        columns = [_mapping(_mapping(d.get("outputs")).get(name)) for d in drifts]
        figure.add_trace(
            go.Scatter(
                x=labels,
                y=[_ratio(column) for column in columns],
                name=_esc(name),
                mode="lines+markers",
                customdata=[_hover_fields(column) for column in columns],
                hovertemplate=_drift_hover("%{fullData.name}", "%{y:.2f}"),
            )
        )
    alarms = [i for i, window in enumerate(windows) if window.get("alarm")]
    figure.add_hline(y=1.0, line_dash="dash", line_color=GREY)
    _layout(figure, 260, shaded=[(i, ALARM_SHADE) for i in alarms], ytitle="effect / threshold")
    return _figure(
        figure,
        "Prediction drift per window: each model output's effect divided by its threshold; "
        "above the dashed line at 1 the shift is of practical size. Red-shaded windows "
        "raised the alarm.",
    )


def _heatmap_figure(labels: list[str], drifts: list[Mapping[str, Any]], ranked: list[str]) -> str:
    """Rows in causes order (most important on top), then features in order of appearance."""
    found = _union(_mapping(drift.get("columns")) for drift in drifts)
    present = set(found)
    names = [name for name in _union([ranked, found]) if name in present]
    if not names:
        return _note("No feature drift in any window.")
    shown = names[:MAX_HEATMAP_ROWS]
    cells = [[_mapping(_mapping(d.get("columns")).get(name)) for d in drifts] for name in shown]
    heatmap = go.Heatmap(
        z=[[_ratio(cell) for cell in row] for row in cells],
        x=labels,
        y=[_esc(name) for name in shown],
        zmin=0.0,
        zmax=RATIO_CAP,
        colorscale=[[0.0, "#f7fbff"], [1 / RATIO_CAP, "#fdd49e"], [1.0, "#b30000"]],
        colorbar={"title": {"text": "effect / threshold"}},
        text=[["✕" if cell.get("drifted") else "" for cell in row] for row in cells],
        texttemplate="%{text}",
        customdata=[[_hover_fields(cell) for cell in row] for row in cells],
        hovertemplate=_drift_hover("%{y}", "%{z:.2f}"),
        xgap=1,
        ygap=1,
    )
    figure = go.Figure(heatmap)
    _layout(figure, 120 + 22 * len(shown))
    figure.update_yaxes(autorange="reversed", type="category")
    more = f" Showing {len(shown)} of {len(names)} features." if len(names) > len(shown) else ""
    return _figure(
        figure,
        "Feature drift: one row per feature, one column per window, colour = effect / "
        f"threshold (capped at {RATIO_CAP:g}; 1 is the threshold). ✕ marks a drifted cell "
        f"(distribution or missing rate); hover for the effect and adjusted p-value.{more}",
    )


def _ratio(column: Mapping[str, Any]) -> float | None:
    effect, threshold = _number(column.get("effect")), _number(column.get("threshold"))
    if effect is None or threshold is None or threshold <= 0:
        return None
    return effect / threshold


def _hover_fields(column: Mapping[str, Any]) -> list[str]:
    return [
        _fmt(column.get("effect")),
        _fmt(column.get("threshold")),
        _fmt(column.get("p_adjusted"), ".2g"),
        _fmt(column.get("drifted")) if column else "not compared",
    ]


def _drift_hover(name: str, value: str) -> str:
    return (
        f"<b>{name}</b> · %{{x}}<br>effect / threshold {value}<br>"
        "effect %{customdata[0]} · threshold %{customdata[1]}<br>"
        "p adjusted %{customdata[2]} · drifted %{customdata[3]}<extra></extra>"
    )


# -- causes ---------------------------------------------------------------------------


def _causes_section(causes: list[Mapping[str, Any]], domain: Mapping[str, Any]) -> str:
    parts = [_causes_table(causes[:MAX_CAUSES], len(causes))] if causes else []
    if causes:
        parts.append(_scores_figure(causes[:MAX_DISTRIBUTIONS]))
    else:
        parts.append(_note("No ranked causes for the latest window."))
    parts.append(_domain_block(domain))
    return _section("causes", "\n".join(parts))


def _causes_table(causes: list[Mapping[str, Any]], total: int) -> str:
    header = ["#", "feature", "kind", "effect", "threshold", "importance", "score"]
    rows = []
    for rank, cause in enumerate(causes, start=1):
        effect = f"{_text(cause.get('effect_name'), 'effect')} = {_fmt(cause.get('effect'))}"
        cells = [str(rank), _text(cause.get("name")), _text(cause.get("kind")), effect]
        numbers = [_fmt(cause.get(key)) for key in ("threshold", "importance", "score")]
        cells += [*numbers, _fmt(cause.get("p_adjusted"), ".2g"), _fmt(cause.get("drifted"))]
        rows.append((cells, "drifted" if cause.get("drifted") else ""))
    more = (
        f"<p class='note'>Showing {len(causes)} of {total} causes.</p>"
        if total > len(causes)
        else ""
    )
    return _table("causes-table", [*header, "p adjusted", "drifted"], rows) + more


def _scores_figure(causes: list[Mapping[str, Any]]) -> str:
    bars = go.Bar(
        x=[_number(cause.get("score")) for cause in causes],
        y=[_esc(cause.get("name")) for cause in causes],
        orientation="h",
        marker_color=[RED if cause.get("drifted") else GREY for cause in causes],
        hovertemplate="<b>%{y}</b><br>score %{x:.3g}<extra></extra>",
    )
    figure = go.Figure(bars)
    _layout(figure, 90 + 22 * len(causes), xtitle="score (effect x importance)", category_x=False)
    figure.update_yaxes(autorange="reversed", type="category")
    return _figure(
        figure,
        "Cause scores, most important first: the effect relative to its practical minimum "
        "times the feature's importance. Red bars drifted, grey did not.",
    )


def _domain_block(domain: Mapping[str, Any]) -> str:
    if not domain:
        return _note("No domain classifier result.")
    auc = (
        f"AUC {_fmt(domain.get('auc'))} (95% CI {_fmt(domain.get('ci_low'))} to "
        f"{_fmt(domain.get('ci_high'))}), drifted: {_fmt(domain.get('drifted'))}"
    )
    importances = _mapping(domain.get("importances"))
    ranked = sorted(importances.items(), key=lambda item: -(_number(item[1]) or 0.0))[:10]
    rows = [([_text(name), _fmt(value)], "") for name, value in ranked]
    table = _table("domain-table", ["feature", "importance"], rows) if rows else ""
    return (
        f"<h3>Domain classifier</h3>\n<p>{auc}.</p>\n{table}"
        "<p class='note'>A classifier trained to tell reference rows from the window's: an "
        "AUC near 0.5 means it finds no difference; the top permutation importances show "
        "which features let it separate them.</p>"
    )


# -- distributions --------------------------------------------------------------------


def _distributions_section(
    distributions: Mapping[str, Any],
    causes: list[Mapping[str, Any]],
    windows: list[Mapping[str, Any]],
) -> str:
    if not distributions:
        return _section("distributions", _note("No distributions for the latest window."))
    names = _distribution_order(distributions, causes, windows)
    cells = [_distribution_cell(name, _mapping(distributions[name])) for name, _ in names]
    drifted = {name for name, is_drifted in names if is_drifted}
    more = len(distributions) - len(names)
    note = f" {more} more not shown." if more > 0 else ""
    legend = (
        "Latest window (blue) against the reference (grey), drifted features first "
        f"({len(drifted)} of them). Numeric: share of rows per unit of x over the bins "
        f"(share / bin width); categorical: share of rows per category.{note}"
    )
    body = f"<div class='grid'>\n{''.join(cells)}</div>\n<p class='note'>{legend}</p>"
    return _section("distributions", body)


def _distribution_order(
    distributions: Mapping[str, Any],
    causes: list[Mapping[str, Any]],
    windows: list[Mapping[str, Any]],
) -> list[tuple[str, bool]]:
    """Names with their drifted flag: drifted first, then in causes order, then as given."""
    rank = {str(cause.get("name")): i for i, cause in enumerate(causes)}
    drifted = {str(c.get("name")) for c in causes if c.get("drifted")}
    latest = _mapping(windows[-1].get("drift")) if windows else {}
    for group in ("columns", "outputs"):
        for name, column in _mapping(latest.get(group)).items():
            if _mapping(column).get("drifted"):
                drifted.add(str(name))
    order = sorted(
        enumerate(map(str, distributions)),
        key=lambda item: (item[1] not in drifted, rank.get(item[1], len(rank)), item[0]),
    )
    return [(name, name in drifted) for _, name in order[:MAX_DISTRIBUTIONS]]


def _distribution_cell(name: str, distribution: Mapping[str, Any]) -> str:
    reference = _numbers(distribution.get("reference"))
    current = _numbers(distribution.get("current"))
    if distribution.get("kind") == "numeric":
        figure = _numeric_figure(_numbers(distribution.get("edges")), reference, current)
    else:
        categories = [_esc(c) for c in _sequence(distribution.get("categories"))]
        figure = _bars_figure(categories, reference, current)
    _layout(figure, 230, legend=True, category_x=False)
    chart = figure.to_html(full_html=False, include_plotlyjs=False)
    return f"<div><h3>{_esc(name)}</h3>{chart}</div>\n"


def _numeric_figure(
    edges: list[float | None], reference: list[float | None], current: list[float | None]
) -> go.Figure:
    widths = [_width(low, high) for low, high in itertools.pairwise(edges)]
    if len(edges) != len(reference) + 1 or None in widths or len(current) != len(reference):
        return _bars_figure(_bin_labels(edges, len(reference)), reference, current)
    figure = go.Figure()
    for name, shares, style in (("reference", reference, GREY), ("current", current, BLUE)):
        density = [_divide(share, width) for share, width in zip(shares, widths, strict=True)]
        figure.add_trace(
            go.Scatter(
                x=edges,
                y=[*density, density[-1] if density else None],
                name=name,
                line={"shape": "hv", "color": style, "width": 2},
                fill="tozeroy" if name == "reference" else None,
                hovertemplate=f"{name}: %{{y:.3g}} per unit from %{{x:.4g}}<extra></extra>",
            )
        )
    return figure


def _bars_figure(
    categories: list[str], reference: list[float | None], current: list[float | None]
) -> go.Figure:
    figure = go.Figure()
    for name, shares, colour in (("reference", reference, GREY), ("current", current, BLUE)):
        figure.add_trace(
            go.Bar(
                x=categories[: len(shares)],
                y=shares,
                name=name,
                marker_color=colour,
                hovertemplate=f"{name}: %{{y:.1%}} in %{{x}}<extra></extra>",
            )
        )
    figure.update_layout(barmode="group")
    figure.update_xaxes(type="category")
    return figure


def _bin_labels(edges: list[float | None], count: int) -> list[str]:
    if len(edges) == count - 1 and edges and None not in edges:  # interior edges only
        text = [f"{edge:.3g}" for edge in edges if edge is not None]
        inner = [f"{low} to {high}" for low, high in itertools.pairwise(text)]
        return [f"< {text[0]}", *inner, f">= {text[-1]}"]
    return [f"bin {i + 1}" for i in range(count)]


def _width(low: float | None, high: float | None) -> float | None:
    if low is None or high is None or not high > low:
        return None
    return high - low


def _divide(share: float | None, width: float | None) -> float | None:
    return None if share is None or not width else share / width


# -- performance ----------------------------------------------------------------------


def _performance_section(windows: list[Mapping[str, Any]]) -> str:
    if not windows:
        return _section("performance", _note("No performance windows."))
    labels = _window_labels(windows)
    pending = [(i, PENDING_SHADE) for i, w in enumerate(windows) if not w.get("matured")]
    metrics = _union([*_mapping(w.get("metrics")), *_mapping(w.get("estimated"))] for w in windows)
    parts = [_metric_figure(m, windows, labels, pending) for m in metrics]
    if not metrics:
        parts.append(_note("No realised or estimated metric in any window."))
    parts.append(_coverage_figure(windows, labels))
    return _section("performance", "\n".join(parts))


def _metric_figure(
    metric: str,
    windows: list[Mapping[str, Any]],
    labels: list[str],
    pending: list[tuple[int, str]],
) -> str:
    realised = [
        _mapping(_mapping(w.get("metrics")).get(metric)) if w.get("matured") else {}
        for w in windows
    ]
    estimated = [_number(_mapping(w.get("estimated")).get(metric)) for w in windows]
    figure = go.Figure()
    band = {"mode": "lines", "line": {"width": 0}, "hoverinfo": "skip", "connectgaps": False}
    figure.add_trace(go.Scatter(x=labels, y=_field(realised, "high"), showlegend=False, **band))
    figure.add_trace(
        go.Scatter(
            x=labels, y=_field(realised, "low"), name="95% CI", fill="tonexty",
            fillcolor=LIGHT_BLUE, **band,
        )
    )  # fmt: skip
    figure.add_trace(
        go.Scatter(x=labels, y=_field(realised, "value"), name="realised", line_color=BLUE)
    )
    figure.add_trace(
        go.Scatter(
            x=labels, y=estimated, name="estimated (CBPE)",
            line={"dash": "dash", "color": "#ff7f0e"},
        )
    )  # fmt: skip
    _layout(figure, 270, shaded=pending, ytitle=_esc(metric), legend=True)
    return f"<h3>{_esc(metric)}</h3>\n" + _figure(
        figure,
        f"{_esc(metric)} per window: realised on labelled rows (blue, with its 95% interval) "
        "only where labels have matured; the dashed line is the estimate from the model's "
        "scores alone (CBPE). Grey-shaded windows are not matured yet.",
    )


def _coverage_figure(windows: list[Mapping[str, Any]], labels: list[str]) -> str:
    bars = go.Bar(
        x=labels,
        y=[_number(w.get("coverage")) for w in windows],
        marker_color=[BLUE if w.get("matured") else GREY for w in windows],
        customdata=[[_fmt(w.get("labelled")), _fmt(w.get("rows"))] for w in windows],
        hovertemplate="%{x}<br>coverage %{y:.0%}<br>%{customdata[0]} of %{customdata[1]} "
        "rows labelled<extra></extra>",
    )
    figure = go.Figure(bars)
    _layout(figure, 200, ytitle="label coverage")
    figure.update_yaxes(range=[0, 1], tickformat=".0%")
    return _figure(
        figure,
        "Share of each window's rows with a label; blue windows have matured, grey are "
        "still waiting for labels.",
    )


def _field(rows: list[Mapping[str, Any]], key: str) -> list[float | None]:
    return [_number(row.get(key)) for row in rows]


# -- incidents and findings -----------------------------------------------------------


def _incidents_section(incidents: list[Mapping[str, Any]]) -> str:
    if not incidents:
        return _section("incidents", _note("No incidents."))
    header = ["rule", "cause", "state", "opened", "updated", "detail"]
    rows = []
    for incident in incidents:
        cells = [_text(incident.get(key)) for key in ("rule", "cause", "state")]
        cells += [_text(incident.get("opened_at")), _text(incident.get("updated_at"))]
        cells.append(_detail(incident.get("detail")))
        rows.append((cells, "open" if incident.get("state") == "open" else ""))
    return _section("incidents", _table("incidents-table", header, rows))


def _detail(detail: Any) -> str:
    if detail in (None, {}, []):
        return ""
    text = json.dumps(detail, default=str, sort_keys=True, ensure_ascii=False)
    return _esc(text if len(text) <= 300 else text[:297] + "...")


def _findings_section(findings: Any, windows: list[Mapping[str, Any]]) -> str:
    notes = [str(item) for item in _sequence(findings)]
    latest = _mapping(windows[-1].get("drift")) if windows else {}
    engine = [str(item) for item in _sequence(latest.get("findings"))]
    parts = [_list(notes) if notes else _note("No findings.")]
    if engine:
        parts += ["<h3>From the latest window's drift report</h3>", _list(engine)]
    return _section("findings", "\n".join(parts))


# -- building blocks ------------------------------------------------------------------


def _section(anchor: str, body: str) -> str:
    title = dict(SECTIONS)[anchor]
    return f'<section id="{anchor}">\n<h2>{title}</h2>\n{body}\n</section>'


def _note(text: str) -> str:
    return f"<p class='note'>{text}</p>"


def _list(items: list[str]) -> str:
    return "<ul>\n" + "".join(f"<li>{_esc(item)}</li>\n" for item in items) + "</ul>"


def _table(table_id: str, header: list[str], rows: list[tuple[list[str], str]]) -> str:
    """Cells arrive escaped; a cell that reads as a number is right-aligned."""
    head = "".join(f"<th>{name}</th>" for name in header)
    body = "".join(
        f"<tr class='{css}'>" + "".join(_cell(cell) for cell in cells) + "</tr>\n"
        for cells, css in rows
    )
    head_row = f"<thead><tr>{head}</tr></thead>"
    return f"<table id='{table_id}'>\n{head_row}\n<tbody>\n{body}</tbody>\n</table>"


def _cell(text: str) -> str:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return f"<td>{text}</td>"
    return f"<td class='num'>{text}</td>"


def _figure(figure: go.Figure, legend: str) -> str:
    chart = figure.to_html(full_html=False, include_plotlyjs=False)
    return f"<figure>\n{chart}\n<figcaption>{legend}</figcaption>\n</figure>"


def _layout(
    figure: go.Figure,
    height: int,
    *,
    shaded: Sequence[tuple[int, str]] = (),
    xtitle: str = "",
    ytitle: str = "",
    legend: bool = False,
    category_x: bool = True,
) -> None:
    """A light shared look; ``shaded`` marks whole windows (category positions)."""
    figure.update_layout(
        template="none",
        height=height,
        margin={"l": 60, "r": 20, "t": 30 if legend else 20, "b": 40},
        font={"family": FONT, "size": 12},
        showlegend=legend,
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
    )
    for index, colour in shaded:
        figure.add_shape(_shade(index, colour))
    figure.update_xaxes(title_text=xtitle, gridcolor="#eee", automargin=True)
    figure.update_yaxes(title_text=ytitle, gridcolor="#eee", automargin=True)
    if category_x:  # window labels such as "2013-03-01" would make a date axis
        figure.update_xaxes(type="category")


def _shade(index: int, colour: str) -> dict[str, Any]:
    return {
        "type": "rect", "xref": "x", "yref": "paper", "x0": index - 0.5, "x1": index + 0.5,
        "y0": 0, "y1": 1, "fillcolor": colour, "line": {"width": 0}, "layer": "below",
    }  # fmt: skip


def _window_labels(windows: list[Mapping[str, Any]]) -> list[str]:
    """Short escaped labels from each window's start, unique so no two windows merge."""
    labels = [_short_time(w.get("start")) or f"window {i + 1}" for i, w in enumerate(windows)]
    if len(set(labels)) < len(labels):
        labels = [f"{i + 1}: {label}" for i, label in enumerate(labels)]
    return [_esc(label) for label in labels]


def _short_time(value: Any) -> str:
    if not isinstance(value, str) or not value:
        return ""
    text = value[:16].replace("T", " ")
    return text[:10] if text.endswith(" 00:00") else text


# -- reading the loosely typed input --------------------------------------------------


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _mappings(value: Any) -> list[Mapping[str, Any]]:
    return [item for item in _sequence(value) if isinstance(item, Mapping)]


def _sequence(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _union(groups: Iterable[Iterable[Any]]) -> list[str]:
    """Names in order of first appearance across the groups."""
    seen: dict[str, None] = {}
    for group in groups:
        seen.update((str(name), None) for name in group)
    return list(seen)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _numbers(value: Any) -> list[float | None]:
    return [_number(item) for item in _sequence(value)]


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _text(value: Any, missing: str = "—") -> str:
    return missing if value is None or value == "" else _esc(value)


def _fmt(value: Any, spec: str = ".3g") -> str:
    """A value for a table cell or hover: numbers formatted, booleans as yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    number = _number(value)
    if number is not None:
        return format(number, spec)
    return _text(value)
