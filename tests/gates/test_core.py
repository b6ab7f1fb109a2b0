"""The gate runner, its records and the ``gates:`` config (core of the promotion gates).

Real registry, real packages, real metadata stores (SQLite and PostgreSQL).
"""

from __future__ import annotations

import math
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from modelyard.config import Settings, init_project, load_settings
from modelyard.errors import InvalidInputError, NotFoundError
from modelyard.gates.base import GateContext, GateResult
from modelyard.gates.config import CHECK_KEYS, parse_gate_config
from modelyard.gates.metric import MetricGate
from modelyard.gates.records import GateReport, latest_evaluation, list_evaluations, save_report
from modelyard.gates.runner import run_gates
from modelyard.registry import ModelRegistry

NAME = "churn"


def core_frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x2 = rng.normal(size=n)
    y = (x1 + 0.5 * x2 + rng.normal(scale=0.8, size=n) > 0).astype(int)
    return pd.DataFrame({"x1": x1, "x2": x2, "y": y})


@pytest.fixture
def core_registry(settings: Settings) -> Iterator[ModelRegistry]:
    reg = ModelRegistry(settings)
    train = core_frame(seed=1)
    X = train[["x1", "x2"]]
    reg.log_model(LogisticRegression(C=0.01).fit(X, train["y"]), name=NAME, training_frame=X)
    reg.log_model(LogisticRegression(C=1.0).fit(X, train["y"]), name=NAME, training_frame=X)
    reg.set_alias(f"{NAME}/1", "production")
    yield reg
    reg.close()


class core_RaisingGate:
    name = "boom"
    kind = "metric"
    required = True

    def evaluate(self, ctx: GateContext) -> GateResult:
        raise ZeroDivisionError("a gate's own bug")


def test_run_gates_stores_a_report_that_reads_back(
    core_registry: ModelRegistry, settings: Settings
) -> None:
    frame = core_frame(seed=2)
    gates = [MetricGate("auc", min=0.6), MetricGate("log_loss", max=0.01, required=False)]
    report = run_gates(
        settings, f"{NAME}/2", eval=frame, gates=gates, label="y", registry=core_registry
    )
    model = core_registry.load(f"{NAME}/2")
    oracle = roc_auc_score(frame["y"], model.scores(frame[["x1", "x2"]])[:, 1])
    auc = report.results[0]
    assert auc.numbers["value"] == pytest.approx(oracle, abs=1e-12)
    assert auc.passed and not report.results[1].passed and report.passed  # optional failed
    assert report.champion_version == 1 and report.against == "production"
    stored = latest_evaluation(core_registry.db, NAME, 2, "production")
    assert stored == report
    assert latest_evaluation(core_registry.db, NAME, 2, "staging") is None
    assert [r.id for r in list_evaluations(core_registry.db, NAME, version=2)] == [report.id]


def test_no_holder_of_the_alias_means_no_champion(
    core_registry: ModelRegistry, settings: Settings
) -> None:
    report = run_gates(
        settings,
        f"{NAME}/2",
        against="staging",
        eval=core_frame(seed=2),
        gates=[MetricGate("auc", min=0.5)],
        label="y",
        registry=core_registry,
    )
    assert report.champion_version is None and report.passed


def test_a_gate_that_raises_is_a_failed_result_and_the_others_still_run(
    core_registry: ModelRegistry, settings: Settings
) -> None:
    report = run_gates(
        settings,
        f"{NAME}/2",
        eval=core_frame(seed=2),
        gates=[core_RaisingGate(), MetricGate("auc", min=0.5)],
        label="y",
        registry=core_registry,
    )
    boom, auc = report.results
    assert not boom.passed and "ZeroDivisionError" in boom.summary
    assert "a gate's own bug" in boom.summary
    assert auc.passed and not report.passed
    assert latest_evaluation(core_registry.db, NAME, 2, "production") == report


