"""Metric and data gates, each passing and failing against values computed by an oracle.

The oracle is ``sklearn.metrics`` (or pandas) on the same rows and the same model
scores; thresholds are set a hair on either side of the oracle's value.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression

from modelyard.config import Settings, init_project, load_settings
from modelyard.gates.base import Gate, GateResult
from modelyard.gates.data import DataGate
from modelyard.gates.metric import HIGHER_IS_BETTER, MetricGate, bootstrap_ci
from modelyard.gates.runner import run_gates
from modelyard.models.signature import infer_signature
from modelyard.registry import ModelRegistry

EPS = 1e-9


def core_rows(n: int, seed: int, *, positive_shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x2 = rng.uniform(-3, 5, size=n)
    y = (x1 + 0.3 * x2 + rng.normal(scale=0.7, size=n) > positive_shift).astype(int)
    return pd.DataFrame({"x1": x1, "x2": x2, "y": y})


@pytest.fixture
def core_settings(tmp_path: Path) -> Settings:
    root = tmp_path / "project"
    init_project(root)
    return msgspec.structs.replace(
        load_settings(root, environ={}), db_url=f"sqlite:///{tmp_path / 'meta.db'}"
    )


@pytest.fixture
def core_reg(core_settings: Settings) -> Iterator[ModelRegistry]:
    reg = ModelRegistry(core_settings)
    yield reg
    reg.close()


def core_run(
    settings: Settings, reg: ModelRegistry, ref: str, frame: pd.DataFrame, gate: Gate
) -> GateResult:
    report = run_gates(
        settings, ref, eval=frame, gates=[gate], label="y", registry=reg, store=False
    )
    return report.results[0]


# the threshold metrics' oracle reads the model's own ``predict``, not a threshold
_BINARY = {
    "auc": lambda y, p, c: skm.roc_auc_score(y, p),
    "log_loss": lambda y, p, c: skm.log_loss(y, p),
    "brier": lambda y, p, c: skm.brier_score_loss(y, p),
    "accuracy": lambda y, p, c: skm.accuracy_score(y, c),
    "f1": lambda y, p, c: skm.f1_score(y, c),
    "precision": lambda y, p, c: skm.precision_score(y, c),
    "recall": lambda y, p, c: skm.recall_score(y, c),
}


def test_binary_metrics_pass_and_fail_at_the_oracle_value(
    core_settings: Settings, core_reg: ModelRegistry
) -> None:
    train, test = core_rows(600, 1), core_rows(500, 2)
    X = train[["x1", "x2"]]
    core_reg.log_model(LogisticRegression().fit(X, train["y"]), name="clf", training_frame=X)
    native = core_reg.load("clf/1").native
    proba = native.predict_proba(test[["x1", "x2"]])[:, 1]
    predicted = native.predict(test[["x1", "x2"]])
    for metric, oracle_fn in _BINARY.items():
        oracle = float(oracle_fn(test["y"].to_numpy(), proba, predicted))
        if metric in HIGHER_IS_BETTER:
            ok, bad = MetricGate(metric, min=oracle - EPS), MetricGate(metric, min=oracle + EPS)
        else:
            ok, bad = MetricGate(metric, max=oracle + EPS), MetricGate(metric, max=oracle - EPS)
        good = core_run(core_settings, core_reg, "clf/1", test, ok)
        failed = core_run(core_settings, core_reg, "clf/1", test, bad)
        assert good.numbers["value"] == pytest.approx(oracle, rel=1e-12, abs=1e-12), metric
        assert good.passed and not failed.passed, metric
        assert good.ci is not None and good.ci[0] <= good.ci[1], metric
        assert good.ci[0] - 0.05 <= oracle <= good.ci[1] + 0.05, metric


def test_string_classes_use_the_second_class_as_positive(
    core_settings: Settings, core_reg: ModelRegistry
) -> None:
    train, test = core_rows(400, 3), core_rows(300, 4)
    X = train[["x1", "x2"]]
    labels = np.where(train["y"] == 1, "yes", "no")
    core_reg.log_model(LogisticRegression().fit(X, labels), name="txt", training_frame=X)
    frame = test.assign(y=np.where(test["y"] == 1, "yes", "no"))
    proba = core_reg.load("txt/1").native.predict_proba(test[["x1", "x2"]])[:, 1]
    result = core_run(core_settings, core_reg, "txt/1", frame, MetricGate("auc", min=0.5))
    assert result.numbers["value"] == pytest.approx(skm.roc_auc_score(test["y"], proba))
    unknown = core_run(
        core_settings, core_reg, "txt/1", frame.assign(y="maybe"), MetricGate("auc", min=0.5)
    )
    assert not unknown.passed and "maybe" in unknown.summary


def test_regression_metrics_pass_and_fail_at_the_oracle_value(
    core_settings: Settings, core_reg: ModelRegistry
) -> None:
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"x1": rng.normal(size=500), "x2": rng.normal(size=500)})
    frame["y"] = 2 * frame["x1"] - frame["x2"] + rng.normal(scale=0.5, size=500)
    train, test = frame.iloc[:300], frame.iloc[300:].reset_index(drop=True)
    X = train[["x1", "x2"]]
    core_reg.log_model(LinearRegression().fit(X, train["y"]), name="reg", training_frame=X)
    pred = core_reg.load("reg/1").native.predict(test[["x1", "x2"]])
    oracles = {
        "rmse": math.sqrt(skm.mean_squared_error(test["y"], pred)),
        "mae": skm.mean_absolute_error(test["y"], pred),
        "r2": skm.r2_score(test["y"], pred),
    }
    for metric, oracle in oracles.items():
        if metric in HIGHER_IS_BETTER:
            ok, bad = MetricGate(metric, min=oracle - EPS), MetricGate(metric, min=oracle + EPS)
        else:
            ok, bad = MetricGate(metric, max=oracle + EPS), MetricGate(metric, max=oracle - EPS)
        good = core_run(core_settings, core_reg, "reg/1", test, ok)
        assert good.numbers["value"] == pytest.approx(oracle, rel=1e-12), metric
        assert good.passed, metric
        assert not core_run(core_settings, core_reg, "reg/1", test, bad).passed, metric
    auc = core_run(core_settings, core_reg, "reg/1", test, MetricGate("auc", min=0.5))
    assert not auc.passed and "binary classifier" in auc.summary  # a failed result, no crash


def test_auc_on_rows_of_one_class_is_a_failed_result(
    core_settings: Settings, core_reg: ModelRegistry
) -> None:
    train = core_rows(300, 6)
    X = train[["x1", "x2"]]
    core_reg.log_model(LogisticRegression().fit(X, train["y"]), name="clf", training_frame=X)
    ones = train[train["y"] == 1]
    result = core_run(core_settings, core_reg, "clf/1", ones, MetricGate("auc", min=0.5))
    assert not result.passed and "one class" in result.summary


@pytest.mark.parametrize("metric", ["log_loss", "brier", "accuracy", "f1", "precision", "recall"])
def test_the_bootstrap_interval_is_the_plain_resampling_loop(metric: str) -> None:
    rng = np.random.default_rng(13)
    y = rng.integers(0, 2, 300).astype(bool)
    p = np.clip(0.35 * y + 0.65 * rng.uniform(size=300), 0, 1)
    draws = np.random.default_rng(7)
    oracle = []
    for _ in range(100):
        idx = draws.integers(0, 300, 300)
        oracle.append(_BINARY[metric](y[idx], p[idx], p[idx] > 0.5))
    expected = np.quantile(oracle, [0.025, 0.975])
    got = bootstrap_ci(metric, y, p, n_boot=100, alpha=0.05, seed=7)
    assert got == pytest.approx(tuple(expected), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("metric", ["rmse", "mae", "r2"])
def test_the_regression_bootstrap_interval_is_the_plain_loop(metric: str) -> None:
    rng = np.random.default_rng(14)
    y = rng.normal(size=250)
    p = y + rng.normal(scale=0.4, size=250)
    fn = {
        "rmse": lambda a, b: math.sqrt(skm.mean_squared_error(a, b)),
        "mae": skm.mean_absolute_error,
        "r2": skm.r2_score,
    }[metric]
    draws = np.random.default_rng(3)
    oracle = []
    for _ in range(80):
        idx = draws.integers(0, 250, 250)
        oracle.append(fn(y[idx], p[idx]))
    expected = np.quantile(oracle, [0.025, 0.975])
    got = bootstrap_ci(metric, y, p, n_boot=80, alpha=0.05, seed=3)
    assert got == pytest.approx(tuple(expected), rel=1e-9, abs=1e-12)


# -- data -----------------------------------------------------------------------------------


def core_hgb(frame: pd.DataFrame) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(
        frame[["x1", "x2"]], frame["y"]
    )


def test_data_gate_thresholds_against_the_training_rows(
    core_settings: Settings, core_reg: ModelRegistry
) -> None:
    train = core_rows(1_000, 7)
    train.loc[train.sample(frac=0.12, random_state=0).index, "x1"] = np.nan
    X = train[["x1", "x2"]]
    core_reg.log_model(core_hgb(train), name="d", training_frame=X)
    evaluation = core_rows(200, 8)
    missing = float(train["x1"].isna().mean())
    low, high = float(train["x2"].min()), float(train["x2"].max())

    ok = DataGate(min_rows=len(train), max_missing=missing + EPS, ranges={"x2": [low, high]})
    result = core_run(core_settings, core_reg, "d/1", evaluation, ok)
    assert result.passed, result.summary
    assert result.numbers["rows"] == len(train)
    assert result.numbers["max_missing_rate"] == pytest.approx(missing)
    assert result.numbers["max_missing_column"] == "x1"

    for bad, check in (
        (DataGate(min_rows=len(train) + 1), "min_rows"),
        (DataGate(max_missing=missing - EPS), "max_missing"),
        (DataGate(ranges={"x2": [low + EPS, high]}), "ranges"),
        (DataGate(ranges={"x2": [low, high - EPS]}), "ranges"),
        (DataGate(ranges={"nope": [0, 1]}), "ranges"),
    ):
        failed = core_run(core_settings, core_reg, "d/1", evaluation, bad)
        assert not failed.passed and failed.details[0]["check"] == check, check
        assert check in failed.summary


def test_data_gate_label_balance_against_the_champion(
    core_settings: Settings, core_reg: ModelRegistry
) -> None:
    champion_rows = core_rows(1_000, 9)
    shifted = core_rows(1_000, 10, positive_shift=1.2)  # far fewer positives
    for rows in (champion_rows, shifted):
        core_reg.log_model(core_hgb(rows), name="b", training_frame=rows[["x1", "x2"]])
    core_reg.set_alias("b/1", "production")
    rates = [
        float(core_reg.load(f"b/{v}").native.predict_proba(rows[["x1", "x2"]])[:, 1].mean())
        for v, rows in ((1, champion_rows), (2, shifted))
    ]
    gap = abs(rates[1] - rates[0])
    evaluation = core_rows(200, 11)
    ok = core_run(
        core_settings, core_reg, "b/2", evaluation, DataGate(label_balance_tolerance=gap + EPS)
    )
    assert ok.passed, ok.summary
    assert ok.numbers["positive_rate"] == pytest.approx(rates[1])
    assert ok.numbers["champion_positive_rate"] == pytest.approx(rates[0])
    bad = core_run(
        core_settings, core_reg, "b/2", evaluation, DataGate(label_balance_tolerance=gap - EPS)
    )
    assert not bad.passed and bad.details[0]["check"] == "label_balance"


def test_a_package_without_a_profile_fails_the_data_gate(
    core_settings: Settings, core_reg: ModelRegistry
) -> None:
    train = core_rows(200, 12)
    X = train[["x1", "x2"]]
    core_reg.log_model(
        LogisticRegression().fit(X, train["y"]), name="np", signature=infer_signature(X)
    )
    result = core_run(core_settings, core_reg, "np/1", train, DataGate(min_rows=1))
    assert not result.passed and "profile" in result.summary


def test_data_gate_missing_rate_growth_against_the_champion(
    core_settings: Settings, core_reg: ModelRegistry
) -> None:
    before, after = core_rows(1_000, 15), core_rows(1_000, 16)
    before.loc[before.sample(frac=0.02, random_state=1).index, "x2"] = np.nan
    after.loc[after.sample(frac=0.15, random_state=2).index, "x2"] = np.nan
    for rows in (before, after):
        core_reg.log_model(core_hgb(rows), name="m", training_frame=rows[["x1", "x2"]])
    evaluation = core_rows(200, 17)
    growth = float(after["x2"].isna().mean() - before["x2"].isna().mean())
    # no champion yet: nothing to grow from
    alone = core_run(core_settings, core_reg, "m/2", evaluation, DataGate(max_missing_increase=0))
    assert alone.passed and alone.numbers["champion_rows"] is None
    core_reg.set_alias("m/1", "production")
    ok = core_run(
        core_settings, core_reg, "m/2", evaluation, DataGate(max_missing_increase=growth + EPS)
    )
    assert ok.passed, ok.summary
    assert ok.numbers["champion_rows"] == len(before)
    bad = core_run(
        core_settings, core_reg, "m/2", evaluation, DataGate(max_missing_increase=growth - EPS)
    )
    assert not bad.passed
    assert [(d["check"], d["column"]) for d in bad.details] == [("max_missing_increase", "x2")]
    assert bad.details[0]["got"] == pytest.approx(after["x2"].isna().mean())
