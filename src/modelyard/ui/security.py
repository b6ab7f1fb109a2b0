"""Who may change things from the web app, and the headers every answer carries.

State-changing requests are ``POST /actions/...`` only. Each passes three checks in
``require_action``:

1. the app is not read-only (``--read-only``: 403, and pages render no action at all);
2. a CSRF token: the ``modelyard_csrf`` cookie (SameSite=Strict, readable by the page's
   script) echoed in the ``X-CSRF-Token`` header, compared in constant time; the token
   is signed with the app's secret, so a cookie the app did not issue is refused;
3. an API key with the ``admin`` scope (the model server's keys: ``serving.api_keys``
   and ``MODELYARD_API_KEYS``), sent as ``Authorization: Bearer KEY``.

The key's name is returned for the audit trail, where the actor is ``ui:KEYNAME``.

>>> secret = b"k" * 32
>>> token = new_csrf_token(secret)
>>> valid_csrf_token(secret, token), valid_csrf_token(secret, token[:-1] + "x")
(True, False)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelyard.serving.auth import Forbidden, Unauthorized
from modelyard.ui.context import UiContext

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "CSRF_COOKIE",
    "CSRF_HEADER",
    "CsrfRefused",
    "ReadOnlyRefused",
    "SecurityHeaders",
    "actor",
    "new_csrf_token",
    "require_action",
    "valid_csrf_token",
]

CSRF_COOKIE = "modelyard_csrf"
CSRF_HEADER = "X-CSRF-Token"
#: plotly sets inline styles; scripts come from the app only (JSON data blocks are not run)
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'self'; base-uri 'self'; form-action 'self'; object-src 'none'"
)


class ReadOnlyRefused(Forbidden):
    type = "read_only"


class CsrfRefused(Forbidden):
    type = "csrf"


def _sign(secret: bytes, nonce: str) -> str:
    mac = hmac.new(secret, nonce.encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def new_csrf_token(secret: bytes) -> str:
    """A fresh token: a random nonce and its signature with the app's secret."""
    nonce = secrets.token_urlsafe(16)
    return f"{nonce}.{_sign(secret, nonce)}"


def valid_csrf_token(secret: bytes, token: str | None) -> bool:
    """Whether ``token`` was issued by an app holding ``secret``."""
    if not token or token.count(".") != 1 or len(token) > 100:
        return False
    nonce, signature = token.split(".")
    return hmac.compare_digest(signature.encode(), _sign(secret, nonce).encode())


def require_action(request: Request) -> str:
    """The name of the admin key behind this action; raises the 401 or 403 otherwise."""
    ui: UiContext = request.app.state.ui
    if request.method != "POST" or not request.url.path.startswith("/actions/"):
        raise Forbidden("Actions are POST requests to /actions/...")
    if ui.read_only:
        raise ReadOnlyRefused("This UI is read-only (started with --read-only): no actions")
    cookie = request.cookies.get(CSRF_COOKIE)
    header = request.headers.get(CSRF_HEADER)
    if not cookie or not header:
        raise CsrfRefused(
            f"Missing CSRF token: send the {CSRF_COOKIE} cookie's value as {CSRF_HEADER} "
            "(reload the page)"
        )
    if not hmac.compare_digest(cookie.encode(), header.encode()) or not valid_csrf_token(
        ui.csrf_secret, cookie
    ):
        raise CsrfRefused("CSRF token does not match (reload the page)")
    name = ui.api_keys.check(request.headers.get("authorization"), "admin")
    if name is None:  # ApiKeys.check never answers None for the admin scope
        raise Unauthorized("An API key with the 'admin' scope is needed")
    return name


def actor(key_name: str) -> str:
    """The audit trail's actor for an action taken with the key ``key_name``."""
    return f"ui:{key_name}"


class SecurityHeaders:
    """Adds the Content-Security-Policy and friends to every HTTP answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.headers = [
            (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"same-origin"),
            (b"x-frame-options", b"SAMEORIGIN"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.headers if k not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
