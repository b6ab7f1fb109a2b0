"""The tuning anchor: Optuna (in-memory storage) + MLflow, run with their venv's python.

Optuna's study is in memory (``optuna.create_study()``, its default), TPE seeded; every
trial is logged to MLflow by ``optuna_integration.MLflowCallback`` (the documented
integration: one MLflow run per trial with its params and value) into MLflow's default
local store, ``sqlite:///mlflow.db`` in the working folder (MLflow 3.x's default
tracking URI). The store is created before timing (one-time setup, not per trial).
Prints one marked JSON line: the wall time of ``study.optimize``, the time inside the
objective, every trial's params and value, and how many runs MLflow holds afterwards.
"""

from __future__ import annotations

import argparse
import logging
import time

import mlflow
import optuna
from common import emit
from optuna_integration.mlflow import MLflowCallback
from tune_objective import HIGH, LOW, Timer

STUDY = "bench-tune"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    mlflow.search_experiments()  # the default store (sqlite:///mlflow.db) made now, untimed
    timer = Timer()

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", LOW["x"], HIGH["x"])
        y = trial.suggest_int("y", LOW["y"], HIGH["y"])
        return timer(x, y)

    callback = MLflowCallback(metric_name="value")
    study = optuna.create_study(
        study_name=STUDY, sampler=optuna.samplers.TPESampler(seed=args.seed)
    )
    start = time.perf_counter()
    study.optimize(objective, n_trials=args.trials, callbacks=[callback])
    total = time.perf_counter() - start
    logged = mlflow.search_runs(experiment_names=[STUDY], output_format="list")
    emit(
        {
            "tool": "optuna+mlflow",
            "total_s": total,
            "objective_s": timer.seconds,
            "objective_calls": timer.calls,
            "trials": [{"params": t.params, "value": t.value} for t in study.trials],
            "best_value": study.best_value,
            "best_params": study.best_params,
            "logged_runs": len(logged),
            "logged_values": sorted(r.data.metrics.get("value", float("nan")) for r in logged),
            "tracking_uri": mlflow.get_tracking_uri(),
            "versions": {"mlflow": mlflow.__version__, "optuna": optuna.__version__},
        }
    )


if __name__ == "__main__":
    main()
