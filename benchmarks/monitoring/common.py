"""What every side of the monitoring benchmark shares: column names, the known truth,
the side's arguments, timing and the one results line.

Imported by ``modelyard_side.py`` (project venv), ``evidently_side.py`` and
``nannyml_side.py`` (their own venvs), so it needs only the standard library.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "CATEGORICAL",
    "COLUMNS",
    "DRIFTED",
    "HARD",
    "MARKER",
    "NUMERIC",
    "TRAPS",
    "Clock",
    "emit",
    "peak_mb",
    "ru_maxrss_mb",
    "side_args",
]

#: the stdout prefix of the one line that carries a side's results
MARKER = "BENCH-RESULT "

#: 21 numeric columns: name -> how it is drawn (every one has ~1% missing values)
NUMERIC: dict[str, str] = {
    "num_normal_0": "normal(0, 1)",
    "num_normal_1": "normal(10, 3)",
    "num_normal_2": "normal(-5, 0.5)",
    "num_normal_3": "normal(100, 20)",
    "num_normal_4": "normal(0, 1)",
    "num_lognormal_0": "lognormal(0, 0.5)",
    "num_lognormal_1": "lognormal(2, 1)",
    "num_lognormal_2": "lognormal(1, 0.25)",
    "num_int_0": "poisson(3), integer-valued",
    "num_int_1": "poisson(40), integer-valued",
    "num_int_2": "uniform integers 0..99",
    "num_uniform_0": "uniform(0, 1)",
    "num_exp_0": "exponential(2)",
    "drift_mean_normal": "normal(50, 10); current: mean +0.5 sd",
    "drift_mean_lognormal": "lognormal(1, 0.5); current: log-mean +0.5 sd",
    "drift_mean_int": "poisson(20), integer-valued; current: mean +0.5 sd",
    "drift_scale": "normal(0, 1); current: sd x1.5",
    "drift_missing": "normal(0, 1); current: missing 1% -> 15%",
    "drift_uniform": "uniform(0, 1); current: uniform(0.15, 1.15), a 0.5 sd shift",
    "trap_tiny_shift": "normal(0, 1); current: mean +0.01 sd (negligible, must not flag)",
    "trap_outlier": "normal(0, 1); current: one value set to 1e5 (must not flag)",
}
#: 6 categorical (string) columns: name -> levels
CATEGORICAL: dict[str, str] = {
    "cat_small": "3 levels",
    "cat_mid": "12 levels",
    "cat_binary": "2 levels",
    "cat_high": "500 levels, Zipf-like (high cardinality)",
    "drift_cat_mix": "5 levels; current: level mix changed (0.40/0.25/0.15/0.12/0.08 -> "
    "0.25/0.25/0.20/0.18/0.12)",
    "drift_cat_tail": "2,000 levels, Zipf(1.0); current: the shares of the values beyond the "
    "top 100 reversed (the head unchanged; true JS distance 0.345)",
}
COLUMNS = [*NUMERIC, *CATEGORICAL]
#: the columns that drift in the drift scenario (the known truth), with how
DRIFTED: dict[str, str] = {
    "drift_mean_normal": "mean +0.5 sd",
    "drift_mean_lognormal": "log-mean +0.5 sd",
    "drift_mean_int": "mean +0.5 sd (integer-valued)",
    "drift_scale": "sd x1.5",
    "drift_cat_mix": "category mix change",
    "drift_missing": "missing rate 1% -> 15%",
    "drift_uniform": "uniform shifted by 0.5 sd",
    "drift_cat_tail": "drift confined to the long tail of a 2,000-level category",
}
#: drifts chosen because they do not favour modelyard's design: a uniform column (no
#: tails for a robust scale to lean on) and a tail drift that a "top values + other"
#: binning cannot see (the other cell's total does not change)
HARD: dict[str, str] = {
    "drift_uniform": DRIFTED["drift_uniform"],
    "drift_cat_tail": DRIFTED["drift_cat_tail"],
}
#: columns that change in a way that must NOT be flagged
TRAPS: dict[str, str] = {
    "trap_tiny_shift": "mean +0.01 sd",
    "trap_outlier": "a single value of 1e5",
}


def ru_maxrss_mb() -> float:
    """``ru_maxrss`` in MB (KB on Linux). It starts at the parent's RSS at the fork, as
    Linux carries the old address space's high-water mark over the exec."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_mb() -> float:
    """This process's peak resident memory so far: ``VmHWM`` (the high-water mark of this
    process's own address space) where /proc has it, else ``ru_maxrss``."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return ru_maxrss_mb()


def _cpu() -> float:
    # process_time counts every thread of this process; add children's, should a
    # library fork workers
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


class Clock:
    """CPU and wall seconds of the calls made through it, by phase."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.wall: dict[str, float] = {}
        #: peak RSS (MB) once the imports are done (made after them), then after each phase
        self.peak: dict[str, float] = {"imports": peak_mb()}

    def __call__(self, phase: str, fn: Callable[[], Any]) -> Any:
        cpu, wall = _cpu(), time.perf_counter()
        out = fn()
        self.cpu[phase] = self.cpu.get(phase, 0.0) + _cpu() - cpu
        self.wall[phase] = self.wall.get(phase, 0.0) + time.perf_counter() - wall
        self.peak[phase] = peak_mb()
        return out

    def summary(self, read: str = "read") -> dict[str, float]:
        """``cpu_s``/``wall_s`` of everything but the read; ``*_with_read_s`` of all."""
        compare_cpu = sum(v for k, v in self.cpu.items() if k != read)
        compare_wall = sum(v for k, v in self.wall.items() if k != read)
        return {
            "cpu_s": compare_cpu,
            "wall_s": compare_wall,
            "cpu_with_read_s": compare_cpu + self.cpu.get(read, 0.0),
            "wall_with_read_s": compare_wall + self.wall.get(read, 0.0),
            "phases_cpu_s": dict(self.cpu),
            "phases_wall_s": dict(self.wall),
            "peak_after_mb": dict(self.peak),
            "peak_mb": peak_mb(),
            "ru_maxrss_mb": ru_maxrss_mb(),
        }


def emit(result: dict[str, Any]) -> None:
    """Print the results as one marked JSON line (libraries may print other lines)."""
    sys.stdout.write(MARKER + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()


def side_args(library: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=f"the {library} side of the benchmark")
    parser.add_argument("--reference", type=Path, required=True, help="reference Parquet")
    parser.add_argument("--current", type=Path, required=True, help="current Parquet")
    return parser.parse_args()


def read_pandas_frames(clock: Clock, args: argparse.Namespace) -> tuple[Any, Any, float]:
    """An anchor's input: both Parquet files as pandas frames (timed as "read"), and
    their in-memory size in MB."""
    import pandas as pd

    reference = clock("read", lambda: pd.read_parquet(args.reference))
    current = clock("read", lambda: pd.read_parquet(args.current))
    size = sum(float(f.memory_usage(deep=True).sum()) for f in (reference, current))
    return reference, current, size / 2**20
