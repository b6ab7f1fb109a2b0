"""Point-in-time correct training sets: ``get_historical_features``.

For each row of the entity frame (join keys, an entity time ``t`` and any labels) and for
each requested feature view, the view's features are looked up by this written spec:

1. **Keys.** A feature row matches only if all of the view's join keys are equal to the
   entity row's (a null key matches nothing).
2. **No future.** Its time is ``<= t`` (inclusive).
3. **Freshness.** With a ``ttl``, its time is ``>= t - ttl`` (inclusive), relative to each
   entity row. Only the latest row ``<= t`` is a candidate: if it is older than
   ``t - ttl`` the result is null; it never falls back to an even older row.
4. **Latest wins, deterministically.** Among matches the latest time wins; ties are broken
   by availability time (``created_timestamp_field``; a null one loses), then by ingestion
   order (the later row of the source wins).
5. **One row.** The winning row supplies all of the view's requested features, nulls
   included; there is no falling back to an older non-null value per feature.
6. **No match** gives nulls and keeps the entity row.
7. **Rows kept.** Duplicate entity rows are kept; the result has the entity frame's rows in
   its order and index, with its other columns (labels) passed through.
8. **UTC.** Timestamps are timezone-aware and compared in UTC. A naive one, in the entity
   frame or in a source, is an ``InvalidInputError`` naming the frame or view and the
   column, unless ``assume_utc=True`` (naive values are then read as UTC).

Feature rows with a null time are ignored. Join keys compare with the source's type and
are never coerced: the entity frame's key column must hold strings for a ``VARCHAR`` key
and integers for an integer key; anything else (``int64`` keys against ``VARCHAR``, floats,
a mix of ``str`` and ``int``) is an ``InvalidInputError`` naming both types (see
:mod:`modelyard.features.keys`).

``as_served=True`` gives what the online store would have served at ``t``, by the
online store's own rule. A row reaches the store when it is available: at
``max(created, event)`` (it has arrived, and materialization writes only rows whose
event time has passed); a row with no created time never does. Of the rows available at
``t``, the store keeps the one with the latest ``(event, created)`` (monotonic writes: a
late-arriving *older* event never replaces a newer one), then the later source row; the
ttl is measured on its event time (``event >= t - ttl``, inclusive, else null), as an
online read at ``t`` checks it.

**Aggregations** (``Aggregation(column, fn, window)``) follow rules 1, 6, 7 and 8 and are
computed over every source row whose time is in ``(t - window, t]`` (no deduplication:
each row is an event; the view's ttl does not apply). ``count`` counts non-null values (0
with none); ``sum``, ``mean``, ``min``, ``max`` and ``std`` (sample) ignore nulls and are null
with no values (``std`` needs two); ``last`` is the value of the latest row by rule 4, nulls
included. Under ``as_served`` the window is over created time.

The join runs in DuckDB: each source is read once (a single Parquet file of plain columns
is read in place instead, keys and time first) and ASOF-joined, on keys and time, to the
entity rows; the ttl is a filter on the single ASOF match, and rule 4 then picks the
winner among the source rows on the matched (keys, time) pairs only.

>>> import pandas as pd
>>> from modelyard.features.definitions import Entity, Feature, FeatureView, SqlSource
>>> source = SqlSource(
...     "SELECT 'AA' AS carrier, TIMESTAMPTZ '2013-01-01 10:00+00' AS ts, 7.5 AS delay",
...     timestamp_field="ts",
... )
>>> view = FeatureView("delays", entities=[Entity("carrier", ["carrier"])],
...                    source=source, features=[Feature("delay")])
>>> entities = pd.DataFrame({
...     "carrier": ["AA", "AA"],
...     "event_timestamp": pd.to_datetime(["2013-01-01 09:00", "2013-01-02 00:00"], utc=True),
...     "late": [0, 1],
... })
>>> get_historical_features(entities, [view])[["carrier", "late", "delay"]]
  carrier  late  delay
0      AA     0    NaN
1      AA     1    7.5
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa

from modelyard.errors import InvalidInputError
from modelyard.features.definitions import (
    Aggregation,
    Feature,
    FeatureService,
    FeatureView,
    FileSource,
    OnDemandFeatureView,
    parse_window,
)
from modelyard.features.keys import KeyType, frame_key_type
from modelyard.features.ondemand import gather_inputs, input_refs, run_on_demand, split_refs
from modelyard.features.validation import AWARE, key_types, source_columns, time_kind

if TYPE_CHECKING:
    import duckdb

__all__ = ["entities_in_window", "entity_times", "get_historical_features", "with_on_demand"]

_NAIVE = {"TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S", "DATE"}
_AGGREGATE = {
    "count": "count",
    "sum": "sum",
    "mean": "avg",
    "min": "min",
    "max": "max",
    "std": "stddev_samp",
    "last": "arg_max_null",
}


@dataclass(frozen=True)
class _Request:
    """The features wanted from one view, with their output column names."""

    view: FeatureView
    features: list[Feature]
    aggregations: list[Aggregation]
    columns: list[str]


def get_historical_features(
    entity_df: pd.DataFrame,
    features: FeatureService | Sequence[FeatureView | OnDemandFeatureView | str],
    *,
    views: Sequence[FeatureView] = (),
    on_demand: Sequence[OnDemandFeatureView] = (),
    as_served: bool = False,
    assume_utc: bool = False,
    entity_time_column: str = "event_timestamp",
    full_feature_names: bool = False,
) -> pd.DataFrame:
    """The entity frame with each requested feature joined point-in-time correctly.

    ``features`` is a ``FeatureService`` or a list of ``FeatureView``s (all their features)
    and ``"view:feature"`` refs; a ref's view is looked up by name among ``views`` (and
    ``on_demand``) and the views given directly. On-demand features run their function
    over the point-in-time values of their inputs and the entity frame's request columns.
    Output columns are named by feature, or ``view__feature`` with
    ``full_feature_names=True``. See the module docstring for the rules.
    """
    items = features.features if isinstance(features, FeatureService) else list(features)
    odfvs = {v.name: v for v in on_demand}
    odfvs.update((i.name, i) for i in items if isinstance(i, OnDemandFeatureView))
    if odfvs:
        return _with_on_demand(
            entity_df,
            items,
            odfvs,
            views=views,
            as_served=as_served,
            assume_utc=assume_utc,
            entity_time_column=entity_time_column,
            full_feature_names=full_feature_names,
        )
    requests = _resolve(
        [i for i in items if not isinstance(i, OnDemandFeatureView)], views, full_feature_names
    )
    _check_output_names(entity_df, requests, entity_time_column)
    entity_time = _entity_time(entity_df, entity_time_column, assume_utc)

    import duckdb

    out = entity_df.copy()
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        for request in requests:
            joined = _join_view(con, request, entity_df, entity_time, as_served, assume_utc)
            for column, values in zip(request.columns, joined, strict=True):
                values.index = out.index
                out[column] = values
    finally:
        con.close()
    return out


def entities_in_window(
    entity_df: pd.DataFrame,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    entity_time_column: str = "event_timestamp",
    assume_utc: bool = False,
) -> pd.DataFrame:
    """The entity rows whose time is in ``[start, end)`` (an open side when None).

    Times are compared as UTC instants, read as the join reads them (rule 8: a naive
    entity time is refused unless ``assume_utc``; a null time is outside every window).
    The rows keep their order, index and columns, so joining the result is the join of
    those rows: each row still gets the features as of its own time, never later.

    >>> from datetime import UTC, datetime
    >>> frame = pd.DataFrame({"event_timestamp": pd.to_datetime(
    ...     ["2013-01-01", "2013-02-01", "2013-03-01"], utc=True), "y": [0, 1, 2]})
    >>> entities_in_window(frame, datetime(2013, 2, 1, tzinfo=UTC),
    ...                    datetime(2013, 3, 1, tzinfo=UTC)).y.tolist()
    [1]
    """
    for name, bound in (("start", start), ("end", end)):
        if bound is not None and bound.tzinfo is None:
            raise InvalidInputError(
                f"Expected a timezone-aware {name} time, got the naive {bound.isoformat()}",
                loc=name,
            )
    if start is not None and end is not None and start >= end:
        raise InvalidInputError(
            f"Expected start before end, got start {start.isoformat()} and end {end.isoformat()}",
            loc="start",
        )
    if entity_time_column not in entity_df.columns:
        raise InvalidInputError(
            f"Expected the entity frame to have the time column {entity_time_column!r}, got "
            f"columns {', '.join(map(str, entity_df.columns))}",
            loc=f"entity_df.{entity_time_column}",
        )
    times = _entity_time(entity_df, entity_time_column, assume_utc)
    keep = times.notna()
    if start is not None:
        keep &= times >= pd.Timestamp(start)
    if end is not None:
        keep &= times < pd.Timestamp(end)
    return entity_df[keep.to_numpy(dtype=bool)]


def _with_on_demand(
    entity_df: pd.DataFrame,
    items: Sequence[FeatureView | OnDemandFeatureView | str],
    odfvs: dict[str, OnDemandFeatureView],
    *,
    views: Sequence[FeatureView],
    full_feature_names: bool,
    join: Callable[..., pd.DataFrame] | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Stored features by the join, then each on-demand view over its joined inputs.

    ``join`` joins the stored features (``get_historical_features`` by default; the Ray
    engine passes its partitioned join, so on-demand functions run here, in-process).
    """
    join = join or get_historical_features
    refs: list[FeatureView | str] = []
    for item in items:
        if isinstance(item, OnDemandFeatureView):
            refs.extend(f"{item.name}:{n}" for n in item.feature_names)
        else:
            refs.append(item)
    plain = [r for r in refs if not isinstance(r, str) or r.partition(":")[0] not in odfvs]
    _, wanted = split_refs([r for r in refs if isinstance(r, str)], odfvs)
    out = (
        join(entity_df, plain, views=views, full_feature_names=full_feature_names, **options)
        if plain
        else entity_df.copy()
    )
    chosen = [odfvs[name] for name in wanted]
    needed = input_refs(chosen)
    hidden = (
        join(entity_df, needed, views=views, full_feature_names=True, **options)
        if needed
        else entity_df
    )
    known = {v.name: v for v in [*views, *(i for i in items if isinstance(i, FeatureView))]}
    taken = {str(c) for c in out.columns}
    for odfv in chosen:
        joined = {ref: hidden[ref.replace(":", "__", 1)] for ref in odfv.inputs}
        request = {str(c): entity_df[c] for c in entity_df.columns}
        inputs, types = gather_inputs(odfv, joined, request, known, source="entity_df")
        result = run_on_demand(odfv, inputs, len(entity_df), types)
        for name in wanted[odfv.name]:
            column = f"{odfv.name}__{name}" if full_feature_names else name
            if column in taken:
                raise InvalidInputError(
                    f"Output column {column!r} of on-demand view {odfv.name!r} is already "
                    "taken; rename the entity column or pass full_feature_names=True",
                    loc=f"features.{odfv.name}.{column}",
                )
            taken.add(column)
            values = result[name].to_pandas()
            values.index = out.index
            out[column] = values
    return out


