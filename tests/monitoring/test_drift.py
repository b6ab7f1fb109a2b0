"""The column engine: no alarms without drift, alarms for shifts of practical size."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import spatial, stats  # type: ignore[import-untyped]

from modelyard.errors import InvalidInputError
from modelyard.models.profile import build_profile
from modelyard.monitoring import ColumnDrift, DriftReport, DriftSettings, Reference
from modelyard.monitoring.columns import TOP_K

LEVELS = np.array(["a", "b", "c", "d", "e"])
MIX = np.array([0.4, 0.25, 0.15, 0.12, 0.08])


def _frame(rng: np.random.Generator, n: int, *, shift: float = 0.0, mix: Any = MIX) -> pd.DataFrame:
    x = rng.normal(shift, 1.0, n)
    x[rng.random(n) < 0.02] = np.nan  # 2% missing, on both sides
    return pd.DataFrame(
        {
            "x": x,
            "y": rng.exponential(2.0, n),
            "k": rng.poisson(3.0, n),  # integers: many ties
            "plan": pd.Series(rng.choice(LEVELS, n, p=mix), dtype=object),
            "ok": rng.random(n) < 0.3,
        }
    )


@pytest.fixture(scope="module")
def reference() -> Reference:
    return Reference.from_data(_frame(np.random.default_rng(0), 100_000))


def _binomial_limit(windows: int, rate: float) -> int:
    """The smallest k with P(X >= k) < 1e-3 for X ~ Binomial(windows, rate)."""
    k = 0
    while stats.binom.sf(k - 1, windows, rate) >= 1e-3:
        k += 1
    return k


def test_no_false_alarms_without_drift(reference: Reference) -> None:
    rng = np.random.default_rng(1)
    flagged = 0
    windows = 0
    for size, count in ((1_000, 40), (10_000, 15), (100_000, 4)):
        for _ in range(count):
            report = reference.compare(_frame(rng, size))
            flagged += bool(report.drifted_columns)
            windows += 1
    # Holm at alpha = 0.05 bounds the chance that a window flags any column by 0.05.
    assert flagged < _binomial_limit(windows, 0.05)


def test_a_quarter_sd_shift_is_caught_at_10k(reference: Reference) -> None:
    report = reference.compare(_frame(np.random.default_rng(2), 10_000, shift=0.25))
    assert report.drifted_columns == ["x"]
    x = report.columns["x"]
    assert x.distribution_drifted and not x.missing_drifted
    assert x.effect == pytest.approx(0.25, abs=0.05)
    assert x.p_adjusted < 1e-6


def test_a_category_mix_change_is_caught(reference: Reference) -> None:
    mix = np.array([0.25, 0.25, 0.15, 0.12, 0.23])
    report = reference.compare(_frame(np.random.default_rng(3), 10_000, mix=mix))
    assert report.drifted_columns == ["plan"]
    assert report.columns["plan"].effect > 0.1


def test_a_negligible_shift_in_a_large_window_is_no_alarm(reference: Reference) -> None:
    report = reference.compare(_frame(np.random.default_rng(4), 100_000, shift=0.03))
    x = report.columns["x"]
    assert x.p_adjusted < 0.05  # statistically real ...
    assert not x.drifted  # ... but too small to matter
    assert x.threshold == 0.1


def test_small_windows_need_a_larger_effect(reference: Reference) -> None:
    small = reference.compare(_frame(np.random.default_rng(5), 100)).columns["y"]
    large = reference.compare(_frame(np.random.default_rng(5), 50_000)).columns["y"]
    assert small.threshold > 0.2 > large.threshold


def test_missing_rate_jump_is_caught() -> None:
    rng = np.random.default_rng(6)
    ref_values = rng.normal(size=50_000)
    ref_values[rng.random(50_000) < 0.01] = np.nan
    cur_values = rng.normal(size=10_000)
    cur_values[rng.random(10_000) < 0.15] = np.nan
    report = Reference.from_data({"x": ref_values}).compare({"x": cur_values})
    x = report.columns["x"]
    assert x.missing_drifted and x.drifted and not x.distribution_drifted
    assert x.missing_reference == pytest.approx(0.01, abs=0.002)
    assert x.missing_current == pytest.approx(0.15, abs=0.01)
    assert report.drifted_columns == ["x"]


@pytest.mark.parametrize("extreme", [1e5, 1e300, np.inf, -np.inf])
def test_one_extreme_value_neither_creates_nor_hides_drift(extreme: float) -> None:
    rng = np.random.default_rng(7)
    reference = Reference.from_data({"x": rng.normal(size=100_000)})
    calm = rng.normal(size=100_000)
    calm[123] = extreme
    assert reference.compare({"x": calm}).drifted_columns == []
    shifted = rng.normal(0.3, 1.0, size=100_000)
    shifted[456] = extreme
    result = reference.compare({"x": shifted}).columns["x"]
    assert result.drifted
    assert result.effect == pytest.approx(0.3, abs=0.03)
    assert result.out_of_range_share >= 1e-5


def test_an_extreme_reference_value_does_not_blind_the_test() -> None:
    rng = np.random.default_rng(8)
    values = rng.normal(size=100_000)
    values[0] = 1e300
    reference = Reference.from_data({"x": values})
    assert reference.compare({"x": rng.normal(size=20_000)}).drifted_columns == []
    assert reference.compare({"x": rng.normal(0.3, 1, size=20_000)}).drifted_columns == ["x"]


def test_one_unseen_category_row_is_no_alarm_but_ten_percent_is() -> None:
    rng = np.random.default_rng(9)
    reference = Reference.from_data({"plan": rng.choice(LEVELS, 100_000, p=MIX)})
    window = rng.choice(LEVELS, 10_000, p=MIX).astype(object)
    window[17] = "brand-new"
    one = reference.compare({"plan": window}).columns["plan"]
    assert one.unseen_share == pytest.approx(1e-4)
    assert one.p_value > 0.01
    assert not one.drifted
    window[:1_000] = "brand-new"
    many = reference.compare({"plan": window}).columns["plan"]
    assert many.unseen_share == pytest.approx(0.1, abs=1e-3)
    assert many.p_value < 1e-10 and many.drifted


def test_high_cardinality_keeps_top_k_and_tells_rare_from_unseen() -> None:
    rng = np.random.default_rng(10)
    ids = np.array([f"id{i}" for i in rng.zipf(1.5, 20_000) % 5000])
    every = Reference.from_data({"id": ids}).columns["id"]
    assert len(every.levels) == len(set(ids.tolist()))  # type: ignore[union-attr]
    reference = Reference.from_data({"id": ids}, top_k=100)  # the rest hashed into cells
    column = reference.columns["id"]
    assert len(column.levels) == 100  # type: ignore[union-attr]
    rare = [value for value in set(ids.tolist()) if value not in column.levels]  # type: ignore[union-attr]
    window = rng.choice(ids, 5_000)
    result = reference.compare({"id": window}).columns["id"]
    assert result.unseen_share == 0.0 and not result.drifted
    window[:10] = rare[0]
    assert reference.compare({"id": window}).columns["id"].unseen_share == 0.0
    window[:10] = "never-seen"
    assert reference.compare({"id": window}).columns["id"].unseen_share == pytest.approx(0.002)


def test_psi_is_unchanged_by_a_monotone_transform() -> None:
    rng = np.random.default_rng(11)
    # 10,001 reference values put the deciles exactly on data points, so the edges map
    # through the transform too (interpolated edges would move between data points).
    ref, cur = rng.normal(size=10_001), rng.normal(0.2, 1.2, size=5_000)
    plain = Reference.from_data({"x": ref}).compare({"x": cur}).columns["x"]
    ref_t, cur_t = np.exp(ref / 2) ** 3, np.exp(cur / 2) ** 3
    transformed = Reference.from_data({"x": ref_t}).compare({"x": cur_t}).columns["x"]
    assert plain.psi > 0.05
    assert transformed.psi == pytest.approx(plain.psi, rel=1e-12)
    assert transformed.statistic == plain.statistic  # KS is rank-based too


def test_numeric_psi_equals_brute_force_binning() -> None:
    rng = np.random.default_rng(12)
    ref, cur = rng.normal(size=5_000), rng.normal(0.5, 1, size=3_000)
    cur[:3] = [np.inf, -np.inf, np.nan]
    result = Reference.from_data({"x": ref}).compare({"x": cur}).columns["x"]
    edges = np.unique(np.quantile(ref, np.arange(1, 10) / 10))
    full = np.concatenate([[-np.inf], edges, [np.inf]])
    present = cur[~np.isnan(cur)]
    p = np.array([np.sum((ref >= lo) & (ref < hi)) for lo, hi in itertools.pairwise(full)])
    q = np.array([np.sum((present >= lo) & (present < hi)) for lo, hi in itertools.pairwise(full)])
    q[-1] += np.sum(present == np.inf)  # [e9, inf) misses +inf; -inf is in [-inf, e1)
    p_share, q_share = p / p.sum(), q / q.sum()
    expected = float(np.sum((q_share - p_share) * np.log(q_share / p_share)))
    assert result.psi == pytest.approx(expected, rel=1e-12)


def test_profile_reference_flags_the_same_shift_as_data() -> None:
    rng = np.random.default_rng(13)
    data = _frame(rng, 50_000)
    from_data = Reference.from_data(data)
    from_profile = Reference.from_profile(build_profile(data))
    calm, shifted = _frame(rng, 10_000), _frame(rng, 10_000, shift=0.5)
    shifted["plan"] = rng.choice(LEVELS, 10_000, p=[0.2, 0.2, 0.2, 0.2, 0.2])
    for reference in (from_data, from_profile):
        assert reference.compare(calm).drifted_columns == []
        assert reference.compare(shifted).drifted_columns == ["x", "plan"]
    by_profile = from_profile.compare(shifted).columns["x"]
    by_data = from_data.compare(shifted).columns["x"]
    assert by_profile.psi == pytest.approx(by_data.psi, rel=1e-9)
    assert by_profile.missing_reference == by_data.missing_reference
    assert by_profile.effect == pytest.approx(by_data.effect, abs=0.1)


def test_prediction_drift_and_ranking_by_importance() -> None:
    rng = np.random.default_rng(14)
    ref = {"a": rng.normal(size=20_000), "b": rng.normal(size=20_000)}
    scores = {"score": rng.beta(2, 5, 20_000)}
    reference = Reference.from_data(ref, outputs=scores, importance={"a": 0.1, "b": 2.0})
    window = {"a": rng.normal(1.0, 1, 5_000), "b": rng.normal(0.5, 1, 5_000)}
    calm = reference.compare(window, outputs={"score": rng.beta(2, 5, 5_000)})
    assert not calm.prediction_drift and list(calm.outputs) == ["score"]
    report = reference.compare(window, outputs={"score": rng.beta(3, 5, 5_000)})
    assert report.prediction_drift
    assert report.outputs["score"].kind == "numeric"
    assert sorted(report.drifted_columns) == ["a", "b"]
    # a moved twice as far, but b matters twenty times more to the model.
    assert [c.name for c in report.ranked()] == ["b", "a"]
    assert report.columns["b"].importance == 1.0
    unweighted = Reference.from_data(ref).compare(window)
    assert [c.name for c in unweighted.ranked(drifted_only=True)] == ["a", "b"]
    no_outputs = reference.compare(window)
    assert no_outputs.outputs == {} and any("outputs" in f for f in no_outputs.findings)


def test_report_is_json_able(reference: Reference) -> None:
    frame = _frame(np.random.default_rng(15), 1_000, shift=1.0)
    frame["x"] = np.nan
    report = reference.compare(frame)
    payload = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert payload["columns"]["x"]["statistic"] is None
    assert payload["columns"]["x"]["missing_drifted"] is True
    assert isinstance(payload["columns"]["y"]["p_value"], float)
    assert isinstance(report.columns["y"], ColumnDrift) and isinstance(report, DriftReport)


def test_arrow_tables_and_settings() -> None:
    rng = np.random.default_rng(16)
    table = pa.table({"x": rng.normal(size=5_000), "c": rng.choice(LEVELS, 5_000)})
    reference = Reference.from_data(table)
    window = pa.table({"x": rng.normal(0.5, 1, 2_000), "c": rng.choice(LEVELS, 2_000)})
    assert reference.compare(window).drifted_columns == ["x"]
    strict = DriftSettings(min_wasserstein=5.0, correction="bh")
    assert reference.compare(window, settings=strict).drifted_columns == []
    with pytest.raises(InvalidInputError, match=r"settings\.correction"):
        DriftSettings(correction="sidak")  # type: ignore[arg-type]


def test_calibration_is_cached(reference: Reference) -> None:
    column = reference.columns["y"]
    before = len(column._cache)
    reference.compare(_frame(np.random.default_rng(17), 12_345))
    reference.compare(_frame(np.random.default_rng(18), 12_345))
    assert len(column._cache) <= before + 1


# -- bad and degenerate inputs -----------------------------------------------------------


def test_bad_input_types_name_the_column() -> None:
    with pytest.raises(InvalidInputError, match="DataFrame"):
        Reference.from_data([1, 2, 3])
    with pytest.raises(InvalidInputError, match="'z'"):
        Reference.from_data({"z": np.array([1 + 2j, 3j])})
    with pytest.raises(InvalidInputError, match="'m'"):
        Reference.from_data({"m": np.ones((3, 2))})
    with pytest.raises(InvalidInputError, match="'b'"):
        Reference.from_data({"a": [1.0, 2.0], "b": [1.0]})
    reference = Reference.from_data({"x": [1.0, 2.0, 3.0]})
    with pytest.raises(InvalidInputError, match="current"):
        reference.compare("not a frame")
    with pytest.raises(InvalidInputError, match="'x'"):
        reference.compare({"x": np.array([[1.0], [2.0]])})
    with pytest.raises(InvalidInputError, match="'x'"):
        reference.compare({"x": pd.Series([[1], [2]])})
    with pytest.raises(InvalidInputError, match="profile"):
        Reference.from_profile({"x": 1})  # type: ignore[arg-type]


def test_empty_frames() -> None:
    with pytest.raises(InvalidInputError, match="rows"):
        Reference.from_data(pd.DataFrame({"x": pd.Series([], dtype=float)}))
    with pytest.raises(InvalidInputError, match="columns"):
        Reference.from_data({})
    reference = Reference.from_data({"x": np.arange(100.0), "c": ["a", "b"] * 50})
    report = reference.compare({"x": np.array([]), "c": np.array([], dtype=object)})
    assert report.n_current == 0 and report.drifted_columns == []
    assert any("empty" in finding for finding in report.findings)
    assert math.isnan(report.columns["x"].statistic)


def test_all_missing_and_constant_columns_are_findings() -> None:
    rng = np.random.default_rng(19)
    reference = Reference.from_data(
        {
            "gone": np.full(1_000, np.nan),
            "flat": np.full(1_000, 3.0),
            "one": np.array(["same"] * 1_000, dtype=object),
            "x": rng.normal(size=1_000),
        }
    )
    report = reference.compare(
        {
            "gone": np.full(500, np.nan),
            "flat": np.full(500, 3.0),
            "one": np.array(["same"] * 500, dtype=object),
            "x": np.full(500, np.nan),
        }
    )
    assert any("no values" in f for f in report.columns["gone"].findings)
    assert not report.columns["gone"].drifted
    assert any("constant in the reference" in f for f in report.columns["flat"].findings)
    assert not report.columns["flat"].drifted
    assert any("constant" in f for f in report.columns["one"].findings)
    x = report.columns["x"]
    assert any("no values to compare in the window" in f for f in x.findings)
    assert x.missing_drifted and report.drifted_columns == ["x"]
    moved = reference.compare({"flat": np.full(500, 4.0), "x": rng.normal(size=500)})
    assert moved.drifted_columns == ["flat"]
    assert moved.columns["flat"].out_of_range_share == 1.0


def test_type_changes_and_column_set_changes_are_findings() -> None:
    rng = np.random.default_rng(20)
    reference = Reference.from_data(
        {"x": rng.normal(size=2_000), "c": rng.choice(LEVELS, 2_000), "gone": np.ones(2_000)}
    )
    window = {
        "x": np.array([str(v) for v in rng.normal(size=1_000)], dtype=object),
        "c": rng.integers(0, 3, 1_000),
        "new": np.zeros(1_000),
    }
    report = reference.compare(window)
    assert any("type changed" in f for f in report.columns["x"].findings)
    assert not report.columns["x"].drifted  # the strings still parse as the same numbers
    assert any("type changed" in f for f in report.columns["c"].findings)
    assert report.columns["c"].unseen_share == 1.0 and report.columns["c"].drifted
    assert any("'gone'" in f and "missing" in f for f in report.findings)
    assert any("'new'" in f and "not in the reference" in f for f in report.findings)
    assert set(report.columns) == {"x", "c"}
    assert report.missing_columns == ["gone"] and report.to_dict()["missing_columns"] == ["gone"]


def test_a_missing_feature_fails_the_check_and_no_common_feature_is_an_error() -> None:
    """Issue 11: a window without the reference's features compared nothing and passed."""
    rng = np.random.default_rng(22)
    reference = Reference.from_data({"x": rng.normal(size=2_000), "y": rng.normal(size=2_000)})
    calm = reference.compare({"x": rng.normal(size=1_000), "y": rng.normal(size=1_000)})
    assert not calm.alarm and calm.missing_columns == []
    less = reference.compare({"x": rng.normal(size=1_000)})
    assert less.drifted_columns == [] and less.missing_columns == ["y"] and less.alarm
    assert less.to_dict()["alarm"] is True
    with pytest.raises(InvalidInputError, match=r"share columns.*'x', 'y'.*'z'"):
        reference.compare({"z": rng.normal(size=1_000)})