def test_the_eval_digest_changes_with_the_rows(
    core_registry: ModelRegistry, settings: Settings
) -> None:
    frame = core_frame(seed=2)

    def digest(rows: pd.DataFrame) -> str:
        return run_gates(
            settings,
            f"{NAME}/2",
            eval=rows,
            gates=[MetricGate("auc", min=0.5)],
            label="y",
            registry=core_registry,
            store=False,
        ).eval_digest

    changed = frame.copy()
    changed.loc[17, "x1"] += 1e-9
    assert digest(frame) == digest(frame.copy())
    assert digest(changed) != digest(frame)
    assert digest(frame.iloc[:-1]) != digest(frame)


def test_a_missing_label_column_is_named(core_registry: ModelRegistry, settings: Settings) -> None:
    with pytest.raises(InvalidInputError, match="'is_churn'") as info:
        run_gates(
            settings,
            f"{NAME}/2",
            eval=core_frame(seed=2),
            gates=[MetricGate("auc", min=0.5)],
            label="is_churn",
            registry=core_registry,
        )
    assert info.value.loc == "label"


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_eval_files_and_the_yaml_config(
    core_registry: ModelRegistry, settings: Settings, suffix: str
) -> None:
    frame = core_frame(seed=3)
    path = settings.project_dir / f"eval.{suffix}"
    if suffix == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    config_file = settings.project_dir / "modelyard.yaml"
    raw = yaml.safe_load(config_file.read_text()) or {}
    raw["gates"] = {
        NAME: {
            "label": "y",
            "eval": f"eval.{suffix}",
            "checks": [
                {"type": "metric", "metric": "auc", "min": 0.6},
                {"type": "metric", "metric": "accuracy", "min": 0.99, "required": False},
            ],
        }
    }
    config_file.write_text(yaml.safe_dump(raw))
    loaded = msgspec.structs.replace(
        load_settings(settings.project_dir, environ={}), db_url=settings.db_url
    )
    report = run_gates(loaded, f"{NAME}/2", registry=core_registry)
    assert [r.gate for r in report.results] == ["metric:auc", "metric:accuracy"]
    assert report.passed and not report.results[1].passed
    again = run_gates(loaded, f"{NAME}/2", registry=core_registry)
    assert again.config_digest == report.config_digest
    assert again.eval_digest == report.eval_digest
    assert latest_evaluation(core_registry.db, NAME, 2, "production") == again


def test_storage_keeps_every_number_ci_and_detail(core_registry: ModelRegistry) -> None:
    results = (
        GateResult(
            "champion:auc",
            "champion",
            False,
            True,
            "auc diff -0.02 < -0.01 ✗",
            {"diff": -0.02, "p": 1e-300, "rows": 100_000, "nan": math.nan, "none": None},
            (-0.031, -0.009),
            ({"slice": "origin=JFK", "rows": 812, "drop": 0.07},),
        ),
        GateResult("signature", "signature", True, False, "no breaking change", {}, None),
    )
    report = GateReport(NAME, 2, "production", 1, "e" * 64, "c" * 64, results, created_by="bob")
    save_report(core_registry.db, report)
    back = latest_evaluation(core_registry.db, NAME, 2, "production")
    assert back is not None
    assert back.results[0].numbers == {**results[0].numbers, "nan": None}  # NaN is not JSON
    assert back.results[0].ci == (-0.031, -0.009)
    assert back.results[0].details == results[0].details
    assert back.results[1] == results[1]
    assert (back.created_by, back.champion_version, back.passed) == ("bob", 1, False)


def test_the_latest_of_several_evaluations_is_returned(core_registry: ModelRegistry) -> None:
    ids = []
    for passed in (False, True, False):
        report = GateReport(
            NAME,
            2,
            "production",
            1,
            "e" * 64,
            "c" * 64,
            (GateResult("metric:auc", "metric", passed, True, "x", {}, None),),
            created_at=1_000,  # one millisecond for all: the id still orders them
        )
        ids.append(save_report(core_registry.db, report).id)
    latest = latest_evaluation(core_registry.db, NAME, 2, "production")
    assert latest is not None and latest.id == ids[-1] and not latest.passed


# -- config ---------------------------------------------------------------------------------

_GOOD = {"type": "metric", "metric": "auc", "min": 0.7}


def test_unknown_gate_type_is_named_with_a_suggestion() -> None:
    with pytest.raises(InvalidInputError, match="Did you mean 'metric'") as info:
        parse_gate_config("m", {"label": "y", "checks": [_GOOD, {"type": "metrc"}]})
    assert info.value.loc == "gates.m.checks[1].type"


