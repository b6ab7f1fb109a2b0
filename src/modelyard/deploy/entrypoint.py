"""``python -m modelyard.deploy.entrypoint [SERVE OPTIONS]``: the image's entrypoint.

1. Reads ``package.json`` in the project folder (``MODELYARD_PROJECT``, the image's
   ``/srv/modelyard``) and re-hashes the baked package against it (``verify_bundle``):
   a changed byte stops the container with one line, exit 2.
2. Makes the metadata store hold the version: the image's own SQLite store gets the
   version's record under its original number (``restore_version``); a shared store
   (``MODELYARD_DB_URL`` from a Secret, PostgreSQL) must already hold ``NAME/VERSION``
   with this very package, else the container refuses to start.
3. Workers from the cgroup's CPU limit (``MODELYARD_WORKERS`` overrides), one thread per
   worker's native pools (``OMP_NUM_THREADS=1`` and the BLAS variables).
4. Replaces itself with ``modelyard serve NAME/VERSION --host $HOST --port $PORT
   --workers N`` plus any arguments it was given (``--trust``, ``--runtime native``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from modelyard.config import load_settings
from modelyard.deploy.bundle import BUNDLE_FILE, read_bundle, restore_version, verify_bundle
from modelyard.deploy.cgroup import available_cpus, cpu_limit, plan_workers
from modelyard.errors import (
    ArtifactIntegrityError,
    InvalidInputError,
    ModelyardError,
    NotFoundError,
)
from modelyard.registry.client import ModelRegistry
from modelyard.store.artifacts import ArtifactStore
from modelyard.store.database import open_database
from modelyard.store.urls import redact_text

__all__ = ["BAKED_ARTIFACTS", "THREAD_VARIABLES", "main", "serve_command"]

#: the baked package's artifact folder, inside the project folder
BAKED_ARTIFACTS = "artifacts"
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise InvalidInputError(
            f"Expected a whole number in ${name}, got {raw!r}", loc=name
        ) from exc


def serve_command(project: Path, extra: Sequence[str] = ()) -> list[str]:
    """Verify the baked package, record its version, and the ``modelyard serve`` to run."""
    settings = load_settings(project)
    bundle = read_bundle(settings.project_dir / BUNDLE_FILE)
    verify_bundle(bundle, ArtifactStore(str(settings.project_dir / BAKED_ARTIFACTS)))
    if settings.db_url.startswith("sqlite"):
        db = open_database(settings.db_url)
        try:
            restore_version(db, bundle, actor="modelyard-image")
        finally:
            db.close()
    else:
        registry = ModelRegistry(settings)
        try:
            try:
                held = registry.get_version(bundle.ref)
            except NotFoundError as exc:
                raise NotFoundError(
                    f"The shared metadata store has no {bundle.ref} (the image holds it): "
                    "register the version there, or run the image on its own store"
                ) from exc
        finally:
            registry.close()
        if held.package_id != bundle.package_id:
            raise ArtifactIntegrityError(
                f"The shared metadata store's {bundle.ref} is package {held.package_id[:12]}, "
                f"the image holds {bundle.package_id[:12]}: refusing to serve"
            )
    root = Path(os.environ.get("MODELYARD_CGROUP_ROOT", "/sys/fs/cgroup"))
    workers = plan_workers(
        cpu_limit(root), available=available_cpus(), workers=_env_int("MODELYARD_WORKERS")
    )
    port = _env_int("PORT") or 8080
    if not 0 < port < 65536:
        raise InvalidInputError(f"Expected $PORT in 1..65535, got {port}", loc="PORT")
    host = os.environ.get("HOST", "0.0.0.0")
    return [
        sys.executable,
        "-m",
        "modelyard",
        "--project",
        str(settings.project_dir),
        "serve",
        bundle.ref,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        *extra,
    ]


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Check, then exec the server; on a problem one line on stderr and exit 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    project = Path(os.environ.get("MODELYARD_PROJECT", "/srv/modelyard"))
    try:
        command = serve_command(project, args)
    except (ModelyardError, OSError) as exc:
        print(f"error: {redact_text(' '.join(str(exc).split()))}", file=sys.stderr)
        sys.exit(2)
    for name in THREAD_VARIABLES:
        os.environ[name] = "1"
    print(f"modelyard image: modelyard {' '.join(command[5:])}", file=sys.stderr, flush=True)
    os.execv(command[0], command)  # never returns


if __name__ == "__main__":
    main()
