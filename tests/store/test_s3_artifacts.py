"""The artifact store and a fleet's prediction log on a real S3-compatible server.

moto's server mode on 127.0.0.1 (``s3_artifacts``: a fresh bucket per test), reached
through s3fs with the credentials and endpoint in the environment, as a deployment
would reach S3.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import fsspec
import httpx
import msgspec
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard.config import Settings, ShipSettings, init_project, load_settings
from modelyard.errors import ArtifactIntegrityError
from modelyard.monitoring.monitor import Monitor
from modelyard.registry import ModelRegistry
from modelyard.serving.app import create_app
from modelyard.store.artifacts import ArtifactStore
from modelyard.store.predlog import compact, connect
from modelyard.store.predlog.shipping import ShippedLog, replica_id_for, ship, shipped_log
from tests.conftest import S3Artifacts
from tests.serving.conftest import LiveServer

NAME = "churn"


def _keys(s3: S3Artifacts) -> list[str]:
    client = boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        region_name=s3.env["AWS_DEFAULT_REGION"],
        aws_access_key_id=s3.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=s3.env["AWS_SECRET_ACCESS_KEY"],
    )
    listed = client.list_objects_v2(Bucket=s3.bucket)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def _overwrite(s3: S3Artifacts, key: str, data: bytes) -> None:
    fs = fsspec.filesystem("s3", **s3.storage_options)
    fs.pipe_file(f"{s3.bucket}/{key}", data)


def test_round_trip_through_the_environment(s3_artifacts: S3Artifacts) -> None:
    store = ArtifactStore(s3_artifacts.url)
    ref = store.put_bytes(b"hello s3")
    assert store.get_bytes(ref.sha256) == b"hello s3"
    fs = fsspec.filesystem("s3", **s3_artifacts.storage_options)
    key = f"{s3_artifacts.bucket}/artifacts/objects/{ref.sha256[:2]}/{ref.sha256[2:]}"
    assert fs.cat(key) == b"hello s3"


def test_a_write_is_one_upload_to_its_address_with_no_temporary_object(
    s3_artifacts: S3Artifacts, tmp_path: Path
) -> None:
    store = ArtifactStore(s3_artifacts.url)
    big = tmp_path / "big.bin"
    big.write_bytes(np.random.default_rng(1).bytes(3 * 2**20))
    refs = [store.put_bytes(b"small"), store.put_file(big), store.put_bytes(b"small")]
    expected = sorted({f"artifacts/objects/{r.sha256[:2]}/{r.sha256[2:]}" for r in refs})
    assert _keys(s3_artifacts) == expected  # no tmp/ key, no copy left behind
    assert store.get_bytes(refs[1].sha256) == big.read_bytes()


def test_a_torn_object_is_never_read_as_valid(s3_artifacts: S3Artifacts, tmp_path: Path) -> None:
    store = ArtifactStore(s3_artifacts.url)
    data = np.random.default_rng(2).bytes(200_000)
    ref = store.put_bytes(data)
    key = f"artifacts/objects/{ref.sha256[:2]}/{ref.sha256[2:]}"
    for torn in (data[: len(data) // 2], b"", data[:-1] + b"\x00"):
        _overwrite(s3_artifacts, key, torn)  # what a cut upload by another writer leaves
        with pytest.raises(ArtifactIntegrityError, match="corrupted"):
            store.get_bytes(ref.sha256, name="model.pkl")
        dest = tmp_path / "out" / "model.pkl"
        with pytest.raises(ArtifactIntegrityError):
            store.get_file(ref.sha256, dest)
        assert not dest.exists() and not list((tmp_path / "out").iterdir())
        assert not store.verify(ref.sha256)
        assert store.put_bytes(data) == ref  # writing the content again repairs it
        assert store.get_bytes(ref.sha256) == data


def _frame(seed: int, rows: int = 200) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"a": rng.normal(size=rows), "b": rng.normal(size=rows)})
    labels = (frame["a"] + 0.5 * frame["b"] + rng.normal(scale=0.3, size=rows) > 0).astype(int)
    return frame, labels.to_numpy()


def _replica(settings: Settings, root: Path, replica: str) -> Settings:
    serving = msgspec.structs.replace(
        settings.serving,
        log_dir=str(root / f"log-{replica}"),
        replica_id=replica,
        compact_interval_s=0.2,
        ship=ShipSettings(interval_s=0.2),
    )
    return msgspec.structs.replace(settings, serving=serving)


@pytest.fixture
def fleet_project(s3_artifacts: S3Artifacts, tmp_path: Path) -> Iterator[Settings]:
    """A project whose artifacts live in the bucket: churn v1 logged and in production."""
    root = tmp_path / "project"
    init_project(root)
    settings = msgspec.structs.replace(load_settings(root, environ={}), artifacts=s3_artifacts.url)
    frame, labels = _frame(3)
    registry = ModelRegistry(settings)
    try:
        model = LogisticRegression().fit(frame, labels)
        logged = registry.log_model(model, name=NAME, training_frame=frame)
        registry.set_alias(f"{NAME}/{logged.version}", "production")
        loaded = registry.load(f"{NAME}@production")
        np.testing.assert_array_equal(loaded.predict(frame), model.predict(frame))
    finally:
        registry.close()
    yield settings


def test_packages_are_logged_registered_and_loaded_from_s3(
    fleet_project: Settings, s3_artifacts: S3Artifacts
) -> None:
    keys = _keys(s3_artifacts)
    assert keys and all(k.startswith("artifacts/objects/") for k in keys)
    local = fleet_project.project_dir / ".modelyard" / "artifacts"
    assert not local.exists() or not any(p.is_file() for p in local.rglob("*"))
    registry = ModelRegistry(fleet_project)
    try:
        manifest = registry.manifest(f"{NAME}@production")
        assert manifest.signature is not None
        assert list(manifest.signature.names) == ["a", "b"]
    finally:
        registry.close()


def _wait_for(check: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the shipped log")
        time.sleep(0.1)


def test_two_replicas_ship_and_feedback_joins_across_them(
    fleet_project: Settings, tmp_path: Path
) -> None:
    a = _replica(fleet_project, tmp_path, "a")
    b = _replica(fleet_project, tmp_path, "b")
    frame, labels = _frame(4, rows=6)
    rows = [{"a": float(x), "b": float(y)} for x, y in zip(frame["a"], frame["b"], strict=True)]
    shipped = shipped_log(a)
    assert isinstance(shipped, ShippedLog)
    server_a = LiveServer(create_app(a, [NAME], environ={})).start()
    server_b = LiveServer(create_app(b, [NAME], environ={})).start()
    try:
        http_a, http_b = server_a.client(), server_b.client()

        def predict(http: httpx.Client, instances: list[dict[str, float]]) -> str:
            answer = http.post(f"/v1/models/{NAME}:predict", json={"instances": instances})
            assert answer.status_code == 200, answer.text
            return str(answer.headers["x-record-id"])

        def labels_to_b(ids: list[str], values: np.ndarray) -> dict[str, Any]:
            items = [{"request_id": r, "label": int(v)} for r, v in zip(ids, values, strict=True)]
            answer = http_b.post("/v1/feedback", json={"feedback": items})
            assert answer.status_code == 200, answer.text
            return dict(answer.json())

        def shipped_ids() -> set[str]:
            found = set()
            for path in shipped.files("predictions"):
                table = shipped.read(path, columns=["record_id"])
                found |= set(table.column("record_id").to_pylist()) if table else set()
            return found

        early = [predict(http_a, [row]) for row in rows[:2]]
        id_b = predict(http_b, rows[4:])
        _wait_for(lambda: {*early, id_b} <= shipped_ids())
        # labels posted to b for a's shipped records: matched as they arrive
        assert labels_to_b(early, labels[:2])["records"] == 2
        # labels for a's newest records, perhaps not shipped yet: matched now or later
        late = [predict(http_a, [row]) for row in rows[2:4]]
        body = labels_to_b(late, labels[2:4])
        assert body["records"] + body["unknown"]["count"] == 2
        ids_a = early + late
        _wait_for(lambda: set(ids_a) <= shipped_ids() and bool(shipped.files("feedback")))
        http_a.close()
        http_b.close()
    finally:
        server_a.stop()
        server_b.stop()
    for replica in (a, b):  # what a restart ships first: records of the last interval
        compact(replica.prediction_log_dir)
        ship(replica.prediction_log_dir, shipped.url, replica_id_for(replica))
    # a third host, with no log of its own, sees both replicas and the labels
    c = _replica(fleet_project, tmp_path, "c")
    con = connect(c.prediction_log_dir, shipped_log(c))
    try:
        counted = con.execute(
            "SELECT count(*), count(DISTINCT record_id) FROM predictions"
        ).fetchone()
        joined = con.execute(
            "SELECT p.record_id, f.label FROM predictions p JOIN feedback f USING (record_id) "
            "ORDER BY p.time"
        ).fetchall()
    finally:
        con.close()
    assert counted == (6, 5)
    assert [r for r, _ in joined] == ids_a
    assert [int(label) for _, label in joined] == [int(x) for x in labels[:4]]
    assert id_b not in {r for r, _ in joined}
    with Monitor(c) as monitor:
        model = monitor.model(NAME)
        windows = monitor.drift(model, window="1d")
    assert sum(w.rows for w in windows) == 6  # every acknowledged prediction, once
