"""Runtimes: the ways to run a packaged model, each fed numpy arrays in signature order.

A request reaches a runtime as :class:`Inputs`: one numpy array per signature column, in
signature order, plus the float64 matrix of them when every column is numeric. There is no
pandas on that path: :func:`build_inputs` turns a frame, a column mapping or records into
arrays once, at the edge. Only :class:`NativeRuntime` builds a frame again, because that is
how users call a scikit-learn pipeline, and it is the baseline every other runtime is
measured against.

>>> from modelyard.models.signature import ColumnSpec, Signature
>>> sig = Signature(columns=[ColumnSpec(name="age", dtype="int"),
...                          ColumnSpec(name="plan", dtype="string")])
>>> inputs = build_inputs(sig, [{"plan": "pro", "age": 31}, {"plan": "basic", "age": 40}])
>>> inputs.names, inputs.columns[0].tolist(), inputs.columns[1].tolist(), inputs.matrix
(('age', 'plan'), [31, 40], ['pro', 'basic'], None)
>>> build_inputs(sig, {"age": [31]})
Traceback (most recent call last):
...
modelyard.errors.InvalidInputError: Expected a column 'plan' (string), got nothing - at plan
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from modelyard.config import ServingRuntime
from modelyard.errors import InvalidInputError, ModelError
from modelyard.models.onnx_session import open_session, serving_session_options
from modelyard.models.signature import ColumnSpec, Signature

__all__ = [
    "open_serving_runtime",
    "Inputs",
    "LightGBMBoosterRuntime",
    "NativeRuntime",
    "OnnxRuntime",
    "Runtime",
    "XGBoostInplaceRuntime",
    "build_inputs",
    "lightgbm_booster",
    "native_fast_paths",
    "serving_session_options",
    "xgboost_booster",
]

NUMERIC = frozenset({"float", "int", "bool"})


@dataclass(frozen=True, eq=False)
class Inputs:
    """Rows as numpy arrays in signature order, built once per request.

    ``columns`` holds one 1-d array per signature column: float64 for floats (and for
    nullable ints and bools, NaN where missing), int64, bool, object arrays of ``str`` (or
    ``None``) for text and categories. ``matrix`` is the ``(rows, columns)`` float64 matrix
    when every column is numeric, else ``None``.
    """

    names: tuple[str, ...]
    columns: tuple[np.ndarray, ...]
    matrix: np.ndarray | None

    @property
    def rows(self) -> int:
        return 0 if not self.columns else len(self.columns[0])

    def numeric(self, dtype: Any = np.float64) -> np.ndarray:
        """The numeric matrix in ``dtype``; an error when a column is text."""
        if self.matrix is None:
            raise ModelError(
                "This runtime takes one numeric matrix, but the signature has text columns"
            )
        return self.matrix.astype(dtype, copy=False)

    def take(self, index: np.ndarray | Sequence[int]) -> Inputs:
        """The rows at ``index`` (repeats allowed), as new arrays."""
        rows = np.asarray(index, dtype=np.intp)
        return Inputs(
            names=self.names,
            columns=tuple(c[rows] for c in self.columns),
            matrix=None if self.matrix is None else self.matrix[rows],
        )

    def to_frame(self, signature: Signature) -> Any:
        """A pandas frame with the training dtypes: for native models only."""
        import pandas as pd

        data: dict[str, Any] = {}
        for spec, values in zip(signature.columns, self.columns, strict=True):
            if spec.dtype == "category":
                data[spec.name] = pd.Categorical(values, categories=spec.categories)
            else:
                data[spec.name] = values
        return pd.DataFrame(data, columns=list(self.names))


#: the types of a text column's values that need no conversion (exactly these: a str
#: subclass is converted to str)
_TEXT_OR_NONE = frozenset({str, type(None)})


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return isinstance(value, float) and math.isnan(value)
    except TypeError:  # pragma: no cover - a float that is not comparable
        return False


def _column(spec: ColumnSpec, values: Any) -> np.ndarray:
    """One column as the array type its signature dtype maps to."""
    if hasattr(values, "to_numpy"):  # a pandas Series: let pandas map its own NA values
        if spec.dtype in NUMERIC:
            if spec.dtype == "int" and not spec.nullable and not values.isna().any():
                return np.asarray(values.to_numpy(dtype=np.int64))
            if spec.dtype == "bool" and not values.isna().any():
                return np.asarray(values.to_numpy(dtype=bool))
            return np.asarray(values.to_numpy(dtype=np.float64, na_value=np.nan))
        if spec.dtype == "datetime":
            return np.asarray(values.to_numpy())
        missing = values.isna().to_numpy()
        objects = values.astype(object).to_numpy()
        return np.array(
            [None if gone else str(v) for v, gone in zip(objects, missing, strict=True)],
            dtype=object,
        )
    if isinstance(values, np.ndarray) and spec.dtype in NUMERIC and values.dtype.kind in "fiub":
        if values.dtype.kind == "f" or spec.dtype == "float":
            return values.astype(np.float64, copy=False)
        return values.astype(np.int64 if spec.dtype == "int" else bool, copy=False)
    if spec.dtype in ("string", "category"):
        if (
            isinstance(values, np.ndarray)
            and values.dtype == object
            and set(map(type, values)) <= _TEXT_OR_NONE
        ):  # already what the loop below makes (a batch's checked text): no loop in Python
            return values.copy()
        return np.array([None if _missing(v) else str(v) for v in values], dtype=object)
    if spec.dtype == "datetime":
        return np.asarray(values, dtype="datetime64[ns]")
    listed = list(values)
    try:
        if any(_missing(v) for v in listed):
            return np.array([math.nan if _missing(v) else v for v in listed], dtype=np.float64)
        kind = {"int": np.int64, "bool": bool}.get(spec.dtype, np.float64)
        return np.array(listed, dtype=kind)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"Expected {spec.dtype} values in column {spec.name!r}: {exc}", loc=spec.name
        ) from exc


def _columns_of(data: Any, names: list[str]) -> Mapping[str, Any]:
    if hasattr(data, "columns") and hasattr(data, "__getitem__"):  # a DataFrame
        present = {str(c) for c in data.columns}
        return {n: data[n] for n in names if n in present}
    if isinstance(data, Mapping):
        return data
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        records = list(data)
        for i, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise InvalidInputError(
                    f"Expected a record (an object of column: value), got {type(record).__name__}",
                    loc=f"$[{i}]",
                )
        return {n: [r.get(n) for r in records] for n in names if any(n in r for r in records)}
    raise InvalidInputError(
        f"Expected a frame, a mapping of columns or a list of records, got {type(data).__name__}"
    )


def _float_frame(signature: Signature, data: Any) -> Inputs | None:
    """A frame of exactly the signature's float columns, in order, in one conversion.

    Building a pandas Series per column costs far more than the model for one row; a
    frame whose columns are the signature's, all ``float``, converts as one block to the
    same values the per-column path gives (NA as NaN). Anything else (another order,
    extra columns, a value that does not convert) takes the per-column path, which
    words the error.
    """
    names = signature.names
    if (
        not names
        or not hasattr(data, "to_numpy")
        or not hasattr(data, "columns")
        or any(spec.dtype != "float" for spec in signature.columns)
        or data.columns.tolist() != names
    ):
        return None
    try:
        block = data.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        return None
    matrix = np.ascontiguousarray(block, dtype=np.float64)
    by_column = np.ascontiguousarray(matrix.T)
    return Inputs(names=tuple(names), columns=tuple(by_column), matrix=matrix)


def build_inputs(signature: Signature, data: Any) -> Inputs:
    """Arrays in signature order from a pandas frame, ``{column: values}`` or records.

    Only the signature's columns are read; one it names and the data lacks is an error.
    """
    fast = _float_frame(signature, data)
    if fast is not None:
        return fast
    found = _columns_of(data, signature.names)
    columns = []
    for spec in signature.columns:
        if spec.name not in found:
            raise InvalidInputError(
                f"Expected a column {spec.name!r} ({spec.dtype}), got nothing", loc=spec.name
            )
        columns.append(_column(spec, found[spec.name]))
    lengths = {len(c) for c in columns}
    if len(lengths) > 1:
        raise InvalidInputError(f"Expected columns of one length, got lengths {sorted(lengths)}")
    matrix = None
    if columns and all(spec.dtype in NUMERIC for spec in signature.columns):
        matrix = np.empty((len(columns[0]), len(columns)), dtype=np.float64)
        for j, values in enumerate(columns):
            matrix[:, j] = values
    return Inputs(names=tuple(signature.names), columns=tuple(columns), matrix=matrix)


class Runtime(Protocol):
    """One way to run a model: scores from arrays already built in signature order."""

    @property
    def name(self) -> str: ...

    def scores(self, inputs: Inputs) -> np.ndarray:
        """Class probabilities (classifiers) or predictions, as a 2-d float64 array."""
        ...


def _as_scores(values: Any, rows: int, *, classification: bool) -> np.ndarray:
    out = np.asarray(values).reshape(rows, -1)
    if classification and out.shape[1] == 1:  # a binary model's positive-class probability
        # the complement in the library's own dtype, as its predict_proba computes it
        out = np.column_stack([1 - out[:, 0], out[:, 0]])
    return out.astype(np.float64, copy=False)


#: scikit-learn estimators whose ``predict``/``predict_proba`` turn any numeric frame into
#: one float matrix before anything else (``validate_data``), so the matrix itself gives
#: the same answer without building a frame; pipelines and column transformers may select
#: columns by name or treat dtypes apart, so they always get the frame
#: (tree models only: a linear model's BLAS sums may round differently on another
#: memory layout, by an ulp)
_MATRIX_MODULES = ("sklearn.ensemble.", "sklearn.tree.")


def _takes_matrix(model: Any, signature: Signature) -> bool:
    """Whether ``model`` is a plain scikit-learn estimator fitted on exactly the
    signature's numeric columns, in order (see ``_MATRIX_MODULES``)."""
    module = type(model).__module__ + "."
    if not module.startswith(_MATRIX_MODULES):
        return False
    if not all(spec.dtype in NUMERIC for spec in signature.columns):
        return False
    fitted = getattr(model, "feature_names_in_", None)
    return fitted is not None and [str(n) for n in fitted] == signature.names


