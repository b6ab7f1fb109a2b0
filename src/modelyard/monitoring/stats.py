"""The pure statistics of drift detection, each equal to scipy's on the same inputs.

Numeric columns are compared as sorted arrays: the reference is sorted once when it is
prepared, a window once per comparison, and everything else is a merge, ``searchsorted``
and cumulative sums (no Python loop over rows):

- ``ks_2samp_sorted``: the two-sample Kolmogorov-Smirnov statistic and the p-value
  ``scipy.stats.ks_2samp(method="auto")`` gives (exact below 10,000 rows a side, else
  Smirnov's asymptotic distribution, through scipy's own functions);
- ``wasserstein_sorted``: ``scipy.stats.wasserstein_distance`` of the values clipped to
  ``[low, high]`` (winsorised);
- ``psi``: the population stability index of two histograms; an empty bin counts as the
  proportion ``epsilon`` (default ``1e-4``) so the index stays finite;
- ``chi2_2xk``: ``scipy.stats.chi2_contingency`` of a 2xK table (Yates' correction for a
  2x2 table, as scipy), with all-zero columns dropped;
- ``jensenshannon``: ``scipy.spatial.distance.jensenshannon`` in base 2, so the distance
  lies in [0, 1];
- ``adjust_pvalues``: Bonferroni, Holm or Benjamini-Hochberg across columns.

>>> import numpy as np
>>> a, b = np.arange(10.0), np.arange(5.0, 15.0)
>>> ks = ks_2samp_sorted(a, b)
>>> float(ks.statistic), round(float(ks.pvalue), 4)
(0.5, 0.1678)
>>> wasserstein_sorted(a, b)
5.0
>>> round(jensenshannon(np.array([1, 0]), np.array([0, 1])), 6)
1.0
"""

from __future__ import annotations

import math
from typing import Final, Literal, NamedTuple, TypeAlias

import numpy as np
from numpy.typing import NDArray
from scipy import special  # type: ignore[import-untyped]
from scipy.stats import distributions  # type: ignore[import-untyped]

# scipy's exact two-sample KS path: the same function ks_2samp calls, so p agrees to the bit.
from scipy.stats._stats_py import _attempt_exact_2kssamp  # type: ignore[import-untyped]

from modelyard.errors import InvalidInputError

__all__ = [
    "KSResult",
    "ChiSquareResult",
    "Correction",
    "PSI_EPSILON",
    "adjust_pvalues",
    "chi2_2xk",
    "jensenshannon",
    "jensenshannon_rows",
    "ks_and_wasserstein",
    "ks_2samp_sorted",
    "ks_pvalue",
    "pool_sparse",
    "psi",
    "robust_scale",
    "wasserstein_sorted",
]

Floats: TypeAlias = NDArray[np.float64]
Correction: TypeAlias = Literal["bonferroni", "holm", "bh"]

PSI_EPSILON: Final = 1e-4
# ks_2samp(method="auto") is exact while both samples have at most this many values.
_MAX_EXACT_N: Final = 10_000


class KSResult(NamedTuple):
    """The KS statistic (largest gap between the two ECDFs) and its two-sided p-value."""

    statistic: float
    pvalue: float


class ChiSquareResult(NamedTuple):
    """Pearson's chi-square statistic, its degrees of freedom and p-value."""

    statistic: float
    dof: int
    pvalue: float


class _Merged(NamedTuple):
    values: Floats
    """Both samples' values, sorted (the reference's first among equal values)."""
    gap: Floats
    """ECDF of the first sample minus ECDF of the second at each merged value."""
    ends: NDArray[np.bool_]
    """True at the last of a run of equal values, where the ECDFs are evaluated."""


def _merge(a: Floats, b: Floats) -> _Merged:
    """Merge two sorted arrays by position arithmetic instead of a second sort."""
    n, m = a.size, b.size
    # A value of b lands after every value of a that is <= it (a first among ties).
    position = np.searchsorted(a, b, side="right") + np.arange(m)
    from_b = np.zeros(n + m, dtype=bool)
    from_b[position] = True
    values = np.empty(n + m, dtype=np.float64)
    values[position] = b
    values[~from_b] = a
    # In place, to keep the temporaries of a million-row column few; counts below 2**53
    # are exact in float64, so the ECDFs equal scipy's count / size to the bit.
    count_b = np.cumsum(from_b, dtype=np.float64)
    gap = np.arange(1.0, n + m + 1.0)
    gap -= count_b
    gap /= n
    count_b /= m
    gap -= count_b
    del count_b
    ends = np.empty(n + m, dtype=bool)
    np.not_equal(values[1:], values[:-1], out=ends[:-1])
    ends[-1] = True
    return _Merged(values, gap, ends)


def _require(a: Floats, b: Floats, what: str) -> None:
    if a.size == 0 or b.size == 0:
        raise InvalidInputError(
            f"Expected two non-empty samples, got sizes {a.size} and {b.size}", loc=what
        )


