"""Small pieces the flavors share: class names without imports, side files, class labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.errors import InvalidInputError

__all__ = [
    "class_names",
    "label_of_largest",
    "labels_of",
    "normalized",
    "read_side_file",
    "restore_labels",
    "two_columns",
    "write_side_file",
]


def class_names(model: Any) -> set[str]:
    """``module.qualname`` of every class ``model`` is an instance of, imported or not.

    Lets a flavor recognise its models without importing their (heavy) library.
    """
    return {f"{cls.__module__}.{cls.__qualname__}" for cls in type(model).__mro__}


def write_side_file(folder: Path, name: str, data: dict[str, Any]) -> str:
    (folder / name).write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
    return name


def read_side_file(folder: Path, name: str) -> dict[str, Any]:
    try:
        data = json.loads((folder / name).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"The package's {name} is unreadable: {exc}", loc=name) from exc
    if not isinstance(data, dict):
        raise InvalidInputError(f"Expected a JSON object in {name}, got {data!r:.80}", loc=name)
    return data


def labels_of(classes: Any) -> list[Any]:
    """Class labels as JSON values (``numpy.int64(3)`` becomes ``3``), in their order."""
    values = np.asarray(classes).tolist()
    for value in values:
        if not isinstance(value, str | int | float | bool):
            raise InvalidInputError(
                f"Expected class labels that are strings or numbers, got {value!r} "
                f"({type(value).__name__})",
                loc="classes_",
            )
    return list(values)


def restore_labels(values: list[Any]) -> np.ndarray:
    """The labels ``labels_of`` wrote, back as the array the estimator had."""
    return np.asarray(values)


def label_of_largest(classes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The class with the largest score in each row (the first one on ties, like sklearn)."""
    return np.asarray(classes[np.argmax(scores, axis=1)])


def two_columns(positive: np.ndarray) -> np.ndarray:
    """Binary probabilities ``[1 - p, p]`` from ``p``, as scikit-learn wrappers build them."""
    return np.vstack((1.0 - positive, positive)).transpose()


def normalized(importance: dict[str, float]) -> dict[str, float] | None:
    """Importances scaled to sum to 1 (``None`` when the model has none)."""
    total = sum(importance.values())
    if not importance or total <= 0:
        return None
    return {name: value / total for name, value in importance.items()}
