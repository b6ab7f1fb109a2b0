"""Feature definitions: entities, sources, views, windowed aggregations, services.

Definitions are plain frozen values written in the project's ``features.py``:

>>> from datetime import timedelta
>>> flight = Entity("carrier", join_keys=["carrier"])
>>> delays = FileSource("data/flights.parquet", timestamp_field="arr_time")
>>> view = FeatureView(
...     "carrier_delays", entities=[flight], source=delays,
...     features=[Feature("arr_delay", "float")], ttl=timedelta(days=7),
... )
>>> view.join_keys
['carrier']
>>> FeatureService("delay_model", features=[view]).refs()
['carrier_delays:arr_delay']
"""

from __future__ import annotations

import hashlib
import inspect
import marshal
import re
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from modelyard.errors import InvalidInputError

__all__ = [
    "Aggregation",
    "Entity",
    "Feature",
    "FeatureService",
    "FeatureView",
    "FileSource",
    "OnDemandFeatureView",
    "SqlSource",
    "on_demand_feature_view",
    "parse_window",
]

FeatureType = Literal["float", "int", "bool", "string", "datetime"]
AggregationFn = Literal["count", "sum", "mean", "min", "max", "std", "last"]
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_WINDOW = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInputError(
            f"Expected a {what} name of letters, digits and '_' (not starting with a digit), "
            f"got {name!r}",
            loc=what,
        )
    return name


def parse_window(window: str | timedelta) -> timedelta:
    """``"1h"``, ``"7d"``, ``"30m"`` or a timedelta, as a timedelta.

    >>> parse_window("7d")
    datetime.timedelta(days=7)
    """
    if isinstance(window, timedelta):
        if window <= timedelta(0):
            raise InvalidInputError(f"Expected a positive window, got {window}", loc="window")
        return window
    match = _WINDOW.match(str(window).strip())
    if match is None or int(match[1]) == 0:
        raise InvalidInputError(
            f"Expected a window like 30m, 1h, 1d or 7d, got {window!r}", loc="window"
        )
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


@dataclass(frozen=True)
class Entity:
    """What features describe (a carrier, a customer), identified by its join keys."""

    name: str
    join_keys: list[str]
    description: str = ""

    def __post_init__(self) -> None:
        _check_name(self.name, "entity")
        if not self.join_keys:
            raise InvalidInputError(
                f"Entity {self.name!r} needs at least one join key", loc="join_keys"
            )
        for key in self.join_keys:
            _check_name(key, "join key")


@dataclass(frozen=True)
class FileSource:
    """Parquet files (a path or a glob) or a CSV file with an event-time column.

    ``created_timestamp_field`` is when a row became available; it breaks ties and
    drives ``as_served`` retrieval and incremental materialization.
    """

    path: str
    timestamp_field: str
    created_timestamp_field: str | None = None

    def relation(self) -> str:
        """DuckDB SQL for the rows of the source."""
        escaped = self.path.replace("'", "''")
        if self.path.endswith(".csv"):
            return f"read_csv_auto('{escaped}')"
        return f"read_parquet('{escaped}')"


@dataclass(frozen=True)
class SqlSource:
    """A DuckDB SQL query whose rows are the source."""

    query: str
    timestamp_field: str
    created_timestamp_field: str | None = None

    def relation(self) -> str:
        return f"({self.query})"


Source = FileSource | SqlSource


@dataclass(frozen=True)
class Feature:
    """One feature of a view: a source column, or a DuckDB SQL expression over the row."""

    name: str
    dtype: FeatureType = "float"
    expression: str | None = None

    def __post_init__(self) -> None:
        _check_name(self.name, "feature")

    @property
    def sql(self) -> str:
        return self.expression or f'"{self.name}"'


@dataclass(frozen=True)
class Aggregation:
    """``fn`` of ``column`` over the ``window`` before each point in time."""

    column: str
    fn: AggregationFn
    window: str | timedelta
    name: str | None = None

    def __post_init__(self) -> None:
        if self.fn not in ("count", "sum", "mean", "min", "max", "std", "last"):
            raise InvalidInputError(
                f"Expected an aggregation count, sum, mean, min, max, std or last, got {self.fn!r}",
                loc="fn",
            )
        parse_window(self.window)

    @property
    def output_name(self) -> str:
        if self.name:
            return self.name
        window = (
            self.window if isinstance(self.window, str) else f"{int(self.window.total_seconds())}s"
        )
        return f"{self.column}_{self.fn}_{window}"


