"""The one-pass decoding of plain numeric requests agrees with the per-column checks.

``plain_numbers`` (v1 tables, MLflow ``/invocations``) and the v2 decoder's ``_plain``
skip the per-value checks when every value is a plain number where the signature wants
one. A request the fast path takes must decode to exactly what the general path gives
(values, dtypes, the matrix), and a request it declines must still be refused or
accepted as before: generated requests, with nulls, booleans, text, whole floats in int
columns, numbers past int64 and float64, missing and extra columns, are decoded both
ways and compared.
"""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

import numpy as np
from hypothesis import event, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from modelyard.errors import InvalidInputError
from modelyard.models.runtimes import Inputs
from modelyard.models.signature import ColumnSpec, Signature
from modelyard.serving.codecs import decode_v1_predict, decode_v2_infer, tables, v2
from modelyard.serving.codecs.columns import plain_numbers

_CELLS = st.one_of(
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.sampled_from([0, 1, -1, 2.0, 0.5, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), 2**64, 10**400]),
    st.sampled_from([None, True, False, "3", [1]]),
)
_INT64 = st.integers(-(2**63), 2**63 - 1)


def _cell(spec: ColumnSpec, clean: bool) -> st.SearchStrategy[Any]:
    """Any cell, or (``clean``) one the fast path takes: half the requests are clean."""
    if not clean:
        return _CELLS
    if spec.dtype == "int":
        return _INT64
    return _INT64 | st.floats(allow_nan=False, allow_infinity=False)


_DTYPES = st.sampled_from(["float", "int", "int", "float", "bool", "string"])


@st.composite
def _signatures(draw: st.DrawFn) -> Signature:
    count = draw(st.integers(1, 6))
    numeric_only = draw(st.booleans())
    columns = [
        ColumnSpec(
            name=f"c{j}",
            dtype=draw(st.sampled_from(["float", "int"]) if numeric_only else _DTYPES),
            nullable=draw(st.booleans()),
        )
        for j in range(count)
    ]
    return Signature(
        columns=columns,
        extra_columns=draw(st.sampled_from(["reject", "ignore"])),
        missing_values=draw(st.sampled_from(["reject", "allow"])),
    )


def _outcome(call: Any) -> tuple[str, Any]:
    try:
        inputs = call()
    except InvalidInputError as exc:
        return "refused", str(exc)
    return "decoded", inputs


def _same(fast: tuple[str, Any], general: tuple[str, Any]) -> None:
    assert fast[0] == general[0], (fast, general)
    if fast[0] == "refused":
        assert fast[1] == general[1]
        return
    a, b = fast[1].inputs, general[1].inputs
    assert isinstance(a, Inputs) and isinstance(b, Inputs)
    assert a.names == b.names
    for x, y in zip(a.columns, b.columns, strict=True):
        assert x.dtype == y.dtype
        if x.dtype.kind == "f":
            np.testing.assert_array_equal(x, y)  # NaN equals NaN here
        else:
            assert x.tolist() == y.tolist()
    assert (a.matrix is None) == (b.matrix is None)
    if a.matrix is not None:
        assert a.matrix.dtype == b.matrix.dtype and a.matrix.flags.c_contiguous
        np.testing.assert_array_equal(a.matrix, b.matrix)


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _taken(module: Any, name: str, call: Any) -> tuple[tuple[str, Any], bool]:
    """``call``'s outcome, and whether the fast path ``module.name`` answered it."""
    real = getattr(module, name)
    answers: list[Any] = []

    def spy(*args: Any) -> Any:
        answers.append(real(*args))
        return answers[-1]

    with mock.patch.object(module, name, spy):
        outcome = _outcome(call)
    return outcome, any(a is not None for a in answers)