def test_names_are_derived_and_unique() -> None:
    parsed = parse_gate_config(
        "m",
        {
            "label": "y",
            "checks": [_GOOD, _GOOD, {**_GOOD, "name": "mine"}, {"type": "data", "min_rows": 1}],
        },
    )
    assert [g.name for g in parsed.gates] == ["metric:auc", "metric:auc#2", "mine", "data"]
    with pytest.raises(InvalidInputError) as info:
        parse_gate_config("m", {"checks": [{**_GOOD, "name": "a"}, {**_GOOD, "name": "a"}]})
    assert info.value.loc == "gates.m.checks[1].name"


def test_bad_values_are_named_at_their_key() -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_gate_config("m", {"checks": [{"type": "metric", "metric": "auc", "min": "high"}]})
    assert info.value.loc == "gates.m.checks[0].min"
    with pytest.raises(InvalidInputError) as info:
        parse_gate_config("m", {"checks": [{"type": "metric", "metric": "aux", "min": 1}]})
    assert info.value.loc == "gates.m.checks[0].metric" and "'auc'" in str(info.value)
    with pytest.raises(InvalidInputError) as info:
        parse_gate_config("m", {"checks": [{**_GOOD, "required": "yes"}]})
    assert info.value.loc == "gates.m.checks[0].required"
    with pytest.raises(InvalidInputError) as info:
        parse_gate_config("m", {"lable": "y"})
    assert info.value.loc == "gates.m.lable" and "'label'" in str(info.value)


_keys = st.text(string.ascii_lowercase + "_", min_size=1, max_size=12)


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(sorted(CHECK_KEYS)),
    key=_keys,
    position=st.integers(0, 3),
)
def test_any_unknown_key_of_any_check_is_named(kind: str, key: str, position: int) -> None:
    allowed = {"type", "name", "required", *CHECK_KEYS[kind]}
    if key in allowed:
        return
    checks: list[Any] = [dict(_GOOD) for _ in range(position)]
    checks.append({"type": kind, key: 1})
    with pytest.raises(InvalidInputError) as info:
        parse_gate_config("flights", {"label": "y", "checks": checks})
    assert info.value.loc == f"gates.flights.checks[{position}].{key}"


@hsettings(max_examples=60, deadline=None)
@given(key=_keys)
def test_any_unknown_model_key_is_named(key: str) -> None:
    if key in {"label", "metric", "eval", "checks"}:
        return
    with pytest.raises(InvalidInputError) as info:
        parse_gate_config("flights", {key: "x"})
    assert info.value.loc == f"gates.flights.{key}"


def test_the_config_digest_follows_the_declaration() -> None:
    one = parse_gate_config("m", {"label": "y", "checks": [_GOOD]})
    same = parse_gate_config("m", {"checks": [dict(_GOOD)], "label": "y"})
    other = parse_gate_config("m", {"label": "y", "checks": [{**_GOOD, "min": 0.71}]})
    assert one.digest == same.digest != other.digest


def test_every_kind_builds_its_own_modules_class() -> None:
    parsed = parse_gate_config(
        "m",
        {
            "label": "y",
            "metric": "log_loss",
            "checks": [
                {"type": "champion", "margin": 0.02},
                {"type": "slices", "by": ["origin"], "required": False},
                {"type": "latency", "batch_sizes": [1], "p99_ms": 20},
                {"type": "parity", "atol": 1e-6},
                {"type": "signature"},
                {"type": "data", "min_rows": 10},
                {"type": "behaviour", "module": "gate_checks"},
            ],
        },
    )
    assert [type(g).__name__ for g in parsed.gates] == [
        "ChampionGate",
        "SliceGate",
        "LatencyGate",
        "ParityGate",
        "SignatureGate",
        "DataGate",
        "BehaviourGate",
    ]
    assert [g.name for g in parsed.gates] == [
        "champion:log_loss",
        "slices:log_loss",
        "latency",
        "parity",
        "signature",
        "data",
        "behaviour",
    ]
    assert [g.required for g in parsed.gates] == [True, False, True, True, True, True, True]
    with pytest.raises(InvalidInputError) as info:
        parse_gate_config("m", {"checks": [{"type": "champion", "margin": -1}]})
    assert info.value.loc == "gates.m.checks[0].margin"


