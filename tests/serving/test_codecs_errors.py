"""Bad requests: one error, the right status, every problem with its place, no echo."""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.errors import InvalidInputError, ModelyardError
from modelyard.models.signature import ColumnSpec, Signature
from modelyard.serving.codecs import (
    BINARY_HEADER,
    MAX_PROBLEMS,
    MalformedRequest,
    UnsupportedMediaType,
    decode_invocations,
    decode_v1_predict,
    decode_v2_infer,
)

SIG = Signature(
    columns=[
        ColumnSpec(name="amount", dtype="float"),
        ColumnSpec(name="age", dtype="int", nullable=True),
        ColumnSpec(name="active", dtype="bool"),
        ColumnSpec(name="plan", dtype="string"),
    ]
)
GOOD = {"amount": 1.5, "age": 30, "active": True, "plan": "pro"}


def _v1(body: Any, **kwargs: Any) -> InvalidInputError:
    with pytest.raises(InvalidInputError) as info:
        decode_v1_predict(msgspec.json.encode(body), SIG, **kwargs)
    return info.value


def _triples(err: ModelyardError) -> list[tuple[str, str, str]]:
    return [(p.loc, p.expected, p.got) for p in err.problems]


@pytest.mark.parametrize(
    ("change", "loc", "expected", "got"),
    [
        ({"amount": "abc"}, "$.instances[1].amount", "number", '"abc"'),
        ({"amount": True}, "$.instances[1].amount", "number", "true"),
        ({"age": 2.5}, "$.instances[1].age", "integer", "2.5"),
        ({"age": 2**70}, "$.instances[1].age", "integer within int64", str(2**70)),
        ({"active": 1}, "$.instances[1].active", "boolean", "1"),
        ({"plan": 7}, "$.instances[1].plan", "string", "7"),
        ({"plan": {"a": 1}}, "$.instances[1].plan", "string", "an object with 1 key"),
        ({"amount": None}, "$.instances[1].amount", "number (not null", "null"),
        ({"extra": 1}, "$.instances[1].extra", "one of the model's columns", '"extra"'),
    ],
)
def test_each_bad_value_is_a_422_at_its_place(
    change: dict[str, Any], loc: str, expected: str, got: str
) -> None:
    err = _v1({"instances": [GOOD, {**GOOD, **change}]})
    assert err.status == 422 and type(err) is InvalidInputError
    [(p_loc, p_expected, p_got)] = _triples(err)
    assert (p_loc, p_got) == (loc, got)
    assert p_expected.startswith(expected)
    assert err.message.startswith("1 problem with the input: expected")
    assert loc in err.message


def test_a_null_in_a_nullable_column_is_fine_and_a_missing_column_is_not() -> None:
    decode_v1_predict(msgspec.json.encode({"instances": [{**GOOD, "age": None}]}), SIG)
    err = _v1({"instances": [{k: v for k, v in GOOD.items() if k != "plan"}]})
    assert _triples(err) == [("$.instances[*].plan", "a column 'plan' (string)", "nothing")]


def test_rows_of_the_wrong_width_and_column_lengths() -> None:
    err = _v1({"instances": [[1.0, 2, True, "a"], [1.0, 2]]})
    assert _triples(err)[0][0] == "$.instances[1]"
    err = _v1(
        {"inputs": {"amount": [1.0, 2.0], "age": [1], "active": [True, False], "plan": ["a", "b"]}}
    )
    assert _triples(err) == [("$.inputs.age", "2 values, as many as 'amount'", "1 values")]


def test_problems_are_capped_and_counted() -> None:
    rows = [{**GOOD, "amount": "x", "plan": 1} for _ in range(50)]
    err = _v1({"instances": rows})
    assert len(err.problems) == MAX_PROBLEMS
    assert err.message.startswith("100 problems with the input: ")
    assert err.message.endswith(f"; and {100 - 3} more")


def test_a_huge_value_is_never_echoed() -> None:
    huge = "z" * 1_000_000
    err = _v1({"instances": [{**GOOD, "amount": huge}]})
    assert len(err.message) < 500
    assert all(len(p.got) < 80 for p in err.problems)
    assert err.problems[0].got.endswith("(1000000 chars)")
    err = _v1({"instances": [{**GOOD, huge: 1}]})
    assert len(err.message) < 500


def test_max_rows() -> None:
    err = _v1({"instances": [GOOD] * 11}, max_rows=10)
    assert _triples(err) == [("$.instances", "at most 10 rows per request", "11 rows")]
    assert _triples(_v1({"instances": []})) == [("$.instances", "at least 1 row", "0 rows")]


