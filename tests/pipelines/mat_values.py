"""Fixed example outputs for the materializer tests (imported in fresh processes too)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa


def mat_examples() -> dict[str, Any]:
    """One value per built-in family, the same in every process."""
    return {
        "json": {"auc": 0.9125, "folds": [0.9, float("nan")], "best": ("depth", 4)},
        "numpy": np.arange(12, dtype=np.float32).reshape(3, 4, order="F"),
        "pandas": pd.DataFrame(
            {
                "x": [1.5, -0.0, float("nan")],
                "s": ["a", "é", None],
                "t": pd.date_range("2024-01-01", periods=3, tz="UTC"),
            },
            index=pd.Index([3, 1, 2], name="k"),
        ),
        "series": pd.Series([1, 2, 3], name="y"),
        "polars": pl.DataFrame({"a": [1, None, 3], "b": ["x", "y", None]}),
        "arrow": pa.table({"a": [1.0, None], "b": ["p", "q"]}),
    }
