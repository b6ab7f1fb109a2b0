"""How large an effect noise alone produces: the null quantiles behind the thresholds.

A window of ``m`` rows compared with a reference of ``n`` rows differs by chance; the
effect sizes (Wasserstein, Jensen-Shannon) shrink like ``sqrt(1/n + 1/m)``. So the
threshold for a window is the ``quantile`` (e.g. 99th percentile) of the effect between
samples of the reference itself:

- numbers: ``resamples`` pairs of samples of ``s = min(m, calibration_size)`` values, each
  drawn with replacement from the (winsorised) reference's quantile function; for equal
  sizes the Wasserstein distance is the mean gap between the sorted samples, and sorted
  samples are drawn directly (no sort). The quantile at ``s`` (noise ``sqrt(2/s)``) is
  scaled to ``sqrt(1/n + 1/m)``, so a 100k-row window costs no more to calibrate than a
  500-row one;
- categories: exact sizes, no scaling: multinomial draws of ``m`` and ``n`` rows from the
  reference's proportions.

>>> import numpy as np
>>> ref = np.sort(np.random.default_rng(0).normal(size=5000))
>>> q = numeric_null_quantile(ref, -3.0, 3.0, 1.0, size=1000, resamples=200, quantile=0.99)
>>> 0.02 < q < 0.15
True
>>> round(scale_to_window(q, size=1000, n_reference=5000, n_current=1000) / q, 3)
0.775
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
from numpy.typing import NDArray

from modelyard.monitoring.stats import jensenshannon_rows

__all__ = ["categorical_null_quantile", "numeric_null_quantile", "scale_to_window"]

_POOL: Final = 16_384


def numeric_null_quantile(
    reference: NDArray[np.float64],
    low: float,
    high: float,
    scale: float,
    *,
    size: int,
    resamples: int,
    quantile: float,
    seed: int = 0,
) -> float:
    """The ``quantile`` of the normalised Wasserstein distance between two reference samples.

    ``reference`` is sorted and NaN-free; both samples have ``size`` values.
    """
    if reference.size == 0 or size < 1:
        return math.nan
    rng = np.random.default_rng([seed, size, reference.size])
    # Draw from the reference's quantile function on a grid of at most _POOL values: the
    # same distribution to within 1/_POOL in probability, and small enough to stay in
    # the CPU cache while 2 x resamples x size values are gathered from it.
    grid = np.linspace(0, reference.size - 1, min(reference.size, _POOL)).round()
    pool = np.clip(reference[grid.astype(np.intp)], low, high)
    first = pool[_sorted_draws(rng, pool.size, resamples, size)]
    second = pool[_sorted_draws(rng, pool.size, resamples, size)]
    distances = np.mean(np.abs(first - second), axis=1) / scale
    return float(np.quantile(distances, quantile))


def _sorted_draws(rng: np.random.Generator, n: int, rows: int, size: int) -> NDArray[np.intp]:
    """``rows`` sorted samples of ``size`` indices in ``[0, n)``, drawn with replacement.

    Sorted uniforms are the normalised partial sums of exponentials (Renyi), so no sort
    is needed; indexing a sorted array with sorted indices gives sorted values.
    """
    sums = np.cumsum(rng.standard_exponential((rows, size + 1)), axis=1)
    uniforms = sums[:, :-1] / sums[:, -1:]
    return np.minimum((uniforms * n).astype(np.intp), n - 1)


def scale_to_window(value: float, *, size: int, n_reference: int, n_current: int) -> float:
    """A null quantile found for two samples of ``size`` rescaled to ``n`` vs ``m`` rows."""
    return value * math.sqrt((1.0 / n_reference + 1.0 / n_current) / (2.0 / size))


def categorical_null_quantile(
    counts: NDArray[np.float64],
    *,
    n_reference: int,
    n_current: int,
    resamples: int,
    quantile: float,
    seed: int = 0,
    window_counts: NDArray[np.float64] | None = None,
) -> float:
    """The ``quantile`` of the JS distance between multinomial draws from ``counts``.

    ``window_counts`` (default ``counts``) are the shares a window of the same population
    is expected to show on the same cells: for a category, with part of the mass moved
    to "unseen" (values the reference sample missed), which the reference never holds.

    >>> categorical_null_quantile(np.array([5.0, 5.0]), n_reference=10**6, n_current=10**6,
    ...     resamples=100, quantile=0.99) < 0.01
    True
    """
    total = float(np.sum(counts))
    if total <= 0 or n_reference < 1 or n_current < 1:
        return math.nan
    rng = np.random.default_rng([seed, n_reference, n_current])
    p = counts / total
    q = p if window_counts is None else window_counts / float(np.sum(window_counts))
    reference = rng.multinomial(n_reference, p, size=resamples).astype(np.float64)
    current = rng.multinomial(n_current, q, size=resamples).astype(np.float64)
    return float(np.quantile(jensenshannon_rows(reference, current), quantile))