#: the on-demand step of ``get_historical_features``, for engines that join elsewhere
with_on_demand = _with_on_demand


def entity_times(entity_df: pd.DataFrame, column: str, assume_utc: bool) -> pd.Series[Any]:
    """The entity frame's times as the join reads them (UTC, index 0..n-1; rule 8)."""
    return _entity_time(entity_df, column, assume_utc)


def _resolve(
    items: Sequence[FeatureView | str], views: Sequence[FeatureView], full: bool
) -> list[_Request]:
    """Group the requested features by view, in the order first asked for."""
    known: dict[str, FeatureView] = {}
    for view in [*views, *(i for i in items if isinstance(i, FeatureView))]:
        if known.setdefault(view.name, view) != view:
            raise InvalidInputError(
                f"Two different feature views are named {view.name!r}", loc="views"
            )
    wanted: dict[str, list[str]] = {}
    for item in items:
        if isinstance(item, FeatureView):
            names = item.feature_names
            view_name = item.name
        else:
            view_name, _, feature = str(item).partition(":")
            if not feature:
                raise InvalidInputError(
                    f"Expected a feature ref like view:feature, got {item!r}", loc="features"
                )
            if view_name not in known:
                hint = difflib.get_close_matches(view_name, list(known), n=1)
                maybe = f" Did you mean {hint[0]!r}?" if hint else ""
                raise InvalidInputError(
                    f"No feature view named {view_name!r} in ref {item!r}.{maybe} "
                    f"Known views: {', '.join(sorted(known)) or 'none (pass views=...)'}.",
                    loc="features",
                )
            names = [feature]
        chosen = wanted.setdefault(view_name, [])
        chosen.extend(n for n in names if n not in chosen)
    return [_request(known[name], names, full) for name, names in wanted.items()]


