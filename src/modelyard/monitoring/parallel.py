"""Monitoring backfills on Ray: a long history's windows computed in parallel.

The windows of a range are aligned on multiples of their length (see
:mod:`modelyard.monitoring.windows`), so the range can be cut at window boundaries into
contiguous chunks (:func:`window_ranges`) with no window split between two chunks. Each
chunk is one Ray task (:func:`run_ranges`) that reads its own slice of the prediction log
(``time`` in ``[start, end)``, with the labels joined as the local read joins them) and
computes its windows with the same code as the local engine; the driver concatenates the
chunks' windows in time order and stores them exactly as a local run does. A window's
rows, their order and its label join are the same whichever chunk reads them, so the
stored results are identical to the local engine's.

The tasks read the prediction log folder, so every node must see it: one machine (the
engine checks, see :func:`modelyard.engine.check_shared_state`), or a log shipped to
object storage.

>>> day = 86_400_000_000
>>> window_ranges(0, 10 * day, day, 3, since_us=None, until_us=None)
[(None, 259200000000), (259200000000, 604800000000), (604800000000, None)]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from modelyard.config import Settings
from modelyard.engine import check_shared_state, cluster_hosts, connect_ray, import_ray
from modelyard.engine import task_options as _task_options
from modelyard.errors import ModelyardError
from modelyard.monitoring.windows import MONITORED_ROUTES, ORIGIN, log_filter, utc_us
from modelyard.store import predlog

__all__ = ["log_span", "run_ranges", "window_ranges", "workers"]

T = TypeVar("T")

#: a chunk of the log: ``time`` in ``[start, end)``; None is an open side
Range = tuple[int | None, int | None]


def log_span(
    log_dir: str | Path,
    model: str,
    version: int,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    routes: Sequence[str] = MONITORED_ROUTES,
) -> tuple[int, int] | None:
    """(first, last) logged time in µs of the version's rows in range; None when none.

    The same rows as :func:`~modelyard.monitoring.windows.read_log` selects (one filter):
    a span that missed some (batch-scored rows, say) would drop their windows.
    """
    where, params = log_filter(model, version, routes, since, until)
    con = predlog.connect(log_dir)
    try:
        row = con.execute(
            f"SELECT epoch_us(min(time)), epoch_us(max(time)) FROM predictions WHERE {where}",
            params,
        ).fetchone()
    finally:
        con.close()
    if row is None or row[0] is None:
        return None
    return int(row[0]), int(row[1])


def window_ranges(
    first_us: int,
    last_us: int,
    length_us: int,
    parts: int,
    *,
    since_us: int | None,
    until_us: int | None,
) -> list[Range]:
    """Contiguous ranges, cut only at window boundaries, covering ``[first, last]``.

    At most ``parts`` ranges of about as many windows each; the first is open below (or
    starts at ``since``) and the last open above (or ends at ``until``), so together they
    read exactly what one read of the whole range reads.
    """
    origin = utc_us(ORIGIN)
    first_window = (first_us - origin) // length_us
    last_window = (last_us - origin) // length_us
    count = last_window - first_window + 1
    parts = max(1, min(parts, count))
    cuts = [origin + (first_window + (count * i) // parts) * length_us for i in range(1, parts)]
    bounds: list[int | None] = [since_us, *cuts, until_us]
    return [(bounds[i], bounds[i + 1]) for i in range(parts)]


def workers(settings: Settings) -> int:
    """How many tasks the connected cluster runs at once (its CPUs over a task's)."""
    ray = import_ray()
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    per_task = settings.ray.num_cpus or 1.0
    return max(1, int(cpus // per_task))


def _call(task: Callable[[int | None, int | None], T], start: int | None, end: int | None) -> T:
    """What runs on a worker: the task over one range."""
    return task(start, end)


def connect(settings: Settings) -> None:
    """Connect to the settings' cluster; its nodes must all see the prediction log."""
    connect_ray(settings)
    check_shared_state(settings, cluster_hosts(), also=("prediction_log",))


def run_ranges(
    settings: Settings,
    task: Callable[[int | None, int | None], T],
    ranges: Sequence[Range],
    *,
    done: Callable[[T], None] | None = None,
) -> list[T]:
    """``task(start, end)`` of each range as a Ray task; the results in the ranges' order.

    ``task`` must be picklable (a module-level function or a ``functools.partial`` of
    one); it is put in the object store once. ``done`` is called in the driver with each
    result as it arrives (for progress). A task's modelyard error is raised as itself.
    """
    ray = import_ray()
    remote = ray.remote(_call).options(**_task_options(settings), max_retries=0)
    shared = ray.put(task)
    refs = [remote.remote(shared, start, end) for start, end in ranges]
    results: dict[Any, T] = {}
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                results[ref] = _get(ray, ref)
                if done is not None:
                    done(results[ref])
    finally:
        for ref in pending:
            ray.cancel(ref)
    return [results[ref] for ref in refs]


def _get(ray: Any, ref: Any) -> Any:
    """``ray.get``, with a task's own modelyard error raised as that error."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, ModelyardError):
            raise cause from None
        raise
