"""Gate statistics against independent oracles.

DeLong's structural components are recomputed by their definition (the Mann-Whitney
kernel over every positive/negative pair, O(n^2)); AUCs by sklearn; the paired test's
type-I error and the bootstrap's coverage by seeded simulation with binomial tolerances.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom, norm  # type: ignore[import-untyped]
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    f1_score,
    log_loss,
    mean_absolute_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
)

from modelyard.errors import InvalidInputError
from modelyard.gates import statistics
from modelyard.gates.statistics import (
    PairedComparison,
    auc_delong,
    binary_labels,
    group_auc,
    jackknife_diffs,
    metric_value,
    non_inferior,
    paired_bootstrap,
    paired_delong,
)


def stats_kernel_components(y: np.ndarray, s: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC, V10 (per positive), V01 (per negative) by the Mann-Whitney kernel over all pairs."""
    pos, neg = s[y], s[~y]
    psi = (pos[:, None] > neg[None, :]).astype(float) + 0.5 * (pos[:, None] == neg[None, :])
    return float(psi.mean()), psi.mean(axis=1), psi.mean(axis=0)


def stats_kernel_paired(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Difference of AUCs and its DeLong standard error from the O(n^2) components."""
    auc_a, v10_a, v01_a = stats_kernel_components(y, a)
    auc_b, v10_b, v01_b = stats_kernel_components(y, b)
    m, n = len(v10_a), len(v01_a)
    s10 = np.cov(np.vstack([v10_a, v10_b]), ddof=1) if m > 1 else np.zeros((2, 2))
    s01 = np.cov(np.vstack([v01_a, v01_b]), ddof=1) if n > 1 else np.zeros((2, 2))
    cov = s10 / m + s01 / n
    return auc_a - auc_b, math.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0))


@st.composite
def stats_samples(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels with both classes and two score vectors on few distinct values (many ties)."""
    n = draw(st.integers(4, 60))
    labels = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    labels[0], labels[1] = True, False
    grid = st.integers(0, draw(st.integers(1, 8))).map(float)
    a = draw(st.lists(grid, min_size=n, max_size=n))
    b = draw(st.lists(grid, min_size=n, max_size=n))
    return np.array(labels), np.array(a), np.array(b)


@settings(max_examples=150, deadline=None)
@given(stats_samples())
def test_fast_delong_equals_the_kernel_definition_with_ties(
    sample: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    y, a, b = sample
    auc, v10, v01 = stats_kernel_components(y, a)
    estimate = auc_delong(y, a)
    m, n = int(y.sum()), int((~y).sum())
    variance = (v10.var(ddof=1) / m if m > 1 else 0.0) + (v01.var(ddof=1) / n if n > 1 else 0.0)
    assert estimate.auc == pytest.approx(auc, abs=1e-12)
    assert estimate.auc == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert estimate.variance == pytest.approx(variance, abs=1e-12)
    diff, se = stats_kernel_paired(y, a, b)
    paired = paired_delong(y, a, b)
    assert paired.diff == pytest.approx(diff, abs=1e-12)
    assert paired.se == pytest.approx(se, abs=1e-12)
    assert paired.a == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert paired.b == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    if se > 0:
        assert paired.p_value == pytest.approx(2 * norm.sf(abs(diff) / se), abs=1e-12)
        assert paired.high - paired.low == pytest.approx(2 * norm.ppf(0.975) * se, abs=1e-12)


def test_delong_interval_and_one_class_and_bad_scores() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    s = y + rng.normal(size=500)
    estimate = auc_delong(y, s, alpha=0.1)
    half = norm.ppf(0.95) * math.sqrt(estimate.variance)
    assert estimate.low == pytest.approx(estimate.auc - half)
    assert estimate.high == pytest.approx(estimate.auc + half)
    assert all(math.isnan(v) for v in auc_delong(np.ones(5), np.arange(5.0)))
    assert math.isnan(paired_delong(np.zeros(5), np.arange(5.0), np.arange(5.0)).diff)
    with pytest.raises(InvalidInputError, match=r"finite scores.*row 2"):
        auc_delong([0, 1, 1], [0.1, 0.2, math.nan])
    with pytest.raises(InvalidInputError, match="3 scores"):
        paired_delong([0, 1, 1], [0.1, 0.2, 0.3], [0.1, 0.2])
    with pytest.raises(InvalidInputError, match="binary labels"):
        auc_delong([0, 1, 2], [0.1, 0.2, 0.3])


def test_binary_labels_follow_the_positive_class() -> None:
    assert binary_labels(["no", "yes", "no"]).tolist() == [False, True, False]
    assert binary_labels([0, 1, 1], positive="1").tolist() == [False, True, True]
    assert binary_labels([0.0, 1.0], positive="1").tolist() == [False, True]
    assert binary_labels([True, False], positive="True").tolist() == [True, False]


def test_paired_delong_type_one_error_of_equal_models_stays_near_alpha() -> None:
    """Two noisy copies of one latent score have equal AUCs: rejections ~ Binomial(400, 0.05)."""
    rng = np.random.default_rng(2024)
    reps, rows, alpha = 400, 300, 0.05
    rejections = 0
    for _ in range(reps):
        latent = rng.normal(size=rows)
        y = rng.uniform(size=rows) < 1 / (1 + np.exp(-2 * latent))
        a = latent + rng.normal(scale=0.7, size=rows)
        b = latent + rng.normal(scale=0.7, size=rows)
        rejections += paired_delong(y, a, b).p_value < alpha
    low, high = binom.ppf([0.001, 0.999], reps, alpha)
    assert low <= rejections <= high, rejections


def test_paired_delong_detects_a_worse_model() -> None:
    rng = np.random.default_rng(5)
    latent = rng.normal(size=4000)
    y = rng.uniform(size=4000) < 1 / (1 + np.exp(-2 * latent))
    good, bad = latent + rng.normal(scale=0.3, size=4000), latent + rng.normal(scale=2, size=4000)
    comparison = paired_delong(y, bad, good)
    assert comparison.high < 0 and comparison.p_value < 1e-6
    assert not non_inferior(comparison, 0.01, higher_is_better=True)
    assert non_inferior(paired_delong(y, good, bad), 0.01, higher_is_better=True)


@pytest.mark.parametrize(
    ("name", "oracle"),
    [
        ("log_loss", log_loss),
        ("brier", brier_score_loss),
        ("accuracy", lambda y, p: accuracy_score(y, p > 0.5)),
        ("f1", lambda y, p: f1_score(y, p > 0.5)),
        ("precision", lambda y, p: precision_score(y, p > 0.5)),
        ("recall", lambda y, p: recall_score(y, p > 0.5)),
        ("auc", roc_auc_score),
    ],
)
def test_row_metrics_equal_sklearn(name: str, oracle: object) -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 1000)
    p = np.clip(0.3 * y + rng.uniform(size=1000) * 0.7, 0.01, 0.99)
    assert metric_value(name, y, p) == pytest.approx(oracle(y, p), abs=1e-12)  # type: ignore[operator]


def test_regression_metrics_equal_sklearn() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=500)
    p = y + rng.normal(scale=0.5, size=500)
    assert metric_value("mae", y, p) == pytest.approx(mean_absolute_error(y, p), abs=1e-12)
    assert metric_value("rmse", y, p) == pytest.approx(math.sqrt(np.mean((y - p) ** 2)))
    assert metric_value("r2", y, p) == pytest.approx(r2_score(y, p), abs=1e-12)
    with pytest.raises(InvalidInputError, match="metric"):
        metric_value("auroc", y, p)


