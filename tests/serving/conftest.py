"""Live servers for the end-to-end serving tests: real uvicorn on 127.0.0.1, httpx clients.

One project with two registered versions of ``churn`` (a pipeline over float, int,
category and string columns) is built once per session; each test gets its own copy of
it (metadata database and artifacts), so tests that move aliases or change traffic never
see each other. ``serve(settings, targets)`` starts ``create_app`` under
``uvicorn.Server`` in a thread on a free port and stops it (lifespan shutdown included)
when the test ends.
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pandas as pd
import pytest
import uvicorn
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder

from modelyard.config import ServingSettings, Settings, init_project, load_settings
from modelyard.registry import ModelRegistry
from modelyard.serving.app import create_app
from modelyard.serving.state import ServerState

SEED = 20240917
ROWS = 300
NAME = "churn"
_START_TIMEOUT_S = 30.0


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: the server reads the registry through the store every backend tests."""
    return f"sqlite:///{tmp_path / 'meta' / 'modelyard.db'}"


def make_frame(seed: int = SEED, rows: int = ROWS) -> tuple[pd.DataFrame, np.ndarray]:
    """Seeded rows with float, int, category and string columns, and their labels."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "amount": rng.normal(size=rows),
            "age": rng.integers(18, 90, size=rows),
            "plan": pd.Categorical(rng.choice(["basic", "pro", "max"], size=rows)),
            "city": rng.choice(["lyon", "oslo"], size=rows).astype(object),
        }
    )
    score = frame["amount"] + (frame["plan"] == "pro") + (frame["age"] > 50) * 0.7
    labels = (score + rng.normal(scale=0.5, size=rows) > 0.8).astype(int).to_numpy()
    return frame, labels


def make_model(seed: int = SEED, c: float = 1.0) -> Pipeline:
    frame, labels = make_frame(seed)
    encode = make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore"), ["plan", "city"]), remainder="passthrough"
    )
    return make_pipeline(encode, LogisticRegression(C=c, max_iter=500)).fit(frame, labels)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready rows of ``frame`` (category and numpy scalars as plain values)."""
    out = []
    for row in frame.itertuples(index=False):
        out.append(
            {
                "amount": float(row.amount),
                "age": int(row.age),
                "plan": str(row.plan),
                "city": row.city,
            }
        )
    return out


@dataclasses.dataclass
class Project:
    """A project copy: its settings, its registry and the native models of each version."""

    settings: Settings
    registry: ModelRegistry
    models: dict[int, Pipeline]

    def proba(self, version: int, frame: pd.DataFrame) -> np.ndarray:
        """The oracle: the native model's class-1 probability."""
        return np.asarray(self.models[version].predict_proba(frame)[:, 1])


@pytest.fixture(scope="session")
def _base_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, Pipeline]]:
    root = tmp_path_factory.mktemp("base") / "project"
    init_project(root)
    settings = load_settings(root, environ={})
    frame, _ = make_frame()
    models = {1: make_model(c=1.0), 2: make_model(seed=SEED + 1, c=0.05)}
    registry = ModelRegistry(settings)
    try:
        for version, model in models.items():
            logged = registry.log_model(model, name=NAME, training_frame=frame)
            assert logged.version == version
        registry.set_alias(f"{NAME}/1", "production")
    finally:
        registry.close()
    return root, models


@pytest.fixture
def project(
    _base_project: tuple[Path, dict[int, Pipeline]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Project]:
    """A private copy of the base project: churn v1 (production) and v2 (no alias)."""
    base, models = _base_project
    root = tmp_path / "project"
    shutil.copytree(base, root)
    monkeypatch.setenv("MODELYARD_ACTOR", "tester")
    settings = load_settings(root, environ={})
    registry = ModelRegistry(settings)
    yield Project(settings, registry, dict(models))
    registry.close()


def serving(settings: Settings, **changes: Any) -> Settings:
    """``settings`` with some ``serving`` fields replaced."""
    serving_settings: ServingSettings = msgspec.structs.replace(settings.serving, **changes)
    return msgspec.structs.replace(settings, serving=serving_settings)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """``create_app`` under a real uvicorn server in a background thread."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # accepted sockets inherit it; asyncio leaves Nagle on for a socket handed to it,
        # which with delayed ACKs costs 40 ms per request
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, log_level="warning", lifespan="on", loop="asyncio", timeout_graceful_shutdown=5
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.stopped = False

    @property
    def state(self) -> ServerState:
        state: ServerState = self.app.state.server
        return state

    @property
    def log_dir(self) -> Path:
        return self.state.log.root

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
        assert not self.thread.is_alive(), "the server did not shut down"

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0, **kwargs)


ServeFactory = Callable[..., LiveServer]


@pytest.fixture
def serve() -> Iterator[ServeFactory]:
    """Start live servers: ``serve(settings, ["churn"], environ={...})``; all stop at the end."""
    started: list[LiveServer] = []

    def start(settings: Settings, targets: list[str] | None = None, **kwargs: Any) -> LiveServer:
        kwargs.setdefault("environ", {})
        app = create_app(settings, targets if targets is not None else [NAME], **kwargs)
        server = LiveServer(app)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def held_out() -> pd.DataFrame:
    """Rows the models never saw (another seed)."""
    frame, _ = make_frame(seed=SEED + 99, rows=25)
    return frame
