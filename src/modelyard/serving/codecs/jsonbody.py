"""Decoding a JSON body with msgspec, its failures turned into problems with a JSON path.

Malformed JSON is a 400; JSON of the wrong shape, and the ``NaN``/``Infinity`` literals
that Python's ``json`` writes but JSON does not allow, are 422 with the place they are at.

>>> decode_json(b'{"instances": [[1, 2]]}')
{'instances': [[1, 2]]}
>>> decode_json(b'{"instances": [[1, NaN]]}')  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
modelyard.errors.InvalidInputError: 1 problem with the input: expected ... - at $.instances[0][1]
>>> decode_json(b'{"instances": [[1, 2]')  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
modelyard.serving.codecs.problems.MalformedRequest: Expected a JSON body: Input data was ...
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import msgspec

from modelyard.errors import InvalidInputError
from modelyard.serving.codecs.problems import MalformedRequest, ProblemList, key

__all__ = ["MAX_DEPTH", "decode_json", "validation_error"]

#: about how deep msgspec decodes nested arrays and objects before it gives up
MAX_DEPTH = 990

_AT = re.compile(r"^(?P<message>.*) - at `(?P<loc>[^`]*)`$", re.DOTALL)
_TYPES = re.compile(r"^Expected `(?P<expected>[^`]*)`, got `(?P<got>[^`]*)`")
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]*)`")


def validation_error(exc: msgspec.ValidationError, *, prefix: str = "$") -> InvalidInputError:
    """A msgspec validation error as one problem with its JSON path (under ``prefix``)."""
    text = str(exc)
    match = _AT.match(text)
    message, loc = (match["message"], match["loc"]) if match else (text, "$")
    loc = prefix + loc[1:]
    found = ProblemList()
    if kinds := _TYPES.match(message):
        found.add(loc, kinds["expected"], f"a value of type {kinds['got']}", raw=True)
    elif missing := _MISSING.match(message):
        found.add(f"{loc}.{missing['field']}", f"a field {missing['field']!r}", "nothing", raw=True)
    elif message == "Number out of range":
        found.add(loc, "a number within float64 range", "a number out of range", raw=True)
    else:
        found.add(loc, message, "something else", raw=True)
    return found.error()


class _Literal(float):
    """A ``NaN``/``Infinity`` literal found by the fallback parser, remembering its spelling."""

    spelling: str


def _literal(spelling: str) -> float:
    value = _Literal(float(spelling.replace("Infinity", "inf")))
    value.spelling = spelling
    return value


def _find_literals(value: Any, loc: str, found: ProblemList) -> None:
    if isinstance(value, _Literal):
        expected = "a number or null (NaN and Infinity are not JSON)"
        found.add(loc, expected, value.spelling, raw=True)
    elif isinstance(value, float) and math.isinf(value):  # a literal like 1e400
        found.add(loc, "a number within float64 range", "a number out of range", raw=True)
    elif isinstance(value, dict):
        for name, item in value.items():
            _find_literals(item, f"{loc}.{key(name)}", found)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _find_literals(item, f"{loc}[{i}]", found)


def _literals(body: bytes | memoryview) -> ProblemList:
    found = ProblemList()
    try:
        # the slow path of an error only: Python's parser reads NaN and 1e400, and a walk
        # of what it read says where they are, with object keys msgspec's path leaves out
        parsed = json.loads(bytes(body), parse_constant=_literal)
        _find_literals(parsed, "$", found)
    except (ValueError, RecursionError):  # ValueError covers bad UTF-8 and bad JSON
        return ProblemList()
    return found


def _malformed(body: bytes | memoryview, exc: msgspec.DecodeError) -> InvalidInputError:
    if not len(body):
        return MalformedRequest("Expected a JSON body, got an empty body", loc="$")
    found = _literals(body)
    if found:
        return found.error()
    return MalformedRequest(f"Expected a JSON body: {exc}", loc="$")


def _bad_utf8(body: bytes | memoryview, exc: UnicodeDecodeError) -> MalformedRequest:
    # msgspec decodes each string as it builds it, so the error's position is within
    # that string: find the first bad byte of the body itself
    try:
        bytes(body).decode()
    except UnicodeDecodeError as whole:
        exc = whole
    bad = bytes(exc.object[exc.start : exc.end][:4]).hex(" ")
    return MalformedRequest(
        f"Expected a JSON body in UTF-8, got invalid UTF-8 (bytes {bad}) at byte {exc.start}",
        loc="$",
    )


def decode_json(body: bytes | memoryview, type: Any = Any, *, prefix: str = "$") -> Any:
    """``body`` decoded (as ``type``): a 400 when it is not JSON, a 422 for a wrong shape.

    Invalid UTF-8 and nesting deeper than the decoder's limit (about 1,000 levels) are
    400s too, like any other body that is not JSON.

    >>> decode_json(b'{"a": "\\xff"}')  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    modelyard.serving.codecs.problems.MalformedRequest: Expected a JSON body in UTF-8, ...
    """
    try:
        # JSON is UTF-8 throughout (RFC 8259), keys and skipped fields included; msgspec
        # only checks the strings it keeps, so the whole body is checked first (fast
        # for ASCII, which is most bodies)
        str(body, "utf-8")
        return msgspec.json.decode(body, type=type)
    except UnicodeDecodeError as exc:
        raise _bad_utf8(body, exc) from None
    except RecursionError:
        raise MalformedRequest(
            f"Expected a JSON body nested at most {MAX_DEPTH} levels deep, got one nested deeper",
            loc="$",
        ) from None
    except msgspec.ValidationError as exc:
        found = _literals(body) if str(exc).startswith("Number out of range") else None
        if found:
            raise found.error() from None
        raise validation_error(exc, prefix=prefix) from None
    except msgspec.DecodeError as exc:
        raise _malformed(body, exc) from None
