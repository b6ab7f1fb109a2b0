"""The flights pipeline in modelyard, copied as ``pipelines.py`` into a temp project.

The same 5 steps as the Metaflow and ZenML files, each calling the same function of
``common.py`` (copied beside it). Run by ``modelyard pipeline run flights -p data=PATH``
or ``flights.run({"data": PATH})``. ``empty`` is ``n`` steps that do nothing, one after
the other (for the per-step overhead).
"""

from __future__ import annotations

from pathlib import Path

import common
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier

from modelyard import pipeline, step


@step
def load(data: Path) -> pd.DataFrame:
    return common.load(str(data))


@step
def features(frame: pd.DataFrame) -> pd.DataFrame:
    return common.features(frame)


@step(outputs=("train", "test"))
def split(table: pd.DataFrame, test_month: int = 2) -> tuple[pd.DataFrame, pd.DataFrame]:
    return common.split(table, test_month)


@step(packages=("scikit-learn",))
def train(frame: pd.DataFrame, max_depth: int = 6) -> HistGradientBoostingClassifier:
    return common.train(frame, max_depth)


@step
def evaluate(model: HistGradientBoostingClassifier, frame: pd.DataFrame) -> dict[str, float]:
    return common.evaluate(model, frame)


@pipeline
def flights(data: Path, max_depth: int = 6, test_month: int = 2) -> None:
    frame = load(data)
    table = features(frame)
    train_frame, test_frame = split(table, test_month=test_month)
    model = train(train_frame, max_depth=max_depth)
    evaluate(model, test_frame)


@step
def noop() -> None:
    return None


@pipeline
def empty(n: int = 2) -> None:
    previous: tuple[str, ...] = ()
    for i in range(n):
        noop.with_options(id=f"noop_{i}", after=previous)()
        previous = (f"noop_{i}",)
