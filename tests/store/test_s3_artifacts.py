"""The artifact store on a real S3-compatible server (moto's server mode on 127.0.0.1)."""

from __future__ import annotations

import fsspec

from modelyard.store.artifacts import ArtifactStore
from tests.conftest import S3Artifacts


def test_round_trip_through_the_environment(s3_artifacts: S3Artifacts) -> None:
    store = ArtifactStore(s3_artifacts.url)
    ref = store.put_bytes(b"hello s3")
    assert store.get_bytes(ref.sha256) == b"hello s3"
    fs = fsspec.filesystem("s3", **s3_artifacts.storage_options)
    key = f"{s3_artifacts.bucket}/artifacts/objects/{ref.sha256[:2]}/{ref.sha256[2:]}"
    assert fs.cat(key) == b"hello s3"
