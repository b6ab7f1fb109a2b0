"""Runtime gates: latency and parity of the serving runtime, signature compatibility.

Models are real packages logged through the registry of a project in ``tmp_path``
(SQLite), optimized by ``models optimize`` where a test needs an ONNX serving runtime.
The parity oracle is the native model; the trap that diverges is the one
``tests/models/test_optimize.py`` pins (a forest in a float64 graph: scikit-learn compares
float32 features with its thresholds). The signature properties run over generated
column sets on the real packages' manifests.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

from modelyard.config import Settings, init_project, load_settings
from modelyard.errors import InvalidInputError
from modelyard.gates.base import GateContext, GateResult
from modelyard.gates.latency import LatencyGate
from modelyard.gates.parity import ParityGate
from modelyard.gates.runner import run_gates
from modelyard.gates.signature import SignatureGate
from modelyard.models.optimize import optimize_package
from modelyard.models.package import PackagedModel
from modelyard.models.runtimes import NativeRuntime, build_inputs
from modelyard.models.signature import ColumnSpec, DType, Signature
from modelyard.registry.client import ModelRegistry
from modelyard.tracking.digest import digest_frame

GRID = np.arange(64) / 4.0


# -- helpers --------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def rt_one_thread() -> Iterator[None]:
    """Packaging scores with OpenMP; pinned to one thread, as in a serving worker."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def rt_registry(root: Path, **serving: object) -> ModelRegistry:
    """A project on SQLite; ``serving`` overrides its serving settings."""
    init_project(root)
    settings = load_settings(root, environ={})
    if serving:
        settings = msgspec.structs.replace(
            settings, serving=msgspec.structs.replace(settings.serving, **serving)
        )
    return ModelRegistry(settings)


@pytest.fixture
def rt_reg(tmp_path: Path) -> Iterator[ModelRegistry]:
    reg = rt_registry(tmp_path / "project")
    yield reg
    reg.close()


def rt_context(
    registry: ModelRegistry,
    ref: str,
    frame: pd.DataFrame,
    *,
    label: str = "label",
    champion: str | None = None,
    settings: Settings | None = None,
) -> GateContext:
    """What the runner hands a gate: the candidate, maybe a champion, the evaluation rows."""
    return GateContext(
        settings=settings or registry.settings,
        candidate=registry.get_version(ref),
        candidate_model=registry.load(ref),
        champion=None if champion is None else registry.get_version(champion),
        champion_model=None if champion is None else registry.load(champion),
        frame=frame,
        label=label,
        eval_digest=digest_frame(frame).digest,
    )