def test_group_auc_equals_sklearn_per_group_with_ties() -> None:
    rng = np.random.default_rng(9)
    rows = 3000
    codes = rng.integers(0, 6, rows).astype(np.intp)
    y = rng.uniform(size=rows) < 0.3
    s = np.round(rng.normal(size=rows) + y * (codes / 3), 1)
    y[codes == 5] = False  # one class only: NaN
    auc = group_auc(y, s, codes, 7)  # group 6 empty: NaN
    for g in range(5):
        assert auc[g] == pytest.approx(roc_auc_score(y[codes == g], s[codes == g]), abs=1e-12)
    assert math.isnan(auc[5]) and math.isnan(auc[6])


@settings(max_examples=100, deadline=None)
@given(stats_samples(), st.integers(1, 4))
def test_group_auc_equals_the_kernel_per_group(
    sample: tuple[np.ndarray, np.ndarray, np.ndarray], groups: int
) -> None:
    y, a, b = sample
    codes = (b.astype(np.intp)) % groups
    order = np.argsort(a, kind="stable")
    for fast in (group_auc(y, a, codes, groups), group_auc(y, a, codes, groups, score_order=order)):
        for g in range(groups):
            mask = codes == g
            if y[mask].all() or not y[mask].any():
                assert math.isnan(fast[g])
            else:
                assert fast[g] == pytest.approx(
                    stats_kernel_components(y[mask], a[mask])[0], abs=1e-12
                )


