"""The retrain stage of an agent action: run the pipeline, find its candidate, tidy up.

``run_retrain`` runs the action's pipeline (the alert's ``action.retrain``) with its
params and the training window, tagged ``modelyard.agent.action = ACTION_ID`` so every
run of one action is found again. It is safe to call again after the process died
anywhere in it:

- the pipeline's finished steps answer the re-run from the step cache, so a re-run
  resumes where the killed one stopped;
- the candidate is the version of the action's model that a step run of *this*
  pipeline run registered, or that the cached step's original run registered;
- a version registered by an earlier, killed run of the same action (the step died
  after registering, before it was recorded as done: the re-run registered another)
  is archived, audited; none is left behind;
- when the pipeline moved the alias the candidate must win against (``production``:
  a pipeline written to promote its model) to a version of this action, the alias is
  moved back to the champion, audited, and ``restored_production`` says so: a retrain
  never changes what serves (the gates and the canary decide).

A candidate that is the champion itself (a pipeline fully answered from the cache of
the run that made the champion) is an error: there is nothing new to gate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from modelyard.agent.faults import checkpoint
from modelyard.agent.records import Action
from modelyard.config import Settings
from modelyard.errors import ConflictError, InvalidInputError, NotFoundError, StepFailedError
from modelyard.pipelines import Pipeline, StepEvent, load_pipelines, run_pipeline
from modelyard.registry.client import ModelRegistry
from modelyard.registry.refs import ModelRef
from modelyard.store.database import Database
from modelyard.store.schema import model_versions, pipeline_steps, run_tags, runs

__all__ = [
    "ACTION_TAG",
    "RetrainResult",
    "action_pipeline",
    "pipeline_runs_of",
    "retrain_params",
    "run_retrain",
]

log = logging.getLogger(__name__)

#: the tag on each pipeline run of an action: its id
ACTION_TAG = "modelyard.agent.action"
#: the parameters a pipeline declares to be told the training window
WINDOW_PARAMS = ("window_start", "window_end")
#: step statuses that end a step (the first one ends "retrain-mid")
_ENDED = ("completed", "cached", "failed")


@dataclass(frozen=True)
class RetrainResult:
    """What one call of :func:`run_retrain` found.

    ``error`` is one line when the retrain failed (a step failed, no candidate, the
    candidate is the champion or archived); ``candidate_version`` is then None.
    ``orphans`` are the other versions the action's runs registered, archived (by this
    call or an earlier one for the action); ``restored_production`` is True when this
    call or an earlier one moved the alias back. Both are the same on every call, so
    events recorded from them are neither lost nor doubled by a crash in between.
    """

    pipeline_run_id: str
    candidate_version: int | None
    orphans: list[int] = field(default_factory=list)
    restored_production: bool = False
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline_run_id": self.pipeline_run_id,
            "candidate_version": self.candidate_version,
            "orphans": list(self.orphans),
            "restored_production": self.restored_production,
            "error": self.error,
        }


def _iso(us: int) -> str:
    """Microseconds since the epoch as ISO 8601 UTC, exactly (no float rounding)."""
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)).isoformat()


def action_pipeline(settings: Settings, action: Action) -> Pipeline:
    """The project's pipeline the action names; InvalidInputError naming it otherwise."""
    if not action.pipeline:
        raise InvalidInputError(
            f"Expected the pipeline of retrain action {action.id}, got none",
            loc="action.retrain.pipeline",
        )
    pipelines = load_pipelines(settings)
    found = pipelines.get(action.pipeline)
    if found is None:
        known = ", ".join(sorted(pipelines)) or "none"
        raise InvalidInputError(
            f"Expected a pipeline of the project (known: {known}), got {action.pipeline!r}",
            loc="action.retrain.pipeline",
        )
    return found


