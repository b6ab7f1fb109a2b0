"""Every flavor through the registry and back: the loaded model predicts what the logged one did.

The oracle is always the model that was logged (or, for ONNX, the graph run before
packaging): scores after the round trip equal its scores exactly, and the held-out
scores stored at packaging equal what the loaded model gives on those rows.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pytest

from modelyard.config import DEFAULT_TRUSTED_TYPES, ModelsSettings, Settings, init_project
from modelyard.config import load_settings as load_project_settings
from modelyard.errors import ArtifactIntegrityError, InvalidInputError, MissingExtraError
from modelyard.models.flavors import FLAVORS, PythonModel, flavor_for, get_flavor
from modelyard.models.flavors.lightgbm import LightGBMModel
from modelyard.models.flavors.onnx import OnnxModel
from modelyard.models.flavors.xgboost import XGBoostBooster, XGBoostFlavor
from modelyard.models.package import PackagedModel, read_holdout
from modelyard.models.runtimes import XGBoostInplaceRuntime, build_inputs, xgboost_booster
from modelyard.models.signature import infer_signature
from modelyard.registry.client import ModelRegistry

SEED = 20240611


def _frame(n: int = 240, seed: int = SEED) -> tuple[pd.DataFrame, np.ndarray]:
    """Churn-like features and a binary label that depends on them (seeded)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "tenure": rng.normal(12.0, 4.0, n),
            "spend": rng.gamma(2.0, 30.0, n),
            "visits": rng.integers(0, 20, n),
        }
    )
    logit = 0.4 * (frame.tenure - 12) - 0.03 * (frame.spend - 60) + 0.1 * (frame.visits - 10)
    label = (logit + rng.normal(0.0, 1.0, n) > 0).astype(int).to_numpy()
    return frame, label


def _project(tmp_path: Path, models: ModelsSettings | None = None) -> Settings:
    root = tmp_path / "sqlite-project"
    init_project(root)
    settings = load_project_settings(root, environ={})
    return settings if models is None else msgspec.structs.replace(settings, models=models)


@pytest.fixture
def registry(settings: Settings) -> Iterator[ModelRegistry]:
    """A registry on each metadata backend in turn."""
    with ModelRegistry(settings) as reg:
        yield reg


@pytest.fixture
def local(tmp_path: Path) -> Iterator[ModelRegistry]:
    """A registry on SQLite only, for cases where the backend does not matter."""
    with ModelRegistry(_project(tmp_path)) as reg:
        yield reg


def _round_trip(
    registry: ModelRegistry, model: Any, frame: pd.DataFrame, *, trust: bool = False
) -> PackagedModel:
    """Log ``model``, load it back, and check the stored held-out scores against it."""
    logged = registry.log_model(model, name="m", training_frame=frame)
    loaded = registry.load(logged.ref or "", trust=trust)
    rows, stored = read_holdout(registry.artifacts, loaded.manifest)
    np.testing.assert_array_equal(loaded.scores(rows), stored)
    return loaded


# -- flavor lookup ------------------------------------------------------------------------


def test_wrappers_of_boosting_libraries_are_matched_before_sklearn() -> None:
    import lightgbm as lgb
    import xgboost as xgb
    from sklearn.linear_model import LogisticRegression

    assert flavor_for(xgb.XGBClassifier()).name == "xgboost"
    assert flavor_for(xgb.XGBRegressor()).name == "xgboost"
    assert flavor_for(lgb.LGBMClassifier()).name == "lightgbm"
    assert flavor_for(LogisticRegression()).name == "sklearn"
    assert flavor_for(Shifted(1.0)).name == "custom"
    assert [f.name for f in FLAVORS].index("xgboost") < [f.name for f in FLAVORS].index("sklearn")


def test_an_unknown_model_names_the_known_flavors() -> None:
    with pytest.raises(InvalidInputError, match=r"No flavor stores a builtins.dict; known .*torch"):
        flavor_for({})
    with pytest.raises(InvalidInputError, match=r"Unknown flavor 'keras'; known flavors: xgb"):
        get_flavor("keras")


