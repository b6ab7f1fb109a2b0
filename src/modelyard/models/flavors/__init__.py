"""The flavors a package can hold, looked up by model or by name."""

from __future__ import annotations

from typing import Any

from modelyard.errors import InvalidInputError
from modelyard.models.flavors.base import Flavor, LoadOptions, SavedModel
from modelyard.models.flavors.custom import CustomFlavor, PythonModel
from modelyard.models.flavors.lightgbm import LightGBMFlavor
from modelyard.models.flavors.onnx import OnnxFlavor
from modelyard.models.flavors.sklearn import SklearnFlavor
from modelyard.models.flavors.torch import TorchFlavor
from modelyard.models.flavors.xgboost import XGBoostFlavor

__all__ = [
    "FLAVORS",
    "Flavor",
    "LoadOptions",
    "PythonModel",
    "SavedModel",
    "flavor_for",
    "get_flavor",
]

#: tried in order; the first whose ``handles`` says yes stores the model. The XGBoost and
#: LightGBM wrappers look like scikit-learn estimators, so they come before it. No flavor
#: module imports its library until it saves or loads a model.
FLAVORS: tuple[Flavor, ...] = (
    XGBoostFlavor(),
    LightGBMFlavor(),
    SklearnFlavor(),
    TorchFlavor(),
    OnnxFlavor(),
    CustomFlavor(),
)


def get_flavor(name: str) -> Flavor:
    for flavor in FLAVORS:
        if flavor.name == name:
            return flavor
    known = ", ".join(f.name for f in FLAVORS)
    raise InvalidInputError(f"Unknown flavor {name!r}; known flavors: {known}", loc="flavor")


def flavor_for(model: Any) -> Flavor:
    for flavor in FLAVORS:
        if flavor.handles(model):
            return flavor
    known = ", ".join(f.name for f in FLAVORS)
    raise InvalidInputError(
        f"No flavor stores a {type(model).__module__}.{type(model).__qualname__}; "
        f"known flavors: {known}",
        loc="model",
    )
