"""Models, a custom PythonModel and a small pipeline for the materializer tests.

Importable by name, so fresh processes and pool workers build the very same objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modelyard.models.flavors import PythonModel
from modelyard.pipelines import pipeline, step


class MatThreshold(PythonModel):
    """A custom model: class 1 when x0 is above a cut."""

    def __init__(self, cut: float) -> None:
        self.cut = cut
        self.classes_ = [0, 1]

    def predict(self, frame: Any) -> Any:
        return (np.asarray(frame)[:, 0] > self.cut).astype(int)

    def predict_proba(self, frame: Any) -> Any:
        p = 1 / (1 + np.exp(-(np.asarray(frame, dtype=float)[:, 0] - self.cut)))
        return np.column_stack([1 - p, p])


def mat_data(rows: int = 300) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(rng.normal(size=(rows, 4)), columns=["a", "b", "c", "d"])
    frame.loc[rng.random(rows) < 0.05, "c"] = np.nan
    target = ((frame["a"] + frame["b"].fillna(0) * 0.5 + rng.normal(0, 0.3, rows)) > 0).astype(int)
    return frame, target.to_numpy()


def mat_trained_models() -> dict[str, Any]:
    """Each flavor's model, fitted deterministically."""
    import lightgbm
    import xgboost
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame, y = mat_data()
    return {
        "hgb": HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(frame, y),
        "pipeline": make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression()).fit(
            frame, y
        ),
        "xgboost": xgboost.XGBClassifier(n_estimators=15, max_depth=3, random_state=0).fit(
            frame, y
        ),
        "xgboost_booster": xgboost.train(
            {"objective": "binary:logistic", "max_depth": 3, "seed": 0},
            xgboost.DMatrix(frame, label=y),
            num_boost_round=10,
        ),
        "lightgbm": lightgbm.LGBMClassifier(
            n_estimators=15, num_leaves=7, random_state=0, verbose=-1, deterministic=True
        ).fit(frame, y),
        "custom": MatThreshold(0.25),
    }


@step
def mat_frame(rows: int = 5) -> pd.DataFrame:
    return pd.DataFrame({"x": np.arange(rows, dtype=float), "s": [f"r{i}" for i in range(rows)]})


@step
def mat_array(frame: pd.DataFrame) -> np.ndarray:
    print("logs that must survive gc")
    return frame["x"].to_numpy() * 2


@step
def mat_report(frame: pd.DataFrame, folder: str = "reports") -> Path:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.txt").write_text(f"rows={len(frame)}\n")
    (out / "empty").mkdir(exist_ok=True)
    return out


@pipeline
def mat_outputs(rows: int = 5, folder: str = "reports") -> None:
    frame = mat_frame(rows)
    mat_array(frame)
    mat_report(frame, folder=folder)