def ks_pvalue(statistic: float, n1: int, n2: int) -> KSResult:
    """The two-sided p-value of a KS statistic as ``ks_2samp(method="auto")`` computes it.

    Returns the statistic as scipy reports it (rounded to the lattice of attainable
    values on the exact path) with the p-value.

    >>> round(ks_pvalue(0.5, 10, 10).pvalue, 6)
    0.167821
    """
    d = float(statistic)
    if max(n1, n2) <= _MAX_EXACT_N:
        success, d, prob = _attempt_exact_2kssamp(n1, n2, math.gcd(n1, n2), d, "two-sided")
        if success:
            return KSResult(float(d), float(np.clip(prob, 0.0, 1.0)))
    # Smirnov's asymptotic distribution, with scipy's effective sample size.
    large, small = max(float(n1), float(n2)), min(float(n1), float(n2))
    effective = large * small / (large + small)
    prob = distributions.kstwo.sf(d, np.round(effective))
    return KSResult(float(d), float(np.clip(prob, 0.0, 1.0)))


def ks_2samp_sorted(a: Floats, b: Floats) -> KSResult:
    """``scipy.stats.ks_2samp(a, b)`` for two sorted float arrays (NaN-free).

    >>> ks_2samp_sorted(np.array([1.0, 2.0]), np.array([1.0, 2.0])).statistic
    0.0
    """
    _require(a, b, "ks")
    merged = _merge(a, b)
    return ks_pvalue(float(np.max(np.abs(merged.gap[merged.ends]))), a.size, b.size)


def wasserstein_sorted(
    a: Floats, b: Floats, low: float = -math.inf, high: float = math.inf
) -> float:
    """``scipy.stats.wasserstein_distance(clip(a), clip(b))`` for sorted float arrays.

    Clipping to ``[low, high]`` (winsorising) keeps one extreme value from dominating;
    infinities are clipped like any value, so give finite limits when they may occur.

    >>> wasserstein_sorted(np.array([0.0, 1.0]), np.array([0.0, 1e300]), 0.0, 2.0)
    0.5
    """
    _require(a, b, "wasserstein")
    return _wasserstein_merged(_merge(a, b), low, high)


def _wasserstein_merged(merged: _Merged, low: float, high: float) -> float:
    clipped = np.clip(merged.values, low, high)
    # Between two merged values both ECDFs are flat, so the integral of |F - G| is a sum;
    # inside a run of equal values the step is zero, whatever the partial gap there.
    steps = np.diff(clipped)
    return float(np.sum(np.abs(merged.gap[:-1]) * steps))


def ks_and_wasserstein(a: Floats, b: Floats, low: float, high: float) -> tuple[KSResult, float]:
    """Both ``ks_2samp_sorted`` and ``wasserstein_sorted`` from one merge of the arrays."""
    _require(a, b, "ks")
    merged = _merge(a, b)
    ks = ks_pvalue(float(np.max(np.abs(merged.gap[merged.ends]))), a.size, b.size)
    return ks, _wasserstein_merged(merged, low, high)


