"""Data set digests: every cell counts, and only the content and schema do.

Two claims, tested with generated frames: a change to any one cell (or a column's
name or type, or the row count) changes the digest; and the same content with the
same schema gives the same digest however it was built (pandas or arrow, one chunk
or many, a slice of a larger array, bytes hidden under a null).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from modelyard.errors import ConflictError, InvalidInputError, NotFoundError
from modelyard.tracking.client import TrackingClient
from modelyard.tracking.digest import digest_frame, digest_input, digest_path

SEED = 20240611
PROPERTY = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _schema(table: pa.Table) -> list[dict[str, str]]:
    return [{"name": f.name, "type": str(f.type)} for f in table.schema]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- every kind of input ----------------------------------------------------------------


def test_every_input_kind_digests_the_same_columns() -> None:
    rng = np.random.default_rng(SEED)
    matrix = rng.normal(size=(50, 3))
    matrix[4, 1] = np.nan
    columns = {f"c{i}": matrix[:, i] for i in range(3)}
    table = pa.table(columns)
    inputs: dict[str, Any] = {
        "numpy": matrix,
        "numpy-fortran": np.asfortranarray(matrix),
        "arrow": table,
        "batch": table.to_batches()[0],
        "dict": columns,
        "pandas": pd.DataFrame(matrix, columns=list(columns)),
    }
    digests = {kind: digest_frame(data) for kind, data in inputs.items()}
    for kind, found in digests.items():
        assert found.num_rows == 50, kind
        assert found.schema == _schema(table), kind
        assert found.digest == digests["arrow"].digest, kind
        assert found.source is None
    assert digest_frame(table, source="s3://bucket/x").source == "s3://bucket/x"
    assert re_hex(digests["arrow"].digest)


def re_hex(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def test_one_dimensional_array_and_series_are_one_column() -> None:
    values = np.arange(10, dtype=np.int64)
    as_array = digest_frame(values)
    assert as_array.schema == [{"name": "c0", "type": "int64"}]
    assert as_array.digest == digest_frame(pa.table({"c0": values})).digest
    series = digest_frame(pd.Series(values, name="c0"))
    assert series.digest == as_array.digest


def test_pandas_and_arrow_agree_when_the_schema_is_the_same() -> None:
    table = pa.table(
        {
            "x": pa.array([1.5, None, 3.0, math.inf], pa.float64()),
            "n": pa.array([1, 2, 3, 4], pa.int64()),
            "s": pa.array(["a", None, "", "d"], pa.large_string()),
            "b": pa.array([True, False, True, True]),
            "t": pa.array(
                [dt.datetime(2024, 1, 1), None, dt.datetime(2024, 1, 3), dt.datetime(1999, 12, 31)],
                pa.timestamp("us"),
            ),
        }
    )
    frame = table.to_pandas()
    from_pandas = digest_frame(frame)
    assert from_pandas.schema == _schema(table)  # the precondition of the claim
    assert from_pandas.digest == digest_frame(table).digest
    # the same values as pandas types that arrow maps elsewhere: a different schema
    frame["n"] = frame["n"].astype("int32")
    assert digest_frame(frame).digest != from_pandas.digest


# -- any single cell ----------------------------------------------------------------------

_TEXT = st.text(alphabet="ab c\u00e9\u4e2d'\n", max_size=4)
_MOMENT = st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2040, 1, 1))
# value strategies for the cells of each pandas dtype; None is pandas' missing value
_CELLS: dict[str, st.SearchStrategy[Any]] = {
    "float": st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    "int": st.integers(-(2**62), 2**62),
    "str": st.one_of(st.none(), _TEXT),
    "bool": st.booleans(),
    "category": st.one_of(st.none(), st.sampled_from(["lo", "mid", "hi"])),
    "datetime": st.one_of(st.none(), _MOMENT),
}


def _series(kind: str, values: list[Any]) -> pd.Series:
    if kind == "float":
        return pd.Series([math.nan if v is None else v for v in values], dtype="float64")
    if kind == "int":
        return pd.Series(values, dtype="int64")
    if kind == "str":
        return pd.Series(values, dtype="object")
    if kind == "bool":
        return pd.Series(values, dtype="bool")
    if kind == "category":
        return pd.Series(pd.Categorical(values, categories=["lo", "mid", "hi"]))
    return pd.Series(values, dtype="datetime64[us]")


def _frame(kinds: list[str], columns: list[list[Any]]) -> pd.DataFrame:
    return pd.DataFrame(
        {f"{k}_{i}": _series(k, v) for i, (k, v) in enumerate(zip(kinds, columns, strict=True))}
    )


def _missing(kind: str, value: Any) -> bool:
    return value is None or (kind == "float" and math.isnan(value))


def _same_cell(kind: str, a: Any, b: Any) -> bool:
    """Whether pandas stores the two values identically (NaN and None are both missing)."""
    if _missing(kind, a) or _missing(kind, b):
        return _missing(kind, a) and _missing(kind, b)
    return bool(a == b) and repr(a) == repr(b)  # repr tells 0.0 from -0.0


@st.composite
def _frames(draw: st.DrawFn, min_rows: int = 0) -> tuple[list[str], list[list[Any]]]:
    kinds = draw(st.lists(st.sampled_from(sorted(_CELLS)), min_size=1, max_size=6))
    rows = draw(st.integers(min_rows, 40))
    columns = [draw(st.lists(_CELLS[k], min_size=rows, max_size=rows)) for k in kinds]
    return kinds, columns


@PROPERTY
@given(data=st.data(), frame=_frames(min_rows=1))
def test_a_change_to_any_cell_changes_the_digest(
    data: st.DataObject, frame: tuple[list[str], list[list[Any]]]
) -> None:
    kinds, columns = frame
    col = data.draw(st.integers(0, len(kinds) - 1), label="column")
    row = data.draw(st.integers(0, len(columns[0]) - 1), label="row")
    kind = kinds[col]
    new = data.draw(_CELLS[kind], label="new value")
    assume(not _same_cell(kind, columns[col][row], new))
    changed = [list(c) for c in columns]
    changed[col][row] = new

    before = digest_frame(_frame(kinds, columns))
    after = digest_frame(_frame(kinds, changed))
    assert after.digest != before.digest
    assert after.num_rows == before.num_rows
    # and the digest is a function of the content: building it again gives the same one
    assert digest_frame(_frame(kinds, columns)).digest == before.digest


@PROPERTY
@given(frame=_frames(min_rows=1))
def test_dropping_a_row_changes_the_digest(frame: tuple[list[str], list[list[Any]]]) -> None:
    kinds, columns = frame
    full = digest_frame(_frame(kinds, columns))
    shorter = digest_frame(_frame(kinds, [c[:-1] for c in columns]))
    assert shorter.num_rows == full.num_rows - 1
    assert shorter.digest != full.digest


def test_a_change_deep_in_a_large_frame_changes_the_digest() -> None:
    # MLflow hashes the first 10,000 rows only; row 15,000 must count here
    rng = np.random.default_rng(SEED)
    n = 20_000
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "k": rng.integers(0, 1_000, size=n),
            "s": pd.Series([f"id-{i}" for i in rng.integers(0, 10**6, size=n)], dtype="object"),
            "b": rng.random(n) < 0.5,
        }
    )
    base = digest_frame(frame)
    assert base.num_rows == n
    changes = {"x": 0.5, "k": -1, "s": "changed", "b": None}
    for row in (15_000, n - 1):
        for column, value in changes.items():
            edited = frame.copy()
            edited.loc[row, column] = (
                value if value is not None else not bool(frame.loc[row, column])
            )
            assert digest_frame(edited).digest != base.digest, (column, row, f"seed={SEED}")
    assert digest_frame(frame.copy()).digest == base.digest


# -- the same content built differently ---------------------------------------------------

_ARROW_CELLS: dict[str, tuple[pa.DataType, st.SearchStrategy[Any]]] = {
    "f64": (pa.float64(), st.one_of(st.none(), st.floats(allow_nan=True))),
    "i32": (pa.int32(), st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1))),
    "str": (pa.string(), st.one_of(st.none(), _TEXT)),
    "lstr": (pa.large_string(), st.one_of(st.none(), _TEXT)),
    "bin": (pa.binary(), st.one_of(st.none(), st.binary(max_size=3))),
    "bool": (pa.bool_(), st.one_of(st.none(), st.booleans())),
    "ts": (pa.timestamp("us"), st.one_of(st.none(), _MOMENT)),  # exact: datetime has us
    "date": (pa.date32(), st.one_of(st.none(), st.dates())),
}


@st.composite
def _arrow_tables(draw: st.DrawFn) -> pa.Table:
    kinds = draw(st.lists(st.sampled_from(sorted(_ARROW_CELLS)), min_size=1, max_size=5))
    rows = draw(st.integers(0, 60))
    arrays = {}
    for i, kind in enumerate(kinds):
        type_, cells = _ARROW_CELLS[kind]
        values = draw(st.lists(cells, min_size=rows, max_size=rows))
        arrays[f"{kind}_{i}"] = pa.array(values, type_)
    return pa.table(arrays)


@PROPERTY
@given(table=_arrow_tables(), data=st.data())
def test_chunks_and_slices_do_not_change_the_digest(table: pa.Table, data: st.DataObject) -> None:
    want = digest_frame(table)
    # many chunks instead of one
    size = data.draw(st.integers(1, 7), label="chunk size")
    chunked = pa.Table.from_batches(table.to_batches(max_chunksize=size), schema=table.schema)
    assert digest_frame(chunked).digest == want.digest
    # a slice of a larger table: every array has an offset, bitmaps start mid-byte
    head = data.draw(st.integers(0, 11), label="rows before")
    padding = table.slice(0, min(head, table.num_rows))
    bigger = pa.concat_tables([padding, table, padding]).combine_chunks()
    sliced = bigger.slice(padding.num_rows, table.num_rows)
    assert repr(sliced.to_pylist()) == repr(table.to_pylist())  # equals() fails on NaN
    assert digest_frame(sliced).digest == want.digest
    assert digest_frame(sliced).num_rows == table.num_rows
    # a fresh copy from Python values
    assert digest_frame(pa.Table.from_pylist(table.to_pylist(), table.schema)).digest == (
        want.digest
    )


def _same_arrow_cell(kind: str, a: Any, b: Any) -> bool:
    if kind == "f64":  # null and NaN are one missing float
        a = None if a is None or math.isnan(a) else a
        b = None if b is None or math.isnan(b) else b
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, dt.datetime) and isinstance(b, dt.datetime):
        # fold only disambiguates local wall times: Arrow stores the same instant either way
        a, b = a.replace(fold=0), b.replace(fold=0)
    return bool(a == b) and repr(a) == repr(b)


@PROPERTY
@given(table=_arrow_tables(), data=st.data())
def test_a_change_to_any_arrow_cell_changes_the_digest(
    table: pa.Table, data: st.DataObject
) -> None:
    assume(table.num_rows > 0)
    col = data.draw(st.integers(0, table.num_columns - 1), label="column")
    row = data.draw(st.integers(0, table.num_rows - 1), label="row")
    kind = table.column_names[col].rsplit("_", 1)[0]
    type_, cells = _ARROW_CELLS[kind]
    values = table.column(col).to_pylist()
    new = data.draw(cells, label="new value")
    assume(not _same_arrow_cell(kind, values[row], new))
    values[row] = new
    changed = table.set_column(col, table.field(col), pa.array(values, type_))
    assert digest_frame(changed).digest != digest_frame(table).digest


def test_bytes_under_a_null_do_not_count() -> None:
    # Arrow leaves the slot of a null undefined: equal arrays may hold different bytes there
    clean = pa.array(["a", None, "b"], pa.string())
    offsets = pa.py_buffer(np.array([0, 1, 4, 5], dtype=np.int32).tobytes())
    validity = pa.py_buffer(np.packbits([1, 0, 1, 0, 0, 0, 0, 0], bitorder="little").tobytes())
    dirty = pa.StringArray.from_buffers(3, offsets, pa.py_buffer(b"axyzb"), validity)
    assert dirty.equals(clean)
    assert (
        digest_frame(pa.table({"s": dirty})).digest == digest_frame(pa.table({"s": clean})).digest
    )

    clean_int = pa.array([1, None, 3], pa.int64())
    data = pa.py_buffer(np.array([1, 99, 3], dtype=np.int64).tobytes())
    dirty_int = pa.Array.from_buffers(pa.int64(), 3, [validity, data])
    assert dirty_int.equals(clean_int)
    assert digest_frame({"n": dirty_int}).digest == digest_frame({"n": clean_int}).digest

    clean_bool = pa.array([True, None, False])
    bits = pa.py_buffer(np.packbits([1, 1, 0, 0, 0, 0, 0, 0], bitorder="little").tobytes())
    dirty_bool = pa.Array.from_buffers(pa.bool_(), 3, [validity, bits])
    assert dirty_bool.equals(clean_bool)
    assert digest_frame({"b": dirty_bool}).digest == digest_frame({"b": clean_bool}).digest


def test_a_missing_float_is_one_value_however_it_is_written() -> None:
    # pandas turns NaN into null on the way to arrow, so NaN, any NaN bit pattern and
    # null are one missing float: a frame and its numpy values then digest alike
    payload_nan = np.array([0x7FF8_0000_0000_0001], dtype=np.uint64).view(np.float64)
    assert math.isnan(payload_nan[0])
    quiet = digest_frame({"x": np.array([1.0, np.nan])})
    assert digest_frame({"x": np.array([1.0, payload_nan[0]])}).digest == quiet.digest
    assert digest_frame({"x": np.array([1.0, -np.nan])}).digest == quiet.digest
    assert digest_frame({"x": pa.array([1.0, None], pa.float64())}).digest == quiet.digest
    assert digest_frame(pd.DataFrame({"x": [1.0, None]})).digest == quiet.digest
    # ... but not the same as a number, or as a missing value somewhere else
    assert digest_frame({"x": np.array([1.0, 0.0])}).digest != quiet.digest
    assert digest_frame({"x": np.array([np.nan, 1.0])}).digest != quiet.digest
    # in other types a null is not a value of the type
    assert digest_frame({"n": pa.array([1, None])}).digest != (
        digest_frame({"n": pa.array([1, 0])}).digest
    )
    assert digest_frame({"s": pa.array(["a", None])}).digest != (
        digest_frame({"s": pa.array(["a", ""])}).digest
    )
    assert digest_frame({"b": pa.array([True, None])}).digest != (
        digest_frame({"b": pa.array([True, False])}).digest
    )


def test_more_column_types_digest_and_change() -> None:
    """Columns beyond plain numbers and text: each digests, and a changed cell counts."""
    columns: dict[str, tuple[pa.Array, pa.Array]] = {
        "null": (pa.array([None, None]), pa.array([None, None, None])),
        "list": (pa.array([[1, 2], None]), pa.array([[1, 3], None])),
        "struct": (pa.array([{"a": 1}, None]), pa.array([{"a": 2}, None])),
        "decimal": (
            pa.array([None, 1], pa.decimal128(5, 2)),
            pa.array([None, 2], pa.decimal128(5, 2)),
        ),
        "fixed": (pa.array([b"ab", None], pa.binary(2)), pa.array([b"ac", None], pa.binary(2))),
        "view": (pa.array(["a", None], pa.string_view()), pa.array(["b", None], pa.string_view())),
        "f16": (
            pa.array([np.float16(1), None], pa.float16()),
            pa.array([np.float16(2), None], pa.float16()),
        ),
        "time": (pa.array([dt.time(1), None]), pa.array([dt.time(2), None])),
        "duration": (pa.array([dt.timedelta(1), None]), pa.array([dt.timedelta(2), None])),
        "tz": (
            pa.array([dt.datetime(2024, 1, 1), None], pa.timestamp("us", "UTC")),
            pa.array([dt.datetime(2024, 1, 2), None], pa.timestamp("us", "UTC")),
        ),
        "interval": (
            pa.array([pa.MonthDayNano([1, 2, 3]), None], pa.month_day_nano_interval()),
            pa.array([pa.MonthDayNano([1, 2, 4]), None], pa.month_day_nano_interval()),
        ),
    }
    failures = []
    for name, (first, second) in columns.items():
        try:
            one = digest_frame({name: first})
            other = digest_frame({name: second})
        except Exception as exc:
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        if one.digest == other.digest:
            failures.append(f"{name}: a changed cell kept the digest")
        if one.schema != [{"name": name, "type": str(first.type)}]:
            failures.append(f"{name}: schema {one.schema}")
        if digest_frame({name: first}).digest != one.digest:
            failures.append(f"{name}: not deterministic")
    assert not failures, "\n".join(failures)


# -- names, types and order of columns ------------------------------------------------


def test_column_names_types_and_order_count() -> None:
    base = pa.table({"a": pa.array([1, 2, 3], pa.int64()), "b": pa.array(["x", "y", "z"])})
    digest = digest_frame(base).digest
    variants = {
        "renamed": base.rename_columns(["a2", "b"]),
        "int32": base.set_column(0, "a", base["a"].cast(pa.int32())),
        "float": base.set_column(0, "a", base["a"].cast(pa.float64())),
        "large_string": base.set_column(1, "b", base["b"].cast(pa.large_string())),
        "categorical": base.set_column(1, "b", base["b"].dictionary_encode()),
        "reordered": base.select(["b", "a"]),
        "values swapped between columns": pa.table({"a": base["b"], "b": base["a"]}),
        "extra column": base.append_column("c", pa.array([None, None, None], pa.int64())),
        "dropped column": base.select(["a"]),
    }
    for label, table in variants.items():
        assert digest_frame(table).digest != digest, label
    assert digest_frame(base.select(["a", "b"])).digest == digest


def test_empty_frames_record_their_shape() -> None:
    empty = digest_frame(pa.table({"a": pa.array([], pa.int64())}))
    assert (empty.num_rows, empty.schema) == (0, [{"name": "a", "type": "int64"}])
    no_columns = digest_frame(pd.DataFrame())
    assert (no_columns.num_rows, no_columns.schema) == (0, [])
    assert empty.digest != no_columns.digest
    assert empty.digest != digest_frame(pa.table({"a": pa.array([], pa.int32())})).digest


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param([[1, 2], [3, 4]], id="list"),
        pytest.param(42, id="int"),
        pytest.param(None, id="none"),
        pytest.param(np.float64(1.0), id="numpy-scalar"),
        pytest.param(np.zeros((2, 2, 2)), id="3-d array"),
        pytest.param({"a": [1, 2], "b": [1]}, id="ragged dict"),
        pytest.param({"a": 1}, id="dict of scalars"),
        pytest.param({"a": [1, "x"]}, id="mixed column"),
        pytest.param(np.zeros((2, 2), dtype=complex), id="complex array"),
        pytest.param(pd.DataFrame({"s": [1, "a"]}), id="mixed pandas column"),
    ],
)
def test_bad_input_is_invalid_input_at_log_input_data(bad: Any) -> None:
    with pytest.raises(InvalidInputError, match=r"^Expected .* - at log_input\.data$"):
        digest_input(bad)


def test_missing_path_is_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "nope.parquet"
    with pytest.raises(NotFoundError, match=r"^No file or folder at .*nope\.parquet"):
        digest_path(missing)
    with pytest.raises(NotFoundError, match=r"nope\.parquet"):
        digest_input(str(missing))


# -- files and folders ----------------------------------------------------------------------


def test_parquet_file_reads_rows_and_schema_from_metadata(tmp_path: Path) -> None:
    table = pa.table(
        {"x": pa.array(np.arange(1_000, dtype=np.float64)), "s": pa.array(["v"] * 1_000)}
    )
    path = tmp_path / "train.parquet"
    pq.write_table(table, path, row_group_size=128)
    found = digest_path(path)
    assert found.num_rows == 1_000
    assert found.schema == _schema(pq.read_table(path))
    assert found.digest == _sha256(path)
    assert found.source == str(path.resolve())
    assert digest_input(path) == found
    assert digest_input(str(path)) == found


@pytest.mark.parametrize("trailing_newline", [True, False])
def test_csv_file_counts_its_rows(tmp_path: Path, trailing_newline: bool) -> None:
    rng = np.random.default_rng(SEED)
    frame = pd.DataFrame({"a": rng.integers(0, 9, 37), "b": rng.normal(size=37)})
    text = frame.to_csv(index=False)
    path = tmp_path / "train.csv"
    path.write_text(text if trailing_newline else text.rstrip("\n"))
    found = digest_path(path)
    assert found.num_rows == len(pd.read_csv(path))
    assert found.schema == [{"name": "a", "type": "unknown"}, {"name": "b", "type": "unknown"}]
    assert found.digest == _sha256(path)


def test_a_single_files_digest_does_not_depend_on_its_name(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"x": [1, 2, 3]}), path)
    copy = tmp_path / "elsewhere" / "b.parquet"
    copy.parent.mkdir()
    shutil.copy(path, copy)
    assert digest_path(copy).digest == digest_path(path).digest
    assert digest_path(copy).source != digest_path(path).source


def _folder(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True)
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return root


def test_folder_digest_covers_names_and_contents(tmp_path: Path) -> None:
    files = {"part-0.csv": b"a,b\n1,2\n", "part-1.csv": b"a,b\n3,4\n", "sub/x.bin": b"\x00\x01"}
    base = digest_path(_folder(tmp_path / "base", files))
    assert (base.num_rows, base.schema) == (-1, [])
    # the same names and bytes elsewhere: the same digest
    assert digest_path(_folder(tmp_path / "copy", files)).digest == base.digest
    variants = {
        "renamed": {
            **{k: v for k, v in files.items() if k != "part-1.csv"},
            "part-9.csv": files["part-1.csv"],
        },
        "content": {**files, "part-1.csv": b"a,b\n3,5\n"},
        "added": {**files, "extra": b""},
        "removed": {k: v for k, v in files.items() if k != "sub/x.bin"},
        "moved": {**{k: v for k, v in files.items() if k != "sub/x.bin"}, "x.bin": b"\x00\x01"},
    }
    for label, changed in variants.items():
        assert digest_path(_folder(tmp_path / label, changed)).digest != base.digest, label


def test_folder_digest_keeps_file_boundaries(tmp_path: Path) -> None:
    # the bytes of one file must not pass for a file name and the next file's bytes
    one = _folder(tmp_path / "one", {"a": b"|b|c"})
    two = _folder(tmp_path / "two", {"a": b"", "b": b"c"})
    assert digest_path(one).digest != digest_path(two).digest
    three = _folder(tmp_path / "three", {"a": b"xy"})
    four = _folder(tmp_path / "four", {"a": b"x", "b": b"y"})
    assert digest_path(three).digest != digest_path(four).digest


# -- log_input through the client, on every backend ----------------------------------------


def test_log_input_records_digest_schema_rows_and_source(
    client: TrackingClient, tmp_path: Path
) -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "s": ["a", "b", None]})
    path = tmp_path / "eval.parquet"
    pq.write_table(pa.table({"y": [1, 2]}), path)
    with client.start_run("churn") as run:
        train = run.log_input(frame, "train", source="s3://bucket/train")
        evaluation = run.log_input(path, "eval", "evaluation")
        # the same data again under the same name and context is fine
        again = run.log_input(frame.copy(), "train")
        # the same name in another context is another input
        test = run.log_input(frame.iloc[:2], "train", "test")
    want = digest_frame(frame)
    assert (train.digest, train.schema, train.num_rows) == (want.digest, want.schema, 3)
    assert (train.name, train.context, train.source) == ("train", "training", "s3://bucket/train")
    assert again.digest == train.digest
    assert (evaluation.digest, evaluation.num_rows) == (_sha256(path), 2)
    assert evaluation.source == str(path.resolve())
    assert evaluation.schema == [{"name": "y", "type": "int64"}]
    assert test.num_rows == 2 and test.digest != train.digest
    assert client.list_inputs(run.id) == [train, evaluation, test]


def test_log_input_refuses_different_data_under_the_same_name(client: TrackingClient) -> None:
    with client.start_run("churn") as run:
        first = run.log_input({"x": [1, 2, 3]}, "train")
        with pytest.raises(
            ConflictError,
            match=rf"already read a different 'training' data set named 'train' "
            rf"\(digest {first.digest[:12]}\.\.\., now [0-9a-f]{{12}}\.\.\.\)",
        ):
            run.log_input({"x": [1, 2, 4]}, "train")
        with pytest.raises(
            InvalidInputError,
            match=r"Expected a context \(training, validation, test, evaluation, inference, "
            r"other\), got 'train' - at context$",
        ):
            run.log_input({"x": [1]}, "train", "train")
        with pytest.raises(InvalidInputError, match=r"Expected a data set name, got '' - at name"):
            run.log_input({"x": [1]}, "")
        with pytest.raises(InvalidInputError, match=r"- at log_input\.data$"):
            run.log_input([1, 2], "other")
    assert client.list_inputs(run.id) == [first]
