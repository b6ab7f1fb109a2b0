"""ONNX models, stored as they are and run in onnxruntime with one thread.

The model is an ``onnx.ModelProto``, the bytes of one, or the path of an ``.onnx`` file
(a side ``.onnx.data`` file of external weights is folded into the stored model).

Inputs are built from the frame, its columns in signature order: one tensor of all
columns when the graph takes one input, else one ``(rows, 1)`` tensor per column
(matched by name when the graph's input names are the columns, else by position),
each of the dtype the graph declares. The session is pinned to one thread, runs
sequentially and does not spin (``session.intra_op.allow_spinning=0``): a server runs
one session per worker. Classifiers are found by their ``classlabels_*`` attributes;
scores read the probability tensor (export with ``zipmap=False``; a ZipMap output is
converted, slower).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.errors import InvalidInputError, MissingExtraError, ModelError
from modelyard.models.flavors._common import class_names, label_of_largest
from modelyard.models.flavors.base import LoadOptions, SavedModel
from modelyard.models.onnx_session import onnxruntime_module, open_session, serving_session_options

__all__ = ["OnnxFlavor", "OnnxModel", "session_options"]

MODEL_FILE = "model.onnx"
PROTO = "onnx.onnx_ml_pb2.ModelProto"
_DTYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise MissingExtraError("ONNX models", "onnx") from exc
    return onnx


def session_options() -> Any:
    """onnxruntime options for serving: the same as every serving runtime uses."""
    return serving_session_options()


def _session(source: str | bytes) -> Any:
    onnxruntime_module()  # a clear MissingExtraError when onnxruntime is absent
    try:
        return open_session(source)
    except Exception as exc:  # onnxruntime raises its own untyped errors for a bad graph
        raise ModelError(f"onnxruntime cannot load the ONNX model: {exc}") from exc


def _class_labels(proto: Any) -> list[Any] | None:
    """The labels of the graph's classifier node (``classlabels_strings``/``_int64s``)."""
    onnx = _onnx()
    for node in proto.graph.node:
        for attribute in node.attribute:
            if attribute.name in ("classlabels_strings", "classlabels_int64s"):
                values = onnx.helper.get_attribute_value(attribute)
                return [v.decode() if isinstance(v, bytes) else int(v) for v in values]
    return None


class OnnxModel:
    """An onnxruntime session fed from frames, with ``predict`` and ``predict_proba``."""

    def __init__(self, session: Any, classes: list[Any] | None, model: bytes) -> None:
        self.session = session
        #: the serialized graph, kept so a loaded model can be packaged again
        self.model = model
        self.inputs = list(session.get_inputs())
        self.outputs = list(session.get_outputs())
        self.classes_ = None if classes is None else np.asarray(classes)
        self.probabilities = _find_output(self.outputs, "prob")
        self.label = _find_output(self.outputs, "label")

    def __repr__(self) -> str:
        return f"OnnxModel(inputs={[i.name for i in self.inputs]})"

    @property
    def classifies(self) -> bool:
        return self.classes_ is not None and self.probabilities is not None

    def feeds(self, features: Any) -> dict[str, np.ndarray]:
        """The graph's inputs built from ``features`` (a frame, or an array for one input)."""
        if len(self.inputs) == 1:
            spec = self.inputs[0]
            values = _as_dtype(np.asarray(features), spec)
            return {spec.name: values if len(spec.shape) != 1 else values.reshape(-1)}
        columns = [str(c) for c in getattr(features, "columns", [])]
        if len(columns) != len(self.inputs):
            raise InvalidInputError(
                f"The ONNX graph takes {len(self.inputs)} inputs "
                f"({', '.join(i.name for i in self.inputs)}), got {len(columns)} columns",
                loc="inputs",
            )
        names = [i.name for i in self.inputs]
        order = names if set(names) == set(columns) else columns
        feeds = {}
        for spec, column in zip(self.inputs, order, strict=True):
            values = _as_dtype(features[column].to_numpy(), spec)
            feeds[spec.name] = values.reshape(-1) if len(spec.shape) == 1 else values.reshape(-1, 1)
        return feeds

    def run(self, output: Any, features: Any) -> Any:
        return self.session.run([output.name], self.feeds(features))[0]

    def predict_proba(self, features: Any) -> np.ndarray:
        if self.probabilities is None:
            raise InvalidInputError("The ONNX graph has no probability output", loc="outputs")
        result = self.run(self.probabilities, features)
        if self.probabilities.type.startswith("seq(map"):  # ZipMap: one dict per row
            keys = list(self.classes_) if self.classes_ is not None else list(result[0])
            return np.asarray([[row[k] for k in keys] for row in result], dtype=np.float64)
        return np.asarray(result)

    def predict(self, features: Any) -> np.ndarray:
        if self.label is not None:
            return np.asarray(self.run(self.label, features)).reshape(-1)
        if self.classes_ is not None and self.probabilities is not None:
            return label_of_largest(self.classes_, self.predict_proba(features))
        output = np.asarray(self.run(self.outputs[0], features))
        return output.reshape(-1) if output.ndim == 2 and output.shape[1] == 1 else output


