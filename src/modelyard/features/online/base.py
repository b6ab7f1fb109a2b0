"""The online store seam: the ``OnlineStore`` protocol, its value types and shared checks.

Rules every backend follows:

- **One row per (view, entity key)**, the row with the newest ``(event_timestamp,
  created_timestamp)``. A write replaces the stored row only when its pair is strictly
  greater, so a retry of the same row is a no-op and writes applied in any order converge.
  Two different rows with the same pair keep whichever arrived first (ties are the
  writer's bug: give them distinct ``created_timestamp`` values).
- **Keys keep their type.** A join key is a string or an integer key; the store records
  each view's key types with its first write and refuses rows or reads whose keys are of
  another type (naming both types), so the string ``"1"`` and the integer ``1`` never meet
  and no key is converted (see :mod:`modelyard.features.keys`).
- **Rows to write** hold the view's join keys, ``event_timestamp`` (timezone-aware), every
  feature of the view and optionally ``created_timestamp``; other columns are ignored.
  Times are stored in UTC microseconds. A float NaN is stored as null.
- **Reads** take one batch of keys and answer each feature as an Arrow array in key order
  plus one status per key: ``PRESENT``, ``STALE`` (its event time is older than
  ``now - ttl``; the offline rule ``event_time >= now - ttl`` is inclusive) or
  ``MISSING``. Stale and missing values are null, as training would see them. A value
  whose event time is after ``now`` is served as present (the store keeps no older row).
- **Schemas** are fixed when a view is first written: changing a view's features needs a
  fresh table (SQLite) or key prefix (Redis); nothing is migrated or expired.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from modelyard.errors import InvalidInputError
from modelyard.features.definitions import FeatureType, FeatureView
from modelyard.features.keys import KeyType, arrow_key_type, value_type_name

__all__ = [
    "EVENT_TIMESTAMP",
    "CREATED_TIMESTAMP",
    "FeatureStatus",
    "OnlineResult",
    "OnlineStore",
    "ReadRequest",
    "WriteBatch",
]

EVENT_TIMESTAMP = "event_timestamp"
CREATED_TIMESTAMP = "created_timestamp"
# A created time for rows written without one: older than any real created time.
NO_CREATED = -(2**62)
ARROW_TYPES: dict[FeatureType, pa.DataType] = {
    "float": pa.float64(),
    "int": pa.int64(),
    "bool": pa.bool_(),
    "string": pa.string(),
    "datetime": pa.timestamp("us", tz="UTC"),
}


class FeatureStatus(IntEnum):
    """The state of one looked-up value."""

    PRESENT = 0
    STALE = 1
    MISSING = 2


@dataclass(frozen=True)
class OnlineResult:
    """The answer for one view: per-feature arrays in key order and a status per key.

    ``status`` is a ``uint8`` array of ``FeatureStatus`` codes shared by every feature of
    the view (they are written together); ``event_timestamp`` is null where missing.
    """

    view: str
    values: dict[str, pa.Array]
    status: npt.NDArray[np.uint8]
    #: the event times as an Arrow array, or as UTC microseconds (int or None per key):
    #: a backend may hand over the plain list, built into an array only when asked for
    event_times: pa.Array | Sequence[int | None]

    def __len__(self) -> int:
        return len(self.status)

    @property
    def event_timestamp(self) -> pa.Array:
        """Each key's event time (UTC, microseconds); null where missing."""
        times = self.event_times
        if not isinstance(times, pa.Array):
            times = pa.array(times, type=ARROW_TYPES["datetime"])
            object.__setattr__(self, "event_times", times)  # built once, on first use
        return times


@dataclass(frozen=True)
class ReadRequest:
    """Keys to look up in one view (tuples in ``view.join_keys`` order); all features if None."""

    view: FeatureView
    keys: Sequence[tuple[Any, ...]]
    feature_names: Sequence[str] | None = None


@dataclass(frozen=True)
class WriteBatch:
    """Validated rows for one view: python lists of keys, times and column arrays."""

    keys: list[tuple[Any, ...]]
    event_us: list[int]
    created_us: list[int]
    columns: dict[str, pa.Array]
    key_types: list[KeyType]


@runtime_checkable
class OnlineStore(Protocol):
    """Latest feature values by entity key, written monotonically, read in batches."""

    def write(self, view: FeatureView, rows: Any) -> int:
        """Apply ``rows`` (an Arrow table or pandas frame); return how many were given."""
        ...

    def read(
        self,
        view: FeatureView,
        keys: Sequence[tuple[Any, ...]],
        feature_names: Sequence[str] | None = None,
        now: datetime | None = None,
    ) -> OnlineResult:
        """One batched lookup of ``keys`` (tuples in ``view.join_keys`` order)."""
        ...

    def read_many(
        self, requests: Sequence[ReadRequest], now: datetime | None = None
    ) -> list[OnlineResult]:
        """Several views' lookups as one batch (one round trip on a server backend)."""
        ...

    def close(self) -> None: ...


