"""The web app: ``create_app(settings)`` is a Starlette app over one project.

Pages register through ``modelyard.ui.pages.PAGES``; the metadata database is opened
once for the app's life; every answer carries a Content-Security-Policy; an unknown
page is a 404 page (the JSON error shape under ``/api/`` and ``/actions/``) and a bad
query string is never a 500.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import secrets
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


def _plotly_version() -> str:
    try:
        return importlib.metadata.version("plotly")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - plotly is a dependency
        return "unknown"


PLOTLY_VERSION = _plotly_version()
#: the URL a page loads plotly.js from: versioned, so a browser may keep it for a year
PLOTLY_URL = f"/static/vendor/plotly-{PLOTLY_VERSION}.min.js"
_PLOTLY_IMMUTABLE = "public, max-age=31536000, immutable"
#: the unversioned URL is revalidated each time (its ETag makes that a 304)
_PLOTLY_REVALIDATE = "public, no-cache"


class PlotlyFile:
    """plotly.min.js (4.6 MB) read and gzip-compressed once (1.4 MB), with its ETag.

    Prepared by the warm-up thread (or the first request that needs it, off the loop).
    A request whose ``If-None-Match`` holds the ETag gets a 304 with no body.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._prepared: tuple[bytes, bytes, str] | None = None

    def prepare(self) -> tuple[bytes, bytes, str]:
        """``(raw, gzipped, etag)``."""
        with self._lock:
            if self._prepared is None:
                raw = self.path.read_bytes()
                etag = f'"{hashlib.sha256(raw).hexdigest()[:32]}"'
                self._prepared = (raw, gzip.compress(raw, compresslevel=6, mtime=0), etag)
            return self._prepared

    async def answer(self, request: Request, cache_control: str) -> Response:
        prepared = self._prepared
        if prepared is None:
            prepared = await run_in_threadpool(self.prepare)
        raw, packed, etag = prepared
        headers = {"cache-control": cache_control, "etag": etag, "vary": "accept-encoding"}
        if etag in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}:
            return Response(status_code=304, headers=headers)
        accepted = request.headers.get("accept-encoding", "")
        if "gzip" in {e.split(";")[0].strip().lower() for e in accepted.split(",")}:
            headers["content-encoding"] = "gzip"
            return Response(packed, media_type="text/javascript", headers=headers)
        return Response(raw, media_type="text/javascript", headers=headers)


async def _plotly(request: Request) -> Response:
    plotly: PlotlyFile = request.app.state.plotly
    return await plotly.answer(request, _PLOTLY_REVALIDATE)


async def _plotly_versioned(request: Request) -> Response:
    if request.path_params["version"] != PLOTLY_VERSION:
        raise HTTPException(404)
    plotly: PlotlyFile = request.app.state.plotly
    return await plotly.answer(request, _PLOTLY_IMMUTABLE)


async def _home(request: Request) -> Response:
    return RedirectResponse("/experiments", status_code=302)


#: seconds after the first answer is out that the other pages begin importing in the
#: background (and plotly.js is compressed); at the latest ``_WARM_LATEST_S`` after start
_WARM_AFTER_S = 0.5
_WARM_LATEST_S = 5.0


class FirstAnswer:
    """ASGI middleware: sets ``event`` once the first HTTP answer has been sent whole."""

    def __init__(self, app: ASGIApp, event: threading.Event) -> None:
        self.app = app
        self.event = event

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.event.is_set():
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.event.set()

        await self.app(scope, receive, sending)


def _warm_up(answered: threading.Event, later: LazyPages, plotly: PlotlyFile) -> None:
    """Waits for the first answer (start-up is not slowed), then does the deferred work."""
    answered.wait(_WARM_LATEST_S)
    time.sleep(_WARM_AFTER_S)
    later.load()
    plotly.prepare()


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
    jinja = make_environment()
    jinja.globals["plotly_js"] = PLOTLY_URL  # pages load plotly.js from here
    ui = UiContext(
        settings=settings,
        read_only=read_only,
        api_keys=keys,
        csrf_secret=secrets.token_bytes(32),
        jinja=jinja,
        nav=nav_items(),
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ui.db  # noqa: B018 - opened (and migrated) before the first request
        # the other pages import in the background, after the first answer is out
        warm = threading.Thread(
            target=_warm_up, args=(answered, later, plotly), name="ui-warm-up", daemon=True
        )
        warm.start()
        try:
            yield
        finally:
            ui.close()

    later = LazyPages([n for n in PAGE_NAMES if n != "runs"])
    plotly = PlotlyFile(PLOTLY_JS)
    answered = threading.Event()
    routes: list[BaseRoute] = [
        Route("/", _home, name="home"),
        Route("/static/vendor/plotly.min.js", _plotly, name="plotly"),
        Route("/static/vendor/plotly-{version}.min.js", _plotly_versioned, name="plotly_versioned"),
        Mount("/static", StaticFiles(packages=[("modelyard.ui", "static")]), name="static"),
        *runs_pages.routes,
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders), Middleware(FirstAnswer, event=answered)],
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
    app.state.plotly = plotly
    return app
