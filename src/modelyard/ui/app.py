"""The web app: ``create_app(settings)`` is a Starlette app over one project.

Pages register through ``modelyard.ui.pages.PAGES``; the metadata database is opened
once for the app's life; every answer carries a Content-Security-Policy; an unknown
page is a 404 page (the JSON error shape under ``/api/`` and ``/actions/``) and a bad
query string is never a 500.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from modelyard.config import Settings
from modelyard.errors import ModelyardError
from modelyard.serving.auth import ApiKeys
from modelyard.ui.context import UiContext
from modelyard.ui.pages import PAGES, nav_items
from modelyard.ui.render import json_error, make_environment, render
from modelyard.ui.security import SecurityHeaders

__all__ = ["create_app"]

_log = logging.getLogger(__name__)


def _plotly_js() -> Path:
    """plotly.js as shipped inside the installed plotly package (no CDN, no import)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the plotly package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"


PLOTLY_JS = _plotly_js()
_JSON_PREFIXES = ("/api/", "/actions/")


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith(_JSON_PREFIXES)


def _error(request: Request, status: int, type: str, message: str) -> Response:
    if _wants_json(request):
        return json_error(status, type, message)
    return render(
        request, "error.html", status_code=status, status=status, type=type, message=message
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    message = exc.detail if exc.status_code != 404 else f"Nothing at {request.url.path}"
    return _error(request, exc.status_code, kind, str(message))


async def _modelyard_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ModelyardError)
    return _error(request, exc.status, exc.type, exc.message)


async def _internal_error(request: Request, exc: Exception) -> Response:
    _log.exception("internal error on %s", request.url.path)
    return _error(request, 500, "internal", "Internal error: see the server's log")


async def _plotly(request: Request) -> Response:
    return FileResponse(PLOTLY_JS, media_type="text/javascript")


async def _home(request: Request) -> Response:
    return RedirectResponse("/experiments", status_code=302)


def create_app(
    settings: Settings, *, read_only: bool = False, api_keys: ApiKeys | None = None
) -> Starlette:
    """The web app over ``settings``' project.

    ``api_keys`` defaults to the model server's (``serving.api_keys`` and
    ``MODELYARD_API_KEYS``); actions need one with the ``admin`` scope.
    """
    keys = api_keys or ApiKeys.from_settings(settings.serving.api_keys, os.environ)
    ui = UiContext(
        settings=settings,
        read_only=read_only,
        api_keys=keys,
        csrf_secret=secrets.token_bytes(32),
        jinja=make_environment(),
        nav=nav_items(),
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ui.db  # noqa: B018 - opened (and migrated) before the first request
        try:
            yield
        finally:
            ui.close()

    routes: list[BaseRoute] = [
        Route("/", _home, name="home"),
        Route("/static/vendor/plotly.min.js", _plotly, name="plotly"),
        Mount("/static", StaticFiles(packages=[("modelyard.ui", "static")]), name="static"),
    ]
    for page in PAGES:
        routes.extend(page.routes)
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={
            HTTPException: _http_error,
            ModelyardError: _modelyard_error,
            Exception: _internal_error,
        },
        lifespan=lifespan,
    )
    app.state.ui = ui
    return app
