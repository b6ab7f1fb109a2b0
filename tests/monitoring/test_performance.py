"""Performance metrics with intervals, and the CBPE estimate, against independent oracles.

sklearn gives the point values; DeLong's variance is recomputed here by brute force
(placement values over every positive/negative pair), Wilson's interval by scipy, and
the CBPE estimate by its definition over every pair of rows.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest, norm  # type: ignore[import-untyped]
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    roc_auc_score,
)

from modelyard.errors import InvalidInputError
from modelyard.monitoring.performance import (
    accuracy,
    calibration_error,
    classification_window,
    estimated_accuracy,
    estimated_auc,
    metric_value,
    regression_window,
    roc_auc,
)

Z = norm.ppf(0.975)


def delong_reference(y: np.ndarray, s: np.ndarray) -> tuple[float, float, float]:
    """AUC and its 95% interval from placement values over all pairs (O(n*m))."""
    pos, neg = s[y == 1], s[y == 0]
    psi = (pos[:, None] > neg[None, :]).astype(float) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    auc = psi.mean()
    se = math.sqrt(v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg))
    return auc, max(0.0, auc - Z * se), min(1.0, auc + Z * se)


def cbpe_reference(p: np.ndarray) -> float:
    """Expected AUC if p are calibrated: every (i, j) pair weighted p_i (1 - p_j)."""
    w = p[:, None] * (1 - p)[None, :]
    order = (p[:, None] > p[None, :]) + 0.5 * (p[:, None] == p[None, :])
    return float((w * order).sum() / (p.sum() * (1 - p).sum()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_and_its_delong_interval_match_references_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=300)
    s = np.round(rng.normal(size=300) + 0.8 * y, 1).astype(np.float64)  # many ties
    assert len(np.unique(s)) < 150
    got = roc_auc(y, s)
    assert got.value == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    auc, low, high = delong_reference(y, s)
    assert got.value == pytest.approx(auc, abs=1e-12)
    assert got.low == pytest.approx(low, abs=1e-9)
    assert got.high == pytest.approx(high, abs=1e-9)
    assert got.low < got.value < got.high


def test_roc_auc_is_nan_without_both_classes_and_clipped_to_0_1() -> None:
    assert all(math.isnan(v) for v in vars(roc_auc(np.ones(5), np.arange(5.0))).values())
    perfect = roc_auc(np.array([0, 0, 0, 1, 1, 1]), np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]))
    assert (perfect.value, perfect.high) == (1.0, 1.0)
    assert perfect.to_dict() == {"value": 1.0, "low": 1.0, "high": 1.0}
    assert roc_auc(np.ones(3), np.arange(3.0)).to_dict() == {
        "value": None,
        "low": None,
        "high": None,
    }


def test_delong_interval_covers_the_true_auc_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(12345)
    d = 1.0
    true_auc = norm.cdf(d / math.sqrt(2))  # binormal, unit variances
    covered = 0
    runs = 200
    for _ in range(runs):
        pos = rng.normal(d, 1.0, size=60)
        neg = rng.normal(0.0, 1.0, size=80)
        got = roc_auc(np.r_[np.ones(60), np.zeros(80)], np.r_[pos, neg])
        covered += got.low <= true_auc <= got.high
    assert 0.88 <= covered / runs <= 0.99


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (37, 50), (50, 50), (412, 1000), (1, 1)])
def test_accuracy_interval_is_wilsons(k: int, n: int) -> None:
    correct = np.r_[np.ones(k, dtype=bool), np.zeros(n - k, dtype=bool)]
    got = accuracy(correct)
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert got.value == pytest.approx(k / n, abs=1e-15)
    assert got.low == pytest.approx(ci.low, abs=1e-12)
    assert got.high == pytest.approx(ci.high, abs=1e-12)


def test_accuracy_of_nothing_is_nan() -> None:
    assert math.isnan(accuracy(np.array([], dtype=bool)).value)


def test_estimated_auc_is_the_expected_auc_of_calibrated_scores() -> None:
    rng = np.random.default_rng(8)
    p = np.round(rng.beta(2, 3, size=400), 2)  # ties included
    assert estimated_auc(p) == pytest.approx(cbpe_reference(p), abs=1e-12)
    assert math.isnan(estimated_auc(np.zeros(5)))
    assert math.isnan(estimated_auc(np.ones(5)))
    assert math.isnan(estimated_auc(np.array([])))


def test_estimated_auc_holds_for_calibrated_scores_and_misses_for_miscalibrated_ones() -> None:
    rng = np.random.default_rng(21)
    p = rng.uniform(size=5_000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    realised = roc_auc(y, p)
    assert realised.low < estimated_auc(p) < realised.high
    # the same ranking, squeezed towards 0.5: the realised AUC cannot change (ranks are
    # kept) but the estimate, which believes the scores, drops well below it
    squeezed = 0.5 + (p - 0.5) * 0.2
    again = roc_auc(y, squeezed)
    assert again.value == pytest.approx(realised.value, abs=1e-12)
    estimate = estimated_auc(squeezed)
    assert not again.low <= estimate <= again.high
    assert again.value - estimate > 0.15


def test_estimated_accuracy_is_the_mean_top_probability() -> None:
    m = np.array([[0.9, 0.1], [0.3, 0.7], [0.5, 0.5]])
    assert estimated_accuracy(m) == pytest.approx((0.9 + 0.7 + 0.5) / 3, abs=1e-15)
    assert math.isnan(estimated_accuracy(np.empty((0, 2))))


def test_calibration_error_is_the_binned_gap() -> None:
    rng = np.random.default_rng(4)
    p = rng.uniform(size=1_000)
    y = rng.integers(0, 2, size=1_000)
    bins = np.minimum((p * 10).astype(int), 9)
    gap = sum(abs(y[bins == b].sum() - p[bins == b].sum()) for b in range(10)) / len(p)
    assert calibration_error(y, p) == pytest.approx(gap, abs=1e-12)
    assert calibration_error(y, p) > 0.2  # random labels: badly calibrated


def _binary_window(seed: int = 5, rows: int = 500) -> tuple[np.ndarray, list[str | None]]:
    rng = np.random.default_rng(seed)
    p1 = rng.uniform(0.02, 0.98, size=rows)
    y = (rng.uniform(size=rows) < p1).astype(int)
    labels: list[str | None] = [str(v) for v in y]
    for i in range(0, rows, 10):
        labels[i] = None  # 90% coverage
    labels[3] = "2"  # not a class of the model
    labels[7] = "maybe"
    return np.column_stack([1 - p1, p1]), labels


def test_classification_window_matches_sklearn_on_the_labelled_rows() -> None:
    matrix, labels = _binary_window()
    got = classification_window(["0", "1"], matrix, labels, min_label_coverage=0.8)
    usable = np.array([v in ("0", "1") for v in labels])
    y = np.array([int(v) for v in np.array(labels, dtype=object)[usable]])
    p = matrix[usable]
    assert (got["rows"], got["labelled"], got["matured"]) == (500, 450, True)
    assert got["coverage"] == pytest.approx(0.9)
    metrics = got["metrics"]
    assert metrics["auc"]["value"] == pytest.approx(roc_auc_score(y, p[:, 1]), abs=1e-12)
    _, low, high = delong_reference(y, p[:, 1])
    assert (metrics["auc"]["low"], metrics["auc"]["high"]) == pytest.approx((low, high), abs=1e-9)
    assert metrics["accuracy"]["value"] == pytest.approx(
        accuracy_score(y, p.argmax(axis=1)), abs=1e-12
    )
    assert metrics["log_loss"]["value"] == pytest.approx(log_loss(y, p, labels=[0, 1]), abs=1e-12)
    assert metrics["brier"]["value"] == pytest.approx(brier_score_loss(y, p[:, 1]), abs=1e-12)
    assert metrics["positive_rate"]["value"] == pytest.approx(y.mean(), abs=1e-12)
    for name in ("auc", "accuracy", "log_loss", "brier", "positive_rate"):
        assert metrics[name]["low"] < metrics[name]["value"] < metrics[name]["high"], name
    assert got["estimated"]["auc"] == pytest.approx(estimated_auc(matrix[:, 1]), abs=1e-12)
    assert got["estimated"]["positive_rate"] == pytest.approx(matrix[:, 1].mean(), abs=1e-12)
    assert got["estimate_error"]["auc"] == pytest.approx(
        got["estimated"]["auc"] - metrics["auc"]["value"], abs=1e-12
    )
    assert got["calibration_error"] == pytest.approx(calibration_error(y, p[:, 1]), abs=1e-12)
    assert any("'2'" in f and "'maybe'" in f for f in got["findings"]), got["findings"]
    assert metric_value(got, "auc") == metrics["auc"]["value"]
    assert metric_value(got, "estimated_auc") == got["estimated"]["auc"]
    assert metric_value(got, "rmse") is None


def test_classification_window_is_not_matured_below_the_coverage() -> None:
    matrix, labels = _binary_window()
    got = classification_window(["0", "1"], matrix, labels, min_label_coverage=0.95)
    assert got["matured"] is False
    assert got["metrics"] == {}
    assert "estimate_error" not in got
    assert got["estimated"]["auc"] == pytest.approx(estimated_auc(matrix[:, 1]), abs=1e-12)
    assert metric_value(got, "auc") is None
    nothing = classification_window(["0", "1"], np.empty((0, 2)), [], min_label_coverage=0.5)
    assert (nothing["rows"], nothing["matured"]) == (0, False)


def test_classification_window_of_a_multiclass_model() -> None:
    rng = np.random.default_rng(9)
    raw = rng.dirichlet([1, 1, 1], size=300)
    y = np.array([rng.choice(3, p=row) for row in raw])
    classes = ["a", "b", "c"]
    got = classification_window(classes, raw, [classes[v] for v in y], min_label_coverage=1.0)
    assert got["matured"] is True
    assert "auc" not in got["metrics"] and "auc" not in got["estimated"]
    assert got["metrics"]["accuracy"]["value"] == pytest.approx(
        accuracy_score(y, raw.argmax(axis=1)), abs=1e-12
    )
    assert got["metrics"]["log_loss"]["value"] == pytest.approx(
        log_loss(y, raw, labels=[0, 1, 2]), abs=1e-12
    )
    assert got["estimated"]["accuracy"] == pytest.approx(raw.max(axis=1).mean(), abs=1e-12)


def test_classification_window_refuses_a_matrix_of_the_wrong_width() -> None:
    with pytest.raises(InvalidInputError) as caught:
        classification_window(["0", "1"], np.zeros((4, 3)), [None] * 4, min_label_coverage=0.5)
    assert caught.value.loc == "probabilities"


def test_regression_window_matches_sklearn() -> None:
    rng = np.random.default_rng(2)
    predicted = rng.normal(size=200)
    truth = predicted + rng.normal(scale=0.5, size=200)
    labels: list[object] = [float(v) for v in truth]
    labels[0], labels[1], labels[2] = None, "n/a", str(truth[2])  # text numbers count
    got = regression_window(predicted, labels, min_label_coverage=0.9)
    keep = np.ones(200, dtype=bool)
    keep[:2] = False
    assert (got["labelled"], got["matured"]) == (198, True)
    mae = got["metrics"]["mae"]
    rmse = got["metrics"]["rmse"]
    assert mae["value"] == pytest.approx(
        mean_absolute_error(truth[keep], predicted[keep]), abs=1e-12
    )
    assert rmse["value"] == pytest.approx(
        math.sqrt(mean_squared_error(truth[keep], predicted[keep])), abs=1e-12
    )
    errors = np.abs(truth[keep] - predicted[keep])
    half = Z * errors.std(ddof=1) / math.sqrt(198)
    assert (mae["low"], mae["high"]) == pytest.approx((errors.mean() - half, errors.mean() + half))
    assert rmse["low"] < rmse["value"] < rmse["high"]
    unripe = regression_window(predicted, [None] * 200, min_label_coverage=0.5)
    assert (unripe["labelled"], unripe["matured"], unripe["metrics"]) == (0, False, {})
