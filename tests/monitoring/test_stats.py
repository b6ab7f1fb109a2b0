"""The statistics against their oracles: scipy, or brute force in numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats  # type: ignore[import-untyped]
from scipy.spatial import distance  # type: ignore[import-untyped]

from modelyard.errors import InvalidInputError
from modelyard.monitoring.calibration import numeric_null_quantile, scale_to_window
from modelyard.monitoring.stats import (
    adjust_pvalues,
    chi2_2xk,
    jensenshannon,
    ks_2samp_sorted,
    ks_and_wasserstein,
    psi,
    robust_scale,
    wasserstein_sorted,
)

SIZES = [
    (1, 1),
    (3, 8),
    (20, 20),
    (37, 100),
    (1000, 1500),
    (500, 10_000),
    (9999, 10_000),
    (20_000, 3000),
    (60_000, 60_000),
]


def _close(value: float, expected: float) -> None:
    assert value == pytest.approx(expected, rel=1e-9, abs=1e-12)


def _samples(rng: np.random.Generator, n: int, m: int, ties: bool) -> tuple[np.ndarray, ...]:
    a = rng.normal(size=n)
    b = rng.normal(0.05, 1.1, size=m)
    if ties:  # few distinct values: many ties within and across samples
        a, b = np.round(a * 2), np.round(b * 2)
    return a, b


@pytest.mark.parametrize(("n", "m"), SIZES)
@pytest.mark.parametrize("ties", [False, True])
def test_ks_equals_scipy(n: int, m: int, ties: bool) -> None:
    a, b = _samples(np.random.default_rng(n * 31 + m), n, m, ties)
    mine = ks_2samp_sorted(np.sort(a), np.sort(b))
    theirs = stats.ks_2samp(a, b, method="auto")
    _close(mine.statistic, float(theirs.statistic))
    _close(mine.pvalue, float(theirs.pvalue))


def test_ks_of_a_clear_shift_matches_scipy_deep_in_the_tail() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=3000), rng.normal(0.3, 1.0, size=2000)
    mine = ks_2samp_sorted(np.sort(a), np.sort(b))
    theirs = stats.ks_2samp(a, b)
    assert mine.pvalue < 1e-10
    _close(mine.pvalue, float(theirs.pvalue))


@pytest.mark.parametrize(("n", "m"), SIZES)
@pytest.mark.parametrize("ties", [False, True])
def test_wasserstein_equals_scipy_on_winsorised_values(n: int, m: int, ties: bool) -> None:
    a, b = _samples(np.random.default_rng(n + 7 * m), n, m, ties)
    low, high = np.quantile(a, [0.001, 0.999])
    expected = stats.wasserstein_distance(np.clip(a, low, high), np.clip(b, low, high))
    _close(wasserstein_sorted(np.sort(a), np.sort(b), low, high), float(expected))
    _close(wasserstein_sorted(np.sort(a), np.sort(b)), float(stats.wasserstein_distance(a, b)))
    ks, both = ks_and_wasserstein(np.sort(a), np.sort(b), low, high)
    _close(both, float(expected))
    _close(ks.statistic, float(stats.ks_2samp(a, b).statistic))


def test_wasserstein_with_infinities_clipped() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(size=500)
    b = np.append(rng.normal(size=300), [np.inf, -np.inf, 1e300])
    low, high = -2.0, 2.5
    expected = stats.wasserstein_distance(np.clip(a, low, high), np.clip(b, low, high))
    _close(wasserstein_sorted(np.sort(a), np.sort(b), low, high), float(expected))


def _brute_psi(p_counts: np.ndarray, q_counts: np.ndarray, eps: float) -> float:
    total = 0.0
    p_sum, q_sum = p_counts.sum(), q_counts.sum()
    for p_count, q_count in zip(p_counts, q_counts, strict=True):
        p = p_count / p_sum if p_count else eps
        q = q_count / q_sum if q_count else eps
        total += (q - p) * math.log(q / p)
    return total


@pytest.mark.parametrize("seed", range(5))
def test_psi_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = rng.integers(0, 50, size=12)
    q = rng.integers(0, 50, size=12)
    p[seed % 12] = 0  # an empty bin on each side
    q[(seed + 3) % 12] = 0
    _close(psi(p, q), _brute_psi(p, q, 1e-4))
    _close(psi(p, q, 1e-3), _brute_psi(p, q, 1e-3))
    assert psi(p, p) == 0.0


@pytest.mark.parametrize("k", [2, 3, 7, 40])
@pytest.mark.parametrize("seed", range(4))
def test_chi2_equals_scipy(k: int, seed: int) -> None:
    rng = np.random.default_rng(seed * 100 + k)
    table = rng.integers(0, 200, size=(2, k)) * rng.integers(0, 2, size=(1, k))
    table[:, 0] += 5  # at least one non-empty column
    table[:, -1] += 3
    kept = table[:, table.sum(axis=0) > 0]
    for correction in (True, False):
        expected = stats.chi2_contingency(kept, correction=correction)
        mine = chi2_2xk(table, correction=correction)
        _close(mine.statistic, float(expected.statistic))
        _close(mine.pvalue, float(expected.pvalue))
        assert mine.dof == expected.dof


def test_chi2_with_nothing_to_test() -> None:
    assert chi2_2xk(np.array([[5, 0], [7, 0]])).pvalue == 1.0
    assert chi2_2xk(np.array([[5, 3], [0, 0]])).pvalue == 1.0
    with pytest.raises(InvalidInputError, match="2xK"):
        chi2_2xk(np.ones((3, 3)))


@pytest.mark.parametrize("seed", range(6))
def test_jensenshannon_equals_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = rng.integers(0, 100, size=9).astype(float)
    q = rng.integers(0, 100, size=9).astype(float)
    p[seed] = 0.0
    _close(jensenshannon(p, q), float(distance.jensenshannon(p, q, base=2)))


@pytest.mark.parametrize("seed", range(5))
def test_pvalue_adjustments(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 0.2, size=15) ** 2
    p[3] = p[7]  # a tie
    np.testing.assert_allclose(
        adjust_pvalues(p, "bh"), stats.false_discovery_control(p, method="bh"), rtol=1e-12
    )
    np.testing.assert_allclose(adjust_pvalues(p, "bonferroni"), np.minimum(p * 15, 1.0))
    # Holm, brute force: the step-down maximum over the sorted p-values.
    order = np.argsort(p, kind="stable")
    holm = np.empty(15)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, (15 - rank) * p[index])
        holm[index] = min(running, 1.0)
    np.testing.assert_allclose(adjust_pvalues(p, "holm"), holm, rtol=1e-12)


def test_adjustment_skips_nan_and_rejects_unknown_methods() -> None:
    adjusted = adjust_pvalues(np.array([0.01, np.nan, 0.02]), "bonferroni")
    assert np.isnan(adjusted[1])
    np.testing.assert_allclose(adjusted[[0, 2]], [0.02, 0.04])
    with pytest.raises(InvalidInputError, match="holm"):
        adjust_pvalues(np.array([0.1]), "sidak")  # type: ignore[arg-type]


def test_robust_scale_falls_back() -> None:
    assert robust_scale(2.0, 4.0, 9.0) == 2.0
    assert robust_scale(0.0, 1.349, 9.0) == pytest.approx(1.0)
    assert robust_scale(0.0, 0.0, 3.0) == 3.0
    assert robust_scale(None, None, None) == 1.0


def test_empty_samples_are_invalid() -> None:
    with pytest.raises(InvalidInputError):
        ks_2samp_sorted(np.empty(0), np.ones(3))


def test_null_quantile_follows_the_square_root_law() -> None:
    rng = np.random.default_rng(0)
    reference = np.sort(rng.normal(size=200_000))
    small = numeric_null_quantile(
        reference, -5, 5, 1.0, size=250, resamples=400, quantile=0.99, seed=1
    )
    large = numeric_null_quantile(
        reference, -5, 5, 1.0, size=1000, resamples=400, quantile=0.99, seed=1
    )
    # Quadrupling the size halves the quantile, within resampling noise.
    predicted = scale_to_window(small, size=250, n_reference=1000, n_current=1000)
    assert predicted == pytest.approx(large, rel=0.2)


def test_sorted_mad_equals_numpy_on_ties_and_any_centre() -> None:
    from modelyard.monitoring.columns import sorted_mad

    rng = np.random.default_rng(17)
    for trial in range(2000):
        n = int(rng.integers(1, 200))
        if trial % 2:
            x = np.sort(rng.integers(-4, 5, size=n).astype(np.float64))  # many ties
        else:
            x = np.sort(rng.normal(size=n))
        centre = float(np.median(x)) if trial % 3 else float(rng.normal())
        assert sorted_mad(x, centre) == float(np.median(np.abs(x - centre)))
