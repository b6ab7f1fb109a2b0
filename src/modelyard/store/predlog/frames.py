"""The segment file format: a magic header, then one frame per record.

A segment starts with the 8 bytes ``MYPLOG1\\n``. Each record follows as a frame::

    length   uint32 little-endian   bytes of the payload (never 0)
    crc32    uint32 little-endian   zlib.crc32 of the payload
    payload  msgpack                one PredictionRecord or FeedbackRecord

A writer killed mid-``write`` leaves a torn frame at the tail: too short, or with a crc
that does not match. Readers stop at the first such frame and keep every frame before it,
so a crash never loses an earlier record and never crashes a reader.

>>> data = MAGIC + frame(b"one") + frame(b"two")
>>> parse(data).frames
[b'one', b'two']
>>> scan = parse(data[:-1])  # the last frame is torn
>>> scan.frames, scan.torn
([b'one'], True)
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

__all__ = ["MAGIC", "Scan", "frame", "parse"]

MAGIC = b"MYPLOG1\n"
_HEADER = struct.Struct("<II")


def frame(payload: bytes) -> bytes:
    """``payload`` framed with its length and crc32."""
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


@dataclass(frozen=True)
class Scan:
    """The complete frames of a segment, and whether a torn tail followed them."""

    frames: list[bytes]
    torn: bool
    foreign: bool = False  # the file does not start with MAGIC: not a segment at all


def parse(data: bytes) -> Scan:
    """The payloads of every complete frame in ``data`` (a whole segment file)."""
    if len(data) < len(MAGIC):
        # a segment created but killed before its header was written holds nothing
        return Scan([], torn=bool(data) and not MAGIC.startswith(data))
    if not data.startswith(MAGIC):
        return Scan([], torn=False, foreign=True)
    frames: list[bytes] = []
    offset, end = len(MAGIC), len(data)
    view = memoryview(data)
    while offset < end:
        if offset + _HEADER.size > end:
            return Scan(frames, torn=True)
        length, crc = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        # a zero length is what a zero-filled tail (a crash before the data reached disk) reads as
        if length == 0 or start + length > end:
            return Scan(frames, torn=True)
        payload = bytes(view[start : start + length])
        if zlib.crc32(payload) != crc:
            return Scan(frames, torn=True)
        frames.append(payload)
        offset = start + length
    return Scan(frames, torn=False)