def test_profile_outputs_give_prediction_drift() -> None:
    rng = np.random.default_rng(21)
    features = {"a": rng.normal(size=20_000)}
    outputs = {"proba_yes": rng.beta(2, 5, 20_000), "label": rng.choice(["no", "yes"], 20_000)}
    profile = build_profile(features, outputs, feature_importance={"a": 1.0})
    reference = Reference.from_profile(profile)
    window = {"a": rng.normal(size=3_000)}
    calm = {"proba_yes": rng.beta(2, 5, 3_000), "label": rng.choice(["no", "yes"], 3_000)}
    assert not reference.compare(window, outputs=calm).prediction_drift
    moved = {
        "proba_yes": rng.beta(4, 5, 3_000),
        "label": rng.choice(["no", "yes"], 3_000, p=[0.2, 0.8]),
    }
    report = reference.compare(window, outputs=moved)
    assert report.prediction_drift and report.drifted_columns == []
    assert sorted(name for name, c in report.outputs.items() if c.drifted) == [
        "label",
        "proba_yes",
    ]
    assert report.outputs["label"].test == "chi2"


def _zipf_levels(rng: np.random.Generator, n: int, levels: int = 500) -> np.ndarray:
    weights = 1.0 / np.arange(1, levels + 1) ** 1.1
    return rng.choice([f"sku_{i:04d}" for i in range(levels)], size=n, p=weights / weights.sum())


