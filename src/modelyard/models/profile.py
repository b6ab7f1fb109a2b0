"""Reference profile: a small summary of the training data and of the model's outputs on it.

Monitoring compares production windows against this profile, never against the training
data, so it is computed once when the package is written and kept small (a few hundred
kilobytes for a hundred columns). Per column it holds what the drift tests need:

- numbers (and datetimes, as epoch seconds in UTC): quantiles, min, max, mean, std, a
  robust scale (median absolute deviation scaled to the normal, and the IQR), bins whose
  edges are the reference deciles with open tails (PSI), and a bounded sorted sample drawn
  without replacement (two-sample KS);
- categories (and booleans): the count of each of the ``max_categories`` most frequent
  values, the rest folded into ``"__other__"`` with the number of distinct values folded
  there, so an unseen category in production is a signal, not a silent drop (chi-square);
- for every column, the missing count and rate; infinities are counted apart from the
  quantiles (they fall into the tail bins).

Which profile a column gets is decided by its dtype: ints, floats and pandas' nullable
``Int64``/``Float64`` are numeric; ``bool``/``boolean`` are boolean; ``datetime64`` (with or
without a time zone) is a datetime; timedeltas are numeric seconds; strings, categories
and anything else are categorical, keyed by ``str(value)``.

>>> import numpy as np
>>> profile = build_profile(
...     {"age": np.array([20.0, 30.0, np.nan, 40.0]), "plan": np.array(["a", "b", "a", "a"])},
...     {"score": np.array([0.1, 0.4, 0.3, 0.9])},
... )
>>> profile.columns["age"].missing_rate, profile.columns["age"].median
(0.25, 30.0)
>>> profile.columns["plan"].counts
{'a': 3, 'b': 1}
>>> profile.outputs["score"].kind
'numeric'
>>> ReferenceProfile.from_json(profile.to_json()) == profile
True
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from statistics import NormalDist
from typing import Any, Final, NamedTuple, TypeAlias

import msgspec
import numpy as np
from numpy.typing import NDArray

from modelyard.errors import InvalidInputError

__all__ = [
    "BIN_LEVELS",
    "MAD_SCALE",
    "OTHER",
    "QUANTILE_LEVELS",
    "BooleanProfile",
    "CategoricalProfile",
    "ColumnProfile",
    "DatetimeProfile",
    "NumericProfile",
    "ProfileSettings",
    "ReferenceProfile",
    "build_profile",
    "profile_frame",
]

QUANTILE_LEVELS: Final = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
# Deciles: ten bins of about 10% each in the reference, the outer two open-ended, which is
# the usual binning for the population stability index.
BIN_LEVELS: Final = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
OTHER: Final = "__other__"
# Makes the MAD a consistent estimator of the standard deviation for normal data, as
# scipy.stats.median_abs_deviation(scale="normal") does.
MAD_SCALE: Final = 1.0 / NormalDist().inv_cdf(0.75)
# Beyond this magnitude squares and differences may overflow float64, so the moments are
# computed on values scaled by a power of two (which is exact) and scaled back.
_SAFE_EXPONENT: Final = 500

Floats: TypeAlias = NDArray[np.float64]


class _Profile(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="kind"):
    count: int
    """Rows, missing ones included."""
    missing: int
    """Rows with no value: None, NaN, pd.NA, NaT."""
    missing_rate: float
    """``missing / count`` (0.0 for an empty column)."""

    @property
    def kind(self) -> str:
        """``"numeric"``, ``"datetime"``, ``"categorical"`` or ``"boolean"``."""
        return str(type(self).__struct_config__.tag)


class NumericProfile(_Profile, frozen=True, kw_only=True, tag="numeric"):
    """A numeric column. The statistics are over its finite values; all-missing gives None.

    ``bin_counts[i]`` counts the values in ``[bin_edges[i-1], bin_edges[i])``, with an
    implicit ``-inf`` before the first edge and ``+inf`` after the last, so it has
    ``len(bin_edges) + 1`` entries summing to ``count - missing`` (infinities included).
    """

    n_pos_inf: int = 0
    n_neg_inf: int = 0
    n_unique: int = 0
    """Distinct finite values."""
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    """Population standard deviation (ddof=0)."""
    median: float | None = None
    iqr: float | None = None
    mad: float | None = None
    """Median absolute deviation times ``MAD_SCALE`` (about 1.4826)."""
    quantiles: dict[float, float] | None = None
    """Level -> value for ``QUANTILE_LEVELS``, linear interpolation as numpy.quantile."""
    bin_edges: tuple[float, ...] = ()
    bin_counts: tuple[int, ...] = (0,)
    sample: tuple[float, ...] = ()
    """Sorted finite values drawn without replacement, at most ``sample_size``."""


class DatetimeProfile(NumericProfile, frozen=True, kw_only=True, tag="datetime"):
    """A datetime column, profiled as a number: seconds since the Unix epoch in UTC."""

    timezone: str | None = None
    """The column's time zone, if it had one (the values are UTC either way)."""