def _request(view: FeatureView, names: list[str], full: bool) -> _Request:
    by_name = {f.name: f for f in view.features}
    aggregated = {a.output_name: a for a in view.aggregations}
    unknown = [n for n in names if n not in by_name and n not in aggregated]
    if unknown:
        raise InvalidInputError(
            f"View {view.name!r} has no feature {unknown[0]!r}. "
            f"Its features: {', '.join(view.feature_names)}.",
            loc="features",
        )
    chosen = [by_name[n] for n in names if n in by_name]
    aggregations = [aggregated[n] for n in names if n not in by_name]
    # Output columns: plain features first, then aggregations, as _join_view returns them.
    names = [f.name for f in chosen] + [a.output_name for a in aggregations]
    columns = [f"{view.name}__{n}" if full else n for n in names]
    return _Request(view, chosen, aggregations, columns)


def _check_output_names(entity_df: pd.DataFrame, requests: list[_Request], time: str) -> None:
    seen = {str(c) for c in entity_df.columns}
    for request in requests:
        missing = [k for k in [*request.view.join_keys, time] if k not in seen]
        if missing:
            raise InvalidInputError(
                f"Expected the entity frame to have column(s) {', '.join(missing)} for view "
                f"{request.view.name!r}, got columns {', '.join(map(str, entity_df.columns))}",
                loc=f"entity_df.{missing[0]}",
            )
    taken = {str(c) for c in entity_df.columns}
    for request in requests:
        for column in request.columns:
            if column in taken:
                raise InvalidInputError(
                    f"Output column {column!r} of view {request.view.name!r} is already taken; "
                    "rename the entity column or pass full_feature_names=True",
                    loc=f"features.{request.view.name}.{column}",
                )
            taken.add(column)


