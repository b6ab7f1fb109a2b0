"""The deployments pages: what is served, from the prediction log and the traffic policy.

``/deployments`` lists every model with logged requests or a traffic policy (the traffic
store's, else ``serving.traffic``'s; and the
registered models with a ``production`` alias but no logged traffic). ``/deployments/
NAME`` shows its policy (which alias, which version, what weight), the observed traffic
split, the request rate and latency percentiles over time per version. ``?last=24h``
keeps the last day before the newest request; a bad value is shown, never a 500.

Error counts and the error rate per version and route come from the log's error
records (requests answered 4xx/5xx); those that failed before a version was chosen are
counted per model. DuckDB and the log reader are imported on the
first request, not when the app starts.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from modelyard.errors import InvalidInputError, NotFoundError
from modelyard.registry.client import ModelRegistry
from modelyard.registry.traffic import StoredPolicy, TrafficPolicies
from modelyard.ui.render import context_of, render

__all__ = ["NAV", "routes"]

#: the ranges offered above the charts
RANGES = (("all", "whole log"), ("1h", "last hour"), ("24h", "last day"), ("7d", "last week"))


def _registry(request: Request) -> ModelRegistry:
    ui = context_of(request)
    return ModelRegistry(ui.settings, db=ui.db)


def _stored(registry: ModelRegistry) -> dict[str, StoredPolicy]:
    """The traffic store's policies (every replica serves by them), by model."""
    return {p.model: p for p in TrafficPolicies(registry).list_policies()}


def index_page(request: Request) -> Response:
    from modelyard.ui.deployment_data import deployments_index

    ui = context_of(request)
    registry = _registry(request)
    data = deployments_index(ui.settings, registry.list_models(), _stored(registry))
    return render(request, "deployments/index.html", **data)


def model_page(request: Request) -> Response:
    from modelyard.ui.deployment_data import deployment_detail, parse_last

    ui = context_of(request)
    name = str(request.path_params["name"])
    raw = request.query_params.get("last")
    problem = None
    try:
        last_s = parse_last(raw)
    except InvalidInputError as exc:
        last_s, problem = None, exc.message
    registry = _registry(request)
    models = {m.name: m for m in registry.list_models()}
    data = deployment_detail(ui.settings, name, models.get(name), last_s, _stored(registry))
    if data is None:
        raise NotFoundError(
            f"No deployment {name!r}: no logged requests, no traffic policy and no "
            "registered model of that name"
        )
    return render(
        request,
        "deployments/model.html",
        problem=problem,
        last=raw if problem is None else None,
        ranges=RANGES,
        **data,
    )


routes: list[BaseRoute] = [
    Route("/deployments", index_page, name="deployments"),
    Route("/deployments/{name:path}", model_page, name="deployment"),
]
NAV: tuple[str, str] | None = ("Deployments", "/deployments")
