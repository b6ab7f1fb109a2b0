"""What both sides of the tracking benchmark share: the data files, the search, the output.

Imported by ``modelyard_side.py`` (project venv) and ``mlflow_side.py`` (MLflow's own
venv), so it needs only the standard library, numpy and pandas.
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
    "CHANGED_ROW",
    "MARKER",
    "SEARCH_FILTER",
    "SEARCH_ORDER",
    "changed_copy",
    "emit",
    "load_frame",
    "load_points",
    "load_runs",
    "median_time",
    "side_main",
]

SEARCH_FILTER = "metrics.auc > 0.5 and params.model = 'hgb'"
SEARCH_ORDER = "metrics.auc DESC"
#: the row changed to show which digest notices (MLflow hashes only the first 10,000)
CHANGED_ROW = 15_000
#: the prefix of the one stdout line that carries a side's results
MARKER = "BENCH-RESULT "


def load_points(data: Path) -> list[float]:
    return [float(v) for v in np.load(data / "points.npy").tolist()]


def load_runs(data: Path) -> list[dict[str, dict[str, Any]]]:
    runs: list[dict[str, dict[str, Any]]] = json.loads((data / "runs.json").read_text())
    return runs


def load_frame(data: Path) -> Any:
    import pandas as pd

    values = np.load(data / "frame.npy")
    return pd.DataFrame(values, columns=[f"c{i}" for i in range(values.shape[1])])


def changed_copy(frame: Any) -> Any:
    """The frame with one cell changed, in row ``CHANGED_ROW``."""
    copy = frame.copy()
    copy.iloc[CHANGED_ROW, 3] = copy.iloc[CHANGED_ROW, 3] + 1.0
    return copy


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
    parser.add_argument("--searches", type=int, default=20)
    parser.add_argument("--digests", type=int, default=3)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    result = tasks[args.task](args)
    emit({"library": library, "version": version, **result})
