"""Input signatures: what ``infer_signature`` records and what ``check_frame`` refuses."""

from __future__ import annotations

import re

import msgspec
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelyard.errors import InvalidInputError
from modelyard.models.signature import (
    MAX_VOCABULARY,
    ColumnSpec,
    Signature,
    infer_signature,
)


def _specs(frame: pd.DataFrame) -> dict[str, ColumnSpec]:
    return {c.name: c for c in infer_signature(frame).columns}


# -- infer_signature ------------------------------------------------------------------------


def test_float_column_records_its_finite_range() -> None:
    frame = pd.DataFrame({"x": [0.5, np.nan, np.inf, -2.25, -np.inf, 7.0]})
    [spec] = infer_signature(frame).columns
    assert (spec.name, spec.dtype, spec.nullable) == ("x", "float", True)
    # NaN and the infinities are not part of the range
    assert (spec.min, spec.max) == (-2.25, 7.0)
    assert spec.categories is None


def test_float_column_of_only_infinities_has_no_range() -> None:
    [spec] = infer_signature(pd.DataFrame({"x": [np.inf, -np.inf]})).columns
    assert (spec.dtype, spec.nullable, spec.min, spec.max) == ("float", False, None, None)


def test_int_columns_signed_and_unsigned() -> None:
    frame = pd.DataFrame(
        {
            "i": np.array([3, -9, 12], dtype="int64"),
            "u": np.array([1, 250, 7], dtype="uint8"),
        }
    )
    specs = _specs(frame)
    assert specs["i"] == ColumnSpec(name="i", dtype="int", nullable=False, min=-9.0, max=12.0)
    assert specs["u"] == ColumnSpec(name="u", dtype="int", nullable=False, min=1.0, max=250.0)


def test_nullable_int_with_pd_na_keeps_the_signature() -> None:
    # MLflow drops the signature here; a nullable int is an int that may be missing
    frame = pd.DataFrame({"age": pd.array([31, pd.NA, 58, pd.NA], dtype="Int64")})
    signature = infer_signature(frame)
    assert signature is not None
    [spec] = signature.columns
    assert spec == ColumnSpec(name="age", dtype="int", nullable=True, min=31.0, max=58.0)


def test_bool_columns_plain_and_nullable() -> None:
    frame = pd.DataFrame(
        {
            "b": [True, False, True],
            "nb": pd.array([True, None, False], dtype="boolean"),
        }
    )
    specs = _specs(frame)
    assert specs["b"] == ColumnSpec(name="b", dtype="bool", nullable=False)
    assert specs["nb"] == ColumnSpec(name="nb", dtype="bool", nullable=True)


def test_categorical_records_every_category_in_order() -> None:
    # "z" is a category with no rows: it is still part of what the model knows
    values = pd.Categorical(["low", "high", "low"], categories=["low", "mid", "high"])
    [spec] = infer_signature(pd.DataFrame({"plan": values})).columns
    assert spec.dtype == "category"
    assert spec.categories == ["low", "mid", "high"]
    assert spec.nullable is False


def test_strings_record_a_sorted_vocabulary() -> None:
    frame = pd.DataFrame({"city": ["paris", "oslo", None, "lima", "oslo"]})
    [spec] = infer_signature(frame).columns
    assert (spec.dtype, spec.nullable) == ("string", True)
    assert spec.categories == ["lima", "oslo", "paris"]  # None is not a category


@pytest.mark.parametrize(
    ("distinct", "has_vocabulary"),
    [(MAX_VOCABULARY, True), (MAX_VOCABULARY + 1, False)],
)
def test_vocabulary_only_up_to_the_limit(distinct: int, has_vocabulary: bool) -> None:
    assert MAX_VOCABULARY == 1000
    words = [f"w{i:05d}" for i in range(distinct)]
    [spec] = infer_signature(pd.DataFrame({"word": words + words[:3]})).columns
    assert spec.dtype == "string"
    if has_vocabulary:
        assert spec.categories == sorted(words)
    else:
        assert spec.categories is None


def test_pandas_string_dtype_is_a_string() -> None:
    frame = pd.DataFrame({"s": pd.array(["b", None, "a"], dtype="string")})
    [spec] = infer_signature(frame).columns
    assert (spec.dtype, spec.nullable, spec.categories) == ("string", True, ["a", "b"])


