"""Shared by both sides of the gates benchmark: the data, the models, the results line.

Imports only numpy, pandas and scikit-learn, so it runs in the project's venv and in
MLflow's own.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

MARKER = "BENCH-RESULT "
LABEL = "is_delayed"
ROWS = 100_000
TREES = 200
#: five slices: the gate compares candidate and champion on each origin airport (0-4)
ORIGINS = 5
FEATURES = [f"x{i}" for i in range(8)] + ["distance", "origin"]


def make_frame(rows: int, seed: int) -> pd.DataFrame:
    """Synthetic flights: 8 numeric features, a distance and an origin; a noisy label."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=rows) for i in range(8)})
    frame["distance"] = rng.uniform(80, 2500, size=rows).round()
    origin = rng.integers(0, ORIGINS, size=rows)
    frame["origin"] = origin.astype(np.int64)
    logit = (
        0.9 * frame["x0"]
        - 0.6 * frame["x1"] * frame["x2"]
        + 0.4 * np.sin(3 * frame["x3"])
        + 0.0004 * (frame["distance"] - 1200)
        + 0.3 * (origin == 1)
        - 0.8
    )
    frame[LABEL] = (rng.uniform(size=rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return frame


def result_line(result: dict[str, Any]) -> str:
    return MARKER + json.dumps(result)


#: the type MLflow's skops format must be told to trust to log a HistGradientBoosting model
HGB_TREE_TYPE = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"
