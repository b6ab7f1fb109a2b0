"""MLflow model directories become registered versions, without mlflow installed.

Each directory is laid out here as MLflow 3 writes it: an ``MLmodel`` YAML naming the
flavor and its model file, the signature's inputs as a JSON string, and the native
model file. The oracle is the model written into the directory.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from modelyard.cli import models_import  # noqa: F401 - registers `models import-mlflow`
from modelyard.cli.app import main
from modelyard.config import init_project, load_settings
from modelyard.errors import InvalidInputError, NotFoundError
from modelyard.models.flavors.lightgbm import LightGBMModel
from modelyard.models.flavors.xgboost import XGBoostBooster
from modelyard.models.mlflow_import import import_mlflow_model, signature_from_mlflow
from modelyard.registry.client import ModelRegistry

SEED = 7
INPUTS = [
    {"type": "double", "name": "tenure", "required": True},
    {"type": "double", "name": "spend", "required": True},
    {"type": "long", "name": "visits", "required": True},
]


def _data(n: int = 200, seed: int = SEED) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "tenure": rng.normal(12.0, 4.0, n),
            "spend": rng.gamma(2.0, 30.0, n),
            "visits": rng.integers(0, 20, n),
        }
    )
    label = ((frame.tenure - 12) * 0.5 + rng.normal(0, 1, n) > 0).astype(int).to_numpy()
    return frame, label


def _write_mlmodel(
    root: Path, flavor: str, conf: dict[str, Any], inputs: list[dict[str, Any]] | None = INPUTS
) -> Path:
    """An ``MLmodel`` file as MLflow 3 writes it (pyfunc plus the native flavor)."""
    data: dict[str, Any] = {
        "flavors": {
            "python_function": {
                "env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"},
                "loader_module": f"mlflow.{flavor}",
                "model_path": conf.get("pickled_model", conf.get("data")),
                "predict_fn": "predict",
                "python_version": "3.11.7",
            },
            flavor: conf,
        },
        "mlflow_version": "3.17.2",
        "model_uuid": "5047d5dca099460680bb9c64afaf6df0",
        "utc_time_created": "2026-01-01 00:00:00.000000",
    }
    if inputs is not None:
        data["signature"] = {
            "inputs": json.dumps(inputs),
            "outputs": '[{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}]',
            "params": None,
        }
    root.mkdir(parents=True, exist_ok=True)
    (root / "MLmodel").write_text(yaml.safe_dump(data, default_flow_style=False))
    return root


def _sklearn_dir(root: Path, model: Any, fmt: str) -> Path:
    root.mkdir(parents=True)
    if fmt == "skops":
        import skops.io as sio

        file = "model.skops"
        sio.dump(model, root / file)
    else:
        file = "model.pkl"
        (root / file).write_bytes(pickle.dumps(model))
    conf = {
        "code": None,
        "pickled_model": file,
        "serialization_format": fmt,
        "sklearn_version": "1.9.1",
        "skops_trusted_types": None,
    }
    return _write_mlmodel(root, "sklearn", conf)


def _logistic() -> tuple[Any, pd.DataFrame]:
    from sklearn.linear_model import LogisticRegression

    frame, label = _data()
    return LogisticRegression().fit(frame, label), frame


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    init_project(root)
    return root


@pytest.fixture
def cli(project: Path, capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str]]:
    """``cli("import-mlflow", ...)``: ``modelyard models ...`` on the test project."""

    def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(["--project", str(project), "models", *args])
        out, err = capsys.readouterr()
        return code, out + err

    return run


def _registry(project: Path) -> ModelRegistry:
    return ModelRegistry(load_settings(project, environ={}))


# -- signatures ---------------------------------------------------------------------------


def test_every_mlflow_column_type_maps_and_optional_columns_are_nullable() -> None:
    inputs = [
        {"type": "double", "name": "a", "required": True},
        {"type": "float", "name": "b", "required": True},
        {"type": "long", "name": "c", "required": False},
        {"type": "integer", "name": "d", "required": True},
        {"type": "string", "name": "e", "required": True},
        {"type": "boolean", "name": "f", "required": True},
        {"type": "datetime", "name": "g"},  # MLflow < 2.3 wrote no "required"
    ]
    signature = signature_from_mlflow(json.dumps(inputs))
    assert signature is not None
    assert [(c.name, c.dtype, c.nullable) for c in signature.columns] == [
        ("a", "float", False),
        ("b", "float", False),
        ("c", "int", True),
        ("d", "int", False),
        ("e", "string", False),
        ("f", "bool", False),
        ("g", "datetime", False),
    ]


def test_a_tensor_signature_gives_none_and_an_unknown_type_is_named() -> None:
    tensor = [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 4]}}]
    assert signature_from_mlflow(tensor) is None
    with pytest.raises(InvalidInputError, match=r"column 'photo' has type 'binary'.* at signature"):
        signature_from_mlflow([{"type": "binary", "name": "photo", "required": True}])


# -- scikit-learn -------------------------------------------------------------------------


@pytest.mark.parametrize("recorded", [True, False], ids=["format-recorded", "format-by-suffix"])
def test_sklearn_skops_model_imports_with_its_signature(tmp_path: Path, recorded: bool) -> None:
    model, frame = _logistic()
    path = _sklearn_dir(tmp_path / "mlflow-model", model, "skops")
    if not recorded:  # MLflow before 2.x wrote no serialization_format
        mlmodel = yaml.safe_load((path / "MLmodel").read_text())
        del mlmodel["flavors"]["sklearn"]["serialization_format"]
        (path / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    native, signature, flavor = import_mlflow_model(path)
    assert flavor == "sklearn"
    assert signature is not None and signature.names == ["tenure", "spend", "visits"]
    np.testing.assert_array_equal(native.predict_proba(frame), model.predict_proba(frame))


def test_cli_registers_an_mlflow_model_and_loads_it(
    tmp_path: Path, project: Path, cli: Callable[..., tuple[int, str]]
) -> None:
    model, frame = _logistic()
    path = _sklearn_dir(tmp_path / "mlflow-model", model, "skops")
    code, out = cli("import-mlflow", str(path), "--name", "churn", "--json")
    assert code == 0, out
    result = json.loads(out)
    assert (result["ref"], result["flavor"], result["signature"]) == ("churn/1", "sklearn", True)
    with _registry(project) as registry:
        loaded = registry.load("churn/1")
        assert loaded.manifest.model_file == "model.skops"
        np.testing.assert_array_equal(loaded.scores(frame), model.predict_proba(frame))
        with pytest.raises(InvalidInputError, match=r"unexpected column 'coupon'"):
            loaded.predict(frame.assign(coupon=1))
    code, out = cli("import-mlflow", str(path), "--name", "churn")
    assert code == 0
    assert "Registered churn/2 (sklearn, package" in out


def test_an_imported_hist_gradient_boosting_model_loads_and_records_its_provenance(
    tmp_path: Path, project: Path, cli: Callable[..., tuple[int, str]]
) -> None:
    """HGB (a TreePredictor inside) from a foreign skops file: checked, not refused."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    frame, label = _data()
    model = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(frame, label)
    path = _sklearn_dir(tmp_path / "mlflow-model", model, "skops")
    code, out = cli("import-mlflow", str(path), "--name", "hgb", "--json")
    assert code == 0, out
    with _registry(project) as registry:
        loaded = registry.load("hgb/1")
        assert loaded.manifest.lineage.imported_from == f"mlflow:{path.resolve()}"
        np.testing.assert_array_equal(loaded.scores(frame), model.predict_proba(frame))
    code, out = cli("show", "hgb/1", "--json")
    assert code == 0, out
    assert json.loads(out)["manifest"]["lineage"]["imported_from"] == f"mlflow:{path.resolve()}"
    code, out = cli("show", "hgb/1")
    assert code == 0 and "imported from" in out