def test_datetimes_naive_and_tz_aware() -> None:
    frame = pd.DataFrame(
        {
            "naive": pd.date_range("2024-03-01", periods=3, freq="D"),
            "aware": pd.date_range("2024-03-01", periods=3, freq="h", tz="Europe/Paris"),
            "gaps": pd.to_datetime(["2024-01-01", None, "2024-01-03"]),
        }
    )
    specs = _specs(frame)
    assert specs["naive"] == ColumnSpec(name="naive", dtype="datetime", nullable=False)
    assert specs["aware"] == ColumnSpec(name="aware", dtype="datetime", nullable=False)
    assert specs["gaps"] == ColumnSpec(name="gaps", dtype="datetime", nullable=True)


def test_columns_keep_the_frame_order_and_options() -> None:
    frame = pd.DataFrame({"z": [1.0], "a": [2], "m": ["x"]})
    signature = infer_signature(frame, extra_columns="ignore", missing_values="allow")
    assert signature.names == ["z", "a", "m"]
    assert (signature.extra_columns, signature.missing_values) == ("ignore", "allow")
    assert signature.column("a").dtype == "int"
    with pytest.raises(InvalidInputError, match="No column 'q' in the signature"):
        signature.column("q")


def test_a_dict_of_columns_is_accepted() -> None:
    signature = infer_signature({"x": [1.0, 2.0], "n": [1, 2]})
    assert [(c.name, c.dtype) for c in signature.columns] == [("x", "float"), ("n", "int")]


def test_not_a_table_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidInputError, match=r"table-like training frame, got int - at"):
        infer_signature(42)


def test_duplicate_column_names_are_refused() -> None:
    frame = pd.DataFrame([[1, 2]], columns=["x", "x"])
    with pytest.raises(InvalidInputError, match=r"unique column names, got 'x' twice"):
        infer_signature(frame)


# -- check_frame ----------------------------------------------------------------------------


@pytest.fixture
def signature() -> Signature:
    train = pd.DataFrame(
        {
            "age": pd.array([31, pd.NA, 27], dtype="Int64"),
            "income": [1.5, 2.5, 3.5],
            "plan": ["a", "b", "a"],
            "when": pd.date_range("2024-01-01", periods=3),
        }
    )
    return infer_signature(train)


def _good() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": [40, 41],
            "income": [0.1, 0.2],
            "plan": ["b", "a"],
            "when": pd.date_range("2024-02-01", periods=2),
        }
    )


def test_a_matching_frame_passes(signature: Signature) -> None:
    assert signature.check_frame(_good()) == []
    # column order does not matter, ints are fine where floats were trained
    reordered = _good()[["when", "plan", "income", "age"]].assign(income=[1, 2])
    assert signature.check_frame(reordered) == []


def test_missing_column_is_named(signature: Signature) -> None:
    with pytest.raises(
        InvalidInputError, match=r"^1 problem with the input: missing column 'plan'"
    ):
        signature.check_frame(_good().drop(columns=["plan"]))


def test_extra_column_is_rejected_by_default(signature: Signature) -> None:
    with pytest.raises(InvalidInputError, match=r"unexpected column 'extra' \(extra columns are"):
        signature.check_frame(_good().assign(extra=1))


def test_extra_column_is_ignored_when_asked(signature: Signature) -> None:
    lenient = msgspec.structs.replace(signature, extra_columns="ignore")
    assert lenient.check_frame(_good().assign(extra=1)) == []
    # ignoring extras does not forgive a missing column
    with pytest.raises(InvalidInputError, match="missing column 'age'"):
        lenient.check_frame(_good().drop(columns=["age"]).assign(extra=1))


@pytest.mark.parametrize(
    ("column", "value", "got"),
    [
        ("plan", [1, 2], "int"),
        ("income", ["x", "y"], "string"),
        ("when", ["2024-01-01", "2024-01-02"], "string"),
        ("age", pd.date_range("2024-01-01", periods=2), "datetime"),
    ],
)
def test_wrong_type_names_the_column_and_both_types(
    signature: Signature, column: str, value: object, got: str
) -> None:
    expected = signature.column(column).dtype
    frame = _good().assign(**{column: value})
    with pytest.raises(InvalidInputError) as caught:
        signature.check_frame(frame)
    message = str(caught.value)
    assert f"{column}: expected {expected}, got a column of {got}" in message
    assert [(p.loc, p.expected, p.got) for p in caught.value.problems] == [
        (column, expected, f"a column of {got}")
    ]


