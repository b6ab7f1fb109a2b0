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
    FeatureStatus,
    OnlineResult,
    ReadRequest,
    check_key_types,
    check_keys,
    check_written_key_types,
    feature_types,
    now_micros,
    ttl_micros,
    validate_rows,
)
from modelyard.store.sqlite_files import connect_shared

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
# Batches up to this many keys keep their SQL text cached on the plan.
_SQL_CACHE_MAX_KEYS = 1024
# Read plans kept per store (one per view and feature list asked for).
_MAX_PLANS = 1024


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

    Keys are stored as given (an int 1 and a string "1" are different keys); a view's key
    types are those of its stored rows (SQLite keeps each value's type), and keys of
    another type are refused on write and on read. Each table
    is ``fv_<view>`` with the join keys as its primary key, ``@event_ts`` and
    ``@created_ts`` in UTC microseconds and one REAL/INTEGER/TEXT column per feature.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._tables: set[str] = set()
        self._key_types: dict[str, list[str]] = {}
        self._plans: dict[tuple[str, tuple[str, ...] | None], _Plan] = {}
        try:
            path = _path(url)
            if path == ":memory:":
                self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            else:
                self._conn = connect_shared(path, autocommit=True)
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

    def _stored_key_types(self, view: FeatureView) -> list[str] | None:
        """The key types of the view's stored rows (SQLite's typeof), None when it has none.

        Called with the lock held; known types are kept (writes never change them).
        """
        known = self._key_types.get(view.name)
        if known is not None or not self._exists(view):
            return known
        typeof = ", ".join(f"typeof({_q(k)})" for k in view.join_keys)
        row = self._conn.execute(f"SELECT {typeof} FROM {self._table(view)} LIMIT 1").fetchone()
        if row is None:
            return None
        found = ["string" if t == "text" else "int" if t == "integer" else str(t) for t in row]
        self._key_types[view.name] = found
        return found

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
                check_written_key_types(view, self._stored_key_types(view), batch.key_types)
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
        return self._read([(view, keys, feature_names)], now)[0]

    def read_many(
        self, requests: Sequence[ReadRequest], now: datetime | None = None
    ) -> list[OnlineResult]:
        """One query per view, all in one read transaction (a consistent snapshot)."""
        return self._read([(r.view, r.keys, r.feature_names) for r in requests], now)

    def _plan(self, view: FeatureView, feature_names: Sequence[str] | None) -> _Plan:
        """The cached read plan of ``view`` and these features (checked once, not per read)."""
        key = (view.name, None if feature_names is None else tuple(feature_names))
        plan = self._plans.get(key)
        # The same view object (or an equal one) reuses the plan; a redefined view rebuilds it.
        if plan is None or (plan.view is not view and plan.view != view):
            plan = _Plan(view, feature_types(view, feature_names), self._table(view))
            if len(self._plans) >= _MAX_PLANS:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def _read(
        self,
        requests: list[tuple[FeatureView, Sequence[tuple[Any, ...]], Sequence[str] | None]],
        now: datetime | None,
    ) -> list[OnlineResult]:
        now_us = now_micros(now)
        checked: list[tuple[_Plan, list[tuple[Any, ...]]]] = []
        for view, keys, feature_names in requests:
            plan = self._plan(view, feature_names)
            checked.append((plan, check_keys(view, keys, plan.width)))
        fetched: list[list[tuple[Any, ...]]] = []
        with self._lock:
            try:
                for plan, keys in checked:
                    check_key_types(plan.view, keys, self._stored_key_types(plan.view))
                # Several views read in one transaction see one snapshot; one view needs none.
                many = len(checked) > 1
                if many:
                    self._conn.execute("BEGIN")
                try:
                    fetched = [self._fetch(plan, keys) for plan, keys in checked]
                finally:
                    if many:
                        self._conn.execute("COMMIT")
            except sqlite3.Error as err:
                raise StorageError(
                    f"Reading from the online store {self.url} failed: {err}"
                ) from err
        return [
            plan.result(len(keys), rows, now_us)
            for (plan, keys), rows in zip(checked, fetched, strict=True)
        ]

    def _fetch(self, plan: _Plan, keys: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        if not keys or not self._exists(plan.view):
            return []
        step = max(1, _MAX_PARAMS // (plan.width + 1))
        if len(keys) <= step:
            return self._select(plan, keys, 0)
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(keys), step):
            rows.extend(self._select(plan, keys[start : start + step], start))
        return rows

    def _select(
        self, plan: _Plan, chunk: list[tuple[Any, ...]], start: int
    ) -> list[tuple[Any, ...]]:
        # Flat (index, *key) per row, filled a column at a time by slice assignment.
        n = len(chunk)
        stride = plan.width + 1
        params: list[Any] = [None] * (n * stride)
        params[::stride] = range(start, start + n)
        for j, column in enumerate(zip(*chunk, strict=True), 1):
            params[j::stride] = column
        return self._conn.execute(plan.sql(len(chunk)), params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class _Plan:
    """What a read of one view's features needs, worked out once per view and feature list.

    Rows fetched are ``(key index, event time, *features)``; ``result`` turns them into an
    ``OnlineResult`` with plain Python lists and one ``pa.array`` per column: no take,
    cast or if_else per feature, so a small batch costs a few microseconds per column.
    """

    def __init__(self, view: FeatureView, types: dict[str, FeatureType], table: str) -> None:
        self.view = view
        self.name = view.name
        self.width = len(view.join_keys)
        self.ttl_us = ttl_micros(view)
        self.names = list(types)
        self.arrow_types = [ARROW_TYPES[t] for t in types.values()]
        self.bools = [t == "bool" for t in types.values()]
        join_keys = [_q(k) for k in view.join_keys]
        self._row = "(" + ", ".join("?" * (self.width + 1)) + ")"
        on = " AND ".join(f"t.{k} = k.{k}" for k in join_keys)
        feats = "".join(f", t.{_q(n)}" for n in self.names)
        self._head = f'WITH k("@i", {", ".join(join_keys)}) AS (VALUES '
        self._tail = f') SELECT k."@i", t.{_TS}{feats} FROM k JOIN {table} AS t ON {on}'
        self._sql: dict[int, str] = {}

    def sql(self, n: int) -> str:
        """The query for a batch of ``n`` keys."""
        sql = self._sql.get(n)
        if sql is None:
            sql = self._head + ", ".join([self._row] * n) + self._tail
            if n <= _SQL_CACHE_MAX_KEYS:
                self._sql[n] = sql
        return sql

    def result(self, n: int, rows: list[tuple[Any, ...]], now_us: int) -> OnlineResult:
        """Fetched rows in key order as an OnlineResult; stale and missing values are null."""
        width = len(self.names)
        cutoff = None if self.ttl_us is None else now_us - self.ttl_us
        transposed = list(zip(*rows, strict=True)) if len(rows) == n else None
        if not rows:
            status = np.full(n, FeatureStatus.MISSING, dtype=np.uint8)
            stamps: Sequence[Any] = [None] * n
            columns: Sequence[Sequence[Any]] = [stamps] * width
        elif (
            transposed is not None
            and transposed[0] == tuple(range(n))
            and (cutoff is None or min(transposed[1]) >= cutoff)
        ):
            # Every key found and fresh, in key order: the columns are the rows transposed.
            status = np.zeros(n, dtype=np.uint8)
            _, stamps, *columns = transposed
        else:
            codes = [FeatureStatus.MISSING] * n
            times: list[int | None] = [None] * n
            lists: list[list[Any]] = [[None] * n for _ in range(width)]
            for i, ts, *vals in rows:
                times[i] = ts
                if cutoff is not None and ts < cutoff:
                    codes[i] = FeatureStatus.STALE
                    continue
                codes[i] = FeatureStatus.PRESENT
                for target, v in zip(lists, vals, strict=True):
                    target[i] = v
            status = np.array(codes, dtype=np.uint8)
            stamps, columns = times, lists
        values: dict[str, pa.Array] = {}
        for name, arrow_type, is_bool, col in zip(
            self.names, self.arrow_types, self.bools, columns, strict=True
        ):
            # Booleans are stored as 0/1.
            data = [None if v is None else v != 0 for v in col] if is_bool else col
            values[name] = pa.array(data, type=arrow_type)
        return OnlineResult(self.name, values, status, stamps)  # times built when asked for