def test_importing_the_flavors_imports_no_model_library() -> None:
    code = (
        "import sys, modelyard, modelyard.models.flavors, modelyard.models.mlflow_import\n"
        "heavy = ['torch', 'xgboost', 'lightgbm', 'onnx', 'onnxruntime', 'sklearn', 'skops']\n"
        "print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- XGBoost ------------------------------------------------------------------------------


def test_xgboost_classifier_round_trip(registry: ModelRegistry) -> None:
    import xgboost as xgb

    frame, label = _frame()
    model = xgb.XGBClassifier(n_estimators=20, max_depth=3, random_state=0, n_jobs=1).fit(
        frame, label
    )
    loaded = _round_trip(registry, model, frame)
    assert type(loaded.native) is xgb.XGBClassifier
    assert loaded.manifest.model_class == "xgboost.sklearn.XGBClassifier"
    assert loaded.manifest.model_file == "model.ubj"
    assert (loaded.manifest.task, loaded.manifest.classes) == ("classification", ["0", "1"])
    np.testing.assert_array_equal(loaded.predict(frame), model.predict(frame))
    np.testing.assert_array_equal(loaded.scores(frame), model.predict_proba(frame))


def test_xgboost_regressor_and_fast_path(local: ModelRegistry) -> None:
    import xgboost as xgb

    frame, _ = _frame()
    target = frame.tenure * 2 + frame.visits
    model = xgb.XGBRegressor(n_estimators=15, max_depth=3, random_state=0, n_jobs=1).fit(
        frame, target
    )
    loaded = _round_trip(local, model, frame)
    assert type(loaded.native) is xgb.XGBRegressor
    assert loaded.manifest.task == "regression"
    np.testing.assert_array_equal(loaded.predict(frame), model.predict(frame))
    fast = XGBoostInplaceRuntime(xgboost_booster(loaded.native), classification=False)
    assert loaded.manifest.signature is not None
    scores = fast.scores(build_inputs(loaded.manifest.signature, frame))
    np.testing.assert_array_equal(scores, loaded.scores(frame))


def test_xgboost_fast_path_gives_classifier_probabilities() -> None:
    import xgboost as xgb

    frame, label = _frame()
    model = xgb.XGBClassifier(n_estimators=10, max_depth=2, random_state=0, n_jobs=1).fit(
        frame, label
    )
    fast = XGBoostInplaceRuntime(xgboost_booster(model), classification=True)
    scores = fast.scores(build_inputs(infer_signature(frame), frame))
    np.testing.assert_array_equal(scores, model.predict_proba(frame).astype(np.float64))


def test_xgboost_booster_loads_as_a_classifier_of_its_objective(local: ModelRegistry) -> None:
    import xgboost as xgb

    frame, label = _frame()
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "seed": 0, "nthread": 1},
        xgb.DMatrix(frame, label=label),
        num_boost_round=10,
    )
    loaded = _round_trip(local, booster, frame)
    assert isinstance(loaded.native, XGBoostBooster)
    probability = booster.predict(xgb.DMatrix(frame))
    np.testing.assert_array_equal(loaded.scores(frame)[:, 1], probability.astype(np.float64))
    np.testing.assert_array_equal(loaded.predict(frame), (probability > 0.5).astype(int))


def test_xgboost_records_gain_importance(tmp_path: Path) -> None:
    import xgboost as xgb

    frame, label = _frame()
    model = xgb.XGBClassifier(n_estimators=10, max_depth=3, random_state=0, n_jobs=1).fit(
        frame, label
    )
    saved = XGBoostFlavor().save(model, tmp_path, list(frame.columns))
    assert saved.feature_importance is not None
    got = [saved.feature_importance[c] for c in frame.columns]
    np.testing.assert_allclose(got, model.feature_importances_, rtol=1e-6)


# -- LightGBM -----------------------------------------------------------------------------


def test_lightgbm_classifier_loads_as_a_booster_with_its_labels(registry: ModelRegistry) -> None:
    import lightgbm as lgb

    frame, label = _frame()
    words = np.where(label == 1, "churned", "stayed")
    model = lgb.LGBMClassifier(n_estimators=20, num_leaves=7, verbose=-1, random_state=0, n_jobs=1)
    model.fit(frame, words)
    loaded = _round_trip(registry, model, frame)
    assert isinstance(loaded.native, LightGBMModel)
    assert loaded.manifest.classes == ["churned", "stayed"]
    np.testing.assert_array_equal(loaded.predict(frame), model.predict(frame))
    np.testing.assert_array_equal(loaded.scores(frame), model.predict_proba(frame))


