"""Step outputs: every built-in materializer round-trips exactly, content-addressed and verified.

Round trips are generated (hypothesis) over pandas frames (nullable ints, floats with NaN
and -0.0, unicode strings, categoricals, tz-aware times, bools, non-default indexes),
NumPy dtypes/shapes/orders, nested JSON values, polars and pyarrow tables; the oracle is
the value itself (exact equality, bit patterns for floats). Digests are compared within
a process and across fresh processes; tampered blobs and manifests are refused.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from modelyard.errors import (
    ArtifactIntegrityError,
    InvalidInputError,
    NotFoundError,
    PipelineDefinitionError,
)
from modelyard.pipelines import Materializer, StoredOutput, register_materializer
from modelyard.pipelines.materializers import (
    AUTO,
    load_output,
    materializer_for,
    save_output,
    unregister_materializer,
)
from modelyard.store.artifacts import ArtifactStore

ROOT = Path(__file__).resolve().parents[2]
_STORE_DIR = tempfile.mkdtemp(prefix="mat-store-")
# every test process that collects this module makes one; only the one running it tears down
atexit.register(shutil.rmtree, _STORE_DIR, ignore_errors=True)
STORE = ArtifactStore(_STORE_DIR)  # shared by generated examples (content-addressed)
GENERATED = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module", autouse=True)
def _shared_store() -> Iterator[None]:
    yield
    shutil.rmtree(_STORE_DIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outputs that stay files are cached under the test's folder, not the user's."""
    monkeypatch.setenv("MODELYARD_CACHE_DIR", str(tmp_path / "output-cache"))


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


def roundtrip(value: Any, store: ArtifactStore = STORE, declared: Any = Any) -> Any:
    stored = save_output(value, store, declared=declared)
    again = save_output(value, store, declared=declared)
    assert again.digest == stored.digest  # same value, same digest
    assert again.manifest == stored.manifest
    return load_output(stored, store, declared=declared)


# -- oracles -----------------------------------------------------------------------------


