"""The event loop never waits on I/O: a slow disk under the durable log or a slow online
store delays only the requests that need them, never a concurrent health check.

Real parts: a live uvicorn server, the prediction log on disk with an fsync that takes
half a second (the writer's ``_fsync`` hook: a slow disk), and a private Redis server
paused with ``CLIENT PAUSE`` (a slow online store).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import redis

from modelyard.serving.app import create_app
from modelyard.store.predlog import PredictionLog, read_predictions
from tests.serving import test_server_entities as entities
from tests.serving.conftest import (
    NAME,
    LiveServer,
    Project,
    free_port,
    make_frame,
    records,
    serving,
)

SLOW_S = 1.0
#: a health check answered within this while the slow part takes SLOW_S
FAST_S = 0.3


def _health_while(
    server: LiveServer,
    slow: Callable[[httpx.Client], httpx.Response],
    started: Callable[[], bool],
    before: Callable[[], None] = lambda: None,
) -> tuple[list[float], list[httpx.Response]]:
    """Connect the clients, call ``before()``, send ``slow`` requests from threads; once
    ``started()`` says they reached the slow part, time health checks while they wait."""
    clients = [server.client() for _ in range(4)]
    try:
        with server.client() as http, ThreadPoolExecutor(max_workers=4) as pool:
            for client in clients:
                assert client.get("/v2/health/live").status_code == 200  # connected
            assert http.get("/v2/health/ready").status_code == 200
            before()
            pending = [pool.submit(slow, client) for client in clients]
            deadline = time.monotonic() + 10
            while not started():
                assert time.monotonic() < deadline, "the slow requests never got there"
                time.sleep(0.01)
            took = []
            for _ in range(3):
                start = time.perf_counter()
                assert http.get("/v2/health/ready").status_code == 200
                took.append(time.perf_counter() - start)
                time.sleep(0.05)
            answers = [p.result() for p in pending]
    finally:
        for client in clients:
            client.close()
    return took, answers


def test_a_slow_log_commit_does_not_stall_a_concurrent_health_check(project: Project) -> None:
    app = create_app(project.settings, [NAME], environ={})
    state = app.state.server
    root = state.log.root
    state.log.close()
    entered = threading.Event()

    def slow_fsync(fd: int) -> None:
        entered.set()
        time.sleep(SLOW_S)

    state.log = PredictionLog(root, _fsync=slow_fsync)
    server = LiveServer(app).start()
    frame, _ = make_frame(seed=3, rows=1)
    body = {"instances": records(frame)}
    try:

        def predict(http: httpx.Client) -> httpx.Response:
            return http.post(f"/v1/models/{NAME}:predict", json=body)

        took, answers = _health_while(server, predict, entered.is_set)
    finally:
        server.stop()
    assert entered.is_set()
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert max(a.elapsed.total_seconds() for a in answers) > SLOW_S / 2  # they did wait
    assert max(took) < FAST_S, took  # the loop answered while the disk was busy
    # every acknowledged prediction is on disk
    logged = set(read_predictions(root)["record_id"].to_pylist())
    assert {a.headers["x-record-id"] for a in answers} <= logged


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[str]:
    """A Redis server of this test's own (it gets paused), on a free port."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed (the test services need it)")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


def test_a_slow_online_store_does_not_stall_a_concurrent_health_check(
    tmp_path: Path, private_redis: str
) -> None:
    environ = {"MODELYARD_ONLINE_STORE": private_redis}
    settings, model, source = entities.make_project(tmp_path, environ=environ)
    # the source's rows are from 2020: requests replay a time within their freshness
    replay = serving(settings, replay=True)
    server = LiveServer(create_app(replay, ["scorer"], environ={})).start()
    as_of = (entities.T0 + timedelta(minutes=100)).isoformat()
    users, ages = ["u3", "u17"], [25, 61]
    admin = redis.Redis.from_url(private_redis)
    try:

        def predict(http: httpx.Client) -> httpx.Response:
            return http.post(
                "/v1/models/scorer:predict", json=entities._body(users, ages, as_of=as_of)
            )

        with server.client() as http:
            assert predict(http).status_code == 200  # the store connected, the model warm
        paused: list[float] = []

        def pause() -> None:
            paused.append(time.monotonic())
            admin.execute_command("CLIENT", "PAUSE", int(SLOW_S * 1000), "ALL")

        # the lookups reach the paused store within a few hundred milliseconds
        took, answers = _health_while(
            server, predict, lambda: time.monotonic() > paused[0] + 0.3, before=pause
        )
    finally:
        admin.close()
        server.stop()
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert max(a.elapsed.total_seconds() for a in answers) > SLOW_S / 2  # they did wait
    assert max(took) < FAST_S, took  # the loop answered while the store was paused
    expected_frame = pd.concat(
        [pd.DataFrame({"age": ages}), entities._latest(source, users)], axis=1
    )
    expected = model.predict_proba(expected_frame[entities.COLUMNS])[:, 1]
    for answer in answers:
        got = [p["probabilities"]["1"] for p in answer.json()["predictions"]]
        np.testing.assert_allclose(got, expected, rtol=1e-6)