def _entity_time(entity_df: pd.DataFrame, column: str, assume_utc: bool) -> pd.Series[Any]:
    """The entity time as a timezone-aware UTC series with a fresh 0..n-1 index."""
    values = entity_df[column].reset_index(drop=True)
    dtype = values.dtype
    if isinstance(dtype, pd.ArrowDtype) and pa.types.is_timestamp(dtype.pyarrow_dtype):
        # Arrow-backed times (read_parquet(dtype_backend="pyarrow")): as numpy-backed ones
        arrow = dtype.pyarrow_dtype
        unit = arrow.unit
        numpy_backed: Any = (
            f"datetime64[{unit}]" if arrow.tz is None else pd.DatetimeTZDtype(unit, arrow.tz)
        )
        values = values.astype(numpy_backed)
        dtype = values.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        aware: pd.Series[Any] = values.dt.tz_convert("UTC")
        return aware
    if pd.api.types.is_datetime64_dtype(dtype):
        if not assume_utc:
            raise InvalidInputError(
                f"Expected timezone-aware timestamps in the entity frame's column {column!r}, "
                "got naive ones; localize them (tz_localize('UTC')) or pass assume_utc=True",
                loc=f"entity_df.{column}",
            )
        localized: pd.Series[Any] = values.dt.tz_localize("UTC")
        return localized
    if pd.api.types.is_object_dtype(dtype) and _all_aware(values):
        # aware datetimes with different offsets (pandas keeps them as objects): each one
        # converted to UTC
        converted: pd.Series[Any] = pd.to_datetime(values, utc=True)
        return converted
    raise InvalidInputError(
        f"Expected a datetime column {column!r} in the entity frame, got dtype {dtype}",
        loc=f"entity_df.{column}",
    )


