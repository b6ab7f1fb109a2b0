"""Bring an MLflow model directory in: its native model and its signature, without mlflow.

An MLflow model is a folder with an ``MLmodel`` YAML file naming its flavors. The
``sklearn`` flavor (``model.skops``, or a pickle), ``xgboost`` (``model.ubj``/``.json``/
``.xgb``) and ``lightgbm`` (``model.lgb`` for a Booster; skops or a pickle for the
scikit-learn wrapper) are read here with their own libraries. A pickle runs whatever
code it holds when it loads, so it is read only when the caller trusts its source;
skops files are checked against the project's trusted types first.

MLflow's column signature becomes a :class:`Signature`; a column that is not
``required`` is nullable. A tensor signature (no column names) gives none.

>>> sig = signature_from_mlflow(
...     '[{"type": "double", "name": "age", "required": true},'
...     ' {"type": "long", "name": "visits", "required": false}]'
... )
>>> [(c.name, c.dtype, c.nullable) for c in sig.columns]
[('age', 'float', False), ('visits', 'int', True)]
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import yaml

from modelyard.config import DEFAULT_TRUSTED_TYPES
from modelyard.errors import InvalidInputError, MissingExtraError, ModelError, NotFoundError
from modelyard.models.flavors import LoadOptions, SavedModel, flavor_for, get_flavor
from modelyard.models.flavors.sklearn_trees import check_tree_structures
from modelyard.models.flavors.xgboost import MODEL_CLASSES as XGBOOST_CLASSES
from modelyard.models.signature import ColumnSpec, DType, Signature

__all__ = [
    "MLMODEL_FILE",
    "SUPPORTED_FLAVORS",
    "import_mlflow_model",
    "read_input_example",
    "signature_from_mlflow",
]

MLMODEL_FILE = "MLmodel"
#: MLflow flavors read here, in the order they are looked for
SUPPORTED_FLAVORS = ("sklearn", "xgboost", "lightgbm")
_TYPES: dict[str, DType] = {
    "double": "float",
    "float": "float",
    "long": "int",
    "integer": "int",
    "string": "string",
    "boolean": "bool",
    "datetime": "datetime",
}
_PICKLES = ("pickle", "cloudpickle")
_LIGHTGBM_BOOSTER = "lightgbm.basic.Booster"


def signature_from_mlflow(inputs: str | list[Any]) -> Signature | None:
    """Our signature from MLflow's ``signature.inputs`` (its JSON text or the parsed list)."""
    columns = json.loads(inputs) if isinstance(inputs, str) else inputs
    if not isinstance(columns, list):
        raise InvalidInputError(
            f"Expected a list of columns in signature.inputs, got {columns!r:.80}",
            loc="signature.inputs",
        )
    specs = []
    for i, column in enumerate(columns):
        if not isinstance(column, dict) or column.get("type") == "tensor" or not column.get("name"):
            return None  # a tensor (or unnamed) signature: nothing to check columns against
        kind = _TYPES.get(str(column.get("type")))
        if kind is None:
            raise InvalidInputError(
                f"MLflow column {column['name']!r} has type {column.get('type')!r}; a modelyard "
                f"signature takes {', '.join(_TYPES)}",
                loc=f"signature.inputs[{i}]",
            )
        nullable = not bool(column.get("required", True))
        specs.append(ColumnSpec(name=str(column["name"]), dtype=kind, nullable=nullable))
    return Signature(columns=specs)


def _read_mlmodel(path: Path) -> tuple[Path, dict[str, Any]]:
    root = path.parent if path.name == MLMODEL_FILE and path.is_file() else path
    file = root / MLMODEL_FILE
    if not root.exists():
        raise NotFoundError(f"No MLflow model at {path}")
    if not file.is_file():
        raise InvalidInputError(
            f"Expected an MLflow model directory holding an {MLMODEL_FILE} file, got {root}",
            loc="path",
        )
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{file} is not valid YAML: {exc}", loc=MLMODEL_FILE) from exc
    if not isinstance(data, dict) or not isinstance(data.get("flavors"), dict):
        raise InvalidInputError(f"Expected a 'flavors' mapping in {file}", loc="flavors")
    return root, data


