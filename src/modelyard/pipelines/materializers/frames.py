"""Tables as Parquet: pandas DataFrames and Series, polars DataFrames, pyarrow Tables.

Each save reads its file back and compares it with the value (dtypes, index, column
labels, every cell) before it is stored: a frame Parquet cannot hold exactly (a column
of dicts would come back as structs with nulls filled in, a column of mixed Python
objects does not convert) is refused, naming the difference, instead of coming back
different. pandas keeps its index (a RangeIndex as metadata, any other as columns),
nullable integers, categoricals (order and categories), time zones and ``object``
columns of strings; a DatetimeIndex's ``freq`` is put back from the metadata. A subclass
of DataFrame or Series loads as the pandas class itself.

The libraries are imported when a value is stored or loaded, never at import time: a
type is recognised by its class's module, and a pandas class can only be declared or
returned once pandas is imported.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.errors import InvalidInputError
from modelyard.pipelines.materializers.values import decode, encode

__all__ = ["ArrowMaterializer", "PandasMaterializer", "PolarsMaterializer"]

FILE = "data.parquet"
_SERIES_COLUMN = "__modelyard_series__"


def _subclass_of(tp: Any, module: str, *names: str) -> bool:
    """Whether ``tp`` is a subclass of ``module.name`` for one of ``names``, without importing."""
    loaded = sys.modules.get(module)
    if loaded is None or not isinstance(tp, type):
        return False
    return any(issubclass(tp, getattr(loaded, name)) for name in names)


def _refuse(kind: str, detail: str) -> InvalidInputError:
    first = " ".join(str(detail).split())[:400]
    return InvalidInputError(
        f"The {kind} does not round-trip through Parquet exactly ({first}); modelyard never "
        "pickles. Convert the offending columns (to str, numbers or times) or register a "
        "materializer for it (docs/pipelines.md#materializers)",
        loc="output",
    )


class PandasMaterializer:
    """``pandas.DataFrame`` and ``pandas.Series`` (and subclasses) as ``data.parquet``."""

    name = "pandas.parquet"
    version = 1

    def handles(self, tp: Any) -> bool:
        return _subclass_of(tp, "pandas", "DataFrame", "Series")

    def save(self, value: Any, folder: Path) -> Mapping[str, Any]:
        import pandas as pd

        meta: dict[str, Any] = {}
        if isinstance(value, pd.Series):
            meta["series"] = {"name": _label(value.name)}
            frame = value.to_frame(name=_SERIES_COLUMN)
        else:
            frame = value
        if frame.columns.has_duplicates:
            dupes = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
            raise InvalidInputError(
                f"Expected unique column labels, got duplicates {dupes[:5]}: Parquet cannot "
                "store them",
                loc="output",
            )
        objects = [i for i, dtype in enumerate(frame.dtypes) if dtype == np.dtype(object)]
        if objects:
            meta["object_columns"] = objects
        freq = getattr(frame.index, "freqstr", None)
        if freq is not None:
            meta["index_freq"] = freq
        if frame.attrs:
            meta["attrs"] = _label(frame.attrs)
        try:
            with warnings.catch_warnings():
                # "column names of mixed type ... will not roundtrip": the check below refuses
                warnings.simplefilter("ignore", UserWarning)
                frame.to_parquet(folder / FILE, engine="pyarrow")
        except (ValueError, TypeError, ArithmeticError) as exc:  # pyarrow's ArrowInvalid
            raise _refuse("DataFrame", str(exc)) from exc
        back = self.load(folder, meta, Any)
        try:
            if isinstance(value, pd.Series):
                pd.testing.assert_series_equal(
                    back, value, check_exact=True, check_freq=True, check_series_type=False
                )
            else:
                pd.testing.assert_frame_equal(
                    back, value, check_exact=True, check_freq=True, check_frame_type=False
                )
        except AssertionError as exc:
            kind = "DataFrame" if "series" not in meta else "Series"
            raise _refuse(kind, str(exc) or "values differ") from exc
        return meta

    def load(self, folder: Path, meta: Mapping[str, Any], tp: Any) -> Any:
        import pandas as pd

        frame = pd.read_parquet(folder / FILE, engine="pyarrow")
        for i in meta.get("object_columns", ()):
            frame.isetitem(i, frame.iloc[:, i].astype(object))
        if "index_freq" in meta:
            frame.index.freq = meta["index_freq"]  # type: ignore[attr-defined]
        if "attrs" in meta:
            frame.attrs = _unlabel(meta["attrs"])
        else:
            frame.attrs = {}
        if "series" in meta:
            series = frame[_SERIES_COLUMN]
            series.name = _unlabel(meta["series"]["name"])
            return series
        return frame


def _label(value: Any) -> Any:
    """A Series name or attrs as tagged JSON (refused, naming it, when not JSON)."""
    try:
        return encode(value)
    except InvalidInputError as exc:
        raise InvalidInputError(
            f"Expected a Series name / attrs of JSON values, got {value!r}: {exc}", loc="output"
        ) from exc


def _unlabel(text: Any) -> Any:
    import json

    return decode(json.loads(text))


class PolarsMaterializer:
    """``polars.DataFrame`` as ``data.parquet`` (polars' own writer and reader)."""

    name = "polars.parquet"
    version = 1

    def handles(self, tp: Any) -> bool:
        return _subclass_of(tp, "polars", "DataFrame")

    def save(self, value: Any, folder: Path) -> Mapping[str, Any]:
        try:
            value.write_parquet(folder / FILE)
        except Exception as exc:  # polars' ComputeError/InvalidOperationError are not ValueError
            raise _refuse("polars DataFrame", str(exc)) from exc
        back = self.load(folder, {}, Any)
        if back.schema != value.schema or not back.equals(value, null_equal=True):
            raise _refuse(
                "polars DataFrame", f"read back as schema {back.schema}, written {value.schema}"
            )
        return {}

    def load(self, folder: Path, meta: Mapping[str, Any], tp: Any) -> Any:
        import polars as pl

        return pl.read_parquet(folder / FILE)


class ArrowMaterializer:
    """``pyarrow.Table`` as ``data.parquet``, schema and metadata included."""

    name = "arrow.parquet"
    version = 1

    def handles(self, tp: Any) -> bool:
        return _subclass_of(tp, "pyarrow", "Table")

    def save(self, value: Any, folder: Path) -> Mapping[str, Any]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            pq.write_table(value, folder / FILE)
        except (pa.ArrowException, ValueError, TypeError) as exc:
            raise _refuse("pyarrow Table", str(exc)) from exc
        back = self.load(folder, {}, Any)
        if not _tables_equal(back, value):
            raise _refuse("pyarrow Table", f"read back as {back.schema}, written {value.schema}")
        return {}

    def load(self, folder: Path, meta: Mapping[str, Any], tp: Any) -> Any:
        import pyarrow.parquet as pq

        return pq.read_table(folder / FILE)


def _tables_equal(a: Any, b: Any) -> bool:
    """``Table.equals`` with NaN equal to NaN in float columns (Arrow's own says unequal)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not a.schema.equals(b.schema, check_metadata=True) or a.num_rows != b.num_rows:
        return False
    for left, right in zip(a.columns, b.columns, strict=True):
        x, y = left, right
        if pa.types.is_floating(x.type):
            nan_x, nan_y = pc.fill_null(pc.is_nan(x), False), pc.fill_null(pc.is_nan(y), False)
            if not nan_x.equals(nan_y):
                return False
            zero = pa.scalar(0, x.type)
            x, y = pc.if_else(nan_x, zero, x), pc.if_else(nan_y, zero, y)
        if not x.equals(y):
            return False
    return True