def _ttl(view: str, ttl: Any) -> timedelta | None:
    """A view's ttl as a timedelta: given as one, as whole seconds or as a window."""
    loc = f"views.{view}.ttl"
    forms = "a timedelta, whole seconds (an int) or a window like '30m', '1h' or '7d'"
    if ttl is None:
        return None
    delta: timedelta
    if isinstance(ttl, str):
        match = _WINDOW.match(ttl.strip())
        if match is None:
            raise InvalidInputError(
                f"Expected the ttl of view {view!r} as {forms}, got {ttl!r}", loc=loc
            )
        delta = timedelta(**{_UNITS[match[2]]: int(match[1])})
    elif isinstance(ttl, int) and not isinstance(ttl, bool):
        delta = timedelta(seconds=ttl)
    elif isinstance(ttl, timedelta):
        delta = ttl
    else:
        raise InvalidInputError(
            f"Expected the ttl of view {view!r} as {forms}, got {type(ttl).__name__} {ttl!r}",
            loc=loc,
        )
    if delta <= timedelta(0):
        raise InvalidInputError(f"Expected a positive ttl for view {view!r}, got {delta}", loc=loc)
    return delta


@dataclass(frozen=True)
class FeatureView:
    """Features of one or more entities from one source, valid for ``ttl`` after their time.

    ``ttl`` is a ``timedelta``, whole seconds (an ``int``) or a window like ``"7d"``; it is
    kept as a ``timedelta`` (so ``ttl=3600``, ``"1h"`` and ``timedelta(hours=1)`` are the
    same definition). Anything else is an ``InvalidInputError`` naming the view's ttl.
    """

    name: str
    entities: list[Entity]
    source: Source
    features: list[Feature] = field(default_factory=list)
    ttl: timedelta | None = None
    aggregations: list[Aggregation] = field(default_factory=list)
    description: str = ""

    def __post_init__(self) -> None:
        _check_name(self.name, "view")
        if not self.entities:
            raise InvalidInputError(f"View {self.name!r} needs at least one entity", loc="entities")
        if not self.features and not self.aggregations:
            raise InvalidInputError(
                f"View {self.name!r} has no features and no aggregations", loc="features"
            )
        object.__setattr__(self, "ttl", _ttl(self.name, self.ttl))
        names = self.feature_names
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InvalidInputError(
                f"View {self.name!r} names {', '.join(duplicates)} twice", loc="features"
            )

    @property
    def join_keys(self) -> list[str]:
        keys: list[str] = []
        for entity in self.entities:
            keys.extend(k for k in entity.join_keys if k not in keys)
        return keys

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features] + [a.output_name for a in self.aggregations]

    @property
    def feature_types(self) -> dict[str, FeatureType]:
        """Each feature's type; aggregations are numeric, counts integers."""
        types: dict[str, FeatureType] = {f.name: f.dtype for f in self.features}
        for agg in self.aggregations:
            types[agg.output_name] = "int" if agg.fn == "count" else "float"
        return types


#: an on-demand transformation: input columns by name -> output columns by name
OnDemandFn = Callable[[Mapping[str, Any]], Mapping[str, Any]]


def _code_of(fn: OnDemandFn) -> str:
    """The source text of ``fn`` (its bytecode when no source is available)."""
    try:
        return textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        if code is None:
            raise InvalidInputError(
                f"Expected a Python function for an on-demand view, got {type(fn).__name__}",
                loc="fn",
            ) from None
        return "bytecode:" + hashlib.sha256(marshal.dumps(code)).hexdigest()


