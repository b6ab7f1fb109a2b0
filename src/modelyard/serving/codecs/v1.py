"""KServe v1: ``POST /v1/models/{name}:predict`` bodies in, ``{"predictions": ...}`` out.

``instances`` (or its alias ``inputs``) holds records, rows in signature order, or a
mapping of columns. ``entities`` holds keys for the app to look features up with: they
are only checked (objects of scalars, the same keys in each) and returned as columns.

A classifier answers one object per row, ``{"label": ..., "probabilities": {class: p}}``;
a model with one output answers its value per row; one with several outputs answers an
object of them per row.

>>> from modelyard.models.signature import ColumnSpec, Signature
>>> sig = Signature(columns=[ColumnSpec(name="age", dtype="int")])
>>> decode_v1_predict(b'{"entities": [{"user": 1}, {"user": 2}]}', sig).entities
{'user': [1, 2]}
>>> decode_v1_predict(b'{"instances": [{"age": 31}]}', sig).inputs.columns[0].tolist()
[31]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import numpy as np

from modelyard.models.manifest import OutputSpec
from modelyard.models.signature import Signature
from modelyard.serving.codecs.jsonbody import decode_json
from modelyard.serving.codecs.problems import ProblemList, key, short_repr
from modelyard.serving.codecs.request import DecodedRequest
from modelyard.serving.codecs.tables import check_row_count, inputs_from_table

__all__ = ["decode_v1_predict", "encode_v1_response", "predictions"]

_SCALARS = (str, int, float, bool, type(None))
_ENCODER = msgspec.json.Encoder()
_KEYS = ("instances", "inputs", "entities")


def _keys(data: dict[str, Any]) -> str:
    if not data:
        return "an empty object"
    return "keys " + ", ".join(short_repr(k) for k in list(data)[:5])


def one_key(data: Any, keys: Sequence[str], found: ProblemList) -> str | None:
    """The one key of ``keys`` that the body object holds, or a problem."""
    wanted = "an object with one of " + ", ".join(f'"{k}"' for k in keys)
    if not isinstance(data, dict):
        found.add("$", wanted, data)
        return None
    present = [k for k in keys if k in data]
    if len(present) != 1:
        got = _keys(data) if not present else "keys " + ", ".join(present)
        found.add("$", wanted, got, raw=True)
        return None
    return present[0]


def _entities(data: Any, max_rows: int, found: ProblemList) -> dict[str, list[Any]]:
    loc = "$.entities"
    if not isinstance(data, list):
        found.add(loc, "an array of objects of entity keys", data)
        return {}
    check_row_count(len(data), loc, max_rows, found)
    if found:
        return {}
    keys = list(data[0]) if isinstance(data[0], dict) else []
    columns: dict[str, list[Any]] = {key: [] for key in keys}
    for i, entity in enumerate(data):
        if not isinstance(entity, dict) or not entity:
            found.add(f"{loc}[{i}]", "an object of entity keys", entity)
            continue
        if entity.keys() != columns.keys():
            wanted = "the keys of the first entity: " + ", ".join(key(k) for k in keys[:10])
            found.add(f"{loc}[{i}]", wanted, _keys(entity), raw=True)
            continue
        for name, value in entity.items():
            if not isinstance(value, _SCALARS):
                found.add(f"{loc}[{i}].{key(name)}", "a string, number, boolean or null", value)
            columns[name].append(value)
    return columns


def decode_v1_predict(
    body: bytes, signature: Signature, *, max_rows: int = 10_000
) -> DecodedRequest:
    """A v1 predict request as checked ``Inputs`` (or entity keys)."""
    data = decode_json(body)
    found = ProblemList()
    field = one_key(data, _KEYS, found)
    found.raise_if_any()
    params = data.get("parameters")
    parameters = params if isinstance(params, dict) else {}
    if field == "entities":
        entities = _entities(data[field], max_rows, found)
        found.raise_if_any()
        rows = len(next(iter(entities.values())))
        return DecodedRequest(inputs=None, entities=entities, rows=rows, parameters=parameters)
    inputs = inputs_from_table(signature, data[field], f"$.{field}", max_rows=max_rows)
    return DecodedRequest(inputs=inputs, entities=None, rows=inputs.rows, parameters=parameters)


def predictions(
    outputs: Mapping[str, np.ndarray], specs: Sequence[OutputSpec], task: str
) -> list[Any]:
    """One prediction per row: see the module docstring for the shapes."""
    names = [spec.name for spec in specs if spec.name in outputs]
    if task == "classification" and "label" in outputs:
        labels = outputs["label"].tolist()
        probas = [(n[6:], outputs[n].tolist()) for n in names if n.startswith("proba_")]
        return [
            {"label": label, "probabilities": {c: values[r] for c, values in probas}}
            for r, label in enumerate(labels)
        ]
    if len(names) == 1:
        return list(outputs[names[0]].tolist())
    columns = [(n, outputs[n].tolist()) for n in names]
    rows = len(columns[0][1]) if columns else 0
    return [{n: values[r] for n, values in columns} for r in range(rows)]


def encode_v1_response(
    *,
    model: str,
    version: str,
    request_id: str,
    outputs: Mapping[str, np.ndarray],
    specs: Sequence[OutputSpec],
    task: str,
) -> bytes:
    """``{"predictions": [...], "model_name", "model_version", "request_id"}``."""
    return _ENCODER.encode(
        {
            "predictions": predictions(outputs, specs, task),
            "model_name": model,
            "model_version": version,
            "request_id": request_id,
        }
    )
