"""``optimize``: ONNX export, parity on held-out rows, latency, the serving runtime.

The oracle is always the native model: every converted runtime is compared with the
scores the package stored at packaging. The known traps of docs/architecture.md are each built on
purpose, with fixed seeds, and each must be caught by parity (or refused with a reason),
never served. Latencies are only checked to be measured: speed belongs in benchmarks/.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier

import modelyard.cli.models_optimize  # registers `models optimize` on the CLI
from modelyard.cli.app import main
from modelyard.config import Settings, init_project, load_settings
from modelyard.errors import InvalidInputError, MissingExtraError, ModelError
from modelyard.models.flavors import FLAVORS
from modelyard.models.manifest import Manifest, RuntimeResult, encode_manifest
from modelyard.models.optimize import (
    DEFAULT_ATOL,
    check_parity,
    evaluate_runtimes,
    export_onnx,
    fastest,
    measure_latency,
    optimize_package,
)
from modelyard.models.runtimes import Inputs, OnnxRuntime, build_inputs
from modelyard.models.signature import ColumnSpec, Signature, infer_signature
from modelyard.registry.client import ModelRegistry

assert modelyard.cli.models_optimize.optimize  # imported for its side effect

SEED = 20240611
PARITY_FAILURE = re.compile(r"^max \|diff\| (0\.\d+|1) > 1e-05; \d+ of 500 labels flip$")


def _registry(root: Path, *, trusted: tuple[str, ...] = ()) -> ModelRegistry:
    """A project on SQLite whose packages may hold the ``trusted`` types too."""
    init_project(root)
    settings = load_settings(root, environ={})
    models = msgspec.structs.replace(
        settings.models, trusted_types=(*settings.models.trusted_types, *trusted)
    )
    return ModelRegistry(msgspec.structs.replace(settings, models=models))


@pytest.fixture(autouse=True)
def _one_openmp_thread() -> Iterator[None]:
    """Packaging scores HistGradientBoosting with OpenMP; on a busy 2-core machine its
    thread pool costs ~100 ms a call. Pinned to one thread, as in a serving worker."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[ModelRegistry]:
    """A project on SQLite: the registry itself is tested on every backend elsewhere."""
    reg = _registry(tmp_path / "project")
    yield reg
    reg.close()


def _table(seed: int = SEED, rows: int = 800) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, 5)), columns=[f"x{i}" for i in range(5)])
    frame["visits"] = rng.integers(0, 20, size=rows)
    frame["plan"] = rng.choice(["basic", "pro", "team"], size=rows)
    score = frame.x0 + frame.x1 * frame.x2 + 0.1 * frame.visits + (frame.plan == "pro")
    label = (score + rng.normal(scale=0.5, size=rows) > 1.0).astype(int)
    return frame, label


def _by_name(manifest: Manifest) -> dict[str, RuntimeResult]:
    return {r.name: r for r in manifest.runtimes}


def _numeric(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["plan"])


