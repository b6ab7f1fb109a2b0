"""The feature layer's backfills on Ray: training sets and materialization by entity key.

**Point-in-time training sets** (``engine="ray"``): the entity frame's rows are split
into partitions by a stable hash of their entity key (:func:`partition_rows`: pandas'
``hash_pandas_object``, SipHash with a fixed key, over the requested views' join key
columns; never Python's salted ``hash``), each partition is one Ray task running the
exact DuckDB join of :func:`modelyard.features.offline.get_historical_features` on its
rows, and the driver puts the joined columns back in the entity frame's row order, with
its index and other columns. A row's point-in-time answer depends on that row alone
(its keys and time, against the whole source), so the result is the single-process
join's. On-demand features run in the driver, over the joined inputs, as locally. The
entity time is read (and refused when naive) in the driver, so every partition reads it
the same way whatever rows it holds.

**Materialization** (``engine="ray"``): each view's run is cut into partitions by
DuckDB's ``hash`` of the source's join keys (:class:`~modelyard.features.materialize.Partition`);
each partition is one Ray task that reads its keys' rows and writes their winners to the
online store. The store's writes are monotonic (a newer ``(event, created)`` is never
replaced by an older one), so partitions finishing in any order, and runs of older
windows after newer ones, leave the store as one local run would. The run's watermark
is the largest of its partitions' and is recorded once, by the driver, after every
partition has written.

Tasks read the sources the driver would read (a relative path in a SQL source is read
from the driver's working folder, entered on the worker when it exists) and write the
online store of the project's settings, so every node must reach both: one machine, or
object storage and a Redis online store.

>>> import pandas as pd
>>> frame = pd.DataFrame({"carrier": ["AA", "UA", "AA", None]})
>>> parts = partition_rows(frame, ["carrier"], 3)
>>> bool(parts[0] == parts[2])
True
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from modelyard.config import Settings
from modelyard.engine import check_shared_state, cluster_hosts, connect_ray, import_ray
from modelyard.engine import task_options as _task_options
from modelyard.engine.shipping import ShippedSettings, ship_settings, unship_settings
from modelyard.errors import InvalidInputError, ModelyardError
from modelyard.features.definitions import FeatureService, FeatureView, OnDemandFeatureView
from modelyard.features.materialize import Partition, Window, materialize_view
from modelyard.features.offline import entity_times, get_historical_features, with_on_demand
from modelyard.features.online import open_online_store

__all__ = [
    "join_keys",
    "materialize_partitioned",
    "partition_rows",
    "partitioned_historical_features",
]


def partition_rows(frame: pd.DataFrame, keys: Sequence[str], count: int) -> np.ndarray:
    """The partition (0..count-1) of each row, from a stable hash of its ``keys`` values.

    Equal keys always land together, in every process and run (SipHash with pandas' fixed
    key); a frame without key columns is cut into ``count`` blocks of consecutive rows.
    """
    if count <= 1 or len(frame) == 0:
        return np.zeros(len(frame), dtype=np.int64)
    if not keys:
        return (np.arange(len(frame)) * count // len(frame)).astype(np.int64)
    hashed = pd.util.hash_pandas_object(frame[list(keys)], index=False).to_numpy()
    return (hashed % np.uint64(count)).astype(np.int64)


def join_keys(
    features: FeatureService | Sequence[FeatureView | OnDemandFeatureView | str],
    views: Sequence[FeatureView],
    columns: Sequence[str],
) -> list[str]:
    """The join keys of the requested views that the entity frame has, first asked first."""
    items = features.features if isinstance(features, FeatureService) else list(features)
    by_name = {v.name: v for v in views}
    by_name.update((i.name, i) for i in items if isinstance(i, FeatureView))
    keys: list[str] = []
    for item in items:
        view = item if isinstance(item, FeatureView) else None
        if isinstance(item, str):
            view = by_name.get(item.partition(":")[0])
        if view is not None:
            keys += [k for k in view.join_keys if k not in keys and k in columns]
    return keys


def _cluster(settings: Settings, *also: str) -> int:
    """Connect; how many tasks the cluster runs at once."""
    connect_ray(settings)
    check_shared_state(settings, cluster_hosts(), also=also)
    ray = import_ray()
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    return max(1, int(cpus // (settings.ray.num_cpus or 1.0)))


def _gather(refs: list[Any]) -> list[Any]:
    """``ray.get`` of each, a task's own modelyard error raised as that error.

    On an error the tasks still running are cancelled (never a finished one: cancelling
    a completed task trips a check in Ray's core worker).
    """
    ray = import_ray()
    try:
        return list(ray.get(refs))
    except BaseException as exc:
        _, running = ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in running:
            with contextlib.suppress(Exception):
                ray.cancel(ref)
        cause = getattr(exc, "cause", None)
        if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(cause, ModelyardError):
            raise cause from None
        raise


@contextlib.contextmanager
def _in_folder(folder: str) -> Iterator[None]:
    """Run in the driver's working folder when this node has it (relative source paths)."""
    if os.path.isdir(folder):
        with contextlib.chdir(folder):
            yield
    else:
        yield


def _join_part(
    part: pd.DataFrame,
    shared: tuple[Any, list[FeatureView]],
    folder: str,
    options: dict[str, Any],
) -> pd.DataFrame:
    """On a worker: the exact join of one partition; only the joined columns."""
    features, views = shared
    with _in_folder(folder):
        out = get_historical_features(part, features, views=views, **options)
    return out.iloc[:, len(part.columns) :]


def partitioned_historical_features(
    settings: Settings,
    entity_df: pd.DataFrame,
    features: FeatureService | Sequence[FeatureView | OnDemandFeatureView | str],
    *,
    views: Sequence[FeatureView] = (),
    on_demand: Sequence[OnDemandFeatureView] = (),
    partitions: int | None = None,
    **options: Any,
) -> pd.DataFrame:
    """``get_historical_features`` with the entity rows joined in partitions on Ray.

    Same arguments and result as :func:`~modelyard.features.offline.get_historical_features`
    (``options``: ``as_served``, ``assume_utc``, ``entity_time_column``,
    ``full_feature_names``); ``partitions`` defaults to the tasks the cluster runs at once.
    """
    if partitions is not None and (
        isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1
    ):
        raise InvalidInputError(
            f"Expected partitions to be a whole number >= 1, got {partitions!r}",
            loc="partitions",
        )
    items = features.features if isinstance(features, FeatureService) else list(features)
    odfvs = {v.name: v for v in on_demand}
    odfvs.update((i.name, i) for i in items if isinstance(i, OnDemandFeatureView))
    count = partitions or _cluster(settings)
    if partitions is not None:
        _cluster(settings)

    def join(frame: pd.DataFrame, wanted: Any, **kwargs: Any) -> pd.DataFrame:
        return _partitioned_join(settings, frame, wanted, count, **kwargs)

    if odfvs:
        return with_on_demand(entity_df, items, odfvs, join=join, views=views, **options)
    return join(entity_df, features, views=views, **options)


def _partitioned_join(
    settings: Settings,
    entity_df: pd.DataFrame,
    features: Any,
    count: int,
    *,
    views: Sequence[FeatureView] = (),
    **options: Any,
) -> pd.DataFrame:
    """The stored features' join, partition by partition as Ray tasks."""
    time_column = options.get("entity_time_column", "event_timestamp")
    if len(entity_df) == 0 or time_column not in entity_df.columns or count <= 1:
        # nothing to spread (and a missing column is named by the join itself)
        return get_historical_features(entity_df, features, views=views, **options)
    # rule 8 in the driver: each partition then reads the same UTC times
    times = entity_times(entity_df, time_column, bool(options.get("assume_utc", False)))
    frame = entity_df.reset_index(drop=True)
    frame[time_column] = times
    keys = join_keys(features, views, [str(c) for c in frame.columns])
    parts = partition_rows(frame, keys, count)
    ray = import_ray()
    shared = ray.put((features, list(views)))
    remote = ray.remote(_join_part).options(**_task_options(settings), max_retries=0)
    positions = [np.flatnonzero(parts == i) for i in range(count)]
    positions = [p for p in positions if len(p)]
    refs = [
        remote.remote(frame.iloc[p].reset_index(drop=True), shared, os.getcwd(), options)
        for p in positions
    ]
    joined = _gather(refs)
    pieces = [j.set_axis(p, axis=0) for j, p in zip(joined, positions, strict=True)]
    columns = pd.concat(pieces).sort_index()
    out = entity_df.copy()
    for name in columns.columns:
        values = _as_one_join(columns[name], [piece[name] for piece in pieces])
        values.index = out.index
        out[name] = values
    return out


def _as_one_join(values: pd.Series[Any], pieces: list[pd.Series[Any]]) -> pd.Series[Any]:
    """The column with the dtype one join gives it.

    DuckDB types a partition whose values are all null as ``object`` where the others are,
    say, strings: the dtype of the partitions that hold values is the whole join's.
    """
    typed = {str(p.dtype): p.dtype for p in pieces if p.notna().any()}
    if len(typed) != 1:
        return values
    (dtype,) = typed.values()
    if values.dtype == dtype:
        return values
    try:
        return values.astype(dtype)
    except (TypeError, ValueError):
        return values


def _materialize_part(
    shipped: ShippedSettings,
    view: FeatureView,
    window: Window,
    partition: Partition,
    folder: str,
) -> tuple[int, int | None]:
    """On a worker: one partition of a view's run, written to the project's online store."""
    settings = unship_settings(shipped)
    store = open_online_store(settings.features.online_store)
    try:
        with _in_folder(folder):
            return materialize_view(view, window, store, partition=partition)
    finally:
        store.close()


def materialize_partitioned(
    settings: Settings,
    view: FeatureView,
    window: Window,
    *,
    partitions: int | None = None,
    on_done: Callable[[int], None] | None = None,
) -> tuple[int, int | None]:
    """One view's run on Ray, by entity-key partition: (rows written, watermark µs).

    Writes go to ``settings.features.online_store`` (a SQLite file on one machine, or
    Redis); ``on_done`` gets the rows written so far as partitions finish.
    """
    url = settings.features.online_store
    if url.startswith("sqlite:///") and url.removeprefix("sqlite:///") in ("", ":memory:"):
        raise InvalidInputError(
            "Expected an online store every Ray worker can write (a SQLite file or Redis), "
            f"got the in-memory {url}: each worker would write its own copy",
            loc="features.online_store",
        )
    count = partitions or _cluster(settings, "online_store")
    if partitions is not None:
        _cluster(settings, "online_store")
    ray = import_ray()
    remote = ray.remote(_materialize_part).options(**_task_options(settings), max_retries=0)
    shipped = ship_settings(settings)
    refs = [
        remote.remote(shipped, view, window, Partition(i, count), os.getcwd()) for i in range(count)
    ]
    written = 0
    marks: list[int] = []
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for rows, mark in _gather(ready):
                written += rows
                if mark is not None:
                    marks.append(mark)
                if on_done is not None:
                    on_done(written)
    finally:
        for ref in pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref)
    return written, max(marks) if marks else None