def test_null_in_a_non_nullable_column_names_the_row(signature: Signature) -> None:
    frame = pd.DataFrame(
        {
            "age": [40, 41, 42],
            "income": [0.1, np.nan, np.nan],
            "plan": ["a", "b", "c"],
            "when": pd.date_range("2024-02-01", periods=3),
        }
    )
    with pytest.raises(InvalidInputError, match=r"income\[1\]: expected float \(no missing"):
        signature.check_frame(frame)


def test_null_in_a_nullable_column_passes(signature: Signature) -> None:
    assert signature.column("age").nullable
    frame = _good().assign(age=pd.array([pd.NA, 3], dtype="Int64"))
    assert signature.check_frame(frame) == []


def test_nulls_are_allowed_when_asked(signature: Signature) -> None:
    lenient = msgspec.structs.replace(signature, missing_values="allow")
    frame = _good().assign(income=[np.nan, 0.2], plan=[None, "a"])
    assert lenient.check_frame(frame) == []
    with pytest.raises(InvalidInputError, match=r"plan\[0\]"):
        signature.check_frame(frame)


def test_several_problems_are_listed_together(signature: Signature) -> None:
    frame = _good().drop(columns=["when"]).assign(plan=[1, 2], income=[np.nan, 1.0], bonus=1)
    with pytest.raises(InvalidInputError) as caught:
        signature.check_frame(frame)
    message = str(caught.value)
    assert message.startswith("4 problems with the input: ")
    for part in (
        "missing column 'when'",
        "unexpected column 'bonus'",
        "plan: expected string, got a column of int",
        "income[0]: expected float (no missing values), got null",
    ):
        assert part in message
    assert {p.loc for p in caught.value.problems} == {"when", "bonus", "plan", "income[0]"}
    assert caught.value.to_dict()["error"]["problems"][0] == {
        "loc": "when",
        "expected": "column of datetime",
        "got": "nothing",
    }


def test_message_lists_at_most_five_problems_but_keeps_them_all() -> None:
    signature = infer_signature(pd.DataFrame({f"c{i}": [1.0] for i in range(8)}))
    with pytest.raises(InvalidInputError) as caught:
        signature.check_frame(pd.DataFrame({"other": [1.0]}))
    assert len(caught.value.problems) == 9  # 8 missing, 1 extra
    assert str(caught.value).startswith("9 problems with the input: ")
    assert len(re.findall(r"missing column", str(caught.value))) == 5


# -- JSON ----------------------------------------------------------------------------------


def test_signature_json_round_trip() -> None:
    frame = pd.DataFrame(
        {
            "age": pd.array([31, pd.NA], dtype="Int64"),
            "income": [1.5, -0.25],
            "plan": pd.Categorical(["a", "b"]),
            "city": ["oslo", "lima"],
            "ok": [True, False],
            "when": pd.date_range("2024-01-01", periods=2, tz="UTC"),
        }
    )
    signature = infer_signature(frame, extra_columns="ignore")
    data = msgspec.json.encode(signature)
    assert msgspec.json.decode(data, type=Signature) == signature
    # defaults are left out of the wire form: a float column has no categories key
    raw = msgspec.json.decode(data)
    assert "categories" not in raw["columns"][1]
    assert raw["columns"][0] == {
        "name": "age",
        "dtype": "int",
        "nullable": True,
        "min": 31.0,
        "max": 31.0,
    }


def test_a_bad_dtype_in_json_is_refused_with_its_path() -> None:
    data = b'{"columns": [{"name": "x", "dtype": "complex"}]}'
    with pytest.raises(msgspec.ValidationError, match=r"at `\$\.columns\[0\]\.dtype`"):
        msgspec.json.decode(data, type=Signature)


_SPECS = st.builds(
    ColumnSpec,
    name=st.text(min_size=1, max_size=12),
    dtype=st.sampled_from(["float", "int", "bool", "string", "category", "datetime"]),
    nullable=st.booleans(),
    min=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    max=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    categories=st.none() | st.lists(st.text(max_size=8), max_size=5),
)


@given(
    columns=st.lists(_SPECS, max_size=6),
    extra=st.sampled_from(["reject", "ignore"]),
    missing=st.sampled_from(["reject", "allow"]),
)
def test_any_signature_survives_json(columns: list[ColumnSpec], extra: str, missing: str) -> None:
    signature = Signature(
        columns=columns,
        extra_columns=extra,  # type: ignore[arg-type]
        missing_values=missing,  # type: ignore[arg-type]
    )
    assert msgspec.json.decode(msgspec.json.encode(signature), type=Signature) == signature
