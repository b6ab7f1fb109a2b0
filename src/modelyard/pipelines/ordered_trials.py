"""Trials asked in order by one driver and run by a pool: Ray tasks or local processes.

``tune(..., engine="ray")`` (and ``engine="local"`` with ``n_jobs`` > 1 and a ``seed``)
runs its trials here. The calling process is the driver: it asks Optuna for each trial
(the sampler runs in the driver, parameters of a ``space=`` drawn there) and hands it to
a worker, at most ``n_jobs`` at a time. A worker (a Ray task, or a forked process) opens
the same study in the metadata database, runs the objective on that trial (its
``trial.report`` / ``trial.should_prune`` work as in one process: pruning is intact),
tells the study the outcome and returns the finished trial.

Why the same seed gives the same trials whatever the timing: trial ``k`` is asked only
after trials ``0 .. k - n_jobs`` have finished, and both the sampler (when asking ``k``)
and the pruner (while ``k`` runs) see the study through :class:`StudyHistory`: the
trials numbered ``<= k - n_jobs`` and trial ``k`` itself. That history is fixed before
trial ``k`` starts, so which trial happens to finish first changes nothing. The price is
that a slot whose trial finished waits for the oldest trial in flight before it is
refilled (``n_jobs`` = 1 is plain sequential tuning). Without ``space=`` the parameters
are drawn in the worker by a sampler seeded from ``(seed, trial number)`` (a sampler
you pass yourself is copied to each trial as it is, not reseeded).

Secrets never travel in a task's arguments: settings go through
``modelyard.engine.ship_settings``. The objective is shipped once (``ray.put``), by
value for functions defined in ``__main__``, a notebook or a file run by ``modelyard tune
run`` (cloudpickle), by reference (module and name) otherwise: the module must be
importable on the workers (the project folder is on their path). Ray reuses worker
processes, so each trial task forgets the project's modules before it unpickles the
objective (``fresh_project_code``): a module edited since an earlier study is imported
as it is now, not as a reused worker first saw it.
"""

from __future__ import annotations

import copy
import hashlib
import math
import multiprocessing
import pickle
import site
import sys
import time
from collections import deque
from collections.abc import Callable, Container, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.distributions import BaseDistribution
from optuna.pruners import BasePruner, MedianPruner
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState

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
from modelyard.errors import InvalidInputError, ModelyardError
from modelyard.pipelines.studies import open_study_storage, refresh_study_storage
from modelyard.pipelines.trials import ERROR_ATTR

__all__ = [
    "DriveSpec",
    "StudyHistory",
    "TrialJob",
    "TrialOutcome",
    "drive_trials",
    "run_trial",
    "split_result",
]


def split_result(result: Any) -> tuple[float, Any]:
    """The objective's value, and its model when it returned ``(value, model)``."""
    value, model = result if isinstance(result, tuple) and len(result) == 2 else (result, None)
    if isinstance(value, bool | str | bytes) or not hasattr(value, "__float__"):
        raise InvalidInputError(
            f"Expected the objective to return a number or (number, model), got "
            f"{type(result).__name__} {str(result)[:60]!r}",
            loc="objective",
        )
    return float(value), model


class StudyHistory(optuna.Study):
    """The study as trial ``own`` may see it: the trials numbered ``<= cutoff``, and itself."""

    def __init__(
        self,
        study_name: str,
        storage: Any,
        sampler: BaseSampler | None,
        pruner: BasePruner | None,
        *,
        cutoff: int,
        own: int | None = None,
    ) -> None:
        super().__init__(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
        self.cutoff = cutoff
        self.own = own

    def _get_trials(
        self,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
        use_cache: bool = False,
    ) -> list[FrozenTrial]:
        trials = super()._get_trials(False, states, use_cache)
        kept = [t for t in trials if t.number <= self.cutoff or t.number == self.own]
        return copy.deepcopy(kept) if deepcopy else kept


@dataclass(frozen=True)
class TrialJob:
    """One trial for a worker: everything but the objective (shipped once per call)."""

    settings: ShippedSettings
    storage: str
    study_name: str
    trial_id: int
    number: int
    cutoff: int
    sampler: BaseSampler
    pruner: BasePruner | None
    keep_model: bool
    catch: tuple[type[Exception], ...]


@dataclass
class TrialOutcome:
    """What a worker sends back: the finished trial, its model, or why it failed."""

    number: int
    trial: FrozenTrial | None = None
    model: Any = None
    error: BaseException | None = None
    caught: bool = False  # the error is one of ``catch``: the study goes on


def run_trial(job: TrialJob, objective: Callable[[optuna.Trial], Any]) -> TrialOutcome:
    """Run ``job``'s trial on a worker and tell the study its outcome."""
    settings = unship_settings(job.settings)
    storage = open_study_storage(settings.db_url, job.storage)
    refresh_study_storage(storage)  # trials other workers finished are history now
    study = StudyHistory(
        job.study_name, storage, job.sampler, job.pruner or MedianPruner(),
        cutoff=job.cutoff, own=job.number,
    )  # fmt: skip
    outcome = TrialOutcome(number=job.number)
    trial = optuna.Trial(study, job.trial_id)
    try:
        value, model = split_result(objective(trial))
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
    except Exception as exc:  # kept with the trial; raised by the driver unless caught
        storage.set_trial_system_attr(
            job.trial_id, ERROR_ATTR, f"{type(exc).__name__}: {exc}"[:4000]
        )
        study.tell(trial, state=TrialState.FAIL)
        outcome.error = exc
        outcome.caught = isinstance(exc, job.catch)
    else:
        if math.isnan(value):
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, value)
            outcome.model = model if job.keep_model else None
    outcome.trial = storage.get_trial(job.trial_id)
    return _picklable(outcome)


