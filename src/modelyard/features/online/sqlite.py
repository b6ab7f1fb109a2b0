"""The default online store: one typed SQLite table per view, one row per entity key.

>>> from datetime import UTC, datetime
>>> import pyarrow as pa
>>> from modelyard.features import Entity, Feature, FeatureView, FileSource
>>> view = FeatureView("delays", [Entity("carrier", ["carrier"])],
...                    FileSource("f.parquet", "ts"), [Feature("delay", "float")])
>>> store = SQLiteOnlineStore("sqlite:///:memory:")
>>> t = datetime(2024, 1, 1, tzinfo=UTC)
>>> store.write(view, pa.table({"carrier": ["AA"], "event_timestamp": [t], "delay": [3.5]}))
1
>>> result = store.read(view, [("AA",), ("UA",)])
>>> result.values["delay"].to_pylist(), result.status.tolist()
([3.5, None], [0, 2])
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from modelyard.errors import InvalidInputError, StorageError
from modelyard.features.definitions import FeatureType, FeatureView
from modelyard.features.online.base import (
    ARROW_TYPES,
    OnlineResult,
    ReadRequest,
    build_result,
    check_keys,
    feature_types,
    now_micros,
    validate_rows,
)

__all__ = ["SQLiteOnlineStore"]

_SQL_TYPES: dict[FeatureType, str] = {
    "float": "REAL",
    "int": "INTEGER",
    "bool": "INTEGER",
    "string": "TEXT",
    "datetime": "INTEGER",  # UTC microseconds
}
# Internal columns use '@', which no key or feature name may contain.
_TS = '"@event_ts"'
_CTS = '"@created_ts"'
# SQLite binds at most 32766 parameters per statement (since 3.32).
_MAX_PARAMS = 32_000


def _q(name: str) -> str:
    return f'"{name}"'


def _path(url: str) -> str:
    if not url.startswith("sqlite:///"):
        raise InvalidInputError(
            f"Expected an online store URL like sqlite:///path/online.db, got {url!r}",
            loc="online_store",
        )
    path = url.removeprefix("sqlite:///")
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return path


class SQLiteOnlineStore:
    """Typed SQLite tables in WAL mode; monotonic UPSERTs; one query per batched read.

    Keys are stored as given (an int 1 and a string "1" are different keys). Each table
    is ``fv_<view>`` with the join keys as its primary key, ``@event_ts`` and
    ``@created_ts`` in UTC microseconds and one REAL/INTEGER/TEXT column per feature.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._tables: set[str] = set()
        try:
            self._conn = sqlite3.connect(_path(url), check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as err:
            raise StorageError(f"Cannot open the SQLite online store {url}: {err}") from err

    @property
    def connection(self) -> sqlite3.Connection:
        """The underlying connection (tests trace its statements)."""
        return self._conn

    def _table(self, view: FeatureView) -> str:
        return _q(f"fv_{view.name}")

    def _ensure_table(self, view: FeatureView) -> None:
        if view.name in self._tables:
            return
        # Keys have no declared type: SQLite then keeps ints as ints and text as text.
        keys = [_q(k) for k in view.join_keys]
        cols = [f"{_q(n)} {_SQL_TYPES[t]}" for n, t in feature_types(view).items()]
        self._conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self._table(view)} ("
            f"{', '.join(keys)}, {_TS} INTEGER NOT NULL, {_CTS} INTEGER NOT NULL, "
            f"{', '.join(cols)}, PRIMARY KEY ({', '.join(keys)})) WITHOUT ROWID"
        )
        self._tables.add(view.name)

    def _exists(self, view: FeatureView) -> bool:
        if view.name in self._tables:
            return True
        row = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (f"fv_{view.name}",)
        ).fetchone()
        if row is not None:
            self._tables.add(view.name)
        return row is not None

    def write(self, view: FeatureView, rows: Any) -> int:
        """Keep, per key, the row with the newest (event, created) time; return rows given."""
        batch = validate_rows(view, rows)
        names = list(batch.columns)
        values = [
            (arr.cast(pa.int64()) if pa.types.is_timestamp(arr.type) else arr).to_pylist()
            for arr in batch.columns.values()
        ]
        keys = [_q(k) for k in view.join_keys]
        cols = [*keys, _TS, _CTS, *(_q(n) for n in names)]
        table = self._table(view)
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols[len(keys) :])
        sql = (
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates} "
            f"WHERE (excluded.{_TS}, excluded.{_CTS}) > ({table}.{_TS}, {table}.{_CTS})"
        )
        params = [
            (*key, ts, cts, *vals)
            for key, ts, cts, *vals in zip(
                batch.keys, batch.event_us, batch.created_us, *values, strict=True
            )
        ]
        with self._lock:
            try:
                self._ensure_table(view)
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    self._conn.executemany(sql, params)
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.Error as err:
                raise StorageError(
                    f"Writing view {view.name!r} to {self.url} failed: {err}"
                ) from err
        return len(params)

    def read(
        self,
        view: FeatureView,
        keys: Sequence[tuple[Any, ...]],
        feature_names: Sequence[str] | None = None,
        now: datetime | None = None,
    ) -> OnlineResult:
        """Look up ``keys`` with one query (a VALUES list joined to the view's table)."""
        return self.read_many([ReadRequest(view, keys, feature_names)], now)[0]

    def read_many(
        self, requests: Sequence[ReadRequest], now: datetime | None = None
    ) -> list[OnlineResult]:
        """One query per view, all in one read transaction (a consistent snapshot)."""
        now_us = now_micros(now)
        checked = [
            (r.view, feature_types(r.view, r.feature_names), check_keys(r.view, r.keys))
            for r in requests
        ]
        fetched: list[list[tuple[Any, ...]]] = []
        with self._lock:
            try:
                # Several views read in one transaction see one snapshot; one view needs none.
                many = len(checked) > 1
                if many:
                    self._conn.execute("BEGIN")
                try:
                    fetched = [
                        self._fetch(view, list(types), keys) for view, types, keys in checked
                    ]
                finally:
                    if many:
                        self._conn.execute("COMMIT")
            except sqlite3.Error as err:
                raise StorageError(
                    f"Reading from the online store {self.url} failed: {err}"
                ) from err
        return [
            _result(view, types, len(keys), rows, now_us)
            for (view, types, keys), rows in zip(checked, fetched, strict=True)
        ]

    def _fetch(
        self, view: FeatureView, names: list[str], keys: list[tuple[Any, ...]]
    ) -> list[tuple[Any, ...]]:
        if not keys or not self._exists(view):
            return []
        step = max(1, _MAX_PARAMS // (len(view.join_keys) + 1))
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(keys), step):
            rows.extend(self._select(view, names, keys, start, step))
        return rows

    def _select(
        self,
        view: FeatureView,
        names: list[str],
        keys: list[tuple[Any, ...]],
        start: int,
        step: int,
    ) -> list[tuple[Any, ...]]:
        chunk = keys[start : start + step]
        join_keys = [_q(k) for k in view.join_keys]
        placeholders = ", ".join(["(" + ", ".join("?" * (len(join_keys) + 1)) + ")"] * len(chunk))
        params = [v for i, key in enumerate(chunk, start) for v in (i, *key)]
        on = " AND ".join(f"t.{k} = k.{k}" for k in join_keys)
        feats = "".join(f", t.{_q(n)}" for n in names)
        sql = (
            f'WITH k("@i", {", ".join(join_keys)}) AS (VALUES {placeholders}) '
            f'SELECT k."@i", t.{_TS}{feats} FROM k JOIN {self._table(view)} AS t ON {on}'
        )
        return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _result(
    view: FeatureView,
    types: dict[str, FeatureType],
    n: int,
    rows: list[tuple[Any, ...]],
    now_us: int,
) -> OnlineResult:
    """Columns of the fetched rows (key index, event time, features) as an OnlineResult."""
    columns = list(zip(*rows, strict=True)) if rows else [()] * (len(types) + 2)
    found_at = np.asarray(columns[0], dtype=np.int64)
    event_us = pa.array(columns[1], type=pa.int64())
    values: dict[str, pa.Array] = {}
    for (name, dtype), col in zip(types.items(), columns[2:], strict=True):
        if dtype in ("datetime", "bool"):
            values[name] = pa.array(col, pa.int64()).cast(ARROW_TYPES[dtype])
        else:
            values[name] = pa.array(col, ARROW_TYPES[dtype])
    return build_result(view, n, found_at, event_us, values, now_us)
