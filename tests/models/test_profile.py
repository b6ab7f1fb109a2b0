"""Reference profiles: every statistic against an independent oracle.

Quantiles and bin edges against numpy.quantile, bin counts against numpy.histogram and a
brute-force count, the robust scale against scipy, category counts against pandas'
value_counts; the sample is checked for what a KS test later needs of it. Generated
frames of every supported dtype survive the JSON round trip unchanged.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from modelyard.errors import InvalidInputError
from modelyard.models.profile import (
    BIN_LEVELS,
    MAD_SCALE,
    OTHER,
    QUANTILE_LEVELS,
    BooleanProfile,
    CategoricalProfile,
    DatetimeProfile,
    NumericProfile,
    ReferenceProfile,
    build_profile,
    profile_frame,
)

SEED = 20240611
PROPERTY = settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _numeric(data: Any, name: str = "x", **options: Any) -> NumericProfile:
    profile = profile_frame({name: data}, **options)[name]
    assert isinstance(profile, NumericProfile)
    return profile


def _categorical(data: Any, name: str = "x", **options: Any) -> CategoricalProfile:
    profile = profile_frame({name: data}, **options)[name]
    assert isinstance(profile, CategoricalProfile)
    return profile


def _columns(seed: int) -> dict[str, np.ndarray]:
    """Continuous, heavy-tailed, discrete and mostly-constant columns, with gaps."""
    rng = np.random.default_rng(seed)
    n = 5_000
    columns = {
        "normal": rng.normal(10.0, 3.0, n),
        "lognormal": rng.lognormal(0.0, 2.0, n),
        "discrete": rng.choice([0.0, 1.0, 2.0, 5.0], n, p=[0.55, 0.3, 0.1, 0.05]),
        "spike": np.where(rng.random(n) < 0.93, 0.0, rng.normal(size=n)),
    }
    for values in columns.values():
        values[rng.random(n) < 0.05] = np.nan
    columns["lognormal"][:7] = np.inf
    columns["lognormal"][7:10] = -np.inf
    return columns


# -- numeric statistics -------------------------------------------------------------------


@pytest.mark.parametrize("seed", [SEED, SEED + 1])
@pytest.mark.parametrize("column", ["normal", "lognormal", "discrete", "spike"])
def test_numeric_statistics_match_numpy(seed: int, column: str) -> None:
    values = _columns(seed)[column]
    finite = values[np.isfinite(values)]
    profile = _numeric(values, column)

    assert profile.count == values.size
    assert profile.missing == np.isnan(values).sum()
    assert profile.missing_rate == np.isnan(values).mean()
    assert profile.n_pos_inf == np.sum(values == np.inf)
    assert profile.n_neg_inf == np.sum(values == -np.inf)
    assert profile.n_unique == np.unique(finite).size
    assert (profile.min, profile.max) == (finite.min(), finite.max())
    assert profile.mean == pytest.approx(finite.mean(), rel=1e-12)
    assert profile.std == pytest.approx(finite.std(), rel=1e-12)
    assert profile.median == pytest.approx(np.median(finite), rel=1e-12)
    assert profile.quantiles is not None
    assert list(profile.quantiles) == list(QUANTILE_LEVELS)
    np.testing.assert_allclose(
        list(profile.quantiles.values()), np.quantile(finite, QUANTILE_LEVELS), rtol=1e-12
    )
    np.testing.assert_allclose(
        profile.bin_edges, np.unique(np.quantile(finite, BIN_LEVELS)), rtol=1e-12
    )


@pytest.mark.parametrize("seed", [SEED, SEED + 1])
@pytest.mark.parametrize("column", ["normal", "lognormal", "discrete", "spike"])
def test_robust_scale_matches_scipy(seed: int, column: str) -> None:
    values = _columns(seed)[column]
    finite = values[np.isfinite(values)]
    profile = _numeric(values, column)
    expected = stats.median_abs_deviation(finite, scale="normal")
    assert profile.mad == pytest.approx(expected, rel=1e-12, abs=1e-300)
    assert profile.iqr == pytest.approx(stats.iqr(finite), rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("seed", [SEED, SEED + 1])
@pytest.mark.parametrize("column", ["normal", "lognormal", "discrete", "spike"])
def test_bin_counts_match_histogram_and_brute_force(seed: int, column: str) -> None:
    values = _columns(seed)[column]
    present = values[~np.isnan(values)]  # infinities fall into the tail bins
    profile = _numeric(values, column)
    edges = np.asarray(profile.bin_edges)

    assert np.all(np.diff(edges) > 0), "edges are strictly increasing"
    assert len(profile.bin_counts) == edges.size + 1
    histogram, _ = np.histogram(present, bins=np.concatenate([[-np.inf], edges, [np.inf]]))
    assert list(profile.bin_counts) == histogram.tolist()
    bounds = [-np.inf, *edges.tolist(), np.inf]
    brute = [int(np.sum((present >= lo) & (present < hi))) for lo, hi in itertools.pairwise(bounds)]
    brute[-1] += int(np.sum(present == np.inf))
    assert list(profile.bin_counts) == brute
    assert sum(profile.bin_counts) == profile.count - profile.missing


def test_discrete_edges_give_each_value_its_own_bin() -> None:
    values = np.repeat([0.0, 1.0, 2.0, 5.0], [550, 300, 100, 50])
    profile = _numeric(values)
    assert profile.bin_edges == (0.0, 1.0, 2.0)  # deciles 0..0, 1.., 2: deduplicated
    # below 0 | [0, 1) | [1, 2) | 2 and above
    assert profile.bin_counts == (0, 550, 300, 150)


def test_deciles_of_continuous_data_fill_ten_bins_evenly() -> None:
    values = np.random.default_rng(SEED).normal(size=10_000)
    profile = _numeric(values)
    assert len(profile.bin_edges) == len(BIN_LEVELS)
    assert all(abs(count - 1_000) <= 1 for count in profile.bin_counts)


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(np.array([], dtype=float), id="empty"),
        pytest.param(np.full(5, np.nan), id="all-nan"),
        pytest.param(pd.Series([pd.NA] * 4, dtype="Float64"), id="all-na"),
    ],
)
def test_empty_or_all_missing_columns_give_a_valid_profile(values: Any) -> None:
    profile = _numeric(values)
    assert profile.count == len(values)
    assert profile.missing == len(values)
    assert profile.missing_rate == (1.0 if len(values) else 0.0)
    assert profile.quantiles is None
    assert profile.min is profile.max is profile.mean is profile.mad is None
    assert (profile.bin_edges, profile.bin_counts, profile.sample) == ((), (0,), ())


def test_only_infinities_are_counted_in_the_tails() -> None:
    profile = _numeric(np.array([np.inf, -np.inf, np.inf, np.nan]))
    assert (profile.n_pos_inf, profile.n_neg_inf, profile.missing) == (2, 1, 1)
    assert profile.quantiles is None
    assert profile.bin_counts == (3,)


def test_extreme_values_neither_warn_nor_overflow() -> None:
    # Differences and squares of these overflow float64; strict pytest turns numpy's
    # overflow warning into a failure. The oracle works on values scaled by a power of
    # two, which is exact.
    values = np.array([-1.7e308, -1.6e308, 0.0, 5e-324, 1.6e308, 1.7e308])
    scale = 2.0**-600
    profile = _numeric(values)
    assert profile.mean == pytest.approx(np.mean(values * scale) / scale)
    assert profile.std == pytest.approx(np.std(values * scale) / scale)
    assert profile.quantiles is not None
    np.testing.assert_allclose(
        list(profile.quantiles.values()),
        np.quantile(values * scale, QUANTILE_LEVELS) / scale,
        atol=1e-300,  # the scaled median underflows to 0.0
    )
    assert profile.mad is None  # 1.4826 * 1.6e308 is past the largest float
    assert profile.iqr is None  # 1.2e308 - -1.2e308 likewise
    assert ReferenceProfile.from_json(build_profile({"x": values}).to_json()).columns["x"] == (
        profile
    )


def test_quantiles_between_the_two_largest_floats_stay_finite() -> None:
    profile = _numeric(np.array([-1e308, 1e308]))  # their difference is not a float
    assert profile.quantiles is not None
    assert profile.median == 0.0
    np.testing.assert_allclose(
        list(profile.quantiles.values()), np.quantile([-1.0, 1.0], QUANTILE_LEVELS) * 1e308
    )
    assert profile.mad == pytest.approx(1e308 * MAD_SCALE)


def test_unhashable_cells_are_counted_by_their_text() -> None:
    series = pd.Series([{"a": 1}, {}, {"a": 1}, None])
    profile = _categorical(series)
    assert profile.counts == {"{'a': 1}": 2, "{}": 1}
    assert profile.missing == 1


# -- the sample ---------------------------------------------------------------------------


def test_sample_is_sorted_bounded_and_drawn_from_the_data() -> None:
    values = np.random.default_rng(SEED).normal(size=20_000)
    values[::10] = np.nan
    sample = np.asarray(_numeric(values, sample_size=500).sample)
    assert sample.size == 500
    assert np.all(np.diff(sample) >= 0)
    assert np.isin(sample, values).all()
    # without replacement: the values are distinct because the data are
    assert np.unique(sample).size == 500


def test_sample_is_reproducible_with_the_seed() -> None:
    values = np.random.default_rng(SEED).normal(size=20_000)
    first = _numeric(values, seed=7).sample
    assert _numeric(values, seed=7).sample == first
    assert _numeric(values, seed=8).sample != first
    assert _numeric(values, "y", seed=7).sample != first  # each column draws its own


def test_small_column_is_kept_whole() -> None:
    values = np.array([3.0, np.nan, 1.0, np.inf, 2.0])
    assert _numeric(values).sample == (1.0, 2.0, 3.0)


@pytest.mark.parametrize("seed", [SEED, SEED + 1, SEED + 2])
def test_ks_test_of_the_sample_against_the_column_does_not_reject(seed: int) -> None:
    values = np.random.default_rng(seed).normal(5.0, 2.0, size=100_000)
    sample = _numeric(values, seed=seed).sample
    assert len(sample) == 1_000
    assert stats.ks_2samp(sample, values).pvalue > 0.01


# -- missing values -----------------------------------------------------------------------


def test_missing_values_of_every_kind_are_counted() -> None:
    frame = pd.DataFrame(
        {
            "float": [1.0, np.nan, 3.0, np.nan],
            "Float64": pd.array([1.5, pd.NA, 2.5, 3.5], dtype="Float64"),
            "Int64": pd.array([1, pd.NA, pd.NA, 4], dtype="Int64"),
            "object": ["a", None, np.nan, "b"],
            "string": pd.array(["a", pd.NA, "c", "c"], dtype="string"),
            "boolean": pd.array([True, pd.NA, False, True], dtype="boolean"),
            "category": pd.Categorical(["x", None, "y", "x"]),
            "datetime": pd.to_datetime(["2024-01-01", None, "2024-01-03", None]),
        }
    )
    profiles = profile_frame(frame)
    expected = frame.isna().sum().to_dict()
    assert {name: p.missing for name, p in profiles.items()} == expected
    assert {name: p.missing_rate for name, p in profiles.items()} == {
        name: count / 4 for name, count in expected.items()
    }
    assert [p.kind for p in profiles.values()] == [
        "numeric",
        "numeric",
        "numeric",
        "categorical",
        "categorical",
        "boolean",
        "categorical",
        "datetime",
    ]


def test_missing_values_in_a_numpy_object_array() -> None:
    values = np.array(["a", None, np.nan, pd.NA, pd.NaT, np.float32("nan"), "b", "a"], dtype=object)
    profile = _categorical(values)
    assert (profile.count, profile.missing) == (8, 5)
    assert profile.counts == {"a": 2, "b": 1}


# -- categories ---------------------------------------------------------------------------


def _value_counts_oracle(series: pd.Series, top: int) -> tuple[dict[str, int], int]:
    counts = series.value_counts(dropna=True)
    ranked = sorted(((str(k), int(v)) for k, v in counts.items()), key=lambda kv: (-kv[1], kv[0]))
    return dict(ranked[:top]), sum(v for _, v in ranked[top:])


@pytest.mark.parametrize("dtype", ["object", "string", "category"])
def test_category_counts_match_value_counts_with_the_rest_folded(dtype: str) -> None:
    rng = np.random.default_rng(SEED)
    labels = np.array([f"c{i:03d}" for i in range(300)], dtype=object)
    weights = 1.0 / np.arange(1, 301)
    values = rng.choice(labels, size=20_000, p=weights / weights.sum())
    values[rng.random(values.size) < 0.02] = None
    series = pd.Series(values, dtype=dtype)

    profile = _categorical(series, max_categories=20)
    top, rest = _value_counts_oracle(series, 20)
    observed = series.dropna().nunique()
    assert profile.counts == {**top, OTHER: rest}
    assert profile.n_unique == observed
    assert profile.n_other == observed - 20
    assert sum(profile.counts.values()) == profile.count - profile.missing
    assert list(profile.counts)[:20] == list(top)  # most frequent first


def test_no_folding_when_the_categories_fit() -> None:
    series = pd.Series(["b", "a", "b", "c"], dtype="category").cat.add_categories(["unused"])
    profile = _categorical(series)
    assert profile.counts == {"b": 2, "a": 1, "c": 1}
    assert (profile.n_unique, profile.n_other) == (3, 0)


def test_a_literal_other_value_is_counted_in_other() -> None:
    profile = _categorical(np.array(["__other__", "a", "a", "b"]), max_categories=5)
    assert profile.counts == {"a": 2, "b": 1, OTHER: 1}
    assert (profile.n_unique, profile.n_other) == (3, 1)


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(np.array([True, False, True]), id="numpy"),
        pytest.param(pd.Series([True, False, True]), id="pandas"),
        pytest.param(pd.array([True, False, True, pd.NA], dtype="boolean"), id="nullable"),
        pytest.param(pa.chunked_array([[True, False, True, None]]), id="arrow"),
    ],
)
def test_booleans_are_counted(values: Any) -> None:
    profile = profile_frame({"x": values})["x"]
    assert isinstance(profile, BooleanProfile)
    assert profile.kind == "boolean"
    assert profile.counts == {"True": 2, "False": 1}
    assert profile.missing == len(values) - 3


# -- datetimes ----------------------------------------------------------------------------


def test_tz_aware_datetimes_are_epoch_seconds_in_utc() -> None:
    local = pd.Series(
        pd.to_datetime(["2024-03-31 01:30", "2024-03-31 03:30", None, "2024-07-01 12:00"])
    ).dt.tz_localize("Europe/Paris")
    profile = profile_frame({"t": local})["t"]
    assert isinstance(profile, DatetimeProfile)
    assert profile.kind == "datetime"
    assert profile.timezone == "Europe/Paris"
    expected = [t.timestamp() for t in local.dropna()]
    assert profile.sample == tuple(sorted(expected))
    assert (profile.min, profile.max, profile.missing) == (min(expected), max(expected), 1)
    assert profile.min == dt.datetime(2024, 3, 31, 0, 30, tzinfo=dt.UTC).timestamp()

    utc = profile_frame({"t": local.dt.tz_convert("UTC")})["t"]
    naive = profile_frame({"t": local.dt.tz_convert(None)})["t"]
    arrow = profile_frame(pa.table({"t": local}))["t"]
    assert isinstance(utc, DatetimeProfile)
    assert isinstance(naive, DatetimeProfile)
    assert isinstance(arrow, DatetimeProfile)
    assert utc.sample == naive.sample == arrow.sample == profile.sample
    assert (utc.timezone, naive.timezone, arrow.timezone) == ("UTC", None, "Europe/Paris")


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns", "D"])
def test_datetime_units_agree(unit: str) -> None:
    values = np.array(["2001-02-03", "NaT", "1969-12-31"], dtype=f"datetime64[{unit}]")
    profile = profile_frame({"t": values})["t"]
    assert isinstance(profile, DatetimeProfile)
    assert profile.sample == (-86_400.0, 981_158_400.0)
    assert profile.missing == 1


def test_timedeltas_are_seconds() -> None:
    values = pd.Series(pd.to_timedelta(["1s", "2min", None]))
    assert _numeric(values).sample == (1.0, 120.0)


# -- inputs -------------------------------------------------------------------------------


def test_pandas_arrow_and_mapping_inputs_give_the_same_profile() -> None:
    rng = np.random.default_rng(SEED)
    n = 3_000
    frame = pd.DataFrame(
        {
            "f": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
            "i": rng.integers(-5, 50, n),
            "s": rng.choice(["a", "b", "c"], n),
            "b": rng.random(n) < 0.3,
            "t": pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC"),
        }
    )
    from_pandas = profile_frame(frame, seed=3)
    assert profile_frame(pa.Table.from_pandas(frame), seed=3) == from_pandas
    assert profile_frame(pa.Table.from_pandas(frame).to_batches()[0], seed=3) == from_pandas
    mapping = {name: frame[name].to_numpy() for name in ["f", "i", "s", "b"]}
    assert profile_frame(mapping, seed=3) == {k: from_pandas[k] for k in mapping}


def test_arrow_dictionary_decimal_and_null_columns() -> None:
    table = pa.table(
        {
            "dict": pa.array(["x", None, "x", "y"]).dictionary_encode(),
            "decimal": pa.array([1, 2, None, 4], pa.decimal128(5, 2)),
            "null": pa.nulls(4),
            "date": pa.array([0, 1, None, 2], pa.date32()),
        }
    )
    profiles = profile_frame(table)
    dictionary, decimal, nothing, date = profiles.values()
    assert isinstance(dictionary, CategoricalProfile) and dictionary.counts == {"x": 2, "y": 1}
    assert isinstance(decimal, NumericProfile) and decimal.sample == (1.0, 2.0, 4.0)
    assert isinstance(nothing, CategoricalProfile) and nothing.missing == 4
    assert nothing.counts == {}
    assert isinstance(date, DatetimeProfile) and date.sample == (0.0, 86_400.0, 172_800.0)


def test_build_profile_keeps_outputs_and_importance() -> None:
    rng = np.random.default_rng(SEED)
    features = pd.DataFrame({"x": rng.normal(size=200), "y": rng.choice(["u", "v"], 200)})
    proba = rng.random(200)
    outputs = pd.DataFrame({"proba_yes": proba, "prediction": np.where(proba > 0.5, "yes", "no")})
    profile = build_profile(
        features, outputs, feature_importance={"x": np.float64(0.75), "y": 0.25}, seed=5
    )
    assert profile.n_rows == 200
    assert list(profile.columns) == ["x", "y"]
    assert profile.outputs["proba_yes"] == profile_frame({"proba_yes": proba}, seed=5)["proba_yes"]
    assert profile.outputs["prediction"].kind == "categorical"
    assert profile.feature_importance == {"x": 0.75, "y": 0.25}
    assert (profile.seed, profile.created_with.sample_size) == (5, 1000)
    assert build_profile(features, seed=np.int64(5)).columns == profile.columns
    assert build_profile(features, {"score": proba}).outputs["score"].kind == "numeric"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        pytest.param([1, 2, 3], "got list", id="list"),
        pytest.param(np.zeros((2, 3, 4)), r"got a 3-d numpy array of shape \(2, 3, 4\)", id="3d"),
        pytest.param(np.zeros((2, 3)), "got a 2-d numpy array", id="2d"),
        pytest.param(
            {"x": np.zeros((2, 2))}, r"1-d array, got an array of shape \(2, 2\)", id="2d-col"
        ),
        pytest.param({"x": [1, 2], "y": [1]}, "columns of one length, got x=2, y=1", id="lengths"),
        pytest.param(
            pd.DataFrame([[1, 2]], columns=["a", "a"]), "duplicates: 'a'", id="duplicate-pandas"
        ),
        pytest.param(
            pa.table([[1], [2]], names=["a", "a"]), "duplicates: 'a'", id="duplicate-arrow"
        ),
        pytest.param({1: [1], "1": [2]}, "duplicates: '1'", id="duplicate-after-str"),
        pytest.param({"z": np.array([1j])}, "column 'z'", id="complex"),
        pytest.param(pa.table({"z": [[1], [2]]}), "type list<item: int64>", id="arrow-list"),
    ],
)
def test_bad_input_is_named(data: Any, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        profile_frame(data)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sample_size": 0}, "Expected an integer >= 1, got 0 - at sample_size"),
        ({"max_categories": 2.5}, "got 2.5 - at max_categories"),
        ({"seed": -1}, "integer >= 0, got -1 - at seed"),
        (
            {"feature_importance": {"x": float("nan")}},
            r"finite number, got nan - at feature_importance\['x'\]",
        ),
        ({"feature_importance": {"x": "high"}}, "got 'high'"),
        ({"outputs": {"score": [0.5]}}, r"one output per feature row \(2\), got 1 - at outputs"),
        ({"outputs": np.array([0.5, 0.1])}, "mapping of column name to 1-d array, got a 1-d numpy"),
    ],
)
def test_bad_options_are_named(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        build_profile({"x": [1.0, 2.0]}, **kwargs)


def test_a_malformed_profile_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError, match="Not a valid reference profile"):
        ReferenceProfile.from_json(b'{"n_rows": "many", "columns": {}}')
    with pytest.raises(InvalidInputError, match=r"'martian' - at `\$\.columns\[\.\.\.\]\.kind`"):
        ReferenceProfile.from_json(b'{"n_rows": 1, "columns": {"x": {"kind": "martian"}}}')


# -- JSON ---------------------------------------------------------------------------------


@st.composite
def frames(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(0, 40))

    def cells(elements: st.SearchStrategy[Any]) -> list[Any]:
        return draw(st.lists(elements, min_size=n, max_size=n))

    times = st.datetimes(dt.datetime(1700, 1, 1), dt.datetime(2250, 1, 1))
    candidates = {
        "float": pd.Series(cells(st.floats()), dtype="float64"),
        "float32": pd.Series(cells(st.floats(width=32)), dtype="float32"),
        "Int64": pd.Series(cells(st.none() | st.integers(-(2**62), 2**62)), dtype="Int64"),
        "uint8": pd.Series(cells(st.integers(0, 255)), dtype="uint8"),
        "text": pd.Series(cells(st.none() | st.text(max_size=4)), dtype="object"),
        "string": pd.Series(cells(st.none() | st.sampled_from("abcdef")), dtype="string"),
        "mixed": pd.Series(
            cells(st.none() | st.integers(0, 3) | st.text(max_size=1)), dtype=object
        ),
        "bool": pd.Series(cells(st.booleans()), dtype=bool),
        "category": pd.Series(cells(st.none() | st.sampled_from("xyz")), dtype="category"),
        "time": pd.Series(pd.to_datetime(cells(st.none() | times)), dtype="datetime64[us]")
        .dt.tz_localize("UTC")
        .dt.tz_convert("America/New_York"),
    }
    chosen = draw(st.lists(st.sampled_from(sorted(candidates)), unique=True))
    return pd.DataFrame({name: candidates[name] for name in chosen}, index=range(n))


@given(
    frame=frames(),
    sample_size=st.integers(1, 50),
    max_categories=st.integers(1, 5),
    seed=st.integers(0, 2**32),
)
@PROPERTY
def test_json_round_trip_keeps_every_profile(
    frame: pd.DataFrame, sample_size: int, max_categories: int, seed: int
) -> None:
    outputs = {"score": np.linspace(0.0, 1.0, len(frame))}
    profile = build_profile(
        frame, outputs, sample_size=sample_size, max_categories=max_categories, seed=seed
    )
    assert ReferenceProfile.from_json(profile.to_json()) == profile

    for column in [*profile.columns.values(), *profile.outputs.values()]:
        assert column.count == len(frame)
        present = column.count - column.missing
        if isinstance(column, NumericProfile):
            assert len(column.bin_counts) == len(column.bin_edges) + 1
            assert sum(column.bin_counts) == present
            assert list(column.bin_edges) == sorted(set(column.bin_edges))
            assert len(column.sample) <= sample_size
            assert list(column.sample) == sorted(column.sample)
        else:
            assert sum(column.counts.values()) == present
            assert len(column.counts) <= max_categories + 1


def test_profile_of_a_large_frame_stays_small() -> None:
    rng = np.random.default_rng(SEED)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=100_000) for i in range(20)})
    data = build_profile(frame, {"score": rng.random(100_000)}).to_json()
    assert len(data) < 500_000
    assert msgspec.json.decode(data)["n_rows"] == 100_000
