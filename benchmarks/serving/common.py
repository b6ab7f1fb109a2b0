"""What every side of the serving benchmark shares: columns, training, the request row.

Imported by the anchor scripts inside their own venvs (MLflow, BentoML, KServe) and by
the modelyard side in the project venv, so it needs only numpy, pandas and scikit-learn.
Every side re-trains the two models from the same CSV with the same scikit-learn version
and one thread, which gives the same model everywhere without moving pickles between
venvs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: the numeric features of both models, in this order
NUMERIC = [
    "month",
    "day",
    "day_of_week",
    "sched_dep_hour",
    "distance",
    "temp",
    "dewp",
    "humid",
    "wind_speed",
    "precip",
    "pressure",
    "visib",
]
INTEGER = ["month", "day", "day_of_week", "sched_dep_hour", "distance"]
CATEGORICAL = ["carrier", "origin"]
TARGET = "delayed"
MODELS = {
    "hgb": {"columns": NUMERIC, "title": "HistGradientBoosting, 200 trees, 12 numeric columns"},
    "pipeline": {
        "columns": NUMERIC + CATEGORICAL,
        "title": "OneHotEncoder + StandardScaler + LogisticRegression, 14 columns",
    },
}
DATA_FILE = "flights.csv"
ROW_FILE = "row.json"
MARKER = "SERVING-BENCH "
#: rows at the end of the file kept out of training (the request row comes from them)
HOLDOUT = 1000


def read_data(folder: Path) -> pd.DataFrame:
    frame = pd.read_csv(folder / DATA_FILE)
    frame[INTEGER] = frame[INTEGER].astype("int64")
    for col in NUMERIC:
        if col not in INTEGER:
            frame[col] = frame[col].astype("float64")
    frame[CATEGORICAL] = frame[CATEGORICAL].astype(str)
    return frame


def training(folder: Path, kind: str) -> tuple[pd.DataFrame, np.ndarray]:
    frame = read_data(folder).iloc[:-HOLDOUT]
    return frame[MODELS[kind]["columns"]].reset_index(drop=True), frame[TARGET].to_numpy()


def fit(kind: str, X: pd.DataFrame, y: np.ndarray) -> Any:
    """The benchmark's two models, fitted deterministically."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    if kind == "hgb":
        model = HistGradientBoostingClassifier(max_iter=200, early_stopping=False, random_state=0)
    else:
        model = Pipeline(
            [
                (
                    "prep",
                    ColumnTransformer(
                        [
                            ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
                            ("num", StandardScaler(), NUMERIC),
                        ]
                    ),
                ),
                ("clf", LogisticRegression(max_iter=2000)),
            ]
        )
    return model.fit(X, y)


def train(folder: Path, kind: str) -> Any:
    return fit(kind, *training(folder, kind))


def request_row(folder: Path) -> dict[str, Any]:
    """The one row every request carries (all columns; each model takes its own)."""
    row: dict[str, Any] = json.loads((folder / ROW_FILE).read_text())
    return row


def emit(payload: dict[str, Any]) -> None:
    print(MARKER + json.dumps(payload), flush=True)