def same_json(a: Any, b: Any) -> bool:
    """Exact equality: same types at every level, NaN equal to NaN, -0.0 unlike 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_json(a[k], b[k]) for k in a)
    return bool(a == b)


def assert_same_frame(back: pd.DataFrame, frame: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(back, frame, check_exact=True, check_freq=True)
    assert list(back.dtypes) == list(frame.dtypes)
    assert type(back.index) is type(frame.index)
    for name in frame.columns:
        if frame[name].dtype.kind == "f":  # NaN positions, and the signs of zeros
            nan = np.isnan(frame[name].to_numpy())
            assert np.array_equal(np.isnan(back[name].to_numpy()), nan)
            assert np.array_equal(np.signbit(back[name])[~nan], np.signbit(frame[name])[~nan])


# -- JSON values -------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**100), max_value=2**100)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.binary(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@GENERATED
@given(json_values)
def test_json_values_round_trip_exactly(value: Any) -> None:
    assert same_json(roundtrip(value), value)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -0.0,
        float("nan"),
        float("inf"),
        -float("inf"),
        2**200,
        "é\u2028\U0001f600",
        (),
        [],
        {},
        {"auc": 0.91, "folds": [0.9, float("nan")], "best": ("depth", 4)},
        {"d": 1, "t": [2], "f": "nan"},  # keys that look like the encoding's tags
        {"\ud800": "lone surrogate"},
    ],
)
def test_json_examples_round_trip_exactly(value: Any, store: ArtifactStore) -> None:
    stored = save_output(value, store)
    assert stored.materializer == "json"
    assert same_json(load_output(stored, store), value)


def test_numpy_scalars_inside_json_load_as_the_python_numbers_they_equal(
    store: ArtifactStore,
) -> None:
    value = {"auc": np.float64(0.75), "n": np.int64(3), "ok": np.bool_(True), "h": np.float32(0.5)}
    back = roundtrip(value, store, declared=dict[str, float | int | bool])
    assert back == {"auc": 0.75, "n": 3, "ok": True, "h": 0.5}
    assert [type(v) for v in back.values()] == [float, int, bool, float]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({1: "a"}, ["key 1 (int)", 'string "1"']),
        ({"a": {(1, 2): 3}}, ["output['a']", "(1, 2)"]),
        ({"a": [1, {2.5: 1}]}, ["output['a'][1]", "2.5 (float)"]),
        ({"frame": pd.DataFrame()}, ["output['frame']", "pandas.DataFrame"]),
        ({"s": {1, 2}}, ["output['s']", "set has no order"]),
        ([frozenset()], ["output[0]", "frozenset"]),
        ({"x": object()}, ["output['x']", "object"]),
    ],
)
def test_json_refuses_what_it_would_load_back_different(
    value: Any, words: list[str], store: ArtifactStore
) -> None:
    with pytest.raises(InvalidInputError) as info:
        save_output(value, store, where="step 'evaluate' output 'output'")
    message = str(info.value)
    assert "step 'evaluate' output 'output'" in message
    for word in words:
        assert word in message


@GENERATED
@given(
    st.dictionaries(
        st.integers() | st.floats(allow_nan=False) | st.booleans() | st.tuples(st.integers()),
        st.integers(),
        min_size=1,
        max_size=3,
    )
)
def test_any_dict_with_a_non_str_key_is_refused_never_coerced(value: dict[Any, Any]) -> None:
    with pytest.raises(InvalidInputError, match="Expected str dict keys"):
        save_output({"nested": value}, STORE)


def test_subclasses_of_json_types_are_refused_naming_the_base(store: ArtifactStore) -> None:
    from collections import OrderedDict
    from enum import IntEnum

    class Level(IntEnum):
        LOW = 1

    with pytest.raises(InvalidInputError, match=r"plain dict: convert it with dict"):
        save_output({"a": OrderedDict(b=1)}, store)
    with pytest.raises(InvalidInputError, match=r"plain int"):
        save_output([Level.LOW], store)


def test_deep_nesting_is_refused_in_one_line(store: ArtifactStore) -> None:
    value: Any = 1
    for _ in range(500):
        value = [value]
    with pytest.raises(InvalidInputError, match="nested at most"):
        save_output(value, store)


# -- NumPy -------------------------------------------------------------------------------

dtypes = (
    hnp.scalar_dtypes()
    | hnp.byte_string_dtypes(max_len=4)
    | hnp.unicode_string_dtypes(max_len=4)
    | hnp.array_dtypes(max_size=3)
)


@GENERATED
@given(
    hnp.arrays(dtypes, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)),
    st.booleans(),
)
def test_numpy_arrays_round_trip_bit_for_bit(array: np.ndarray, fortran: bool) -> None:
    if fortran:
        array = np.asfortranarray(array)
    back = roundtrip(array)
    assert type(back) is np.ndarray
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes(order="A") == array.tobytes(order="A")
    assert back.flags.f_contiguous == array.flags.f_contiguous
    assert back.flags.c_contiguous == array.flags.c_contiguous


@GENERATED
@given(
    hnp.from_dtype(np.dtype("float32"))
    | hnp.from_dtype(np.dtype("int8"))
    | hnp.from_dtype(np.dtype("M8[ns]"))
    | hnp.from_dtype(np.dtype("complex128"))
)
def test_numpy_scalars_round_trip_as_their_own_type(value: Any) -> None:
    back = roundtrip(value)
    assert type(back) is type(value)
    assert np.asarray(back).tobytes() == np.asarray(value).tobytes()


def test_object_arrays_and_masked_arrays_are_refused(store: ArtifactStore) -> None:
    with pytest.raises(InvalidInputError, match="only by pickling"):
        save_output(np.array([1, "a", None], dtype=object), store)
    with pytest.raises(PipelineDefinitionError, match=r"numpy\.ma\.MaskedArray"):
        save_output(np.ma.masked_array([1, 2], mask=[True, False]), store)


# -- pandas ------------------------------------------------------------------------------

ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"]
N = 6


def _column(kind: str, draw: Any) -> Any:
    if kind == "int_na":
        values = draw(
            st.lists(st.none() | st.integers(-(2**63), 2**63 - 1), min_size=N, max_size=N)
        )
        return pd.array(values, dtype="Int64")
    if kind == "int":
        return np.array(draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=N, max_size=N)))
    if kind == "float":
        return np.array(draw(st.lists(st.floats(), min_size=N, max_size=N)), dtype=np.float64)
    if kind == "float32":
        return np.array(
            draw(st.lists(st.floats(width=32), min_size=N, max_size=N)), dtype=np.float32
        )
    if kind == "str":
        return pd.array(
            draw(st.lists(st.none() | st.text(max_size=6), min_size=N, max_size=N)), dtype="str"
        )
    if kind == "object_str":
        return np.array(draw(st.lists(st.text(max_size=6), min_size=N, max_size=N)), dtype=object)
    if kind == "category":
        cats = draw(st.lists(st.text(min_size=1, max_size=3), min_size=1, max_size=4, unique=True))
        values = draw(st.lists(st.none() | st.sampled_from(cats), min_size=N, max_size=N))
        return pd.Categorical(values, categories=cats, ordered=draw(st.booleans()))
    if kind == "datetime_tz":
        values = draw(
            st.lists(
                st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),
                min_size=N,
                max_size=N,
            )
        )
        zone = draw(st.sampled_from(ZONES))
        return pd.DatetimeIndex(values).tz_localize("UTC").tz_convert(zone)
    if kind == "bool":
        return np.array(draw(st.lists(st.booleans(), min_size=N, max_size=N)))
    if kind == "bool_na":
        return pd.array(
            draw(st.lists(st.none() | st.booleans(), min_size=N, max_size=N)), dtype="boolean"
        )
    raise AssertionError(kind)


KINDS = [
    "int_na",
    "int",
    "float",
    "float32",
    "str",
    "object_str",
    "category",
    "datetime_tz",
    "bool",
    "bool_na",
]


@st.composite
def frames(draw: Any) -> pd.DataFrame:
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=5))
    data = {f"c{i}_{k}": _column(k, draw) for i, k in enumerate(kinds)}
    index_kind = draw(st.sampled_from(["default", "range", "int", "str", "datetime", "multi"]))
    if index_kind == "default":
        index: Any = None
    elif index_kind == "range":
        index = pd.RangeIndex(
            start=draw(st.integers(-5, 5)), step=draw(st.integers(1, 3)), stop=100
        )[:N]
        index.name = draw(st.none() | st.text(max_size=3))
    elif index_kind == "int":
        index = pd.Index(draw(st.lists(st.integers(-100, 100), min_size=N, max_size=N)), name="k")
    elif index_kind == "str":
        index = pd.Index(draw(st.lists(st.text(max_size=4), min_size=N, max_size=N)), name="key")
    elif index_kind == "datetime":
        index = pd.date_range("2024-01-01", periods=N, freq="D", tz="Europe/Paris", name="day")
    else:
        index = pd.MultiIndex.from_arrays([list("aabbcc"), range(N)], names=["g", "i"])
    return pd.DataFrame(data, index=index)


@GENERATED
@given(frames())
def test_pandas_frames_round_trip_exactly(frame: pd.DataFrame) -> None:
    assert_same_frame(roundtrip(frame, declared=pd.DataFrame), frame)


def test_pandas_example_frame_round_trips_with_every_kind(store: ArtifactStore) -> None:
    frame = pd.DataFrame(
        {
            "n": pd.array([1, None, -(2**63)], dtype="Int64"),
            "x": [float("nan"), -0.0, math.inf],
            "s": ["é", None, "\U0001f600"],
            "c": pd.Categorical(["b", "a", None], categories=["b", "a"], ordered=True),
            "t": pd.to_datetime(["2020-03-29 01:30", "2020-10-25 02:30", "2021-01-01 00:00"])
            .tz_localize("UTC")
            .tz_convert("Europe/Paris"),
            "b": [True, False, True],
            "o": np.array(["a", "b", "c"], dtype=object),
        },
        index=pd.Index([10, 5, 7], name="k"),
    )
    frame["o"] = frame["o"].astype(object)
    assert frame["o"].dtype == object
    back = roundtrip(frame, store, declared=pd.DataFrame)
    assert_same_frame(back, frame)
    assert back["o"].dtype == object


@GENERATED
@given(frames(), st.none() | st.text(max_size=4) | st.integers(-3, 3))
def test_pandas_series_round_trip_with_their_name(frame: pd.DataFrame, name: Any) -> None:
    series = frame.iloc[:, 0].rename(name)
    back = roundtrip(series, declared=pd.Series)
    pd.testing.assert_series_equal(back, series, check_exact=True)
    assert back.name == name and type(back.name) is type(name)


def test_a_frame_parquet_cannot_hold_exactly_is_refused_not_changed(store: ArtifactStore) -> None:
    dicts = pd.DataFrame({"x": [{"a": 1}, {"b": 2}]})  # would come back as structs + nulls
    with pytest.raises(InvalidInputError, match="does not round-trip through Parquet exactly"):
        save_output(dicts, store)
    mixed = pd.DataFrame({"x": [1, "a"]})
    with pytest.raises(InvalidInputError, match="never pickles"):
        save_output(mixed, store, where="step 'load' output 'output'")
    labels = pd.DataFrame({1: [1], "a": [2]})  # Parquet would make the 1 a "1"
    with pytest.raises(InvalidInputError, match="round-trip"):
        save_output(labels, store)
    dupes = pd.DataFrame([[1, 2]], columns=["a", "a"])
    with pytest.raises(InvalidInputError, match="unique column labels"):
        save_output(dupes, store)


def test_non_str_column_labels_and_attrs_round_trip(store: ArtifactStore) -> None:
    frame = pd.DataFrame(np.arange(6.0).reshape(3, 2))
    frame.attrs = {"source": "flights", "rows": 3}
    back = roundtrip(frame, store)
    assert_same_frame(back, frame)
    assert back.attrs == frame.attrs


# -- polars and pyarrow ------------------------------------------------------------------

table_columns = st.fixed_dictionaries(
    {
        "i": st.lists(st.none() | st.integers(-(2**63), 2**63 - 1), min_size=N, max_size=N),
        "f": st.lists(st.none() | st.floats(), min_size=N, max_size=N),
        "s": st.lists(st.none() | st.text(max_size=5), min_size=N, max_size=N),
        "b": st.lists(st.none() | st.booleans(), min_size=N, max_size=N),
        "t": st.lists(
            st.none() | st.datetimes(min_value=datetime(1970, 1, 1), timezones=st.just(UTC)),
            min_size=N,
            max_size=N,
        ),
    }
)


@GENERATED
@given(table_columns)
def test_polars_frames_round_trip_exactly(columns: dict[str, list[Any]]) -> None:
    frame = pl.DataFrame(
        columns,
        schema={
            "i": pl.Int64,
            "f": pl.Float64,
            "s": pl.String,
            "b": pl.Boolean,
            "t": pl.Datetime("us", "UTC"),
        },
    ).with_columns(pl.col("s").cast(pl.Categorical).alias("c"))
    back = roundtrip(frame, declared=pl.DataFrame)
    assert back.schema == frame.schema
    assert back.equals(frame, null_equal=True)
    assert np.array_equal(
        np.signbit(back["f"].fill_null(0.0).to_numpy()),
        np.signbit(frame["f"].fill_null(0.0).to_numpy()),
    )


@GENERATED
@given(table_columns)
def test_pyarrow_tables_round_trip_exactly(columns: dict[str, list[Any]]) -> None:
    table = pa.table(
        columns,
        schema=pa.schema(
            [
                ("i", pa.int64()),
                ("f", pa.float64()),
                ("s", pa.string()),
                ("b", pa.bool_()),
                ("t", pa.timestamp("us", tz="UTC")),
            ],
            metadata={b"origin": b"test"},
        ),
    )
    back = roundtrip(table, declared=pa.Table)
    assert back.schema.equals(table.schema, check_metadata=True)
    assert back.to_pydict().keys() == table.to_pydict().keys()
    for name in table.column_names:
        assert same_json(back[name].to_pylist(), table[name].to_pylist())


# -- content addressing and verification -------------------------------------------------


def test_digests_are_the_same_in_fresh_processes(tmp_path: Path) -> None:
    from tests.pipelines.mat_models import mat_trained_models
    from tests.pipelines.mat_values import mat_examples

    store = ArtifactStore(str(tmp_path / "a"))
    values = {**mat_examples(), **mat_trained_models()}
    here = {k: save_output(v, store).digest for k, v in values.items()}
    runs = []
    for name, seed in (("b", "1"), ("c", "2")):
        out = subprocess.run(
            [sys.executable, "-m", "tests.pipelines.mat_fresh", str(tmp_path / name)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        runs.append(json.loads(out.stdout))
    assert runs[0] == runs[1] == here
    assert len(set(here.values())) == len(here)  # different values, different digests


def test_different_values_get_different_digests(store: ArtifactStore) -> None:
    values = [
        [1, 2],
        (1, 2),
        [1.0, 2.0],
        {"a": 1},
        {"a": True},
        [0.0],
        [-0.0],
        "1",
        1,
        pd.Series([1, 2]),
        pd.DataFrame({0: [1, 2]}),
        np.array([1, 2]),
        np.array([1, 2], dtype=np.int32),
        np.int64(1),
    ]
    digests = [save_output(v, store).digest for v in values]
    assert len(set(digests)) == len(values)


def test_a_tampered_blob_is_refused_by_its_hash(store: ArtifactStore) -> None:
    stored = save_output(pd.DataFrame({"x": [1, 2, 3]}), store)
    (sha,) = stored.files.values()
    blob = Path(store.root) / "objects" / sha[:2] / sha[2:]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 1
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match="corrupted"):
        load_output(stored, store)


def test_a_changed_manifest_is_refused_by_the_digest(store: ArtifactStore) -> None:
    a = save_output({"x": 1}, store)
    b = save_output({"x": 2}, store)
    forged = StoredOutput.from_record(
        digest=a.digest,
        type=a.type,
        materializer=a.materializer,
        manifest=b.manifest_json(),
        size=b.size,
    )
    with pytest.raises(ArtifactIntegrityError, match="manifest hashes to"):
        load_output(forged, store)
    row = StoredOutput.from_record(
        digest=a.digest,
        type=a.type,
        materializer=a.materializer,
        manifest=a.manifest_json(),
        size=a.size,
    )
    assert load_output(row, store) == {"x": 1}


def test_a_missing_blob_is_a_not_found_naming_the_file(
    store: ArtifactStore, tmp_path: Path
) -> None:
    stored = save_output(np.arange(3), store)
    other = ArtifactStore(str(tmp_path / "empty"))
    with pytest.raises(NotFoundError, match=r"array\.npy"):
        load_output(stored, other)


# -- declared types and lookup -----------------------------------------------------------


class Opaque:
    pass


def test_a_type_without_materializer_names_it_and_how_to_register() -> None:
    with pytest.raises(PipelineDefinitionError) as info:
        materializer_for(Opaque, where="step 'train' output 'output'")
    message = str(info.value)
    assert "tests.pipelines.test_materializers.Opaque" in message
    assert "modelyard.pipelines.register_materializer(" in message
    assert "docs/pipelines.md#materializers" in message
    assert "pickle" in message
    for tp in (set[int], list[Opaque], dict[int, str], "pd.DataFrame", dict[str, pd.DataFrame]):
        with pytest.raises(PipelineDefinitionError, match="No materializer"):
            materializer_for(tp)


def test_value_without_materializer_is_refused_at_save(store: ArtifactStore) -> None:
    with pytest.raises(PipelineDefinitionError, match=r"test_materializers\.Opaque"):
        save_output(Opaque(), store, where="step 'x' output 'output'")


@pytest.mark.parametrize(
    ("tp", "name"),
    [
        (Any, "auto"),
        (object, "auto"),
        (dict[str, float], "json"),
        (tuple[int, str], "json"),
        (list[dict[str, float | None]], "json"),
        (dict[str, Any], "json"),
        (list[object], "json"),
        (dict[str, list[Any]], "json"),
        (int | None, "json"),
        (pd.DataFrame, "pandas.parquet"),
        (pd.Series, "pandas.parquet"),
        (pl.DataFrame, "polars.parquet"),
        (pa.Table, "arrow.parquet"),
        (np.ndarray, "numpy.npy"),
        (np.float32, "numpy.npy"),
        (pd.DataFrame | None, "auto"),
    ],
)
def test_lookup_by_declared_type(tp: Any, name: str) -> None:
    assert materializer_for(tp).name == name


@pytest.mark.parametrize(
    ("value", "declared"),
    [
        ({"auc": 0.9}, pd.DataFrame),
        (pd.DataFrame({"a": [1]}), dict[str, float]),
        ({"auc": "high"}, dict[str, float]),
        ((1, 2), tuple[int, str]),
        ([1, 2], tuple[int, int]),
        (pl.DataFrame({"a": [1]}), pd.DataFrame),
        (np.arange(3, dtype=np.int64), np.ndarray[Any, np.dtype[np.float64]]),
    ],
)
def test_a_value_not_of_its_declared_type_is_an_error_naming_both(
    value: Any, declared: Any, store: ArtifactStore
) -> None:
    with pytest.raises(PipelineDefinitionError) as info:
        save_output(value, store, declared=declared, where="step 'split' output 'train'")
    message = str(info.value)
    assert "step 'split' output 'train'" in message
    assert "declared as" in message and "returned a" in message


def test_a_subclass_of_a_declared_base_is_stored_by_its_own_type(store: ArtifactStore) -> None:
    class Frame(pd.DataFrame):
        pass

    stored = save_output(Frame({"a": [1]}), store, declared=pd.DataFrame)
    assert stored.materializer == "pandas.parquet"
    assert stored.type.endswith("Frame")
    assert isinstance(load_output(stored, store, declared=pd.DataFrame), pd.DataFrame)


class CsvFrames:
    """A user's materializer: pandas frames as CSV (to check lookup order)."""

    name = "test.csv"
    version = 1

    def handles(self, tp: Any) -> bool:
        return isinstance(tp, type) and issubclass(tp, pd.DataFrame)

    def save(self, value: Any, folder: Path) -> dict[str, Any]:
        value.to_csv(folder / "frame.csv", index=False)
        return {"rows": len(value)}

    def load(self, folder: Path, meta: Any, tp: Any) -> Any:
        return pd.read_csv(folder / "frame.csv")


