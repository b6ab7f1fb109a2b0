"""``modelyard.tune``: hyperparameter search with Optuna, every trial a tracked child run.

>>> import tempfile, pathlib, modelyard as my
>>> root = pathlib.Path(tempfile.mkdtemp()); _ = my.init_project(root)
>>> result = tune(lambda p: (p["x"] - 2) ** 2, space={"x": (-5.0, 5.0)}, n_trials=20,
...               seed=0, study="doc", project=root)
>>> result.n_complete, abs(result.best_params["x"] - 2) < 1.5
(20, True)

The study lives beside the project's metadata database (``modelyard.pipelines.studies``),
so several processes (``n_jobs`` > 1, or several ``tune`` calls on one study name) share
it, and a killed study resumes: calling ``tune`` again with the same name continues
until ``n_trials`` trials are complete or pruned (trials left RUNNING by a dead
process are marked FAIL and do not count). Trials are recorded as child runs in batches
(``modelyard.pipelines.trials``).

``engine="ray"`` (or ``engine: ray`` in modelyard.yaml) runs the trials as Ray tasks on
the same study (``modelyard.pipelines.ordered_trials``): this process asks for each
trial, ``n_jobs`` tasks run at once, and the same seed gives the same trials as
``engine="local"`` with the same ``n_jobs`` (which then runs them in forked processes
the same way).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import pickle
import time
import uuid
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler, TPESampler
from optuna.study import MaxTrialsCallback, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from modelyard.config import Settings
from modelyard.engine import engine_for
from modelyard.errors import ConflictError, InvalidInputError, ModelyardError, NotFoundError
from modelyard.pipelines.context import current_step
from modelyard.pipelines.ordered_trials import DriveSpec, drive_trials, split_result
from modelyard.pipelines.space import call_objective, parse_space
from modelyard.pipelines.studies import (
    OWNER_ATTR,
    open_study_storage,
    owner_tag,
    reap_dead_trials,
    refresh_study_storage,
    study_location,
)
from modelyard.pipelines.trials import ERROR_ATTR, TrialRecorder, record_finished, trial_run_id
from modelyard.registry.client import ModelRegistry
from modelyard.store.database import Database, open_database
from modelyard.store.processes import pid_alive
from modelyard.tracking.client import TrackingClient
from modelyard.tracking.entities import RunStatus
from modelyard.tracking.environment import RunEnvironment, capture_environment, git_state
from modelyard.tracking.fluent import active_run, get_client
from modelyard.tracking.validation import check_key

__all__ = ["TuneResult", "tune"]

_COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)
_DIRECTIONS = ("minimize", "maximize")


@dataclass(frozen=True)
class TuneResult:
    """What ``tune`` found; ``study`` is the Optuna study (for its plots and analyses)."""

    study_name: str
    direction: str
    best_value: float | None
    best_params: dict[str, Any]
    best_trial: int | None
    best_run_id: str | None
    parent_run_id: str
    n_complete: int
    n_pruned: int
    n_failed: int
    study: optuna.Study = field(repr=False, compare=False)
    reaped: tuple[int, ...] = ()
    """Trials left RUNNING by a dead process, marked FAIL at the start of this call."""
    model: str | None = None
    """The registered version (``name/3``) when ``register=`` was given."""
    model_trial: int | None = None


@dataclass
class _Plan:
    """What one worker needs (inherited by forked workers, never pickled)."""

    objective: Callable[[optuna.Trial], Any]
    settings: Settings
    storage: str
    study_name: str
    sampler: BaseSampler
    pruner: BasePruner | None
    n_trials: int
    deadline: float | None
    experiment_id: str
    parent_run_id: str
    metric: str
    env: RunEnvironment
    maximize: bool
    keep_model: bool
    register_kwargs: Mapping[str, Any]
    catch: tuple[type[Exception], ...]


@dataclass
class _Outcome:
    best: tuple[int, float, Any] | None = None  # trial number, value, model
    error: BaseException | None = None


_split = split_result


def _run_worker(plan: _Plan, db: Database, *, reseed: bool) -> _Outcome:
    storage = open_study_storage(plan.settings.db_url, plan.storage)
    study = optuna.load_study(
        study_name=plan.study_name, storage=storage, sampler=plan.sampler, pruner=plan.pruner
    )
    if reseed:  # forked workers would otherwise draw the same "random" parameters
        study.sampler.reseed_rng()
    owner = owner_tag()
    outcome = _Outcome()

    def objective(trial: optuna.Trial) -> float:
        if OWNER_ATTR not in storage.get_trial_system_attrs(trial._trial_id):
            # a trial enqueued elsewhere and run here: its creation named no owner
            storage.set_trial_system_attr(trial._trial_id, OWNER_ATTR, owner)
        try:
            value, model = _split(plan.objective(trial))
        except optuna.TrialPruned:
            raise
        except Exception as exc:  # kept with the trial: its run's modelyard.error tag
            reason = f"{type(exc).__name__}: {exc}"[:4000]
            storage.set_trial_system_attr(trial._trial_id, ERROR_ATTR, reason)
            raise
        better = outcome.best is None or (
            value > outcome.best[1] if plan.maximize else value < outcome.best[1]
        )
        if plan.keep_model and model is not None and better and not math.isnan(value):
            outcome.best = (trial.number, value, model)
        return value

    recorder = TrialRecorder(
        db,
        experiment_id=plan.experiment_id,
        parent_run_id=plan.parent_run_id,
        study_name=plan.study_name,
        metric=plan.metric,
        env=plan.env,
    )
    counted = len(study.get_trials(deepcopy=False, states=_COUNTED))
    remaining = plan.n_trials - counted
    timeout = None if plan.deadline is None else max(0.0, plan.deadline - time.time())
    if remaining <= 0 or timeout == 0.0:
        return outcome
    try:
        study.optimize(
            objective,
            n_trials=remaining,
            timeout=timeout,
            callbacks=[MaxTrialsCallback(plan.n_trials, states=_COUNTED), recorder],
            catch=plan.catch,
        )
    finally:  # trials that ended by an exception skipped the callback
        record_finished(recorder, study, lambda t: t.system_attrs.get(OWNER_ATTR) == owner)
        recorder.flush()
    return outcome


def _child(plan: _Plan, send: Any) -> None:
    """A forked worker: its own database connections and storage; its outcome piped back."""
    outcome = _Outcome()
    try:
        db = open_database(plan.settings.db_url)
        try:
            outcome = _run_worker(plan, db, reseed=True)
        finally:
            db.close()
    except BaseException as exc:  # sent to the parent, which raises it
        outcome.error = exc
    try:
        send.send(_picklable(outcome))
    finally:
        send.close()
        os._exit(0)  # the parent's atexit hooks (its runs, its buffers) are not ours


def _picklable(outcome: _Outcome) -> _Outcome:
    if outcome.error is not None:
        try:
            pickle.dumps(outcome.error)
        except Exception:
            outcome.error = ModelyardError(f"{type(outcome.error).__name__}: {outcome.error}")
    if outcome.best is not None:
        try:
            pickle.dumps(outcome.best[2])
        except Exception as exc:
            outcome.error = outcome.error or InvalidInputError(
                f"Expected a model that can be pickled back from a worker process, got "
                f"{type(outcome.best[2]).__name__}: {exc}",
                loc="objective",
            )
            outcome.best = None
    return outcome


def _run_processes(plan: _Plan, n_jobs: int) -> list[_Outcome]:
    context = multiprocessing.get_context("fork")
    started = []
    for _ in range(n_jobs):
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=_child, args=(plan, send), name="modelyard-tune")
        process.start()
        send.close()
        started.append((process, receive))
    outcomes = []
    for process, receive in started:
        try:
            outcomes.append(receive.recv())
        except EOFError:
            process.join()
            error = ModelyardError(f"A tuning worker died (exit code {process.exitcode})")
            outcomes.append(_Outcome(error=error))
        process.join()
    return outcomes


def _dead_owner(trial: FrozenTrial) -> bool:
    host, _, pid = str(trial.system_attrs.get(OWNER_ATTR, "")).rpartition(":")
    return not pid.isdigit() or (host == owner_tag().rpartition(":")[0] and not pid_alive(int(pid)))


def _check(
    n_trials: object, n_jobs: object, timeout: object, direction: object, metric: str
) -> None:
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise InvalidInputError(f"Expected n_trials >= 1, got {n_trials!r}", loc="n_trials")
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
        raise InvalidInputError(f"Expected n_jobs >= 1, got {n_jobs!r}", loc="n_jobs")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
    ):
        raise InvalidInputError(f"Expected timeout > 0 seconds, got {timeout!r}", loc="timeout")
    if direction not in _DIRECTIONS:
        raise InvalidInputError(
            f"Expected direction 'minimize' or 'maximize', got {direction!r}", loc="direction"
        )
    check_key(metric, "metric")


def _parent(
    project: str | Path | None, experiment: str | None, study_name: str
) -> tuple[TrackingClient, str, bool]:
    """The client and the run the trials hang under; True when ``tune`` started that run."""
    run = active_run()
    if run is not None:  # inside a pipeline step or the user's own run
        return run.client, run.id, False
    try:
        step = current_step()
    except NotFoundError:
        step = None
    if step is not None:
        return TrackingClient(step.settings), step.run_id, False
    client = get_client(project)
    started = client.start_run(experiment or study_name, name=f"tune-{study_name}")
    return client, started.id, True


def tune(
    objective: Callable[..., Any],
    *,
    space: Mapping[str, Any] | None = None,
    n_trials: int = 100,
    timeout: float | None = None,
    n_jobs: int = 1,
    seed: int | None = None,
    study: str | None = None,
    direction: str = "minimize",
    sampler: BaseSampler | None = None,
    pruner: BasePruner | None = None,
    metric: str = "value",
    experiment: str | None = None,
    register: str | None = None,
    register_kwargs: Mapping[str, Any] | None = None,
    storage: str = "journal",
    catch: tuple[type[Exception], ...] = (),
    project: str | Path | None = None,
    engine: str | None = None,
) -> TuneResult:
    """Search ``space`` for the parameters that minimise (or maximise) ``objective``.

    With ``space`` the objective gets a dict of parameters (and ``trial=`` if it takes
    that keyword, for ``trial.report`` and pruning); without it, the ``optuna.Trial``.
    It returns a number, or ``(number, model)``: ``register="name"`` then logs the best
    trial's model in that trial's run and registers it (``register_kwargs`` go to
    ``log_model``: ``training_frame=``, ``signature=``, ``no_signature=``...).
    ``n_trials`` counts the study's complete and pruned trials, including those of
    earlier calls (a study named by ``study=`` resumes by name; without a name each call
    is a new study, ``OBJECTIVE-<12 hex>``, see ``TuneResult.study_name``); with
    ``n_jobs`` > 1 that many processes share the study and may finish up to
    ``n_jobs - 1`` trials beyond it. ``seed`` seeds the default TPE sampler (the same
    seed and ``n_jobs=1`` give the same parameters).

    ``engine`` is ``"local"`` or ``"ray"`` (None: the project's ``engine`` setting). On
    Ray each trial is a task on the project's cluster (``ray.address``), ``n_jobs`` at
    once, sharing the study in the metadata database; trials are asked in order by this
    process, so the same seed and ``n_jobs`` give the same trials on Ray as locally
    (``engine="local"`` with a seed and ``n_jobs`` > 1 runs the same way in forked
    processes; see ``modelyard.pipelines.ordered_trials``).
    """
    if not callable(objective):
        raise InvalidInputError(
            f"Expected a callable objective, got {type(objective).__name__}", loc="objective"
        )
    _check(n_trials, n_jobs, timeout, direction, metric)
    if sampler is not None and seed is not None:
        raise InvalidInputError(
            "seed seeds the default TPE sampler; seed your own sampler instead", loc="seed"
        )
    parsed = None if space is None else parse_space(space)
    if engine is not None and engine not in ("local", "ray"):
        raise InvalidInputError(f"Expected an engine (local or ray), got {engine!r}", loc="engine")
    if study is None:
        # a study resumes by name, so an unnamed one must be new: named after the objective
        # alone, a later call on other data would reuse the old trials (and, once it had
        # n_trials, run nothing and return the old best)
        base = getattr(objective, "__name__", None) or "study"
        base = "study" if base == "<lambda>" else base
        name: Any = f"{base[:200]}-{uuid.uuid4().hex[:12]}"
    else:
        name = study
    if not isinstance(name, str) or not name.strip() or len(name) > 255:
        raise InvalidInputError(
            f"Expected a study name of 1-255 characters, got {name!r}", loc="study"
        )
    client, parent_id, own_run = _parent(project, experiment, name)
    status = RunStatus.FAILED
    try:
        result = _tune(
            client, parent_id, own_run, name, objective=call_objective(objective, parsed),
            n_trials=n_trials, timeout=timeout, n_jobs=n_jobs,
            sampler=sampler or TPESampler(seed=seed), pruner=pruner, direction=direction,
            metric=metric, register=register, register_kwargs=register_kwargs,
            storage=storage, catch=catch, engine=engine, seed=seed, space=parsed,
        )  # fmt: skip
        status = RunStatus.FINISHED
        return result
    finally:
        if own_run:
            client.end_run(parent_id, status)


def _tune(
    client: TrackingClient,
    parent_id: str,
    own_run: bool,
    name: str,
    *,
    objective: Callable[[optuna.Trial], Any],
    n_trials: int,
    timeout: float | None,
    n_jobs: int,
    sampler: BaseSampler,
    pruner: BasePruner | None,
    direction: str,
    metric: str,
    register: str | None,
    register_kwargs: Mapping[str, Any] | None,
    storage: str,
    catch: tuple[type[Exception], ...],
    engine: str | None = None,
    seed: int | None = None,
    space: dict[str, Any] | None = None,
) -> TuneResult:
    settings = client.settings
    chosen = engine_for(settings, engine, loc="engine")
    ordered = chosen == "ray" or (n_jobs > 1 and seed is not None)
    if (n_jobs > 1 or chosen == "ray") and study_location(settings.db_url) == "sqlite://":
        raise InvalidInputError(
            "Expected a metadata store on disk or PostgreSQL for n_jobs > 1 or the ray "
            "engine: an in-memory store's study cannot be shared with worker processes",
            loc="engine" if chosen == "ray" else "n_jobs",
        )
    optuna_storage = open_study_storage(settings.db_url, storage)
    study = optuna.create_study(
        storage=optuna_storage,
        study_name=name,
        sampler=sampler,
        pruner=pruner,
        direction=StudyDirection[direction.upper()],
        load_if_exists=True,
    )
    if study.direction != StudyDirection[direction.upper()]:
        raise ConflictError(
            f"Study {name!r} was created to {study.direction.name.lower()}; "
            f"got direction={direction!r}. Use another study name."
        )
    if own_run:
        client.log_params(
            parent_id,
            {"study": name, "direction": direction, "n_trials": n_trials, "n_jobs": n_jobs,
             "sampler": type(sampler).__name__, "pruner": type(study.pruner).__name__,
             "engine": chosen},
        )  # fmt: skip
    client.set_tags(parent_id, {"modelyard.study": name})
    reaped = tuple(reap_dead_trials(study))
    env = capture_environment(git_state(settings.project_dir))
    plan = _Plan(
        objective=objective, settings=settings, storage=storage, study_name=name,
        sampler=sampler, pruner=pruner, n_trials=n_trials,
        deadline=None if timeout is None else time.time() + timeout,
        experiment_id=client.get_run(parent_id).experiment_id, parent_run_id=parent_id,
        metric=metric, env=env, maximize=direction == "maximize",
        keep_model=register is not None, register_kwargs=register_kwargs or {}, catch=catch,
    )  # fmt: skip
    # finished trials of dead processes that were never written (a kill before a batch)
    late = TrialRecorder(
        client.db, experiment_id=plan.experiment_id, parent_run_id=parent_id,
        study_name=name, metric=metric, env=env,
    )  # fmt: skip
    record_finished(late, study, _dead_owner)
    late.flush()
    if ordered:
        spec = DriveSpec(
            engine=chosen, settings=settings, storage=storage, study_name=name,
            sampler=sampler, pruner=study.pruner, seed=seed, space=space, n_trials=n_trials,
            n_jobs=n_jobs, deadline=plan.deadline, keep_model=plan.keep_model, catch=catch,
        )  # fmt: skip
        outcomes = [_drive(plan, spec, study, client.db)]
    elif n_jobs == 1:
        outcomes = [_run_worker(plan, client.db, reseed=False)]
    else:
        outcomes = _run_processes(plan, n_jobs)
    refresh_study_storage(study._storage)  # the workers' last writes, read back here
    errors = [o.error for o in outcomes if o.error is not None]
    if errors:
        raise errors[0]
    return _result(client, study, plan, parent_id, own_run, reaped, outcomes, register)


def _drive(plan: _Plan, spec: DriveSpec, study: optuna.Study, db: Database) -> _Outcome:
    """Trials asked here and run by the engine's workers; recorded here, in trial order."""
    recorder = TrialRecorder(
        db, experiment_id=plan.experiment_id, parent_run_id=plan.parent_run_id,
        study_name=plan.study_name, metric=plan.metric, env=plan.env,
    )  # fmt: skip
    outcome = _Outcome()
    owner = owner_tag()

    def finished(trial: FrozenTrial, model: Any) -> None:
        recorder(study, trial)
        value = trial.value
        if model is None or trial.state is not TrialState.COMPLETE or value is None:
            return
        best = outcome.best
        if best is None or (value > best[1] if plan.maximize else value < best[1]):
            outcome.best = (trial.number, value, model)

    try:
        outcome.error = drive_trials(spec, study, plan.objective, finished)
    finally:
        record_finished(recorder, study, lambda t: t.system_attrs.get(OWNER_ATTR) == owner)
        recorder.flush()
    return outcome


def _result(
    client: TrackingClient,
    study: optuna.Study,
    plan: _Plan,
    parent_id: str,
    own_run: bool,
    reaped: tuple[int, ...],
    outcomes: list[_Outcome],
    register: str | None,
) -> TuneResult:
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    complete = [t for t in trials if t.state is TrialState.COMPLETE]
    best = study.best_trial if complete else None
    model_ref = model_trial = None
    if register is not None:
        model_ref, model_trial = _register(client, study, plan, outcomes, best, register)
    if best is not None:
        client.set_tags(
            parent_id,
            {"modelyard.best_trial": best.number,
             "modelyard.best_run": trial_run_id(plan.study_name, best)},
        )  # fmt: skip
        if own_run and best.value is not None:
            client.log_metric(parent_id, f"best_{plan.metric}", best.value)
    return TuneResult(
        study_name=plan.study_name,
        direction=study.direction.name.lower(),
        best_value=None if best is None else best.value,
        best_params={} if best is None else dict(best.params),
        best_trial=None if best is None else best.number,
        best_run_id=None if best is None else trial_run_id(plan.study_name, best),
        parent_run_id=parent_id,
        n_complete=states.count(TrialState.COMPLETE),
        n_pruned=states.count(TrialState.PRUNED),
        n_failed=states.count(TrialState.FAIL),
        reaped=reaped,
        model=model_ref,
        model_trial=model_trial,
        study=study,
    )


def _register(
    client: TrackingClient,
    study: optuna.Study,
    plan: _Plan,
    outcomes: list[_Outcome],
    best: FrozenTrial | None,
    name: str,
) -> tuple[str | None, int | None]:
    held = [o.best for o in outcomes if o.best is not None]
    if not held:
        warnings.warn(
            f"register={name!r}: no trial of this call returned (value, model); nothing "
            "was registered",
            stacklevel=3,
        )
        return None, None
    pick = max if plan.maximize else min
    number, value, model = pick(held, key=lambda h: h[1])
    if best is not None and best.value != value:  # a tie with the study's best is fine
        warnings.warn(
            f"register={name!r}: the study's best trial {best.number} ran in another call; "
            f"registering trial {number}, the best of this call",
            stacklevel=3,
        )
    trial = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    registry = ModelRegistry(client.settings, db=client.db, artifacts=client.artifacts)
    options = dict(plan.register_kwargs)
    options.setdefault("metrics", {plan.metric: value})
    logged = registry.log_model(
        model, name=name, run_id=trial_run_id(plan.study_name, trial), **options
    )
    return logged.ref, number
