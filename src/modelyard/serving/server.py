"""``modelyard serve``: uvicorn workers, each with one copy of every model, pinned threads.

Every worker pins OpenMP, OpenBLAS and MKL to one thread (and onnxruntime runs with one
intra-op thread): with N workers on N cores, a model that spawns its own threads per
call only fights the other workers (a 1-row HistGradientBoosting predict goes from 36 ms
p50 with default threads to 1.6 ms). With several workers, Prometheus metrics are
aggregated across them through ``PROMETHEUS_MULTIPROC_DIR``.

Start-up is checked once, in the parent, before any worker is spawned (``preflight``):
the metadata store answers (and is migrated, once), every named model resolves to a
version with a signature, the prediction log folder is writable. A failure there is one
error and no worker starts. A worker that still cannot build its app (the store went
away in between) writes why to a file the parent reads and exits with uvicorn's
start-up failure code, so uvicorn stops instead of respawning it forever; ``serve``
then raises that one line.

Workers are spawned processes that import the command line again before they can answer
uvicorn's health check; on a loaded machine that alone takes well over uvicorn's default
5 s, and uvicorn killed the first worker as hung at every start. ``WORKER_HEALTHCHECK_S``
gives them a minute (a crashed worker is still seen at once: only a hung one waits).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from starlette.applications import Starlette

from modelyard.config import ServingRuntime, Settings
from modelyard.errors import InvalidInputError, ModelyardError, StorageError
from modelyard.registry.client import ModelRegistry
from modelyard.serving.app import SPEC_ENV, app_from_env
from modelyard.serving.state import primary_ref
from modelyard.store.gc import scratch_prefix, scratch_process
from modelyard.store.predlog.shipping import check_shipping
from modelyard.store.processes import pid_alive

__all__ = [
    "THREAD_VARIABLES",
    "WORKER_HEALTHCHECK_S",
    "pin_threads",
    "preflight",
    "serve",
    "sweep_scratch",
    "worker_app",
]

logger = logging.getLogger("modelyard.serving")
#: seconds a worker may take to answer uvicorn's health check (see the module docstring)
WORKER_HEALTHCHECK_S = 60
#: uvicorn's exit code for "this worker failed before serving": it stops, not respawns
_STARTUP_FAILURE = 3
#: an older version's start-up failures file (no pid in its name) is swept after this
_LEGACY_AGE_S = 3600.0

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def pin_threads() -> None:
    """One thread for every native pool, including those already loaded."""
    for name in THREAD_VARIABLES:
        os.environ[name] = "1"
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings threadpoolctl
        return
    threadpool_limits(1)


def preflight(settings: Settings, targets: Sequence[str]) -> list[str]:
    """Check what every worker needs, once, before any starts; the versions found.

    Raises the first problem: the metadata store unreachable (``StorageError``), a
    named model or alias that does not exist, a version without a signature, a
    prediction log folder that cannot be written, an artifact store the log cannot be
    shipped to (``check_shipping``).
    """
    registry = ModelRegistry(settings)  # connects and migrates, once, before the workers
    try:
        found = []
        for target in targets:
            ref = primary_ref(settings, target)
            version = registry.get_version(ref)
            if registry.manifest(version.ref).signature is None:
                raise InvalidInputError(
                    f"{version.ref} ({target}) has no input signature, so requests cannot be "
                    "checked; log it with a training frame (or signature=) to serve it",
                    loc=target,
                )
            found.append(f"{target}: {version.ref}")
        registry.list_models()  # without targets: the store answers a query
    finally:
        registry.close()
    log_dir = settings.prediction_log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(log_dir, os.W_OK | os.X_OK):
        raise StorageError(f"The prediction log folder {log_dir} is not writable")
    ships_to = check_shipping(settings)
    if ships_to is not None:
        logger.info("The prediction log is shipped to %s", ships_to)
    return found


def worker_app() -> Starlette:
    """The uvicorn factory of ``serve``: ``app_from_env``, failing once, not forever."""
    try:
        return app_from_env()
    except ModelyardError as exc:
        failures = json.loads(os.environ[SPEC_ENV]).get("failures")
        line = " ".join(str(exc).split())
        if failures:
            with Path(failures).open("a") as out:
                out.write(line + "\n")
        logger.error("A server worker could not start: %s", line)
        sys.exit(_STARTUP_FAILURE)


def sweep_scratch(root: Path | None = None) -> list[Path]:
    """Remove what killed ``serve`` processes of this user left in the temp folder.

    A server keeps its workers' start-up failures and (with several workers) their
    Prometheus files in ``modelyard-serve-<pid>-*``; it removes the folder when it stops,
    but a SIGKILL leaves it. Each start removes those whose process is gone (and the
    single files older versions left) at once: nothing else uses them. ``modelyard gc``
    removes them too, past its grace period. Returns what it removed.

    >>> import tempfile
    >>> from pathlib import Path
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = (root / "modelyard-serve-999999999-x").mkdir()
    >>> _ = (root / f"modelyard-serve-{os.getpid()}-y").mkdir()
    >>> [p.name for p in sweep_scratch(root)]
    ['modelyard-serve-999999999-x']
    >>> shutil.rmtree(root)
    """
    folder = Path(tempfile.gettempdir()) if root is None else root
    removed = []
    for entry in folder.iterdir():
        owner = scratch_process(entry.name)
        if owner is None or owner[0] != "serve":
            continue
        pid = owner[1]
        try:
            info = entry.lstat()
        except FileNotFoundError:  # another server swept it first
            continue
        if info.st_uid != os.getuid():
            continue
        if pid is not None and pid_alive(pid):
            continue
        if pid is None and time.time() - info.st_mtime < _LEGACY_AGE_S:
            continue  # an older version's file: no pid in its name, kept while it may be used
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _loop() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:  # pragma: no cover - uvloop is not on every platform
        return "asyncio"
    return "uvloop"


def serve(
    settings: Settings,
    targets: Sequence[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int | None = None,
    trust: bool = False,
    log_level: str = "info",
    runtime: ServingRuntime | None = None,
    checked: bool = False,
) -> None:
    """Run the server until interrupted (workers default to the number of cores).

    ``runtime`` overrides ``serving.runtime`` in every worker (None keeps the project's).
    ``checked``: the caller ran ``preflight`` already.
    """
    import uvicorn

    pin_threads()
    if not checked:
        preflight(settings, targets)
    count = workers or os.cpu_count() or 1
    sweep_scratch()
    scratch = Path(tempfile.mkdtemp(prefix=scratch_prefix("serve")))
    failures = scratch / "failures"
    failures.touch()
    spec: dict[str, object] = {
        "project": str(settings.project_dir),
        "targets": list(targets),
        "trust": trust,
    }
    if runtime is not None:
        spec["runtime"] = runtime
    spec["failures"] = str(failures)
    os.environ[SPEC_ENV] = json.dumps(spec)
    if count > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        (scratch / "metrics").mkdir()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(scratch / "metrics")
    exited: SystemExit | None = None
    try:
        uvicorn.run(
            "modelyard.serving.server:worker_app",
            factory=True,
            host=host,
            port=port,
            workers=count,
            loop=_loop(),
            http="httptools",
            access_log=False,
            log_level=log_level,
            timeout_graceful_shutdown=10,
            timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
        )
    except SystemExit as exc:  # one worker (in this process) failed to start
        exited = exc
    finally:
        reasons = failures.read_text().splitlines()
        shutil.rmtree(scratch, ignore_errors=True)
    if reasons:
        raise ModelyardError(f"A server worker could not start: {reasons[0]}")
    if exited is not None and exited.code not in (None, 0):
        raise ModelyardError(
            f"The server stopped at start-up (exit code {exited.code}); see the log above"
        )