class OpaqueJson:
    name = "test.opaque"
    version = 2

    def handles(self, tp: Any) -> bool:
        return isinstance(tp, type) and issubclass(tp, Opaque)

    def save(self, value: Any, folder: Path) -> dict[str, Any]:
        (folder / "sub").mkdir()
        (folder / "sub" / "v.txt").write_text("opaque")
        (folder / "empty").mkdir()
        return {}

    def load(self, folder: Path, meta: Any, tp: Any) -> Any:
        assert (folder / "empty").is_dir()
        assert (folder / "sub" / "v.txt").read_text() == "opaque"
        return Opaque()


@pytest.fixture
def user_materializers() -> Iterator[None]:
    yield
    unregister_materializer(CsvFrames.name)
    unregister_materializer(OpaqueJson.name)


def test_user_materializers_come_first_and_load_by_name(
    store: ArtifactStore, user_materializers: None
) -> None:
    frame = pd.DataFrame({"a": [1, 2]})
    assert save_output(frame, store).materializer == "pandas.parquet"
    register_materializer(CsvFrames())
    assert isinstance(CsvFrames(), Materializer)
    assert materializer_for(pd.DataFrame).name == "test.csv"
    stored = save_output(frame, store)
    assert stored.materializer == "test.csv" and stored.manifest["meta"] == {"rows": 2}
    pd.testing.assert_frame_equal(load_output(stored, store), frame)
    register_materializer(OpaqueJson(), first=False)
    opaque = save_output(Opaque(), store)
    assert opaque.manifest["dirs"] == ["empty"] and list(opaque.files) == ["sub/v.txt"]
    assert isinstance(load_output(opaque, store), Opaque)
    unregister_materializer(CsvFrames.name)
    with pytest.raises(NotFoundError, match=r"No materializer named 'test\.csv'"):
        load_output(stored, store)


