"""The app's frame: pages mount, unknown paths are 404s in the right shape, headers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page

from modelyard.config import Settings
from modelyard.ui.app import create_app
from tests.ui.conftest import TestClient, UiServer


@pytest.fixture(scope="module")
def http(project: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(project)) as client:
        yield client


def test_unknown_page_is_an_html_404(http: TestClient) -> None:
    answer = http.get("/no/such/page")
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("text/html")
    assert "404" in answer.text


def test_unknown_api_path_is_the_json_error_shape(http: TestClient) -> None:
    answer = http.get("/api/no/such")
    assert answer.status_code == 404
    assert answer.json()["error"]["type"] == "not_found"


def test_every_answer_has_the_content_security_policy(http: TestClient) -> None:
    answer = http.get("/experiments")
    assert answer.status_code == 200
    assert "default-src 'self'" in answer.headers["content-security-policy"]


def test_plotly_is_served_from_the_package(http: TestClient) -> None:
    answer = http.get("/static/vendor/plotly.min.js")
    assert answer.status_code == 200 and len(answer.content) > 1_000_000


def test_home_loads_in_a_browser(project: Settings, ui_server: UiServer, page: Page) -> None:
    url = ui_server(project)
    page.goto(url + "/")
    assert page.title().startswith("Experiments")
