"""``modelyard gc``: what the project references, and the collection of everything else.

A blob is referenced when it is a package's manifest (every package recorded in
``model_packages``, which every registry version points at), a file any such manifest
lists (model files, examples, held-out rows, profiles, ONNX graphs), or a run artifact
(``run_artifacts``). Everything else in the artifact store, and stale temporary files,
go once older than the grace period (see :mod:`modelyard.store.gc` for why a running
writer is never hit).

A recorded package whose manifest cannot be read would hide which files it needs, so
the collection refuses to start and removes nothing until that package is restored.
"""

from __future__ import annotations

import os

from sqlalchemy import select

from modelyard.errors import ModelyardError, StorageError
from modelyard.models.package import read_manifest
from modelyard.store.artifacts import ArtifactStore
from modelyard.store.database import Database
from modelyard.store.gc import DEFAULT_GRACE_S, GcReport, collect_garbage
from modelyard.store.schema import model_packages, model_versions, run_artifacts

__all__ = ["referenced_blobs", "run_gc"]


def referenced_blobs(db: Database, artifacts: ArtifactStore) -> set[str]:
    """The sha256 of every blob a package, a registry version or a run references."""
    with db.read() as conn:
        packages = set(conn.execute(select(model_packages.c.id)).scalars())
        packages |= set(conn.execute(select(model_versions.c.package_id)).scalars())
        referenced = set(conn.execute(select(run_artifacts.c.sha256)).scalars())
    for package_id in sorted(packages):
        try:
            manifest = read_manifest(artifacts, package_id)
        except ModelyardError as exc:
            raise StorageError(
                f"Package {package_id} is recorded but its manifest cannot be read ({exc}); "
                "garbage collection removes nothing until it is restored"
            ) from exc
        referenced.add(package_id)
        referenced.update(entry.sha256 for entry in manifest.files)
    return referenced


def run_gc(
    db: Database,
    artifacts: ArtifactStore,
    *,
    grace_s: float = DEFAULT_GRACE_S,
    dry_run: bool = False,
    scratch_dir: str | os.PathLike[str] | None = None,
) -> GcReport:
    """Remove stale temporary files and unreferenced blobs older than ``grace_s``.

    References are read before the store is listed: a blob stored after that is younger
    than any grace period, and one a writer reuses is refreshed by the writer.
    """
    referenced = referenced_blobs(db, artifacts)
    return collect_garbage(
        artifacts, referenced, grace_s=grace_s, dry_run=dry_run, scratch_dir=scratch_dir
    )