def test_bad_registrations_are_refused() -> None:
    class NoName:
        version = 1

    class BadVersion(CsvFrames):
        version = 0  # type: ignore[assignment]

    class TakesBuiltin(CsvFrames):
        name = "json"

    for bad, loc in ((NoName(), "name"), (BadVersion(), "version"), (TakesBuiltin(), "name")):
        with pytest.raises(InvalidInputError, match=f"materializer.{loc}"):
            register_materializer(bad)  # type: ignore[arg-type]


def test_a_version_change_refuses_old_outputs(
    store: ArtifactStore, user_materializers: None
) -> None:
    register_materializer(OpaqueJson())
    stored = save_output(Opaque(), store)

    class Newer(OpaqueJson):
        version = 3

    register_materializer(Newer())
    with pytest.raises(InvalidInputError, match="version 2; this process has version 3"):
        load_output(stored, store)


def test_auto_is_no_materializer_itself() -> None:
    with pytest.raises(InvalidInputError):
        AUTO.save(1, Path("."))


# -- paths -------------------------------------------------------------------------------


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_a_file_is_copied_in_and_loads_as_a_read_only_verified_copy(
    store: ArtifactStore, tmp_path: Path
) -> None:
    source = tmp_path / "work" / "report.csv"
    source.parent.mkdir()
    source.write_bytes(b"a,b\n1,2\n")
    stored = save_output(source, store, declared=Path)
    assert stored.materializer == "path.file" and list(stored.files) == ["report.csv"]
    link = tmp_path / "latest.csv"
    link.symlink_to(source)
    assert list(save_output(link, store).files) == ["latest.csv"]  # the link's own name
    source.write_bytes(b"changed after the step")  # the output is the content at save time
    cache = tmp_path / "cache"
    back = load_output(stored, store, declared=Path, cache_dir=cache)
    assert back == cache / stored.digest / "report.csv"
    assert back.read_bytes() == b"a,b\n1,2\n"
    assert mode(back) == 0o444 and mode(back.parent) == 0o555
    # a damaged cached copy is noticed and fetched again
    back.chmod(0o644)
    back.write_bytes(b"tampered")
    again = load_output(stored, store, cache_dir=cache)
    assert again == back and again.read_bytes() == b"a,b\n1,2\n" and mode(again) == 0o444