def rt_grid_forest(registry: ModelRegistry) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A forest on a float32-exact grid, held-out rows on the grid, optimized to float64.

    On the grid float32 and float64 agree, so ``models optimize`` verifies the float64
    graph and serves it. Returns (rows on the grid, rows a hair above the thresholds),
    each with its label: the second is where the float64 graph goes right and
    scikit-learn (float32) goes left.
    """
    rng = np.random.default_rng(7)
    train = pd.DataFrame({"a": rng.choice(GRID, 2000), "b": rng.choice(GRID, 2000)})
    label = ((train.a * 3 + train.b * 5).astype(int) % 3 == 0).astype(int)
    on_grid = pd.DataFrame({"a": rng.choice(GRID, 500), "b": rng.choice(GRID, 500)})
    model = RandomForestClassifier(n_estimators=20, random_state=0).fit(train, label)
    registry.log_model(model, name="grid", training_frame=train, holdout_frame=on_grid)
    manifest = optimize_package(registry, "grid/1", precisions=("float64",))
    assert manifest.serving_runtime == "onnxruntime-float64"  # verified on the held-out rows
    hair = pd.DataFrame(
        {"a": rng.choice(GRID, 400) + 0.125 + 1e-9, "b": rng.choice(GRID, 400) + 0.125 + 1e-9}
    )
    labelled = [
        f.assign(label=((f.a * 3 + f.b * 5).astype(int) % 3 == 0).astype(int))
        for f in (on_grid, hair)
    ]
    return labelled[0], labelled[1]


def rt_boosted(registry: ModelRegistry, name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """A small HistGradientBoosting (it takes missing values) logged under ``name``.

    Trained on ``frame``; returns ``frame`` with its label.
    """
    label = (frame.x0 + 0.5 * frame.x1 > 0).astype(int)
    model = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(frame, label)
    registry.log_model(model, name=name, training_frame=frame)
    return frame.assign(label=label)


def rt_frame(rows: int = 600, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(size=(rows, 3)), columns=["x0", "x1", "x2"])


def rt_with_signature(packaged: PackagedModel, signature: Signature) -> PackagedModel:
    """The same loaded package with another signature in its manifest."""
    manifest = msgspec.structs.replace(packaged.manifest, signature=signature)
    return PackagedModel(packaged.id, manifest, packaged.native, packaged.flavor)


def rt_native_scores(packaged: PackagedModel, frame: pd.DataFrame) -> np.ndarray:
    signature = packaged.manifest.signature
    assert signature is not None
    native = NativeRuntime(packaged.native, signature, packaged.flavor.scores)
    return native.scores(build_inputs(signature, frame.drop(columns=["label"])))


def rt_assert_jsonable(result: GateResult) -> None:
    json.dumps(result.to_dict(), allow_nan=False)


# -- parity ---------------------------------------------------------------------------------


def test_parity_fails_where_the_float64_forest_graph_diverges(rt_reg: ModelRegistry) -> None:
    """optimize verified the float64 graph on grid rows; off-grid rows expose it."""
    _, hair = rt_grid_forest(rt_reg)
    result = ParityGate(atol=1e-5).evaluate(rt_context(rt_reg, "grid/1", hair))
    rt_assert_jsonable(result)
    assert not result.passed and result.kind == "parity" and result.required
    native = rt_native_scores(rt_reg.load("grid/1"), hair)
    served = rt_reg.load("grid/1")
    assert result.numbers["runtime"] == "onnxruntime-float64"
    assert result.numbers["rows"] == len(hair)
    assert result.numbers["max_abs_diff"] > 0.5  # a whole leaf, not rounding
    assert result.numbers["failing_rows"] > 50
    assert result.summary.startswith("onnxruntime-float64 differs from the native model on ")
    assert len(result.details) == 5
    worst = result.details[0]
    # the oracle: the native scores of the worst row, recomputed here
    np.testing.assert_array_equal(worst["native"], native[worst["row"]])
    assert abs(np.asarray(worst["served"]) - native[worst["row"]]).max() == pytest.approx(
        result.numbers["max_abs_diff"]
    )
    assert served.manifest.serving_runtime == "onnxruntime-float64"


def test_parity_passes_where_the_graph_matches(rt_reg: ModelRegistry) -> None:
    on_grid, hair = rt_grid_forest(rt_reg)
    result = ParityGate().evaluate(rt_context(rt_reg, "grid/1", on_grid))
    assert result.passed, result.summary
    assert result.numbers["max_abs_diff"] <= 1e-5 and result.numbers["failing_rows"] == 0
    # float32, as scikit-learn compares, matches on the rows that broke float64
    optimize_package(rt_reg, "grid/1", precisions=("float32",))
    matched = ParityGate().evaluate(rt_context(rt_reg, "grid/1", hair))
    assert matched.passed, matched.summary
    assert matched.numbers["runtime"] == "onnxruntime-float32"
    assert matched.numbers["max_abs_diff"] <= 1e-5
    rt_assert_jsonable(matched)


def test_parity_tolerance_is_atol_plus_rtol(rt_reg: ModelRegistry) -> None:
    _, hair = rt_grid_forest(rt_reg)
    loose = ParityGate(atol=1.0).evaluate(rt_context(rt_reg, "grid/1", hair))
    assert loose.passed and loose.numbers["max_abs_diff"] > 0.5  # measured, within 1.0


def test_parity_is_trivial_when_the_server_runs_the_native_model(tmp_path: Path) -> None:
    with rt_registry(tmp_path / "p") as reg:
        frame = rt_boosted(reg, "plain", rt_frame())  # never optimized: serves natively
        result = ParityGate().evaluate(rt_context(reg, "plain/1", frame))
        assert result.passed and "native model: nothing to compare" in result.summary
        assert result.numbers["runtime"] == "native" and result.numbers["rows"] == len(frame)
    with rt_registry(tmp_path / "q", runtime="native") as reg:  # serving.runtime: native
        _, hair = rt_grid_forest(reg)
        result = ParityGate().evaluate(rt_context(reg, "grid/1", hair))
        assert result.passed and result.numbers["runtime"] == "native"


def test_parity_and_latency_name_a_missing_column_instead_of_raising(
    rt_reg: ModelRegistry,
) -> None:
    frame = rt_boosted(rt_reg, "plain", rt_frame()).drop(columns=["x2"])
    for gate in (ParityGate(), LatencyGate(repeats=5)):
        result = gate.evaluate(rt_context(rt_reg, "plain/1", frame))
        assert not result.passed and "'x2'" in result.summary, result.summary


# -- latency --------------------------------------------------------------------------------


def test_latency_measures_the_serving_runtime_per_batch_size(rt_reg: ModelRegistry) -> None:
    on_grid, _ = rt_grid_forest(rt_reg)
    gate = LatencyGate(batch_sizes=(1, 64), p50_ms=10_000, p99_ms=10_000, repeats=40)
    result = gate.evaluate(rt_context(rt_reg, "grid/1", on_grid))
    rt_assert_jsonable(result)
    assert result.passed, result.summary
    assert result.numbers["runtime"] == "onnxruntime-float64"
    assert [d["batch_size"] for d in result.details] == [1, 64]
    for size in (1, 64):
        p50, p99, mean = (result.numbers[f"{k}@{size}"] for k in ("p50_ms", "p99_ms", "mean_ms"))
        assert 0 < p50 <= p99 and mean > 0
        assert result.numbers[f"calls@{size}"] == gate.repeats_for(size)
    assert gate.repeats_for(1) == 40 and gate.repeats_for(64) == 40  # min 50, capped at repeats
    assert LatencyGate().repeats_for(1) == 200 and LatencyGate().repeats_for(256) == 50


def test_latency_fails_naming_the_batch_size_and_the_budget(rt_reg: ModelRegistry) -> None:
    frame = rt_boosted(rt_reg, "plain", rt_frame())
    # 1 ns for 256 rows: no runtime meets it; the batch-1 p99 budget is generous
    gate = LatencyGate(batch_sizes=(1, 256), p99_ms=10_000, p50_ms=None, repeats=20)
    assert gate.evaluate(rt_context(rt_reg, "plain/1", frame)).passed
    tight = LatencyGate(batch_sizes=(1, 256), p50_ms=1e-6, repeats=20)
    result = tight.evaluate(rt_context(rt_reg, "plain/1", frame))
    assert not result.passed
    assert result.numbers["runtime"] == "native"
    assert "batch 1: p50 " in result.summary and "batch 256: p50 " in result.summary
    assert "> 1e-06 ms budget" in result.summary
    assert result.numbers["p50_ms_budget"] == 1e-6


def test_latency_follows_the_projects_serving_runtime(tmp_path: Path) -> None:
    with rt_registry(tmp_path / "p", runtime="native") as reg:
        on_grid, _ = rt_grid_forest(reg)  # optimized, but the project serves natively
        result = LatencyGate(batch_sizes=(1,), repeats=5).evaluate(
            rt_context(reg, "grid/1", on_grid)
        )
        assert result.passed and result.numbers["runtime"] == "native"


def test_bad_arguments_are_invalid_input_naming_the_key() -> None:
    for build, loc in (
        (lambda: LatencyGate(batch_sizes=(0,)), "batch_sizes"),
        (lambda: LatencyGate(repeats=0), "repeats"),
        (lambda: ParityGate(atol=-1), "atol"),
        (lambda: ParityGate(rtol=float("nan")), "rtol"),
    ):
        with pytest.raises(InvalidInputError) as caught:
            build()
        assert caught.value.loc == loc


def test_run_gates_stores_the_runtime_gates_from_the_config(tmp_path: Path) -> None:
    """Declared in modelyard.yaml, run by run_gates: the diverging graph blocks."""
    root = tmp_path / "project"
    with rt_registry(root) as reg:
        _, hair = rt_grid_forest(reg)
        hair.to_parquet(root / "eval.parquet")
        reg.set_alias("grid/1", "production")
    config = root / "modelyard.yaml"
    declared = yaml.safe_load(config.read_text()) or {}
    declared["gates"] = {
        "grid": {
            "label": "label",
            "eval": "eval.parquet",
            "checks": [
                {"type": "latency", "batch_sizes": [1, 32], "p99_ms": 10_000, "repeats": 5},
                {"type": "parity", "atol": 1.0e-5},
                {"type": "signature"},
            ],
        }
    }
    config.write_text(yaml.safe_dump(declared))
    report = run_gates(load_settings(root, environ={}), "grid/1")
    by_kind = {r.kind: r for r in report.results}
    assert set(by_kind) == {"latency", "parity", "signature"}
    assert by_kind["latency"].passed and by_kind["signature"].passed
    assert not by_kind["parity"].passed and not report.passed
    assert by_kind["parity"].numbers["runtime"] == "onnxruntime-float64"


# -- signature ------------------------------------------------------------------------------


def test_signature_without_a_champion_is_not_applicable(rt_reg: ModelRegistry) -> None:
    frame = rt_boosted(rt_reg, "plain", rt_frame())
    result = SignatureGate().evaluate(rt_context(rt_reg, "plain/1", frame))
    assert result.passed and result.summary == "no champion to compare"
    assert result.numbers == {"applicable": False}


def test_signature_of_real_versions(rt_reg: ModelRegistry) -> None:
    """v2 drops x2 (breaking); v3 adds a nullable column (fine); v4 a required one (not)."""
    base = rt_frame()
    frame = rt_boosted(rt_reg, "m", base)
    rt_boosted(rt_reg, "m", base.drop(columns=["x2"]))
    with_null = base.assign(extra=np.where(np.arange(len(base)) % 7 == 0, np.nan, 1.0))
    rt_boosted(rt_reg, "m", with_null)
    rt_boosted(rt_reg, "m", base.assign(extra=1.0))
    removed = SignatureGate().evaluate(rt_context(rt_reg, "m/2", frame, champion="m/1"))
    assert not removed.passed
    assert removed.summary == (
        "1 breaking change vs champion m/1: column 'x2' is missing (the champion takes it)"
    )
    assert removed.details == (
        {
            "kind": "removed",
            "column": "x2",
            "change": "column 'x2' is missing (the champion takes it)",
            "breaking": True,
        },
    )
    added = SignatureGate().evaluate(rt_context(rt_reg, "m/3", frame, champion="m/1"))
    assert added.passed, added.summary
    assert added.summary == "compatible with champion m/1 (new nullable column 'extra')"
    assert added.numbers["breaking"] == 0 and added.numbers["allowed_changes"] == 1
    required = SignatureGate().evaluate(rt_context(rt_reg, "m/4", frame, champion="m/1"))
    assert not required.passed and "'extra' (float) is new" in required.summary
    same = SignatureGate().evaluate(rt_context(rt_reg, "m/1", frame, champion="m/1"))
    assert same.passed and same.details == () and same.numbers["champion_version"] == 1
    rt_assert_jsonable(removed)


DTYPES: list[DType] = ["float", "int", "bool", "string", "category", "datetime"]
NAMES = st.lists(
    st.text(alphabet="abcdefgh_", min_size=1, max_size=6), min_size=1, max_size=6, unique=True
)


@st.composite
def rt_signatures(draw: st.DrawFn) -> Signature:
    columns = []
    for name in draw(NAMES):
        dtype = draw(st.sampled_from(DTYPES))
        categories = None
        if dtype == "category":
            categories = draw(st.lists(st.sampled_from("pqrst"), min_size=1, unique=True))
        columns.append(
            ColumnSpec(name=name, dtype=dtype, nullable=draw(st.booleans()), categories=categories)
        )
    return Signature(columns=columns)


@pytest.fixture(scope="module")
def rt_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GateContext]:
    """One real package as candidate and champion; properties swap signatures into it."""
    reg = rt_registry(tmp_path_factory.mktemp("sig") / "project")
    frame = rt_boosted(reg, "m", rt_frame(rows=200))
    yield rt_context(reg, "m/1", frame, champion="m/1")
    reg.close()


def rt_signature_result(ctx: GateContext, champion: Signature, candidate: Signature) -> GateResult:
    assert ctx.champion_model is not None
    swapped = dataclasses.replace(
        ctx,
        candidate_model=rt_with_signature(ctx.candidate_model, candidate),
        champion_model=rt_with_signature(ctx.champion_model, champion),
    )
    return SignatureGate().evaluate(swapped)


PROPERTY = hyp_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY
@given(champion=rt_signatures(), data=st.data())
def test_a_removed_or_retyped_column_always_fails(
    rt_pair: GateContext, champion: Signature, data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(champion.columns) - 1))
    target = champion.columns[index]
    removed = Signature(columns=[c for i, c in enumerate(champion.columns) if i != index])
    result = rt_signature_result(rt_pair, champion, removed)
    assert not result.passed
    assert {"kind": "removed", "column": target.name} in [
        {"kind": d["kind"], "column": d["column"]} for d in result.details
    ]
    assert repr(target.name) in result.summary
    other = data.draw(st.sampled_from([d for d in DTYPES if d != target.dtype]))
    columns = list(champion.columns)
    columns[index] = ColumnSpec(name=target.name, dtype=other, nullable=True)
    result = rt_signature_result(rt_pair, champion, Signature(columns=columns))
    assert not result.passed
    assert [d["column"] for d in result.details if d["kind"] == "type"] == [target.name]
    assert f"{target.dtype} in the champion, {other} here" in result.summary


@PROPERTY
@given(champion=rt_signatures(), dtype=st.sampled_from(DTYPES), data=st.data())
def test_adding_a_nullable_column_never_fails(
    rt_pair: GateContext, champion: Signature, dtype: DType, data: st.DataObject
) -> None:
    name = data.draw(st.text(alphabet="xyz", min_size=1, max_size=4))
    new = ColumnSpec(name=f"new_{name}", dtype=dtype, nullable=True)
    position = data.draw(st.integers(0, len(champion.columns)))
    columns = list(champion.columns)
    columns.insert(position, new)
    result = rt_signature_result(rt_pair, champion, Signature(columns=columns))
    assert result.passed, result.summary
    assert [d["breaking"] for d in result.details] == [False]
    # the same column not nullable is a column old requests cannot fill: breaking
    columns[position] = ColumnSpec(name=new.name, dtype=dtype)
    strict = rt_signature_result(rt_pair, champion, Signature(columns=columns))
    assert not strict.passed and repr(new.name) in strict.summary


@PROPERTY
@given(champion=rt_signatures(), data=st.data())
def test_narrowed_categories_or_nullability_fail(
    rt_pair: GateContext, champion: Signature, data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(champion.columns) - 1))
    target = champion.columns[index]
    if target.dtype == "category" and target.categories and len(target.categories) > 1:
        narrowed = msgspec.structs.replace(target, categories=target.categories[1:])
        kind = "categories"
    elif target.nullable:
        narrowed = msgspec.structs.replace(target, nullable=False)
        kind = "nullability"
    else:  # widening is always fine
        narrowed = msgspec.structs.replace(target, nullable=True)
        kind = ""
    columns = list(champion.columns)
    columns[index] = narrowed
    result = rt_signature_result(rt_pair, champion, Signature(columns=columns))
    assert result.passed == (kind == "")
    assert [d["kind"] for d in result.details] == ([kind] if kind else [])
