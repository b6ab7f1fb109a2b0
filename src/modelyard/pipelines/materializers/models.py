"""Models through the package flavors: scikit-learn (skops), XGBoost, LightGBM, ONNX, PythonModel.

A model output is stored as the files its flavor writes (the same safe formats as a
model package: skops, XGBoost JSON/UBJSON, LightGBM text, ONNX protobuf, JSON state),
and loads back through the same flavor, with every check a package load makes: the
project's allow-list of skops types, the tree-structure checks, trust for Python code.

skops names the arrays of a file after ``id()`` of the objects and stamps the time into
the zip, so two saves of one model differ; the file is normalised (ids renumbered in
order of appearance over sorted keys, fixed times, sorted entries) and checked to describe the same
object graph (its load saved again normalises to the same bytes), so the same model
has the same digest in any process.

What comes back: scikit-learn estimators and Pipelines, XGBoost's scikit-learn classes
and PythonModel subclasses come back as their own class; an XGBoost ``Booster`` as
modelyard's ``XGBoostBooster`` and any LightGBM model as ``LightGBMModel`` (both with
``predict`` and ``predict_proba``), ONNX as ``OnnxModel``. PyTorch modules are not
handled: a TorchScript package needs its input columns; log them with ``log_model``.

Loads use ``load_output(..., model_options=LoadOptions(...))`` or ``with
load_options(...)`` (the project's ``models.trusted_types`` and ``models.trust_code``);
a PythonModel also loads without ``trust_code`` when the caller declares its exact
class (the code is then already imported).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import json
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from modelyard.config import DEFAULT_TRUSTED_TYPES
from modelyard.errors import InvalidInputError
from modelyard.models.flavors import LoadOptions, PythonModel, SavedModel, get_flavor
from modelyard.models.flavors.lightgbm import BOOSTER as LGB_BOOSTER
from modelyard.models.flavors.lightgbm import LightGBMModel
from modelyard.models.flavors.onnx import PROTO, OnnxModel
from modelyard.models.flavors.xgboost import BOOSTER as XGB_BOOSTER
from modelyard.models.flavors.xgboost import XGBoostBooster
from modelyard.pipelines.materializers.base import MODEL_OPTIONS, type_name

__all__ = ["ModelMaterializer", "load_options"]

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)

#: class names (any in a type's MRO) each flavor stores, checked without importing
_CLASSES = {
    "xgboost": {"xgboost.sklearn.XGBModel", XGB_BOOSTER},
    "lightgbm": {"lightgbm.sklearn.LGBMModel", LGB_BOOSTER},
    "onnx": {PROTO},
}
_WRAPPERS: tuple[type, ...] = (XGBoostBooster, LightGBMModel, OnnxModel)


@contextlib.contextmanager
def load_options(options: LoadOptions) -> Iterator[None]:
    """Load model outputs with ``options`` in this context (the project's trust settings)."""
    token = MODEL_OPTIONS.set(options)
    try:
        yield
    finally:
        MODEL_OPTIONS.reset(token)


def _mro_names(tp: type) -> set[str]:
    return {f"{c.__module__}.{c.__qualname__}" for c in tp.__mro__}


def _flavor_of_type(tp: Any) -> str | None:
    if not isinstance(tp, type):
        return None
    names = _mro_names(tp)
    for flavor, classes in _CLASSES.items():
        if names & classes:
            return flavor
    if issubclass(tp, XGBoostBooster):
        return "xgboost"
    if issubclass(tp, LightGBMModel):
        return "lightgbm"
    if issubclass(tp, OnnxModel):
        return "onnx"
    if issubclass(tp, PythonModel):
        return "custom"
    if tp.__module__.split(".")[0] == "sklearn" and (
        hasattr(tp, "fit") or tp.__module__ == "sklearn.base"  # BaseEstimator, the mixins
    ):
        return "sklearn"
    return None


def _normalise_skops(path: Path) -> None:
    """Rewrite a skops zip so the same model always gives the same bytes."""
    with zipfile.ZipFile(path) as archive:
        schema = json.loads(archive.read("schema.json"))
        blobs = {info.filename: archive.read(info) for info in archive.infolist()}
    ids: dict[int, int] = {}
    files: dict[str, str] = {}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out: dict[str, Any] = {}
            for key, value in sorted(node.items()):  # numbered in the order of sorted keys
                if key == "__id__" and type(value) is int:
                    out[key] = ids.setdefault(value, len(ids) + 1)
                elif key == "file" and isinstance(value, str) and value in blobs:
                    out[key] = files.setdefault(value, f"{len(files) + 1}{Path(value).suffix}")
                else:
                    out[key] = walk(value)
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    renamed = walk(schema)
    unknown = set(blobs) - set(files) - {"schema.json"}
    if unknown:
        raise InvalidInputError(
            f"The skops file holds entries its schema does not name: {sorted(unknown)[:3]}",
            loc="model.skops",
        )
    entries = {"schema.json": json.dumps(renamed, sort_keys=True).encode("utf-8")}
    entries.update({files[old]: data for old, data in blobs.items() if old in files})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as out:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            out.writestr(info, entries[name])
    path.write_bytes(buffer.getvalue())


def _stable_skops(path: Path) -> None:
    """Normalise, then check the file loads to a model that saves to the same bytes."""
    import skops.io as sio

    from modelyard.models.flavors.sklearn import stored_types

    _normalise_skops(path)
    first = path.read_bytes()
    again = path.with_name("again.skops")
    try:
        sio.dump(sio.load(path, trusted=stored_types(path)), again)
        _normalise_skops(again)
        same = again.read_bytes() == first
    finally:
        again.unlink(missing_ok=True)
    if not same:
        raise InvalidInputError(
            "The scikit-learn model does not save to the same skops file twice (an object "
            "in it changes when it is saved and loaded); it cannot be content-addressed",
            loc="output",
        )


def _requirements(names: tuple[str, ...]) -> dict[str, str]:
    found = {}
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


class ModelMaterializer:
    """Models of the package flavors, as the files a model package holds."""

    name = "model.package"
    version = 1
    #: Boosters and LightGBM models load as modelyard's wrappers, not their own class
    checks_loaded_type = False

    def handles(self, tp: Any) -> bool:
        return _flavor_of_type(tp) is not None

    def accepts(self, value: Any) -> bool:
        return _flavor_of_type(type(value)) is not None

    def preload(self, tp: Any) -> None:
        """Import what saving or loading a ``tp`` needs, before a pool forks its workers.

        skops lists scikit-learn's estimators when imported, which imports every module
        scikit-learn has (torch's array API shim included when torch is installed):
        seconds that each forked worker would otherwise pay again.
        """
        if _flavor_of_type(tp) == "sklearn":
            import skops.io  # noqa: F401

    def save(self, value: Any, folder: Path) -> Mapping[str, Any]:
        flavor = get_flavor(str(_flavor_of_type(type(value))))
        saved = flavor.save(value, folder, [])
        if flavor.name == "sklearn":
            _stable_skops(folder / saved.model_file)
        return {
            "flavor": flavor.name,
            "model_class": saved.model_class,
            "model_file": saved.model_file,
            "task": saved.task,
            "classes": saved.classes,
            "needs_trust": saved.needs_trust,
            "extra_files": list(saved.extra_files),
            "requirements": _requirements(tuple(getattr(flavor, "requirements", ()))),
        }

    def load(self, folder: Path, meta: Mapping[str, Any], tp: Any) -> Any:
        flavor = get_flavor(str(meta["flavor"]))
        saved = SavedModel(
            model_file=str(meta["model_file"]),
            model_class=str(meta["model_class"]),
            task=str(meta["task"]),
            classes=meta.get("classes"),
            needs_trust=bool(meta.get("needs_trust")),
            extra_files=list(meta.get("extra_files", [])),
        )
        options = MODEL_OPTIONS.get() or LoadOptions(trusted_types=DEFAULT_TRUSTED_TYPES)
        if (
            saved.needs_trust
            and not options.trust_code
            and isinstance(tp, type)
            and type_name(tp) == saved.model_class
        ):
            # the caller declared this very class: its code is already imported and trusted
            options = LoadOptions(trusted_types=options.trusted_types, trust_code=True)
        model = flavor.load(folder, saved, options)
        wrong = isinstance(tp, type) and _flavor_of_type(tp) and not isinstance(model, tp)
        if wrong and not isinstance(model, _WRAPPERS):
            raise InvalidInputError(
                f"Expected a {type_name(tp)}, the stored model loads as a {type_name(type(model))}",
                loc="output",
            )
        return model
