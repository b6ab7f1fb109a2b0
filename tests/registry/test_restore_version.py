"""An image's store records the version it was built from under its own number, once.

``SQLRegistryStore.restore_version`` (what a container's entrypoint calls through
``deploy.bundle.restore_version``): the first call records the package, the version and
one audit row; a restart's call changes nothing; another package under the number is
reported and left alone. On SQLite and PostgreSQL, as every registry write.
"""

from __future__ import annotations

import threading

from modelyard.registry.entities import ModelVersion
from modelyard.registry.refs import ModelRef
from modelyard.registry.store import SQLRegistryStore
from modelyard.store.database import open_database


def _version(package_id: str) -> ModelVersion:
    return ModelVersion(
        name="churn", version=7, package_id=package_id, run_id=None, status="active",
        description="baked", created_by="ci", created_at=1_700_000_000_000,
    )  # fmt: skip


def _restore(store: SQLRegistryStore, package_id: str) -> str | None:
    return store.restore_version(
        _version(package_id), flavor="sklearn", model_class="X", actor="image",
        reason="restored", now=1_700_000_000_123,
    )  # fmt: skip


def test_restored_once_then_left_alone(db_url: str) -> None:
    db = open_database(db_url)
    try:
        store = SQLRegistryStore(db)
        package, other = "a" * 64, "b" * 64
        assert _restore(store, package) is None
        assert _restore(store, package) == package  # a restart: nothing written
        assert _restore(store, other) == package  # another package: reported, not written
        found = store.resolve(ModelRef.parse("churn/7"))
        assert (found.package_id, found.created_by, found.description) == (package, "ci", "baked")
        assert store.package_exists(package) and not store.package_exists(other)
        assert [(e.action, e.version_to, e.actor) for e in store.history("churn")] == [
            ("register", 7, "image")
        ]
    finally:
        db.close()


def test_racing_restores_record_one_version(db_url: str) -> None:
    db = open_database(db_url)
    try:
        store = SQLRegistryStore(db)
        results: list[str | None] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(4)

        def restore() -> None:
            try:
                barrier.wait()
                results.append(_restore(store, "c" * 64))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=restore) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert sorted(results, key=str) == [None, *["c" * 64] * 3]  # one wrote it
        assert len(store.history("churn")) == 1
    finally:
        db.close()
