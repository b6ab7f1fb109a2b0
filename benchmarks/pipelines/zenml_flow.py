"""The flights pipeline in ZenML: ``python zenml_flow.py --data PATH [--max-depth N]``.

ZenML's default local stack (local orchestrator, local artifact store, SQLite store),
caching on (its default). Copied beside ``common.py`` into a work folder where
``zenml init`` ran, and run there with the ZenML venv's python. ``--empty N`` runs
``empty`` instead: N steps that do nothing, one after the other, caching off.

No ``from __future__ import annotations`` and ``typing.Tuple``: ZenML reads the
annotations at run time to find the two outputs of ``split``.
"""

from __future__ import annotations

import argparse
from typing import Annotated

import common
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from zenml import pipeline, step


@step
def load(data: str) -> pd.DataFrame:
    return common.load(data)


@step
def features(frame: pd.DataFrame) -> pd.DataFrame:
    return common.features(frame)


@step
def split(
    table: pd.DataFrame, test_month: int
) -> tuple[Annotated[pd.DataFrame, "train"], Annotated[pd.DataFrame, "test"]]:
    train_frame, test_frame = common.split(table, test_month)
    return train_frame, test_frame  # a tuple literal: ZenML reads it as two outputs


@step
def train(frame: pd.DataFrame, max_depth: int) -> HistGradientBoostingClassifier:
    return common.train(frame, max_depth)


@step
def evaluate(model: HistGradientBoostingClassifier, frame: pd.DataFrame) -> dict[str, float]:
    return common.evaluate(model, frame)


@pipeline
def flights(data: str, max_depth: int = 6, test_month: int = 2) -> None:
    frame = load(data)
    table = features(frame)
    train_frame, test_frame = split(table, test_month=test_month)
    model = train(train_frame, max_depth=max_depth)
    evaluate(model, test_frame)


@step(enable_cache=False)
def noop() -> None:
    return None


@pipeline(enable_cache=False)
def empty(n: int = 2) -> None:
    previous = None
    for i in range(n):
        noop(id=f"noop_{i}", after=previous)
        previous = f"noop_{i}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data")
    parser.add_argument("--max-depth", type=int, default=6)
    parser.add_argument("--test-month", type=int, default=2)
    parser.add_argument("--empty", type=int, help="run `empty` with this many steps instead")
    args = parser.parse_args()
    if args.empty is not None:
        empty(n=args.empty)
    else:
        flights(data=args.data, max_depth=args.max_depth, test_month=args.test_month)


if __name__ == "__main__":
    main()
