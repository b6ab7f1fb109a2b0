"""The pipelines pages: pipelines and their runs, one run's step graph, tuning studies."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from modelyard.errors import InvalidInputError
from modelyard.ui.pipeline_data import pipeline_run_detail, pipelines_index, study_detail
from modelyard.ui.render import context_of, render

__all__ = ["NAV", "routes"]

MAX_LIMIT = 1000


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidInputError(
            f"Expected limit as a whole number from 1 to {MAX_LIMIT}, got {raw!r}", loc="limit"
        )
    return int(raw)


def list_page(request: Request) -> Response:
    ui = context_of(request)
    pipeline = request.query_params.get("pipeline") or None
    data = pipelines_index(ui.db, ui.settings, pipeline=pipeline, limit=_limit(request))
    return render(request, "pipelines/list.html", **data)


def run_page(request: Request) -> Response:
    ui = context_of(request)
    detail = pipeline_run_detail(ui.db, str(request.path_params["run_id"]))
    return render(request, "pipelines/run.html", **detail)


def study_page(request: Request) -> Response:
    ui = context_of(request)
    name = str(request.path_params["name"])
    details = study_detail(ui.settings, name)
    charts = {
        "history": details["history"],
        "importances": details["importances"],
        "direction": details["direction"],
    }
    return render(request, "pipelines/study.html", study=details, charts=charts)


routes: list[BaseRoute] = [
    Route("/pipelines", list_page, name="pipelines"),
    Route("/pipelines/runs/{run_id}", run_page, name="pipeline_run"),
    Route("/pipelines/studies/{name}", study_page, name="study"),
]
NAV: tuple[str, str] | None = ("Pipelines", "/pipelines")