def _pipeline() -> Pipeline:
    numeric = [f"x{i}" for i in range(5)] + ["visits"]
    columns = ColumnTransformer(
        [
            ("plan", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
            ("numbers", StandardScaler(), numeric),
        ]
    )
    return Pipeline([("columns", columns), ("model", LogisticRegression(max_iter=500))])


# (model, uses the text column, classifier)
MODELS: dict[str, Callable[[], tuple[Any, bool, bool]]] = {
    # 200 trees is the benchmark's size; 30 keeps the suite fast and the graph real
    "hist-gradient-boosting": lambda: (
        HistGradientBoostingClassifier(max_iter=30, random_state=0),
        False,
        True,
    ),
    "random-forest": lambda: (RandomForestClassifier(n_estimators=30, random_state=0), False, True),
    "logistic-regression": lambda: (LogisticRegression(max_iter=500), False, True),
    "one-hot-pipeline": lambda: (_pipeline(), True, True),
    "hgb-regressor": lambda: (
        HistGradientBoostingRegressor(max_iter=30, random_state=0),
        False,
        False,
    ),
}


def _check_table(manifest: Manifest, *, classification: bool) -> None:
    """Every passing runtime is timed; the serving one is the fastest of them."""
    results = _by_name(manifest)
    native = results["native"]
    assert native.status == "ok", native.reason
    assert native.max_abs_diff == 0.0  # the model itself reproduces its stored scores
    passed = [r for r in manifest.runtimes if r.status == "ok"]
    for r in passed:
        assert r.latency_1_row_us is not None and r.latency_1_row_us > 0, r.name
        assert r.latency_1000_rows_us is not None and r.latency_1000_rows_us > 0, r.name
        assert r.rows_checked == 500
        assert (r.label_flips == 0) if classification else (r.label_flips is None)
    best = min(passed, key=lambda r: (r.latency_1_row_us or 0.0, r.latency_1000_rows_us or 0.0))
    assert manifest.serving_runtime == best.name == fastest(manifest.runtimes)


@pytest.mark.parametrize("kind", list(MODELS))
def test_onnx_matches_the_native_model_and_the_fastest_serves(
    registry: ModelRegistry, kind: str, tmp_path: Path
) -> None:
    model, text, classification = MODELS[kind]()
    frame, label = _table()
    features = frame if text else _numeric(frame)
    target = label if classification else frame.x0 * 3 + frame.visits
    model.fit(features, target)
    logged = registry.log_model(model, name="m", training_frame=features)

    manifest = optimize_package(registry, "m/1")

    _check_table(manifest, classification=classification)
    onnx = _by_name(manifest)["onnxruntime-float32"]
    assert onnx.status == "ok", onnx.reason
    assert onnx.max_abs_diff is not None and onnx.max_abs_diff <= DEFAULT_ATOL
    assert onnx.file == "model-float32.onnx"
    assert "onnxruntime-float64" not in _by_name(manifest)  # float32 passed: no fallback
    version = registry.get_version("m/1")
    assert version.package_id == encode_manifest(manifest)[1] != logged.package_id
    assert registry.manifest("m/1") == manifest

    # what serving will do: load the stored graph by path, feed arrays built from records
    reloaded = registry.load("m/1")  # verifies every file, the graph included
    entry = manifest.file("model-float32.onnx")
    path = registry.artifacts.get_file(entry.sha256, tmp_path / "served" / entry.path)
    runtime = OnnxRuntime(path, features.columns.tolist(), classification=classification)
    assert manifest.signature is not None
    records = features.head(3).to_dict(orient="records")
    scores = runtime.scores(build_inputs(manifest.signature, records))
    native = reloaded.scores(features.head(3)).reshape(3, -1)
    np.testing.assert_allclose(scores, native, atol=DEFAULT_ATOL * (1 if classification else 100))


def test_optimize_records_a_new_package_with_an_audit_entry(settings: Settings) -> None:
    """On every metadata backend: the version now names the new package, audited."""
    frame, label = _table(rows=300)
    features = _numeric(frame)
    with ModelRegistry(settings) as registry:
        logged = registry.log_model(
            LogisticRegression(max_iter=500).fit(features, label),
            name="churn",
            training_frame=features,
        )
        registry.set_alias("churn/1", "production")
        manifest = optimize_package(registry, "churn@production")

        version = registry.get_version("churn/1")
        assert version.package_id == encode_manifest(manifest)[1]
        assert version.package_id != logged.package_id
        assert registry.get_version("churn@production").package_id == version.package_id
        stored = registry.manifest("churn/1")
        assert stored.runtimes == manifest.runtimes and stored.runtimes
        assert stored.serving_runtime == manifest.serving_runtime
        old = {f.path for f in logged.manifest.files}
        assert {f.path for f in stored.files} == old | {"model-float32.onnx"}
        last = registry.history("churn")[-1]
        assert last.action == "repackage"
        assert (last.version_from, last.version_to) == (1, 1)
        assert last.reason == f"optimize: serving runtime {manifest.serving_runtime}"


def test_optimizing_again_replaces_the_runtimes(registry: ModelRegistry) -> None:
    frame, label = _table(rows=300)
    features = _numeric(frame)
    registry.log_model(
        LogisticRegression(max_iter=500).fit(features, label), name="m", training_frame=features
    )
    first = optimize_package(registry, "m/1")
    second = optimize_package(registry, "m/1", precisions=("float64",))
    assert {r.name for r in first.runtimes} == {"native", "onnxruntime-float32"}
    assert {r.name for r in second.runtimes} == {"native", "onnxruntime-float64"}
    paths = [f.path for f in second.files]
    assert "model-float64.onnx" in paths and "model-float32.onnx" not in paths
    assert len(paths) == len(set(paths))
    assert _by_name(second)["onnxruntime-float64"].max_abs_diff == pytest.approx(0.0, abs=1e-12)
    assert [e.action for e in registry.history("m")].count("repackage") == 2


@pytest.mark.parametrize(
    ("library", "missing"),
    [("sklearn", "skl2onnx"), ("sklearn", "onnxruntime"), ("xgboost", "onnxmltools")],
)
def test_without_the_onnx_extra_optimize_names_it_and_writes_nothing(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch, library: str, missing: str
) -> None:
    """A module of the extra made unimportable: MissingExtraError, the package untouched."""
    frame, label = _table(rows=200)
    features = _numeric(frame)
    if library == "xgboost":
        import xgboost as xgb

        model: Any = xgb.XGBClassifier(n_estimators=3, max_depth=2, n_jobs=1)
    else:
        model = LogisticRegression(max_iter=500)
    logged = registry.log_model(model.fit(features, label), name="m", training_frame=features)
    objects = registry.artifacts.root + "/objects"
    before = sorted(registry.artifacts.fs.find(objects))
    history = registry.history("m")
    monkeypatch.setitem(sys.modules, missing, None)  # what `import` meets when it is absent
    with pytest.raises(MissingExtraError) as refused:
        optimize_package(registry, "m/1")
    assert "pip install 'modelyard[onnx]'" in str(refused.value)
    assert missing in str(refused.value)
    assert registry.get_version("m/1").package_id == logged.package_id
    assert registry.history("m") == history
    assert sorted(registry.artifacts.fs.find(objects)) == before


def test_a_package_without_held_out_rows_cannot_be_optimized(registry: ModelRegistry) -> None:
    frame, label = _table(rows=100)
    features = _numeric(frame)
    model = LogisticRegression(max_iter=500).fit(features, label)
    registry.log_model(model, name="m", signature=infer_signature(features))
    with pytest.raises(InvalidInputError, match="no held-out rows"):
        optimize_package(registry, "m/1")


# -- XGBoost and LightGBM -------------------------------------------------------------------


def _flavors() -> set[str]:
    return {f.name for f in FLAVORS}


def _bare_manifest(model: Any, frame: pd.DataFrame, *, flavor: str) -> Manifest:
    """What a package would say about ``model``, without packaging it."""
    classes = getattr(model, "classes_", None)
    return Manifest(
        flavor=flavor,
        model_class=f"{type(model).__module__}.{type(model).__qualname__}",
        task="classification" if classes is not None else "regression",
        model_file="model",
        files=[],
        signature=infer_signature(frame),
        outputs=[],
        requirements={},
        created_at=0,
        classes=None if classes is None else [str(c) for c in classes],
    )


def _proba(model: Any, frame: Any) -> np.ndarray:
    return np.asarray(model.predict_proba(frame), dtype=np.float64)


def _evaluate(model: Any, frame: pd.DataFrame, *, flavor: str) -> dict[str, RuntimeResult]:
    manifest = _bare_manifest(model, frame, flavor=flavor)
    assert manifest.signature is not None
    held = frame.head(500)
    evaluated = evaluate_runtimes(
        model,
        manifest,
        build_inputs(manifest.signature, held),
        _proba(model, held),
        scores=_proba,
    )
    return {e.result.name: e.result for e in evaluated}


def _boosters() -> dict[str, Callable[[], tuple[Any, str]]]:
    import lightgbm
    import xgboost

    return {
        "xgboost": lambda: (
            xgboost.XGBClassifier(n_estimators=30, max_depth=4, random_state=0),
            "xgboost-inplace",
        ),
        "lightgbm": lambda: (
            lightgbm.LGBMClassifier(n_estimators=30, random_state=0, verbose=-1),
            "lightgbm-booster",
        ),
    }


@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
def test_boosters_convert_and_their_fast_path_is_exact(library: str) -> None:
    model, fast = _boosters()[library]()
    frame, label = _table()
    features = _numeric(frame)
    model.fit(features, label)

    results = _evaluate(model, features, flavor=library)

    assert results["native"].status == "ok" and results["native"].max_abs_diff == 0.0
    assert results[fast].status == "ok", results[fast].reason
    assert results[fast].max_abs_diff == 0.0  # the wrapper calls the same booster
    onnx = results["onnxruntime-float32"]
    assert onnx.status == "ok", onnx.reason
    assert onnx.max_abs_diff is not None and onnx.max_abs_diff <= DEFAULT_ATOL
    assert onnx.label_flips == 0
    for r in (results["native"], results[fast], onnx):
        assert r.latency_1_row_us and r.latency_1000_rows_us


@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
def test_boosters_optimize_as_packages(registry: ModelRegistry, library: str) -> None:
    if library not in _flavors():
        pytest.skip(f"the {library} flavor is not registered yet; converted above directly")
    model, fast = _boosters()[library]()
    frame, label = _table()
    features = _numeric(frame)
    registry.log_model(model.fit(features, label), name="m", training_frame=features)
    manifest = optimize_package(registry, "m/1")
    _check_table(manifest, classification=True)
    assert _by_name(manifest)["onnxruntime-float32"].status == "ok"
    assert _by_name(manifest)[fast].status == "ok"


# -- the known traps ------------------------------------------------------------------------


def _never_serves(manifest: Manifest, name: str) -> None:
    assert manifest.serving_runtime != name
    assert _by_name(manifest)[name].file is None
    assert all(f.path != f"model-{name.rsplit('-', 1)[1]}.onnx" for f in manifest.files)


def test_trap_a_forest_in_a_float64_graph(registry: ModelRegistry) -> None:
    """scikit-learn compares float32 features with its thresholds; a float64 graph does not.

    Trained on a float32-exact grid, the thresholds are the grid's midpoints; rows held
    out a hair above a midpoint round onto it in float32 (left) but stay above it in
    float64 (right).
    """
    rng = np.random.default_rng(7)
    grid = np.arange(64) / 4.0
    train = pd.DataFrame({"a": rng.choice(grid, 2000), "b": rng.choice(grid, 2000)})
    label = ((train.a * 3 + train.b * 5).astype(int) % 3 == 0).astype(int)
    held = pd.DataFrame(
        {"a": rng.choice(grid, 500) + 0.125 + 1e-9, "b": rng.choice(grid, 500) + 0.125 + 1e-9}
    )
    model = RandomForestClassifier(n_estimators=20, random_state=0).fit(train, label)
    registry.log_model(model, name="grid", training_frame=train, holdout_frame=held)

    right = optimize_package(registry, "grid/1")  # float32, as scikit-learn compares
    float32 = _by_name(right)["onnxruntime-float32"]
    assert float32.status == "ok", float32.reason
    assert float32.label_flips == 0  # ties at 0.5 (ten trees each way) are not flips

    wrong = optimize_package(registry, "grid/1", precisions=("float64",))
    float64 = _by_name(wrong)["onnxruntime-float64"]
    assert float64.status == "failed_parity"
    assert float64.reason is not None and PARITY_FAILURE.match(float64.reason), float64.reason
    assert float64.label_flips and float64.label_flips > 50
    _never_serves(wrong, "onnxruntime-float64")
    assert wrong.serving_runtime == "native"


def test_trap_hist_gradient_boosting_with_categorical_features(tmp_path: Path) -> None:
    """skl2onnx writes HistGradientBoosting's categorical splits as numeric ones."""
    # with categorical_features the model holds a functools.partial (of check_array), which
    # skops loads only when the project says so, as a user would in modelyard.yaml
    with _registry(tmp_path / "project", trusted=("functools.partial",)) as registry:
        _hist_gradient_boosting_with_categories(registry)


def _hist_gradient_boosting_with_categories(registry: ModelRegistry) -> None:
    rng = np.random.default_rng(11)
    frame = pd.DataFrame(rng.normal(size=(2000, 3)), columns=["x0", "x1", "x2"])
    frame["region"] = rng.integers(0, 8, size=2000)
    label = ((frame.region % 3 == 0) ^ (frame.x0 > 0)).astype(int)
    model = HistGradientBoostingClassifier(
        max_iter=30, categorical_features=[3], random_state=0
    ).fit(frame, label)
    registry.log_model(model, name="hgb-cat", training_frame=frame)

    manifest = optimize_package(registry, "hgb-cat/1")

    float32 = _by_name(manifest)["onnxruntime-float32"]
    assert float32.status == "failed_parity"
    assert float32.reason is not None and PARITY_FAILURE.match(float32.reason), float32.reason
    assert float32.max_abs_diff is not None and float32.max_abs_diff > 0.5
    float64 = _by_name(manifest)["onnxruntime-float64"]  # tried next: not even a valid graph
    assert float64.status == "error"
    assert float64.reason is not None and float64.reason.startswith("onnxruntime cannot load it")
    _never_serves(manifest, "onnxruntime-float32")
    assert manifest.serving_runtime == "native"


def test_trap_a_float32_scaler_before_a_tree(registry: ModelRegistry) -> None:
    """Scaling in float32 moves rows across the tree's thresholds; scikit-learn scales in
    float64 and only then rounds to float32.

    Values 1e4 + k/1000 sit about one float32 step apart, and the label alternates every
    three rows, so the tree's thresholds lie between neighbouring rows.
    """
    steps = np.arange(3000)
    frame = pd.DataFrame({"amount": 1e4 + steps * 1e-3})
    label = pd.Series((steps // 3) % 2)
    model = make_pipeline(StandardScaler(), DecisionTreeClassifier(random_state=0))
    model.fit(frame, label)
    registry.log_model(model, name="scaled", training_frame=frame)

    manifest = optimize_package(registry, "scaled/1")

    float32 = _by_name(manifest)["onnxruntime-float32"]
    assert float32.status == "failed_parity"
    assert float32.reason is not None and PARITY_FAILURE.match(float32.reason), float32.reason
    assert float32.label_flips and float32.label_flips > 10
    assert _by_name(manifest)["onnxruntime-float64"].status == "error"
    _never_serves(manifest, "onnxruntime-float32")
    assert manifest.serving_runtime == "native"


def test_trap_xgboost_with_category_columns() -> None:
    """An enable_categorical model takes pandas categories: no numeric feed, an error."""
    import xgboost

    rng = np.random.default_rng(5)
    frame = pd.DataFrame(rng.normal(size=(1000, 2)), columns=["x0", "x1"])
    frame["shop"] = pd.Categorical(rng.choice(list("abcdef"), size=1000))
    label = (frame.shop.isin(["b", "e"]) ^ (frame.x0 > 0)).astype(int)
    model = xgboost.XGBClassifier(
        n_estimators=10, enable_categorical=True, tree_method="hist", random_state=0
    ).fit(frame, label)

    results = _evaluate(model, frame, flavor="xgboost")

    assert results["native"].status == "ok"  # categories rebuilt from the signature
    assert results["native"].max_abs_diff == 0.0
    float32 = results["onnxruntime-float32"]
    assert float32.status == "error"
    assert float32.reason == (
        "export failed: ModelError: XGBoost exports take one numeric matrix, but 'shop' is a "
        "text or category column (a model trained with enable_categorical): the graph has no "
        "feed for them, so the model serves natively"
    )
    float64 = results["onnxruntime-float64"]
    assert (
        float64.reason
        == "export failed: ModelError: onnxmltools exports XGBoost as float32 graphs only"
    )
    assert "xgboost-inplace" not in results  # the fast path takes a numeric matrix too
    assert fastest(list(results.values())) == "native"


# -- the pieces -----------------------------------------------------------------------------


class _Fixed:
    def __init__(self, name: str, out: Any) -> None:
        self.name = name
        self.out = out

    def scores(self, inputs: Inputs) -> np.ndarray:
        if isinstance(self.out, Exception):
            raise self.out
        return np.asarray(self.out, dtype=np.float64)


def _rows(n: int) -> Inputs:
    return Inputs(names=("x",), columns=(np.zeros(n),), matrix=np.zeros((n, 1)))


def test_parity_counts_real_flips_not_ties() -> None:
    native = np.array([[0.5, 0.5], [0.7, 0.3], [0.2, 0.8]])
    close = native + np.array([[1e-7, -1e-7], [0, 0], [0, 0]])
    tie = check_parity(_Fixed("close", close), _rows(3), native, classification=True)
    assert (tie.status, tie.label_flips, tie.reason) == ("ok", 0, None)
    swapped = native[:, ::-1]
    bad = check_parity(_Fixed("swap", swapped), _rows(3), native, classification=True)
    assert bad.status == "failed_parity"
    assert bad.reason == "max |diff| 0.6 > 1e-05; 2 of 3 labels flip"
    assert bad.file is None


def test_parity_on_regressions_scales_with_the_predictions() -> None:
    native = np.array([[1000.0], [-250.0]])
    within = check_parity(
        _Fixed("f32", native + 5e-4), _rows(2), native, classification=False, file="g.onnx"
    )
    assert (within.status, within.label_flips, within.file) == ("ok", None, "g.onnx")
    beyond = check_parity(_Fixed("f32", native + 0.5), _rows(2), native, classification=False)
    assert beyond.reason == "max |diff| 0.5 > 0.01"


def test_parity_reports_errors_shapes_and_nans() -> None:
    native = np.array([[0.4, 0.6], [0.9, 0.1]])
    broken = check_parity(
        _Fixed("boom", RuntimeError("no kernel\nfor Foo")), _rows(2), native, classification=True
    )
    assert (broken.status, broken.reason) == ("error", "RuntimeError: no kernel")
    narrow = check_parity(_Fixed("narrow", [[0.6], [0.1]]), _rows(2), native, classification=True)
    assert narrow.reason == "output shape (2, 1) differs from the native (2, 2)"
    nan = check_parity(
        _Fixed("nan", [[np.nan, 0.6], [0.9, 0.1]]), _rows(2), native, classification=True
    )
    assert nan.status == "failed_parity" and nan.max_abs_diff is None
    assert nan.reason is not None and nan.reason.startswith("max |diff| inf")


def test_latency_is_measured_in_microseconds() -> None:
    runtime = _Fixed("constant", [[1.0]])
    single, batch = measure_latency(runtime, _rows(1), _rows(1000), repeats=(3, 2))
    assert single > 0 and batch > 0


def test_build_inputs_lays_out_arrays_in_signature_order() -> None:
    frame, _ = _table(rows=4)
    signature = infer_signature(frame)
    from_frame = build_inputs(signature, frame[list(reversed(frame.columns))])
    from_records = build_inputs(signature, frame.to_dict(orient="records"))
    from_columns = build_inputs(signature, {c: frame[c].tolist() for c in frame.columns})
    from_arrays = build_inputs(signature, {c: frame[c].to_numpy() for c in frame.columns})
    for inputs in (from_frame, from_records, from_columns, from_arrays):
        assert inputs.names == tuple(frame.columns)
        assert inputs.matrix is None  # a text column: no single numeric matrix
        assert inputs.columns[5].dtype == np.int64
        assert inputs.columns[6].tolist() == frame.plan.tolist()
        np.testing.assert_array_equal(inputs.columns[0], frame.x0.to_numpy())
    numeric = build_inputs(infer_signature(_numeric(frame)), _numeric(frame))
    assert numeric.matrix is not None
    np.testing.assert_array_equal(numeric.matrix, _numeric(frame).to_numpy(dtype=np.float64))
    assert numeric.take([1, 1]).numeric(np.float32).shape == (2, 6)
    with pytest.raises(InvalidInputError, match="Expected a column 'plan'"):
        build_inputs(signature, _numeric(frame))
    with pytest.raises(ModelError, match="text columns"):
        from_frame.numeric()


_FRAME_COLUMNS = {
    "float64": lambda v: pd.Series(v, dtype="float64"),
    "float32": lambda v: pd.Series(v, dtype="float32"),
    "int64": lambda v: pd.Series(np.nan_to_num(v).astype(np.int64)),
    "bool": lambda v: pd.Series(np.nan_to_num(v) > 0),
    "Int64": lambda v: pd.Series([None if np.isnan(x) else int(x) for x in v], dtype="Int64"),
    "Float64": lambda v: pd.Series(v, dtype="Float64"),
    "category": lambda v: pd.Series(np.nan_to_num(v)).astype("category"),
    "text": lambda v: pd.Series([f"{x:.1f}" for x in v], dtype=object),
    "words": lambda v: pd.Series(["a" if x > 0 else "b" for x in np.nan_to_num(v)]),
}


@settings(max_examples=200, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(sorted(_FRAME_COLUMNS)), min_size=1, max_size=5),
    rows=st.integers(0, 4),
    seed=st.integers(0, 2**16),
    shuffle=st.booleans(),
    extra=st.booleans(),
)
def test_generated_frames_build_the_same_inputs_as_column_by_column(
    kinds: list[str], rows: int, seed: int, shuffle: bool, extra: bool
) -> None:
    """The one-block path for float signatures gives exactly what the per-column path
    gives (values, NaN, dtypes, errors), for every column dtype a caller may send."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(len(kinds), rows)) * 100
    values[rng.random(values.shape) < 0.2] = np.nan
    frame = pd.DataFrame(
        {
            f"c{i}": _FRAME_COLUMNS[kind](v)
            for i, (kind, v) in enumerate(zip(kinds, values, strict=True))
        }
    )
    signature = Signature(columns=[ColumnSpec(name=str(c), dtype="float") for c in frame.columns])
    if shuffle:
        frame = frame[list(reversed(frame.columns))]
    if extra:
        frame["other"] = 1.0
    by_column = {str(c): frame[c] for c in frame.columns}  # the per-column path

    def built(data: Any) -> Any:
        try:
            return build_inputs(signature, data)
        except Exception as exc:  # compared by type: both paths must fail alike
            return type(exc)

    got, want = built(frame), built(by_column)
    if isinstance(want, type):
        assert got is want or isinstance(got, type), (got, want)
        return
    assert not isinstance(got, type), got
    assert got.names == want.names
    for a, b in zip(got.columns, want.columns, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(got.matrix, want.matrix)
    assert got.matrix.dtype == want.matrix.dtype and got.matrix.flags.c_contiguous


def test_build_inputs_keeps_missing_values_missing() -> None:
    frame = pd.DataFrame(
        {"n": pd.array([1, None], dtype="Int64"), "s": pd.array(["a", None], dtype="string")}
    )
    signature = infer_signature(frame)
    for data in (frame, [{"n": 1, "s": "a"}, {"n": None, "s": None}]):
        inputs = build_inputs(signature, data)
        assert np.isnan(inputs.columns[0][1]) and inputs.columns[0][0] == 1.0
        assert inputs.columns[1].tolist() == ["a", None]


def test_export_refuses_a_model_it_has_no_converter_for() -> None:
    frame, _ = _table(rows=10)
    manifest = _bare_manifest(object(), _numeric(frame), flavor="custom")
    with pytest.raises(ModelError, match=r"No ONNX converter for builtins\.object"):
        export_onnx(object(), manifest)


class _Rule:
    """A hand-written classifier: no library, so no converter."""

    classes_ = np.array([0, 1])

    def predict_proba(self, frame: Any) -> np.ndarray:
        positive = (frame["x0"].to_numpy() > 0).astype(np.float64)
        return np.column_stack([1.0 - positive, positive])


def test_a_model_without_a_converter_keeps_its_native_runtime() -> None:
    frame, _ = _table(rows=40)
    results = _evaluate(_Rule(), _numeric(frame), flavor="custom")
    assert list(results) == ["native", "onnxruntime"]
    assert results["native"].status == "ok" and results["native"].latency_1_row_us
    assert results["onnxruntime"].status == "error"
    assert results["onnxruntime"].reason is not None
    assert results["onnxruntime"].reason.startswith("No ONNX converter for ")
    assert fastest(list(results.values())) == "native"


def test_a_torch_module_exports_and_matches() -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2), torch.nn.Softmax(dim=1)
    )
    frame, _ = _table(rows=50)
    features = _numeric(frame).astype("float64")
    manifest = _bare_manifest(net, features, flavor="torch")
    runtime = OnnxRuntime(
        export_onnx(net, manifest), features.columns.tolist(), classification=False
    )
    assert manifest.signature is not None
    inputs = build_inputs(manifest.signature, features)
    with torch.no_grad():
        native = net(torch.from_numpy(inputs.numeric(np.float32))).numpy()
    result = check_parity(runtime, inputs, native, classification=False)
    assert result.status == "ok", result.reason


# -- the command ----------------------------------------------------------------------------


def test_the_cli_prints_the_runtime_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("MODELYARD_DB_URL", "MODELYARD_ARTIFACTS", "MODELYARD_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "project"
    frame, label = _table(rows=300)
    features = _numeric(frame)
    with _registry(root) as registry:
        registry.log_model(
            LogisticRegression(max_iter=500).fit(features, label),
            name="churn",
            training_frame=features,
        )
        registry.set_alias("churn/1", "production")

    capsys.readouterr()
    assert main(["--project", str(root), "models", "optimize", "churn@production", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ref"] == "churn/1"
    assert out["package_id"] != out["previous_package_id"]
    names = {r["name"]: r for r in out["runtimes"]}
    assert names["onnxruntime-float32"]["status"] == "ok"
    assert out["serving_runtime"] in names

    monkeypatch.setenv("COLUMNS", "200")
    assert main(["--project", str(root), "models", "optimize", "churn/1", "--atol", "1e-6"]) == 0
    text = capsys.readouterr().out
    assert "runtimes of churn/1" in text
    assert "onnxruntime-float32" in text and "native" in text
    assert re.search(r"churn/1 serves with \S+ \(package [0-9a-f]{12}, was [0-9a-f]{12}\)", text)

    assert (
        main(["--project", str(root), "models", "optimize", "nope/1"]) == 2
    )  # not found: bad input