def psi(
    expected: NDArray[np.float64] | NDArray[np.int64],
    actual: NDArray[np.float64] | NDArray[np.int64],
    epsilon: float = PSI_EPSILON,
) -> float:
    """Population stability index of two histograms over the same bins.

    ``sum((q - p) * ln(q / p))`` over the bins' proportions ``p`` (expected, the
    reference) and ``q`` (actual); a proportion of zero is replaced by ``epsilon``.

    >>> round(psi(np.array([50, 50]), np.array([40, 60])), 6)
    0.040547
    """
    p = np.asarray(expected, dtype=np.float64)
    q = np.asarray(actual, dtype=np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        return math.nan
    p = np.maximum(p / p.sum(), epsilon)
    q = np.maximum(q / q.sum(), epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def jensenshannon(
    p: NDArray[np.float64] | NDArray[np.int64], q: NDArray[np.float64] | NDArray[np.int64]
) -> float:
    """``scipy.spatial.distance.jensenshannon(p, q, base=2)``: 0 (same) to 1 (disjoint).

    >>> jensenshannon(np.array([1, 1]), np.array([2, 2]))
    0.0
    """
    return float(
        jensenshannon_rows(
            np.asarray(p, dtype=np.float64)[None, :], np.asarray(q, dtype=np.float64)[None, :]
        )[0]
    )


def jensenshannon_rows(p: Floats, q: Floats) -> Floats:
    """Base-2 Jensen-Shannon distance between matching rows of two count matrices."""
    with np.errstate(invalid="ignore", divide="ignore"):
        p = p / np.sum(p, axis=1, keepdims=True)
        q = q / np.sum(q, axis=1, keepdims=True)
        mid = (p + q) / 2.0
        js = np.sum(special.rel_entr(p, mid), axis=1) + np.sum(special.rel_entr(q, mid), axis=1)
    js /= np.log(2.0)
    return np.asarray(np.sqrt(np.maximum(js, 0.0) / 2.0), dtype=np.float64)


def chi2_2xk(
    table: NDArray[np.float64] | NDArray[np.int64], *, correction: bool = True
) -> ChiSquareResult:
    """``scipy.stats.chi2_contingency`` of a 2xK table, all-zero columns dropped first.

    A table with fewer than two non-empty columns or an empty row has nothing to test:
    statistic 0, p-value 1.

    >>> chi2_2xk(np.array([[10, 0, 5], [10, 0, 5]])).pvalue
    1.0
    """
    observed = np.asarray(table, dtype=np.float64)
    if observed.ndim != 2 or observed.shape[0] != 2:
        raise InvalidInputError(f"Expected a 2xK table, got shape {observed.shape}", loc="table")
    observed = observed[:, observed.sum(axis=0) > 0]
    rows = observed.sum(axis=1)
    if observed.shape[1] < 2 or np.any(rows <= 0):
        return ChiSquareResult(0.0, max(observed.shape[1] - 1, 0), 1.0)
    expected = np.outer(rows, observed.sum(axis=0)) / observed.sum()
    dof = observed.shape[1] - 1
    if dof == 1 and correction:  # Yates, exactly as scipy applies it
        diff = expected - observed
        observed = observed + np.minimum(0.5, np.abs(diff)) * np.sign(diff)
    statistic = float(np.sum((observed - expected) ** 2 / expected))
    return ChiSquareResult(statistic, dof, float(distributions.chi2.sf(statistic, dof)))


def pool_sparse(table: NDArray[np.float64], minimum: float = 5.0) -> NDArray[np.float64]:
    """A 2xK table with its sparse columns grouped, so the chi-square approximation holds.

    A column is sparse when its expected count in the smaller row is below ``minimum``
    (with a large reference and a small window, a column needs many reference rows).
    The sparse columns are grouped in their order (for a category: by reference
    frequency) into cells whose expected count reaches ``minimum``, the remainder joining
    the last group, and appended after the other columns: a long tail still counts,
    coarsened, instead of vanishing into one cell.

    >>> pool_sparse(np.array([[50.0, 1, 2, 40], [45.0, 0, 1, 60]])).tolist()
    [[50.0, 40.0, 3.0], [45.0, 60.0, 1.0]]
    >>> pool_sparse(np.array([[9.0, 3, 3, 3, 3, 1], [9.0, 3, 3, 3, 3, 1]])).tolist()
    [[9.0, 6.0, 7.0], [9.0, 6.0, 7.0]]
    """
    totals = table.sum(axis=0)
    grand = float(totals.sum())
    if grand <= 0:
        return table
    expected = totals * float(table.sum(axis=1).min()) / grand
    sparse = expected < minimum
    if sparse.sum() < 2:
        return table
    groups: list[list[int]] = []
    group: list[int] = []
    held = 0.0
    for column in np.flatnonzero(sparse).tolist():
        group.append(column)
        held += float(expected[column])
        if held >= minimum:
            groups.append(group)
            group, held = [], 0.0
    if group:
        if groups:
            groups[-1].extend(group)
        else:
            groups.append(group)
    pooled = [table[:, g].sum(axis=1) for g in groups]
    return np.column_stack([table[:, ~sparse], *pooled])


def robust_scale(mad: float | None, iqr: float | None, std: float | None) -> float:
    """The first positive, finite one of MAD (normal-scaled), ``IQR / 1.349``, std, else 1.

    >>> robust_scale(0.0, 2.698, 5.0)
    2.0
    """
    for value in (mad, None if iqr is None else iqr / 1.349, std):
        if value is not None and math.isfinite(value) and value > 0:
            return float(value)
    return 1.0


def adjust_pvalues(pvalues: Floats, method: Correction = "holm") -> Floats:
    """p-values adjusted for testing them all at once; NaN stays NaN and is not counted.

    ``"bonferroni"`` and ``"holm"`` control the family-wise error rate, ``"bh"``
    (Benjamini-Hochberg) the false discovery rate.

    >>> adjust_pvalues(np.array([0.01, 0.04, np.nan]), "holm").tolist()
    [0.02, 0.04, nan]
    """
    p = np.asarray(pvalues, dtype=np.float64)
    result = np.full(p.shape, np.nan)
    valid = ~np.isnan(p)
    values = p[valid]
    k = values.size
    if k == 0:
        return result
    order = np.argsort(values, kind="stable")
    ranked = values[order]
    if method == "bonferroni":
        adjusted = ranked * k
    elif method == "holm":
        adjusted = np.maximum.accumulate(ranked * (k - np.arange(k)))
    elif method == "bh":
        adjusted = np.minimum.accumulate((ranked * k / np.arange(1, k + 1))[::-1])[::-1]
    else:
        raise InvalidInputError(
            f"Expected 'bonferroni', 'holm' or 'bh', got {method!r}", loc="correction"
        )
    out = np.empty(k)
    out[order] = np.minimum(adjusted, 1.0)
    result[valid] = out
    return result
