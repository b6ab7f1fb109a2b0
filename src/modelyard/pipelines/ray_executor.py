"""Pipeline steps as Ray tasks: ``executor="ray"`` (``pipelines.executor: ray``,
``engine: ray`` or ``modelyard pipeline run --engine ray``).

Each step is one Ray task that runs :func:`~modelyard.pipelines.executors.run_task` on a
worker of the cluster, reserving the step's ``@step(num_cpus=, memory=, num_gpus=)``
(else the project's ``ray.num_cpus`` / ``ray.memory``; GPUs only where the cluster has
some). The task's arguments hold the step's description and the project's settings
with their secrets masked (:func:`modelyard.engine.ship_settings`); the secrets travel
in the task's ``runtime_env``. The step reads its inputs from and writes its outputs to
the project's artifact store, never Ray's object store (only the small outcome record
comes back through it), and the runner records everything in the metadata database: a
cached step is found there, whatever cluster or session produced it.

The worker must be able to import the step: by its module name from the project folder
or from the module's file at the same path (a cluster sharing the project's folder, or
the project installed on its nodes). A failed step is reported as with the local
executor (``ok=False`` with the error's first line, the traceback in its logs); a
worker that dies (killed, out of memory) fails the step with Ray's reason.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from modelyard.config import Settings
from modelyard.engine import (
    ShippedSettings,
    connect_ray,
    fresh_project_code,
    import_ray,
    ship_settings,
    task_options,
    unship_settings,
)
from modelyard.errors import InvalidInputError
from modelyard.pipelines.executors import (
    NAMED_EXECUTORS,
    Executor,
    StepOutcome,
    StepTask,
    check_max_workers,
    run_task,
)

__all__ = ["RayExecutor", "run_shipped_task", "task_arguments"]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def run_shipped_task(task: StepTask, shipped: ShippedSettings) -> StepOutcome:
    """On a Ray worker: restore the settings' secrets, then run the step like a local worker."""
    started = _now_ms()
    try:
        settings = unship_settings(shipped)
    except InvalidInputError as exc:  # the step never started: say why, like a failure
        return StepOutcome(
            run_id=task.run_id,
            step=task.step,
            ok=False,
            outputs={},
            recorded_inputs=(),
            error=f"InvalidInputError: {exc}",
            logs_sha256=None,
            started_at=started,
            ended_at=_now_ms(),
        )
    fresh_project_code(
        task.project_dir, *([str(Path(task.module_file).parent)] if task.module_file else [])
    )
    return run_task(dataclasses.replace(task, settings=settings), capture="fd")


def task_arguments(task: StepTask) -> tuple[StepTask, ShippedSettings]:
    """What a step's Ray task is called with: the task and its settings, secrets masked."""
    shipped = ship_settings(task.settings)
    return dataclasses.replace(task, settings=shipped.settings), shipped


class RayExecutor:
    """Each step a Ray task on the cluster of the project's ``ray`` settings (``"ray"``).

    Connects on the first step (:func:`modelyard.engine.connect_ray`, which refuses
    stores only one machine can reach when the cluster spans several hosts). Ray
    schedules the tasks by the resources they reserve, so ``max_workers`` (the local
    pool's size) is checked but does not limit it: the cluster's CPUs and each step's
    ``num_cpus`` do.
    """

    name = "ray"

    def __init__(self, max_workers: int | None = None) -> None:
        check_max_workers(max_workers)
        self.max_workers = max_workers
        self._connected = False
        self._remote: Any = None
        self._largest: dict[str, float] = {}
        self._refs: dict[int, Any] = {}
        self._lock = threading.Lock()

    def connect(self, settings: Settings) -> None:
        """Connect now (the runner does, before the run starts): a cluster that cannot
        serve the project (ray missing, stores only this machine reaches) is refused
        before anything is recorded."""
        self._connect(settings)

    def _connect(self, settings: Settings) -> Any:
        if self._remote is None:
            ray = import_ray()
            connect_ray(settings)
            self._remote = ray.remote(max_retries=0)(run_shipped_task)
            self._largest = _largest_node(ray)
        return self._remote

    def submit(self, task: StepTask) -> Future[StepOutcome]:
        remote = self._connect(task.settings)
        bare, shipped = task_arguments(task)
        options = task_options(
            task.settings,
            num_cpus=task.resources.num_cpus,
            memory=task.resources.memory,
            num_gpus=task.resources.num_gpus,
        )
        self._check_feasible(task, options)
        ref = remote.options(name=f"modelyard-step:{task.step}", **options).remote(bare, shipped)
        future: Future[StepOutcome] = ref.future()
        with self._lock:
            self._refs[id(future)] = ref
        future.add_done_callback(self._forget)
        return future

    def _check_feasible(self, task: StepTask, options: dict[str, Any]) -> None:
        """A step no node can hold would wait forever: refuse it, naming what it asks."""
        for key, resource in (("num_cpus", "CPU"), ("memory", "memory"), ("num_gpus", "GPU")):
            wanted = options.get(key)
            most = self._largest.get(resource, 0.0)
            if wanted and wanted > most:
                raise InvalidInputError(
                    f"Step {task.step!r} asks for {key}={wanted:g} but the largest node of "
                    f"the Ray cluster has {most:g}; lower it in @step({key}=...) or ray.{key}",
                    loc=f"{task.step}.{key}",
                )

    def _forget(self, future: Future[StepOutcome]) -> None:
        with self._lock:
            self._refs.pop(id(future), None)

    def terminate(self) -> None:
        """Stop now: cancel the steps still queued or running (their results are lost)."""
        with self._lock:
            refs = list(self._refs.values())
            self._refs.clear()
        if not refs:
            return
        ray = import_ray()
        for ref in refs:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # already finished or gone: nothing to stop
                continue

    def shutdown(self) -> None:
        """Nothing to release: the connection stays for the process's other work."""


def _largest_node(ray: Any) -> dict[str, float]:
    """The most of each resource one live node of the cluster has."""
    largest: dict[str, float] = {}
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        for name, amount in (node.get("Resources") or {}).items():
            largest[name] = max(largest.get(name, 0.0), float(amount))
    return largest


def _make(max_workers: int | None) -> Executor:
    return RayExecutor(max_workers)


NAMED_EXECUTORS["ray"] = _make
