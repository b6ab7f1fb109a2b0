"""``modelyard gc``: what the project references, and the collection of everything else.

A blob is referenced when it is a package's manifest (every package recorded in
``model_packages``, which every registry version points at), a file any such manifest
lists (model files, examples, held-out rows, profiles, ONNX graphs), a run artifact
(``run_artifacts``), a file a pipeline step output's manifest lists (``pipeline_outputs``)
or a step's captured logs (``pipeline_steps.logs_sha256``). Everything else in the
artifact store, and stale temporary files, go once older than the grace period (see
:mod:`modelyard.store.gc` for why a running writer is never hit).

A recorded package whose manifest cannot be read would hide which files it needs, so
the collection refuses to start and removes nothing until that package is restored.
"""

from __future__ import annotations

import json
import os

from sqlalchemy import select

from modelyard.errors import ModelyardError, StorageError
from modelyard.models.package import read_manifest
from modelyard.store.artifacts import ArtifactStore
from modelyard.store.database import Database
from modelyard.store.gc import DEFAULT_GRACE_S, GcReport, collect_garbage
from modelyard.store.schema import (
    model_packages,
    model_versions,
    pipeline_outputs,
    pipeline_steps,
    run_artifacts,
)

__all__ = ["referenced_blobs", "run_gc"]


def referenced_blobs(db: Database, artifacts: ArtifactStore) -> set[str]:
    """The sha256 of every blob a package, a registry version or a run references."""
    with db.read() as conn:
        packages = set(conn.execute(select(model_packages.c.id)).scalars())
        packages |= set(conn.execute(select(model_versions.c.package_id)).scalars())
        referenced = set(conn.execute(select(run_artifacts.c.sha256)).scalars())
        logs = select(pipeline_steps.c.logs_sha256).where(pipeline_steps.c.logs_sha256.is_not(None))
        referenced |= set(conn.execute(logs).scalars())
        outputs = conn.execute(
            select(
                pipeline_outputs.c.step_run_id, pipeline_outputs.c.name, pipeline_outputs.c.manifest
            )
        ).all()
    for step_run_id, name, manifest in outputs:
        referenced.update(_output_files(step_run_id, name, manifest))
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


def _output_files(step_run_id: str, name: str, manifest: str) -> list[str]:
    """The sha256 of every file a step output's manifest lists (refusing one it cannot read)."""
    try:
        files = json.loads(manifest)["files"]
        shas = [str(sha) for sha in files.values()]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StorageError(
            f"Output {name!r} of step run {step_run_id} is recorded but its manifest cannot be "
            f"read ({exc}); garbage collection removes nothing until it is restored"
        ) from exc
    return shas


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