def test_a_pickled_model_is_refused_without_trust(
    tmp_path: Path, cli: Callable[..., tuple[int, str]]
) -> None:
    model, _ = _logistic()
    path = _sklearn_dir(tmp_path / "mlflow-model", model, "cloudpickle")
    with pytest.raises(InvalidInputError, match=r"model\.pkl is a cloudpickle file.*--trust"):
        import_mlflow_model(path)
    code, out = cli("import-mlflow", str(path), "--name", "churn")
    assert code == 2
    assert "error: model.pkl is a cloudpickle file" in out


def test_a_pickled_model_imports_with_trust_and_is_stored_as_skops(
    tmp_path: Path, project: Path, cli: Callable[..., tuple[int, str]]
) -> None:
    model, frame = _logistic()
    path = _sklearn_dir(tmp_path / "mlflow-model", model, "pickle")
    code, out = cli("import-mlflow", str(path), "--name", "churn", "--trust", "--json")
    assert code == 0, out
    with _registry(project) as registry:
        loaded = registry.load("churn/1")  # no trust needed: the package holds no pickle
        assert loaded.manifest.model_file == "model.skops"
        assert not loaded.manifest.needs_trust
        np.testing.assert_array_equal(loaded.predict(frame), model.predict(frame))


def test_skops_types_outside_the_project_trust_are_named(tmp_path: Path) -> None:
    import lightgbm as lgb

    frame, label = _data()
    import skops.io as sio

    model = lgb.LGBMClassifier(n_estimators=5, verbose=-1, random_state=0, n_jobs=1).fit(
        frame, label
    )
    root = tmp_path / "mlflow-model"
    root.mkdir()
    sio.dump(model, root / "model.skops")
    conf = {
        "data": "model.skops",
        "model_class": "lightgbm.sklearn.LGBMClassifier",
        "serialization_format": "skops",
        "skops_trusted_types": ["lightgbm.sklearn.LGBMClassifier"],  # not ours to decide
        "code": None,
    }
    _write_mlmodel(root, "lightgbm", conf)
    with pytest.raises(InvalidInputError, match=r"does not trust: .*lightgbm\.sklearn\.LGBMClass"):
        import_mlflow_model(root)
    native, _, flavor = import_mlflow_model(root, trust=True)
    assert flavor == "lightgbm"
    np.testing.assert_array_equal(native.predict_proba(frame), model.predict_proba(frame))


