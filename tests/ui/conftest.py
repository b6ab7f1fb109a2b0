"""Fixtures for the web UI's tests: Debian's Chromium under Playwright, live servers.

``browser`` is one headless Chromium per session (``MODELYARD_TEST_CHROMIUM``, else
``/usr/bin/chromium``; missing, the browser tests skip with the reason, or fail when
``MODELYARD_TEST_REQUIRE_SERVICES=1``). ``ui_server(settings, read_only=False,
env=None)`` starts ``create_app`` under a real uvicorn on a free 127.0.0.1 port in a
thread and returns its base URL; ``env`` is the environment its API keys are read from.
``page`` is a fresh browser page that records console errors, page errors and failed
requests (a 4xx/5xx answer included) and fails the test at teardown if there was any.
``project`` is a module-scoped SQLite project with two experiments and a few runs.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec
import pandas as pd
import pytest
import uvicorn
from playwright.sync_api import Browser, Page, sync_playwright
from sklearn.linear_model import LogisticRegression
from starlette.exceptions import StarletteDeprecationWarning

from modelyard.config import Settings, init_project, load_settings
from modelyard.registry.client import ModelRegistry
from modelyard.serving.auth import ApiKeys
from modelyard.tracking.client import TrackingClient
from modelyard.ui.app import create_app

with warnings.catch_warnings():
    # Starlette asks for the httpx2 fork; httpx (installed) still works. Import TestClient
    # from here: ``from tests.ui.conftest import TestClient``
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

__all__ = ["ADMIN_ENV", "ADMIN_KEY", "TestClient", "UiServer", "make_project"]

REQUIRE = os.environ.get("MODELYARD_TEST_REQUIRE_SERVICES") == "1"
#: the admin key the tests' servers accept (``env-1`` in the audit trail)
ADMIN_KEY = "ui-test-admin-key"
ADMIN_ENV = {"MODELYARD_API_KEYS": f"{ADMIN_KEY}:predict+admin,predict-only-key:predict"}
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = os.environ.get("MODELYARD_TEST_CHROMIUM") or "/usr/bin/chromium"
    if not Path(path).is_file():
        reason = f"no Chromium at {path} (apt-get install chromium, or MODELYARD_TEST_CHROMIUM)"
        if REQUIRE:
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Browser]:
    # per module, not per session: Playwright's sync API keeps an asyncio loop running
    # in the main thread while it is open, and any later test calling asyncio.run() (the
    # serving doctests run after tests/) would fail with "cannot be called from a running
    # event loop"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


class LiveUi:
    """``create_app`` under a real uvicorn server in a background thread."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", loop="asyncio")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def start(self) -> LiveUi:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the UI server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


UiServer = Callable[..., str]


def start_ui(
    settings: Settings, *, read_only: bool = False, env: Mapping[str, str] | None = None
) -> LiveUi:
    keys = ApiKeys.from_settings(settings.serving.api_keys, env if env is not None else ADMIN_ENV)
    return LiveUi(create_app(settings, read_only=read_only, api_keys=keys)).start()


@pytest.fixture
def ui_server() -> Iterator[UiServer]:
    """``ui_server(settings, read_only=False, env=None) -> base URL``; stopped at the end.

    ``env`` defaults to ``ADMIN_ENV`` (``ADMIN_KEY`` has the admin scope).
    """
    started: list[LiveUi] = []

    def start(
        settings: Settings, read_only: bool = False, env: Mapping[str, str] | None = None
    ) -> str:
        server = start_ui(settings, read_only=read_only, env=env)
        started.append(server)
        return server.url

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page; the test fails at teardown on any console error or failed request."""
    context = browser.new_context()
    opened = context.new_page()
    problems: list[str] = []
    opened.on(
        "console",
        lambda msg: (
            problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None
        ),
    )
    opened.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    opened.on(
        "requestfailed",
        lambda req: problems.append(f"request failed: {req.method} {req.url} {req.failure}"),
    )
    opened.on(
        "response",
        lambda resp: (
            problems.append(f"HTTP {resp.status}: {resp.request.method} {resp.url}")
            if resp.status >= 400
            else None
        ),
    )
    opened.set_default_timeout(10_000)
    try:
        yield opened
    finally:
        context.close()
    assert not problems, "the page had errors:\n" + "\n".join(problems)


#: a 1x1 PNG
PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c63f8cfc0f01f0005000201a5f4c5b20000000049454e44ae426082"
)


def _artifact_folder(root: Path) -> Path:
    folder = root / "artifacts-src"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("trained on the march data\n")
    (folder / "config.json").write_text('{"lr": 0.1, "layers": [64, 32]}')
    (folder / "head.csv").write_text("a,b\n1,x\n2,y\n3,z\n")
    pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]}).to_parquet(folder / "table.parquet")
    (folder / "plot.png").write_bytes(PNG_1X1)
    (folder / "report.html").write_text("<html><body><h1>report</h1></body></html>")
    return folder


def make_project(
    root: Path, db_url: str | None = None, *, model: bool = True, artifacts: str | None = None
) -> Settings:
    """A project with experiments ``churn`` (three finished runs with a ``loss`` curve and
    ``auc``, inputs, artifacts of every previewed kind on the first, a pipeline-like
    parent with a step child that printed logs and, with ``model``, registered version 1
    of ``churn``) and ``forecast`` (one run)."""
    init_project(root)
    settings = load_settings(root, environ={})
    if db_url is not None:
        settings = msgspec.structs.replace(settings, db_url=db_url)
    if artifacts is not None:  # an fsspec URL: an object store instead of a local folder
        settings = msgspec.structs.replace(settings, artifacts=artifacts)
    train = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [0, 1, 0]})
    other = pd.DataFrame({"x": [1.0, 2.0, 4.0], "y": [0, 1, 1]})
    folder = _artifact_folder(root)
    client = TrackingClient(settings)
    try:
        for i, (lr, depth) in enumerate([(0.1, 3), (0.05, 5), (0.1, 8)]):
            with client.start_run(experiment="churn", name=f"hgb-{i}") as run:
                run.log_params({"lr": lr, "depth": depth, "model": "hgb"})
                run.set_tags({"team": "risk" if i < 2 else "growth"})
                for step in range(20):
                    run.log_metric("loss", 1.0 / (step + 1 + i), step=step)
                run.log_metric("auc", 0.7 + 0.05 * i)
                client.log_input(run.id, train if i < 2 else other, "train")
                if i == 0:
                    client.log_artifacts(run.id, folder)
        with client.start_run(experiment="churn", name="pipeline") as parent:
            with client.start_run(
                experiment="churn", name="train-step", parent_run_id=parent.id
            ) as step_run:
                step_run.log_metric("fit_s", 1.5)
                (root / "logs.txt").write_text("fitting...\ndone\n")
                client.log_artifact(step_run.id, root / "logs.txt")
                step_id = step_run.id
        with client.start_run(experiment="forecast", name="arima") as run:
            run.log_param("order", "(1, 1, 1)")
            run.log_metric("mape", 0.12)
        client.flush()
    finally:
        client.close()
    if not model:
        return settings
    registry = ModelRegistry(settings)
    try:
        model = LogisticRegression().fit(train[["x"]], train["y"])
        registry.log_model(model, name="churn", training_frame=train[["x"]], run_id=step_id)
    finally:
        registry.close()
    return settings


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A module-scoped SQLite project with a few runs (see ``make_project``)."""
    return make_project(tmp_path_factory.mktemp("ui") / "project")