class CategoricalProfile(_Profile, frozen=True, kw_only=True, tag="categorical"):
    """A categorical column: the most frequent values and how many others there were.

    ``counts`` lists at most ``max_categories`` values, most frequent first (ties by
    value), plus ``OTHER`` for all the rest; it sums to ``count - missing``. A value that
    is literally ``"__other__"`` is always counted in ``OTHER``.
    """

    n_unique: int = 0
    """Distinct non-missing values, those folded into ``OTHER`` included."""
    counts: dict[str, int] = msgspec.field(default_factory=dict)
    n_other: int = 0
    """Distinct values folded into ``OTHER``."""


class BooleanProfile(CategoricalProfile, frozen=True, kw_only=True, tag="boolean"):
    """A boolean column, counted as the categories ``"True"`` and ``"False"``."""


ColumnProfile: TypeAlias = NumericProfile | DatetimeProfile | CategoricalProfile | BooleanProfile


class ProfileSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How a profile was computed, so a production window can be profiled the same way."""

    sample_size: int = 1000
    max_categories: int = 100
    quantile_levels: tuple[float, ...] = QUANTILE_LEVELS
    bin_levels: tuple[float, ...] = BIN_LEVELS


class ReferenceProfile(msgspec.Struct, frozen=True, kw_only=True):
    """The profile of a model's training data (``columns``) and its outputs on it."""

    n_rows: int
    columns: dict[str, ColumnProfile]
    outputs: dict[str, ColumnProfile] = msgspec.field(default_factory=dict)
    """E.g. ``"prediction"``, ``"score"`` or ``"proba_<class>"``."""
    feature_importance: dict[str, float] | None = None
    seed: int = 0
    created_with: ProfileSettings = msgspec.field(default_factory=ProfileSettings)
    format_version: int = 1

    def to_json(self) -> bytes:
        """The profile as compact JSON."""
        return msgspec.json.encode(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> ReferenceProfile:
        """Read a profile written by ``to_json``; a malformed one is an InvalidInputError."""
        try:
            return msgspec.json.decode(data, type=cls)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
            raise InvalidInputError(f"Not a valid reference profile: {exc}") from exc


def build_profile(
    features: Any,
    outputs: Any = None,
    *,
    feature_importance: Mapping[str, float] | None = None,
    sample_size: int = 1000,
    max_categories: int = 100,
    seed: int = 0,
) -> ReferenceProfile:
    """Profile the training ``features`` and the model's ``outputs`` on them.

    ``features`` is a pandas DataFrame, a pyarrow Table or a mapping of column name to
    1-d array; ``outputs`` a DataFrame or a mapping of output name to 1-d array with one
    value per feature row.

    >>> p = build_profile({"x": [1, 2, 3]}, {"prediction": [0, 1, 1]})
    >>> p.n_rows, p.outputs["prediction"].mean
    (3, 0.6666666666666666)
    """
    settings = _settings(sample_size, max_categories, seed)
    seed = int(seed)
    n_rows, columns = _profile_data(features, settings, seed, what="features")
    profiled_outputs: dict[str, ColumnProfile] = {}
    if outputs is not None:
        n_outputs, profiled_outputs = _profile_data(outputs, settings, seed, what="outputs")
        if profiled_outputs and n_outputs != n_rows:
            raise InvalidInputError(
                f"Expected one output per feature row ({n_rows}), got {n_outputs}",
                loc="outputs",
            )
    return ReferenceProfile(
        n_rows=n_rows,
        columns=columns,
        outputs=profiled_outputs,
        feature_importance=_importance(feature_importance),
        seed=seed,
        created_with=settings,
    )


def profile_frame(
    data: Any, *, sample_size: int = 1000, max_categories: int = 100, seed: int = 0
) -> dict[str, ColumnProfile]:
    """Profile each column of a DataFrame, a pyarrow Table or a mapping of 1-d arrays.

    The sample of a column is drawn with a generator seeded by ``seed`` and the column's
    name, so the same data and seed always give the same profile.

    >>> profiles = profile_frame({"ok": [True, False, True], "city": ["Oslo", None, "Rome"]})
    >>> profiles["ok"].kind, profiles["ok"].counts
    ('boolean', {'True': 2, 'False': 1})
    >>> profiles["city"].missing, profiles["city"].counts
    (1, {'Oslo': 1, 'Rome': 1})
    """
    settings = _settings(sample_size, max_categories, seed)
    return _profile_data(data, settings, int(seed), what="data")[1]


# -- input ------------------------------------------------------------------------------


def _settings(sample_size: int, max_categories: int, seed: int) -> ProfileSettings:
    for name, value, least in (
        ("sample_size", sample_size, 1),
        ("max_categories", max_categories, 1),
        ("seed", seed, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
            raise InvalidInputError(f"Expected an integer >= {least}, got {value!r}", loc=name)
    return ProfileSettings(sample_size=int(sample_size), max_categories=int(max_categories))


def _profile_data(
    data: Any, settings: ProfileSettings, seed: int, *, what: str
) -> tuple[int, dict[str, ColumnProfile]]:
    n_rows, columns = _columns(data, what)
    return n_rows, {name: _profile_column(name, col, settings, seed) for name, col in columns}


def _columns(data: Any, what: str) -> tuple[int, list[tuple[str, Any]]]:
    """The row count and the (name, 1-d column) pairs of a frame-like input."""
    library = type(data).__module__.partition(".")[0]
    if library == "pandas":
        import pandas as pd

        if isinstance(data, pd.DataFrame):
            names = [str(c) for c in data.columns]
            _check_unique(names, what)
            return len(data), [(n, data.iloc[:, i]) for i, n in enumerate(names)]
    if library == "pyarrow":
        import pyarrow as pa

        if isinstance(data, pa.Table | pa.RecordBatch):
            names = [str(c) for c in data.column_names]
            _check_unique(names, what)
            return int(data.num_rows), list(zip(names, data.columns, strict=True))
    if isinstance(data, Mapping):
        names = [str(k) for k in data]
        _check_unique(names, what)
        columns = [(n, _one_dim(n, v, what)) for n, v in zip(names, data.values(), strict=True)]
        lengths = {n: len(c) for n, c in columns}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{n}={length}" for n, length in lengths.items())
            raise InvalidInputError(f"Expected columns of one length, got {shown}", loc=what)
        return next(iter(lengths.values()), 0), columns
    got = type(data).__name__
    if isinstance(data, np.ndarray):
        got = f"a {data.ndim}-d numpy array of shape {data.shape}"
    raise InvalidInputError(
        "Expected a pandas DataFrame, a pyarrow Table or a mapping of column name to "
        f"1-d array, got {got}",
        loc=what,
    )


def _check_unique(names: list[str], what: str) -> None:
    repeated = sorted(n for n, times in Counter(names).items() if times > 1)
    if repeated:
        raise InvalidInputError(
            f"Expected unique column names, got duplicates: {', '.join(map(repr, repeated))}."
            " Rename them so each column is profiled once",
            loc=what,
        )


def _one_dim(name: str, value: Any, what: str) -> Any:
    library = type(value).__module__.partition(".")[0]
    if library == "pandas" and getattr(value, "ndim", 0) == 1:
        import pandas as pd

        # An Index or an extension array (pd.array) is read as the Series holding it.
        return value if isinstance(value, pd.Series) else pd.Series(value)
    if library == "pyarrow" and hasattr(value, "type") and hasattr(value, "null_count"):
        return value
    array = np.asarray(value)
    if array.ndim != 1:
        raise InvalidInputError(
            f"Expected a 1-d array, got an array of shape {array.shape}", loc=f"{what}[{name!r}]"
        )
    return array


def _importance(values: Mapping[str, float] | None) -> dict[str, float] | None:
    if values is None:
        return None
    if not isinstance(values, Mapping):
        raise InvalidInputError(
            f"Expected a mapping of feature name to importance, got {type(values).__name__}",
            loc="feature_importance",
        )
    result: dict[str, float] = {}
    for key, value in values.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise InvalidInputError(
                f"Expected a finite number, got {value!r}", loc=f"feature_importance[{key!r}]"
            )
        result[str(key)] = number
    return result


# -- one column -------------------------------------------------------------------------


class _Numbers(NamedTuple):
    """A column read as floats, NaN where missing; datetimes as epoch seconds."""

    values: Floats
    datetime: bool = False
    timezone: str | None = None


class _Counts(NamedTuple):
    """A column read as (value, count) pairs of its non-missing values."""

    rows: int
    missing: int
    pairs: Iterable[tuple[Any, int]]
    boolean: bool = False


def _profile_column(name: str, column: Any, settings: ProfileSettings, seed: int) -> ColumnProfile:
    library = type(column).__module__.partition(".")[0]
    if library == "pandas":
        read = _from_pandas(name, column)
    elif library == "pyarrow":
        read = _from_arrow(name, column)
    else:
        read = _from_numpy(name, column)
    if isinstance(read, _Counts):
        return _categorical(read, settings.max_categories)
    # crc32, unlike hash(), is the same in every process, so profiles are reproducible.
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    stats = _numeric(read.values, rng, settings.sample_size)
    if read.datetime:
        return DatetimeProfile(**stats, timezone=read.timezone)
    return NumericProfile(**stats)


def _unsupported(name: str, dtype: object) -> InvalidInputError:
    return InvalidInputError(
        "Expected numbers, booleans, strings, categories or datetimes, "
        f"got a column of type {dtype}",
        loc=f"column {name!r}",
    )


def _from_numpy(name: str, array: NDArray[Any]) -> _Numbers | _Counts:
    kind = array.dtype.kind
    if kind == "b":
        true = int(np.count_nonzero(array))
        return _Counts(array.size, 0, [(True, true), (False, array.size - true)], boolean=True)
    if kind in "iuf":
        return _Numbers(array.astype(np.float64))
    if kind == "M":
        return _Numbers(_seconds(array), datetime=True)
    if kind == "m":
        return _Numbers(_seconds(array))
    if kind in "US":
        values, counts = np.unique(array, return_counts=True)
        return _Counts(array.size, 0, zip(values.tolist(), counts.tolist(), strict=True))
    if kind == "O":
        return _object_counts(array)
    raise _unsupported(name, array.dtype)


def _object_counts(array: NDArray[Any]) -> _Counts:
    present = [value for value in array.tolist() if not _is_missing(value)]
    return _Counts(array.size, array.size - len(present), Counter(map(str, present)).items())


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float | np.floating):
        return bool(np.isnan(value))
    if isinstance(value, np.datetime64 | np.timedelta64):
        return bool(np.isnat(value))
    return type(value).__name__ in ("NAType", "NaTType")  # pandas' NA and NaT


def _from_pandas(name: str, series: Any) -> _Numbers | _Counts:
    import pandas as pd

    dtype = series.dtype
    types = pd.api.types
    if types.is_bool_dtype(dtype):
        return _pandas_counts(series, boolean=True)
    if types.is_datetime64_any_dtype(dtype):
        zone = getattr(dtype, "tz", None)
        if zone is not None:
            series = series.dt.tz_convert(None)  # to UTC, then drop the zone
        array = series.to_numpy()
        if array.dtype.kind != "M":
            array = series.to_numpy(dtype="datetime64[ns]")
        return _Numbers(
            _seconds(array), datetime=True, timezone=None if zone is None else str(zone)
        )
    if types.is_timedelta64_dtype(dtype):
        return _Numbers(_seconds(series.to_numpy(dtype="timedelta64[ns]")))
    if types.is_complex_dtype(dtype):
        raise _unsupported(name, dtype)
    if types.is_numeric_dtype(dtype):
        return _Numbers(series.to_numpy(dtype=np.float64, na_value=np.nan))
    return _pandas_counts(series)


def _pandas_counts(series: Any, *, boolean: bool = False) -> _Counts:
    try:
        counts = series.value_counts(dropna=True, sort=False)
    except TypeError:  # unhashable cells (lists, dicts): count them by their str() instead
        return _object_counts(series.to_numpy(dtype=object))
    pairs = zip(counts.index.tolist(), counts.to_numpy().tolist(), strict=True)
    return _Counts(len(series), int(series.isna().sum()), pairs, boolean=boolean)


def _from_arrow(name: str, column: Any) -> _Numbers | _Counts:
    import pyarrow as pa
    import pyarrow.compute as pc

    dtype = column.type
    types = pa.types
    if types.is_boolean(dtype):
        return _arrow_counts(column, boolean=True)
    if types.is_integer(dtype) or types.is_floating(dtype) or types.is_decimal(dtype):
        return _Numbers(_arrow_numpy(pc.cast(column, pa.float64())))
    if types.is_timestamp(dtype) or types.is_date(dtype):
        zone = getattr(dtype, "tz", None)
        return _Numbers(_seconds(_arrow_numpy(column)), datetime=True, timezone=zone)
    if types.is_duration(dtype):
        return _Numbers(_seconds(_arrow_numpy(column)))
    if (
        types.is_string(dtype)
        or types.is_large_string(dtype)
        or types.is_string_view(dtype)
        or types.is_binary(dtype)
        or types.is_large_binary(dtype)
        or types.is_dictionary(dtype)
        or types.is_null(dtype)
    ):
        return _arrow_counts(column)
    raise _unsupported(name, dtype)


def _arrow_numpy(column: Any) -> NDArray[Any]:
    if hasattr(column, "chunks"):  # a ChunkedArray; an Array needs zero_copy_only=False
        return np.asarray(column.to_numpy())
    return np.asarray(column.to_numpy(zero_copy_only=False))


def _arrow_counts(column: Any, *, boolean: bool = False) -> _Counts:
    import pyarrow.compute as pc

    counts = pc.value_counts(column)
    pairs = [
        (value, count)
        for value, count in zip(
            counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True
        )
        if value is not None
    ]
    return _Counts(len(column), int(column.null_count), pairs, boolean=boolean)


_UNITS_PER_SECOND: Final = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_SECONDS_PER_UNIT: Final = {"m": 60, "h": 3_600, "D": 86_400, "W": 604_800}


def _seconds(array: NDArray[Any]) -> Floats:
    """Datetimes as seconds since the epoch, timedeltas as seconds; NaT as NaN."""
    unit, step = np.datetime_data(array.dtype)
    if unit not in _UNITS_PER_SECOND and unit not in _SECONDS_PER_UNIT:
        # Months and years have no fixed length; sub-nanosecond units are not worth keeping.
        finer = unit in ("ps", "fs", "as")
        array = array.astype(f"{array.dtype.kind}8[{'ns' if finer else 's'}]")
        unit, step = np.datetime_data(array.dtype)
    ticks = array.view(np.int64).astype(np.float64) * step
    if unit in _UNITS_PER_SECOND:
        seconds = ticks / _UNITS_PER_SECOND[unit]
    else:
        seconds = ticks * _SECONDS_PER_UNIT[unit]
    seconds[np.isnat(array)] = np.nan
    return seconds


# -- statistics -------------------------------------------------------------------------


def _categorical(read: _Counts, max_categories: int) -> CategoricalProfile:
    merged: dict[str, int] = {}
    for value, count in read.pairs:
        if count:
            key = str(value)  # values whose str() agree (1 and "1") are one category
            merged[key] = merged.get(key, 0) + int(count)
    other = merged.pop(OTHER, 0)
    n_other = 1 if other else 0
    n_unique = len(merged) + n_other
    ranked = sorted(merged.items(), key=lambda item: (-item[1], item[0]))
    counts = dict(ranked[:max_categories])
    for _, count in ranked[max_categories:]:
        other += count
        n_other += 1
    if other:
        counts[OTHER] = other
    cls = BooleanProfile if read.boolean else CategoricalProfile
    return cls(
        count=read.rows,
        missing=read.missing,
        missing_rate=read.missing / read.rows if read.rows else 0.0,
        n_unique=n_unique,
        counts=counts,
        n_other=n_other,
    )


def _numeric(values: NDArray[Any], rng: np.random.Generator, sample_size: int) -> dict[str, Any]:
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    missing = int(np.count_nonzero(np.isnan(values)))
    pos_inf = int(np.count_nonzero(values == np.inf))
    neg_inf = int(np.count_nonzero(values == -np.inf))
    stats: dict[str, Any] = {
        "count": n,
        "missing": missing,
        "missing_rate": missing / n if n else 0.0,
        "n_pos_inf": pos_inf,
        "n_neg_inf": neg_inf,
        "bin_counts": (neg_inf + pos_inf,),
    }
    ordered = np.sort(values[np.isfinite(values)])  # the one sort of the column
    if ordered.size == 0:
        return stats
    levels = np.array(QUANTILE_LEVELS + BIN_LEVELS)
    with np.errstate(over="ignore", invalid="ignore"):
        found = _sorted_quantiles(ordered, levels)
    quantiles = dict(zip(QUANTILE_LEVELS, found[: len(QUANTILE_LEVELS)].tolist(), strict=True))
    edges = np.unique(found[len(QUANTILE_LEVELS) :])
    bins = np.diff(np.searchsorted(ordered, edges, side="left"), prepend=0, append=ordered.size)
    bins[0] += neg_inf
    bins[-1] += pos_inf
    median = quantiles[0.5]
    return (
        stats
        | _spread(ordered, median)
        | {
            "n_unique": 1 + int(np.count_nonzero(ordered[1:] != ordered[:-1])),
            "min": float(ordered[0]),
            "max": float(ordered[-1]),
            "median": median,
            "iqr": _finite(quantiles[0.75] - quantiles[0.25]),
            "quantiles": quantiles,
            "bin_edges": tuple(edges.tolist()),
            "bin_counts": tuple(bins.tolist()),
            "sample": tuple(_sample(ordered, rng, sample_size).tolist()),
        }
    )


def _sorted_quantiles(ordered: Floats, levels: Floats) -> Floats:
    """numpy.quantile's default (linear) method on data already sorted, without sorting."""
    position = (ordered.size - 1) * levels
    below = np.floor(position).astype(np.intp)
    above = np.minimum(below + 1, ordered.size - 1)
    weight = position - below
    low, high = ordered[below], ordered[above]
    step = high - low
    # The same formula as numpy's _lerp, so the results agree to the last bit ...
    result = np.where(weight >= 0.5, high - step * (1 - weight), low + step * weight)
    # ... unless high - low overflows; this form cannot, and stays between the two.
    safe = np.clip(low * (1 - weight) + high * weight, low, high)
    return np.where(np.isfinite(result), result, safe)


def _spread(ordered: Floats, median: float) -> dict[str, float | None]:
    """Mean, standard deviation and scaled MAD, safe from overflow for extreme values."""
    peak = max(abs(float(ordered[0])), abs(float(ordered[-1])))
    exponent = math.frexp(peak)[1]
    if abs(exponent) < _SAFE_EXPONENT:
        exponent = 0
    scaled = np.ldexp(ordered, -exponent) if exponent else ordered
    centre = math.ldexp(median, -exponent)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        mean = float(np.mean(scaled))
        std = float(np.std(scaled))
        mad = float(np.median(np.abs(scaled - centre))) * MAD_SCALE
    return {
        "mean": _unscale(mean, exponent),
        "std": _unscale(std, exponent),
        "mad": _unscale(mad, exponent),
    }


def _unscale(value: float, exponent: int) -> float | None:
    try:
        return _finite(math.ldexp(value, exponent))
    except OverflowError:
        return None


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _sample(ordered: Floats, rng: np.random.Generator, size: int) -> Floats:
    """At most ``size`` values drawn without replacement; sorted because ``ordered`` is."""
    if ordered.size <= size:
        return ordered
    chosen = rng.choice(ordered.size, size=size, replace=False)
    chosen.sort()
    return ordered[chosen]