def _picklable(outcome: TrialOutcome) -> TrialOutcome:
    if outcome.error is not None:
        try:
            pickle.dumps(outcome.error)
        except Exception:
            outcome.error = ModelyardError(f"{type(outcome.error).__name__}: {outcome.error}")
    return outcome


class _Pool(Protocol):
    def submit(self, job: TrialJob) -> Any: ...

    def wait(self, handle: Any) -> TrialOutcome: ...


class _RayPool:
    """Each trial one Ray task; the objective put in the object store once."""

    def __init__(self, settings: Settings, objective: Callable[[optuna.Trial], Any]) -> None:
        connect_ray(settings)
        self._ray = import_ray()
        # pickled here, unpickled by the task after it forgot the project's modules
        self._objective = self._ray.put(self._ray.cloudpickle.dumps(objective))
        self._folders = (str(settings.project_dir), *_module_folder(objective))
        self._task = self._ray.remote(_ray_trial).options(**task_options(settings), max_retries=0)

    def submit(self, job: TrialJob) -> Any:
        return self._task.remote(job, self._objective, self._folders)

    def wait(self, handle: Any) -> TrialOutcome:
        try:
            outcome: TrialOutcome = self._ray.get(handle)
        except self._ray.exceptions.RayError as exc:  # the worker died, or Ray failed
            return TrialOutcome(number=-1, error=ModelyardError(f"A Ray trial task failed: {exc}"))
        return outcome


def _module_folder(objective: Callable[..., Any]) -> tuple[str, ...]:
    """The folder of the file defining ``objective``'s module, when it has one."""
    module = sys.modules.get(getattr(objective, "__module__", "") or "")
    where = getattr(module, "__file__", None)
    if not where:
        return ()
    folder = Path(where).resolve().parent
    installed = {sys.prefix, sys.base_prefix, *site.getsitepackages(), site.getusersitepackages()}
    if any(folder.is_relative_to(Path(root).resolve()) for root in installed):
        return ()  # an installed package: its modules stay imported
    return (str(folder),)


def _ray_trial(job: TrialJob, objective: bytes, folders: tuple[str, ...]) -> TrialOutcome:
    fresh_project_code(*folders)
    return run_trial(job, import_ray().cloudpickle.loads(objective))


#: the objective of the local pool's call, inherited by its forked processes
_FORKED: dict[str, Callable[[optuna.Trial], Any]] = {}


def _forked_trial(job: TrialJob) -> TrialOutcome:
    return run_trial(job, _FORKED["objective"])


class _ProcessPool:
    """Forked worker processes (they inherit the objective: nothing is pickled but the job)."""

    def __init__(self, n_jobs: int, objective: Callable[[optuna.Trial], Any]) -> None:
        _FORKED["objective"] = objective
        self._pool = ProcessPoolExecutor(
            max_workers=n_jobs, mp_context=multiprocessing.get_context("fork")
        )

    def submit(self, job: TrialJob) -> Future[TrialOutcome]:
        return self._pool.submit(_forked_trial, job)

    def wait(self, handle: Future[TrialOutcome]) -> TrialOutcome:
        try:
            return handle.result()
        except Exception as exc:  # a worker died (BrokenProcessPool) or could not pickle
            return TrialOutcome(number=-1, error=ModelyardError(f"A tuning worker failed: {exc}"))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        _FORKED.clear()


