"""Decoding an Open Inference Protocol (KServe v2) infer request into ``Inputs``.

Two layouts are read: one tensor per signature column (shape ``[n]`` or ``[n, 1]``), or,
when every column is numeric, one ``[n, k]`` tensor holding all the columns in signature
order. ``data`` may be flat or nested row-major; Triton's binary tensors (see
:mod:`.v2_binary`) are read the same way. The Content-Type header is never looked at:
tritonclient sends none.

>>> from modelyard.models.signature import ColumnSpec, Signature
>>> sig = Signature(columns=[ColumnSpec(name="age", dtype="int"),
...                          ColumnSpec(name="plan", dtype="string")])
>>> body = (b'{"id": "r1", "inputs": ['
...         b'{"name": "age", "shape": [2], "datatype": "INT64", "data": [31, 40]},'
...         b'{"name": "plan", "shape": [2, 1], "datatype": "BYTES", "data": [["a"], ["b"]]}]}')
>>> request = decode_v2_infer(body, {}, sig)
>>> request.request_id, request.rows, request.inputs.columns[1].tolist()
('r1', 2, ['a', 'b'])
>>> decode_v2_infer(body.replace(b'"INT64"', b'"BYTES"'), {}, sig)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
modelyard.errors.InvalidInputError: 1 problem ... 'age', got "BYTES" - at $.inputs[0].datatype
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgspec
import numpy as np

from modelyard.models.runtimes import NUMERIC, Inputs
from modelyard.models.signature import ColumnSpec, Signature
from modelyard.serving.codecs.columns import (
    Loc,
    allows_null,
    assemble,
    column_from_array,
    column_from_values,
    plain_numbers,
)
from modelyard.serving.codecs.jsonbody import decode_json
from modelyard.serving.codecs.problems import ProblemList
from modelyard.serving.codecs.request import DecodedRequest
from modelyard.serving.codecs.tables import check_row_count
from modelyard.serving.codecs.v2_binary import (
    NUMPY_TYPES,
    array_from_bytes,
    deserialize_bytes,
    header_length,
)
from modelyard.serving.codecs.v2_datatypes import check_datatype

__all__ = ["decode_v2_infer"]

_INTS = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
_FLOATS = ("FP16", "FP32", "FP64")
#: the datatypes each column type is read from, the first one the natural one
COMPATIBLE: dict[str, tuple[str, ...]] = {
    "float": ("FP64", "FP32", "FP16", *_INTS),
    "int": ("INT64", *_INTS[:3], *_INTS[4:], *_FLOATS),
    "bool": ("BOOL",),
    "string": ("BYTES",),
    "category": ("BYTES",),
    "datetime": ("BYTES",),
}
_ALSO = {"float": "another float or integer type", "int": "another integer or float type"}
_KNOWN = ", ".join(["BOOL", *_INTS, *_FLOATS, "BYTES"])


class _Tensor(msgspec.Struct):
    name: str
    shape: list[int]
    datatype: str
    data: Any = None
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)


class _Requested(msgspec.Struct):
    name: str
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)


class _InferRequest(msgspec.Struct):
    inputs: list[_Tensor]
    id: str | None = None
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)
    outputs: list[_Requested] | None = None


def _flatten(data: list[Any]) -> list[Any]:
    if not data or not isinstance(data[0], list):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:  # iterative: nesting as deep as the JSON decoder allows
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _data_loc(base: str, shape: list[int], nested: bool) -> Loc:
    if nested and len(shape) > 1:
        dims = tuple(shape)
        return lambda k: base + "".join(f"[{int(i)}]" for i in np.unravel_index(k, dims))
    return lambda k: f"{base}[{k}]"


class _Source:
    """One tensor's elements: decoded JSON values or a numpy array from binary bytes."""

    def __init__(self, values: list[Any] | np.ndarray, loc: Loc) -> None:
        self.values = values
        self.loc = loc


def _binary_parts(
    tensors: list[_Tensor], rest: memoryview | None, found: ProblemList
) -> list[memoryview | None]:
    parts: list[memoryview | None] = []
    offset = 0
    for i, tensor in enumerate(tensors):
        size = tensor.parameters.get("binary_data_size")
        loc = f"$.inputs[{i}].parameters.binary_data_size"
        if size is None:
            parts.append(None)
            continue
        if type(size) is not int or size < 0:
            found.add(loc, "a byte count", size)
        elif rest is None:
            found.add(loc, "no binary data without an Inference-Header-Content-Length", size)
        elif tensor.data is not None:
            found.add(f"$.inputs[{i}].data", "no data beside binary_data_size", tensor.data)
        elif offset + size > len(rest):
            found.add(loc, f"at most the {len(rest) - offset} bytes left", size)
        else:
            parts.append(rest[offset : offset + size])
            offset += size
            continue
        parts.append(None)
    if rest is not None and not found and offset != len(rest):
        wanted = f"{offset} bytes of binary tensors after the JSON header"
        found.add("$", wanted, f"{len(rest)} bytes", raw=True)
    return parts


