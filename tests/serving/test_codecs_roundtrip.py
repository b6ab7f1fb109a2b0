"""Every request format decodes to what ``build_inputs`` builds from the same rows."""

from __future__ import annotations

import csv
import io
from typing import Any

import msgspec
import numpy as np
import pytest

from modelyard.models.runtimes import Inputs, build_inputs
from modelyard.models.signature import ColumnSpec, Signature
from modelyard.serving.codecs import decode_invocations, decode_v1_predict, decode_v2_infer

SEED = 20240611

SIG = Signature(
    columns=[
        ColumnSpec(name="amount", dtype="float"),
        ColumnSpec(name="age", dtype="int", nullable=True),
        ColumnSpec(name="active", dtype="bool"),
        ColumnSpec(name="plan", dtype="string"),
        ColumnSpec(name="region", dtype="category", categories=["eu", "us"]),
        ColumnSpec(name="count", dtype="int"),
    ]
)


def _records(rows: int, seed: int = SEED) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    records = []
    for _ in range(rows):
        records.append(
            {
                "amount": float(rng.normal(100, 30)),
                "age": None if rng.random() < 0.3 else int(rng.integers(18, 90)),
                "active": bool(rng.random() < 0.5),
                "plan": str(rng.choice(["basic", "pro", "ünïcode ✓"])),
                "region": str(rng.choice(["eu", "us"])),
                "count": int(rng.integers(-5, 10**12)),
            }
        )
    return records


def assert_same(actual: Inputs, expected: Inputs) -> None:
    assert actual.names == expected.names
    for name, got, want in zip(actual.names, actual.columns, expected.columns, strict=True):
        assert got.dtype == want.dtype, name
        if want.dtype == object:
            assert got.tolist() == want.tolist(), name
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)
    if expected.matrix is None:
        assert actual.matrix is None
    else:
        assert actual.matrix is not None
        np.testing.assert_array_equal(actual.matrix, expected.matrix)


@pytest.mark.parametrize("rows", [1, 7])
def test_v1_records_rows_and_columns_match_build_inputs(rows: int) -> None:
    records = _records(rows)
    oracle = build_inputs(SIG, records)
    as_rows = [[r[n] for n in SIG.names] for r in records]
    as_columns = {n: [r[n] for r in records] for n in SIG.names}
    for key in ("instances", "inputs"):
        for data in (records, as_rows, as_columns):
            decoded = decode_v1_predict(msgspec.json.encode({key: data}), SIG)
            assert decoded.rows == rows and decoded.entities is None
            assert decoded.inputs is not None
            assert_same(decoded.inputs, oracle)


def test_mlflow_formats_match_build_inputs() -> None:
    records = _records(9)
    oracle = build_inputs(SIG, records)
    shuffled = list(reversed(SIG.names))
    bodies = [
        {
            "dataframe_split": {
                "columns": shuffled,
                "data": [[r[n] for n in shuffled] for r in records],
            }
        },
        {
            "dataframe_split": {
                "index": list(range(9)),
                "columns": SIG.names,
                "data": [[r[n] for n in SIG.names] for r in records],
            }
        },
        {"dataframe_records": records},
        {"instances": records},
        {"inputs": {n: [r[n] for r in records] for n in SIG.names}},
        {"inputs": records, "params": {"threshold": 0.5}},
    ]
    for body in bodies:
        for content_type in ("application/json", "application/json; charset=utf-8", None):
            decoded = decode_invocations(msgspec.json.encode(body), content_type, SIG)
            assert decoded.inputs is not None
            assert_same(decoded.inputs, oracle)
    assert decode_invocations(msgspec.json.encode(bodies[-1]), None, SIG).parameters == {
        "threshold": 0.5
    }


def test_mlflow_csv_matches_build_inputs() -> None:
    records = _records(6)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(SIG.names)
    for r in records:
        writer.writerow(
            [
                "" if r[n] is None else str(r[n]).lower() if isinstance(r[n], bool) else r[n]
                for n in SIG.names
            ]
        )
    decoded = decode_invocations(buffer.getvalue().encode(), "text/csv; charset=utf-8", SIG)
    assert decoded.inputs is not None
    expected = build_inputs(SIG, records)
    assert_same(decoded.inputs, expected)