def _params(pipeline: Pipeline, action: Action) -> dict[str, Any]:
    params = dict(action.params)
    if action.window_start_us is None and action.window_end_us is None:
        return params
    declared = [name for name in WINDOW_PARAMS if name in pipeline.params]
    if not declared:
        raise InvalidInputError(
            f"Expected pipeline {pipeline.name!r} to declare window_start or window_end "
            "(the training window the retrain passes), got neither: add them to the "
            "pipeline or remove the action's window",
            loc="action.retrain.window",
        )
    for name in declared:
        if name in params:
            raise InvalidInputError(
                f"Expected {name} from the action's window, got it in params too "
                f"({params[name]!r}): remove it from action.retrain.params",
                loc=f"action.retrain.params.{name}",
            )
    window = {"window_start": action.window_start_us, "window_end": action.window_end_us}
    for name in declared:
        value = window[name]
        if value is not None:
            params[name] = _iso(value)
    return params


def retrain_params(settings: Settings, action: Action) -> dict[str, Any]:
    """The action's params plus ``window_start``/``window_end`` (ISO 8601 UTC).

    Each of the two is passed when the pipeline declares it; an action with a window
    whose pipeline declares neither is an InvalidInputError naming
    ``action.retrain.window`` (training on everything would be a silent surprise).
    """
    return _params(action_pipeline(settings, action), action)


@dataclass(frozen=True)
class _Registered:
    version: int
    status: str


def _registered(db: Database, model: str, step_runs: Iterable[str]) -> dict[int, _Registered]:
    """Versions of ``model`` logged in one of ``step_runs`` or a run under one (a trial)."""
    ids = sorted(set(step_runs))
    if not ids:
        return {}
    with db.read() as conn:
        children = conn.execute(select(runs.c.id).where(runs.c.parent_run_id.in_(ids))).scalars()
        every = sorted({*ids, *children})
        rows = conn.execute(
            select(model_versions.c.version, model_versions.c.status).where(
                model_versions.c.name == model, model_versions.c.run_id.in_(every)
            )
        ).all()
    return {int(r.version): _Registered(int(r.version), str(r.status)) for r in rows}


def _steps_of_run(db: Database, pipeline_run_id: str) -> list[str]:
    """The step runs of one pipeline run and the runs their cached steps reused."""
    with db.read() as conn:
        rows = conn.execute(
            select(pipeline_steps.c.run_id, pipeline_steps.c.cached_from).where(
                pipeline_steps.c.pipeline_run_id == pipeline_run_id
            )
        ).all()
    return [r.run_id for r in rows] + [r.cached_from for r in rows if r.cached_from]


def _steps_of_action(db: Database, action_id: str) -> list[str]:
    """The step runs (run by them, not reused from the cache) of every run of the action."""
    with db.read() as conn:
        return list(
            conn.execute(
                select(pipeline_steps.c.run_id)
                .join(run_tags, run_tags.c.run_id == pipeline_steps.c.pipeline_run_id)
                .where(run_tags.c.key == ACTION_TAG, run_tags.c.value == action_id)
            ).scalars()
        )


def pipeline_runs_of(db: Database, action_id: str) -> list[str]:
    """The ids of every pipeline run tagged with the action, oldest first."""
    with db.read() as conn:
        return list(
            conn.execute(
                select(runs.c.id)
                .join(run_tags, run_tags.c.run_id == runs.c.id)
                .where(run_tags.c.key == ACTION_TAG, run_tags.c.value == action_id)
                .order_by(runs.c.start_time, runs.c.id)
            ).scalars()
        )


def _holder(registry: ModelRegistry, model: str, alias: str) -> int | None:
    try:
        return registry.get_version(ModelRef(model, alias=alias)).version
    except NotFoundError:
        return None


def _restore_reason(action: Action, against: str) -> str:
    return f"agent: action {action.id} restores {against}"


def _restore(
    registry: ModelRegistry, action: Action, against: str, ours: Mapping[int, _Registered]
) -> bool:
    """Move ``against`` back to the champion when the pipeline moved it to one of ours.

    True also when an earlier call for this action did (its audit entry says so): a
    caller killed before recording the restore learns it on the next call.
    """
    holder = _holder(registry, action.model, against)
    if holder is None or holder not in ours or holder == action.champion_version:
        prefix = _restore_reason(action, against)
        return any(
            e.alias == against and (e.reason or "").startswith(prefix)
            for e in registry.history(action.model)
        )
    reason = (
        f"{_restore_reason(action, against)}: retrain pipeline "
        f"{action.pipeline} moved it to v{holder}; the gates and the canary decide"
    )
    if action.champion_version is None:
        registry.remove_alias(action.model, against, reason=reason)
    else:
        registry.set_alias(
            ModelRef(action.model, version=action.champion_version), against, reason=reason
        )
    return True