def test_lightgbm_multiclass_with_categories_and_nullable_ints(local: ModelRegistry) -> None:
    import lightgbm as lgb

    frame, _ = _frame()
    rng = np.random.default_rng(SEED + 1)
    frame["plan"] = pd.Categorical(rng.choice(["basic", "plus", "pro"], len(frame)))
    frame["visits"] = pd.array(frame["visits"], dtype="Int64")
    frame.loc[::7, "visits"] = pd.NA
    label = np.digitize(frame.tenure, [10.0, 14.0])  # three classes: 0, 1, 2
    model = lgb.LGBMClassifier(n_estimators=15, num_leaves=7, verbose=-1, random_state=0, n_jobs=1)
    model.fit(frame, label)
    loaded = _round_trip(local, model, frame)
    signature = loaded.manifest.signature
    assert signature is not None
    assert [(c.name, c.dtype, c.nullable) for c in signature.columns][2:] == [
        ("visits", "int", True),
        ("plan", "category", False),
    ]
    np.testing.assert_array_equal(loaded.predict(frame), model.predict(frame))
    np.testing.assert_array_equal(loaded.scores(frame), model.predict_proba(frame))


def test_lightgbm_regressor_and_raw_booster(local: ModelRegistry) -> None:
    import lightgbm as lgb

    frame, label = _frame()
    regressor = lgb.LGBMRegressor(
        n_estimators=10, num_leaves=7, verbose=-1, random_state=0, n_jobs=1
    )
    regressor.fit(frame, frame.spend / 10)
    loaded = _round_trip(local, regressor, frame)
    assert loaded.manifest.task == "regression"
    np.testing.assert_array_equal(loaded.predict(frame), regressor.predict(frame))

    booster = lgb.train(
        {"objective": "binary", "num_leaves": 7, "verbose": -1, "seed": 0, "num_threads": 1},
        lgb.Dataset(frame, label=label),
        num_boost_round=10,
    )
    loaded = _round_trip(local, booster, frame)
    assert loaded.manifest.classes == ["0", "1"]
    np.testing.assert_array_equal(loaded.scores(frame)[:, 1], booster.predict(frame))
    np.testing.assert_array_equal(loaded.predict(frame), (booster.predict(frame) > 0.5) * 1)


# -- scikit-learn (skops) -----------------------------------------------------------------


def test_sklearn_pipeline_round_trip(registry: ModelRegistry) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame, label = _frame()
    frame["plan"] = np.random.default_rng(SEED).choice(["basic", "pro"], len(frame))
    model = make_pipeline(
        ColumnTransformer(
            [
                ("num", StandardScaler(), ["tenure", "spend", "visits"]),
                ("cat", OneHotEncoder(), ["plan"]),
            ]
        ),
        LogisticRegression(),
    ).fit(frame, label)
    loaded = _round_trip(registry, model, frame)
    assert loaded.manifest.flavor == "sklearn"
    np.testing.assert_array_equal(loaded.scores(frame), model.predict_proba(frame))


def test_a_type_the_project_does_not_trust_is_refused_by_name(tmp_path: Path) -> None:
    from sklearn.tree import DecisionTreeClassifier

    trusted = (*(t for t in DEFAULT_TRUSTED_TYPES if t != "sklearn."), "sklearn.linear_model.")
    settings = _project(tmp_path, ModelsSettings(trusted_types=trusted))
    frame, label = _frame()
    with ModelRegistry(settings) as registry:
        logged = registry.log_model(
            DecisionTreeClassifier(max_depth=3, random_state=0).fit(frame, label),
            name="tree",
            training_frame=frame,
        )
        with pytest.raises(
            InvalidInputError, match=r"does not trust: .*sklearn\.tree\._tree\.Tree"
        ):
            registry.load(logged.ref or "")


def _xgboost_booster(frame: pd.DataFrame, label: np.ndarray) -> Any:
    import xgboost as xgb

    params = {"objective": "multi:softprob", "num_class": 3, "max_depth": 2, "nthread": 1}
    return xgb.train(params, xgb.DMatrix(frame, label=label), num_boost_round=5)


def _lightgbm_classifier(frame: pd.DataFrame, label: np.ndarray) -> Any:
    import lightgbm as lgb

    model = lgb.LGBMClassifier(n_estimators=5, num_leaves=5, verbose=-1, n_jobs=1)
    return model.fit(frame, np.asarray(["a", "b", "c"])[label])


def _onnx_graph(frame: pd.DataFrame, label: np.ndarray) -> Any:
    return _onnx_classifier(frame, (label > 0).astype(int))[1]