def _v2_column(name: str, values: list[Any], datatype: str, nested: bool) -> dict[str, Any]:
    data: list[Any] = [[v] for v in values] if nested else values
    shape = [len(values), 1] if nested else [len(values)]
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


@pytest.mark.parametrize("nested", [False, True])
def test_v2_json_per_column_matches_build_inputs(nested: bool) -> None:
    records = _records(5)
    oracle = build_inputs(SIG, records)
    types = {
        "float": "FP64",
        "int": "INT64",
        "bool": "BOOL",
        "string": "BYTES",
        "category": "BYTES",
    }
    inputs = [
        _v2_column(c.name, [r[c.name] for r in records], types[c.dtype], nested)
        for c in reversed(SIG.columns)  # any order of tensors
    ]
    body = msgspec.json.encode({"id": "abc", "inputs": inputs})
    decoded = decode_v2_infer(body, {}, SIG)
    assert decoded.request_id == "abc" and decoded.rows == 5
    assert decoded.binary_outputs is False and decoded.requested_outputs is None
    assert decoded.inputs is not None
    assert_same(decoded.inputs, oracle)


NUMERIC = Signature(
    columns=[
        ColumnSpec(name="x", dtype="float"),
        ColumnSpec(name="n", dtype="int"),
        ColumnSpec(name="flag", dtype="bool"),
    ]
)


@pytest.mark.parametrize("nested", [False, True])
def test_v2_one_matrix_tensor_matches_build_inputs(nested: bool) -> None:
    rng = np.random.default_rng(SEED)
    matrix = np.column_stack(
        [rng.normal(size=4), rng.integers(0, 100, 4), rng.integers(0, 2, 4)]
    ).astype(np.float64)
    data = matrix.tolist() if nested else matrix.ravel().tolist()
    body = {"inputs": [{"name": "input__0", "shape": [4, 3], "datatype": "FP64", "data": data}]}
    decoded = decode_v2_infer(msgspec.json.encode(body), {}, NUMERIC)
    oracle = build_inputs(
        NUMERIC, {"x": matrix[:, 0], "n": matrix[:, 1].astype(int), "flag": matrix[:, 2] == 1}
    )
    assert decoded.inputs is not None
    assert_same(decoded.inputs, oracle)


def test_v1_entities_come_back_as_columns() -> None:
    body = b'{"entities": [{"user_id": 1, "shop": "a"}, {"user_id": 2, "shop": null}]}'
    decoded = decode_v1_predict(body, SIG)
    assert decoded.inputs is None
    assert decoded.entities == {"user_id": [1, 2], "shop": ["a", None]}
    assert decoded.rows == 2


def test_extra_columns_are_ignored_when_the_signature_says_so() -> None:
    lenient = msgspec.structs.replace(SIG, extra_columns="ignore")
    records = [{**r, "unknown": 1} for r in _records(3)]
    decoded = decode_v1_predict(msgspec.json.encode({"instances": records}), lenient)
    assert decoded.inputs is not None
    assert_same(decoded.inputs, build_inputs(SIG, _records(3)))


def test_missing_values_allowed_by_the_signature_become_nan() -> None:
    lenient = msgspec.structs.replace(SIG, missing_values="allow")
    records = _records(3)
    records[1]["amount"] = None
    records[2]["plan"] = None
    decoded = decode_v1_predict(msgspec.json.encode({"instances": records}), lenient)
    assert decoded.inputs is not None
    assert_same(decoded.inputs, build_inputs(SIG, records))


def test_datetime_columns_read_iso_strings() -> None:
    sig = Signature(columns=[ColumnSpec(name="at", dtype="datetime", nullable=True)])
    values = ["2024-01-02T03:04:05", None, "2024-02-03"]
    decoded = decode_v1_predict(msgspec.json.encode({"inputs": {"at": values}}), sig)
    assert decoded.inputs is not None
    assert_same(decoded.inputs, build_inputs(sig, {"at": values}))
    utc = decode_v1_predict(b'{"instances": [{"at": "2024-01-02T03:04:05Z"}]}', sig)
    assert utc.inputs is not None
    assert utc.inputs.columns[0][0] == np.datetime64("2024-01-02T03:04:05", "ns")
