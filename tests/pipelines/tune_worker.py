"""A separate OS process that tunes: ``python tune_worker.py PROJECT STUDY N_TRIALS SLEEP_S``.

The metadata store comes from the environment (``MODELYARD_DB_URL``), as for any user.
Prints ``DONE <complete> <pruned> <failed>`` when ``tune`` returns.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import optuna

import modelyard


def objective(params: dict[str, Any]) -> float:
    time.sleep(SLEEP_S)
    return (params["x"] - 1.0) ** 2 + params["k"]


if __name__ == "__main__":
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    project, study, n_trials, SLEEP_S = (
        sys.argv[1],
        sys.argv[2],
        int(sys.argv[3]),
        float(sys.argv[4]),
    )
    result = modelyard.tune(
        objective,
        space={"x": (-3.0, 3.0), "k": [0, 1]},
        n_trials=n_trials,
        study=study,
        project=project,
    )
    print("DONE", result.n_complete, result.n_pruned, result.n_failed, flush=True)