def test_a_long_tailed_category_is_no_alarm_in_small_windows() -> None:
    """500 Zipf levels, 1k-row reference and windows: new windows hold about 15% values the
    reference missed by chance; the Good-Turing unseen share expects them."""
    rng = np.random.default_rng(42)
    windows = 30
    alarms = 0
    for _ in range(windows):
        reference = Reference.from_data({"sku": _zipf_levels(rng, 1000)})
        report = reference.compare({"sku": _zipf_levels(rng, 1000)})
        column = report.columns["sku"]
        assert column.unseen_share > 0.05  # the situation this test is about
        alarms += column.drifted
    # at most ~5% per window by the test's alpha: P(X >= 6) < 1e-3 for Binomial(30, 0.05)
    assert alarms < _binomial_limit(windows, 0.05), alarms


def test_a_flood_of_new_values_in_a_long_tailed_category_is_caught() -> None:
    rng = np.random.default_rng(43)
    reference = Reference.from_data({"sku": _zipf_levels(rng, 1000)})
    window = _zipf_levels(rng, 1000)
    window[:400] = [f"new_{i % 50}" for i in range(400)]  # 40% of rows: 50 new products
    column = reference.compare({"sku": window}).columns["sku"]
    assert column.drifted and column.unseen_share >= 0.4


