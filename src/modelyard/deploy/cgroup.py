"""How many CPUs a container may use, from its cgroup: workers and threads follow.

cgroup v2 writes the limit to ``cpu.max`` as ``QUOTA PERIOD`` (``max`` for none);
cgroup v1 to ``cpu.cfs_quota_us`` (``-1`` for none) and ``cpu.cfs_period_us``.
A limit of 1.5 CPUs gives one worker (a worker per whole CPU, at least one); without
a limit, one per CPU this process may run on. Each worker runs its native pools
(OpenMP, BLAS) on one thread: the entrypoint sets ``OMP_NUM_THREADS=1`` before
anything starts, as ``modelyard serve`` pins each worker, so a pod on a 64-core node
with a 2-CPU limit runs 2 workers of one thread, not 2 x 64 threads throttled by CFS.

>>> parse_cpu_max("200000 100000")
2.0
>>> parse_cpu_max("max 100000") is None
True
>>> plan_workers(1.5, available=8)
1
>>> plan_workers(0.25, available=8)
1
>>> plan_workers(None, available=4)
4
>>> plan_workers(4.0, available=16, workers=2)
2
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from modelyard.errors import InvalidInputError

__all__ = ["cpu_limit", "parse_cpu_max", "plan_workers"]


def parse_cpu_max(text: str) -> float | None:
    """CPUs from cgroup v2's ``cpu.max`` (``"max 100000"``: no limit, None)."""
    parts = text.split()
    if not parts or len(parts) > 2:
        raise InvalidInputError(
            f"Expected 'QUOTA [PERIOD]' in cpu.max, got {text!r}", loc="cpu.max"
        )
    if parts[0] == "max":
        return None
    try:
        quota = int(parts[0])
        period = int(parts[1]) if len(parts) == 2 else 100_000
    except ValueError as exc:
        raise InvalidInputError(
            f"Expected whole numbers in cpu.max, got {text!r}", loc="cpu.max"
        ) from exc
    if quota <= 0 or period <= 0:
        raise InvalidInputError(
            f"Expected a positive quota and period in cpu.max, got {text!r}", loc="cpu.max"
        )
    return quota / period


def _v1_limit(root: Path) -> float | None:
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text().strip())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text().strip())
    except (OSError, ValueError):
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The container's CPU limit in CPUs, or None when it has none (or no cgroup is seen)."""
    try:
        text = (root / "cpu.max").read_text()
    except OSError:
        return _v1_limit(root)
    return parse_cpu_max(text)


def available_cpus() -> int:
    """The CPUs this process may be scheduled on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def plan_workers(limit: float | None, *, available: int, workers: int | None = None) -> int:
    """Worker processes for a CPU ``limit`` on ``available`` CPUs (``workers`` overrides)."""
    cpus = available if limit is None else min(float(available), limit)
    whole = max(1, math.floor(cpus))
    if workers is not None and workers < 1:
        raise InvalidInputError(f"Expected MODELYARD_WORKERS >= 1, got {workers}", loc="workers")
    return workers or whole
