"""What both sides of the features benchmark share: names, data files, timing, output.

Imported by ``modelyard_side.py`` (project venv) and ``feast_side.py`` (Feast's own
venv), so it needs only the standard library, numpy and pandas.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ENTITY_KEY",
    "FEATURES",
    "MARKER",
    "best_time",
    "emit",
    "latencies",
    "lookup_keys",
    "side_args",
]

#: the stdout prefix of the one line that carries a side's results
MARKER = "BENCH-RESULT "
ENTITY_KEY = "driver_id"
FEATURES = ["f0", "f1", "f2", "f3"]
#: feature file columns: driver_id, event_timestamp, created, f0..f3 (UTC, microseconds)
FEATURE_FILE = "features.parquet"
#: entity file columns: row_id, driver_id, event_timestamp
ENTITY_FILE = "entities.parquet"


def best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    """The fastest of ``repeats`` timed calls, every time, and the last call's result."""
    times = []
    out = None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), times, out


def latencies(fn: Callable[[list[int]], Any], batches: list[list[int]]) -> dict[str, float]:
    """p50 / p99 / mean seconds of ``fn(batch)`` over the batches (after 20 warm-up calls)."""
    for batch in batches[:20]:
        fn(batch)
    times = np.empty(len(batches))
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        fn(batch)
        times[i] = time.perf_counter() - start
    return {
        "p50_s": float(np.percentile(times, 50)),
        "p99_s": float(np.percentile(times, 99)),
        "mean_s": float(times.mean()),
        "calls": len(batches),
    }


def lookup_keys(entities: int, size: int, calls: int, seed: int = 11) -> list[list[int]]:
    """The same random key batches on both sides."""
    rng = np.random.default_rng(seed + size)
    return [[int(k) for k in rng.integers(0, entities, size)] for _ in range(calls)]


def emit(result: dict[str, Any]) -> None:
    """Print the results as one marked JSON line (libraries may print other lines)."""
    sys.stdout.write(MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()


def side_args(library: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=f"the {library} side of the benchmark")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--entities", type=int, required=True)
    parser.add_argument("--start", required=True, help="ISO UTC start of the feature range")
    parser.add_argument("--days", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=3, help="historical retrieval repeats")
    parser.add_argument("--calls", type=int, default=1000, help="online lookups per size")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    return args