@contextmanager
def _pool(
    engine: str, settings: Settings, n_jobs: int, objective: Callable[[optuna.Trial], Any]
) -> Iterator[_Pool]:
    if engine == "ray":
        yield _RayPool(settings, objective)
        return
    pool = _ProcessPool(n_jobs, objective)
    try:
        yield pool
    finally:
        pool.close()


def _trial_seed(seed: int, number: int) -> int:
    digest = hashlib.sha256(f"{seed}:{number}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _worker_sampler(
    sampler: BaseSampler, seed: int | None, number: int, space: bool
) -> BaseSampler:
    """What draws parameters in the worker: nothing for a ``space=`` (drawn in the driver)."""
    derived = None if seed is None else _trial_seed(seed, number)
    if space:
        return RandomSampler(seed=derived)  # only for a parameter outside the space
    if seed is not None and type(sampler) is TPESampler:
        return TPESampler(seed=derived)
    return copy.deepcopy(sampler)


@dataclass(frozen=True)
class DriveSpec:
    """One call's trials: how many, how many at once, on which engine."""

    engine: str
    settings: Settings
    storage: str
    study_name: str
    sampler: BaseSampler
    pruner: BasePruner | None
    seed: int | None
    space: dict[str, BaseDistribution] | None
    n_trials: int
    n_jobs: int
    deadline: float | None
    keep_model: bool
    catch: tuple[type[Exception], ...]


def drive_trials(
    spec: DriveSpec,
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Any],
    on_finished: Callable[[FrozenTrial, Any], None],
) -> BaseException | None:
    """Ask, run and collect trials until the study has ``n_trials`` complete or pruned.

    ``on_finished(trial, model)`` is called in trial order. Returns the first error that
    stopped the study (an objective's exception not in ``catch``, a dead worker), after
    every trial in flight has finished.
    """
    storage = study._storage
    counted_states = (TrialState.COMPLETE, TrialState.PRUNED)
    counted = len(study.get_trials(deepcopy=False, states=counted_states))
    first = len(study.get_trials(deepcopy=False))  # numbers of this call start here
    shipped = ship_settings(spec.settings)
    error: BaseException | None = None
    in_flight: deque[tuple[int, Any]] = deque()
    asked = 0
    with _pool(spec.engine, spec.settings, spec.n_jobs, objective) as pool:
        while True:
            while (
                error is None
                and len(in_flight) < spec.n_jobs
                and counted + len(in_flight) < spec.n_trials
                and (spec.deadline is None or time.time() < spec.deadline)
            ):
                number = first + asked
                cutoff = number - spec.n_jobs
                refresh_study_storage(storage)
                view = StudyHistory(
                    spec.study_name, storage, spec.sampler, spec.pruner, cutoff=cutoff
                )
                trial = view.ask(spec.space) if spec.space is not None else view.ask()
                if trial.number != number:  # another process asks on this study too
                    cutoff = trial.number - spec.n_jobs
                job = TrialJob(
                    settings=shipped, storage=spec.storage, study_name=spec.study_name,
                    trial_id=trial._trial_id, number=trial.number, cutoff=cutoff,
                    sampler=_worker_sampler(spec.sampler, spec.seed, trial.number,
                                            spec.space is not None),
                    pruner=spec.pruner, keep_model=spec.keep_model, catch=spec.catch,
                )  # fmt: skip
                in_flight.append((trial._trial_id, pool.submit(job)))
                asked += 1
            if not in_flight:
                break
            trial_id, handle = in_flight.popleft()
            outcome = pool.wait(handle)
            if outcome.trial is None:  # the worker died before telling: this process does
                _fail(storage, trial_id, outcome.error)
                finished = storage.get_trial(trial_id)
            else:
                finished = outcome.trial
            if finished.state in counted_states:
                counted += 1
            on_finished(finished, outcome.model)
            if outcome.error is not None and not outcome.caught and error is None:
                error = outcome.error
    return error


def _fail(storage: Any, trial_id: int, error: BaseException | None) -> None:
    refresh_study_storage(storage)
    if storage.get_trial(trial_id).state.is_finished():
        return
    reason = f"{type(error).__name__}: {error}" if error is not None else "the worker died"
    storage.set_trial_system_attr(trial_id, ERROR_ATTR, reason[:4000])
    storage.set_trial_state_values(trial_id, TrialState.FAIL)