def _torch_module(frame: pd.DataFrame, label: np.ndarray) -> Any:
    net = _torch_net(3, 3, softmax=True)
    net.classes_ = [10, 20, 30]
    return net


@pytest.mark.parametrize(
    "build", [_xgboost_booster, _lightgbm_classifier, _onnx_graph, _torch_module]
)
def test_a_loaded_model_can_be_logged_again(
    local: ModelRegistry, build: Callable[[pd.DataFrame, np.ndarray], Any]
) -> None:
    frame, _ = _frame()
    label = np.digitize(frame.tenure, [10.0, 14.0])
    first = _round_trip(local, build(frame, label), frame)
    again = _round_trip(local, first.native, frame)
    assert again.manifest.flavor == first.manifest.flavor
    assert again.manifest.classes == first.manifest.classes
    np.testing.assert_array_equal(again.scores(frame), first.scores(frame))
    np.testing.assert_array_equal(again.predict(frame), first.predict(frame))


# -- integrity ----------------------------------------------------------------------------


def test_a_tampered_model_file_is_refused_by_name(registry: ModelRegistry) -> None:
    import xgboost as xgb

    frame, label = _frame()
    model = xgb.XGBClassifier(n_estimators=5, max_depth=2, random_state=0, n_jobs=1).fit(
        frame, label
    )
    logged = registry.log_model(model, name="m", training_frame=frame)
    entry = logged.manifest.file("model.ubj")
    stored = Path(registry.artifacts.root) / "objects" / entry.sha256[:2] / entry.sha256[2:]
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    stored.chmod(0o644)
    stored.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match=r"Artifact 'model\.ubj' is corrupted"):
        registry.load("m/1")


# -- signatures ---------------------------------------------------------------------------


def test_extra_columns_are_rejected_by_name(local: ModelRegistry) -> None:
    from sklearn.linear_model import LogisticRegression

    frame, label = _frame()
    local.log_model(LogisticRegression().fit(frame, label), name="m", training_frame=frame)
    loaded = local.load("m/1")
    with pytest.raises(InvalidInputError, match=r"unexpected column 'coupon'"):
        loaded.predict(frame.assign(coupon=1.0))
    with pytest.raises(InvalidInputError, match=r"missing column 'spend'"):
        loaded.predict(frame.drop(columns=["spend"]))


def test_nullable_categorical_and_datetime_columns_give_a_signature(local: ModelRegistry) -> None:
    frame, _ = _frame(n=50)
    frame["visits"] = pd.array(frame["visits"], dtype="Int64")
    frame.loc[::5, "visits"] = pd.NA
    frame["plan"] = pd.Categorical(["basic", "pro"] * 25)
    frame["signup"] = pd.date_range("2024-01-01", periods=50, freq="D", tz="UTC")
    frame["last_seen"] = pd.date_range("2024-03-01", periods=50, freq="h")
    model = Shifted(0.5)
    loaded = _round_trip(local, model, frame, trust=True)
    signature = loaded.manifest.signature
    assert signature is not None
    assert {c.name: (c.dtype, c.nullable) for c in signature.columns} == {
        "tenure": ("float", False),
        "spend": ("float", False),
        "visits": ("int", True),
        "plan": ("category", False),
        "signup": ("datetime", False),
        "last_seen": ("datetime", False),
    }
    np.testing.assert_array_equal(loaded.predict(frame), model.predict(frame))


# -- custom Python models -----------------------------------------------------------------