class NativeRuntime:
    """The model as users call it: its flavor's ``scores`` on a frame built from the arrays.

    A plain scikit-learn estimator fitted on the signature's numeric columns (a gradient
    boosting model or a random forest) gets the float64 matrix instead, which it would make
    of the frame first anyway: the same call KServe's scikit-learn server makes, without
    the frame's cost (a few hundred microseconds a call). The matrix goes to a shallow copy
    of the estimator without ``feature_names_in_`` (the fitted trees are shared, not
    copied), so scikit-learn has no names to compare and no reason to warn ("X does not
    have valid feature names"): no warning filter is installed (one would be process-wide,
    a per-call ``warnings.catch_warnings`` is not thread-safe) and the caller's own model
    is untouched. The columns were checked against the signature, which holds the names
    the model was fitted with, in order.
    """

    def __init__(
        self,
        model: Any,
        signature: Signature,
        scores: Callable[[Any, Any], np.ndarray],
        *,
        name: str = "native",
    ) -> None:
        self.name = name
        self.model = model
        self.signature = signature
        self._scores = scores
        self._matrix = _takes_matrix(model, signature)
        if self._matrix:
            unnamed = copy.copy(model)  # shares the fitted arrays
            del unnamed.feature_names_in_  # present: _takes_matrix compared it
            method = "predict_proba" if hasattr(model, "predict_proba") else "predict"
            self._method = getattr(unnamed, method)

    def scores(self, inputs: Inputs) -> np.ndarray:
        if self._matrix and inputs.matrix is not None:
            out = self._method(inputs.matrix)
            return np.asarray(out, dtype=np.float64).reshape(inputs.rows, -1)
        frame = inputs.to_frame(self.signature)
        return np.asarray(self._scores(self.model, frame), dtype=np.float64).reshape(
            inputs.rows, -1
        )