def _feature_types(view: FeatureView) -> dict[str, FeatureType]:
    return view.feature_types


def feature_types(view: FeatureView, names: Sequence[str] | None = None) -> dict[str, FeatureType]:
    """The dtype of each requested feature; an unknown name is an InvalidInputError."""
    types = _feature_types(view)
    if names is None:
        return types
    out: dict[str, FeatureType] = {}
    for name in names:
        if name not in types:
            raise InvalidInputError(
                f"View {view.name!r} has no feature {name!r}; known features: {', '.join(types)}",
                loc=f"{view.name}.{name}",
            )
        out[name] = types[name]
    return out


def _to_table(view: FeatureView, rows: Any) -> pa.Table:
    if isinstance(rows, pa.Table):
        return rows
    if type(rows).__name__ == "DataFrame" and hasattr(rows, "columns"):
        return pa.Table.from_pandas(rows, preserve_index=False)
    raise InvalidInputError(
        f"Expected a pyarrow Table or pandas DataFrame of rows for view {view.name!r}, "
        f"got {type(rows).__name__}",
        loc=view.name,
    )


def _column(view: FeatureView, table: pa.Table, name: str, what: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise InvalidInputError(
            f"Rows for view {view.name!r} have no {what} column {name!r}; "
            f"got columns {', '.join(table.column_names) or '(none)'}",
            loc=f"{view.name}.{name}",
        )
    return table.column(name)


def _micros(view: FeatureView, col: pa.ChunkedArray, name: str, nullable: bool) -> pa.Array:
    loc = f"{view.name}.{name}"
    if not pa.types.is_timestamp(col.type) or col.type.tz is None:
        raise InvalidInputError(
            f"Expected timezone-aware UTC timestamps in {name!r} of view {view.name!r}, "
            f"got {col.type}",
            loc=loc,
        )
    if not nullable and col.null_count:
        raise InvalidInputError(
            f"Expected no nulls in {name!r} of view {view.name!r}, got {col.null_count}",
            loc=loc,
        )
    # Microsecond resolution everywhere: finer parts are truncated.
    us = col.cast(pa.timestamp("us", tz="UTC"), safe=False).cast(pa.int64())
    return us.combine_chunks()


def validate_rows(view: FeatureView, rows: Any) -> WriteBatch:
    """Check and normalise rows to write; errors name the view and the column."""
    table = _to_table(view, rows)
    key_cols = []
    key_types: list[KeyType] = []
    for key in view.join_keys:
        col = _column(view, table, key, "join key")
        kind = arrow_key_type(col.type)
        if kind is None:
            raise InvalidInputError(
                f"Expected string or integer join keys in {key!r} of view {view.name!r}, "
                f"got {col.type}",
                loc=f"{view.name}.{key}",
            )
        key_types.append(kind)
        if col.null_count:
            raise InvalidInputError(
                f"Expected no null join keys in {key!r} of view {view.name!r}, "
                f"got {col.null_count}",
                loc=f"{view.name}.{key}",
            )
        key_cols.append(col.to_pylist())
    event = _micros(
        view, _column(view, table, EVENT_TIMESTAMP, "event time"), EVENT_TIMESTAMP, False
    )
    if CREATED_TIMESTAMP in table.column_names:
        created_arr = _micros(view, table.column(CREATED_TIMESTAMP), CREATED_TIMESTAMP, True)
        created = pc.fill_null(created_arr, NO_CREATED).to_pylist()
    else:
        created = [NO_CREATED] * table.num_rows
    columns: dict[str, pa.Array] = {}
    for name, dtype in _feature_types(view).items():
        col = _column(view, table, name, "feature")
        target = ARROW_TYPES[dtype]
        if dtype == "datetime" and pa.types.is_timestamp(col.type) and col.type.tz is None:
            raise InvalidInputError(
                f"Expected timezone-aware timestamps in feature {name!r} of view "
                f"{view.name!r}, got {col.type}",
                loc=f"{view.name}.{name}",
            )
        try:
            arr = col.cast(target, safe=dtype != "datetime").combine_chunks()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise InvalidInputError(
                f"Expected {dtype} values in feature {name!r} of view {view.name!r}, "
                f"got {col.type}",
                loc=f"{view.name}.{name}",
            ) from err
        if dtype == "float":
            # NaN and null are one "no value" on every backend (SQLite stores NaN as NULL).
            arr = pc.if_else(pc.is_nan(arr), pa.scalar(None, pa.float64()), arr)
        columns[name] = arr
    keys = list(zip(*key_cols, strict=True))
    return WriteBatch(keys, event.to_pylist(), created, columns, key_types)


def check_written_key_types(
    view: FeatureView, stored: Sequence[str] | None, given: Sequence[str]
) -> None:
    """Rows to write must have the key types the store already holds for ``view``."""
    if stored is None or list(stored) == list(given):
        return
    for key, have, got in zip(view.join_keys, stored, given, strict=True):
        if have != got:
            raise InvalidInputError(
                f"View {view.name!r}: the online store holds {have} keys in {key!r}, "
                f"these rows have {got} keys; keys are never converted between types "
                "(a view whose key type changed needs a fresh online store)",
                loc=f"{view.name}.{key}",
            )


def check_key_types(
    view: FeatureView, keys: Sequence[tuple[Any, ...]], types: Sequence[str] | None
) -> None:
    """Keys to read must have the types the store holds for ``view`` (None: none held)."""
    if types is None or not keys:
        return
    for j, kind in enumerate(types):
        want = str if kind == "string" else int
        if {type(k[j]) for k in keys} <= {want}:
            continue
        for i, key in enumerate(keys):
            value = key[j]
            if value is None or value_type_name(value) == kind:
                continue
            name = view.join_keys[j]
            raise InvalidInputError(
                f"View {view.name!r}: join key {name!r} holds {kind} keys in the online "
                f"store, got the {value_type_name(value)} {value!r}; keys are never "
                "converted between types",
                loc=f"{view.name}.keys[{i}].{name}",
            )


def now_micros(now: datetime | None) -> int:
    """``now`` (timezone-aware; default the current time) in UTC microseconds."""
    if now is None:
        now = datetime.now(UTC)
    if now.tzinfo is None:
        raise InvalidInputError(
            f"Expected a timezone-aware 'now', got the naive {now.isoformat()}", loc="now"
        )
    delta = now - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def ttl_micros(view: FeatureView) -> int | None:
    """The view's ttl in microseconds; None when its values never go stale."""
    ttl = view.ttl
    if ttl is None:
        return None
    return (ttl.days * 86_400 + ttl.seconds) * 1_000_000 + ttl.microseconds


def check_keys(
    view: FeatureView, keys: Sequence[tuple[Any, ...]], width: int | None = None
) -> list[tuple[Any, ...]]:
    """Keys as plain tuples of ``width`` (default: the view's join key count) Python values."""
    if width is None:
        width = len(view.join_keys)
    generic = np.generic
    if (
        isinstance(keys, list | tuple)
        and set(map(type, keys)) <= {tuple}
        and set(map(len, keys)) <= {width}
        and not any(issubclass(t, generic) for t in {type(v) for k in keys for v in k})
    ):
        return list(keys)  # already tuples of plain values: the common case, checked in bulk
    out = []
    for i, key in enumerate(keys):
        k = key
        if type(k) is not tuple:
            k = tuple(key) if isinstance(key, tuple | list) else (key,)
        # numpy scalars (from a DataFrame or an array) become plain Python values to bind.
        for v in k:
            if isinstance(v, generic):
                k = tuple(v.item() if isinstance(v, generic) else v for v in k)
                break
        if len(k) != width:
            raise InvalidInputError(
                f"Expected keys of {width} value(s) ({', '.join(view.join_keys)}) for view "
                f"{view.name!r}, got {key!r}",
                loc=f"{view.name}.keys[{i}]",
            )
        out.append(k)
    return out


def build_result(
    view: FeatureView,
    n: int,
    found_at: npt.NDArray[np.int64],
    event_us: pa.Array,
    values: dict[str, pa.Array],
    now_us: int,
) -> OnlineResult:
    """Scatter the found rows (``found_at[j]`` is row j's key index) and apply the ttl."""
    positions = np.full(n, -1, dtype=np.int64)
    positions[found_at] = np.arange(len(found_at), dtype=np.int64)
    take = pa.array(positions, mask=positions < 0)
    taken = event_us.take(take)
    ts = pc.fill_null(taken, 0).to_numpy(zero_copy_only=False)
    status = np.full(n, FeatureStatus.MISSING, dtype=np.uint8)
    found = positions >= 0
    status[found] = FeatureStatus.PRESENT
    ttl_us = ttl_micros(view)
    if ttl_us is not None:
        stale = found & (ts < now_us - ttl_us)
        status[stale] = FeatureStatus.STALE
    keep = pa.array(status == FeatureStatus.PRESENT)
    out = {
        name: pc.if_else(keep, arr.take(take), pa.nulls(n, arr.type))
        for name, arr in values.items()
    }
    stamps = taken.cast(pa.timestamp("us", tz="UTC"))
    return OnlineResult(view.name, out, status, stamps)
