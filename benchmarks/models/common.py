"""What both sides of the models benchmark share: the data, the model, the output line.

Imported by ``modelyard_side.py`` (project venv) and ``mlflow_side.py`` (MLflow's own
venv), so it needs only the standard library, numpy, pandas and scikit-learn (both venvs
have the same scikit-learn, so both sides fit the very same model from the same rows).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ALIAS",
    "HGB_TREE_TYPE",
    "MARKER",
    "CHECK_ROWS",
    "MODEL_NAME",
    "emit",
    "fit_model",
    "load_training",
    "median_time",
    "model_digest",
    "side_main",
    "write_training",
]

#: the registered model both sides log versions of, and the alias they load it by
MODEL_NAME = "bench-model"
ALIAS = "champion"
#: the prefix of the one stdout line that carries a side's results
MARKER = "BENCH-RESULT "
#: the skops type MLflow refuses for HistGradientBoosting unless the call trusts it
HGB_TREE_TYPE = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"
#: rows scored to check both sides hold the same model
CHECK_ROWS = 200


def write_training(folder: Path, rows: int, columns: int, seed: int = 20240601) -> None:
    """The synthetic classification rows both sides train on and log with."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, columns))
    logit = X[:, 0] - 0.8 * X[:, 1] + 0.5 * X[:, 2] * X[:, 3] + rng.normal(scale=0.5, size=rows)
    np.save(folder / "X.npy", X)
    np.save(folder / "y.npy", (logit > 0).astype(np.int64))


def load_training(data: Path) -> tuple[Any, Any]:
    import pandas as pd

    X = np.load(data / "X.npy")
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    return frame, np.load(data / "y.npy")


def fit_model(kind: str, X: Any, y: Any) -> Any:
    """The model both sides log: deterministic, so both fit the same one."""
    if kind == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(
            max_iter=50, early_stopping=False, random_state=0
        ).fit(X, y)
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000).fit(X, y)


def model_digest(model: Any, X: Any) -> list[float]:
    """A few numbers that differ when the fitted models differ."""
    proba = np.asarray(model.predict_proba(X.head(CHECK_ROWS)))[:, 1]
    return [round(float(proba.sum()), 9), round(float(proba[0]), 9), round(float(proba[-1]), 9)]


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    """The median of ``repeats`` timed calls, and every time."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def emit(result: dict[str, Any]) -> None:
    """Print the results as one marked JSON line (libraries may print other lines)."""
    sys.stdout.write(MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()


def side_main(
    library: str,
    version: str,
    tasks: dict[str, Callable[[argparse.Namespace], dict[str, Any]]],
) -> None:
    """The command line of a side: run one task, print its results line."""
    parser = argparse.ArgumentParser(description=f"the {library} side of the benchmark")
    parser.add_argument("task", choices=list(tasks))
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--model", choices=["hgb", "logreg"], default="hgb")
    parser.add_argument("--logs", type=int, default=5, help="log_model repeats")
    parser.add_argument("--loads", type=int, default=5, help="load-by-alias repeats")
    parser.add_argument("--calls", type=int, default=200, help="1-row predict calls")
    parser.add_argument("--batch-calls", type=int, default=20, help="1000-row predict calls")
    parser.add_argument("--flavors", default="", help="comma-separated latency rows")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    result = tasks[args.task](args)
    emit({"library": library, "version": version, **result})