@pytest.mark.parametrize("body", [b"", b"{", b'{"inputs": [', b"\xff\xfe", b'{"instances": [}'])
def test_malformed_json_is_a_400(body: bytes) -> None:
    for decode in (
        lambda: decode_v1_predict(body, SIG),
        lambda: decode_invocations(body, "application/json", SIG),
        lambda: decode_v2_infer(body, {}, SIG),
    ):
        with pytest.raises(MalformedRequest, match="Expected a JSON body") as info:
            decode()
        assert info.value.status == 400 and info.value.type == "malformed_request"


def test_nan_and_infinity_literals_are_422_at_their_place() -> None:
    body = b'{"instances": [[NaN, 1, true, "a"], [-Infinity, 1, true, "a"]]}'
    with pytest.raises(InvalidInputError) as info:
        decode_v1_predict(body, SIG)
    assert [(p.loc, p.got) for p in info.value.problems] == [
        ("$.instances[0][0]", "NaN"),
        ("$.instances[1][0]", "-Infinity"),
    ]
    assert info.value.status == 422


def test_a_number_out_of_float_range_is_a_422() -> None:
    with pytest.raises(InvalidInputError, match=r"out of range - at \$.instances\[0\]\[0\]"):
        decode_v1_predict(b'{"instances": [[1e400, 1, true, "a"]]}', SIG)


def test_unknown_content_type_is_a_415() -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        decode_invocations(b"x", "application/xml", SIG)
    assert info.value.status == 415


def test_dataframe_split_duplicate_and_unknown_columns() -> None:
    body = {
        "dataframe_split": {
            "columns": ["amount", "amount", "nope", "plan"],
            "data": [[1.0, 2.0, 3, "a"]],
        }
    }
    with pytest.raises(InvalidInputError) as info:
        decode_invocations(msgspec.json.encode(body), "application/json", SIG)
    assert [p.loc for p in info.value.problems] == [
        "$.dataframe_split.columns[1]",
        "$.dataframe_split.columns[2]",
    ]


def test_csv_bad_cell_has_row_and_column() -> None:
    body = b"amount,age,active,plan\n1.5,3,true,a\nabc,4,maybe,b\n"
    with pytest.raises(InvalidInputError) as info:
        decode_invocations(body, "text/csv", SIG)
    assert _triples(info.value) == [
        ("$.csv[1][0]", "number", '"abc"'),
        ("$.csv[1][2]", "boolean", '"maybe"'),
    ]


def test_entities_must_have_the_same_scalar_keys() -> None:
    body = {"entities": [{"user": 1}, {"shop": 2}, {"user": [1]}]}
    with pytest.raises(InvalidInputError) as info:
        decode_v1_predict(msgspec.json.encode(body), SIG)
    assert [p.loc for p in info.value.problems] == ["$.entities[1]", "$.entities[2].user"]


def _tensor(name: str, datatype: str, data: list[Any], shape: list[int] | None = None) -> Any:
    return {"name": name, "datatype": datatype, "shape": shape or [len(data)], "data": data}


GOOD_V2 = [
    _tensor("amount", "FP64", [1.0, 2.0]),
    _tensor("age", "INT64", [1, None]),
    _tensor("active", "BOOL", [True, False]),
    _tensor("plan", "BYTES", ["a", "b"]),
]


def _v2(inputs: list[Any], headers: dict[str, str] | None = None, tail: bytes = b"") -> Any:
    body = msgspec.json.encode({"inputs": inputs})
    if headers is None and tail:
        headers = {BINARY_HEADER: str(len(body))}
    with pytest.raises(InvalidInputError) as info:
        decode_v2_infer(body + tail, headers or {}, SIG)
    return info.value


