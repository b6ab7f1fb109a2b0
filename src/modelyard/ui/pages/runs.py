"""Experiments and runs: the runs table, compare, the run page and its artifacts.

Routes:

- ``/experiments``: every experiment with its number of runs;
- ``/runs?experiment=NAME&filter=...&order=...&offset=&limit=&columns=...``: the runs
  table (the CLI's filter language; a filter that does not parse is shown at its token
  with status 400), sortable by any column, with chosen columns and paging;
- ``/runs/compare?run=ID&run=ID``: metric curves overlaid (by step or time), the param
  diff, latest metrics and inputs with digests;
- ``/runs/{id}``: params, metric charts, inputs, artifacts with previews, step logs,
  child runs, environment and code version, model versions it produced;
- ``/runs/{id}/artifacts/{path}``: the raw artifact (served sandboxed: an HTML artifact
  runs no script with the app's origin);
- ``/api/runs``: the runs table's page as JSON (same query string).
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlencode

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from modelyard.errors import InvalidInputError, NotFoundError
from modelyard.tracking.entities import Run
from modelyard.tracking.store import SQLTrackingStore
from modelyard.ui.previews import MAX_PREVIEW_BYTES, content_type_of, kind_of, preview_bytes
from modelyard.ui.render import context_of, fmt_value, render
from modelyard.ui.run_data import (
    ATTRIBUTE_COLUMNS,
    RunsQuery,
    cell,
    checked_run_id,
    compare_runs,
    experiment_summaries,
    inputs_of,
    metric_curves,
    metric_histories,
    produced_versions,
    runs_page,
    runs_with_artifact,
)

__all__ = ["NAV", "routes"]

#: the artifact a pipeline step's printed output is kept in: ``pipelines.records.LOGS_ARTIFACT``
#: (not imported: the runs page must open without the pipelines' imports)
LOGS_ARTIFACT = "logs.txt"
#: artifacts previewed inline on a run page (the rest are listed with a link)
MAX_PREVIEWS = 12
#: the sandbox a raw artifact is served in: no script, no form, no same-origin access
_ARTIFACT_CSP = "sandbox; default-src 'none'; img-src data: 'self'; style-src 'unsafe-inline'"


def _link(request: Request, **changes: Any) -> str:
    """This page's URL with ``changes`` to its query (a list value repeats the key)."""
    kept = [(k, v) for k, v in request.query_params.multi_items() if k not in changes]
    for key, value in changes.items():
        if value is None or value == "":
            continue
        if isinstance(value, list | tuple):
            kept.extend((key, str(v)) for v in value)
        else:
            kept.append((key, str(value)))
    query = urlencode(kept)
    return f"{request.url.path}?{query}" if query else request.url.path


def _duration_s(run: Run) -> float | None:
    return None if run.end_time is None else (run.end_time - run.start_time) / 1000


def experiments_page(request: Request) -> Response:
    ui = context_of(request)
    return render(request, "runs/experiments.html", experiments=experiment_summaries(ui.db))


def experiment_redirect(request: Request) -> Response:
    name = request.path_params["name"]
    return RedirectResponse("/runs?" + urlencode({"experiment": name}), status_code=302)


def _sort_link(request: Request, query: RunsQuery, column: str) -> tuple[str, str]:
    """The header's link (toggling ASC/DESC) and its arrow."""
    current = query.order.split()
    if current and current[0] == column:
        descending = len(current) > 1 and current[1].upper() == "DESC"
        arrow = " ▼" if descending else " ▲"
        return _link(request, order=f"{column} {'ASC' if descending else 'DESC'}", offset=0), arrow
    return _link(request, order=f"{column} DESC", offset=0), ""


def runs_table(request: Request) -> Response:
    ui = context_of(request)
    query = RunsQuery.parse(request.query_params)
    page = runs_page(ui.db, query)
    headers = [
        (label, *_sort_link(request, query, key)) for key, label in ATTRIBUTE_COLUMNS.items()
    ]
    column_headers = [(c, *_sort_link(request, query, c)) for c in page.shown]
    rows = [
        {
            "run": run,
            "duration": _duration_s(run),
            "cells": [fmt_value(cell(run, c)) for c in page.shown],
        }
        for run in page.runs
    ]
    end = query.offset + len(page.runs)
    pager = {
        "first": query.offset + 1 if page.runs else 0,
        "last": end,
        "total": page.total,
        "prev": _link(request, offset=max(0, query.offset - query.limit))
        if query.offset > 0
        else None,
        "next": _link(request, offset=end) if end < page.total else None,
    }
    hidden = [("experiment", e) for e in query.experiments]
    if query.order:
        hidden.append(("order", query.order))
    hidden.append(("limit", str(query.limit)))
    column_hidden = [(k, v) for k, v in hidden if k != "limit"] + [("filter", query.filter)]
    chosen = set(page.shown)
    choices = sorted(set(page.available) | chosen, key=lambda c: (c.split(".")[0], c))
    error = None
    if page.error is not None:
        what, message, text, position = page.error
        end_of_token = position
        while end_of_token < len(text) and not text[end_of_token].isspace():
            end_of_token += 1
        end_of_token = max(end_of_token, position + 1)
        error = {
            "field": what,
            "message": message,
            "before": text[:position],
            "token": text[position:end_of_token] or " ",
            "after": text[end_of_token:],
        }
    return render(
        request,
        "runs/runs.html",
        status_code=400 if error else 200,
        query=query,
        rows=rows,
        headers=headers,
        column_headers=column_headers,
        pager=pager,
        hidden=hidden,
        column_hidden=column_hidden,
        choices=choices,
        chosen=chosen,
        error=error,
        show_experiment=len(query.experiments) != 1,
    )