class Shifted(PythonModel):
    """A regression-like custom model: tenure plus an offset."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def predict(self, frame: Any) -> np.ndarray:
        return frame["tenure"].to_numpy(dtype=np.float64) + self.offset


class Cutoff(PythonModel):
    """A custom classifier with labels and probabilities."""

    def __init__(self, cut: float) -> None:
        self.cut = cut
        self.classes_ = ["stay", "churn"]

    def predict_proba(self, frame: Any) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-(frame["tenure"].to_numpy(dtype=np.float64) - self.cut)))
        return np.column_stack([1.0 - p, p])

    def predict(self, frame: Any) -> np.ndarray:
        return np.asarray(self.classes_)[np.argmax(self.predict_proba(frame), axis=1)]


def test_custom_model_loads_only_when_trusted(registry: ModelRegistry) -> None:
    frame, _ = _frame()
    model = Cutoff(11.5)
    logged = registry.log_model(model, name="m", training_frame=frame)
    assert logged.manifest.needs_trust
    assert logged.manifest.classes == ["stay", "churn"]
    with pytest.raises(InvalidInputError, match=r"holds Python code .*Cutoff.*trust=True"):
        registry.load("m/1")
    loaded = registry.load("m/1", trust=True)
    assert type(loaded.native) is Cutoff
    np.testing.assert_array_equal(loaded.predict(frame), model.predict(frame))
    np.testing.assert_array_equal(loaded.scores(frame), model.predict_proba(frame))


def test_a_project_that_trusts_code_loads_custom_models(tmp_path: Path) -> None:
    frame, _ = _frame()
    settings = _project(tmp_path, ModelsSettings(trust_code=True))
    with ModelRegistry(settings) as registry:
        registry.log_model(Shifted(2.0), name="m", training_frame=frame)
        assert registry.load("m/1").predict(frame)[0] == frame.tenure[0] + 2.0


def test_custom_model_classes_must_be_importable_and_state_json(local: ModelRegistry) -> None:
    class Local(PythonModel):
        def predict(self, frame: Any) -> np.ndarray:
            return np.zeros(len(frame))

    frame, _ = _frame()
    with pytest.raises(InvalidInputError, match=r"importable by name, got .*<locals>\.Local"):
        local.log_model(Local(), training_frame=frame)
    with pytest.raises(InvalidInputError, match=r"get_state\(\) of .*Shifted to return JSON"):
        local.log_model(Shifted(np.array([1.0])), training_frame=frame)  # type: ignore[arg-type]


# -- PyTorch (skipped when torch is not installed: it is an optional extra) ---------------


def _torch_net(columns: int, outputs: int, *, softmax: bool) -> Any:
    torch = pytest.importorskip("torch")
    torch.manual_seed(SEED)
    layers = [torch.nn.Linear(columns, 8), torch.nn.ReLU(), torch.nn.Linear(8, outputs)]
    if softmax:
        layers.append(torch.nn.Softmax(dim=1))
    return torch.nn.Sequential(*layers)


def _torch_scores(net: Any, frame: pd.DataFrame) -> np.ndarray:
    import torch

    with torch.no_grad():
        return net(torch.tensor(frame.to_numpy(dtype=np.float32))).numpy().astype(np.float64)


def test_torch_classifier_round_trip(registry: ModelRegistry) -> None:
    frame, _ = _frame()
    net = _torch_net(3, 2, softmax=True)
    net.classes_ = ["stay", "churn"]
    loaded = _round_trip(registry, net, frame)
    assert loaded.manifest.model_file == "model.pt"
    assert loaded.manifest.classes == ["stay", "churn"]
    expected = _torch_scores(net, frame)
    np.testing.assert_array_equal(loaded.scores(frame), expected)
    labels = np.asarray(["stay", "churn"])[np.argmax(expected, axis=1)]
    np.testing.assert_array_equal(loaded.predict(frame), labels)


def test_torch_regressor_and_unscriptable_module(local: ModelRegistry) -> None:
    torch = pytest.importorskip("torch")
    frame, _ = _frame()
    net = _torch_net(3, 1, softmax=False)
    loaded = _round_trip(local, net, frame)
    assert loaded.manifest.task == "regression"
    np.testing.assert_array_equal(loaded.predict(frame), _torch_scores(net, frame)[:, 0])

    class Unscriptable(torch.nn.Module):  # type: ignore[misc]
        """``**options`` cannot be scripted; the module is traced instead."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = net

        def forward(self, x: Any, **options: Any) -> Any:
            return self.inner(x) * 2.0

    traced = _round_trip(local, Unscriptable(), frame)
    np.testing.assert_array_equal(traced.scores(frame), _torch_scores(net, frame) * 2.0)


def test_torch_models_need_their_input_columns(local: ModelRegistry) -> None:
    net = _torch_net(3, 1, softmax=False)
    with pytest.raises(InvalidInputError, match=r"PyTorch model is stored with its input col"):
        local.log_model(net, no_signature=True)


def test_torch_is_an_optional_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(MissingExtraError, match=r"PyTorch models needs the 'torch' extra"):
        get_flavor("torch").save(object(), tmp_path, ["x"])


# -- ONNX ---------------------------------------------------------------------------------


