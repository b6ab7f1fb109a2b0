"""scikit-learn estimators and Pipelines, stored with skops (never pickle).

skops refuses types it does not know; the project declares the types it trusts once,
in ``modelyard.yaml`` (``models.trusted_types``, prefixes), with a default that covers
scikit-learn's own types, NumPy and SciPy sparse matrices. Trusting a type is not
trusting its arrays: every tree a loaded model holds is checked first
(:mod:`modelyard.models.flavors.sklearn_trees`), whoever made the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from modelyard.errors import InvalidInputError, MissingExtraError
from modelyard.models.flavors.base import LoadOptions, SavedModel
from modelyard.models.flavors.sklearn_trees import check_tree_structures

__all__ = ["SklearnFlavor", "stored_types", "untrusted"]

MODEL_FILE = "model.skops"


def untrusted(found: list[str], trusted: tuple[str, ...]) -> list[str]:
    """The type names in ``found`` that no trusted prefix (or exact name) covers."""
    return [t for t in found if not any(t == p or t.startswith(p) for p in trusted)]


def stored_types(path: Path) -> list[str]:
    """Every type a skops file would instantiate, read from its schema without loading it.

    skops itself trusts scikit-learn's types; listing them all lets the project's
    allow-list decide, so a project can narrow what it loads.
    """
    import json
    import zipfile

    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("__module__"), str) and isinstance(node.get("__class__"), str):
                found.add(f"{node['__module__']}.{node['__class__']}")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    try:
        with zipfile.ZipFile(path) as archive:
            walk(json.loads(archive.read("schema.json")))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise InvalidInputError(
            f"{path.name} is not a skops file: {exc}", loc="model.skops"
        ) from exc
    return sorted(found)


#: plain containers and scalars that carry no behaviour of their own
_BUILTINS = tuple(
    f"builtins.{n}"
    for n in (
        "dict",
        "list",
        "tuple",
        "str",
        "int",
        "float",
        "bool",
        "NoneType",
        "slice",
        "set",
        "frozenset",
        "bytes",
        "complex",
    )
)


class SklearnFlavor:
    name = "sklearn"
    requirements = ("scikit-learn", "skops", "scipy")

    def handles(self, model: Any) -> bool:
        return type(model).__module__.split(".")[0] == "sklearn" and hasattr(model, "fit")

    def save(self, model: Any, folder: Path, feature_names: list[str]) -> SavedModel:
        try:
            import skops.io as sio
        except ImportError as exc:
            raise MissingExtraError("Saving scikit-learn models", "sklearn") from exc
        sio.dump(model, folder / MODEL_FILE)
        classes = getattr(model, "classes_", None)
        is_classifier = classes is not None and hasattr(model, "predict_proba")
        labels = [str(c) for c in classes] if classes is not None and is_classifier else None
        importance = getattr(model, "feature_importances_", None)
        return SavedModel(
            model_file=MODEL_FILE,
            model_class=f"{type(model).__module__}.{type(model).__qualname__}",
            task="classification" if is_classifier else "regression",
            classes=labels,
            feature_importance=(
                {n: float(v) for n, v in zip(feature_names, importance, strict=False)}
                if importance is not None and len(importance) == len(feature_names)
                else None
            ),
        )

    def load(self, folder: Path, saved: SavedModel, options: LoadOptions) -> Any:
        import skops.io as sio

        path = folder / saved.model_file
        types = stored_types(path)
        refused = untrusted(types, (*_BUILTINS, *options.trusted_types))
        if refused:
            raise InvalidInputError(
                f"The package holds types the project does not trust: {', '.join(refused)}. "
                "If you trust them, add them to models.trusted_types in modelyard.yaml.",
                loc="models.trusted_types",
            )
        # every type in the file passed the project's allow-list above; the trees it holds
        # are checked before anything can walk them (scikit-learn does not bounds-check)
        model = sio.load(path, trusted=types)
        check_tree_structures(model, source=saved.model_file)
        return model

    def scores(self, model: Any, features: Any) -> np.ndarray:
        if not hasattr(model, "feature_names_in_") and hasattr(features, "to_numpy"):
            features = features.to_numpy()  # fitted on an array: give it one
        if hasattr(model, "predict_proba"):
            return np.asarray(model.predict_proba(features), dtype=np.float64)
        return np.asarray(model.predict(features), dtype=np.float64).reshape(len(features), -1)
