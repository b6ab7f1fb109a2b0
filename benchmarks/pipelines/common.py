"""The work of the 5-step flights pipeline, as plain functions every tool's steps call.

Each tool's pipeline file (modelyard ``pipelines.py``, Metaflow ``metaflow_flow.py``,
ZenML ``zenml_flow.py``) wraps these same functions in its own steps, so the tools do
the same computation and differ only in what they add around it. Needs only pandas and
scikit-learn (each anchor venv pins the project venv's versions), no modelyard.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "CATEGORICAL",
    "FEATURES",
    "MARKER",
    "RAW_COLUMNS",
    "TARGET",
    "emit",
    "evaluate",
    "features",
    "load",
    "split",
    "train",
]

#: the columns of the benchmark's flights.csv (flights joined with their origin's weather)
RAW_COLUMNS = [
    "month", "day", "sched_dep_time", "arr_delay", "carrier", "origin", "distance",
    "time_hour", "temp", "dewp", "humid", "wind_speed", "precip", "pressure", "visib",
]  # fmt: skip
CATEGORICAL = ["carrier", "origin"]
FEATURES = [
    "month", "day_of_week", "sched_dep_hour", "carrier", "origin", "distance",
    "temp", "dewp", "humid", "wind_speed", "precip", "pressure", "visib",
]  # fmt: skip
TARGET = "delayed"
#: the prefix of the one stdout line that carries a side's results
MARKER = "BENCH-RESULT "


def load(path: str) -> pd.DataFrame:
    """Step 1: the flights CSV."""
    return pd.read_csv(path)


def features(frame: pd.DataFrame) -> pd.DataFrame:
    """Step 2: what the model sees (all numeric: category codes, not categoricals)."""
    stamp = pd.to_datetime(frame["time_hour"], utc=True)
    out = pd.DataFrame(
        {
            "month": frame["month"].astype("int64"),
            "day_of_week": stamp.dt.tz_convert("America/New_York").dt.day_of_week.astype("int64"),
            "sched_dep_hour": (frame["sched_dep_time"] // 100).astype("int64"),
        }
    )
    for col in CATEGORICAL:
        values = frame[col].astype(str)
        out[col] = pd.Categorical(values, categories=sorted(values.unique())).codes.astype("int64")
    for col in FEATURES:
        if col not in out:
            out[col] = frame[col].astype("float64")
    out[TARGET] = (frame["arr_delay"] > 15).astype("int64")
    return out[[*FEATURES, TARGET]]


def split(frame: pd.DataFrame, test_month: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Step 3: train on the months before ``test_month``, test on the rest."""
    train = frame[frame["month"] < test_month].reset_index(drop=True)
    test = frame[frame["month"] >= test_month].reset_index(drop=True)
    return train, test


def train(frame: pd.DataFrame, max_depth: int) -> Any:
    """Step 4: a HistGradientBoostingClassifier, fixed seed, no early stopping."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(
        max_depth=max_depth,
        max_iter=100,
        early_stopping=False,
        categorical_features=[FEATURES.index(c) for c in CATEGORICAL],
        random_state=0,
    )
    return model.fit(frame[FEATURES].to_numpy(), frame[TARGET].to_numpy())


def evaluate(model: Any, frame: pd.DataFrame) -> dict[str, float]:
    """Step 5: AUC, accuracy and log loss on the test months."""
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    x, y = frame[FEATURES].to_numpy(), frame[TARGET].to_numpy()
    proba = model.predict_proba(x)[:, 1]
    return {
        "auc": float(roc_auc_score(y, proba)),
        "accuracy": float(accuracy_score(y, (proba >= 0.5).astype(np.int64))),
        "log_loss": float(log_loss(y, proba)),
        "test_rows": float(len(y)),
        "proba_sum": float(np.sum(proba)),
    }


def emit(result: dict[str, Any]) -> None:
    """Print the results as one marked JSON line (libraries may print other lines)."""
    sys.stdout.write(MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()
