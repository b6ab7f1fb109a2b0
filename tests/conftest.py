"""Fixtures shared by the suite: one test body, every metadata backend.

``db_url`` runs a test on SQLite and on the PostgreSQL server that ``make test``
starts (``MODELYARD_TEST_PG_URL``). Without that server the PostgreSQL cases are
skipped, unless ``MODELYARD_TEST_REQUIRE_SERVICES=1`` (as in ``make test`` and CI),
where a missing server is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from sqlalchemy import create_engine, text

from modelyard.config import Settings, init_project, load_settings
from modelyard.tracking.client import TrackingClient

PG_URL = os.environ.get("MODELYARD_TEST_PG_URL")
REQUIRE = os.environ.get("MODELYARD_TEST_REQUIRE_SERVICES") == "1"


def _need_pg() -> str:
    if PG_URL:
        return PG_URL
    if REQUIRE:
        pytest.fail("MODELYARD_TEST_PG_URL is not set but services are required")
    pytest.skip("no PostgreSQL server: run the suite with `make test`")


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database; its URL."""
    admin_url = _need_pg()
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh metadata database, on each backend in turn."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'meta' / 'modelyard.db'}"
    return str(request.getfixturevalue("pg_database"))


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    """A fresh project whose metadata store is ``db_url``."""
    root = tmp_path / "project"
    init_project(root)
    base = load_settings(root, environ={})
    return msgspec.structs.replace(base, db_url=db_url)


@pytest.fixture
def client(settings: Settings) -> Iterator[TrackingClient]:
    c = TrackingClient(settings)
    yield c
    c.close()


REDIS_URL = os.environ.get("MODELYARD_TEST_REDIS_URL")


def _need_redis() -> str:
    if REDIS_URL:
        return REDIS_URL
    if REQUIRE:
        pytest.fail("MODELYARD_TEST_REDIS_URL is not set but services are required")
    pytest.skip("no Redis server: run the suite with `make test`")


@pytest.fixture(params=["sqlite", "redis"])
def online_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """A fresh, empty online store, on each backend in turn (Redis: its own key prefix)."""
    from modelyard.features.online import RedisOnlineStore, SQLiteOnlineStore

    store: SQLiteOnlineStore | RedisOnlineStore
    if request.param == "sqlite":
        store = SQLiteOnlineStore(f"sqlite:///{tmp_path / 'online' / 'online.db'}")
    else:
        url = _need_redis()
        import redis

        admin = redis.Redis.from_url(url)
        admin.flushdb()
        store = RedisOnlineStore(url, prefix=f"t{uuid.uuid4().hex[:12]}:")
    try:
        yield store
    finally:
        store.close()
        if request.param == "redis":
            admin.flushdb()
            admin.close()


RAY_ADDRESS = os.environ.get("MODELYARD_TEST_RAY_ADDRESS")


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    """The address of a real two-node Ray cluster on 127.0.0.1, one per test session.

    ``MODELYARD_TEST_RAY_ADDRESS`` reuses a running cluster; otherwise this starts a head
    and a second node (``tests/ray_cluster.py``) and stops both after the session.
    Without ray installed the tests are skipped, unless services are required.
    """
    try:
        import ray  # only to know whether the engine can run
    except ImportError:
        if REQUIRE:
            pytest.fail("ray is not installed but services are required (pip install -e '.[dev]')")
        pytest.skip("ray is not installed: pip install 'modelyard[ray]'")
    if RAY_ADDRESS:
        yield RAY_ADDRESS
        return
    from tests.ray_cluster import RayCluster

    cluster = RayCluster().start()
    try:
        yield cluster.address
    finally:
        import ray

        ray.shutdown()
        cluster.stop()