def test_no_gates_declared_is_not_found(core_registry: ModelRegistry, settings: Settings) -> None:
    with pytest.raises(NotFoundError, match="No gates declared for 'churn'"):
        run_gates(settings, f"{NAME}/2", eval=core_frame(), registry=core_registry)


def test_extra_columns_are_kept_for_gates_and_missing_features_are_bad_input(
    core_registry: ModelRegistry, settings: Settings
) -> None:
    frame = core_frame(seed=2).assign(origin="JFK")
    report = run_gates(
        settings,
        f"{NAME}/2",
        eval=frame,
        gates=[MetricGate("auc", min=0.5)],
        label="y",
        registry=core_registry,
        store=False,
    )
    assert report.passed
    with pytest.raises(InvalidInputError, match="do not fit churn/2's signature") as info:
        run_gates(
            settings,
            f"{NAME}/2",
            eval=frame.drop(columns=["x2"]),
            gates=[MetricGate("auc", min=0.5)],
            label="y",
            registry=core_registry,
        )
    assert info.value.loc == "eval" and "x2" in str(info.value)
    assert latest_evaluation(core_registry.db, NAME, 2, "production") is None


def test_modelyard_yaml_accepts_a_gates_section_and_refuses_a_bad_one(tmp_path: Path) -> None:
    root = tmp_path / "p"
    init_project(root)
    config = root / "modelyard.yaml"
    base = config.read_text()
    config.write_text(base + "\ngates:\n  m:\n    label: y\n    checks: []\n")
    assert load_settings(root, environ={}).gates == {"m": {"label": "y", "checks": []}}
    config.write_text(base + "\ngates: [1, 2]\n")
    with pytest.raises(InvalidInputError, match=r"\$\.gates"):
        load_settings(root, environ={})


_finite_or_not = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**53), 2**53),
    st.none(),
    st.booleans(),
    st.text(max_size=20),
)
_numbers = st.dictionaries(st.text(min_size=1, max_size=10), _finite_or_not, max_size=5)


def core_expected(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: core_expected(v) for k, v in value.items()}
    return value


@hsettings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    numbers=_numbers,
    details=st.lists(_numbers, max_size=3),
    ci=st.one_of(
        st.none(),
        st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6)),
    ),
    passed=st.booleans(),
    summary=st.text(max_size=80) | st.just("auc\x00 0.81"),
)
def test_generated_results_round_trip(
    core_registry: ModelRegistry,
    numbers: dict[str, Any],
    details: list[dict[str, Any]],
    ci: tuple[float, float] | None,
    passed: bool,
    summary: str,
) -> None:
    result = GateResult("g", "metric", passed, True, summary, numbers, ci, tuple(details))
    report = GateReport(NAME, 2, "gen", None, "e" * 64, "c" * 64, (result,))
    save_report(core_registry.db, report)
    back = latest_evaluation(core_registry.db, NAME, 2, "gen")
    assert back is not None and back.id == report.id
    (got,) = back.results
    assert got.numbers == core_expected(numbers)
    assert list(got.details) == [core_expected(d) for d in details]
    # PostgreSQL text holds no NUL character: it is stored as U+FFFD on both engines
    assert got.summary == summary.replace("\x00", "\ufffd")
    assert got.ci == ci and got.passed == passed == back.passed


_any_value = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**6), 10**6),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=8),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)


@hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), kind=st.sampled_from(sorted(CHECK_KEYS)))
def test_any_value_of_any_key_builds_a_gate_or_is_named(kind: str, data: st.DataObject) -> None:
    keys = CHECK_KEYS[kind]
    entry: dict[str, Any] = {"type": kind}
    if keys:
        chosen = data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True))
        for key in chosen:
            entry[key] = data.draw(_any_value)
    try:
        parsed = parse_gate_config("m", {"label": "y", "checks": [entry]})
    except InvalidInputError as exc:
        assert exc.loc is not None and exc.loc.startswith("gates.m.checks[0]"), exc.loc
    else:
        assert len(parsed.gates) == 1
