"""The app's frame: pages mount, unknown paths are 404s in the right shape, headers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import httpx
import pytest
from playwright.sync_api import Page

from modelyard.config import Settings
from modelyard.pipelines.records import LOGS_ARTIFACT
from modelyard.tracking.client import TrackingClient
from modelyard.ui.app import PLOTLY_JS, PLOTLY_URL, PLOTLY_VERSION, create_app
from modelyard.ui.pages import runs as runs_pages
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


def test_plotly_is_served_compressed_with_an_etag_and_a_versioned_url(
    http: TestClient, project: Settings
) -> None:
    raw = PLOTLY_JS.read_bytes()
    packed = http.get("/static/vendor/plotly.min.js", headers={"accept-encoding": "gzip"})
    assert packed.headers["content-encoding"] == "gzip"
    assert int(packed.headers["content-length"]) < len(raw) / 2
    assert packed.content == raw  # decoded by the client: the same file
    plain = http.get("/static/vendor/plotly.min.js", headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == raw
    etag = packed.headers["etag"]
    assert plain.headers["etag"] == etag and "no-cache" in packed.headers["cache-control"]
    again = http.get("/static/vendor/plotly.min.js", headers={"if-none-match": etag})
    assert again.status_code == 304 and again.content == b""
    other = http.get("/static/vendor/plotly.min.js", headers={"if-none-match": '"stale"'})
    assert other.status_code == 200 and other.content == raw
    # the pages load the versioned URL, which a browser may keep for a year
    html = http.get("/runs/compare", params={"run": _any_run_id(project)}).text
    assert f'data-plotly="{PLOTLY_URL}"' in html and PLOTLY_VERSION in PLOTLY_URL
    versioned = http.get(PLOTLY_URL)
    assert versioned.content == raw and "immutable" in versioned.headers["cache-control"]
    assert http.get("/static/vendor/plotly-0.0.0.min.js").status_code == 404


def _any_run_id(project: Settings) -> str:
    client = TrackingClient(project)
    try:
        return client.search_runs(max_results=1)[0].id
    finally:
        client.close()


def test_home_loads_in_a_browser(project: Settings, ui_server: UiServer, page: Page) -> None:
    url = ui_server(project)
    page.goto(url + "/")
    assert page.title().startswith("Experiments")


def test_the_runs_page_knows_where_step_logs_are() -> None:
    assert runs_pages.LOGS_ARTIFACT == LOGS_ARTIFACT


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_modelyard_ui_serves_the_project_and_opens_without_the_heavy_pages(
    project: Settings,
) -> None:
    port = _free_port()
    command = [sys.executable, "-m", "modelyard", "ui", "--project", str(project.project_dir)]
    start = time.perf_counter()
    process = subprocess.Popen([*command, "--port", str(port)], stderr=subprocess.DEVNULL)
    try:
        while True:
            assert process.poll() is None, f"modelyard ui exited with {process.returncode}"
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/experiments", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.02)
        opened = time.perf_counter() - start
        assert answer.status_code == 200 and "churn" in answer.text
        print(f"modelyard ui answered its first 200 after {opened:.2f} s")
    finally:
        process.terminate()
        process.wait(timeout=20)
    # what makes that fast: the app imports none of the heavy libraries the other pages use
    probe = (
        "import sys, modelyard.ui.app; "
        "heavy = ('scipy', 'sklearn', 'plotly', 'optuna', 'pyarrow', 'numpy', 'pandas'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], check=False, capture_output=True, text=True
    )
    assert loaded.stdout.strip() == "[]", loaded.stdout + loaded.stderr


_WARM_PROBE = """
import os, sys, time
from pathlib import Path
from starlette.testclient import TestClient
from modelyard.config import load_settings
from modelyard.ui.app import create_app

app = create_app(load_settings(Path(sys.argv[1]), environ=os.environ))
with TestClient(app) as http:
    time.sleep(1.5)
    print("before", "modelyard.ui.pages.models" in sys.modules)
    assert http.get("/experiments").status_code == 200
    deadline = time.monotonic() + 60
    while app.router.default._router is None:  # the warm-up thread imports them
        assert time.monotonic() < deadline
        time.sleep(0.05)
    print("after", any(getattr(r, "path", "") == "/models" for r in app.router.default.routes))
"""


def test_the_other_pages_import_only_after_the_first_answer(project: Settings) -> None:
    # their imports (seconds of scipy and friends) must not compete with the first page
    done = subprocess.run(
        [sys.executable, "-c", _WARM_PROBE, str(project.project_dir)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.split() == ["before", "False", "after", "True"], done.stdout + done.stderr


def test_modelyard_ui_refuses_a_bad_port_and_warns_off_localhost(project: Settings) -> None:
    base = [sys.executable, "-m", "modelyard", "ui", "--project", str(project.project_dir)]
    bad = subprocess.run([*base, "--port", "70000"], check=False, capture_output=True, text=True)
    assert bad.returncode == 2 and "port" in bad.stderr and "Traceback" not in bad.stderr
    env = {k: v for k, v in os.environ.items() if k != "MODELYARD_API_KEYS"}
    port = _free_port()
    process = subprocess.Popen(
        [*base, "--host", "0.0.0.0", "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        assert first.startswith("warning: listening on 0.0.0.0 with no API key"), first
    finally:
        process.terminate()
        process.communicate(timeout=20)
    assert Path(project.project_dir).is_dir()


def test_every_template_and_static_file_is_package_data() -> None:
    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["modelyard"]
    package = root / "src" / "modelyard"
    files = [
        p.relative_to(package).as_posix()
        for folder in ("ui/templates", "ui/static")
        for p in (package / folder).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    assert files
    for name in files:
        path = PurePosixPath(name)
        assert any(
            len(PurePosixPath(p).parts) == len(path.parts) and path.match(p) for p in patterns
        ), f"{name} is not in [tool.setuptools.package-data]: the wheel would miss it"
