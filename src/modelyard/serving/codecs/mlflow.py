"""MLflow's scoring server: ``POST /invocations`` in its JSON and CSV formats.

JSON bodies hold one of ``dataframe_split`` (``columns``, ``data`` rows, ``index``
ignored), ``dataframe_records``, ``instances`` or ``inputs`` (records, rows or a mapping
of columns); ``params`` comes back as ``parameters``. A missing Content-Type is read as
JSON. CSV (``text/csv``) has a header row; an empty cell is a missing value, a bool
cell is ``true``/``false``/``1``/``0``. The answer is ``{"predictions": [...]}`` like
MLflow's pyfunc server: a classifier's label per row (as the ``predict`` of an sklearn
classifier), a regressor's value per row, a list per row for several outputs.

>>> from modelyard.models.signature import ColumnSpec, Signature
>>> sig = Signature(columns=[ColumnSpec(name="age", dtype="int"),
...                          ColumnSpec(name="plan", dtype="string")])
>>> body = b'{"dataframe_split": {"columns": ["plan", "age"], "data": [["a", 31]]}}'
>>> decode_invocations(body, "application/json", sig).inputs.columns[0].tolist()
[31]
>>> decode_invocations(b"age,plan\\n31,a\\n", "text/csv", sig).inputs.columns[1].tolist()
['a']
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import numpy as np

from modelyard.models.manifest import OutputSpec
from modelyard.models.signature import ColumnSpec, Signature
from modelyard.serving.codecs.jsonbody import decode_json
from modelyard.serving.codecs.problems import MalformedRequest, ProblemList, UnsupportedMediaType
from modelyard.serving.codecs.request import DecodedRequest
from modelyard.serving.codecs.tables import check_row_count, inputs_from_rows, inputs_from_table
from modelyard.serving.codecs.v1 import one_key

__all__ = ["decode_invocations", "encode_invocations_response"]

_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_ENCODER = msgspec.json.Encoder()
_TRUE = {"true": True, "1": True, "false": False, "0": False}


def _media_type(content_type: str | None) -> str:
    if not content_type:
        return "application/json"
    return content_type.split(";", 1)[0].strip().lower()


def _split(signature: Signature, data: Any, max_rows: int, found: ProblemList) -> DecodedRequest:
    loc = "$.dataframe_split"
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        found.add(loc, 'an object with "columns" and "data" (an array of rows)', data)
        found.raise_if_any()
    names = data.get("columns")
    if names is not None and not isinstance(names, list):
        found.add(f"{loc}.columns", "an array of column names", names)
    check_row_count(len(data["data"]), f"{loc}.data", max_rows, found)
    found.raise_if_any()
    inputs = inputs_from_rows(
        signature, data["data"], f"{loc}.data", found, names=names, names_loc=f"{loc}.columns"
    )
    found.raise_if_any()
    assert inputs is not None  # no problems means every column was built
    return DecodedRequest(inputs=inputs, entities=None, rows=inputs.rows)


def _cell(spec: ColumnSpec | None, text: str) -> Any:
    if text == "":
        return None
    if spec is None or spec.dtype in ("string", "category", "datetime"):
        return text
    if spec.dtype == "bool":
        return _TRUE.get(text.lower(), text)
    try:
        return int(text) if spec.dtype == "int" and text.lstrip("+-").isdigit() else float(text)
    except ValueError:
        return text  # reported as "expected number, got ..." with its place


def _csv(signature: Signature, body: bytes, max_rows: int) -> DecodedRequest:
    try:
        text = body.decode("utf-8-sig")
        table = list(csv.reader(io.StringIO(text)))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise MalformedRequest(f"Expected a UTF-8 CSV body: {exc}", loc="$") from None
    found = ProblemList()
    if not table:
        raise MalformedRequest("Expected a CSV header row of column names, got nothing", loc="$")
    header, rows = table[0], table[1:]
    check_row_count(len(rows), "$.csv", max_rows, found)
    found.raise_if_any()
    specs = [signature.column(n) if n in signature.names else None for n in header]
    typed = [
        [_cell(s, v) for s, v in zip(specs, row, strict=False)] + row[len(specs) :] for row in rows
    ]
    inputs = inputs_from_rows(
        signature, typed, "$.csv", found, names=header, names_loc="$.csv.header"
    )
    found.raise_if_any()
    assert inputs is not None  # no problems means every column was built
    return DecodedRequest(inputs=inputs, entities=None, rows=inputs.rows)


def decode_invocations(
    body: bytes, content_type: str | None, signature: Signature, *, max_rows: int = 10_000
) -> DecodedRequest:
    """An ``/invocations`` request (JSON or CSV) as checked ``Inputs``."""
    media = _media_type(content_type)
    if media == "text/csv":
        return _csv(signature, body, max_rows)
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(
            f"Expected Content-Type application/json or text/csv, got {media[:40]!r}",
            loc="headers.Content-Type",
        )
    data = decode_json(body)
    found = ProblemList()
    key = one_key(data, _KEYS, found)
    found.raise_if_any()
    params = data.get("params")
    parameters = params if isinstance(params, dict) else {}
    if key == "dataframe_split":
        decoded = _split(signature, data[key], max_rows, found)
        return DecodedRequest(
            inputs=decoded.inputs, entities=None, rows=decoded.rows, parameters=parameters
        )
    inputs = inputs_from_table(signature, data[key], f"$.{key}", max_rows=max_rows)
    return DecodedRequest(inputs=inputs, entities=None, rows=inputs.rows, parameters=parameters)


def encode_invocations_response(
    *, outputs: Mapping[str, np.ndarray], specs: Sequence[OutputSpec], task: str
) -> bytes:
    """``{"predictions": [...]}``: labels, values, or a list of the outputs per row."""
    if task == "classification" and "label" in outputs:
        return _ENCODER.encode({"predictions": outputs["label"].tolist()})
    names = [spec.name for spec in specs if spec.name in outputs]
    if len(names) == 1:
        return _ENCODER.encode({"predictions": outputs[names[0]].tolist()})
    matrix = np.column_stack([outputs[n] for n in names]) if names else np.empty((0, 0))
    return _ENCODER.encode({"predictions": matrix.tolist()})
