"""What ``modelyard tune list|show`` reports about studies: plain, JSON-able data.

``study_summaries`` lists every study (name, direction, trial counts by state, best
value, when its first trial started); ``study_details`` adds the trials, the best
trial and parameter importances (``optuna.importance``; with fewer than
``MIN_IMPORTANCE_TRIALS`` complete trials, or when Optuna cannot rank them, a note says
why instead).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from modelyard.pipelines.studies import require_study
from modelyard.pipelines.trials import trial_run_id

__all__ = ["MIN_IMPORTANCE_TRIALS", "study_details", "study_summaries"]

MIN_IMPORTANCE_TRIALS = 4


def _ms(moment: Any) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def _best(trials: list[FrozenTrial], maximize: bool) -> FrozenTrial | None:
    done = [t for t in trials if t.state is TrialState.COMPLETE and t.value is not None]
    if not done:
        return None
    pick = max if maximize else min
    return pick(done, key=lambda t: float(t.value))  # type: ignore[arg-type]


def _summary(name: str, direction: StudyDirection, trials: list[FrozenTrial]) -> dict[str, Any]:
    counts = Counter(t.state.name.lower() for t in trials)
    best = _best(trials, direction is StudyDirection.MAXIMIZE)
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    return {
        "name": name,
        "direction": direction.name.lower(),
        "trials": len(trials),
        "complete": counts.get("complete", 0),
        "pruned": counts.get("pruned", 0),
        "failed": counts.get("fail", 0),
        "running": counts.get("running", 0),
        "best_value": None if best is None else best.value,
        "best_trial": None if best is None else best.number,
        "created": _ms(min(starts)) if starts else None,
    }


def study_summaries(storage: BaseStorage) -> list[dict[str, Any]]:
    """One summary per study, by name."""
    found = []
    for frozen in storage.get_all_studies():
        trials = storage.get_all_trials(frozen._study_id, deepcopy=False)
        found.append(_summary(frozen.study_name, frozen.direction, trials))
    return sorted(found, key=lambda s: s["name"])


def _trial(study_name: str, trial: FrozenTrial) -> dict[str, Any]:
    start, end = _ms(trial.datetime_start), _ms(trial.datetime_complete)
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value,
        "params": dict(trial.params),
        "start": start,
        "duration_s": None if start is None or end is None else (end - start) / 1000,
        "intermediate_values": {str(k): v for k, v in sorted(trial.intermediate_values.items())},
        "run_id": None if not trial.state.is_finished() else trial_run_id(study_name, trial),
    }


def _importances(study: optuna.Study, complete: int) -> tuple[dict[str, float] | None, str | None]:
    if complete < MIN_IMPORTANCE_TRIALS:
        return None, (
            f"parameter importances need at least {MIN_IMPORTANCE_TRIALS} complete trials; "
            f"this study has {complete}"
        )
    try:
        ranked = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError) as exc:  # e.g. a parameter that never varied
        return None, f"Optuna could not rank the parameters: {exc}"
    return {k: float(v) for k, v in ranked.items() if math.isfinite(v)}, None


def study_details(storage: BaseStorage, name: str) -> dict[str, Any]:
    """A study's summary, trials, best trial and parameter importances."""
    study = require_study(storage, name)
    trials = study.get_trials(deepcopy=False)
    summary = _summary(name, study.direction, trials)
    best = _best(trials, study.direction is StudyDirection.MAXIMIZE)
    importances, note = _importances(study, summary["complete"])
    return {
        **summary,
        "best": None if best is None else _trial(name, best),
        "importances": importances,
        "importance_note": note,
        "trial_list": [_trial(name, t) for t in trials],
    }
