"""Fixtures shared by the suite: one test body, every metadata backend.

``db_url`` runs a test on SQLite and on the PostgreSQL server that ``make test``
starts (``MODELYARD_TEST_PG_URL``). Without that server the PostgreSQL cases are
skipped, unless ``MODELYARD_TEST_REQUIRE_SERVICES=1`` (as in ``make test`` and CI),
where a missing server is a failure.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
from sqlalchemy import create_engine, text

from modelyard.config import Settings, init_project, load_settings
from modelyard.tracking.client import TrackingClient


def _redis_database_per_worker() -> None:
    """Under pytest-xdist (``make test`` runs two workers) each worker gets its own Redis
    database: the ``online_store`` fixture empties its database around every test."""
    url = os.environ.get("MODELYARD_TEST_REDIS_URL")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if url and re.fullmatch(r"gw\d+", worker):
        index = int(worker[2:]) % 15 + 1  # 1..15: database 0 is left to single runs
        base = re.sub(r"/\d*$", "", url)
        os.environ["MODELYARD_TEST_REDIS_URL"] = f"{base}/{index}"


_redis_database_per_worker()
PG_URL = os.environ.get("MODELYARD_TEST_PG_URL")
REQUIRE = os.environ.get("MODELYARD_TEST_REQUIRE_SERVICES") == "1"


def _xdist_group(item: pytest.Item) -> str | None:
    """The group whose tests one pytest-xdist worker runs: every Ray test (one cluster per
    run, not one per worker), and each module whose tests share a module-scoped fixture
    (the demo's project, an image venv: built once, not once per worker)."""
    if "ray_address" in getattr(item, "fixturenames", ()) or item.get_closest_marker("ray"):
        return "ray"
    info = getattr(item, "_fixtureinfo", None)
    for defs in getattr(info, "name2fixturedefs", {}).values():
        if defs and defs[-1].scope in ("module", "package", "class"):
            return item.nodeid.split("::", 1)[0]
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup`` (``make test``) the groups of ``_xdist_group`` each run in
    one worker.

    pytest-xdist 3.8 groups by a ``@group`` suffix of the node id, which it writes to
    ``item._nodeid``; pytest 9 keeps the id in ``item._id``, so the suffix is set here.
    """
    if not config.getoption("loadgroup", default=False):
        return
    from _pytest.nodeid import coerce_node_id

    for item in items:
        group = _xdist_group(item)
        if group is not None and "@" not in item.nodeid:
            item._id = coerce_node_id(f"{item.nodeid}@{group}")


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


S3_ENDPOINT = os.environ.get("MODELYARD_TEST_S3_ENDPOINT")
# What s3fs (through botocore) reads: any credentials, a region, and the endpoint of the
# S3-compatible server. us-east-1 is the region where CreateBucket needs no LocationConstraint.
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "modelyard-test",
    "AWS_SECRET_ACCESS_KEY": "modelyard-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of an S3-compatible server on 127.0.0.1 (moto's server mode), one per session.

    ``MODELYARD_TEST_S3_ENDPOINT`` (set by ``make test`` / ``scripts/test.sh``) reuses a running
    server; otherwise this starts one with ``scripts/s3.sh`` and stops it after the session.
    """
    if S3_ENDPOINT:
        yield S3_ENDPOINT.rstrip("/")
        return
    import shutil
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "scripts" / "s3.sh"
    if shutil.which("moto_server", path=str(Path(sys.executable).parent)) is None:
        if REQUIRE:
            pytest.fail("moto_server is not installed but services are required")
        pytest.skip("no S3-compatible server: pip install 'moto[server]' or run `make test`")
    state = tmp_path_factory.mktemp("s3-server")
    env = {**os.environ, "PYTHON": sys.executable}
    started = subprocess.run(
        [str(script), "start", str(state)], env=env, capture_output=True, text=True, check=False
    )
    if started.returncode != 0:
        pytest.fail(f"scripts/s3.sh start failed: {started.stderr.strip()}")
    try:
        yield started.stdout.strip()
    finally:
        subprocess.run([str(script), "stop", str(state)], env=env, check=False)


@dataclass(frozen=True)
class S3Artifacts:
    """A fresh bucket on the test S3 server, as an artifact store's settings see it.

    ``url`` is the artifact URL (``s3://bucket/prefix``); ``env`` the environment variables a
    process (this one or a ``modelyard serve`` child) needs to reach it; ``storage_options``
    the same as fsspec keyword arguments.
    """

    url: str
    bucket: str
    endpoint: str
    env: dict[str, str]
    storage_options: dict[str, object]


@pytest.fixture
def s3_artifacts(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Artifacts]:
    """A fresh, empty bucket; its artifact URL, with the environment set for this process."""
    import boto3

    env = {**S3_CREDENTIALS, "AWS_ENDPOINT_URL_S3": s3_endpoint}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    bucket = f"t-{uuid.uuid4().hex[:20]}"
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    if env["AWS_DEFAULT_REGION"] == "us-east-1":
        s3.create_bucket(Bucket=bucket)
    else:  # every other region needs its LocationConstraint
        s3.create_bucket(
            Bucket=bucket,
            CreateBucketConfiguration={"LocationConstraint": env["AWS_DEFAULT_REGION"]},
        )
    options: dict[str, object] = {
        "key": env["AWS_ACCESS_KEY_ID"],
        "secret": env["AWS_SECRET_ACCESS_KEY"],
        "client_kwargs": {"endpoint_url": s3_endpoint, "region_name": env["AWS_DEFAULT_REGION"]},
    }
    try:
        yield S3Artifacts(f"s3://{bucket}/artifacts", bucket, s3_endpoint, env, options)
    finally:
        with contextlib.suppress(Exception):  # best effort: the server is in memory anyway
            listed = s3.list_objects_v2(Bucket=bucket)
            while listed.get("KeyCount", 0):
                s3.delete_objects(
                    Bucket=bucket,
                    Delete={"Objects": [{"Key": o["Key"]} for o in listed["Contents"]]},
                )
                listed = s3.list_objects_v2(Bucket=bucket)
            s3.delete_bucket(Bucket=bucket)
        s3.close()
