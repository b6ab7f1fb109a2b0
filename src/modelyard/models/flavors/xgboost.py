"""XGBoost models (the scikit-learn wrappers and raw Boosters) in XGBoost's own UBJSON format.

No pickle: ``save_model("model.ubj")`` writes the trees and, for a wrapper, its
scikit-learn attributes. Loading builds the recorded wrapper class (one of
``MODEL_CLASSES``: the file never chooses what gets instantiated) and reads the file
back, so a loaded ``XGBClassifier`` predicts exactly what the logged one did.

A raw ``xgboost.Booster`` loads as :class:`XGBoostBooster`: ``predict`` gives labels
for ``binary:logistic`` and ``multi:softprob`` models, and the raw output otherwise.

Fast path, for the optimizer: ``runtimes.XGBoostInplaceRuntime`` calls ``Booster.inplace_predict``
on a float array whose columns are in signature order, without a DataFrame or a
DMatrix (~0.3 ms a row). Models trained with ``enable_categorical`` need the
DataFrame path (their categories live in the frame's dtype).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.errors import InvalidInputError, MissingExtraError
from modelyard.models.flavors._common import (
    class_names,
    label_of_largest,
    normalized,
    two_columns,
)
from modelyard.models.flavors.base import LoadOptions, SavedModel

__all__ = ["MODEL_CLASSES", "XGBoostBooster", "XGBoostFlavor"]

MODEL_FILE = "model.ubj"
BOOSTER = "xgboost.core.Booster"
#: the classes a package may name, and their name in the ``xgboost`` namespace
MODEL_CLASSES = {
    "xgboost.sklearn.XGBClassifier": "XGBClassifier",
    "xgboost.sklearn.XGBRegressor": "XGBRegressor",
    "xgboost.sklearn.XGBRFClassifier": "XGBRFClassifier",
    "xgboost.sklearn.XGBRFRegressor": "XGBRFRegressor",
    "xgboost.sklearn.XGBRanker": "XGBRanker",
    BOOSTER: "Booster",
}
#: objectives whose raw output is class probabilities
_PROBABILITY_OBJECTIVES = ("binary:logistic", "multi:softprob")


def _xgboost() -> Any:
    try:
        import xgboost
    except ImportError as exc:
        raise MissingExtraError("XGBoost models", "xgboost") from exc
    return xgboost


def _known_class(model: Any) -> str | None:
    """The first class of ``model``'s MRO that a package may name (subclasses save as it)."""
    for cls in type(model).__mro__:
        name = f"{cls.__module__}.{cls.__qualname__}"
        if name in MODEL_CLASSES:
            return name
    return None


def _objective(booster: Any) -> tuple[str, int]:
    learner = json.loads(booster.save_config())["learner"]
    classes = int(float(learner["learner_model_param"].get("num_class", "0")))
    return str(learner["objective"]["name"]), classes


class XGBoostBooster:
    """A raw ``xgboost.Booster`` with ``predict`` and, for classifiers, ``predict_proba``."""

    def __init__(self, booster: Any) -> None:
        self.booster = booster
        objective, num_class = _objective(booster)
        self.objective = objective
        self.classes_: np.ndarray | None = None
        if objective == "binary:logistic":
            self.classes_ = np.arange(2)
        elif objective == "multi:softprob":
            self.classes_ = np.arange(num_class)

    def __repr__(self) -> str:
        return f"XGBoostBooster(objective={self.objective!r})"

    def raw(self, features: Any) -> np.ndarray:
        return np.asarray(self.booster.inplace_predict(features))

    def predict_proba(self, features: Any) -> np.ndarray:
        if self.classes_ is None:
            raise InvalidInputError(
                f"This booster's objective {self.objective!r} gives no class probabilities",
                loc="objective",
            )
        output = self.raw(features)
        return two_columns(output) if output.ndim == 1 else output

    def predict(self, features: Any) -> np.ndarray:
        if self.classes_ is None:
            return self.raw(features)
        return label_of_largest(self.classes_, self.predict_proba(features))


class XGBoostFlavor:
    name = "xgboost"
    requirements = ("xgboost", "scikit-learn")

    def handles(self, model: Any) -> bool:
        if isinstance(model, XGBoostBooster):  # a loaded package, logged again
            return True
        names = class_names(model)
        return "xgboost.sklearn.XGBModel" in names or BOOSTER in names

    @staticmethod
    def _classifies(model: Any) -> bool:
        if isinstance(model, XGBoostBooster):
            return model.classes_ is not None
        return hasattr(model, "predict_proba") and hasattr(model, "classes_")

    def save(self, model: Any, folder: Path, feature_names: list[str]) -> SavedModel:
        _xgboost()
        if isinstance(model, XGBoostBooster):
            model = model.booster
        model_class = _known_class(model)
        if model_class is None:
            raise InvalidInputError(
                f"Expected one of {', '.join(MODEL_CLASSES)}, got "
                f"{type(model).__module__}.{type(model).__qualname__}",
                loc="model",
            )
        model.save_model(str(folder / MODEL_FILE))
        booster = model if model_class == BOOSTER else model.get_booster()
        view = XGBoostBooster(booster) if model_class == BOOSTER else model
        classes = getattr(view, "classes_", None) if self._classifies(view) else None
        return SavedModel(
            model_file=MODEL_FILE,
            model_class=model_class,
            task="classification" if classes is not None else "regression",
            classes=None if classes is None else [str(c) for c in classes],
            feature_importance=_gain(booster, feature_names),
        )

    def load(self, folder: Path, saved: SavedModel, options: LoadOptions) -> Any:
        xgboost = _xgboost()
        short = MODEL_CLASSES.get(saved.model_class)
        if short is None:
            raise InvalidInputError(
                f"Expected one of {', '.join(MODEL_CLASSES)}, got {saved.model_class!r}",
                loc="model_class",
            )
        path = str(folder / saved.model_file)
        if saved.model_class == BOOSTER:
            return XGBoostBooster(xgboost.Booster(model_file=path))
        model = getattr(xgboost, short)()
        model.load_model(path)
        return model

    def scores(self, model: Any, features: Any) -> np.ndarray:
        if isinstance(model, XGBoostBooster) or BOOSTER in class_names(model):
            view = model if isinstance(model, XGBoostBooster) else XGBoostBooster(model)
            if view.classes_ is not None:
                return np.asarray(view.predict_proba(features), dtype=np.float64)
            return np.asarray(view.raw(features), dtype=np.float64).reshape(len(features), -1)
        if self._classifies(model):
            return np.asarray(model.predict_proba(features), dtype=np.float64)
        return np.asarray(model.predict(features), dtype=np.float64).reshape(len(features), -1)


def _gain(booster: Any, feature_names: list[str]) -> dict[str, float] | None:
    """Each feature's share of the average split gain (what ``feature_importances_`` shows)."""
    try:
        scores = booster.get_score(importance_type="gain")
    except ValueError:  # gblinear boosters have no splits
        return None
    names = booster.feature_names or [f"f{i}" for i in range(len(feature_names))]
    if len(names) != len(feature_names):
        return None
    by_position = dict(zip(names, feature_names, strict=True))
    return normalized({by_position[n]: float(scores.get(n, 0.0)) for n in names})
