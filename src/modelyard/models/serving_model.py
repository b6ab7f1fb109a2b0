"""A package's serving runtime for in-process use: ``load_model(ref, runtime="serving")``.

The server answers with the runtime ``models optimize`` chose (onnxruntime where it
passed parity, a native library's fast path, else the model itself), far faster per row
than the native model on a pandas frame. :class:`ServingModel` gives Python code that same
runtime, opened by :func:`~modelyard.models.runtimes.open_serving_runtime` exactly as the
server opens it, behind the same checks as the native load path: every frame is checked
against the package's signature (missing or extra columns, types, nulls), and the runtime
is checked once, when opened, against the native scores stored with the package's
held-out rows (``SERVING_PARITY_ATOL``, the server's warm-up tolerance).

``predict_proba`` returns class probabilities in the order of the native model's
``classes_``; ``predict`` the class with the highest probability (a classifier) or the
prediction (a regressor). Probabilities equal the native model's within the tolerance
the package was verified with; a label can only differ where the native probabilities of
two classes are within that tolerance of each other.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelyard.errors import InvalidInputError, ModelError
from modelyard.models.manifest import Manifest
from modelyard.models.package import PackagedModel, read_holdout
from modelyard.models.runtimes import Runtime, build_inputs, open_serving_runtime
from modelyard.models.signature import Signature
from modelyard.store.artifacts import ArtifactStore

__all__ = ["SERVING_PARITY_ATOL", "ServingModel", "check_parity", "open_serving_model"]

#: the serving runtime's scores may differ from the native ones by this much (the server's
#: warm-up check uses the same number)
SERVING_PARITY_ATOL = 1e-4
_CHECK_ROWS = 64


class ServingModel:
    """A verified package's serving runtime, with the native load path's signature checks."""

    def __init__(self, packaged: PackagedModel, runtime: Runtime) -> None:
        if packaged.manifest.signature is None:
            raise InvalidInputError(
                "The package has no input signature, so inputs cannot be checked for its "
                "serving runtime; load it natively (runtime='native')",
                loc="signature",
            )
        self.packaged = packaged
        self.runtime = runtime
        self.signature: Signature = packaged.manifest.signature
        native_classes = getattr(packaged.native, "classes_", None)
        classes = native_classes if native_classes is not None else packaged.manifest.classes
        self.classes: np.ndarray | None = None if classes is None else np.asarray(classes)

    def __repr__(self) -> str:
        model = self.manifest.model_class
        return f"ServingModel({model}, runtime={self.runtime.name}, id={self.id[:12]})"

    @property
    def id(self) -> str:
        return self.packaged.id

    @property
    def manifest(self) -> Manifest:
        return self.packaged.manifest

    @property
    def runtime_name(self) -> str:
        return self.runtime.name

    def scores(self, data: Any) -> np.ndarray:
        """Class probabilities (classifiers) or predictions as a 2-d float64 array."""
        frame = self.packaged._frame(data)  # the signature check of the native path
        with np.errstate(all="ignore"):  # overflow inside a model is a value, as served
            return self.runtime.scores(build_inputs(self.signature, frame))

    def predict_proba(self, data: Any) -> np.ndarray:
        """Class probabilities, one column per class in ``classes`` order."""
        if self.manifest.task != "classification":
            raise ModelError(f"{self.manifest.model_class} is not a classifier: use predict()")
        return self.scores(data)

    def predict(self, data: Any) -> np.ndarray:
        """The class of highest probability (a classifier) or the prediction (a regressor)."""
        scores = self.scores(data)
        if self.manifest.task == "classification" and self.classes is not None:
            return np.asarray(self.classes[scores.argmax(axis=1)])
        return scores[:, 0] if scores.shape[1] == 1 else scores


def check_parity(
    runtime: str, got: np.ndarray, expected: np.ndarray, *, where: str, refusal: str
) -> None:
    """Raise :class:`ModelError` unless ``got`` equals the recorded native ``expected``
    scores within :data:`SERVING_PARITY_ATOL` (a NaN matches only a NaN); ``refusal``
    ends the message (what the caller does instead). The server's warm-up, batch scoring
    and ``load_model(runtime="serving")`` all check with it.
    """
    if got.shape != expected.shape:
        raise ModelError(
            f"{where}: the serving runtime {runtime!r} returned scores of shape "
            f"{got.shape}, the package recorded {expected.shape}; {refusal}"
        )
    same = (got == expected) | (np.isnan(got) & np.isnan(expected))
    diff = float(np.where(same, 0.0, np.abs(got - expected)).max()) if got.size else 0.0
    if not diff <= SERVING_PARITY_ATOL:
        raise ModelError(
            f"{where}: the serving runtime {runtime!r} differs from the native model "
            f"by {diff:.3g} on the held-out rows (allowed {SERVING_PARITY_ATOL}); {refusal}"
        )


def open_serving_model(
    packaged: PackagedModel, artifacts: ArtifactStore, *, where: str = "the package"
) -> ServingModel:
    """The serving runtime of a verified package, checked against its held-out rows."""
    runtime = open_serving_runtime(packaged, artifacts)
    model = ServingModel(packaged, runtime)
    if packaged.manifest.holdout is not None:
        frame, expected = read_holdout(artifacts, packaged.manifest)
        frame, expected = frame.head(_CHECK_ROWS), expected[:_CHECK_ROWS]
        check_parity(
            runtime.name,
            model.scores(frame),
            expected,
            where=where,
            refusal="load it natively (runtime='native') or re-run `modelyard models optimize`",
        )
    return model
