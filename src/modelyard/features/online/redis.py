"""The Redis online store: one hash per (view, entity key), written by a compare-and-set script.

A hash holds ``@ts`` and ``@cts`` (event and created time, UTC microseconds) and one field
per non-null feature value, as text. The write script replaces the whole hash only when
the incoming ``(event, created)`` pair is strictly newer, atomically on the server, so
writes from any number of processes in any order converge. A batch of writes is one
pipeline; a batched read is one pipeline of ``HMGET`` (one round trip).

Each view's key types (string or int) are recorded by its first write in the hash
``<prefix>@key_types``; rows and reads whose keys are of another type are refused.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from modelyard.errors import InvalidInputError, MissingExtraError, StorageError
from modelyard.features.definitions import FeatureType, FeatureView
from modelyard.features.online.base import (
    ARROW_TYPES,
    OnlineResult,
    ReadRequest,
    build_result,
    check_key_types,
    check_keys,
    check_written_key_types,
    feature_types,
    now_micros,
    validate_rows,
)
from modelyard.store.urls import redact_url

__all__ = ["RedisOnlineStore"]

_WRITE = """
local cur = redis.call('HMGET', KEYS[1], '@ts', '@cts')
local ts = tonumber(ARGV[1])
local cts = tonumber(ARGV[2])
if cur[1] then
  local ots = tonumber(cur[1])
  local octs = tonumber(cur[2])
  if ts < ots or (ts == ots and cts <= octs) then
    return 0
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '@ts', ARGV[1], '@cts', ARGV[2], unpack(ARGV, 3))
return 1
"""
_BATCH = 1000  # writes per pipeline flush


def _text(arr: pa.Array) -> list[str | None]:
    """Each value as the text a Redis field holds; None for null."""
    if pa.types.is_timestamp(arr.type):
        arr = arr.cast(pa.int64())
    if pa.types.is_floating(arr.type):
        return [None if v is None else repr(v) for v in arr.to_pylist()]
    if pa.types.is_boolean(arr.type):
        arr = arr.cast(pa.int8())
    return arr.cast(pa.string()).to_pylist()  # type: ignore[no-any-return]


class RedisOnlineStore:
    """Latest feature values in Redis hashes; ``prefix`` namespaces the keys."""

    def __init__(self, url: str, *, prefix: str = "modelyard:") -> None:
        try:
            import redis
        except ImportError as err:
            raise MissingExtraError("A Redis online store", "redis") from err
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise InvalidInputError(
                "Expected an online store URL like redis://127.0.0.1:6379/0, got "
                f"{redact_url(url)!r}",
                loc="online_store",
            )
        self._redis_error: type[Exception] = redis.RedisError
        self._client: Any = redis.Redis.from_url(url, decode_responses=False)
        self._script: Any = self._client.register_script(_WRITE)
        self.prefix = prefix
        self._safe_url = redact_url(url)  # never show credentials
        self._types_key = f"{prefix}@key_types"
        self._key_types: dict[str, list[str]] = {}

    def _record_key_types(self, view: FeatureView, given: list[str]) -> None:
        """Record the view's key types on its first write; refuse rows of other types."""
        stored = self._key_types.get(view.name)
        if stored is None:
            self._client.hsetnx(self._types_key, view.name, json.dumps(given))
            raw = self._client.hget(self._types_key, view.name)
            stored = json.loads(raw) if raw is not None else None
        check_written_key_types(view, stored, given)
        if stored is not None:
            self._key_types[view.name] = list(stored)

    def _key(self, view: FeatureView, key: tuple[Any, ...]) -> str:
        # JSON keeps types apart: the int 1 and the string "1" are different entities.
        return f"{self.prefix}{view.name}:{json.dumps(list(key), separators=(',', ':'))}"

    def write(self, view: FeatureView, rows: Any) -> int:
        """Keep, per key, the row with the newest (event, created) time; return rows given."""
        batch = validate_rows(view, rows)
        names = list(batch.columns)
        texts = [_text(arr) for arr in batch.columns.values()]
        try:
            self._record_key_types(view, list(batch.key_types))
            pipe = self._client.pipeline(transaction=False)
            for i, (key, ts, cts, *vals) in enumerate(
                zip(batch.keys, batch.event_us, batch.created_us, *texts, strict=True)
            ):
                args: list[Any] = [ts, cts]
                for name, v in zip(names, vals, strict=True):
                    if v is not None:
                        args += [name, v]
                self._script(keys=[self._key(view, key)], args=args, client=pipe)
                if (i + 1) % _BATCH == 0:
                    pipe.execute()
            pipe.execute()
        except self._redis_error as err:
            raise StorageError(
                f"Writing view {view.name!r} to Redis at {self._safe_url} failed: {err}"
            ) from err
        return len(batch.keys)

    def read(
        self,
        view: FeatureView,
        keys: Sequence[tuple[Any, ...]],
        feature_names: Sequence[str] | None = None,
        now: datetime | None = None,
    ) -> OnlineResult:
        """Look up ``keys`` with one pipelined round trip of ``HMGET``."""
        return self.read_many([ReadRequest(view, keys, feature_names)], now)[0]

    def read_many(
        self, requests: Sequence[ReadRequest], now: datetime | None = None
    ) -> list[OnlineResult]:
        """Every view's lookups in one pipeline: one round trip for the whole request."""
        now_us = now_micros(now)
        checked = [
            (r.view, feature_types(r.view, r.feature_names), check_keys(r.view, r.keys))
            for r in requests
        ]
        # Key types not known yet are read in the same round trip as the values.
        unknown = sorted({v.name for v, _, _ in checked if v.name not in self._key_types})
        try:
            pipe = self._client.pipeline(transaction=False)
            for name in unknown:
                pipe.hget(self._types_key, name)
            for view, types, keys in checked:
                fields = ["@ts", *types]
                for key in keys:
                    pipe.hmget(self._key(view, key), fields)
            replies: list[Any] = pipe.execute() if len(pipe) else []
        except self._redis_error as err:
            raise StorageError(
                f"Reading from the Redis online store at {self._safe_url} failed: {err}"
            ) from err
        for name, raw in zip(unknown, replies, strict=False):
            if raw is not None:
                self._key_types[name] = list(json.loads(raw))
        replies = replies[len(unknown) :]
        for view, _, keys in checked:
            check_key_types(view, keys, self._key_types.get(view.name))
        out = []
        offset = 0
        for view, types, keys in checked:
            part = replies[offset : offset + len(keys)]
            offset += len(keys)
            out.append(_result(view, types, part, now_us))
        return out

    def close(self) -> None:
        self._client.close()


def _result(
    view: FeatureView,
    types: dict[str, FeatureType],
    replies: list[list[bytes | None]],
    now_us: int,
) -> OnlineResult:
    """The HMGET replies of one view's keys as an OnlineResult."""
    found = [r for r in replies if r[0] is not None]
    found_at = np.fromiter((i for i, r in enumerate(replies) if r[0] is not None), dtype=np.int64)
    columns = list(zip(*found, strict=True)) if found else [()] * (len(types) + 1)
    # Decode each column at once in Arrow, not value by value in Python.
    event_us = pa.array(columns[0], pa.binary()).cast(pa.string()).cast(pa.int64())
    values: dict[str, pa.Array] = {}
    for (name, dtype), col in zip(types.items(), columns[1:], strict=True):
        text = pa.array(col, pa.binary()).cast(pa.string())
        if dtype == "datetime":
            values[name] = text.cast(pa.int64()).cast(ARROW_TYPES[dtype])
        else:
            values[name] = text.cast(ARROW_TYPES[dtype])
    return build_result(view, len(replies), found_at, event_us, values, now_us)