def _onnx_classifier(frame: pd.DataFrame, label: np.ndarray, *, zipmap: bool = False) -> Any:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit(frame, np.where(label == 1, "churn", "stay"))
    proto = convert_sklearn(
        model,
        initial_types=[("input", FloatTensorType([None, frame.shape[1]]))],
        options={id(model): {"zipmap": zipmap}},
        target_opset=17,
    )
    return model, proto


def _ort(proto: Any, feeds: dict[str, np.ndarray]) -> list[Any]:
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return list(session.run(None, feeds))


def test_onnx_classifier_round_trip(registry: ModelRegistry) -> None:
    frame, label = _frame()
    model, proto = _onnx_classifier(frame, label)
    loaded = _round_trip(registry, proto, frame)
    assert isinstance(loaded.native, OnnxModel)
    assert loaded.manifest.classes == ["churn", "stay"]
    labels, probabilities = _ort(proto, {"input": frame.to_numpy(dtype=np.float32)})
    np.testing.assert_array_equal(loaded.scores(frame), probabilities.astype(np.float64))
    np.testing.assert_array_equal(loaded.predict(frame), labels)
    np.testing.assert_allclose(loaded.scores(frame), model.predict_proba(frame), atol=1e-5)
    options = loaded.native.session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_onnx_from_a_file_or_bytes_and_with_zipmap(local: ModelRegistry, tmp_path: Path) -> None:
    frame, label = _frame()
    _, proto = _onnx_classifier(frame, label, zipmap=True)
    path = tmp_path / "classifier.onnx"
    path.write_bytes(proto.SerializeToString())
    from_path = _round_trip(local, str(path), frame)
    from_bytes = _round_trip(local, path.read_bytes(), frame)
    _, zipped = _ort(proto, {"input": frame.to_numpy(dtype=np.float32)})
    expected = np.asarray([[row["churn"], row["stay"]] for row in zipped])
    np.testing.assert_array_equal(from_path.scores(frame), expected)
    np.testing.assert_array_equal(from_bytes.scores(frame), expected)
    stored = hashlib.sha256(path.read_bytes()).hexdigest()  # stored as it is
    assert from_path.manifest.file("model.onnx").sha256 == stored
    assert from_bytes.manifest.file("model.onnx").sha256 == stored


def test_onnx_pipeline_with_one_input_per_column(local: ModelRegistry) -> None:
    from skl2onnx import to_onnx
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame, _ = _frame()
    frame = frame.astype({"visits": "float64"})
    frame["plan"] = np.random.default_rng(SEED).choice(["basic", "pro"], len(frame))
    model = make_pipeline(
        ColumnTransformer(
            [
                ("num", StandardScaler(), ["tenure", "spend", "visits"]),
                ("cat", OneHotEncoder(), ["plan"]),
            ]
        ),
        Ridge(),
    ).fit(frame, frame.tenure * 3)
    proto = to_onnx(model, frame[:1], target_opset=17)
    loaded = _round_trip(local, proto, frame)
    assert loaded.manifest.task == "regression"
    feeds = {c: frame[[c]].to_numpy() for c in ["tenure", "spend", "visits"]}
    feeds["plan"] = frame[["plan"]].to_numpy(dtype=object)
    (expected,) = _ort(proto, feeds)
    np.testing.assert_array_equal(loaded.scores(frame), expected.astype(np.float64))
    np.testing.assert_allclose(loaded.predict(frame), model.predict(frame), rtol=1e-9)


def test_onnx_weights_in_a_side_file_are_folded_in(local: ModelRegistry, tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    frame, _ = _frame()
    weights = np.random.default_rng(SEED).normal(size=(3, 1)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (expected,) = _ort(proto, {"x": frame.to_numpy(dtype=np.float32)})
    path = tmp_path / "exported.onnx"  # saving moves the weights out of `proto` too
    onnx.save_model(
        proto,
        str(path),
        save_as_external_data=True,
        location="exported.onnx.data",
        size_threshold=0,
    )
    assert (tmp_path / "exported.onnx.data").stat().st_size == weights.nbytes
    loaded = _round_trip(local, path, frame)
    assert loaded.manifest.task == "regression"
    np.testing.assert_array_equal(loaded.scores(frame), expected.astype(np.float64))
    np.testing.assert_array_equal(loaded.predict(frame), expected[:, 0])


def test_bytes_that_are_not_onnx_are_refused(local: ModelRegistry) -> None:
    frame, _ = _frame()
    with pytest.raises(InvalidInputError, match=r"Expected the bytes of an ONNX model"):
        local.log_model(b"\x00not a model", training_frame=frame)