def _data_file(root: Path, conf: dict[str, Any], key: str, flavor: str) -> Path:
    """The model file a flavor's ``key`` names, refused when it points outside ``root``."""
    name = conf.get(key)
    if not isinstance(name, str) or not name:
        raise InvalidInputError(
            f"Expected flavors.{flavor}.{key} to name the model file", loc=f"flavors.{flavor}.{key}"
        )
    file = (root / name).resolve()
    if Path(name).is_absolute() or not file.is_relative_to(root.resolve()):
        raise InvalidInputError(
            f"Expected a model file inside {root}, got {name!r}", loc=f"flavors.{flavor}.{key}"
        )
    if not file.is_file():
        raise NotFoundError(f"The MLflow model names {name!r} but {root} has no such file")
    return file


def _format_of(file: Path) -> str:
    """The format of a model file whose flavor does not say (MLflow before 2.x)."""
    return "skops" if file.suffix == ".skops" else "cloudpickle"


def _load_serialized(
    file: Path, fmt: str, trusted_types: tuple[str, ...], trust: bool, flavor: str
) -> Any:
    """A scikit-learn-style model MLflow serialized with skops or (cloud)pickle."""
    if fmt == "skops":
        # the scikit-learn flavor's own check: what loads here loads from the package later
        options = LoadOptions(trusted_types=("",) if trust else trusted_types)
        saved = SavedModel(model_file=file.name, model_class="", task="other")
        try:
            return get_flavor("sklearn").load(file.parent, saved, options)
        except InvalidInputError as exc:
            if exc.loc != "models.trusted_types":
                raise  # a damaged or crafted file: trusting its source changes nothing
            reason = str(exc).removesuffix(f" - at {exc.loc}")
            raise InvalidInputError(
                f"{file.name}: {reason} Or pass --trust if you trust the model's source.",
                loc=exc.loc,
            ) from exc
    if fmt in _PICKLES:
        if not trust:
            raise InvalidInputError(
                f"{file.name} is a {fmt} file (flavors.{flavor}.serialization_format: {fmt}); "
                "loading a pickle runs whatever code it holds, so modelyard reads one only "
                "from a source you trust: pass --trust (or trust=True). It is stored as skops "
                "or in its native format once imported.",
                loc="trust",
            )
        try:
            with file.open("rb") as handle:
                model = pickle.load(handle)  # the caller trusts the source
        except Exception as exc:  # unpickling raises anything the pickled code raises
            raise ModelError(f"Cannot unpickle {file.name}: {exc}") from exc
        check_tree_structures(model, source=file.name)
        return model
    raise InvalidInputError(
        f"Expected serialization_format skops, pickle or cloudpickle, got {fmt!r}",
        loc=f"flavors.{flavor}.serialization_format",
    )


def _xgboost_model(root: Path, conf: dict[str, Any]) -> Any:
    file = _data_file(root, conf, "data", "xgboost")
    model_class = str(conf.get("model_class", "xgboost.core.Booster"))
    short = XGBOOST_CLASSES.get(model_class)
    if short is None:
        raise InvalidInputError(
            f"Expected an XGBoost model class ({', '.join(XGBOOST_CLASSES)}), got {model_class!r}",
            loc="flavors.xgboost.model_class",
        )
    try:
        import xgboost
    except ImportError as exc:
        raise MissingExtraError("Importing an XGBoost model", "xgboost") from exc
    if short == "Booster":
        return xgboost.Booster(model_file=str(file))
    model = getattr(xgboost, short)()
    model.load_model(str(file))
    return model