@dataclass(frozen=True)
class OnDemandFeatureView:
    """Features computed by a pure Python function of request data and looked-up features.

    The same function runs when a training set is built (over the point-in-time joined
    values) and when features are served (over the online values), so the two cannot
    drift apart. ``fn`` takes a mapping of numpy arrays, one per input, keyed by the input
    feature's name (the part after ``view:``) and by each request field's name, and
    returns a mapping with one array-like per output feature. Inputs arrive as: float64
    (NaN where missing) for float and int features, object arrays of ``True``/``False``/
    ``None`` for bools, of ``str``/``None`` for strings, ``datetime64[us]`` (UTC, NaT
    where missing) for datetimes.

    >>> import numpy as np
    >>> @on_demand_feature_view(inputs=[], request=[Feature("amount")],
    ...                         features=[Feature("log_amount")])
    ... def amounts(x):
    ...     return {"log_amount": np.log1p(x["amount"])}
    >>> amounts.name, amounts.feature_names
    ('amounts', ['log_amount'])
    """

    name: str
    inputs: list[str]
    features: list[Feature]
    fn: OnDemandFn
    request: list[Feature] = field(default_factory=list)
    description: str = ""
    code: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        _check_name(self.name, "on_demand")
        if not self.features:
            raise InvalidInputError(
                f"On-demand view {self.name!r} has no output features", loc="features"
            )
        if not callable(self.fn):
            raise InvalidInputError(
                f"Expected a function for on-demand view {self.name!r}, "
                f"got {type(self.fn).__name__}",
                loc="fn",
            )
        for ref in self.inputs:
            if not isinstance(ref, str) or ref.count(":") != 1 or ref.startswith(":"):
                raise InvalidInputError(
                    f"Expected an input ref like view:feature for on-demand view "
                    f"{self.name!r}, got {ref!r}",
                    loc=f"on_demand.{self.name}.inputs",
                )
        names = self.input_names
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InvalidInputError(
                f"On-demand view {self.name!r} has two inputs named {duplicates[0]!r}; "
                "the function sees inputs by feature name, so each must be distinct",
                loc=f"on_demand.{self.name}.inputs",
            )
        outputs = self.feature_names
        duplicates = sorted({n for n in outputs if outputs.count(n) > 1})
        if duplicates:
            raise InvalidInputError(
                f"On-demand view {self.name!r} names {duplicates[0]!r} twice", loc="features"
            )
        if not self.code:
            object.__setattr__(self, "code", _code_of(self.fn))

    @property
    def input_names(self) -> list[str]:
        """The keys the function receives: input feature names, then request fields."""
        return [r.partition(":")[2] for r in self.inputs] + [f.name for f in self.request]

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OnDemandFeatureView):
            return NotImplemented
        return (
            self.name,
            self.inputs,
            self.features,
            self.request,
            self.description,
            self.code,
        ) == (
            other.name,
            other.inputs,
            other.features,
            other.request,
            other.description,
            other.code,
        )

    def __hash__(self) -> int:
        return hash((self.name, self.code))


def on_demand_feature_view(
    *,
    inputs: Sequence[str],
    features: Sequence[Feature],
    request: Sequence[Feature] = (),
    name: str | None = None,
    description: str = "",
) -> Callable[[OnDemandFn], OnDemandFeatureView]:
    """Declare an on-demand view by decorating its function (named after it by default)."""

    def wrap(fn: OnDemandFn) -> OnDemandFeatureView:
        return OnDemandFeatureView(
            name or str(getattr(fn, "__name__", "")),
            inputs=list(inputs),
            features=list(features),
            fn=fn,
            request=list(request),
            description=description or (inspect.getdoc(fn) or ""),
        )

    return wrap


@dataclass(frozen=True)
class FeatureService:
    """The named set of features a model uses: whole views or ``view:feature`` refs."""

    name: str
    features: list[FeatureView | OnDemandFeatureView | str]
    description: str = ""

    def __post_init__(self) -> None:
        _check_name(self.name, "service")

    def refs(self) -> list[str]:
        out: list[str] = []
        for item in self.features:
            if isinstance(item, FeatureView | OnDemandFeatureView):
                out.extend(f"{item.name}:{n}" for n in item.feature_names)
            else:
                if ":" not in item:
                    raise InvalidInputError(
                        f"Expected a feature ref like view:feature, got {item!r}",
                        loc=f"services.{self.name}",
                    )
                out.append(item)
        return out
