"""``modelyard serve``: uvicorn workers, each with one copy of every model, pinned threads.

Every worker pins OpenMP, OpenBLAS and MKL to one thread (and onnxruntime runs with one
intra-op thread): with N workers on N cores, a model that spawns its own threads per
call only fights the other workers (a 1-row HistGradientBoosting predict goes from 36 ms
p50 with default threads to 1.6 ms). With several workers, Prometheus metrics are
aggregated across them through ``PROMETHEUS_MULTIPROC_DIR``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence

from modelyard.config import ServingRuntime, Settings
from modelyard.serving.app import SPEC_ENV

__all__ = ["THREAD_VARIABLES", "pin_threads", "serve"]

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
) -> None:
    """Run the server until interrupted (workers default to the number of cores).

    ``runtime`` overrides ``serving.runtime`` in every worker (None keeps the project's).
    """
    import uvicorn

    pin_threads()
    count = workers or os.cpu_count() or 1
    spec: dict[str, object] = {
        "project": str(settings.project_dir),
        "targets": list(targets),
        "trust": trust,
    }
    if runtime is not None:
        spec["runtime"] = runtime
    os.environ[SPEC_ENV] = json.dumps(spec)
    metrics_dir = None
    if count > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = tempfile.mkdtemp(prefix="modelyard-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run(
            "modelyard.serving.app:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=count,
            loop=_loop(),
            http="httptools",
            access_log=False,
            log_level=log_level,
            timeout_graceful_shutdown=10,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