@pytest.mark.parametrize(
    ("index", "tensor", "loc", "expected"),
    [
        (0, _tensor("amount", "BYTES", ["1", "2"]), "$.inputs[0].datatype", "FP64"),
        (2, _tensor("active", "INT64", [1, 0]), "$.inputs[2].datatype", "BOOL"),
        (3, _tensor("plan", "BYTES", ["a", "b", "c"]), "$.inputs[3].shape", "[2] rows"),
        (0, _tensor("amount", "FP64", [1.0, 2.0, 3.0], [2]), "$.inputs[0].data", "2 values"),
        (0, _tensor("amount", "FP64", [1.0, "x"]), "$.inputs[0].data[1]", "number"),
        (0, _tensor("amount", "FP64", [[1.0], ["x"]], [2, 1]), "$.inputs[0].data[1][0]", "number"),
        (1, _tensor("age", "FP64", [1.0, 2.5]), "$.inputs[1].data[1]", "integer"),
        (0, _tensor("amount", "FP99", [1.0, 2.0]), "$.inputs[0].datatype", "FP64"),
        (0, _tensor("amount", "FP64", [1.0, 2.0], [2, 2]), "$.inputs[0].shape", "[rows]"),
        (0, _tensor("amount", "FP64", [1.0, None]), "$.inputs[0].data[1]", "number (not null"),
        (0, _tensor("amount", "FP64", [1.0, 2.0]) | {"name": "amt"}, "$.inputs[0].name", "one of"),
    ],
)
def test_v2_bad_tensors(index: int, tensor: Any, loc: str, expected: str) -> None:
    inputs = list(GOOD_V2)
    inputs[index] = tensor
    err = _v2(inputs)
    assert err.problems[0].loc == loc
    assert err.problems[0].expected.startswith(expected)


def test_v2_duplicate_and_missing_tensors() -> None:
    err = _v2([*GOOD_V2[:3], GOOD_V2[0]])
    assert [(p.loc, p.got) for p in err.problems] == [
        ("$.inputs[3].name", '"amount"'),
        ("$.inputs", "nothing"),
    ]
    assert "'plan'" in err.problems[1].expected


def test_v2_envelope_shape_errors_have_a_path() -> None:
    err = _v2([{"name": "amount", "datatype": "FP64", "data": [1.0]}])
    assert (err.problems[0].loc, err.problems[0].got) == ("$.inputs[0].shape", "nothing")
    err = _v2([{"name": 3, "datatype": "FP64", "shape": [1], "data": [1.0]}])
    assert err.problems[0].loc == "$.inputs[0].name"


def test_v2_binary_sizes_are_checked() -> None:
    tensor = {
        "name": "amount",
        "datatype": "FP64",
        "shape": [2],
        "parameters": {"binary_data_size": 16},
    }
    rest = [_tensor(t["name"], t["datatype"], t["data"]) for t in GOOD_V2[1:]]
    err = _v2([tensor, *rest], tail=struct.pack("<d", 1.0))
    assert err.problems[0].loc == "$.inputs[0].parameters.binary_data_size"
    err = _v2([tensor, *rest], tail=struct.pack("<3d", 1.0, 2.0, 3.0))
    assert err.problems[0].loc == "$"  # bytes left over
    err = _v2([tensor, *rest], headers={})
    assert "Inference-Header-Content-Length" in err.problems[0].expected
    with pytest.raises(MalformedRequest):
        decode_v2_infer(b"{}", {BINARY_HEADER: "99"}, SIG)


def test_v2_binary_nan_in_a_non_nullable_column() -> None:
    tensor = {
        "name": "amount",
        "datatype": "FP32",
        "shape": [2],
        "parameters": {"binary_data_size": 8},
    }
    err = _v2([tensor, *GOOD_V2[1:]], tail=struct.pack("<2f", 1.0, float("nan")))
    assert (err.problems[0].loc, err.problems[0].got) == ("$.inputs[0].data[1]", "NaN")


def test_v2_matrix_needs_numeric_columns() -> None:
    err = _v2([_tensor("x", "FP64", [1.0] * 8, [2, 4])])
    assert err.problems[0].loc == "$.inputs[0]"
    assert "plan" in err.problems[0].expected


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
keys = st.sampled_from(
    [
        "instances",
        "inputs",
        "entities",
        "dataframe_split",
        "dataframe_records",
        "columns",
        "data",
        "name",
        "shape",
        "datatype",
        "parameters",
        "binary_data_size",
        "amount",
        "age",
    ]
)
envelopes = st.recursive(
    json_values, lambda inner: st.dictionaries(keys, inner, max_size=5), max_leaves=30
)


@settings(max_examples=300, deadline=None)
@given(envelopes, st.binary(max_size=40), st.sampled_from([None, "0", "5", "-1", "x"]))
def test_no_body_raises_anything_but_modelyard_errors(
    value: Any, raw: bytes, header: str | None
) -> None:
    body = msgspec.json.encode(value)
    headers = {} if header is None else {BINARY_HEADER: header}
    for decode in (
        lambda b: decode_v1_predict(b, SIG),
        lambda b: decode_invocations(b, "application/json", SIG),
        lambda b: decode_invocations(b, "text/csv", SIG),
        lambda b: decode_v2_infer(b, headers, SIG),
    ):
        for candidate in (body, raw, body + raw):
            with contextlib.suppress(ModelyardError):
                decode(candidate)