def _all_aware(values: pd.Series[Any]) -> bool:
    """Whether every non-null value is a timezone-aware datetime (and there is one)."""
    present = values.dropna().tolist()
    return bool(present) and all(
        isinstance(v, datetime) and v.utcoffset() is not None for v in present
    )


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _check_source(
    view: FeatureView, columns: dict[str, str], request: _Request, as_served: bool
) -> None:
    source = view.source
    if as_served and source.created_timestamp_field is None:
        raise InvalidInputError(
            f"View {view.name!r} has no created_timestamp_field, which as_served retrieval "
            "needs; set it on the view's source or pass as_served=False",
            loc=f"views.{view.name}.source.created_timestamp_field",
        )
    needed = [
        *view.join_keys,
        *(f.name for f in request.features if f.expression is None),
        *(a.column for a in request.aggregations),
    ]
    for column in needed:
        if column not in columns:
            raise InvalidInputError(
                f"View {view.name!r}: its source has no column {column!r}; "
                f"its columns: {', '.join(columns)}",
                loc=f"views.{view.name}.{column}",
            )


def _time_sql(
    con: duckdb.DuckDBPyConnection,
    view: FeatureView,
    columns: dict[str, str],
    field: str,
    assume_utc: bool,
) -> str:
    if field not in columns:
        raise InvalidInputError(
            f"View {view.name!r}: its source has no timestamp column {field!r}; "
            f"its columns: {', '.join(columns)}",
            loc=f"views.{view.name}.{field}",
        )
    kind = time_kind(con, view, columns, field)
    if kind in _NAIVE and not assume_utc:
        raise InvalidInputError(
            f"View {view.name!r}: expected timezone-aware timestamps in column {field!r}, "
            f"got {kind}; store them in UTC with a time zone or pass assume_utc=True",
            loc=f"views.{view.name}.{field}",
        )
    if kind not in AWARE and kind not in _NAIVE:
        raise InvalidInputError(
            f"View {view.name!r}: expected a timestamp column {field!r}, got {kind}",
            loc=f"views.{view.name}.{field}",
        )
    # The connection's time zone is UTC, so a naive value is read as UTC here.
    return f"CAST({_quote(field)} AS TIMESTAMPTZ)"


def _interval(delta: timedelta) -> str:
    return f"INTERVAL '{int(delta.total_seconds() * 1_000_000)} microseconds'"


def _join_view(
    con: duckdb.DuckDBPyConnection,
    request: _Request,
    entity_df: pd.DataFrame,
    entity_time: pd.Series[Any],
    as_served: bool,
    assume_utc: bool,
) -> list[pd.Series[Any]]:
    """One column per requested output column (features, then aggregations), in row order."""
    import duckdb

    view, source = request.view, request.view.source
    columns = source_columns(con, view)
    _check_source(view, columns, request, as_served)
    types = key_types(view, columns)
    event = _time_sql(con, view, columns, source.timestamp_field, assume_utc)
    created_field = source.created_timestamp_field
    created = (
        _time_sql(con, view, columns, created_field, assume_utc)
        if created_field is not None
        else "CAST(NULL AS TIMESTAMPTZ)"
    )
    # __t/__tie: the join's time and tie-breaker (aggregations under as_served window
    # over created time); __e/__c: event and created time, for the as_served rule.
    time, tie = (created, event) if as_served else (event, created)
    keys = [f"__k{i}" for i in range(len(view.join_keys))]
    select = ", ".join(
        [f"{_quote(k)} AS {a}" for k, a in zip(view.join_keys, keys, strict=True)]
        + [f"{time} AS __t", f"{tie} AS __tie", f"{event} AS __e", f"{created} AS __c"]
        + [f"{f.sql} AS __f{i}" for i, f in enumerate(request.features)]
        + [f"{_quote(a.column)} AS __a{i}" for i, a in enumerate(request.aggregations)]
    )
    entity = pd.DataFrame(
        {
            a: _typed_keys(view, entity_df[k], kind, columns[k])
            for k, a, kind in zip(view.join_keys, keys, types, strict=True)
        }
    )
    entity["__ts"] = entity_time
    entity.insert(0, "__row", range(len(entity)))
    on = " AND ".join(f"e.{a} = r.{a}" for a in keys)
    out: list[pd.Series[Any]] = []
    con.register("__entity", entity)
    try:
        parquet = None if as_served else _single_parquet(view, request, columns)
        # (a view has no rowid; its own name, so that it never meets an earlier __raw table)
        raw, rid = ("__raw", "rowid") if parquet is None else ("__parquet", "__rid")
        if parquet is not None:
            # One Parquet file, plain columns only: read it in place (the ASOF join needs
            # only keys and time); its row number is the ingestion order.
            con.execute(
                f"CREATE OR REPLACE TEMP VIEW __parquet AS SELECT {select},"
                f" file_row_number AS __rid FROM read_parquet({parquet}, file_row_number=true)"
            )
        else:
            # Read once, in source order (insertion order is preserved), so rowid is the
            # ingestion order that breaks the last ties.
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE __raw AS SELECT {select} FROM {source.relation()}"
            )
        if request.features and as_served:
            frame = _served(con, request, on, keys)
            out.extend(frame[f"__f{i}"] for i in range(len(request.features)))
        elif request.features:
            frame = _latest(con, request, on, keys, raw, rid)
            out.extend(frame[f"__f{i}"] for i in range(len(request.features)))
        if request.aggregations:
            frame = _aggregate(con, request, on)
            out.extend(frame[f"__a{i}"] for i in range(len(request.aggregations)))
    except duckdb.Error as exc:
        raise InvalidInputError(
            f"Cannot join view {view.name!r} (keys {', '.join(view.join_keys)}): {exc}",
            loc=f"views.{view.name}",
        ) from exc
    finally:
        con.unregister("__entity")
    return out


