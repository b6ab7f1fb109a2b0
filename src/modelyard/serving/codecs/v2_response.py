"""Encoding v2 infer responses (JSON or binary tensors) and v2 model metadata.

>>> from modelyard.models.manifest import OutputSpec
>>> body, headers = encode_v2_response(
...     model="churn", version="3", request_id="r1",
...     outputs={"prediction": np.array([0.5, np.nan])},
...     specs=[OutputSpec(name="prediction", dtype="float")], requested=None, binary=False)
>>> body
b'{"model_name":"churn","model_version":"3","id":"r1","outputs":[{"name":"prediction","datatype":"FP64","shape":[2],"data":[0.5,null]}]}'
>>> headers
{'content-type': 'application/json'}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import numpy as np

from modelyard.models.manifest import OutputSpec
from modelyard.models.signature import Signature
from modelyard.serving.codecs.outputs import V2_DATATYPES
from modelyard.serving.codecs.problems import ProblemList
from modelyard.serving.codecs.v2_binary import HEADER, serialize_bytes

__all__ = ["check_requested_outputs", "encode_v2_response", "v2_model_metadata"]

_ENCODER = msgspec.json.Encoder()


def check_requested_outputs(requested: Sequence[str] | None, specs: Sequence[OutputSpec]) -> None:
    """A 422 naming each requested output the model does not have; call before predicting."""
    if requested is None:
        return
    known = [spec.name for spec in specs]
    found = ProblemList()
    for i, name in enumerate(requested):
        if name not in known:
            found.add(f"$.outputs[{i}].name", f"one of the outputs ({', '.join(known[:10])})", name)
    found.raise_if_any()


def _raw(values: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        return serialize_bytes(values.tolist())
    if datatype == "BOOL":
        return values.astype(np.uint8).tobytes()
    return values.astype("<f8" if datatype == "FP64" else "<i8", copy=False).tobytes()


def encode_v2_response(
    *,
    model: str,
    version: str,
    request_id: str | None,
    outputs: Mapping[str, np.ndarray],
    specs: Sequence[OutputSpec],
    requested: list[str] | None,
    binary: frozenset[str] | bool,
) -> tuple[bytes, dict[str, str]]:
    """The response body and the headers it needs (Content-Type, binary header length)."""
    check_requested_outputs(requested, specs)
    by_name = {spec.name: spec for spec in specs}
    tensors: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name in requested if requested is not None else [s.name for s in specs]:
        values = outputs[name]
        datatype = V2_DATATYPES[by_name[name].dtype]
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(values.shape)}
        if binary is True or (binary is not False and name in binary):
            raw = _raw(values, datatype)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = values.tolist()
        tensors.append(tensor)
    response: dict[str, Any] = {"model_name": model, "model_version": version}
    if request_id is not None:
        response["id"] = request_id
    response["outputs"] = tensors
    header = _ENCODER.encode(response)
    if not chunks:
        return header, {"content-type": "application/json"}
    headers = {"content-type": "application/octet-stream", HEADER: str(len(header))}
    return header + b"".join(chunks), headers


def v2_model_metadata(
    *,
    name: str,
    versions: Sequence[str],
    platform: str,
    signature: Signature | None,
    specs: Sequence[OutputSpec],
) -> bytes:
    """``GET /v2/models/{name}``: inputs from the signature, outputs from the specs.

    >>> v2_model_metadata(name="m", versions=["1"], platform="modelyard-sklearn",
    ...                   signature=None, specs=[OutputSpec(name="prediction", dtype="float")])
    b'{"name":"m","versions":["1"],"platform":"modelyard-sklearn","inputs":[],"outputs":[{"name":"prediction","datatype":"FP64","shape":[-1]}]}'
    """
    columns = signature.columns if signature is not None else []
    return _ENCODER.encode(
        {
            "name": name,
            "versions": list(versions),
            "platform": platform,
            "inputs": [
                {"name": c.name, "datatype": V2_DATATYPES[c.dtype], "shape": [-1]} for c in columns
            ],
            "outputs": [
                {"name": s.name, "datatype": V2_DATATYPES[s.dtype], "shape": [-1]} for s in specs
            ],
        }
    )
