"""The features pages: applied views, services, sources, online freshness, skew (read-only).

``/features`` lists the applied views with the online store's freshness (the last
materialization of each), the services, the sources and the entities. ``/features/views/
NAME`` shows one view: its definition, its materialization history, the services that use
it, and (``?skew=1``) a skew check run now, since skew checks are not stored.

The feature layer (DuckDB, pandas) is imported on the first request, not when the app
starts (``modelyard ui`` opens in under a second).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from modelyard.ui.render import context_of, render

if TYPE_CHECKING:
    from modelyard.features.store import FeatureStore

__all__ = ["NAV", "routes"]

#: the sample a skew check takes when the page does not ask for another
SKEW_SAMPLE = 200
MAX_SKEW_SAMPLE = 10_000


@contextmanager
def _store(request: Request) -> Iterator[FeatureStore]:
    from modelyard.features.store import FeatureStore

    ui = context_of(request)
    store = FeatureStore(ui.settings, db=ui.db)
    try:
        yield store
    finally:
        store.close()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _sample(request: Request) -> tuple[int, str | None]:
    """The ``sample`` query parameter, or the default and the one-line reason it was refused."""
    raw = request.query_params.get("sample")
    if raw is None or raw == "":
        return SKEW_SAMPLE, None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_SKEW_SAMPLE:
        return SKEW_SAMPLE, (
            f"sample: expected a whole number from 1 to {MAX_SKEW_SAMPLE}, got {raw[:40]!r}"
        )
    return value, None


def index_page(request: Request) -> Response:
    from modelyard.ui.feature_data import features_index

    with _store(request) as store:
        data = features_index(store, context_of(request).db, _now_ms())
    return render(request, "features/index.html", **data)


def view_page(request: Request) -> Response:
    from modelyard.ui.feature_data import skew_check, view_detail

    name = str(request.path_params["name"])
    sample, problem = _sample(request)
    with _store(request) as store:
        data = view_detail(store, context_of(request).db, name, _now_ms())
        skew = None
        if request.query_params.get("skew") == "1" and problem is None:
            skew = skew_check(store, name, sample)
    return render(request, "features/view.html", skew=skew, sample=sample, problem=problem, **data)


routes: list[BaseRoute] = [
    Route("/features", index_page, name="features"),
    Route("/features/views/{name}", view_page, name="feature_view"),
]
NAV: tuple[str, str] | None = ("Features", "/features")