class LightGBMBoosterRuntime:
    """LightGBM's own ``Booster.predict`` on the numeric matrix, one thread: no wrapper."""

    name = "lightgbm-booster"

    def __init__(self, booster: Any, *, classification: bool) -> None:
        self.booster = booster
        self.classification = classification

    def scores(self, inputs: Inputs) -> np.ndarray:
        out = self.booster.predict(inputs.numeric(np.float64), num_threads=1)
        return _as_scores(out, inputs.rows, classification=self.classification)


class XGBoostInplaceRuntime:
    """XGBoost's ``Booster.inplace_predict`` on the numeric matrix, one thread."""

    name = "xgboost-inplace"

    def __init__(self, booster: Any, *, classification: bool) -> None:
        booster.set_param({"nthread": 1})
        self.booster = booster
        self.classification = classification

    def scores(self, inputs: Inputs) -> np.ndarray:
        out = self.booster.inplace_predict(inputs.numeric(np.float64))
        return _as_scores(out, inputs.rows, classification=self.classification)


def lightgbm_booster(model: Any) -> Any:
    """The ``lightgbm.Booster`` inside a wrapper (scikit-learn's or the flavor's), or ``model``."""
    for attr in ("booster_", "booster"):
        inner = getattr(model, attr, None)
        if inner is not None and type(inner).__name__ == "Booster":
            return inner
    return model


