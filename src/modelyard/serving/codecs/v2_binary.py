"""Triton's binary tensor extension of the v2 protocol: raw little-endian tensor bytes.

A body with the header ``Inference-Header-Content-Length: N`` is N bytes of JSON then
the raw bytes of every tensor whose parameters carry ``binary_data_size``, in order.
``BYTES`` elements are each a 4-byte little-endian length and that many UTF-8 bytes.

>>> serialize_bytes(["ab", "c"])
b'\\x02\\x00\\x00\\x00ab\\x01\\x00\\x00\\x00c'
>>> found = ProblemList()
>>> deserialize_bytes(memoryview(serialize_bytes(["ab", "c"])), 2, "$", found)
['ab', 'c']
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

import numpy as np

from modelyard.serving.codecs.problems import MalformedRequest, ProblemList

__all__ = [
    "HEADER",
    "NUMPY_TYPES",
    "array_from_bytes",
    "deserialize_bytes",
    "header_length",
    "serialize_bytes",
]

HEADER = "Inference-Header-Content-Length"
#: v2 datatypes with a fixed width, as little-endian numpy types
NUMPY_TYPES: dict[str, np.dtype[np.generic]] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_LENGTH = struct.Struct("<I")


def header_length(headers: Mapping[str, str], body_size: int) -> int | None:
    """The JSON header's length from the request headers (any case), or ``None``."""
    value = headers.get(HEADER) or headers.get(HEADER.lower())
    if value is None:
        lowered = HEADER.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    if value is None:
        return None
    loc = f"headers.{HEADER}"
    try:
        size = int(value)
    except ValueError:
        raise MalformedRequest(f"Expected a byte count, got {value[:40]!r}", loc=loc) from None
    if not 0 <= size <= body_size:
        raise MalformedRequest(
            f"Expected a byte count within the body's {body_size} bytes, got {size}", loc=loc
        )
    return size


def array_from_bytes(
    raw: memoryview, datatype: str, count: int, loc: str, found: ProblemList
) -> np.ndarray | None:
    """``count`` elements of a fixed-width ``datatype`` from raw bytes, copied."""
    dtype = NUMPY_TYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        wanted = f"{count * dtype.itemsize} bytes ({count} x {datatype})"
        found.add(f"{loc}.parameters.binary_data_size", wanted, f"{len(raw)} bytes", raw=True)
        return None
    if datatype == "BOOL":
        octets = np.frombuffer(raw, dtype=np.uint8)
        if (octets > 1).any():
            found.add(loc, "BOOL bytes of 0 or 1", f"a byte {int(octets.max())}", raw=True)
            return None
        return octets.astype(bool)
    return np.frombuffer(raw, dtype=dtype).copy()


def deserialize_bytes(
    raw: memoryview, count: int, loc: str, found: ProblemList
) -> list[str] | None:
    """``count`` UTF-8 strings, each 4-byte-length prefixed, from raw bytes."""
    values: list[str] = []
    offset, end = 0, len(raw)
    while offset < end:
        if offset + 4 > end:
            break
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > end:
            break
        try:
            values.append(str(raw[offset : offset + length], "utf-8"))
        except UnicodeDecodeError:
            found.add(f"{loc}.data[{len(values)}]", "UTF-8 text", f"{length} bytes", raw=True)
            return None
        offset += length
    if offset != end or len(values) != count:
        wanted = f"{count} length-prefixed BYTES elements"
        got = f"{len(values)} elements in {end} bytes" + (" (truncated)" if offset != end else "")
        found.add(f"{loc}.parameters.binary_data_size", wanted, got, raw=True)
        return None
    return values


def serialize_bytes(values: Sequence[object]) -> bytes:
    """Strings as a BYTES tensor: each a 4-byte little-endian length, then its UTF-8."""
    parts = []
    for value in values:
        data = value if isinstance(value, bytes) else str(value).encode()
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)