# -- XGBoost and LightGBM -----------------------------------------------------------------


def test_xgboost_classifier_imports_as_its_wrapper(
    tmp_path: Path, project: Path, cli: Callable[..., tuple[int, str]]
) -> None:
    import xgboost as xgb

    frame, label = _data()
    model = xgb.XGBClassifier(n_estimators=10, max_depth=3, random_state=0, n_jobs=1).fit(
        frame, label
    )
    root = tmp_path / "mlflow-model"
    root.mkdir()
    model.save_model(str(root / "model.ubj"))
    conf = {
        "code": None,
        "data": "model.ubj",
        "model_class": "xgboost.sklearn.XGBClassifier",
        "model_format": "ubj",
        "xgb_version": "3.2.0",
    }
    _write_mlmodel(root, "xgboost", conf)
    code, out = cli("import-mlflow", str(root), "--name", "delays", "--json")
    assert code == 0, out
    assert json.loads(out)["model_class"] == "xgboost.sklearn.XGBClassifier"
    with _registry(project) as registry:
        loaded = registry.load("delays/1")
        assert type(loaded.native) is xgb.XGBClassifier
        np.testing.assert_array_equal(loaded.scores(frame), model.predict_proba(frame))


def test_xgboost_booster_without_a_model_class_and_without_a_signature(
    tmp_path: Path, cli: Callable[..., tuple[int, str]]
) -> None:
    import xgboost as xgb

    frame, label = _data()
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 2, "seed": 0, "nthread": 1},
        xgb.DMatrix(frame, label=label),
        num_boost_round=5,
    )
    root = tmp_path / "mlflow-model"
    root.mkdir()
    booster.save_model(str(root / "model.json"))
    _write_mlmodel(root, "xgboost", {"data": "model.json"}, inputs=None)  # MLflow < 1.22
    native, signature, flavor = import_mlflow_model(root)
    assert (signature, flavor) == (None, "xgboost")
    view = XGBoostBooster(native)
    np.testing.assert_array_equal(
        view.predict_proba(frame)[:, 1], booster.predict(xgb.DMatrix(frame))
    )
    code, out = cli("import-mlflow", str(root), "--name", "raw")
    assert code == 0, out
    assert "no column signature: inputs are not checked" in out


