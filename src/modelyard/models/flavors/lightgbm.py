"""LightGBM models (``LGBMClassifier``, ``LGBMRegressor``, ``Booster``) in LightGBM's text format.

No pickle: the Booster's ``save_model`` writes trees, parameters and the pandas
categories as text; the class labels of a classifier go in a JSON side file.

A package always loads as :class:`LightGBMModel`, a Booster with the scikit-learn
wrapper's ``predict``/``predict_proba``: the wrapper costs 20-30x the Booster on one
row (input validation), and gives the same numbers. A raw Booster with a ``binary``
or ``multiclass`` objective loads as a classifier of the labels ``0 .. k-1``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from modelyard.errors import MissingExtraError
from modelyard.models.flavors._common import (
    class_names,
    label_of_largest,
    labels_of,
    normalized,
    read_side_file,
    restore_labels,
    two_columns,
    write_side_file,
)
from modelyard.models.flavors.base import LoadOptions, SavedModel

__all__ = ["LightGBMFlavor", "LightGBMModel"]

MODEL_FILE = "model.txt"
META_FILE = "lightgbm.json"
BOOSTER = "lightgbm.basic.Booster"


def _lightgbm() -> Any:
    try:
        import lightgbm
    except ImportError as exc:
        raise MissingExtraError("LightGBM models", "lightgbm") from exc
    return lightgbm


def _header(model_text: str) -> dict[str, str]:
    """The ``key=value`` lines before the first tree of a LightGBM model text."""
    header = {}
    for line in model_text.splitlines():
        if line.startswith("Tree="):
            break
        key, sep, value = line.partition("=")
        if sep:
            header[key] = value
    return header


def _booster_classes(model_text: str) -> np.ndarray | None:
    """Labels ``0 .. k-1`` for a Booster trained with a classification objective."""
    header = _header(model_text)
    objective = header.get("objective", "").split(" ")[0]
    if objective == "binary":
        return np.arange(2)
    if objective in ("multiclass", "multiclassova"):
        return np.arange(int(header.get("num_class", "1")))
    return None


class LightGBMModel:
    """A LightGBM Booster that predicts like the scikit-learn wrapper it may have come from."""

    def __init__(self, booster: Any, classes: np.ndarray | None) -> None:
        self.booster = booster
        self.classes_ = classes

    def __repr__(self) -> str:
        kind = "regressor" if self.classes_ is None else f"{len(self.classes_)} classes"
        return f"LightGBMModel({kind})"

    def predict_proba(self, features: Any) -> np.ndarray:
        output = np.asarray(self.booster.predict(features))
        return two_columns(output) if output.ndim == 1 else output

    def predict(self, features: Any) -> np.ndarray:
        if self.classes_ is None:
            return np.asarray(self.booster.predict(features))
        return label_of_largest(self.classes_, self.predict_proba(features))


class LightGBMFlavor:
    name = "lightgbm"
    requirements = ("lightgbm",)

    def handles(self, model: Any) -> bool:
        if isinstance(model, LightGBMModel):  # a loaded package, logged again
            return True
        names = class_names(model)
        return "lightgbm.sklearn.LGBMModel" in names or BOOSTER in names

    @staticmethod
    def _as_model(model: Any) -> LightGBMModel:
        if isinstance(model, LightGBMModel):
            return model
        if BOOSTER in class_names(model):
            return LightGBMModel(model, _booster_classes(model.model_to_string()))
        classes = getattr(model, "classes_", None) if hasattr(model, "predict_proba") else None
        return LightGBMModel(model.booster_, classes)

    def save(self, model: Any, folder: Path, feature_names: list[str]) -> SavedModel:
        _lightgbm()
        view = self._as_model(model)
        view.booster.save_model(str(folder / MODEL_FILE))
        classes = view.classes_
        write_side_file(
            folder, META_FILE, {"classes": None if classes is None else labels_of(classes)}
        )
        gain = view.booster.feature_importance(importance_type="gain")
        return SavedModel(
            model_file=MODEL_FILE,
            model_class=f"{type(model).__module__}.{type(model).__qualname__}",
            task="regression" if classes is None else "classification",
            classes=None if classes is None else [str(c) for c in classes],
            feature_importance=(
                normalized({n: float(v) for n, v in zip(feature_names, gain, strict=True)})
                if len(gain) == len(feature_names)
                else None
            ),
            extra_files=[META_FILE],
        )

    def load(self, folder: Path, saved: SavedModel, options: LoadOptions) -> Any:
        lightgbm = _lightgbm()
        meta = read_side_file(folder, META_FILE)
        booster = lightgbm.Booster(model_file=str(folder / saved.model_file))
        classes = meta.get("classes")
        return LightGBMModel(booster, None if classes is None else restore_labels(classes))

    def scores(self, model: Any, features: Any) -> np.ndarray:
        view = self._as_model(model)
        if view.classes_ is not None:
            return np.asarray(view.predict_proba(features), dtype=np.float64)
        return np.asarray(view.booster.predict(features), dtype=np.float64).reshape(
            len(features), -1
        )
