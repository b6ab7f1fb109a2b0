"""Collecting what is wrong with a request, and the errors that carry it.

A decoder adds every problem it finds (up to :data:`MAX_PROBLEMS`, counting the rest)
and raises one error at the end, so a client fixes all of them in one round trip:

>>> found = ProblemList()
>>> found.add("$.instances[2].age", "number", "abc")
>>> found.add("$.instances[3].age", "number", None)
>>> try:
...     found.raise_if_any()
... except InvalidInputError as err:
...     print(*err.message.split("; "), sep=chr(10))
2 problems with the input: expected number, got "abc" - at $.instances[2].age
expected number, got null - at $.instances[3].age
>>> short_repr("x" * 1_000_000)
'"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx..." (1000000 chars)'
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from modelyard.errors import InvalidInputError, Problem

__all__ = [
    "MAX_PROBLEMS",
    "MalformedRequest",
    "ProblemList",
    "UnsupportedMediaType",
    "key",
    "short_repr",
]

#: problems kept per request; the rest are only counted ("and N more")
MAX_PROBLEMS = 20
#: problems spelled out in the message; all kept ones are in ``problems``
_IN_MESSAGE = 3
_MAX_TEXT = 40


class MalformedRequest(InvalidInputError):
    """The body is not the JSON (or CSV, or binary layout) the protocol needs: a 400."""

    status = 400
    type = "malformed_request"


class UnsupportedMediaType(InvalidInputError):
    """A Content-Type the endpoint does not read: a 415."""

    status = 415
    type = "unsupported_media_type"


def short_repr(value: Any) -> str:
    """A short JSON-like spelling of ``value`` for ``Problem.got``: never the whole payload."""
    if isinstance(value, str):
        if len(value) > _MAX_TEXT:
            return (
                f'{msgspec.json.encode(value[:_MAX_TEXT]).decode()[:-1]}..." ({len(value)} chars)'
            )
        return msgspec.json.encode(value).decode()
    if value is None or isinstance(value, bool | int | float):
        if isinstance(value, float) and math.isnan(value):
            return "NaN"
        text = (
            "null"
            if value is None
            else str(value).lower()
            if isinstance(value, bool)
            else repr(value)
        )
        return text if len(text) <= _MAX_TEXT else f"{text[:_MAX_TEXT]}... ({len(text)} digits)"
    if isinstance(value, dict):
        return f"an object with {len(value)} key{'s' if len(value) != 1 else ''}"
    if isinstance(value, list | tuple):
        return f"an array of {len(value)}"
    if isinstance(value, bytes | bytearray | memoryview):
        return f"{len(value)} bytes"
    return type(value).__name__


def key(name: str) -> str:
    """An object key as it appears in a JSON path, shortened like ``short_repr``."""
    return name if len(name) <= _MAX_TEXT else f"{name[:_MAX_TEXT]}...({len(name)} chars)"


def _describe(problem: Problem) -> str:
    return f"expected {problem.expected}, got {problem.got} - at {problem.loc}"


class ProblemList:
    """Problems found so far: the first :data:`MAX_PROBLEMS` kept, the rest counted."""

    __slots__ = ("items", "total")

    def __init__(self) -> None:
        self.items: list[Problem] = []
        self.total = 0

    def __bool__(self) -> bool:
        return self.total > 0

    def __len__(self) -> int:
        return self.total

    @property
    def full(self) -> bool:
        """True once no more problems are kept: scans may stop looking for details."""
        return self.total >= MAX_PROBLEMS

    def add(self, loc: str, expected: str, got: Any, *, raw: bool = False) -> None:
        """One problem; ``got`` is the offending value (``raw``: already a short text)."""
        self.total += 1
        if len(self.items) < MAX_PROBLEMS:
            text = got if raw and isinstance(got, str) else short_repr(got)
            self.items.append(Problem(loc, expected, text))

    def count(self, extra: int) -> None:
        """Count ``extra`` more problems of a kind already reported, without keeping them."""
        self.total += extra

    def error(self, error: type[InvalidInputError] = InvalidInputError) -> InvalidInputError:
        """One error summarising every problem (``and N more`` past the shown ones)."""
        shown = "; ".join(_describe(p) for p in self.items[:_IN_MESSAGE])
        rest = self.total - min(self.total, _IN_MESSAGE)
        more = f"; and {rest} more" if rest else ""
        plural = "s" if self.total != 1 else ""
        return error(
            f"{self.total} problem{plural} with the input: {shown}{more}", problems=self.items
        )

    def raise_if_any(self, error: type[InvalidInputError] = InvalidInputError) -> None:
        if self.total:
            raise self.error(error)