def _typed_keys(view: FeatureView, values: pd.Series[Any], kind: KeyType, column_type: str) -> Any:
    """The entity frame's key column for the join, checked to hold ``kind`` keys."""
    values = values.reset_index(drop=True)
    got = frame_key_type(values)
    if got is not None and got != kind:
        convert = "astype(str)" if kind == "string" else "astype('Int64')"
        raise InvalidInputError(
            f"View {view.name!r}: join key {values.name!r} is {column_type} in the source "
            f"({kind} keys), but the entity frame's column holds {got} values "
            f"(dtype {values.dtype}); keys are never converted between types, so convert "
            f"the column yourself (e.g. .{convert}) if that is what you mean",
            loc=f"entity_df.{values.name}",
        )
    # One typed column for DuckDB, so it never casts one side of the key comparison.
    if kind == "string":
        return values.astype("string")
    return pd.array(values.tolist(), dtype="Int64") if values.dtype == object else values


def _single_parquet(view: FeatureView, request: _Request, columns: dict[str, str]) -> str | None:
    """The SQL string literal of the source's one Parquet file, when it can be read in place.

    Only for features alone, from plain columns (reading twice gives the same rows), of a
    single file (no glob) with no column named like the row number DuckDB adds.
    """
    source = view.source
    if not isinstance(source, FileSource) or request.aggregations or "file_row_number" in columns:
        return None
    path = source.path
    if path.endswith(".csv") or any(c in path for c in "*?[]{}") or "://" in path:
        return None
    if any(f.expression is not None for f in request.features):
        return None
    return "'" + path.replace("'", "''") + "'"


