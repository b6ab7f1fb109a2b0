"""Custom models written in Python: code, so a package holding one loads only when trusted.

Subclass :class:`PythonModel` in an importable module (not ``__main__``, not inside a
function), implement ``predict(frame)`` and optionally ``predict_proba(frame)`` with a
``classes_`` attribute. The package stores no code and no pickle: ``model.json`` names
the class by module and qualified name and holds the JSON state ``get_state()``
returns; loading imports the module and calls ``from_state``. Importing a module runs
it, hence the trust: ``models.trust_code: true`` in ``modelyard.yaml``, or
``load(..., trust=True)``.

>>> class Threshold(PythonModel):
...     def __init__(self, cut: float) -> None:
...         self.cut = cut
...     def predict(self, frame):
...         return (frame["x"] > self.cut).to_numpy()
>>> model = Threshold(0.5)
>>> model.get_state()
{'cut': 0.5}
>>> Threshold.from_state({"cut": 2.0}).cut
2.0
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.errors import InvalidInputError, ModelError
from modelyard.models.flavors.base import LoadOptions, SavedModel

__all__ = ["CustomFlavor", "PythonModel"]

MODEL_FILE = "model.json"


class PythonModel:
    """Base of custom models: ``predict`` on a frame, state as a JSON-able dict."""

    def predict(self, frame: Any) -> Any:
        """Predictions for ``frame``, a DataFrame with the signature's columns in order."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement predict(frame)")

    def get_state(self) -> dict[str, Any]:
        """What ``from_state`` needs to rebuild the model; JSON values only.

        The default is the instance's attributes; override it for any that JSON cannot
        hold (arrays: ``.tolist()``).
        """
        return dict(vars(self))

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PythonModel:
        """The model ``get_state`` described; the default sets the attributes back."""
        model = cls.__new__(cls)
        vars(model).update(state)
        return model


def _locate(module_name: str, qualname: str) -> type[PythonModel]:
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ModelError(
            f"Cannot import the custom model class {module_name}.{qualname}: {exc}. "
            "Install the code that defines it where the model loads."
        ) from exc
    if not (isinstance(target, type) and issubclass(target, PythonModel)):
        raise InvalidInputError(
            f"Expected {module_name}.{qualname} to be a PythonModel subclass, got {target!r}",
            loc="class",
        )
    return target


class CustomFlavor:
    name = "custom"
    requirements: tuple[str, ...] = ()

    def handles(self, model: Any) -> bool:
        return isinstance(model, PythonModel)

    def save(self, model: Any, folder: Path, feature_names: list[str]) -> SavedModel:
        cls = type(model)
        where = f"{cls.__module__}.{cls.__qualname__}"
        if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
            raise InvalidInputError(
                f"Expected a class importable by name, got {where}: define it at the top "
                "level of a module (not in __main__ or a function) so the package can name it",
                loc="model",
            )
        if _locate(cls.__module__, cls.__qualname__) is not cls:
            raise InvalidInputError(
                f"Importing {where} gives a different class than the model's", loc="model"
            )
        state = model.get_state()
        try:
            encoded = json.dumps(
                {"module": cls.__module__, "class": cls.__qualname__, "state": state},
                sort_keys=True,
                allow_nan=False,
            )
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"Expected get_state() of {where} to return JSON values, got {exc}",
                loc="get_state",
            ) from exc
        (folder / MODEL_FILE).write_text(encoded, encoding="utf-8")
        classes = getattr(model, "classes_", None)
        classifies = classes is not None and hasattr(model, "predict_proba")
        return SavedModel(
            model_file=MODEL_FILE,
            model_class=where,
            task="classification" if classifies else "other",
            classes=[str(c) for c in np.asarray(classes).tolist()] if classifies else None,
            needs_trust=True,
        )

    def load(self, folder: Path, saved: SavedModel, options: LoadOptions) -> Any:
        if not options.trust_code:
            raise InvalidInputError(
                f"The package holds Python code ({saved.model_class}); it loads only when the "
                "project trusts code (models.trust_code: true) or the load passes trust=True",
                loc="models.trust_code",
            )
        data = json.loads((folder / saved.model_file).read_text(encoding="utf-8"))
        cls = _locate(data["module"], data["class"])
        return cls.from_state(data["state"])

    def scores(self, model: Any, features: Any) -> np.ndarray:
        if hasattr(model, "predict_proba"):
            return np.asarray(model.predict_proba(features), dtype=np.float64)
        return np.asarray(model.predict(features), dtype=np.float64).reshape(len(features), -1)
