"""The monitoring benchmark's seeded data: reference and current frames as Parquet.

Runs in the project's venv (numpy, pyarrow). Every frame has the 27 columns of
``common.COLUMNS``: 21 numeric (normal, lognormal, integer-valued, uniform, exponential;
each with ~1% missing values, integer columns stored as nullable int64) and 6 string
categoricals (one with 500 levels, one with 2,000). ``current=True`` applies the drifts
of ``common.DRIFTED`` and the traps of ``common.TRAPS``; without it a frame is one more
draw from the reference distribution (the no-drift windows).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from common import CATEGORICAL, NUMERIC

MISSING = 0.01
MISSING_DRIFTED = 0.15
OUTLIER = 1e5
#: the drifted category mix (reference, current)
CAT_MIX = ([0.40, 0.25, 0.15, 0.12, 0.08], [0.25, 0.25, 0.20, 0.18, 0.12])
#: the long-tailed category: Zipf(1.0) shares over 2,000 values, and the same shares
#: with those beyond the top 100 reversed (the head unchanged, the tail's mass moved)
TAIL_LEVELS, TAIL_HEAD = 2_000, 100


def _tail_shares() -> tuple[np.ndarray, np.ndarray]:
    weights = 1.0 / np.arange(1, TAIL_LEVELS + 1)
    reference = weights / weights.sum()
    current = reference.copy()
    current[TAIL_HEAD:] = current[TAIL_HEAD:][::-1]
    return reference, current


TAIL_SHARES = _tail_shares()


def tail_truth() -> float:
    """The true base-2 Jensen-Shannon distance of the tail drift (0.345)."""
    p, q = TAIL_SHARES
    mid = (p + q) / 2
    js = (np.sum(p * np.log2(p / mid)) + np.sum(q * np.log2(q / mid))) / 2
    return float(np.sqrt(js))


_LEVELS = {
    "cat_small": ["red", "green", "blue"],
    "cat_mid": [f"region_{i:02d}" for i in range(12)],
    "cat_binary": ["yes", "no"],
    "cat_high": [f"sku_{i:04d}" for i in range(500)],
    "drift_cat_mix": ["web", "store", "phone", "partner", "other"],
    "drift_cat_tail": [f"item_{i:04d}" for i in range(TAIL_LEVELS)],
}
_PROBS = {
    "cat_small": [0.5, 0.3, 0.2],
    "cat_mid": None,
    "cat_binary": [0.7, 0.3],
    "cat_high": list(1.0 / np.arange(1, 501) ** 1.1),
    "drift_cat_mix": CAT_MIX[0],
    "drift_cat_tail": list(TAIL_SHARES[0]),
}


def _numeric(rng: np.random.Generator, name: str, n: int, current: bool) -> np.ndarray:
    drift = current  # drifted and trap columns change only in a drift scenario's current
    if name in {"num_normal_0", "num_normal_4"}:
        return rng.normal(0, 1, n)
    if name == "num_normal_1":
        return rng.normal(10, 3, n)
    if name == "num_normal_2":
        return rng.normal(-5, 0.5, n)
    if name == "num_normal_3":
        return rng.normal(100, 20, n)
    if name == "num_lognormal_0":
        return rng.lognormal(0, 0.5, n)
    if name == "num_lognormal_1":
        return rng.lognormal(2, 1, n)
    if name == "num_lognormal_2":
        return rng.lognormal(1, 0.25, n)
    if name == "num_int_0":
        return rng.poisson(3, n)
    if name == "num_int_1":
        return rng.poisson(40, n)
    if name == "num_int_2":
        return rng.integers(0, 100, n)
    if name == "num_uniform_0":
        return rng.uniform(0, 1, n)
    if name == "drift_uniform":  # 0.15 is half the sd of uniform(0, 1), 1 / sqrt(12)
        return rng.uniform(0, 1, n) + (0.15 if drift else 0)
    if name == "num_exp_0":
        return rng.exponential(2, n)
    if name == "drift_mean_normal":
        return rng.normal(50 + (5 if drift else 0), 10, n)
    if name == "drift_mean_lognormal":
        return rng.lognormal(1 + (0.25 if drift else 0), 0.5, n)
    if name == "drift_mean_int":
        return rng.poisson(20 + (0.5 * np.sqrt(20) if drift else 0), n)
    if name == "drift_scale":
        return rng.normal(0, 1.5 if drift else 1, n)
    if name == "trap_tiny_shift":
        return rng.normal(0.01 if drift else 0, 1, n)
    if name in ("drift_missing", "trap_outlier"):
        return rng.normal(0, 1, n)
    raise KeyError(name)


def make_table(n: int, seed: int, *, current: bool) -> pa.Table:
    """One frame of ``n`` rows; ``current`` applies the drifts and traps."""
    rng = np.random.default_rng(seed)
    columns: dict[str, pa.Array] = {}
    for name in NUMERIC:
        values = _numeric(rng, name, n, current)
        rate = MISSING_DRIFTED if current and name == "drift_missing" else MISSING
        mask = rng.random(n) < rate
        if current and name == "trap_outlier":
            spot = int(np.flatnonzero(~mask)[rng.integers(0, int((~mask).sum()))])
            values[spot] = OUTLIER
        kind = pa.int64() if values.dtype.kind == "i" else pa.float64()
        columns[name] = pa.array(values, type=kind, mask=mask)
    for name in CATEGORICAL:
        levels = _LEVELS[name]
        probs = _PROBS[name]
        if current and name == "drift_cat_mix":
            probs = CAT_MIX[1]
        if current and name == "drift_cat_tail":
            probs = list(TAIL_SHARES[1])
        p = None if probs is None else np.asarray(probs) / np.sum(probs)
        codes = rng.choice(len(levels), size=n, p=p).astype(np.int32)
        columns[name] = pa.array(levels, type=pa.string()).take(pa.array(codes))
    return pa.table(columns)


def write_pair(folder: Path, n: int, seed: int, *, drift: bool) -> tuple[Path, Path]:
    """reference.parquet and current.parquet of ``n`` rows each in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ref, cur = folder / "reference.parquet", folder / "current.parquet"
    pq.write_table(make_table(n, seed, current=False), ref)
    pq.write_table(make_table(n, seed + 1, current=drift), cur)
    return ref, cur