def _latest(
    con: duckdb.DuckDBPyConnection,
    request: _Request,
    on: str,
    keys: list[str],
    raw: str,
    rid: str,
) -> pd.DataFrame:
    """Rules 1-6: the single latest fresh row per entity row, by an ASOF join."""
    ttl = request.view.ttl
    # The ttl filters the one ASOF match: a stale latest row gives nulls, never an older row.
    fresh = "TRUE" if ttl is None else f"r.__t >= e.__ts - {_interval(ttl)}"
    matched = ", ".join(
        ["e.__row", *(f"r.{k}" for k in keys), f"CASE WHEN {fresh} THEN r.__t END AS __t"]
    )
    same = " AND ".join(f"m.{k} = w.{k}" for k in [*keys, "__t"])
    pairs = " AND ".join(f"w.{k} = p.{k}" for k in [*keys, "__t"])
    features = [f"__f{i}" for i in range(len(request.features))]
    outputs = ", ".join(f"w.__w.{f} AS {f}" for f in features)
    # Rule 4's order as one key (a null __tie loses), for a hash aggregate.
    order = f"(__tie IS NOT NULL, coalesce(__tie, '-infinity'::TIMESTAMPTZ), {rid})"
    # 1. The ASOF join, on keys and time only, finds each entity row's latest time <= t
    #    (which of several rows tied on (keys, time) it lands on does not matter here).
    # 2. Rule 4 then picks the winner among the source rows on those (keys, time) pairs
    #    alone, not over the whole source: the ASOF match of a deduplicated source is the
    #    same row, at a fraction of the cost.
    return con.execute(
        f"WITH m AS MATERIALIZED (SELECT {matched} FROM __entity e ASOF LEFT JOIN"
        f" (SELECT {', '.join(keys)}, __t FROM {raw} WHERE __t IS NOT NULL) r"
        f" ON {on} AND e.__ts >= r.__t),"
        f" p AS (SELECT DISTINCT {', '.join(keys)}, __t FROM m WHERE __t IS NOT NULL),"
        f" w AS (SELECT {', '.join(keys)}, __t, arg_max(struct_pack({', '.join(features)}),"
        f" {order}) AS __w FROM {raw} w SEMI JOIN p ON {pairs} GROUP BY {', '.join(keys)}, __t)"
        f" SELECT m.__row, {outputs} FROM m LEFT JOIN w ON {same} ORDER BY m.__row"
    ).df()


def _served(
    con: duckdb.DuckDBPyConnection, request: _Request, on: str, keys: list[str]
) -> pd.DataFrame:
    """``as_served``: what the online store held at each entity time (see the docstring).

    Per key, rows ordered by availability ``max(event, created)`` carry the running
    maximum of ``(event, created, rowid)`` (the peers of a tie included, as the window's
    default frame does); the ASOF join takes the one at the entity time, its event time
    is checked against the ttl, and the features are read from that row.
    """
    ttl = request.view.ttl
    partition = ", ".join(keys)
    fresh = "TRUE" if ttl is None else f"(m.__best).t >= m.__ts - {_interval(ttl)}"
    features = ", ".join(f"w.__f{i}" for i in range(len(request.features)))
    return con.execute(
        f"WITH a AS MATERIALIZED (SELECT {partition}, greatest(__e, __c) AS __av,"
        f" max(struct_pack(t := __e, c := __c, r := rowid)) OVER (PARTITION BY {partition}"
        " ORDER BY greatest(__e, __c)) AS __best"
        " FROM __raw WHERE __e IS NOT NULL AND __c IS NOT NULL),"
        f" m AS (SELECT e.__row, e.__ts, r.__best FROM __entity e ASOF LEFT JOIN a r"
        f" ON {on} AND e.__ts >= r.__av)"
        f" SELECT m.__row, {features} FROM m LEFT JOIN __raw w"
        f" ON {fresh} AND w.rowid = (m.__best).r ORDER BY m.__row"
    ).df()


def _aggregate(con: duckdb.DuckDBPyConnection, request: _Request, on: str) -> pd.DataFrame:
    """Each aggregation over the rows with time in (t - window, t], by a range join."""
    windows = [parse_window(a.window) for a in request.aggregations]
    outputs = []
    for i, (aggregation, window) in enumerate(zip(request.aggregations, windows, strict=True)):
        fn = _AGGREGATE[aggregation.fn]
        args = f"r.__a{i}, r.__ord" if aggregation.fn == "last" else f"r.__a{i}"
        outputs.append(
            f"{fn}({args}) FILTER (WHERE r.__t > e.__ts - {_interval(window)}) AS __a{i}"
        )
    # __ord ranks rows by rule 4, so ``last`` takes the value of the row that would win.
    con.execute(
        "CREATE OR REPLACE TEMP TABLE __ranked AS SELECT *, row_number() OVER"
        " (ORDER BY __t, __tie NULLS FIRST, rowid) AS __ord FROM __raw WHERE __t IS NOT NULL"
    )
    return con.execute(
        f"SELECT e.__row, {', '.join(outputs)} FROM __entity e LEFT JOIN __ranked r ON {on}"
        f" AND r.__t <= e.__ts AND r.__t > e.__ts - {_interval(max(windows))}"
        " GROUP BY e.__row ORDER BY e.__row"
    ).df()
