"""A database outage in the middle of a run: no error to the caller, no point lost or doubled.

The test starts its own PostgreSQL server (initdb + pg_ctl, as ``scripts/postgres.sh``
does, as the ``postgres`` user when run as root) on a free port, stops it while a run
logs, and starts it again. The contract under test (see ``MetricBuffer``): once
``log_metric`` returns the buffer owns the point; an outage is retried and logged once;
a full buffer raises *before* taking a point, so an error always means "not kept".
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from sqlalchemy import func, select

from modelyard.config import Settings, TrackingSettings, init_project, load_settings
from modelyard.errors import StorageError
from modelyard.store.schema import metrics
from modelyard.tracking.client import TrackingClient
from modelyard.tracking.entities import RunStatus

_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "postgres.sh"
_REQUIRE = os.environ.get("MODELYARD_TEST_REQUIRE_SERVICES") == "1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else None


class PrivateServer:
    """A throw-away PostgreSQL server this test may stop and start."""

    def __init__(self) -> None:
        self.dir = Path("/tmp") / f"modelyard-pg-{uuid.uuid4().hex[:12]}"  # postgres can reach it
        self.port = _free_port()
        bin_dir = _pg_bin()
        if bin_dir is None:
            if _REQUIRE:
                pytest.fail("PostgreSQL's pg_ctl is not installed but services are required")
            pytest.skip("PostgreSQL's pg_ctl is not installed")
        self.pg_ctl = str(bin_dir / "pg_ctl")
        env = dict(os.environ, MODELYARD_TEST_PG_PORT=str(self.port))
        done = subprocess.run(
            ["bash", str(_SCRIPT), "start", str(self.dir)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        self.url = done.stdout.strip()
        # the script's server acknowledges commits before their WAL is written
        # (synchronous_commit=off), which a crash loses: restart it with durable commits
        self._pg_ctl("-m", "fast", "-w", "stop")
        self.start()

    def _pg_ctl(self, *args: str) -> None:
        command = [self.pg_ctl, "-D", str(self.dir / "data"), *args]
        if os.getuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def stop(self) -> None:
        """Stop at once, as a crash would: clients' connections break mid-use."""
        self._pg_ctl("-m", "immediate", "-w", "stop")

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off"
        self._pg_ctl("-l", str(self.dir / "server.log"), "-w", "-t", "60", "-o", options, "start")

    def remove(self) -> None:
        subprocess.run(
            ["bash", str(_SCRIPT), "stop", str(self.dir)],
            capture_output=True,
            timeout=120,
            check=False,
        )


@pytest.fixture(scope="module")
def server() -> Iterator[PrivateServer]:
    pg = PrivateServer()
    try:
        yield pg
    finally:
        pg.remove()


def _settings(tmp_path: Path, url: str) -> Settings:
    root = tmp_path / "project"
    init_project(root)
    base = load_settings(root, environ={})
    tracking = TrackingSettings(flush_points=20, flush_interval_ms=50)
    return msgspec.structs.replace(base, db_url=url, tracking=tracking)


def _rows_per_step(client: TrackingClient, run_id: str) -> dict[int, int]:
    with client.db.read() as conn:
        rows = conn.execute(
            select(metrics.c.step, func.count())
            .where(metrics.c.run_id == run_id)
            .group_by(metrics.c.step)
        ).all()
    return {int(step): int(count) for step, count in rows}


def test_an_outage_mid_run_raises_nothing_and_stores_each_point_once(
    tmp_path: Path, server: PrivateServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="modelyard.tracking.buffer")
    with TrackingClient(_settings(tmp_path, server.url)) as client:
        run = client.start_run("outage")
        step = 0

        def log(n: int) -> None:
            nonlocal step
            for _ in range(n):
                run.log_metric("x", step * 0.5, step=step)
                step += 1
                time.sleep(0.001)

        log(300)
        server.stop()
        try:
            log(400)  # while the store is down: no error, the points are kept
            time.sleep(1.0)  # the flusher retries (with backoff) meanwhile
            assert len(client._buffer) > 0
        finally:
            server.start()
        log(300)
        run.end()
        assert client.get_run(run.id).status is RunStatus.FINISHED
        assert _rows_per_step(client, run.id) == dict.fromkeys(range(1000), 1)
        history = client.get_metric_history(run.id, "x")
        assert [m.value for m in history] == [s * 0.5 for s in range(1000)]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("metric store is unavailable" in m for m in messages) == 1, messages
    assert sum("metric store is back" in m for m in messages) == 1, messages


def test_a_full_buffer_refuses_before_taking_the_point(
    tmp_path: Path, server: PrivateServer
) -> None:
    settings = _settings(tmp_path, server.url)
    with TrackingClient(settings, max_buffered_points=50, full_buffer_wait_s=0.5) as client:
        run = client.start_run("full")
        run.log_metric("x", 0.0, step=0)
        client.flush()
        server.stop()
        try:
            for step in range(1, 51):  # 50 points waiting: the buffer is full
                run.log_metric("x", float(step), step=step)
            started = time.monotonic()
            with pytest.raises(StorageError, match="this point was not kept"):
                run.log_metric("x", 51.0, step=51)
            assert time.monotonic() - started >= 0.5  # it waited for room first
            with pytest.raises(StorageError, match="will be written when it is back"):
                client.flush()  # the points stay buffered
        finally:
            server.start()
        run.log_metric("x", 51.0, step=51)  # the caller's retry of a refused point
        run.end()
        assert _rows_per_step(client, run.id) == dict.fromkeys(range(52), 1)
        assert client.get_run(run.id).status is RunStatus.FINISHED