def _archive_orphans(
    registry: ModelRegistry,
    action: Action,
    ours: Mapping[int, _Registered],
    keep: set[int | None],
) -> list[int]:
    """Archive the action's versions other than ``keep``; every one archived now.

    The versions archived by an earlier call for this action are listed too: a caller
    killed before recording them learns them on the next call.
    """
    archived = []
    for version in sorted(ours):
        if version in keep:
            continue
        if ours[version].status == "active":
            try:
                registry.archive(
                    ModelRef(action.model, version=version),
                    reason=f"agent: action {action.id}: registered by its retrain but not "
                    "its candidate (a killed or failed run, or another step of the pipeline)",
                )
            except ConflictError:
                continue  # it holds an alias someone set: left as it is, visible in history
        archived.append(version)
    return archived


def _tidy_after_crash(settings: Settings, action: Action, against: str) -> None:
    """The pipeline raised (not a step: the store, a bug): leave production and no orphan.

    Best effort: when the store itself is what failed, the next call of the action
    (or a later look at its runs) finds the same versions by the action's tag.
    """
    try:
        with ModelRegistry(settings) as registry:
            ours = _registered(registry.db, action.model, _steps_of_action(registry.db, action.id))
            _restore(registry, action, against, ours)
            _archive_orphans(registry, action, ours, {action.champion_version})
    except Exception:  # the caller's error is the one to report
        log.exception("agent: action %s: tidying after the failed retrain failed", action.id)


def _one_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:500]


def run_retrain(
    settings: Settings,
    action: Action,
    *,
    on_event: Callable[[StepEvent], None] | None = None,
) -> RetrainResult:
    """Run the action's pipeline and find its candidate (see the module's docstring).

    A step that fails is ``error`` in the result (the run is recorded); bad input
    (the pipeline, its params, the window) raises InvalidInputError before anything runs.
    """
    pipeline = action_pipeline(settings, action)
    params = _params(pipeline, action)
    against = settings.agent.model(action.model).against
    ended = False

    def events(event: StepEvent) -> None:
        nonlocal ended
        if on_event is not None:
            on_event(event)
        if not ended and event.status in _ENDED:
            ended = True
            checkpoint("retrain-mid")

    error: str | None = None
    try:
        run_id = run_pipeline(
            pipeline, params, settings=settings, tags={ACTION_TAG: action.id}, on_event=events
        ).run_id
    except StepFailedError as exc:
        run_id, error = exc.run_id, _one_line(str(exc))
    except Exception:
        _tidy_after_crash(settings, action, against)
        raise
    registry = ModelRegistry(settings)
    try:
        db = registry.db
        ours = _registered(db, action.model, _steps_of_action(db, action.id))
        mine = _registered(db, action.model, _steps_of_run(db, run_id))
        candidate = max(mine) if error is None and mine else None
        if error is None and candidate is None:
            error = (
                f"pipeline {pipeline.name!r} (run {run_id}) registered no version of "
                f"{action.model!r}: its steps must log_model(..., name={action.model!r})"
            )
        elif candidate is not None and candidate == action.champion_version:
            error = (
                f"the retrain's candidate {action.model}/{candidate} is the champion "
                f"(pipeline run {run_id} reused its steps from the cache): nothing new to gate"
            )
            candidate = None
        elif candidate is not None and mine[candidate].status != "active":
            error = (
                f"the retrain's candidate {action.model}/{candidate} is archived (pipeline "
                f"run {run_id} reused its steps from the cache)"
            )
            candidate = None
        restored = _restore(registry, action, against, ours)
        orphans = _archive_orphans(registry, action, ours, {candidate, action.champion_version})
    finally:
        registry.close()
    checkpoint("retrain-done")
    return RetrainResult(run_id, candidate, orphans, restored, error)