def xgboost_booster(model: Any) -> Any:
    """The ``xgboost.Booster`` inside a wrapper (scikit-learn's or the flavor's), or ``model``."""
    if hasattr(model, "get_booster"):
        return model.get_booster()
    inner = getattr(model, "booster", None)
    return inner if inner is not None and type(inner).__name__ == "Booster" else model


def native_fast_paths(
    model: Any, signature: Signature, *, flavor: str, classification: bool
) -> list[Runtime]:
    """The native library's own fast entry points for ``model``, where it has them.

    They take the numeric matrix, so a signature with text or category columns has none.
    """
    if not all(spec.dtype in NUMERIC for spec in signature.columns):
        return []
    if flavor == "lightgbm":
        return [LightGBMBoosterRuntime(lightgbm_booster(model), classification=classification)]
    if flavor == "xgboost":
        return [XGBoostInplaceRuntime(xgboost_booster(model), classification=classification)]
    return []


_ORT_DTYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}


@dataclass(frozen=True)
class _Feed:
    """How one graph input is filled: the whole matrix, or one column as ``(rows, 1)``."""

    input: str
    dtype: Any
    column: int | None  # None: the numeric matrix


class OnnxRuntime:
    """An ONNX graph in onnxruntime, configured for serving (see ``serving_session_options``).

    The graph takes either one numeric matrix (its single input is not a signature column)
    or one ``(rows, 1)`` input per signature column, named after it, in the dtype the
    converter declared: feeds are cast from the arrays, never through pandas.
    """

    def __init__(
        self,
        model: bytes | str | Path,
        names: Sequence[str],
        *,
        classification: bool,
        name: str = "onnxruntime",
    ) -> None:
        source = str(model) if isinstance(model, Path) else model  # by path: side .data files
        self.name = name
        self.classification = classification
        self.session = open_session(source)
        self._feeds = self._plan(list(names))
        self._output = self._pick_output()

    def _plan(self, names: list[str]) -> list[_Feed]:
        graph_inputs = self.session.get_inputs()
        for graph_input in graph_inputs:
            if graph_input.type not in _ORT_DTYPES:
                raise ModelError(
                    f"The ONNX graph's input {graph_input.name!r} is a {graph_input.type}; "
                    f"expected one of {', '.join(_ORT_DTYPES)}"
                )
        if len(graph_inputs) == 1 and graph_inputs[0].name not in names:
            only = graph_inputs[0]
            return [_Feed(only.name, _ORT_DTYPES[only.type], None)]
        feeds = []
        for graph_input in graph_inputs:
            if graph_input.name not in names:
                raise ModelError(
                    f"The ONNX graph takes an input {graph_input.name!r} that is not in the "
                    f"signature ({', '.join(names)})"
                )
            feeds.append(
                _Feed(
                    graph_input.name, _ORT_DTYPES[graph_input.type], names.index(graph_input.name)
                )
            )
        return feeds

    def _pick_output(self) -> str:
        outputs = self.session.get_outputs()
        for output in outputs:
            if not output.type.startswith("tensor("):
                raise ModelError(
                    f"The ONNX graph's output {output.name!r} is a {output.type}; export "
                    "classifiers with zipmap=False"
                )
        names = [str(o.name) for o in outputs]
        if not self.classification:
            return names[0]
        if "probabilities" in names:
            return "probabilities"
        floats = [str(o.name) for o in outputs if o.type in ("tensor(float)", "tensor(double)")]
        return floats[-1] if floats else names[-1]

    def _feed(self, inputs: Inputs) -> dict[str, np.ndarray]:
        feed = {}
        for spec in self._feeds:
            if spec.column is None:
                feed[spec.input] = inputs.numeric(spec.dtype)
            else:
                values = inputs.columns[spec.column].reshape(-1, 1)
                feed[spec.input] = values.astype(spec.dtype, copy=False)
        return feed

    def scores(self, inputs: Inputs) -> np.ndarray:
        (out,) = self.session.run([self._output], self._feed(inputs))
        return _as_scores(out, inputs.rows, classification=self.classification)