def _open(data: bytes) -> OnnxModel:
    classes = _class_labels(_onnx().load_model_from_string(data))
    return OnnxModel(_session(data), classes, data)


def _find_output(outputs: list[Any], word: str) -> Any:
    """The first output whose name holds ``word``, tensors before ZipMap sequences."""
    named = [o for o in outputs if word in o.name.lower()]
    tensors = [o for o in named if o.type.startswith("tensor(")]
    return (tensors or named or [None])[0]


def _as_dtype(values: np.ndarray, spec: Any) -> np.ndarray:
    dtype = _DTYPES.get(spec.type)
    if dtype is None:
        raise InvalidInputError(
            f"The ONNX input {spec.name!r} has type {spec.type}; modelyard feeds "
            f"{', '.join(_DTYPES)}",
            loc=spec.name,
        )
    if dtype is np.object_:
        return np.asarray([str(v) for v in values.reshape(-1)], dtype=object).reshape(values.shape)
    return np.ascontiguousarray(values, dtype=dtype)


class OnnxFlavor:
    name = "onnx"
    requirements = ("onnx", "onnxruntime")

    def handles(self, model: Any) -> bool:
        if isinstance(model, OnnxModel | bytes | bytearray) or PROTO in class_names(model):
            return True
        return isinstance(model, str | os.PathLike) and str(model).endswith(".onnx")

    def _bytes(self, model: Any) -> bytes:
        onnx = _onnx()
        if isinstance(model, OnnxModel):
            return model.model
        if isinstance(model, bytes | bytearray):
            data = bytes(model)
            try:
                proto = onnx.load_model_from_string(data)
            except Exception as exc:  # protobuf's DecodeError; any failure means not ONNX
                raise InvalidInputError(
                    f"Expected the bytes of an ONNX model, got bytes that do not parse: {exc}",
                    loc="model",
                ) from exc
            if not proto.graph.node:
                raise InvalidInputError(
                    "Expected the bytes of an ONNX model, got one with an empty graph",
                    loc="model",
                )
            return data
        if isinstance(model, str | os.PathLike):
            path = Path(model)
            if not path.is_file():
                raise InvalidInputError(f"No ONNX file at {path}", loc="model")
            # onnx.load folds a side .onnx.data file of external weights into the model
            return bytes(onnx.load(str(path)).SerializeToString())
        return bytes(model.SerializeToString())

    def _model(self, model: Any) -> OnnxModel:
        if isinstance(model, OnnxModel):
            return model
        return _open(self._bytes(model))

    def save(self, model: Any, folder: Path, feature_names: list[str]) -> SavedModel:
        data = self._bytes(model)
        (folder / MODEL_FILE).write_bytes(data)
        view = _open(data)
        width = [d for d in (view.outputs[0].shape or [None, 1])[1:] if isinstance(d, int)]
        if view.classifies:
            task = "classification"
        else:
            task = "regression" if width in ([], [1]) else "other"
        return SavedModel(
            model_file=MODEL_FILE,
            model_class=PROTO,
            task=task,
            classes=(
                [str(c) for c in view.classes_]
                if view.classifies and view.classes_ is not None
                else None
            ),
        )

    def load(self, folder: Path, saved: SavedModel, options: LoadOptions) -> Any:
        return _open((folder / saved.model_file).read_bytes())

    def scores(self, model: Any, features: Any) -> np.ndarray:
        view = self._model(model)
        if view.classifies:
            return np.asarray(view.predict_proba(features), dtype=np.float64)
        output = np.asarray(view.run(view.outputs[0], features), dtype=np.float64)
        return output.reshape(len(output), -1)
