"""The step cache key: everything that decides a step's outputs, as one sha256.

A key's ``parts`` are the step's ``function`` ("module:qualname"), ``source`` (its code and
the project code it calls, :func:`modelyard.pipelines.source.source_hash`), ``params``
(a ``Path`` replaced by its content digest), ``inputs`` (argument -> upstream output
digest), ``packages`` (declared distribution -> installed version), ``cache_version``,
``outputs`` (name -> materializer and version) and, when the step has one, ``fingerprint``.
The key is the sha256 of the canonical JSON of the parts; the runner stores the parts with
each step run, so :func:`changed_parts` answers "why did this step run again?".

Canonical JSON: sorted keys, no spaces, floats as ``repr`` (exact), and values JSON has no
spelling for written as tagged objects (``{"$float": "nan"}``; a user key starting with
``$`` gets one more ``$``), so no two different values share a key. Unlike the JSON
materializer's encoding (which stores a value to load it back exactly), a key ignores a
dict's order and does not tell a tuple from a list: equal parameters give one key.

>>> canonical_json({"b": [1.0, float("nan")], "a": {"$x": -0.0}})
'{"a":{"$$x":-0.0},"b":[1.0,{"$float":"nan"}]}'
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from modelyard.errors import InvalidInputError
from modelyard.pipelines.graph import StepNode
from modelyard.pipelines.materializers import materializer_for
from modelyard.pipelines.steps import definition_error, package_version
from modelyard.tracking.digest import digest_path

__all__ = ["CacheKey", "cache_key", "canonical_json", "changed_parts", "path_digest"]


@dataclass(frozen=True)
class CacheKey:
    """A step's cache key: ``value`` (sha256 hex) and the ``parts`` it was made of."""

    value: str
    parts: dict[str, Any]

    def parts_json(self) -> str:
        """The parts as canonical JSON (what the runner stores on the step run)."""
        return _dump(self.parts)


def _tagged(value: Any, *, where: str) -> Any:
    """``value`` as strict JSON with nothing lost (see the module docs)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return {"$float": "nan"}
        if math.isinf(value):
            return {"$float": "inf" if value > 0 else "-inf"}
        return value
    if isinstance(value, list | tuple):
        return [_tagged(v, where=where) for v in value]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInputError(
                    f"Expected text keys, got {type(key).__name__} {key!r}", loc=where
                )
            out["$" + key if key.startswith("$") else key] = _tagged(item, where=where)
        return out
    raise InvalidInputError(
        f"Expected a JSON value, got {type(value).__name__} {value!r:.80}", loc=where
    )


def _dump(tagged: Any) -> str:
    return json.dumps(
        tagged, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def canonical_json(value: Any) -> str:
    """One text per value: sorted keys, exact floats, NaN/inf tagged (see the module docs)."""
    return _dump(_tagged(value, where="cache key"))


def path_digest(path: PurePath, project_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """What a ``Path`` parameter contributes to a key: its content digest.

    A relative path is read from the project folder. A path that does not exist (yet)
    contributes its resolved location and ``missing``: once it exists, the key changes.
    """
    full = Path(path)
    if not full.is_absolute():
        full = Path(project_dir) / full
    if not full.exists():
        return {"$path": "missing", "at": str(full.resolve())}
    kind = "folder" if full.is_dir() else "file"
    return {"$path": kind, "sha256": digest_path(full).digest}


def _params_part(value: Any, project_dir: str | os.PathLike[str], where: str) -> Any:
    if isinstance(value, PurePath):
        return path_digest(value, project_dir)
    if isinstance(value, list | tuple):
        return [_params_part(v, project_dir, where) for v in value]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            escaped = "$" + key if isinstance(key, str) and key.startswith("$") else key
            out[escaped] = _params_part(item, project_dir, where)
        return out
    return _tagged(value, where=where)


def _outputs_part(node: StepNode) -> dict[str, Any]:
    """Output name -> the materializer (and its version) its declared type is stored by."""
    parts: dict[str, Any] = {}
    for spec in node.outputs:
        m = materializer_for(spec.type)  # "auto" for Any: the value decides when it is saved
        parts[spec.name] = {"materializer": m.name, "version": m.version}
    return parts


def cache_key(
    node: StepNode,
    input_digests: Mapping[str, str],
    *,
    project_dir: str | os.PathLike[str],
) -> CacheKey:
    """The cache key of ``node`` given its inputs' digests (argument -> output digest)."""
    step = node.step
    if set(input_digests) != set(node.inputs):
        raise InvalidInputError(
            f"Expected a digest for each input of step {node.name!r} "
            f"({sorted(node.inputs)}), got {sorted(input_digests)}",
            loc=f"cache_key.{node.name}.input_digests",
        )
    where = f"{node.name}.params"
    parts: dict[str, Any] = {
        "function": step.function_id,
        "source": step.source_hash(project_dir),
        "params": {k: _params_part(v, project_dir, where) for k, v in node.params.items()},
        "inputs": dict(input_digests),
        "packages": {name: package_version(name) for name in step.packages},
        "cache_version": step.cache_version,
        "outputs": _outputs_part(node),
    }
    if step.fingerprint is not None:
        extra = step.fingerprint(node.params)
        try:
            parts["fingerprint"] = _tagged(dict(extra), where=f"{node.name}.fingerprint")
        except (InvalidInputError, TypeError, ValueError) as exc:
            raise definition_error(
                None,
                step.name,
                None,
                f"fingerprint must return a mapping of JSON values: {exc}",
            ) from exc
    # every part is strict JSON already (params and fingerprint tagged): dumped as it is
    value = hashlib.sha256(_dump(parts).encode("ascii")).hexdigest()
    return CacheKey(value, parts)


def changed_parts(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The names of the parts that differ ("params.max_depth", "source", ...).

    >>> changed_parts({"source": "a", "params": {"x": 1, "y": 2}},
    ...               {"source": "a", "params": {"x": 1, "y": 3}, "fingerprint": {}})
    ['fingerprint', 'params.y']
    """
    changed: list[str] = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a == b and (name in old) == (name in new):
            continue
        if (
            name in ("params", "inputs", "packages", "outputs")
            and isinstance(a, Mapping)
            and (isinstance(b, Mapping))
        ):
            for key in sorted(set(a) | set(b)):
                if canonical_json(a.get(key)) != canonical_json(b.get(key)) or (key in a) != (
                    key in b
                ):
                    changed.append(f"{name}.{key}")
        else:
            changed.append(name)
    return changed
