"""Running on-demand views: one conversion of inputs, one check of outputs, both paths.

Training (``get_historical_features``) and serving (``get_online_features``) both call
``run_on_demand`` with the values they found, so the function sees the same array types
either way: float64 (NaN where missing) for float and int features, object arrays of
``True``/``False``/``None`` for bools and of ``str``/``None`` for strings,
``datetime64[us]`` (UTC, NaT where missing) for datetimes. Outputs are cast to each
feature's declared type; a missing output, a wrong length or a value that does not fit
the type is an error naming the view and the feature.

>>> import numpy as np, pyarrow as pa
>>> from modelyard.features.definitions import Feature, on_demand_feature_view
>>> @on_demand_feature_view(inputs=["orders:total"], request=[Feature("items", "int")],
...                         features=[Feature("per_item")])
... def basket(x):
...     return {"per_item": x["total"] / x["items"]}
>>> out = run_on_demand(basket, {"total": pa.array([10.0, None]), "items": [4, 2]}, 2)
>>> out["per_item"].to_pylist()
[2.5, None]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from modelyard.errors import InvalidInputError, ModelError
from modelyard.features.definitions import (
    Feature,
    FeatureType,
    FeatureView,
    OnDemandFeatureView,
)

__all__ = [
    "gather_inputs",
    "input_refs",
    "run_on_demand",
    "split_refs",
    "to_function_input",
]

_ARROW: dict[FeatureType, pa.DataType] = {
    "float": pa.float64(),
    "int": pa.int64(),
    "bool": pa.bool_(),
    "string": pa.string(),
    "datetime": pa.timestamp("us", tz="UTC"),
}


def _arrow(values: Any, dtype: FeatureType, where: str) -> pa.Array:
    """``values`` (Arrow, pandas, numpy or a list) as an Arrow array of ``dtype``."""
    target = _ARROW[dtype]
    try:
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if isinstance(values, pa.Array):
            array = values
        elif hasattr(values, "to_numpy") and hasattr(values, "dtype"):  # a pandas Series
            array = pa.Array.from_pandas(values)
        else:
            listed = values if isinstance(values, np.ndarray) else list(values)
            array = pa.array(listed, from_pandas=True)
        if pa.types.is_timestamp(array.type) and array.type.tz is None:
            array = array.cast(pa.timestamp(array.type.unit, tz="UTC"))
        if dtype == "int" and pa.types.is_floating(array.type):
            # float64 carries ints with nulls; a fractional value must not be truncated
            finite = pc.drop_null(array)
            if len(finite) and not pc.all(pc.equal(pc.floor(finite), finite)).as_py():
                raise pa.ArrowInvalid("a value with a fraction")
        return array.cast(target) if array.type != target else array
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError) as exc:
        raise InvalidInputError(
            f"Expected {dtype} values for {where}: {exc}".rstrip(), loc=where
        ) from exc


def to_function_input(values: Any, dtype: FeatureType, where: str) -> np.ndarray:
    """One input of an on-demand function as the numpy array its type maps to."""
    array = _arrow(values, dtype, where)
    if dtype in ("float", "int"):
        return np.asarray(array.cast(pa.float64()).to_numpy(zero_copy_only=False))
    if dtype == "datetime":
        naive = array.cast(pa.timestamp("us"))
        return np.asarray(naive.to_numpy(zero_copy_only=False), dtype="datetime64[us]")
    return np.array(array.to_pylist(), dtype=object)


def split_refs(
    refs: Sequence[str], on_demand: Mapping[str, OnDemandFeatureView]
) -> tuple[list[str], dict[str, list[str]]]:
    """Refs of stored views, and the wanted features of each on-demand view, in order."""
    plain: list[str] = []
    wanted: dict[str, list[str]] = {}
    for ref in refs:
        view, _, feature = ref.partition(":")
        odfv = on_demand.get(view)
        if odfv is None:
            plain.append(ref)
            continue
        if feature not in odfv.feature_names:
            raise InvalidInputError(
                f"On-demand view {view!r} has no feature {feature!r}. "
                f"Its features: {', '.join(odfv.feature_names)}.",
                loc="features",
            )
        chosen = wanted.setdefault(view, [])
        if feature not in chosen:
            chosen.append(feature)
    return plain, wanted


def input_refs(views: Sequence[OnDemandFeatureView]) -> list[str]:
    """Every stored-view ref the given on-demand views read, each once, in order."""
    out: list[str] = []
    for view in views:
        out.extend(r for r in view.inputs if r not in out)
    return out


def gather_inputs(
    odfv: OnDemandFeatureView,
    values: Mapping[str, Any],
    request: Mapping[str, Any],
    views: Mapping[str, FeatureView],
    *,
    source: str,
) -> tuple[dict[str, Any], dict[str, FeatureType]]:
    """The function's inputs by name and each input ref's type, from both paths.

    ``values`` holds the looked-up or joined values by ref (``view:feature``),
    ``request`` the request columns; ``source`` names where the request columns come
    from (``entity_df`` at training time, ``entity_rows`` at serving time) in errors.
    """
    inputs: dict[str, Any] = {}
    types: dict[str, FeatureType] = {}
    for ref in odfv.inputs:
        view_name, _, feature = ref.partition(":")
        view = views.get(view_name)
        if view is None:
            raise InvalidInputError(
                f"On-demand view {odfv.name!r} reads {ref!r}, but there is no view "
                f"{view_name!r}; known views: {', '.join(sorted(views)) or 'none'}",
                loc=f"on_demand.{odfv.name}.inputs",
            )
        inputs[feature] = values[ref]
        types[ref] = view.feature_types[feature]
    what = "column" if source == "entity_df" else "field"
    for field in odfv.request:
        if field.name not in request:
            raise InvalidInputError(
                f"On-demand view {odfv.name!r} needs the request {what} {field.name!r} "
                f"({field.dtype}); got {', '.join(map(str, request)) or 'nothing'}",
                loc=f"{source}.{field.name}",
            )
        inputs[field.name] = request[field.name]
    return inputs, types


def _input_types(
    odfv: OnDemandFeatureView, types: Mapping[str, FeatureType]
) -> list[tuple[str, FeatureType]]:
    pairs: list[tuple[str, FeatureType]] = []
    for ref in odfv.inputs:
        pairs.append((ref.partition(":")[2], types.get(ref, "float")))
    pairs.extend((f.name, f.dtype) for f in odfv.request)
    return pairs


def run_on_demand(
    odfv: OnDemandFeatureView,
    inputs: Mapping[str, Any],
    rows: int,
    types: Mapping[str, FeatureType] | None = None,
) -> dict[str, pa.Array]:
    """Run ``odfv`` over ``inputs`` (by input name) for ``rows`` rows; outputs as Arrow.

    ``types`` gives each input ref's declared type (``view:feature`` -> type); request
    fields carry their own.
    """
    columns: dict[str, np.ndarray] = {}
    for name, dtype in _input_types(odfv, types or {}):
        if name not in inputs:
            raise InvalidInputError(
                f"On-demand view {odfv.name!r} needs {name!r} ({dtype}), but it was not "
                f"given; got {', '.join(sorted(inputs)) or 'nothing'}",
                loc=f"request.{name}",
            )
        column = to_function_input(inputs[name], dtype, f"{odfv.name}.{name}")
        if len(column) != rows:
            raise InvalidInputError(
                f"Expected {rows} values of {name!r} for on-demand view {odfv.name!r}, "
                f"got {len(column)}",
                loc=f"request.{name}",
            )
        columns[name] = column
    try:
        result = odfv.fn(columns)
    except Exception as exc:  # deliberate: user code, reported with the view's name
        raise ModelError(
            f"On-demand view {odfv.name!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(result, Mapping):
        raise InvalidInputError(
            f"On-demand view {odfv.name!r} must return a mapping of feature name to values, "
            f"got {type(result).__name__}",
            loc=f"on_demand.{odfv.name}",
        )
    return {f.name: _output(odfv, f, result, rows) for f in odfv.features}


def _output(
    odfv: OnDemandFeatureView, feature: Feature, result: Mapping[str, Any], rows: int
) -> pa.Array:
    where = f"on_demand.{odfv.name}.{feature.name}"
    if feature.name not in result:
        raise InvalidInputError(
            f"On-demand view {odfv.name!r} returned no {feature.name!r}; "
            f"it returned {', '.join(map(str, result)) or 'nothing'}",
            loc=where,
        )
    values = result[feature.name]
    if np.isscalar(values) or values is None:
        raise InvalidInputError(
            f"Expected {rows} values of {feature.name!r} from on-demand view {odfv.name!r}, "
            f"got the single value {values!r}",
            loc=where,
        )
    array = _arrow(values, feature.dtype, where)
    if len(array) != rows:
        raise InvalidInputError(
            f"Expected {rows} values of {feature.name!r} from on-demand view {odfv.name!r}, "
            f"got {len(array)}",
            loc=where,
        )
    if feature.dtype == "float":
        array = pc.if_else(pc.is_nan(array), pa.scalar(None, pa.float64()), array)
    return array