# -- long tails: drift among the rare values is drift ------------------------------------


def _tail_case(
    levels: int, exponent: float, top: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Zipf shares over ``levels`` values and the same shares with the values beyond the
    ``top`` most frequent reversed: the head is untouched, the tail's mass moves."""
    weights = 1.0 / np.arange(1, levels + 1) ** exponent
    p = weights / weights.sum()
    q = p.copy()
    q[top:] = q[top:][::-1]
    names = np.array([f"sku_{i:05d}" for i in range(levels)])
    truth = float(spatial.distance.jensenshannon(p, q, base=2))
    return names, p, q, truth


def test_drift_confined_to_a_long_tail_is_caught() -> None:
    """Issue 11: 2,000 levels, the tail beyond the top 100 reversed; the top-100 + "other"
    cells measured JS 0.059 where the truth is 0.35, and missed it."""
    names, p, q, truth = _tail_case(2_000, 1.0, 100)
    assert truth == pytest.approx(0.345, abs=0.005)
    rng = np.random.default_rng(44)
    reference = Reference.from_data({"sku": rng.choice(names, 100_000, p=p)})
    column = reference.compare({"sku": rng.choice(names, 100_000, p=q)}).columns["sku"]
    assert column.drifted and column.p_value < 1e-10
    assert column.effect == pytest.approx(truth, abs=0.04)  # sampling noise of 2,000 levels
    calm = reference.compare({"sku": rng.choice(names, 100_000, p=p)}).columns["sku"]
    assert not calm.drifted


@settings(max_examples=20, deadline=None)
@given(
    levels=st.integers(300, 5_000),
    exponent=st.floats(0.7, 1.3),
    top=st.integers(10, 200),
    top_k=st.sampled_from([TOP_K, 50]),
    seed=st.integers(0, 2**16),
)
def test_tail_drift_is_caught_whatever_the_tail(
    levels: int, exponent: float, top: int, top_k: int, seed: int
) -> None:
    """Generated tails, every value kept or the rare ones hashed (``top_k=50``): a tail
    drift with a true JS distance of at least 0.2 is caught at 50k rows."""
    names, p, q, truth = _tail_case(levels, exponent, top)
    assume(truth >= 0.2)
    rng = np.random.default_rng(seed)
    reference = Reference.from_data({"sku": rng.choice(names, 50_000, p=p)}, top_k=top_k)
    column = reference.compare({"sku": rng.choice(names, 50_000, p=q)}).columns["sku"]
    assert column.drifted, (truth, column.effect, column.threshold, column.p_value)


def test_no_drift_long_tails_stay_quiet() -> None:
    """40 generated long tails (200-5,000 levels, Zipf 0.7-1.3, 1k-50k rows, all levels or
    hashed): the reference and the window from the same shares alarm at most as often as
    alpha allows."""
    rng = np.random.default_rng(45)
    alarms, windows = 0, 40
    for _ in range(windows):
        levels = int(rng.integers(200, 5_000))
        names, p, _, _ = _tail_case(levels, float(rng.uniform(0.7, 1.3)), 100)
        n, m = (int(v) for v in rng.choice([1_000, 5_000, 50_000], 2))
        top_k = int(rng.choice([TOP_K, 50]))
        reference = Reference.from_data({"sku": rng.choice(names, n, p=p)}, top_k=top_k)
        alarms += reference.compare({"sku": rng.choice(names, m, p=p)}).columns["sku"].drifted
    assert alarms < _binomial_limit(windows, 0.05), alarms


@settings(max_examples=40, deadline=None)
@given(
    reference_names=st.sets(st.sampled_from("abcdefg"), min_size=1, max_size=5),
    current_names=st.sets(st.sampled_from("abcdefgh"), min_size=0, max_size=6),
)
def test_the_features_a_window_lacks_fail_the_check(
    reference_names: set[str], current_names: set[str]
) -> None:
    """Any column sets: no shared feature is an error, each missing one is named and
    fails the check, and the shared ones are compared."""
    rng = np.random.default_rng(23)
    reference = Reference.from_data({n: rng.normal(size=500) for n in sorted(reference_names)})
    window = {n: rng.normal(size=300) for n in sorted(current_names)}
    if not reference_names & current_names:
        with pytest.raises(InvalidInputError, match="share columns"):
            reference.compare(window)
        return
    report = reference.compare(window)
    assert report.missing_columns == sorted(reference_names - current_names)
    assert set(report.columns) == reference_names & current_names
    assert report.alarm == bool(report.missing_columns or report.drifted_columns)