def test_a_folder_round_trips_with_nested_and_empty_folders(
    store: ArtifactStore, tmp_path: Path
) -> None:
    source = tmp_path / "shards"
    (source / "a" / "b").mkdir(parents=True)
    (source / "empty").mkdir()
    (source / "top.txt").write_text("top")
    (source / "a" / "b" / "deep.bin").write_bytes(bytes(range(256)))
    (source / "link.txt").symlink_to(source / "top.txt")  # a link to a file: its content
    stored = save_output(source, store)
    assert stored.materializer == "path.folder"
    assert stored.manifest["dirs"] == ["shards/empty"]
    back = load_output(stored, store, cache_dir=tmp_path / "cache")
    assert back.name == "shards"
    assert tree(back) == {**tree(source), "link.txt": b"top"}
    assert (back / "empty").is_dir() and mode(back / "a") == 0o555
    assert save_output(source, store).digest == stored.digest
    (source / "top.txt").write_text("top!")
    assert save_output(source, store).digest != stored.digest


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="/\\\x00"), min_size=1, max_size=8
).filter(lambda n: n not in (".", ".."))


@GENERATED
@given(
    st.dictionaries(
        st.lists(names, min_size=1, max_size=3).map(tuple), st.binary(max_size=64), max_size=6
    )
)
def test_generated_folders_round_trip(files: dict[tuple[str, ...], bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "out"
        root.mkdir()
        written: dict[str, bytes] = {}
        for parts, data in files.items():
            path = root.joinpath(*parts)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            except (IsADirectoryError, FileExistsError, NotADirectoryError, OSError):
                continue  # a name already used as a folder (or a file) above
            written["/".join(parts)] = data
        back = load_output(save_output(root, STORE), STORE, cache_dir=Path(tmp) / "cache")
        assert tree(back) == tree(root)


def test_bad_paths_are_refused_in_one_line(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        save_output(tmp_path / "missing.csv", store, where="step 'export' output 'output'")
    folder = tmp_path / "with_link"
    folder.mkdir()
    (folder / "elsewhere").symlink_to(tmp_path)
    with pytest.raises(InvalidInputError, match="link to a folder"):
        save_output(folder, store)
    fifo_folder = tmp_path / "with_fifo"
    fifo_folder.mkdir()
    os.mkfifo(fifo_folder / "pipe")
    with pytest.raises(InvalidInputError, match="special file"):
        save_output(fifo_folder, store)
    dangling = tmp_path / "dangling"
    dangling.mkdir()
    (dangling / "gone").symlink_to(tmp_path / "nothing")
    with pytest.raises(InvalidInputError, match="link to nothing"):
        save_output(dangling, store)


# -- models ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained() -> dict[str, Any]:
    from tests.pipelines.mat_models import mat_trained_models

    return mat_trained_models()


def _proba(model: Any, frame: pd.DataFrame) -> np.ndarray:
    import xgboost

    if isinstance(model, xgboost.Booster):
        return np.asarray(model.predict(xgboost.DMatrix(frame)))
    return np.asarray(model.predict_proba(frame))


@pytest.mark.parametrize("name", ["hgb", "pipeline", "xgboost", "xgboost_booster", "lightgbm"])
def test_models_load_back_predicting_exactly_the_same(
    name: str, trained: dict[str, Any], store: ArtifactStore
) -> None:
    from tests.pipelines.mat_models import mat_data

    model = trained[name]
    declared = type(model)
    assert materializer_for(declared).name == "model.package"
    stored = save_output(model, store, declared=declared)
    assert stored.materializer == "model.package"
    assert save_output(model, store, declared=declared).digest == stored.digest
    back = load_output(stored, store, declared=declared)
    frame, _ = mat_data(500)
    expected = _proba(model, frame)
    got = back.predict_proba(frame) if name == "xgboost_booster" else _proba(back, frame)
    if name == "xgboost_booster":
        got = got[:, 1]  # the wrapper gives both classes' columns
    assert np.array_equal(got, expected)
    if name in ("hgb", "pipeline", "xgboost"):
        assert type(back) is type(model)


def test_a_model_holding_untrusted_types_is_refused(
    trained: dict[str, Any], store: ArtifactStore
) -> None:
    from modelyard.models.flavors import LoadOptions
    from modelyard.pipelines.materializers import load_options

    stored = save_output(trained["pipeline"], store)
    narrow = LoadOptions(trusted_types=("sklearn.ensemble.",))
    with load_options(narrow), pytest.raises(InvalidInputError, match="does not trust"):
        load_output(stored, store)


def test_a_python_model_loads_when_its_class_is_declared_or_code_is_trusted(
    trained: dict[str, Any], store: ArtifactStore
) -> None:
    from modelyard.config import DEFAULT_TRUSTED_TYPES
    from modelyard.models.flavors import LoadOptions
    from modelyard.pipelines.materializers import load_options
    from tests.pipelines.mat_models import MatThreshold, mat_data

    model = trained["custom"]
    stored = save_output(model, store, declared=MatThreshold)
    frame, _ = mat_data(50)
    back = load_output(stored, store, declared=MatThreshold)
    assert type(back) is MatThreshold
    assert np.array_equal(back.predict_proba(frame), model.predict_proba(frame))
    with pytest.raises(InvalidInputError, match="trust_code"):
        load_output(stored, store)
    with load_options(LoadOptions(DEFAULT_TRUSTED_TYPES, trust_code=True)):
        assert load_output(stored, store).cut == 0.25
    trusting = LoadOptions(DEFAULT_TRUSTED_TYPES, trust_code=True)
    assert load_output(stored, store, model_options=trusting).cut == 0.25


def test_a_tampered_model_file_is_refused_by_its_hash(
    trained: dict[str, Any], store: ArtifactStore
) -> None:
    stored = save_output(trained["hgb"], store)
    sha = stored.files["model.skops"]
    blob = Path(store.root) / "objects" / sha[:2] / sha[2:]
    data = bytearray(blob.read_bytes())
    data[-100] ^= 0xFF
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match=r"model\.skops"):
        load_output(stored, store)


def test_model_types_are_looked_up_by_class() -> None:
    import lightgbm
    import xgboost
    from sklearn.base import BaseEstimator
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline

    from tests.pipelines.mat_models import MatThreshold

    for tp in (
        HistGradientBoostingClassifier,
        Pipeline,
        BaseEstimator,
        xgboost.XGBClassifier,
        xgboost.Booster,
        lightgbm.LGBMClassifier,
        lightgbm.Booster,
        MatThreshold,
    ):
        assert materializer_for(tp).name == "model.package", tp


# -- garbage collection ------------------------------------------------------------------


def test_gc_keeps_every_blob_pipeline_outputs_and_step_logs_reference(
    tmp_path: Path, settings: Any
) -> None:
    from sqlalchemy import select

    from modelyard.pipelines import run_pipeline
    from modelyard.pipelines.executors import client_for
    from modelyard.registry.client import ModelRegistry
    from modelyard.store.schema import pipeline_steps
    from tests.pipelines import mat_models

    run = run_pipeline(
        mat_models.mat_outputs,
        {"rows": 7, "folder": str(tmp_path / "reports")},
        settings=settings,
        executor="inline",
    )
    assert run.status == "completed"
    client = client_for(settings)
    with client.db.read() as conn:
        logs = set(conn.execute(select(pipeline_steps.c.logs_sha256)).scalars()) - {None}
    assert logs  # mat_array printed
    # everything older than the grace period (here: all of it) goes unless referenced
    for path in Path(client.artifacts.root, "objects").rglob("*"):
        if path.is_file():
            os.utime(path, (1, 1))
    report = ModelRegistry(settings, db=client.db, artifacts=client.artifacts).collect_garbage(
        grace_s=0
    )
    assert not [item for item in report.items if item.kind == "blob"]
    for sha in logs:
        assert client.artifacts.exists(sha)
    frame = run.load("mat_frame")
    assert frame["x"].tolist() == [float(i) for i in range(7)]
    assert run.load("mat_array").tolist() == [2.0 * i for i in range(7)]
    folder = run.load("mat_report")
    assert (folder / "summary.txt").read_text() == "rows=7\n" and (folder / "empty").is_dir()


# -- declared types, generated -----------------------------------------------------------

scalar_types = st.sampled_from([int, float, str, bool, bytes, type(None)])
annotations = st.recursive(
    scalar_types,
    lambda inner: (
        st.builds(lambda t: list[t], inner)  # type: ignore[valid-type]
        | st.builds(lambda t: tuple[t, ...], inner)  # type: ignore[valid-type]
        | st.builds(lambda a, b: tuple[a, b], inner, inner)  # type: ignore[valid-type]
        | st.builds(lambda t: dict[str, t], inner)  # type: ignore[valid-type]
        | st.builds(lambda t: t | None, inner)
    ),
    max_leaves=4,
)


def _spoil(value: Any, tp: Any, draw: Any) -> Any:
    """``value`` (a ``tp``) with one part, at a random depth, replaced by an Opaque."""
    import typing

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list and value and draw(st.booleans()):
        i = draw(st.integers(0, len(value) - 1))
        return [*value[:i], _spoil(value[i], args[0], draw), *value[i + 1 :]]
    if origin is list:
        return [*value, Opaque()]
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return (*value, Opaque())
    if origin is tuple:
        i = draw(st.integers(0, 1))
        parts = list(value)
        parts[i] = _spoil(parts[i], args[i], draw)
        return tuple(parts)
    if origin is dict:
        return {**value, "\x00spoiled": Opaque()}
    return Opaque()


@GENERATED
@given(st.data(), annotations)
def test_values_of_the_declared_type_match_and_spoiled_ones_do_not(data: Any, tp: Any) -> None:
    from modelyard.pipelines.materializers import matches_type

    value = data.draw(st.from_type(tp))
    assert matches_type(value, tp), (value, tp)
    assert materializer_for(tp).name in ("json", "auto")
    if tp is not type(None) and not (isinstance(tp, type) and value is None):
        spoiled = _spoil(value, tp, data.draw)
        if not (typing_union(tp) and matches_any_arm(spoiled, tp)):
            assert not matches_type(spoiled, tp), (spoiled, tp)
            with pytest.raises(PipelineDefinitionError, match="declared as"):
                save_output(spoiled, STORE, declared=tp, where="step 's' output 'o'")


def typing_union(tp: Any) -> bool:
    import types
    import typing

    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def matches_any_arm(value: Any, tp: Any) -> bool:
    import typing

    from modelyard.pipelines.materializers import matches_type

    return any(matches_type(value, arm) for arm in typing.get_args(tp))
