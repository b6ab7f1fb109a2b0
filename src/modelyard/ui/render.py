"""Rendering: templates with the shared context, the JSON error shape, display filters.

>>> fmt_duration(3725)
'1h 2m 5s'
>>> fmt_value(0.123456789)
'0.1235'
>>> fmt_time(0)
'1970-01-01 00:00:00'
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse

from modelyard.errors import InvalidInputError, NotFoundError
from modelyard.ui.context import UiContext
from modelyard.ui.security import CSRF_COOKIE, new_csrf_token, valid_csrf_token

__all__ = [
    "context_of",
    "fmt_duration",
    "fmt_time",
    "fmt_value",
    "json_error",
    "make_environment",
    "render",
]


def fmt_time(ms: int | float | None) -> str:
    """Milliseconds since the epoch as ``YYYY-MM-DD HH:MM:SS`` (UTC); ``""`` for None."""
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def fmt_value(x: object) -> str:
    """A param, metric or tag value for a table cell: floats to 4 significant digits."""
    if x is None:
        return ""
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, float):
        if math.isnan(x) or math.isinf(x):
            return str(x)
        return f"{x:.4g}"
    return str(x)


def fmt_duration(s: int | float | None) -> str:
    """Seconds as ``1h 2m 5s`` (``850 ms`` under a second); ``""`` for None."""
    if s is None:
        return ""
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.1f} s"
    total = round(s)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{hours}h"] if hours else []
    if hours or minutes:
        parts.append(f"{minutes}m")
    parts.append(f"{seconds}s")
    return " ".join(parts)


def make_environment() -> Environment:
    """The Jinja environment: the package's templates, autoescaped, with the filters."""
    env = Environment(
        loader=PackageLoader("modelyard.ui", "templates"),
        autoescape=select_autoescape(default=True),
    )
    env.filters["fmt_time"] = fmt_time
    env.filters["fmt_value"] = fmt_value
    env.filters["fmt_duration"] = fmt_duration
    return env


def context_of(request: Request) -> UiContext:
    """The app's ``UiContext``."""
    ui: UiContext = request.app.state.ui
    return ui


def csrf_token(request: Request) -> str:
    """The request's CSRF token: its cookie's, or a new one (``render`` sets the cookie)."""
    ui = context_of(request)
    existing = request.cookies.get(CSRF_COOKIE)
    if existing and valid_csrf_token(ui.csrf_secret, existing):
        return existing
    cached: str | None = getattr(request.state, "csrf_new", None)
    if cached is None:
        cached = new_csrf_token(ui.csrf_secret)
        request.state.csrf_new = cached
    return cached


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """``template`` rendered with ``context`` plus nav, read_only, csrf token and settings."""
    ui = context_of(request)
    token = csrf_token(request)
    values = {
        "request": request,
        "nav": ui.nav,
        "read_only": ui.read_only,
        "csrf_token": token,
        "project_name": ui.settings.name,
        "settings_shown": ui.settings.describe(),
        "path": request.url.path,
        **context,
    }
    html = ui.jinja.get_template(template).render(values)
    response = HTMLResponse(html, status_code=status_code)
    if request.cookies.get(CSRF_COOKIE) != token:
        response.set_cookie(
            CSRF_COOKIE, token, httponly=False, samesite="strict", path="/", secure=False
        )
    return response


def json_error(status: int, type: str, message: str) -> JSONResponse:
    """The JSON error shape every ``/api/*`` and ``/actions/*`` answer uses."""
    return JSONResponse({"error": {"type": type, "message": message}}, status_code=status)


#: the largest id a metadata store holds (a version is an INTEGER, an incident a BIGINT)
MAX_VERSION = 2**31 - 1
MAX_ID = 2**63 - 1


def path_number(request: Request, key: str, largest: int, what: str) -> int:
    """A path's whole number; one too large for the store names nothing (404, not a 500)."""
    value = int(request.path_params[key])
    if value > largest:
        raise NotFoundError(f"No {what} {value}")
    return value


async def json_body(request: Request) -> dict[str, Any]:
    """An action's JSON object body (empty: ``{}``); InvalidInputError at ``body`` else."""
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise InvalidInputError(
            "Expected a JSON object as the request body, got text that is not JSON", loc="body"
        ) from None
    if not isinstance(body, dict):
        raise InvalidInputError(
            f"Expected a JSON object as the request body, got {type(body).__name__}", loc="body"
        )
    return body
