"""The fluent API at the package root: ``modelyard.start_run``, ``modelyard.log_metric``, ...

A thin layer over a ``TrackingClient``. The client and the stack of active runs live
in context variables, not module globals: each thread and each asyncio task has its
own active run. A new thread starts with an empty context, so it opens its own
client on first use; to share one, call ``set_client(client)`` in the thread (or run
it in ``contextvars.copy_context()``).

>>> import tempfile, pathlib, modelyard as my
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> _ = my.init_project(root)
>>> with my.start_run(experiment="churn", project=root) as run:
...     my.log_params({"model": "hgb", "max_depth": 6})
...     my.log_metric("auc", 0.83)
>>> my.search_runs("churn", filter="metrics.auc > 0.8")[0].params["max_depth"]
'6'
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from modelyard.config import load_settings
from modelyard.errors import ConflictError, NotFoundError
from modelyard.tracking.client import ActiveRun, TrackingClient
from modelyard.tracking.entities import ArtifactEntry, DatasetInput, Run, RunStatus

__all__ = [
    "active_run",
    "end_run",
    "get_client",
    "log_artifact",
    "log_artifacts",
    "log_input",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
    "search_runs",
    "set_client",
    "set_tag",
    "set_tags",
    "start_run",
    "use_run",
]

_client: ContextVar[TrackingClient | None] = ContextVar("modelyard_client", default=None)
_runs: ContextVar[tuple[ActiveRun, ...]] = ContextVar("modelyard_active_runs", default=())


def set_client(client: TrackingClient | None) -> None:
    """Use ``client`` for the fluent calls made in this context."""
    _client.set(client)


def get_client(project: str | Path | None = None) -> TrackingClient:
    """The client of this context, opened from the project settings on first use."""
    client = _client.get()
    wanted = None if project is None else Path(project).resolve()
    if (
        client is None
        or client.closed
        or (wanted is not None and client.settings.project_dir != wanted)
    ):
        client = TrackingClient(load_settings(project))
        _client.set(client)
    return client


class _FluentRun(ActiveRun):
    """An ActiveRun that also leaves the fluent stack when it ends."""

    def end(self, status: RunStatus | str = RunStatus.FINISHED) -> None:
        _pop(self)
        super().end(status)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        _pop(self)
        super().__exit__(exc_type, exc, tb)


def _pop(run: ActiveRun) -> None:
    stack = _runs.get()
    if run in stack:
        _runs.set(tuple(r for r in stack if r is not run))


def start_run(
    experiment: str | None = None,
    *,
    name: str | None = None,
    nested: bool = False,
    tags: Mapping[str, object] | None = None,
    run_id: str | None = None,
    project: str | Path | None = None,
) -> ActiveRun:
    """Start (or with ``run_id``, resume) a run and make it the active one.

    ``experiment`` defaults to ``MODELYARD_EXPERIMENT`` or ``"default"``. Inside an
    active run, pass ``nested=True`` to start a child run.
    """
    client = get_client(project)
    stack = _runs.get()
    if stack and not nested:
        raise ConflictError(
            f"Run {stack[-1].id} is already active. End it first, or pass nested=True "
            "to start a child run."
        )
    if run_id is not None:
        base = client.resume_run(run_id)
    else:
        base = client.start_run(
            experiment or os.environ.get("MODELYARD_EXPERIMENT") or "default",
            name=name,
            parent_run_id=stack[-1].id if stack else None,
            tags=tags,
        )
    run = _FluentRun(client, base.id, base.experiment, base.name)
    _runs.set((*stack, run))
    return run


@contextmanager
def use_run(run: ActiveRun) -> Iterator[ActiveRun]:
    """Make a run started elsewhere the active run (and its client this context's) for the
    block. Nothing is written and the run is not ended: whoever started it ends it (a
    pipeline's runner does this for each step's run)."""
    client_token = _client.set(run.client)
    runs_token = _runs.set((*_runs.get(), run))
    try:
        yield run
    finally:
        _runs.reset(runs_token)
        _client.reset(client_token)


def active_run() -> ActiveRun | None:
    """The innermost active run of this context, or None."""
    stack = _runs.get()
    return stack[-1] if stack else None


def _require() -> ActiveRun:
    run = active_run()
    if run is None:
        raise NotFoundError("No active run. Start one with `with modelyard.start_run(...):`.")
    return run


def end_run(status: RunStatus | str = RunStatus.FINISHED) -> None:
    """End the innermost active run."""
    _require().end(status)


def log_param(key: str, value: object) -> None:
    _require().log_param(key, value)


def log_params(values: Mapping[str, object]) -> None:
    _require().log_params(values)


def set_tag(key: str, value: object) -> None:
    _require().set_tag(key, value)


def set_tags(values: Mapping[str, object]) -> None:
    _require().set_tags(values)


def log_metric(key: str, value: float, step: int | None = None) -> None:
    _require().log_metric(key, value, step)


def log_metrics(values: Mapping[str, float], step: int | None = None) -> None:
    _require().log_metrics(values, step)


def log_input(
    data: Any, name: str, context: str = "training", *, source: str | None = None
) -> DatasetInput:
    return _require().log_input(data, name, context, source=source)


def log_artifact(
    local_path: str | os.PathLike[str], artifact_path: str | None = None
) -> ArtifactEntry:
    return _require().log_artifact(local_path, artifact_path)


def log_artifacts(
    local_dir: str | os.PathLike[str], artifact_path: str | None = None
) -> list[ArtifactEntry]:
    return _require().log_artifacts(local_dir, artifact_path)


def search_runs(
    experiment: str | Sequence[str] | None = None,
    *,
    filter: str | None = None,
    order_by: Sequence[str] = (),
    max_results: int = 1000,
    project: str | Path | None = None,
) -> list[Run]:
    """Search runs of the current project; see ``TrackingClient.search_runs``."""
    return get_client(project).search_runs(
        experiment, filter=filter, order_by=order_by, max_results=max_results
    )