def _source(tensor: _Tensor, i: int, raw: memoryview | None, found: ProblemList) -> _Source | None:
    base = f"$.inputs[{i}]"
    if tensor.datatype not in NUMPY_TYPES and tensor.datatype != "BYTES":
        found.add(f"{base}.datatype", f"a v2 datatype ({_KNOWN})", tensor.datatype)
        return None
    if any(d < 0 for d in tensor.shape):
        found.add(f"{base}.shape", "sizes >= 0", str(tensor.shape), raw=True)
        return None
    count = math.prod(tensor.shape)
    if raw is not None:
        values: list[Any] | np.ndarray | None
        if tensor.datatype == "BYTES":
            values = deserialize_bytes(raw, count, base, found)
        else:
            values = array_from_bytes(raw, tensor.datatype, count, base, found)
        return None if values is None else _Source(values, lambda k: f"{base}.data[{k}]")
    if not isinstance(tensor.data, list):
        found.add(f"{base}.data", "an array of the tensor's values", tensor.data)
        return None
    flat = _flatten(tensor.data)
    if len(flat) != count:
        wanted = f"{count} values for shape {tensor.shape}"
        found.add(f"{base}.data", wanted, f"{len(flat)} values", raw=True)
        return None
    loc = _data_loc(f"{base}.data", tensor.shape, flat is not tensor.data)
    before = found.total
    check_datatype(flat, tensor.datatype, loc, found)
    return None if found.total > before else _Source(flat, loc)


def _column(
    signature: Signature, spec: ColumnSpec, source: _Source, found: ProblemList
) -> np.ndarray | None:
    nullable = allows_null(signature, spec)
    if isinstance(source.values, np.ndarray):
        return column_from_array(
            spec, source.values, allow_null=nullable, loc=source.loc, found=found
        )
    return column_from_values(spec, source.values, allow_null=nullable, loc=source.loc, found=found)


#: the datatype whose JSON values a column takes as they are (other compatible ones are
#: range-checked on the general path)
_PLAIN_DATATYPE = {"float": "FP64", "int": "INT64"}


def _plain(signature: Signature, tensors: list[_Tensor]) -> Inputs | None:
    """The common request in one pass: one JSON tensor per column, each ``FP64`` for a
    float column or ``INT64`` for an int column, of shape ``[rows]`` (or ``[rows, 1]``)
    holding plain numbers. ``None`` for anything else: the general path checks it."""
    if len(tensors) != len(signature.columns):
        return None
    by_name = {tensor.name: tensor for tensor in tensors}
    values = []
    for spec in signature.columns:
        tensor = by_name.get(spec.name)
        if (
            tensor is None
            or tensor.datatype != _PLAIN_DATATYPE.get(spec.dtype)
            or not isinstance(tensor.data, list)
            or not (len(tensor.shape) == 1 or tensor.shape[1:] == [1])
            or len(tensor.data) != tensor.shape[0]
        ):
            return None
        values.append(tensor.data)
    return plain_numbers(signature, values)


def _per_column(
    signature: Signature,
    tensors: list[_Tensor],
    parts: list[memoryview | None],
    found: ProblemList,
) -> tuple[Inputs | None, int]:
    if all(part is None for part in parts):
        plain = _plain(signature, tensors)
        if plain is not None:
            return plain, plain.rows
    return _per_column_each(signature, tensors, parts, found)


def _per_column_each(
    signature: Signature,
    tensors: list[_Tensor],
    parts: list[memoryview | None],
    found: ProblemList,
) -> tuple[Inputs | None, int]:
    """``_per_column`` one tensor at a time, each value checked (and every problem named)."""
    index = {spec.name: spec for spec in signature.columns}
    columns: dict[str, np.ndarray] = {}
    first: tuple[str, int] | None = None
    seen: set[str] = set()
    for i, tensor in enumerate(tensors):
        base = f"$.inputs[{i}]"
        if tensor.name in seen:
            found.add(f"{base}.name", "each input tensor named once", tensor.name)
            continue
        seen.add(tensor.name)
        spec = index.get(tensor.name)
        if spec is None:
            if signature.extra_columns == "reject":
                known = ", ".join(signature.names[:10])
                found.add(f"{base}.name", f"one of the model's columns ({known})", tensor.name)
            continue
        shape = tensor.shape
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            found.add(f"{base}.shape", "[rows] or [rows, 1]", str(shape), raw=True)
            continue
        if first is None:
            first = (tensor.name, shape[0])
        elif shape[0] != first[1]:
            wanted = f"[{first[1]}] rows, as many as {first[0]!r}"
            found.add(f"{base}.shape", wanted, str(shape), raw=True)
            continue
        allowed = COMPATIBLE[spec.dtype]
        if tensor.datatype not in allowed:
            also = f" (or {_ALSO[spec.dtype]})" if spec.dtype in _ALSO else ""
            wanted = f"{allowed[0]}{also} for the {spec.dtype} column {spec.name!r}"
            found.add(f"{base}.datatype", wanted, tensor.datatype)
            continue
        source = _source(tensor, i, parts[i], found)
        if source is not None:
            column = _column(signature, spec, source, found)
            if column is not None:
                columns[spec.name] = column
    for spec in signature.columns:
        if spec.name not in seen:
            wanted = f"a tensor named {spec.name!r} ({COMPATIBLE[spec.dtype][0]})"
            found.add("$.inputs", wanted, "nothing", raw=True)
    rows = first[1] if first else 0
    if found:
        return None, rows
    return assemble(signature, [columns[name] for name in signature.names]), rows


