"""Tuning trials as tracked child runs, written in batches.

Each finished trial becomes one run (child of the tuning run or of the pipeline step
that tuned) with the trial's params, its objective value as a metric, its intermediate
values (``trial.report``) as the steps of metric ``intermediate_value``, and tags
``modelyard.study``, ``modelyard.trial``, ``modelyard.trial_state`` (COMPLETE, PRUNED,
FAIL) and ``modelyard.error`` for a failure. Status: COMPLETE -> FINISHED, PRUNED ->
KILLED, FAIL -> FAILED.

Runs are written after their trial ends, many per transaction (a batch at least every
second, or every 100 trials): one trial costs no commit of its own. A run's id is
derived from its trial, so writing a trial twice (a retry, two processes recording the
same finished trial) stores it once, and a later ``tune`` on the study records the
finished trials a killed process never wrote.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from modelyard.errors import StorageError
from modelyard.store.database import Database
from modelyard.tracking.buffer import Point
from modelyard.tracking.entities import RunStatus
from modelyard.tracking.environment import RunEnvironment
from modelyard.tracking.store import EndedRun, SQLTrackingStore
from modelyard.tracking.validation import param_value

__all__ = ["ERROR_ATTR", "INTERMEDIATE_KEY", "TrialRecorder", "record_finished", "trial_run_id"]

INTERMEDIATE_KEY = "intermediate_value"
ERROR_ATTR = "modelyard.error"  # a trial's system attribute: why its objective failed
_NAMESPACE = uuid.UUID("9b7f3c52-5a0e-4d55-9d5e-6d6f64656c79")
_STATUS = {
    TrialState.COMPLETE: RunStatus.FINISHED,
    TrialState.PRUNED: RunStatus.KILLED,
    TrialState.FAIL: RunStatus.FAILED,
}
_CHUNK = 500  # trials per transaction (and per IN list)
_log = logging.getLogger(__name__)


def trial_run_id(study_name: str, trial: FrozenTrial) -> str:
    """The run id of a trial: the same trial always maps to the same run."""
    started = trial.datetime_start.isoformat() if trial.datetime_start else ""
    return uuid.uuid5(_NAMESPACE, f"{study_name}\0{trial._trial_id}\0{started}").hex


def _ms(moment: Any, default: int) -> int:
    return default if moment is None else int(moment.timestamp() * 1000)


class TrialRecorder:
    """An Optuna callback that records finished trials as child runs, in batches."""

    def __init__(
        self,
        db: Database,
        *,
        experiment_id: str,
        parent_run_id: str | None,
        study_name: str,
        metric: str,
        env: RunEnvironment,
        flush_every_s: float = 1.0,
        max_pending: int = 100,
    ) -> None:
        self._store = SQLTrackingStore(db)
        self._experiment_id = experiment_id
        self._parent = parent_run_id
        self._study = study_name
        self._metric = metric
        self._env = env
        self._every_s = flush_every_s
        self._max = max_pending
        self._pending: dict[str, FrozenTrial] = {}
        self._last = time.monotonic()
        self._failing = False
        self.recorded = 0

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.add([trial])
        if len(self._pending) >= self._max or time.monotonic() - self._last >= self._every_s:
            self._try_flush()

    def add(self, trials: Sequence[FrozenTrial]) -> None:
        for trial in trials:
            if trial.state in _STATUS:
                self._pending[trial_run_id(self._study, trial)] = trial

    def _try_flush(self) -> None:
        try:
            self.flush()
        except StorageError as exc:  # kept pending and retried at the next batch
            if not self._failing:
                _log.warning("tune: recording trials failed, will retry: %s", exc)
            self._failing = True

    def flush(self) -> None:
        """Write every pending trial now (raises StorageError; they stay pending)."""
        self._last = time.monotonic()
        if not self._pending:
            return
        items = list(self._pending.items())
        now = time.time_ns() // 1_000_000
        for first in range(0, len(items), _CHUNK):
            chunk = dict(items[first : first + _CHUNK])
            ended = [self._ended(run_id, trial, now) for run_id, trial in chunk.items()]
            fresh = set(self._store.insert_ended_runs(self._experiment_id, ended, self._env))
            points = [p for run_id in fresh for p in self._points(run_id, chunk[run_id])]
            if points:
                self._store.write_metrics(uuid.uuid4().hex, points)
            for run_id in chunk:
                self._pending.pop(run_id, None)
            self.recorded += len(fresh)
        if self._failing:
            _log.warning("tune: recording trials works again")
            self._failing = False

    def _ended(self, run_id: str, trial: FrozenTrial, now: int) -> EndedRun:
        start = _ms(trial.datetime_start, now)
        tags = {
            "modelyard.study": self._study,
            "modelyard.trial": str(trial.number),
            "modelyard.trial_state": trial.state.name,
        }
        reason = trial.system_attrs.get(ERROR_ATTR)
        if trial.state is TrialState.FAIL and reason:
            tags["modelyard.error"] = param_value("modelyard.error", str(reason).strip()[:4000])
        return EndedRun(
            id=run_id,
            name=f"trial-{trial.number}",
            status=_STATUS[trial.state],
            start_time=start,
            end_time=max(start, _ms(trial.datetime_complete, now)),
            parent_run_id=self._parent,
            params={k: param_value(k, v) for k, v in trial.params.items()},
            tags=tags,
        )

    def _points(self, run_id: str, trial: FrozenTrial) -> list[Point]:
        when = _ms(trial.datetime_complete, time.time_ns() // 1_000_000)
        points: list[Point] = [
            (run_id, INTERMEDIATE_KEY, float(value), int(step), when)
            for step, value in sorted(trial.intermediate_values.items())
        ]
        if trial.state is TrialState.COMPLETE and trial.value is not None:
            points.append((run_id, self._metric, float(trial.value), 0, when))
        return points


def record_finished(
    recorder: TrialRecorder, study: optuna.Study, keep: Callable[[FrozenTrial], bool]
) -> None:
    """Queue the study's finished trials that ``keep`` selects (already stored: skipped)."""
    finished = study.get_trials(deepcopy=False, states=tuple(_STATUS))
    recorder.add([t for t in finished if keep(t)])
