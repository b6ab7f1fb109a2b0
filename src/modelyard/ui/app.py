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
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from modelyard.config import Settings
from modelyard.errors import ModelyardError
from modelyard.serving.auth import ApiKeys
from modelyard.ui.context import UiContext
from modelyard.ui.pages import PAGE_NAMES, load_page, nav_items
from modelyard.ui.pages import runs as runs_pages
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
    # the installed plotly's file: the same for the life of the process
    return FileResponse(
        PLOTLY_JS, media_type="text/javascript", headers={"cache-control": "public, max-age=86400"}
    )


async def _home(request: Request) -> Response:
    return RedirectResponse("/experiments", status_code=302)


#: seconds after start-up the other pages begin importing in the background
_WARM_AFTER_S = 0.5


class LazyPages:
    """The routes of page modules imported on first use (or by the warm-up thread).

    It is the app router's default: a request no eager route matches waits for the
    import (off the event loop) and goes to their router; a path none of them has is
    the app's 404. ``request.url_for`` does not see these routes: link by path.
    """

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self._router: Router | None = None
        self._lock = threading.Lock()

    def load(self) -> Router:
        with self._lock:
            if self._router is None:
                routes: list[BaseRoute] = []
                for name in self.names:
                    routes.extend(load_page(name).routes)
                self._router = Router(routes=routes)
            return self._router

    @property
    def routes(self) -> list[BaseRoute]:
        return self.load().routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        router = self._router
        if router is None:
            router = await run_in_threadpool(self.load)
        await router(scope, receive, send)


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
        # the other pages import in the background, after the first answers are out
        warm = threading.Timer(_WARM_AFTER_S, later.load)
        warm.daemon = True
        warm.start()
        try:
            yield
        finally:
            ui.close()

    later = LazyPages([n for n in PAGE_NAMES if n != "runs"])
    routes: list[BaseRoute] = [
        Route("/", _home, name="home"),
        Route("/static/vendor/plotly.min.js", _plotly, name="plotly"),
        Mount("/static", StaticFiles(packages=[("modelyard.ui", "static")]), name="static"),
        *runs_pages.routes,
    ]
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
    # what no route above matches goes to the other pages (imported on first use), and
    # what none of them matches is the 404 page; a known path with the wrong method is 405
    app.router.default = later
    app.state.ui = ui
    return app
