"""The lineage page: for a model version (or any run id or digest), the graph from data
digests and code through the pipeline run to the version, and what came after it."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from modelyard.registry.client import ModelRegistry
from modelyard.registry.refs import check_model_name
from modelyard.ui.lineage_data import lineage_graph, version_after
from modelyard.ui.render import MAX_VERSION, context_of, path_number, render

__all__ = ["NAV", "routes"]


def search_page(request: Request) -> Response:
    """``/lineage?ref=REF``: a model version's page, or the lineage of a run or digest."""
    ui = context_of(request)
    ref = (request.query_params.get("ref") or "").strip()
    if not ref:
        registry = ModelRegistry(ui.settings, db=ui.db)
        models = [m.to_dict() for m in registry.list_models()]
        return render(request, "lineage/index.html", models=models)
    data = lineage_graph(ui.settings, ui.db, ref)
    root = data["root"]
    if root.startswith("model:"):
        name, _, number = root.removeprefix("model:").rpartition("/")
        return RedirectResponse(f"/lineage/{name}/{number}", status_code=302)
    return render(request, "lineage/graph.html", title=ref, after=None, **data)


def version_page(request: Request) -> Response:
    ui = context_of(request)
    name = str(request.path_params["name"])
    check_model_name(name)
    version = path_number(request, "version", MAX_VERSION, f"version of {name}")
    registry = ModelRegistry(ui.settings, db=ui.db)
    after = version_after(registry, ui.db, name, version)  # NotFoundError: a 404 page
    data = lineage_graph(ui.settings, ui.db, f"{name}/{version}")
    return render(request, "lineage/graph.html", title=f"{name}/{version}", after=after, **data)


routes: list[BaseRoute] = [
    Route("/lineage", search_page, name="lineage"),
    Route("/lineage/{name}/{version:int}", version_page, name="lineage_version"),
]
NAV: tuple[str, str] | None = ("Lineage", "/lineage")
