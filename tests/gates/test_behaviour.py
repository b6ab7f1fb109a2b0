"""Behavioural tests and their gate on a real packaged model whose behaviour is known.

The model is a logistic regression on ``x1`` (strong, positive) and ``x2``; ``region``
rides along in the evaluation rows but is no feature of the model, so any perturbation
of it must leave every score unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard.errors import InvalidInputError
from modelyard.gates.base import GateContext
from modelyard.gates.behaviour import (
    BehaviourGate,
    DirectionalTest,
    InvarianceTest,
    MinimumFunctionalityTest,
    ModelScorer,
)
from tests.gates.test_champion_slices import LABEL, stats_context, stats_data

FEATURES = ["x1", "x2"]


@pytest.fixture(scope="module")
def stats_train() -> pd.DataFrame:
    return stats_data(3000, 0)


def stats_ctx(tmp_path: Path, train: pd.DataFrame) -> GateContext:
    model = LogisticRegression(max_iter=1000).fit(train[FEATURES], train[LABEL])
    frame = stats_data(1000, 1)[["x1", "x2", "region", LABEL]]
    return stats_context(tmp_path, frame, (model, FEATURES), None, train)


def test_invariance_holds_for_an_unused_column_and_breaks_for_a_used_one(
    tmp_path: Path, stats_train: pd.DataFrame
) -> None:
    ctx = stats_ctx(tmp_path, stats_train)
    scorer, frame = ModelScorer(ctx.candidate_model), ctx.frame.drop(columns=[LABEL])
    for perturb in ({"shuffle": True}, {"add": 7}, {"set": 2}, lambda s: s * 0):
        outcome = InvarianceTest("region", perturb, epsilon=0.0).run(scorer, frame)
        assert outcome.passed and outcome.checked == 1000 and outcome.failed == 0
    broken = InvarianceTest("x1", {"add": 0.5}, epsilon=0.01).run(scorer, frame)
    before, after = scorer.scores(frame), scorer.scores(frame.assign(x1=frame["x1"] + 0.5))
    assert not broken.passed and broken.failed == int((np.abs(after - before) > 0.01).sum())
    first = broken.examples[0]
    assert first["column"] == "x1" and first["perturbed"] == pytest.approx(first["value"] + 0.5)
    assert abs(first["change"]) > 0.01 and len(broken.examples) == 5
    with pytest.raises(InvalidInputError, match="perturb"):
        InvarianceTest("x1", {"scale": 2})


def test_directional_follows_the_sign_of_the_coefficient(
    tmp_path: Path, stats_train: pd.DataFrame
) -> None:
    ctx = stats_ctx(tmp_path, stats_train)
    scorer, frame = ModelScorer(ctx.candidate_model), ctx.frame.drop(columns=[LABEL])
    assert DirectionalTest("x1", delta=1.0, direction="increase").run(scorer, frame).passed
    wrong = DirectionalTest("x1", delta=1.0, direction="decrease").run(scorer, frame)
    assert not wrong.passed and wrong.failed == 1000
    assert wrong.examples[0]["change"] > 0
    with pytest.raises(InvalidInputError, match="direction"):
        DirectionalTest("x1", 1.0, direction="up")


def test_minimum_functionality_cases_by_prediction_and_by_predicate(
    tmp_path: Path, stats_train: pd.DataFrame
) -> None:
    ctx = stats_ctx(tmp_path, stats_train)
    scorer = ModelScorer(ctx.candidate_model)
    cases = [{"x1": 4.0, "x2": 0.0}, {"x1": -4.0, "x2": 0.0}]
    assert MinimumFunctionalityTest(cases, [1, 0]).run(scorer, ctx.frame).passed
    wrong = MinimumFunctionalityTest(cases, [1, 1]).run(scorer, ctx.frame)
    assert not wrong.passed and wrong.failed == 1
    assert wrong.examples[0] == {"case": 1, "expected": 1, "got": 0, "input": cases[1]}
    confident = MinimumFunctionalityTest(cases, lambda score: score > 0.9).run(scorer, ctx.frame)
    assert not confident.passed and confident.examples[0]["case"] == 1
    with pytest.raises(InvalidInputError, match="one expected answer per case"):
        MinimumFunctionalityTest(cases, [1])


def test_behaviour_gate_loads_checks_from_the_project_module(
    tmp_path: Path, stats_train: pd.DataFrame
) -> None:
    ctx = stats_ctx(tmp_path, stats_train)
    project = ctx.settings.project_dir
    (project / "stats_gate_checks.py").write_text(
        "from modelyard.gates.behaviour import DirectionalTest, InvarianceTest\n"
        "checks = [\n"
        "    InvarianceTest('region', {'shuffle': True}, epsilon=0.0),\n"
        "    DirectionalTest('x1', delta=1.0, direction='increase'),\n"
        "]\n"
    )
    result = BehaviourGate(module="stats_gate_checks").evaluate(ctx)
    assert result.passed and result.kind == "behaviour" and result.numbers["tests"] == 2
    assert result.numbers["per_test"]["invariance:region"] == {"checked": 1000, "failed": 0}

    (project / "stats_gate_checks_bad.py").write_text(
        "from modelyard.gates.behaviour import DirectionalTest, InvarianceTest\n"
        "checks = [\n"
        "    InvarianceTest('x1', {'shuffle': True}, epsilon=0.01),\n"
        "    DirectionalTest('x1', delta=1.0, direction='increase'),\n"
        "    InvarianceTest('origin', {'shuffle': True}),\n"
        "]\n"
    )
    failed = BehaviourGate(module="stats_gate_checks_bad").evaluate(ctx)
    assert not failed.passed and failed.numbers["failed_tests"] == 2
    assert [d["test"] for d in failed.details if not d["passed"]] == [
        "invariance:x1",
        "invariance:origin",
    ]
    assert "'origin' is not in the evaluation data" in failed.details[1]["summary"]
    assert failed.details[0]["examples"]  # the first failing rows
    json.dumps(failed.to_dict(), allow_nan=False)


def test_behaviour_gate_reports_a_broken_module_and_unscorable_perturbations(
    tmp_path: Path, stats_train: pd.DataFrame
) -> None:
    ctx = stats_ctx(tmp_path, stats_train)
    project = ctx.settings.project_dir
    (project / "stats_raises.py").write_text("raise RuntimeError('boom')\n")
    (project / "stats_no_checks.py").write_text("checks = 3\n")
    broken = BehaviourGate(module="stats_raises").evaluate(ctx)
    assert not broken.passed and "RuntimeError: boom" in broken.summary
    assert "checks = [" in BehaviourGate(module="stats_no_checks").evaluate(ctx).summary
    absent = BehaviourGate(module="stats_absent_module").evaluate(ctx)
    assert not absent.passed and "stats_absent_module" in absent.summary
    text = BehaviourGate([InvarianceTest("x1", {"set": "abc"})]).evaluate(ctx)
    assert not text.passed and "could not run" in text.details[0]["summary"]
    with pytest.raises(InvalidInputError, match="exactly one"):
        BehaviourGate()


def test_multiclass_models_are_checked_on_every_class_probability(
    tmp_path: Path, stats_train: pd.DataFrame
) -> None:
    train = stats_train.assign(y=np.digitize(stats_train["x1"], [-0.5, 0.5]))  # 3 classes
    model = LogisticRegression(max_iter=1000).fit(train[FEATURES], train[LABEL])
    frame = train[["x1", "x2", "region", LABEL]].head(300)
    ctx = stats_context(tmp_path, frame, (model, FEATURES), None, train)
    scorer, rows = ModelScorer(ctx.candidate_model), frame.drop(columns=[LABEL])
    assert scorer.scores(rows).shape == (300, 3)
    assert InvarianceTest("region", {"shuffle": True}, epsilon=0.0).run(scorer, rows).passed
    moved = InvarianceTest("x1", {"add": 1.0}, epsilon=0.01).run(scorer, rows)
    probabilities = model.predict_proba(rows[FEATURES])
    shifted = model.predict_proba(rows[FEATURES].assign(x1=rows["x1"] + 1.0))
    assert moved.failed == int((np.abs(shifted - probabilities).max(axis=1) > 0.01).sum())
    assert abs(moved.examples[0]["change"]) > 0.01
    directional = DirectionalTest("x1", 1.0).run(scorer, rows)
    assert not directional.passed and "one score per row" in directional.summary
    cases = [{"x1": 3.0, "x2": 0.0}]
    assert MinimumFunctionalityTest(cases, [2]).run(scorer, rows).passed
    assert MinimumFunctionalityTest(cases, lambda p: p.argmax() == 2).run(scorer, rows).passed