def open_graph_runtime(
    manifest: Any, artifacts: Any, *, choice: ServingRuntime = "auto"
) -> Runtime | None:
    """The serving runtime, when the manifest names a recorded graph (ONNX), else None.

    Only the graph file is read (the store checks it against the manifest's hash): the
    native model is neither read nor deserialized, so a process that scores with the
    graph never imports the model's library (for scikit-learn and skops, seconds of
    start-up). ``manifest`` is a verified ``Manifest``.
    """
    signature = manifest.signature
    name = manifest.serving_runtime
    if choice == "native" or name == "native" or signature is None:
        return None
    result = {r.name: r for r in manifest.runtimes}.get(name)
    if result is None or not result.file:
        return None
    entry = manifest.file(result.file)
    graph = artifacts.get_bytes(entry.sha256, name=entry.path)
    classification = manifest.task == "classification"
    return OnnxRuntime(graph, signature.names, classification=classification, name=name)


def open_serving_runtime(
    packaged: Any, artifacts: Any, *, choice: ServingRuntime = "auto"
) -> Runtime:
    """The runtime a loaded package's manifest names as its serving runtime.

    ``packaged`` is a verified ``PackagedModel``; an ONNX graph is read (and verified)
    from ``artifacts``, a native fast path is built from the loaded model, and a package
    that was never optimized serves natively. ``choice="native"`` serves the logged
    model itself whatever the manifest names (``serving.runtime``).
    """
    manifest = packaged.manifest
    signature = manifest.signature
    name = manifest.serving_runtime
    if choice == "native" or name == "native" or signature is None:
        return NativeRuntime(packaged.native, signature, packaged.flavor.scores)
    classification = manifest.task == "classification"
    graph_runtime = open_graph_runtime(manifest, artifacts, choice=choice)
    if graph_runtime is not None:
        return graph_runtime
    for fast in native_fast_paths(
        packaged.native, signature, flavor=manifest.flavor, classification=classification
    ):
        if fast.name == name:
            return fast
    raise ModelError(
        f"The package names {name!r} as its serving runtime, but no such runtime can be "
        "built here; re-run `modelyard models optimize`"
    )
