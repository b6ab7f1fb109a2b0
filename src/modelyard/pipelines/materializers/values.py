"""JSON values: None, bool, int, float (NaN and infinities too), str, bytes, list, tuple, dict.

Stored as one canonical JSON file (``value.json``: sorted keys, no spaces, ASCII) in which
every JSON object is a tag, so nothing is ambiguous and every value comes back exactly:
``{"d": {...}}`` a dict (with ``"k": [keys]`` when its order is not sorted), ``{"t": [...]}``
a tuple, ``{"f": "nan" | "inf" | "-inf"}`` a float JSON cannot write, ``{"b": "<base64>"}``
bytes. Floats are written by ``repr``,
which round-trips every float, ``-0.0`` included; ints of any size stay ints.

Refused, each with the path to the offending part: a dict key that is not a ``str``
(JSON would turn ``1`` into ``"1"``: a silent wrong answer), a set (no order), and any
other type, subclasses of the types above included (an ``OrderedDict``, an ``IntEnum``
would come back as their base). NumPy scalars inside a value are stored as the Python
scalar they equal (``np.int64(3)`` loads as ``3``).

>>> decode(json.loads(encode({"auc": float("nan"), "k": (1, -0.0)})))
{'auc': nan, 'k': (1, -0.0)}
"""

from __future__ import annotations

import base64
import json
import math
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from modelyard.errors import InvalidInputError
from modelyard.pipelines.materializers.base import type_name

__all__ = ["JsonMaterializer", "decode", "encode"]

FILE = "value.json"
MAX_DEPTH = 200

_SCALARS = (type(None), bool, int, float, str, bytes)
_CONTAINERS = (list, tuple, dict)


def _where(path: str) -> str:
    return f"output{path}"


def _encode(value: Any, path: str, depth: int) -> Any:
    kind = type(value)
    if depth > MAX_DEPTH:
        raise InvalidInputError(
            f"Expected JSON values nested at most {MAX_DEPTH} deep, got deeper at {_where(path)}",
            loc=_where(path),
        )
    if value is None or kind is bool or kind is int or kind is str:
        return value
    if kind is float:
        if math.isfinite(value):
            return value
        return {"f": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if kind is bytes:
        return {"b": base64.b64encode(value).decode("ascii")}
    if kind is list:
        return [_encode(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    if kind is tuple:
        return {"t": [_encode(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]}
    if kind is dict:
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                raise InvalidInputError(
                    f"Expected str dict keys at {_where(path)}, got the key {key!r} "
                    f"({type_name(type(key))}): JSON would store it as the string "
                    f"{json.dumps(str(key))} and it would load back different. Use str keys "
                    "or a list of (key, value) pairs",
                    loc=_where(path),
                )
            out[key] = _encode(item, f"{path}[{key!r}]", depth + 1)
        keys = list(value)
        # JSON objects are written with sorted keys; a dict's own order is kept beside them
        return {"d": out} if keys == sorted(keys) else {"d": out, "k": keys}
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.generic) and value.ndim == 0:
        if isinstance(value, numpy.bool_):
            return bool(value)
        if isinstance(value, numpy.integer):
            return int(value)
        if isinstance(value, numpy.floating) and value.dtype.itemsize <= 8:
            return _encode(float(value), path, depth)
    if isinstance(value, set | frozenset):
        hint = "a set has no order JSON can keep: store sorted(...) as a list"
    elif isinstance(value, _SCALARS + _CONTAINERS):
        base = next(t for t in _SCALARS + _CONTAINERS if isinstance(value, t))
        hint = (
            f"it would load back as a plain {base.__name__}: convert it with {base.__name__}(...)"
        )
    else:
        hint = (
            "a list, tuple or dict holds JSON values only: return a frame, array or model "
            "as an output of its own (@step(outputs=(...)))"
        )
    raise InvalidInputError(
        f"Expected JSON values (None, bool, int, float, str, bytes, list, tuple, dict) at "
        f"{_where(path)}, got a {type_name(kind)}: {hint}",
        loc=_where(path),
    )


def encode(value: Any) -> str:
    """Canonical tagged JSON of ``value``; ``InvalidInputError`` naming the bad part."""
    return json.dumps(
        _encode(value, "", 0),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )


_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def decode(data: Any) -> Any:
    """The value ``encode`` wrote (already parsed by ``json.loads``)."""
    if isinstance(data, list):
        return [decode(v) for v in data]
    if isinstance(data, dict):
        if "d" in data and set(data) <= {"d", "k"}:
            body = data["d"]
            order = data.get("k") or list(body)
            return {k: decode(body[k]) for k in order}
        if len(data) != 1:
            raise InvalidInputError(f"Expected one tag per object, got {sorted(data)}", loc=FILE)
        ((tag, body),) = data.items()
        if tag == "t":
            return tuple(decode(v) for v in body)
        if tag == "f":
            return _FLOATS[body]
        if tag == "b":
            return base64.b64decode(body, validate=True)
        raise InvalidInputError(f"Unknown tag {tag!r}", loc=FILE)
    return data


def _json_type(tp: Any, *, inner: bool = False) -> bool:
    """Whether every value of ``tp`` is one this materializer stores.

    ``Any`` (or ``object``) inside a container passes (``dict[str, Any]``): the value's
    parts are checked when it is stored. At the top it does not: the value decides.
    """
    if tp is None or tp is type(None) or tp in _SCALARS or tp in _CONTAINERS:
        return True
    if tp is Any or tp is object or isinstance(tp, typing.TypeVar):
        return inner
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _json_type(args[0], inner=inner)
    if origin is typing.Literal:
        return all(type(a) in _SCALARS for a in args)
    if origin in (typing.Union, types.UnionType):
        return all(_json_type(a, inner=inner) for a in args)
    if origin is None or not isinstance(origin, type):
        return False
    items = [a for a in args if a is not Ellipsis and a != ()]
    if origin in (dict, Mapping):
        return len(items) == 2 and items[0] is str and _json_type(items[1], inner=True)
    if origin in (list, tuple, Sequence):
        return all(_json_type(a, inner=True) for a in items)
    return False


class JsonMaterializer:
    """JSON values in canonical tagged JSON (``value.json``)."""

    name = "json"
    version = 1

    def handles(self, tp: Any) -> bool:
        return _json_type(tp)

    def save(self, value: Any, folder: Path) -> Mapping[str, Any]:
        (folder / FILE).write_text(encode(value), encoding="ascii")
        return {}

    def load(self, folder: Path, meta: Mapping[str, Any], tp: Any) -> Any:
        return decode(json.loads((folder / FILE).read_text(encoding="ascii")))