@hsettings(max_examples=400, deadline=None)
@given(signature=_signatures(), data=st.data())
def test_v1_tables_decode_as_the_column_checks_decode(signature: Signature, data: Any) -> None:
    names = signature.names
    rows = data.draw(st.integers(1, 4))
    drop = data.draw(st.sets(st.sampled_from(names)) | st.just(set()))
    extra = data.draw(st.booleans())
    clean = data.draw(st.booleans())
    records = []
    for _ in range(rows):
        record = {
            s.name: data.draw(_cell(s, clean)) for s in signature.columns if s.name not in drop
        }
        if extra:
            record["unknown"] = 1
        records.append(record)
    shape = data.draw(st.sampled_from(["instances", "columns"]))
    if shape == "columns":
        body: dict[str, Any] = {
            "inputs": {n: [r.get(n) for r in records] for n in names if n not in drop}
        }
    else:
        body = {"instances": records}
    raw = _json(body)

    def decode() -> Any:
        return decode_v1_predict(raw, signature)

    fast, taken = _taken(tables, "plain_numbers", decode)
    with mock.patch.object(tables, "plain_numbers", lambda *_: None):
        general = _outcome(decode)
    _same(fast, general)
    event("fast path" if taken else fast[0])


_DATATYPES = st.sampled_from(["FP64", "INT64", "FP64", "INT64", "FP32", "INT32", "BOOL", "BYTES"])


@hsettings(max_examples=400, deadline=None)
@given(signature=_signatures(), data=st.data())
def test_v2_tensors_decode_as_the_tensor_checks_decode(signature: Signature, data: Any) -> None:
    rows = data.draw(st.integers(1, 4))
    clean = data.draw(st.booleans())
    tensors = []
    for spec in signature.columns:
        if data.draw(st.integers(0, 19)) == 0:
            continue  # a missing tensor
        plain = "INT64" if spec.dtype == "int" else "FP64"
        datatype = plain if clean else data.draw(st.just(plain) | _DATATYPES)
        values = [data.draw(_cell(spec, clean)) for _ in range(rows)]
        shapes = [[rows], [rows, 1]] if clean else [[rows], [rows, 1], [rows + 1], [1, rows]]
        shape: list[int] = data.draw(st.sampled_from(shapes))
        if data.draw(st.integers(0, 9)) == 0:
            values = [[v] for v in values]  # nested as [rows, 1]
        tensors.append({"name": spec.name, "shape": shape, "datatype": datatype, "data": values})
    if data.draw(st.integers(0, 9)) == 0 and tensors:
        tensors.append(dict(tensors[0]))  # a tensor named twice
    raw = _json({"inputs": tensors})

    def decode() -> Any:
        return decode_v2_infer(raw, {}, signature)

    fast, taken = _taken(v2, "_plain", decode)
    with mock.patch.object(v2, "_plain", lambda *_: None):
        general = _outcome(decode)
    _same(fast, general)
    event("fast path" if taken else fast[0])


def test_the_fast_path_takes_the_common_request_and_declines_the_rest() -> None:
    """Not vacuous: the plain 1-row request goes the fast way; each doubt does not."""
    signature = Signature(
        columns=[ColumnSpec(name="n", dtype="int"), ColumnSpec(name="x", dtype="float")]
    )
    taken = plain_numbers(signature, [[3], [0.25]])
    assert taken is not None and taken.columns[0].dtype == np.int64
    assert taken.matrix is not None and taken.matrix.tolist() == [[3.0, 0.25]]
    for values in (
        [[3.0], [0.25]],  # a whole float in an int column: the general path's call
        [[True], [0.25]],
        [[3], [None]],
        [[3], ["0.25"]],
        [[2**63], [0.25]],  # past int64
        [[3], [10**400]],  # past float64
        [[3], [float("inf")]],
        [[3], [0.25, 0.5]],  # ragged
        [[3]],  # a column short
    ):
        assert plain_numbers(signature, values) is None, values
    text = Signature(columns=[ColumnSpec(name="s", dtype="string")])
    assert plain_numbers(text, [["a"]]) is None
    seen = []
    real = v2.plain_numbers

    def spy(*args: Any) -> Any:
        seen.append(real(*args))
        return seen[-1]

    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [0.25]},
                       {"name": "n", "shape": [1], "datatype": "INT64", "data": [3]}]}  # fmt: skip
    with mock.patch.object(v2, "plain_numbers", spy):
        decoded = decode_v2_infer(_json(body), {}, signature)
    assert seen and seen[0] is decoded.inputs
