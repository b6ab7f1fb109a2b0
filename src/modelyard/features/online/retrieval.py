"""``get_online_features``: a model's features for a batch of entities, in one store read.

>>> from datetime import UTC, datetime
>>> import pyarrow as pa
>>> from modelyard.features import Entity, Feature, FeatureView, FileSource
>>> from modelyard.features.online import SQLiteOnlineStore
>>> view = FeatureView("delays", [Entity("carrier", ["carrier"])],
...                    FileSource("f.parquet", "ts"), [Feature("delay", "float")])
>>> store = SQLiteOnlineStore("sqlite:///:memory:")
>>> t = datetime(2024, 1, 1, tzinfo=UTC)
>>> _ = store.write(view, pa.table({"carrier": ["AA"], "event_timestamp": [t], "delay": [3.5]}))
>>> out = get_online_features(store, {"carrier": ["UA", "AA"]}, ["delays:delay"], [view])
>>> out.values["delays:delay"].to_pylist(), out.status["delays:delay"].tolist()
([None, 3.5], [2, 0])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from modelyard.errors import InvalidInputError
from modelyard.features.definitions import FeatureService, FeatureView, OnDemandFeatureView
from modelyard.features.ondemand import gather_inputs, input_refs, run_on_demand, split_refs
from modelyard.features.online.base import OnlineStore, ReadRequest

__all__ = ["OnlineFeatures", "get_online_features"]


@dataclass(frozen=True)
class OnlineFeatures:
    """Values and statuses by ref (``view:feature``), in entity-row order.

    Features of one view share one status array (``FeatureStatus`` codes).
    """

    refs: list[str]
    values: dict[str, pa.Array]
    status: dict[str, npt.NDArray[np.uint8]]

    def to_table(self) -> pa.Table:
        """The values as an Arrow table with one column per ref."""
        return pa.table({ref: self.values[ref] for ref in self.refs})


def _columns(entity_rows: Mapping[str, Sequence[Any]] | pa.Table) -> dict[str, list[Any]]:
    if isinstance(entity_rows, pa.Table):
        return entity_rows.to_pydict()  # type: ignore[no-any-return]
    columns = {name: list(values) for name, values in entity_rows.items()}
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise InvalidInputError(
            f"Expected entity columns of one length, got lengths {sorted(lengths)}",
            loc="entity_rows",
        )
    return columns


def _group(refs: list[str], views: Mapping[str, FeatureView]) -> dict[str, list[str]]:
    by_view: dict[str, list[str]] = {}
    for ref in refs:
        view_name, _, feature = ref.partition(":")
        if not feature:
            raise InvalidInputError(
                f"Expected a feature ref like view:feature, got {ref!r}", loc="features"
            )
        if view_name not in views:
            raise InvalidInputError(
                f"No feature view named {view_name!r}; known views: {', '.join(views) or '(none)'}",
                loc=f"features.{ref}",
            )
        by_view.setdefault(view_name, []).append(feature)
    return by_view


def get_online_features(
    store: OnlineStore,
    entity_rows: Mapping[str, Sequence[Any]] | pa.Table,
    features: FeatureService | Sequence[str],
    views: Iterable[FeatureView] | Mapping[str, FeatureView],
    now: datetime | None = None,
    on_demand: Iterable[OnDemandFeatureView] = (),
) -> OnlineFeatures:
    """Look up ``features`` for each entity row: one ``read_many`` on the store.

    ``entity_rows`` holds one column per join key (and per request field of the on-demand
    views asked for); each view's ttl is checked against ``now`` (default: the current
    time) at read time. An on-demand feature runs its view's function over the values
    read and the request fields; its status is the worst of its inputs' statuses.
    ``views`` may be given by name (a mapping), as a cached caller holds them.
    """
    refs = features.refs() if isinstance(features, FeatureService) else list(features)
    by_name = views if isinstance(views, Mapping) else {v.name: v for v in views}
    odfvs = {v.name: v for v in on_demand}
    columns = _columns(entity_rows)
    if odfvs:
        plain, wanted = split_refs(refs, odfvs)
        if wanted:
            return _with_on_demand(store, columns, refs, plain, wanted, odfvs, by_name, now)
    return _lookup(store, columns, refs, by_name, now)


def _with_on_demand(
    store: OnlineStore,
    columns: dict[str, list[Any]],
    refs: list[str],
    plain: list[str],
    wanted: dict[str, list[str]],
    odfvs: Mapping[str, OnDemandFeatureView],
    by_name: Mapping[str, FeatureView],
    now: datetime | None,
) -> OnlineFeatures:
    chosen = [odfvs[name] for name in wanted]
    needed = input_refs(chosen)
    found = _lookup(store, columns, [*plain, *(r for r in needed if r not in plain)], by_name, now)
    rows = len(next(iter(columns.values()))) if columns else 0
    values = {ref: found.values[ref] for ref in plain}
    status = {ref: found.status[ref] for ref in plain}
    for odfv in chosen:
        inputs, types = gather_inputs(odfv, found.values, columns, by_name, source="entity_rows")
        result = run_on_demand(odfv, inputs, rows, types)
        worst = np.zeros(rows, dtype=np.uint8)
        for ref in odfv.inputs:
            np.maximum(worst, found.status[ref], out=worst)
        for name in wanted[odfv.name]:
            values[f"{odfv.name}:{name}"] = result[name]
            status[f"{odfv.name}:{name}"] = worst
    return OnlineFeatures(refs, values, status)


def _lookup(
    store: OnlineStore,
    columns: dict[str, list[Any]],
    refs: list[str],
    by_name: Mapping[str, FeatureView],
    now: datetime | None,
) -> OnlineFeatures:
    grouped = _group(refs, by_name)
    requests = []
    for view_name, names in grouped.items():
        view = by_name[view_name]
        join_keys = view.join_keys
        for key in join_keys:
            if key not in columns:
                raise InvalidInputError(
                    f"Entity rows have no join key column {key!r} of view {view_name!r}; "
                    f"got columns {', '.join(columns) or '(none)'}",
                    loc=f"entity_rows.{key}",
                )
        keys = list(zip(*(columns[k] for k in join_keys), strict=True))
        requests.append(ReadRequest(view, keys, names))
    results = store.read_many(requests, now)
    values: dict[str, pa.Array] = {}
    status: dict[str, npt.NDArray[np.uint8]] = {}
    for (view_name, names), result in zip(grouped.items(), results, strict=True):
        for name in names:
            ref = f"{view_name}:{name}"
            values[ref] = result.values[name]
            status[ref] = result.status
    return OnlineFeatures(refs, values, status)