def test_xgboost_model_class_must_be_a_known_one(tmp_path: Path) -> None:
    root = tmp_path / "mlflow-model"
    root.mkdir()
    (root / "model.ubj").write_bytes(b"{}")
    _write_mlmodel(root, "xgboost", {"data": "model.ubj", "model_class": "os.system"})
    with pytest.raises(InvalidInputError, match=r"XGBoost model class .*got 'os\.system'"):
        import_mlflow_model(root)


def test_lightgbm_booster_imports_and_registers(
    tmp_path: Path, project: Path, cli: Callable[..., tuple[int, str]]
) -> None:
    import lightgbm as lgb

    frame, label = _data()
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 7, "verbose": -1, "seed": 0, "num_threads": 1},
        lgb.Dataset(frame, label=label),
        num_boost_round=10,
    )
    root = tmp_path / "mlflow-model"
    root.mkdir()
    booster.save_model(str(root / "model.lgb"))
    conf = {
        "code": None,
        "data": "model.lgb",
        "lgb_version": "4.7.0",
        "model_class": "lightgbm.basic.Booster",
        "serialization_format": "skops",
        "skops_trusted_types": None,
    }
    _write_mlmodel(root, "lightgbm", conf)
    code, out = cli("import-mlflow", str(root), "--name", "delays", "--json")
    assert code == 0, out
    with _registry(project) as registry:
        loaded = registry.load("delays/1")
        assert isinstance(loaded.native, LightGBMModel)
        assert loaded.manifest.classes == ["0", "1"]
        np.testing.assert_array_equal(loaded.scores(frame)[:, 1], booster.predict(frame))


# -- what is refused ----------------------------------------------------------------------


def test_a_model_file_outside_the_directory_is_refused(tmp_path: Path) -> None:
    model, _ = _logistic()
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(model))
    conf = {"pickled_model": "../evil.pkl", "serialization_format": "pickle"}
    root = _write_mlmodel(tmp_path / "mlflow-model", "sklearn", conf)
    with pytest.raises(InvalidInputError, match=r"model file inside .*got '\.\./evil\.pkl'"):
        import_mlflow_model(root, trust=True)


def test_unsupported_flavors_and_missing_directories_are_explained(tmp_path: Path) -> None:
    root = _write_mlmodel(tmp_path / "torch-model", "pytorch", {"model_data": "data"})
    with pytest.raises(
        InvalidInputError, match=r"flavors python_function, pytorch; modelyard imports sklearn"
    ):
        import_mlflow_model(root)
    with pytest.raises(NotFoundError, match=r"No MLflow model at"):
        import_mlflow_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match=r"holding an MLmodel file, got"):
        import_mlflow_model(tmp_path / "empty")
    conf = {"pickled_model": "model.skops", "serialization_format": "skops"}
    root = _write_mlmodel(tmp_path / "no-file", "sklearn", conf)
    with pytest.raises(NotFoundError, match=r"names 'model\.skops' but .* has no such file"):
        import_mlflow_model(root)


def test_a_bad_model_name_is_refused_before_reading_the_model(
    tmp_path: Path, cli: Callable[..., tuple[int, str]]
) -> None:
    code, out = cli("import-mlflow", str(tmp_path / "nowhere"), "--name", "no spaces")
    assert code == 2
    assert "no spaces" in out
