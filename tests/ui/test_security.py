"""Actions need write mode, a CSRF token and an admin key; nothing the CLI masks is shown.

The refusals are checked on every ``/actions/`` route the app has (the models,
monitoring and deployments pages' included, as they land), plus a probe action that
answers the audit actor ``require_action`` hands back.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from playwright.sync_api import Browser
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from modelyard.config import Settings
from modelyard.serving.auth import ApiKeys
from modelyard.ui.app import create_app
from modelyard.ui.security import CSRF_COOKIE, CSRF_HEADER, actor, require_action
from tests.ui.conftest import ADMIN_ENV, ADMIN_KEY, LiveUi, TestClient

PROBE = "/actions/probe"


async def _probe(request: Request) -> JSONResponse:
    return JSONResponse({"actor": actor(require_action(request)), "message": "probed"})


def _app(settings: Settings, *, read_only: bool = False) -> Starlette:
    app = create_app(
        settings,
        read_only=read_only,
        api_keys=ApiKeys.from_settings((), ADMIN_ENV),
    )
    app.router.routes.insert(0, Route(PROBE, _probe, methods=["POST"]))
    return app


@pytest.fixture(scope="module")
def http(project: Settings) -> Iterator[TestClient]:
    with TestClient(_app(project)) as client:
        yield client


@pytest.fixture(scope="module")
def read_only_http(project: Settings) -> Iterator[TestClient]:
    with TestClient(_app(project, read_only=True)) as client:
        yield client


def _token(client: TestClient) -> str:
    client.get("/experiments")
    token = client.cookies.get(CSRF_COOKIE)
    assert token
    return str(token)


def _routes(app: Any) -> list[Route]:
    """Every route of the app, those of the lazily loaded pages (its router's default) too."""
    found = [r for r in app.routes if isinstance(r, Route)]
    return found + [r for r in app.router.default.routes if isinstance(r, Route)]


def _action_paths(app: Any) -> list[str]:
    """Every POST route of the app, path parameters filled with plausible values."""
    paths = []
    for route in _routes(app):
        if "POST" in (route.methods or ()):
            path = re.sub(r"\{[^}:]+:int\}", "1", route.path)
            paths.append(re.sub(r"\{[^}]+\}", "x", path))
    return paths


def test_every_state_changing_route_is_a_post_under_actions(http: TestClient) -> None:
    paths = _action_paths(http.app)
    assert PROBE in paths
    assert all(p.startswith("/actions/") for p in paths), paths
    for route in _routes(http.app):
        if route.path.startswith("/actions/"):
            assert route.methods == {"POST"}, route.path


def test_every_action_refuses_a_request_without_the_key(http: TestClient) -> None:
    token = _token(http)
    for path in _action_paths(http.app):
        answer = http.post(path, json={}, headers={CSRF_HEADER: token})
        assert answer.status_code == 401, (path, answer.text)
        assert answer.json()["error"]["type"] == "unauthorized"
        wrong = http.post(
            path, json={}, headers={CSRF_HEADER: token, "Authorization": "Bearer wrong"}
        )
        assert wrong.status_code == 401, path
        weak = http.post(
            path,
            json={},
            headers={CSRF_HEADER: token, "Authorization": "Bearer predict-only-key"},
        )
        assert weak.status_code == 403, path


def test_every_action_refuses_a_request_without_the_csrf_token(http: TestClient) -> None:
    token = _token(http)
    key = {"Authorization": f"Bearer {ADMIN_KEY}"}
    for path in _action_paths(http.app):
        assert http.post(path, json={}, headers=key).status_code == 403, path
        forged = http.post(path, json={}, headers={**key, CSRF_HEADER: token[:-2] + "xx"})
        assert forged.status_code == 403 and forged.json()["error"]["type"] == "csrf", path
    # a cookie the app did not sign is refused even when the header echoes it
    other = TestClient(http.app)
    other.cookies.set(CSRF_COOKIE, "made.up")
    answer = other.post(PROBE, headers={**key, CSRF_HEADER: "made.up"})
    assert answer.status_code == 403


def test_the_key_and_token_together_pass_and_name_the_actor(http: TestClient) -> None:
    token = _token(http)
    answer = http.post(PROBE, headers={CSRF_HEADER: token, "Authorization": f"Bearer {ADMIN_KEY}"})
    assert answer.status_code == 200
    assert answer.json()["actor"] == "ui:env-1"


def test_the_lazily_loaded_pages_are_all_mounted(http: TestClient) -> None:
    paths = {route.path for route in _routes(http.app)}
    for _, href in http.app.state.ui.nav:  # type: ignore[attr-defined]
        assert href in paths, href


def test_a_get_on_an_action_is_refused(http: TestClient) -> None:
    answer = http.get(PROBE)
    assert answer.status_code == 405
    assert answer.json()["error"]["type"] == "method_not_allowed"


def test_read_only_refuses_every_action_even_with_key_and_token(
    read_only_http: TestClient,
) -> None:
    token = _token(read_only_http)
    headers = {CSRF_HEADER: token, "Authorization": f"Bearer {ADMIN_KEY}"}
    for path in _action_paths(read_only_http.app):
        answer = read_only_http.post(path, json={}, headers=headers)
        assert answer.status_code == 403, path
        assert answer.json()["error"]["type"] == "read_only", path


def _pages(client: TestClient) -> list[str]:
    """Every page in the navigation, and the pages they link to one level down."""
    nav = [href for _, href in client.app.state.ui.nav]  # type: ignore[attr-defined]
    found = list(nav)
    for href in nav:
        html = client.get(href).text
        for link in re.findall(r'href="(/[^"#]*)"', html):
            if not link.startswith(("/static/", "/actions/")) and link not in found:
                found.append(link.replace("&amp;", "&"))
    return found[:60]


def test_a_read_only_ui_renders_no_action(read_only_http: TestClient, http: TestClient) -> None:
    for path in _pages(read_only_http):
        html = read_only_http.get(path).text
        assert "data-action" not in html, path
        assert "actions.js" not in html and "key-dialog" not in html, path
    assert "actions.js" in http.get("/experiments").text
    # the same pages in write mode do have actions (the project has a model, churn v1)
    assert any("data-action" in http.get(path).text for path in _pages(http))


def test_pages_run_no_inline_script_and_carry_the_csp(http: TestClient) -> None:
    for path in _pages(http):
        answer = http.get(path)
        assert "default-src 'self'" in answer.headers["content-security-policy"], path
        for tag in re.findall(r"<script\b[^>]*>", answer.text):
            assert 'src="/static/' in tag or 'type="application/json"' in tag, (path, tag)


def test_credentials_in_urls_are_never_shown(project: Settings) -> None:
    secret = msgspec.structs.replace(
        project,
        artifacts="s3://AKIAEXAMPLE:topsecret@bucket/prefix",
        features=msgspec.structs.replace(
            project.features, online_store="redis://:hunter2@127.0.0.1:1/0"
        ),
    )
    with TestClient(create_app(secret)) as client:
        for path in ("/experiments", "/runs", "/no/such/page"):
            html = client.get(path).text
            assert "topsecret" not in html and "hunter2" not in html, path
            assert "s3://" in html, path  # the URL is shown, masked


# -- in the browser --------------------------------------------------------------------


@pytest.fixture
def live(project: Settings) -> Iterator[Any]:
    servers: list[LiveUi] = []

    def start(read_only: bool = False) -> str:
        server = LiveUi(_app(project, read_only=read_only)).start()
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.stop()


_POST_WITHOUT_KEY = """async (path) => {
  const token = document.cookie.split('; ').find((c) => c.startsWith('modelyard_csrf='))
    .split('=').slice(1).join('=');
  const r = await fetch(path, {method: 'POST', headers: {'X-CSRF-Token': token}});
  return [r.status, await r.json()];
}"""
_POST_ACTION = """async ([path, key]) => {
  sessionStorage.setItem('modelyard.apiKey', key);
  const m = await import('/static/js/actions.js');
  return await m.postAction(path, {});
}"""


def test_in_the_browser_a_request_without_the_key_is_refused_and_with_it_passes(
    browser: Browser, live: Any
) -> None:
    url = live()
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(url + "/experiments")
        status, body = page.evaluate(_POST_WITHOUT_KEY, PROBE)
        assert status == 401 and body["error"]["type"] == "unauthorized"
        assert page.evaluate(_POST_ACTION, [PROBE, ADMIN_KEY])["actor"] == "ui:env-1"
    finally:
        context.close()


def test_in_the_browser_a_read_only_ui_has_no_action(browser: Browser, live: Any) -> None:
    url = live(read_only=True)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(url + "/experiments")
        assert page.locator("[data-action]").count() == 0
        assert page.locator("#key-dialog").count() == 0
        assert page.locator(".badge.read-only").inner_text() == "read-only"
        status, body = page.evaluate(_POST_WITHOUT_KEY, PROBE)
        assert status == 403 and body["error"]["type"] == "read_only"
    finally:
        context.close()