@pytest.mark.parametrize("cells", [4_000_000, 1_000])  # one chunk of replicates, or many
def test_bootstrap_named_metric_equals_the_callable_path(
    cells: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vectorised resampling draws the same rows as the per-replicate loop."""
    monkeypatch.setattr(statistics, "_CELLS_PER_CHUNK", cells)
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 400)
    a = np.clip(0.4 * y + rng.uniform(size=400) * 0.6, 0.01, 0.99)
    b = np.clip(0.2 * y + rng.uniform(size=400) * 0.8, 0.01, 0.99)
    named = paired_bootstrap(y, a, b, "brier", n_boot=200, seed=7)
    called = paired_bootstrap(y, a, b, brier_score_loss, n_boot=200, seed=7)
    assert named.diff == pytest.approx(brier_score_loss(y, a) - brier_score_loss(y, b))
    assert (named.low, named.high, named.se) == pytest.approx((called.low, called.high, called.se))
    same = paired_bootstrap(y, a, a, "log_loss", n_boot=50)
    assert (same.diff, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_bootstrap_interval_covers_the_true_difference_at_about_the_nominal_rate() -> None:
    """Brier of two fixed score maps: the population difference from 2M rows, 300 samples."""
    rng = np.random.default_rng(11)

    def draw(rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = rng.normal(size=rows)
        y = (rng.uniform(size=rows) < 1 / (1 + np.exp(-2 * x))).astype(int)
        return y, 1 / (1 + np.exp(-2 * x)), 1 / (1 + np.exp(-0.8 * x - 0.3))

    y, a, b = draw(2_000_000)
    truth = float(np.mean((a - y) ** 2) - np.mean((b - y) ** 2))
    reps, covered = 300, 0
    for i in range(reps):
        comparison = paired_bootstrap(*draw(400), "brier", n_boot=400, seed=i)
        covered += comparison.low <= truth <= comparison.high
    low, high = binom.ppf([0.001, 0.999], reps, 0.95)
    assert low - 6 <= covered <= high, covered  # percentile intervals run slightly narrow


def test_bca_interval_covers_the_true_difference_at_about_the_nominal_rate() -> None:
    """Log loss (skewed per-row values) of two score maps; BCa intervals, 300 samples."""
    rng = np.random.default_rng(12)

    def draw(rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = rng.normal(size=rows)
        y = (rng.uniform(size=rows) < 1 / (1 + np.exp(-2 * x))).astype(int)
        return y, 1 / (1 + np.exp(-2.5 * x)), 1 / (1 + np.exp(-0.8 * x - 0.3))

    y, a, b = draw(2_000_000)
    truth = float(log_loss(y, a) - log_loss(y, b))
    reps, covered = 300, 0
    for i in range(reps):
        comparison = paired_bootstrap(*draw(400), "log_loss", n_boot=400, seed=i, interval="bca")
        covered += comparison.low <= truth <= comparison.high
    low, high = binom.ppf([0.001, 0.999], reps, 0.95)
    assert low - 6 <= covered <= high, covered


def test_jackknife_equals_leaving_each_row_out() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 60)
    a, b = rng.uniform(0.05, 0.95, 60), rng.uniform(0.05, 0.95, 60)
    for name in ("log_loss", "f1", "brier"):
        fast = jackknife_diffs(name, y, a, b)
        keep = ~np.eye(60, dtype=bool)
        slow = [metric_value(name, y[k], a[k]) - metric_value(name, y[k], b[k]) for k in keep]
        assert fast == pytest.approx(np.array(slow), abs=1e-12)


def test_bootstrap_inputs_are_checked() -> None:
    with pytest.raises(InvalidInputError, match="interval"):
        paired_bootstrap([0, 1], [0.1, 0.2], [0.1, 0.2], "brier", interval="normal")
    with pytest.raises(InvalidInputError, match="BCa"):
        paired_bootstrap([0, 1], [0.1, 0.2], [0.1, 0.2], brier_score_loss, interval="bca")
    with pytest.raises(InvalidInputError, match="n_boot"):
        paired_bootstrap([0, 1], [0.1, 0.2], [0.1, 0.2], "brier", n_boot=1)
    with pytest.raises(InvalidInputError, match="metric"):
        paired_bootstrap([0, 1], [0.1, 0.2], [0.1, 0.2], "nope")


def test_non_inferiority_orients_by_metric_direction() -> None:
    gain = PairedComparison(0.01, -0.005, 0.02, 0.3, 0.01)
    assert non_inferior(gain, 0.01, higher_is_better=True)
    assert not non_inferior(gain, 0.004, higher_is_better=True)
    assert not non_inferior(gain, 0.01, higher_is_better=False)  # a loss that rose
    assert non_inferior(gain, 0.03, higher_is_better=False)
    assert not non_inferior(PairedComparison(*(math.nan,) * 5), 0.1, higher_is_better=True)
    with pytest.raises(InvalidInputError, match="margin"):
        non_inferior(gain, -1, higher_is_better=True)