def _matrix(
    signature: Signature, tensor: _Tensor, raw: memoryview | None, found: ProblemList
) -> tuple[Inputs | None, int]:
    base = "$.inputs[0]"
    width = len(signature.columns)
    text = [spec.name for spec in signature.columns if spec.dtype not in NUMERIC]
    if text:
        wanted = f"one tensor per column (the signature has text columns: {', '.join(text[:5])})"
        found.add(base, wanted, f"one tensor {tensor.name!r} of shape {tensor.shape}", raw=True)
        return None, 0
    if len(tensor.shape) != 2 or tensor.shape[1] != width:
        wanted = f"[rows, {width}]: one column per signature column, in order"
        found.add(f"{base}.shape", wanted, str(tensor.shape), raw=True)
        return None, 0
    if tensor.datatype == "BYTES":
        found.add(f"{base}.datatype", "a numeric or BOOL datatype", tensor.datatype)
        return None, 0
    not_bool = [spec.name for spec in signature.columns if spec.dtype != "bool"]
    if tensor.datatype == "BOOL" and not_bool:
        wanted = f"a numeric datatype (BOOL only when every column is bool; {not_bool[0]!r} is not)"
        found.add(f"{base}.datatype", wanted, tensor.datatype)
        return None, 0
    rows = tensor.shape[0]
    source = _source(tensor, 0, raw, found)
    if source is None:
        return None, rows
    values = source.values
    if not isinstance(values, np.ndarray):
        allowed = {bool, type(None)} if tensor.datatype == "BOOL" else {int, float, type(None)}
        for k, value in enumerate(values):
            if type(value) not in allowed:
                found.add(source.loc(k), "number" if bool not in allowed else "boolean", value)
        if found:
            return None, rows
        values = np.array(values, dtype=np.float64)
    matrix = values.reshape(rows, width)
    columns = []
    for j, spec in enumerate(signature.columns):
        columns.append(
            column_from_array(
                spec,
                np.ascontiguousarray(matrix[:, j]),
                allow_null=allows_null(signature, spec),
                loc=_in_row(source.loc, width, j),
                found=found,
                null="NaN" if isinstance(source.values, np.ndarray) else "null",
            )
        )
    return (None if found else assemble(signature, columns)), rows


def _in_row(loc: Loc, width: int, j: int) -> Loc:
    return lambda r: loc(r * width + j)


def _is_matrix(tensors: list[_Tensor], signature: Signature) -> bool:
    return (
        len(tensors) == 1 and len(tensors[0].shape) == 2 and tensors[0].name not in signature.names
    )


def _binary_choice(request: _InferRequest) -> frozenset[str] | bool:
    everything = request.parameters.get("binary_data_output") is True
    if request.outputs is None:
        return everything
    return frozenset(
        out.name for out in request.outputs if out.parameters.get("binary_data", everything) is True
    )


def decode_v2_infer(
    body: bytes, headers: Mapping[str, str], signature: Signature, *, max_rows: int = 10_000
) -> DecodedRequest:
    """A v2 infer request (JSON, or JSON plus binary tensors) as checked ``Inputs``."""
    size = header_length(headers, len(body))
    view = memoryview(body)
    request: _InferRequest = decode_json(view if size is None else view[:size], _InferRequest)
    found = ProblemList()
    parts = _binary_parts(request.inputs, None if size is None else view[size:], found)
    found.raise_if_any()
    tensors = request.inputs
    if not tensors:
        found.add("$.inputs", "at least one input tensor", "an empty array", raw=True)
    elif _is_matrix(tensors, signature):
        check_row_count(tensors[0].shape[0], "$.inputs[0].shape", max_rows, found)
    else:
        known = set(signature.names)
        shapes = [t.shape for t in tensors if t.name in known and t.shape]
        check_row_count(shapes[0][0] if shapes else 1, "$.inputs[0].shape", max_rows, found)
    found.raise_if_any()
    if _is_matrix(tensors, signature):
        inputs, rows = _matrix(signature, tensors[0], parts[0], found)
    else:
        inputs, rows = _per_column(signature, tensors, parts, found)
    found.raise_if_any()
    return DecodedRequest(
        inputs=inputs,
        entities=None,
        rows=rows,
        request_id=request.id,
        requested_outputs=None if request.outputs is None else [o.name for o in request.outputs],
        binary_outputs=_binary_choice(request),
        parameters=request.parameters,
    )
