"""The monitoring pages: drift, performance and incidents per model version.

``/monitoring`` lists the monitored model versions; ``/monitoring/NAME`` opens the one
with the newest window; ``/monitoring/NAME/VERSION`` shows the drift heatmap by window
and feature, prediction drift, performance with its confidence band and the CBPE
estimate, and the incidents (open, resolved, the agent's actions on each).
``/monitoring/NAME/VERSION/report`` writes the full ``monitor report`` HTML into the
project's state folder and shows it.

Actions (admin key, CSRF; the actor is ``ui:KEYNAME``): acknowledge an incident (kept in
the incident's detail), approve a candidate awaiting approval so it becomes the canary
(``modelyard.agent.loop.approve``).

Monitoring, the agent and plotly are imported on the first request that needs them, not
when the app starts.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from modelyard.config import STATE_DIR, duration_seconds
from modelyard.errors import InvalidInputError, NotFoundError
from modelyard.registry.client import ModelRegistry
from modelyard.registry.refs import check_model_name
from modelyard.store.monitor_results import MonitorResults
from modelyard.ui.render import MAX_ID, MAX_VERSION, context_of, json_body, path_number, render
from modelyard.ui.security import actor, require_action

__all__ = ["NAV", "REPORT_POLICY", "routes"]

#: the full report is one self-contained page with inline plotly: it is shown sandboxed,
#: with its inline scripts allowed and nothing fetched from anywhere
REPORT_POLICY = (
    "sandbox allow-scripts; default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; img-src data:"
)


def _results(request: Request) -> MonitorResults:
    return MonitorResults(context_of(request).db)


def _name(request: Request) -> str:
    name = str(request.path_params["model"])
    check_model_name(name)
    return name


def index_page(request: Request) -> Response:
    from modelyard.ui.monitoring_data import monitoring_index

    ui = context_of(request)
    registry = ModelRegistry(ui.settings, db=ui.db)
    data = monitoring_index(_results(request), registry.list_models())
    return render(request, "monitoring/index.html", **data)


def model_page(request: Request) -> Response:
    name = _name(request)
    found = [m for m in _results(request).monitored() if m.model == name]
    if not found:
        raise NotFoundError(f"Nothing monitored for model {name!r}: run `modelyard monitor run`")
    newest = max(found, key=lambda m: (m.last_end_us, m.version))
    return RedirectResponse(f"/monitoring/{name}/{newest.version}", status_code=302)


def _length(request: Request) -> tuple[int | None, str | None]:
    raw = request.query_params.get("window")
    if not raw:
        return None, None
    try:
        return duration_seconds("window", raw), None
    except InvalidInputError as exc:
        return None, exc.message


def version_page(request: Request) -> Response:
    from modelyard.agent.records import ActionStore
    from modelyard.ui.monitoring_data import version_detail

    ui = context_of(request)
    name = _name(request)
    version = path_number(request, "version", MAX_VERSION, f"version of {name}")
    length, problem = _length(request)
    data = version_detail(_results(request), ActionStore(ui.db), name, version, length)
    if not data["lengths"] and not data["open"] and not data["resolved"]:
        raise NotFoundError(
            f"Nothing monitored for {name} v{version}: run `modelyard monitor run {name}/{version}`"
        )
    return render(request, "monitoring/version.html", problem=problem, approve_enabled=True, **data)


def _report_path(request: Request, name: str, version: int) -> Any:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    return (
        context_of(request).settings.project_dir / STATE_DIR / "reports" / f"{safe}-v{version}.html"
    )


def report_page(request: Request) -> Response:
    from modelyard.monitoring.html import write_report
    from modelyard.monitoring.monitor import Monitor

    ui = context_of(request)
    name = _name(request)
    version = path_number(request, "version", MAX_VERSION, f"version of {name}")
    length, problem = _length(request)
    if problem is not None:
        raise InvalidInputError(problem, loc="window")
    domain = request.query_params.get("domain", "1") != "0"
    with Monitor(ui.settings, db=ui.db) as monitor:
        model = monitor.model(f"{name}/{version}")
        data = monitor.report_data(
            model, window=None if length is None else f"{length}s", domain=domain
        )
    path = write_report(data, _report_path(request, name, version))
    return FileResponse(
        path, media_type="text/html", headers={"content-security-policy": REPORT_POLICY}
    )


def _note(body: dict[str, Any], key: str) -> str:
    value = body.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInputError(f"Expected {key} as text, got {type(value).__name__}", loc=key)
    return value


async def acknowledge_action(request: Request) -> Response:
    who = actor(require_action(request))
    incident_id = path_number(request, "incident", MAX_ID, "incident")
    note = _note(await json_body(request), "note")
    incident = await run_in_threadpool(_results(request).acknowledge, incident_id, who, note)
    return JSONResponse(
        {"message": f"Incident {incident_id} acknowledged by {who}", "incident": incident.to_dict()}
    )


async def approve_action(request: Request) -> Response:
    from modelyard.agent.loop import approve

    who = actor(require_action(request))
    body = await json_body(request)
    model = body.get("model")
    if not isinstance(model, str):
        raise InvalidInputError(f"Expected model as text, got {model!r}"[:200], loc="model")
    check_model_name(model)
    version = body.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= MAX_VERSION:
        raise InvalidInputError(
            f"Expected version as a whole number from 1 to {MAX_VERSION}, got {version!r}"[:200],
            loc="version",
        )
    reason = _note(body, "reason") or None
    settings = context_of(request).settings
    action = await run_in_threadpool(
        approve, settings, f"{model}/{version}", who=who, reason=reason
    )
    return JSONResponse(
        {
            "message": f"{model} v{version} approved by {who}: it is the canary now",
            "action": {"id": action.id, "state": action.state},
        }
    )


routes: list[BaseRoute] = [
    Route("/monitoring", index_page, name="monitoring"),
    Route("/monitoring/{model}", model_page, name="monitoring_model"),
    Route("/monitoring/{model}/{version:int}", version_page, name="monitoring_version"),
    Route("/monitoring/{model}/{version:int}/report", report_page, name="monitoring_report"),
    Route(
        "/actions/monitoring/incidents/{incident:int}/acknowledge",
        acknowledge_action,
        methods=["POST"],
        name="acknowledge_incident",
    ),
    Route("/actions/monitoring/approve", approve_action, methods=["POST"], name="approve_canary"),
]
NAV: tuple[str, str] | None = ("Monitoring", "/monitoring")