def _lightgbm_model(
    root: Path, conf: dict[str, Any], trusted_types: tuple[str, ...], trust: bool
) -> Any:
    file = _data_file(root, conf, "data", "lightgbm")
    model_class = str(conf.get("model_class", _LIGHTGBM_BOOSTER))
    if model_class != _LIGHTGBM_BOOSTER:
        fmt = str(conf.get("serialization_format") or _format_of(file))
        return _load_serialized(file, fmt, trusted_types, trust, "lightgbm")
    try:
        import lightgbm
    except ImportError as exc:
        raise MissingExtraError("Importing a LightGBM model", "lightgbm") from exc
    return lightgbm.Booster(model_file=str(file))


def import_mlflow_model(
    path: str | Path,
    *,
    trusted_types: tuple[str, ...] = DEFAULT_TRUSTED_TYPES,
    trust: bool = False,
) -> tuple[Any, Signature | None, str]:
    """The native model of an MLflow model directory, its signature and our flavor's name.

    ``trust`` allows reading a pickle (and skops types outside ``trusted_types``):
    only for a model whose source you trust.
    """
    root, mlmodel = _read_mlmodel(Path(path))
    flavors = mlmodel["flavors"]
    chosen = next((f for f in SUPPORTED_FLAVORS if isinstance(flavors.get(f), dict)), None)
    if chosen is None:
        raise InvalidInputError(
            f"The MLflow model has flavors {', '.join(map(str, flavors)) or 'none'}; modelyard "
            f"imports {', '.join(SUPPORTED_FLAVORS)}",
            loc="flavors",
        )
    conf: dict[str, Any] = flavors[chosen]
    if chosen == "sklearn":
        file = _data_file(root, conf, "pickled_model", "sklearn")
        fmt = str(conf.get("serialization_format") or _format_of(file))
        model = _load_serialized(file, fmt, trusted_types, trust, "sklearn")
    elif chosen == "xgboost":
        model = _xgboost_model(root, conf)
    else:
        model = _lightgbm_model(root, conf, trusted_types, trust)
    signature = None
    inputs = (mlmodel.get("signature") or {}).get("inputs")
    if inputs:
        signature = signature_from_mlflow(inputs)
    return model, signature, flavor_for(model).name


def read_input_example(path: str | Path) -> Any:
    """The MLflow model's saved input example as a pandas frame, or None without one.

    MLflow records it in ``MLmodel`` under ``saved_input_example_info`` (a JSON file in the
    directory, ``pandas_orient`` ``split`` or ``records``, ``type: dataframe``). Another
    kind of example (a tensor, a list of strings) has no columns: None.
    """
    import pandas as pd

    root, mlmodel = _read_mlmodel(Path(path))
    info = mlmodel.get("saved_input_example_info")
    if not isinstance(info, dict) or info.get("type") != "dataframe":
        return None
    name = info.get("artifact_path")
    loc = "saved_input_example_info.artifact_path"
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"Expected the input example's file name, got {name!r}", loc=loc)
    file = (root / name).resolve()
    if Path(name).is_absolute() or not file.is_relative_to(root.resolve()):
        raise InvalidInputError(f"Expected an input example inside {root}, got {name!r}", loc=loc)
    if not file.is_file():
        raise NotFoundError(f"The MLflow model names {name!r} as its input example; no such file")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{name} is not valid JSON: {exc}", loc=loc) from exc
    orient = info.get("pandas_orient", "split")
    try:
        if orient == "split" and isinstance(data, dict):
            return pd.DataFrame(data.get("data", []), columns=data.get("columns"))
        if orient == "records" and isinstance(data, list):
            return pd.DataFrame.from_records(data)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name}: {exc}", loc=loc) from exc
    raise InvalidInputError(
        f"Expected a {orient!r}-oriented frame in {name}, got {type(data).__name__}",
        loc="saved_input_example_info.pandas_orient",
    )