def runs_api(request: Request) -> Response:
    ui = context_of(request)
    query = RunsQuery.parse(request.query_params)
    page = runs_page(ui.db, query)
    if page.error is not None:
        what, message, text, position = page.error
        return JSONResponse(
            {
                "error": {
                    "type": "invalid_filter",
                    "message": message,
                    "field": what,
                    "text": text,
                    "position": position,
                }
            },
            status_code=400,
        )
    return JSONResponse(
        {
            "total": page.total,
            "offset": query.offset,
            "runs": [
                {
                    "id": r.id,
                    "name": r.name,
                    "experiment": r.experiment,
                    "status": str(r.status),
                    "start_time": r.start_time,
                    "end_time": r.end_time,
                    "params": r.params,
                    "metrics": {k: (None if math.isnan(v) else v) for k, v in r.metrics.items()},
                    "tags": r.tags,
                }
                for r in page.runs
            ],
        }
    )


def compare_page(request: Request) -> Response:
    ui = context_of(request)
    ids = [i for item in request.query_params.getlist("run") for i in item.split(",") if i]
    data = compare_runs(ui.db, ids)
    spec = {
        "keys": data.chart_keys,
        "runs": [run.id for run in data.runs],
        "source": "/api/runs/metric-history",
    }
    return render(request, "runs/compare.html", data=data, spec=spec)


def metric_history_api(request: Request) -> Response:
    """``/api/runs/metric-history?run=ID&run=ID&key=KEY``: one chart's curves."""
    ui = context_of(request)
    ids = [i for item in request.query_params.getlist("run") for i in item.split(",") if i]
    key = request.query_params.get("key")
    if not key:
        raise InvalidInputError("Expected the metric's key as key=...", loc="key")
    body = msgspec.json.encode({"key": key, "series": metric_curves(ui.db, ids, key)})
    return Response(body, media_type="application/json")


def run_page(request: Request) -> Response:
    ui = context_of(request)
    run_id = checked_run_id(request.path_params["run_id"])
    store = SQLTrackingStore(ui.db)
    run = store.get_run(run_id)
    children = store.search_runs(
        None, filter=f"parent_run_id = '{run_id}'", order_by=["start_time"], max_results=1000
    )
    artifacts = store.list_artifacts(run_id)
    with ui.db.read() as conn:
        inputs = inputs_of(conn, [run_id])[run_id]
        histories = metric_histories(conn, [run_id])[run_id]
        versions = produced_versions(conn, [run_id, *(c.id for c in children)])
        logged = runs_with_artifact(conn, [c.id for c in children], LOGS_ARTIFACT)
    previews: list[dict[str, Any]] = []
    logs_text = None
    for entry in artifacts:
        kind = kind_of(entry.path)
        preview = None
        small = entry.size <= MAX_PREVIEW_BYTES
        if entry.path == LOGS_ARTIFACT and small:
            logs_text = ui.artifacts.get_bytes(entry.sha256, name=entry.path).decode(
                "utf-8", errors="replace"
            )
        elif kind in ("text", "json", "csv", "parquet") and small and len(previews) < MAX_PREVIEWS:
            preview = preview_bytes(
                entry.path, ui.artifacts.get_bytes(entry.sha256, name=entry.path)
            )
        previews.append({"entry": entry, "kind": kind, "preview": preview, "small": small})
    curves = {
        key: [{"run": run.id, "name": run.name, **series}]
        for key, series in sorted(histories.items())
        if len(series["step"]) > 1
    }
    return render(
        request,
        "runs/run.html",
        run=run,
        duration=_duration_s(run),
        children=[(c, _duration_s(c), c.id in logged) for c in children],
        artifacts=previews,
        logs_text=logs_text,
        inputs=inputs,
        curves=curves,
        versions=versions,
    )


def artifact_raw(request: Request) -> Response:
    ui = context_of(request)
    run_id = checked_run_id(request.path_params["run_id"])
    path = request.path_params["path"]
    store = SQLTrackingStore(ui.db)
    entry = next((e for e in store.list_artifacts(run_id) if e.path == path), None)
    if entry is None:
        raise NotFoundError(f"Run {run_id} has no artifact {path!r}")
    data = ui.artifacts.get_bytes(entry.sha256, name=entry.path)
    return Response(
        data,
        media_type=content_type_of(path),
        headers={
            "content-security-policy": _ARTIFACT_CSP,
            "cache-control": "private, max-age=3600",
        },
    )


routes: list[BaseRoute] = [
    Route("/experiments", experiments_page, name="experiments"),
    Route("/experiments/{name}", experiment_redirect, name="experiment"),
    Route("/runs", runs_table, name="runs"),
    Route("/runs/compare", compare_page, name="compare"),
    Route("/runs/{run_id}", run_page, name="run"),
    Route("/runs/{run_id}/artifacts/{path:path}", artifact_raw, name="artifact"),
    Route("/api/runs", runs_api, name="api_runs"),
    Route("/api/runs/metric-history", metric_history_api, name="api_metric_history"),
]
NAV: tuple[str, str] | None = ("Runs", "/experiments")
