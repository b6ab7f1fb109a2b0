"""The agent's canary on a real prediction log: outcomes, looks, decisions, promotion.

A tiny project (two features, a binary label) registers LogisticRegression versions of
``m``: ``good`` (fit on the true relation) and ``bad`` (fit with the strong feature
shuffled). Traffic is written through the predlog writer the way the server writes it
(routes ``primary``/``canary``, versions, per-request latencies) with feedback labels
drawn from the true probabilities; the oracles recompute each per-row outcome from the
records written, independently of the module.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sklearn.linear_model import LinearRegression, LogisticRegression

from modelyard.agent import canary
from modelyard.agent.canary import (
    CanaryLook,
    canary_outcomes,
    check_traffic,
    finish_canary,
    finish_canary_result,
    look,
    start_canary,
)
from modelyard.agent.records import Action
from modelyard.config import (
    AgentModelSettings,
    AgentSettings,
    CanarySettings,
    Settings,
    TrafficSettings,
    init_project,
    load_settings,
)
from modelyard.errors import ConflictError, InvalidInputError
from modelyard.gates.runner import run_gates
from modelyard.gates.sequential import SequentialTest, combine_decisions
from modelyard.gates.signature import SignatureGate
from modelyard.registry import ModelRegistry
from modelyard.serving.app import create_app
from modelyard.store.predlog import FeedbackRecord, PredictionLog, PredictionRecord
from tests.serving.conftest import LiveServer

NAME = "m"
SEED = 20261206
T0 = datetime(2026, 3, 2, tzinfo=UTC)
T0_US = int(T0.timestamp() * 1e6)
FEATURES = ["x1", "x2"]


def true_p(frame: pd.DataFrame) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(2.0 * frame["x1"] - frame["x2"])))


def draw(rng: np.random.Generator, rows: int) -> tuple[pd.DataFrame, np.ndarray]:
    frame = pd.DataFrame({"x1": rng.normal(size=rows), "x2": rng.normal(size=rows)})
    return frame, (rng.uniform(size=rows) < true_p(frame)).astype(int)


@dataclasses.dataclass
class Project:
    settings: Settings
    registry: ModelRegistry
    models: dict[int, LogisticRegression]  # version -> native model

    @property
    def log_dir(self) -> Path:
        return self.settings.project_dir / self.settings.serving.log_dir


@pytest.fixture(scope="module")
def _base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, LogisticRegression]]:
    """v1 good (production), v2 bad, v3 good again (the same fit as v1), v4 another good."""
    root = tmp_path_factory.mktemp("canary") / "project"
    init_project(root)
    rng = np.random.default_rng(SEED)
    frame, y = draw(rng, 3000)
    good = LogisticRegression().fit(frame, y)
    shuffled = frame.assign(x1=rng.permutation(frame["x1"].to_numpy()))
    bad = LogisticRegression().fit(shuffled, y)
    other, y2 = draw(rng, 3000)
    good2 = LogisticRegression().fit(other, y2)
    models = {1: good, 2: bad, 3: good, 4: good2}
    registry = ModelRegistry(load_settings(root, environ={}))
    try:
        for version, model in models.items():
            assert registry.log_model(model, name=NAME, training_frame=frame).version == version
        registry.set_alias(f"{NAME}/1", "production")
    finally:
        registry.close()
    return root, models


def configure(settings: Settings, *, weight: float = 0.5, **canary_fields: Any) -> Settings:
    """``settings`` with a canary traffic policy and the agent's canary settings for m."""
    fields: dict[str, Any] = {"min_samples": 100, **canary_fields}
    agent = AgentSettings(models={NAME: AgentModelSettings(canary=CanarySettings(**fields))})
    traffic = {NAME: TrafficSettings(canary="canary", canary_weight=weight)}
    serving = msgspec.structs.replace(settings.serving, traffic=traffic)
    return msgspec.structs.replace(settings, agent=agent, serving=serving)


@pytest.fixture
def project(
    _base: tuple[Path, dict[int, LogisticRegression]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Project]:
    base, models = _base
    root = tmp_path / "project"
    shutil.copytree(base, root)
    monkeypatch.setenv("MODELYARD_ACTOR", "tester")
    settings = configure(load_settings(root, environ={}))
    registry = ModelRegistry(settings)
    yield Project(settings, registry, models)
    registry.close()


def make_action(**fields: Any) -> Action:
    values: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "model": NAME,
        "kind": "retrain",
        "state": "canary",
        "incident_id": None,
        "incident_opened_us": None,
        "rule": None,
        "champion_version": 1,
        "candidate_version": 2,
        "pipeline": None,
        "params": {},
        "window_start_us": None,
        "window_end_us": None,
        "pipeline_run_id": None,
        "gate_evaluation_id": None,
        "canary_started_us": T0_US,
        "decision": None,
        "reason": None,
        "detail": {},
        "created_us": T0_US,
        "updated_us": T0_US,
        "recorded_us": T0_US,
        "created_by": "tester",
    }
    values.update(fields)
    return Action(**values)


def after(action: Action, result: CanaryLook) -> Action:
    """The action as the agent keeps it after a look."""
    return dataclasses.replace(action, detail={**action.detail, "canary": result.state})


@dataclasses.dataclass
class Written:
    """What was written, per request: for the oracles and for late labels."""

    route: str
    version: int
    record_id: str
    time_us: int
    proba_1: list[float]
    labels: list[int]
    latency_us: int


def write_traffic(
    project: Project,
    arms: dict[str, int],
    *,
    requests: int,
    start_us: int = T0_US + 1,
    step_us: int = 1_000_000,
    rows: int = 2,
    seed: int = SEED,
    latency_ms: dict[str, float] | None = None,
    label: bool = True,
) -> list[Written]:
    """``requests`` requests per arm (route -> version), interleaved in time, with labels."""
    rng = np.random.default_rng(seed)
    drawn = {}
    for route, version in arms.items():  # one predict_proba per arm: the rows of every request
        frame, y = draw(rng, requests * rows)
        proba = project.models[version].predict_proba(frame)[:, 1]
        centre = (latency_ms or {}).get(route, 2.0)
        latency = rng.lognormal(math.log(centre * 1000), 0.2, requests).astype(int)
        columns = {c: frame[c].to_numpy().tolist() for c in FEATURES}
        drawn[route] = (columns, proba.tolist(), y.tolist(), latency.tolist())
    log = PredictionLog(project.log_dir, durable=False)
    written: list[Written] = []
    try:
        for i in range(requests):
            for j, (route, version) in enumerate(arms.items()):
                columns, proba, y, latency = drawn[route]
                part = slice(i * rows, (i + 1) * rows)
                p = proba[part]
                record_id = uuid.uuid4().hex
                time_us = start_us + i * step_us + j
                log.append_blocking(
                    PredictionRecord(
                        request_id=record_id,
                        record_id=record_id,
                        time_us=time_us,
                        model=NAME,
                        version=version,
                        rows=rows,
                        inputs={c: values[part] for c, values in columns.items()},
                        outputs={
                            "label": [int(v >= 0.5) for v in p],
                            "proba_0": [1 - v for v in p],
                            "proba_1": p,
                        },
                        latency_us=latency[i],
                        route=route,
                    )
                )
                item = Written(route, version, record_id, time_us, p, y[part], latency[i])
                written.append(item)
        if label:
            send_labels(log, written)
    finally:
        log.close()
    return written


def send_labels(log: PredictionLog, items: list[Written], *, per_row: bool = False) -> None:
    for item in items:
        if per_row:
            for row, value in enumerate(item.labels):
                log.append_feedback_blocking(
                    FeedbackRecord(
                        request_id=item.record_id,
                        record_id=item.record_id,
                        label=value,
                        row=row,
                        time_us=item.time_us + 10,
                    )
                )
        else:
            log.append_feedback_blocking(
                FeedbackRecord(
                    request_id=item.record_id,
                    record_id=item.record_id,
                    label=item.labels,
                    time_us=item.time_us + 10,
                )
            )


def oracle(items: list[Written]) -> dict[str, np.ndarray]:
    """Per-row log loss and error, per-request latency, recomputed from the records."""
    p = np.array([v for it in items for v in it.proba_1])
    y = np.array([v for it in items for v in it.labels])
    given_p = np.where(y == 1, p, 1 - p)
    predicted = (p > 0.5).astype(int)  # arg-max of (1 - p, p)
    return {
        "log_loss": -np.log(given_p),
        "error_rate": (predicted != y).astype(float),
        "latency_ms": np.array([it.latency_us / 1000 for it in items]),
    }


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def gate(project: Project, version: int) -> None:
    """A stored, passing gate evaluation of ``version`` against production."""
    frame, y = draw(np.random.default_rng(1), 50)
    report = run_gates(
        project.settings,
        f"{NAME}/{version}",
        gates=[SignatureGate()],
        eval=frame.assign(y=y),
        label="y",
        registry=project.registry,
    )
    assert report.passed


def aliases(project: Project) -> dict[str, int]:
    return next(m.aliases for m in project.registry.list_models() if m.name == NAME)


def run_looks(
    project: Project, action: Action, times: list[float]
) -> tuple[Action, list[CanaryLook]]:
    looks = []
    for seconds in times:
        result = look(project.settings, action, now=at(seconds))
        looks.append(result)
        action = after(action, result)
        if result.decision != "continue":
            break
    return action, looks


# -- outcomes --------------------------------------------------------------------------


def test_outcomes_are_the_arms_rows_from_the_log_with_their_labels(project: Project) -> None:
    action = make_action()
    items = write_traffic(project, {"canary": 2, "primary": 1}, requests=30)
    # rows that belong to neither arm: before the start, after now, a shadow, the wrong
    # version on a route, and an unlabelled request (its latency counts, its rows do not)
    noise = write_traffic(project, {"primary": 1}, requests=2, start_us=T0_US - 10_000_000)
    noise += write_traffic(project, {"shadow": 2, "canary": 1, "primary": 2}, requests=3, seed=2)
    noise += write_traffic(project, {"primary": 1}, requests=1, start_us=T0_US + 10**9, seed=3)
    unlabelled = write_traffic(
        project, {"canary": 2}, requests=1, start_us=T0_US + 500_000_000, seed=4, label=False
    )
    assert noise
    got = canary_outcomes(project.settings, action, now=at(900))
    assert list(got) == ["log_loss", "error_rate", "latency_ms"]
    for route in ("canary", "primary"):
        want = oracle([it for it in items if it.route == route])
        arm = 0 if route == "canary" else 1
        for name in ("log_loss", "error_rate"):
            np.testing.assert_allclose(got[name][arm], want[name], rtol=1e-12)
        extra = [it.latency_us / 1000 for it in unlabelled] if route == "canary" else []
        np.testing.assert_allclose(got["latency_ms"][arm], [*want["latency_ms"], *extra])
    assert got["log_loss"][0].size == 60 and got["latency_ms"][0].size == 31


def test_outcomes_per_row_labels_and_metric_choice(project: Project) -> None:
    settings = configure(project.settings, metric="error_rate", latency=False)
    items = write_traffic(project, {"canary": 2, "primary": 1}, requests=5, label=False)
    log = PredictionLog(project.log_dir, durable=False)
    try:
        send_labels(log, items, per_row=True)
    finally:
        log.close()
    got = canary_outcomes(settings, make_action(), now=at(60))
    assert list(got) == ["error_rate"]  # the primary metric, not tested twice
    want = oracle([it for it in items if it.route == "canary"])["error_rate"]
    np.testing.assert_array_equal(got["error_rate"][0], want)
    with pytest.raises(InvalidInputError) as bad:
        canary_outcomes(configure(project.settings, metric="rmse"), make_action(), now=at(60))
    assert bad.value.loc == f"agent.models.{NAME}.canary.metric"


# -- looks and decisions ----------------------------------------------------------------


def test_a_better_canary_is_promoted_and_production_moves(project: Project) -> None:
    action = make_action(champion_version=2, candidate_version=1)
    project.registry.set_alias(f"{NAME}/2", "production")
    gate(project, 1)
    start_canary(project.settings, action, registry=project.registry)
    assert aliases(project)["canary"] == 1
    write_traffic(project, {"canary": 1, "primary": 2}, requests=500)
    action, looks = run_looks(project, action, [100, 200, 300, 500])
    final = looks[-1]
    assert final.decision == "promote", final.metrics
    assert [x.number for x in looks] == list(range(1, len(looks) + 1))
    assert final.metrics["log_loss"]["upper"] < 0  # the candidate's loss is lower
    assert final.metrics["latency_ms"]["decision"] == "promote"  # non-inferior
    assert finish_canary(project.settings, action, final.decision, registry=project.registry) == (
        "promoted"
    )
    held = aliases(project)
    assert held["production"] == 1 and "canary" not in held
    reasons = [e.reason or "" for e in project.registry.history(NAME)]
    assert any(f"agent: action {action.id}" in r for r in reasons)


def test_a_worse_canary_is_rolled_back_and_production_stays(project: Project) -> None:
    action = make_action(champion_version=1, candidate_version=2)
    gate(project, 2)
    start_canary(project.settings, action, registry=project.registry)
    write_traffic(project, {"canary": 2, "primary": 1}, requests=300)
    action, looks = run_looks(project, action, [100, 200, 300])
    assert looks[-1].decision == "rollback"
    assert looks[-1].metrics["log_loss"]["lower"] > 0  # the candidate's loss is higher
    done = finish_canary_result(
        project.settings, action, looks[-1].decision, registry=project.registry
    )
    assert done.outcome == "rolled_back"
    held = aliases(project)
    assert held["production"] == 1 and "canary" not in held
    moves = len(project.registry.history(NAME))
    again = finish_canary(project.settings, action, "rollback", registry=project.registry)
    assert again == "rolled_back" and len(project.registry.history(NAME)) == moves


def test_timeout_at_the_horizon_and_after_max_duration(project: Project) -> None:
    # v3 is v1's very model: no test can decide, the horizon stops it
    settings = configure(project.settings, horizon=300)
    action = make_action(champion_version=1, candidate_version=3)
    items = write_traffic(project, {"canary": 3, "primary": 1}, requests=200)
    result = look(settings, action, now=at(1000))
    assert result.n_candidate == result.n_primary == 400
    assert result.decision.startswith("timeout_")
    assert result.state["timeout"] == "300 labelled rows per arm reached"
    # the oracle: each test's estimate against its margin, all must be within it
    got = oracle([it for it in items if it.route == "canary"])
    base = oracle([it for it in items if it.route == "primary"])
    within = [
        got["log_loss"].mean() - base["log_loss"].mean() <= 0,
        got["error_rate"].mean() - base["error_rate"].mean() <= 0.02,
        np.log(got["latency_ms"]).mean() - np.log(base["latency_ms"]).mean() <= math.log(1.1),
    ]
    assert result.decision == ("timeout_promote" if all(within) else "timeout_rollback")
    # max_duration: too few rows to judge when time runs out keeps the primary
    short = configure(project.settings, max_duration="1h", min_samples=1000)
    early = look(short, action, now=at(1800))
    assert early.decision == "continue"
    late = look(short, after(action, early), now=at(3600))
    assert late.decision == "timeout_rollback"
    assert late.state["timeout"] == "1h since the canary started"


def test_a_guard_with_too_few_requests_abstains_at_the_timeout(project: Project) -> None:
    # big requests: 400 labelled rows per arm but only 20 requests, below min_samples for
    # latency (one value per request); the same model on both arms, so log loss is within
    # its margin. Before, the starved latency test vetoed: timeout_rollback whatever the rows.
    settings = configure(project.settings, horizon=300, margin=0.05, error_rate_margin=0.5)
    action = make_action(champion_version=1, candidate_version=3)
    items = write_traffic(project, {"canary": 3, "primary": 1}, requests=20, rows=20)
    result = look(settings, action, now=at(1000))
    assert result.n_candidate == result.n_primary == 400
    assert result.metrics["latency_ms"]["decision"] == "inconclusive"
    got = oracle([it for it in items if it.route == "canary"])["log_loss"].mean()
    base = oracle([it for it in items if it.route == "primary"])["log_loss"].mean()
    want = "timeout_promote" if got - base <= 0.05 else "timeout_rollback"
    assert result.metrics["log_loss"]["decision"] == want
    assert result.decision == want
    # the primary metric never abstains: starved of rows, it keeps the primary
    starved = configure(project.settings, horizon=300, min_samples=1000, max_duration="1h")
    late = look(starved, action, now=at(3600))
    assert late.metrics["log_loss"]["decision"] == "timeout_rollback"
    assert late.decision == "timeout_rollback"


def test_a_look_rerun_from_the_same_state_is_the_same_look(project: Project) -> None:
    action = make_action()
    write_traffic(project, {"canary": 2, "primary": 1}, requests=150)
    first = look(project.settings, action, now=at(100))
    again = look(project.settings, action, now=at(100))  # after a kill before it was kept
    assert first.to_dict() == again.to_dict()
    second = look(project.settings, after(action, first), now=at(200))
    assert second.number == first.number + 1
    assert second.n_candidate > first.n_candidate


def test_late_labels_each_look_sees_a_superset(project: Project) -> None:
    action = make_action(champion_version=1, candidate_version=4)
    items = write_traffic(project, {"canary": 4, "primary": 1}, requests=400, label=False)
    log = PredictionLog(project.log_dir, durable=False)
    rng = np.random.default_rng(7)
    order = [items[i] for i in rng.permutation(len(items))]  # labels mature in any order
    try:
        send_labels(log, order[:300])
    finally:
        log.close()
    first = look(project.settings, action, now=at(500))
    log = PredictionLog(project.log_dir, durable=False)
    try:
        send_labels(log, order[300:])
    finally:
        log.close()
    second = look(project.settings, after(action, first), now=at(500))  # same now, more labels
    assert second.n_candidate + second.n_primary == 2 * len(items)
    assert first.n_candidate + first.n_primary == 600
    for name, m in second.metrics.items():
        before = first.metrics[name]
        if before["lower"] is not None:  # the running intersection only narrows
            assert m["lower"] >= before["lower"] and m["upper"] <= before["upper"]
            assert m["p_value"] <= before["p_value"]
    # the second look's totals are those of every labelled row
    want = oracle([it for it in items if it.route == "canary"])["log_loss"]
    saved = SequentialTest.from_dict(second.state["tests"]["log_loss"])
    assert saved.n_candidate == want.size
    assert saved.diff == pytest.approx(
        want.mean() - oracle([it for it in items if it.route == "primary"])["log_loss"].mean()
    )


# -- traffic, start and finish -----------------------------------------------------------


def test_the_traffic_check_names_the_policy_key(project: Project) -> None:
    check_traffic(project.settings, NAME)
    cases = {
        "serving.traffic.m": {},
        "serving.traffic.m.canary": {NAME: TrafficSettings(canary="blue", canary_weight=0.2)},
        "serving.traffic.m.canary_weight": {NAME: TrafficSettings(canary="canary")},
        "serving.traffic.m.primary": {
            NAME: TrafficSettings(primary="staging", canary="canary", canary_weight=0.2)
        },
    }
    for loc, traffic in cases.items():
        serving = msgspec.structs.replace(project.settings.serving, traffic=traffic)
        with pytest.raises(InvalidInputError) as refused:
            check_traffic(msgspec.structs.replace(project.settings, serving=serving), NAME)
        assert refused.value.loc == loc, str(refused.value)


def test_start_is_idempotent_and_leaves_another_canary_alone(project: Project) -> None:
    action = make_action()
    start_canary(project.settings, action, registry=project.registry)
    moves = len(project.registry.history(NAME))
    start_canary(project.settings, action, registry=project.registry)  # a re-run
    assert len(project.registry.history(NAME)) == moves
    assert aliases(project)["canary"] == 2
    other = make_action(candidate_version=3)
    with pytest.raises(ConflictError, match="holds v2"):
        start_canary(project.settings, other, registry=project.registry)
    assert aliases(project)["canary"] == 2


def test_finish_is_idempotent_and_refuses_stale_evidence(project: Project) -> None:
    action = make_action(candidate_version=4)
    gate(project, 4)
    start_canary(project.settings, action, registry=project.registry)
    assert finish_canary(project.settings, action, "promote", registry=project.registry) == (
        "promoted"
    )
    moves = len(project.registry.history(NAME))
    # a re-run after a kill at any point finds everything where it should be
    for _ in range(2):
        assert finish_canary(
            project.settings, action, "timeout_promote", registry=project.registry
        ) == ("promoted")
    assert len(project.registry.history(NAME)) == moves
    assert aliases(project) == {"production": 4}

    # killed after production moved, before the canary alias went: the re-run removes it
    project.registry.set_alias(f"{NAME}/4", "canary")
    assert finish_canary(project.settings, action, "promote", registry=project.registry) == (
        "promoted"
    )
    assert aliases(project) == {"production": 4}

    # stale evidence: the champion moved since the gates of v3 ran; the canary alias
    # held by another version than the candidate is not removed
    project.registry.set_alias(f"{NAME}/1", "production")
    gate(project, 3)
    project.registry.set_alias(f"{NAME}/2", "production")
    project.registry.set_alias(f"{NAME}/4", "canary")
    stale = make_action(champion_version=1, candidate_version=3)
    done = finish_canary_result(project.settings, stale, "promote", registry=project.registry)
    assert done.outcome == "rolled_back"
    assert "stale: the champion changed from v1 to v2" in done.reason
    assert aliases(project) == {"production": 2, "canary": 4}
    with pytest.raises(InvalidInputError):
        finish_canary(project.settings, stale, "continue", registry=project.registry)


# -- the statistics -----------------------------------------------------------------------


@hsettings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), min_size=1, max_size=8),
    st.integers(0, 2**32 - 1),
)
def test_observe_of_every_row_so_far_equals_update_of_the_new_rows(
    sizes: list[tuple[int, int]], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    updated = SequentialTest(tau2=0.1, min_samples=5, higher_is_better=False)
    observed = SequentialTest(tau2=0.1, min_samples=5, higher_is_better=False)
    c_all: list[float] = []
    p_all: list[float] = []
    for nc, np_ in sizes:
        c, p = rng.normal(0.2, 1, nc), rng.normal(0, 1, np_)
        updated.update(c, p)
        c_all += c.tolist()
        p_all += p.tolist()
        observed.observe(c_all, p_all)
        a, b = updated.to_dict(), observed.to_dict()
        for key in ("looks", "decision", "decided_at"):
            assert a[key] == b[key]
        for key in ("p_value", "lower", "upper"):
            assert (a[key] is None) == (b[key] is None)
            if a[key] is not None:
                assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12)


def test_combined_false_decision_rate_with_equal_arms_stays_under_alpha() -> None:
    """Equal arms, 10 looks: a combined promote (the primary metric claims a win at
    margin 0) or rollback (some test claims a loss) is false; at most alpha of runs."""
    cfg = CanarySettings(min_samples=50, alpha=0.05)
    plan = ["log_loss", "error_rate", "latency_ms"]
    rng = np.random.default_rng(SEED)
    runs, looks_per_run, per_look = 300, 10, 60
    false = 0
    for _ in range(runs):
        tests = {n: canary._new_test(n, cfg, plan, np.zeros(0)) for n in plan}
        data: dict[str, tuple[np.ndarray, np.ndarray]] = {
            n: (np.zeros(0), np.zeros(0)) for n in plan
        }
        for _ in range(looks_per_run):
            new = {
                "log_loss": lambda: rng.exponential(0.5, per_look),
                "error_rate": lambda: rng.binomial(1, 0.2, per_look).astype(float),
                "latency_ms": lambda: np.log(rng.lognormal(0.7, 0.3, per_look)),
            }
            decisions = []
            for n in plan:
                c, p = data[n]
                data[n] = (np.r_[c, new[n]()], np.r_[p, new[n]()])
                test = tests[n]
                assert test is not None
                test.observe(*data[n])
                decisions.append(test.decide(10**9))
            if combine_decisions(decisions) != "continue":
                false += 1
                break
    assert false / runs <= cfg.alpha, false


# -- a live server ---------------------------------------------------------------------------


def test_a_live_server_routes_canary_traffic_the_look_reads(project: Project) -> None:
    settings = msgspec.structs.replace(
        project.settings,
        serving=msgspec.structs.replace(project.settings.serving, watch_interval_s=0.1),
    )
    server = LiveServer(create_app(settings, [NAME], environ={})).start()
    try:
        started = datetime.now(UTC)
        action = make_action(canary_started_us=int(started.timestamp() * 1e6))
        start_canary(settings, action, registry=project.registry)
        deployment = server.state.deployments[NAME]
        deadline = time.monotonic() + 10
        while deployment.canary is None:
            assert time.monotonic() < deadline, "the server never loaded the canary"
            time.sleep(0.05)
        rng = np.random.default_rng(3)
        answered: dict[str, int] = {}
        with httpx.Client(base_url=server.url, timeout=30.0) as http:
            for _ in range(40):
                frame, y = draw(rng, 1)
                body = {"instances": frame.to_dict(orient="records")}
                answer = http.post(f"/v1/models/{NAME}:predict", json=body)
                assert answer.status_code == 200, answer.text
                version = answer.headers["X-Model-Version"]
                answered[version] = answered.get(version, 0) + 1
                feedback = {"request_id": answer.headers["X-Request-ID"], "label": int(y[0])}
                assert http.post("/v1/feedback", json=feedback).status_code == 200
    finally:
        server.stop()
    got = canary_outcomes(settings, action, now=datetime.now(UTC) + timedelta(seconds=1))
    assert answered.get("2", 0) > 0 and answered.get("1", 0) > 0
    assert got["log_loss"][0].size == answered["2"]  # the canary arm: v2's answers
    assert got["log_loss"][1].size == answered["1"]
    assert got["latency_ms"][0].size == answered["2"]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
GOOD = {
    "looks": 1,
    "metrics": ["log_loss", "latency_ms"],
    "tests": {
        "log_loss": SequentialTest(tau2=0.01, higher_is_better=False).to_dict(),
        "latency_ms": None,
    },
}


@hsettings(max_examples=150, deadline=None)
@given(st.sampled_from(["", "looks", "metrics", "tests", "tests.log_loss"]), JSON)
def test_a_corrupted_saved_state_is_read_or_refused_naming_the_key(key: str, value: Any) -> None:
    state: Any = msgspec.json.decode(msgspec.json.encode(GOOD))
    if key == "":
        state = value
    elif key == "tests.log_loss":
        state["tests"]["log_loss"] = value
    else:
        state[key] = value
    try:
        saved = canary._saved_state(state)
    except InvalidInputError as exc:
        assert exc.loc is not None and exc.loc.startswith("detail.canary"), exc.loc
        return
    assert saved.looks >= 0
    assert set(saved.tests) <= set(saved.metrics or ())


def test_a_look_refuses_a_corrupted_state_in_one_line(project: Project) -> None:
    bad = make_action(detail={"canary": {**GOOD, "looks": "three"}})
    with pytest.raises(InvalidInputError) as refused:
        look(project.settings, bad, now=at(10))
    assert refused.value.loc == "detail.canary.looks"
    other_task = make_action(detail={"canary": {"looks": 1, "metrics": ["squared_error"]}})
    with pytest.raises(InvalidInputError) as refused:
        look(project.settings, other_task, now=at(10))
    assert refused.value.loc == "detail.canary.metrics"


def test_a_regressor_is_judged_on_its_squared_error_with_a_scale_from_the_primary(
    project: Project,
) -> None:
    rng = np.random.default_rng(11)
    frame = pd.DataFrame({"x1": rng.normal(size=400), "x2": rng.normal(size=400)})
    target = 3 * frame["x1"] - frame["x2"] + rng.normal(scale=0.5, size=400)
    fits = {
        "good": LinearRegression().fit(frame, target),
        "bad": LinearRegression().fit(frame[["x1"]].assign(x2=0.0), target),
    }
    versions = {
        key: project.registry.log_model(model, name="r", training_frame=frame).version
        for key, model in fits.items()
    }
    settings = configure(project.settings, min_samples=50)
    settings = msgspec.structs.replace(
        settings,
        agent=AgentSettings(
            models={"r": AgentModelSettings(canary=settings.agent.model(NAME).canary)}
        ),
    )
    action = make_action(
        model="r", champion_version=versions["good"], candidate_version=versions["bad"]
    )
    requests = 600
    drawn = {}
    for route, key in (("canary", "bad"), ("primary", "good")):
        x = pd.DataFrame({"x1": rng.normal(size=requests), "x2": rng.normal(size=requests)})
        y = 3 * x["x1"] - x["x2"] + rng.normal(scale=0.5, size=requests)
        predicted = fits[key].predict(x if key == "good" else x.assign(x2=0.0))
        drawn[route] = (key, x, y.tolist(), predicted.tolist())
    truth: dict[str, list[float]] = {"canary": [], "primary": []}
    log = PredictionLog(project.log_dir, durable=False)
    try:
        for i in range(requests):
            for route, (key, x, y, predicted) in drawn.items():
                record_id = uuid.uuid4().hex
                log.append_blocking(
                    PredictionRecord(
                        request_id=record_id,
                        record_id=record_id,
                        time_us=T0_US + 1 + i * 1_000_000,
                        model="r",
                        version=versions[key],
                        rows=1,
                        inputs={c: [float(x[c].iloc[i])] for c in FEATURES},
                        outputs={"prediction": [predicted[i]]},
                        latency_us=1500,
                        route=route,
                    )
                )
                log.append_feedback_blocking(
                    FeedbackRecord(
                        request_id=record_id, record_id=record_id, label=y[i], time_us=T0_US + 2
                    )
                )
                truth[route].append((predicted[i] - y[i]) ** 2)
    finally:
        log.close()
    got = canary_outcomes(settings, action, now=at(900))
    assert list(got) == ["squared_error", "latency_ms"]  # no error rate for a regressor
    np.testing.assert_allclose(got["squared_error"][0], truth["canary"])
    np.testing.assert_allclose(got["squared_error"][1], truth["primary"])
    result = look(settings, action, now=at(900))
    summary = result.metrics["squared_error"]
    assert summary["tau"] == pytest.approx(0.1 * np.mean(truth["primary"]))
    assert summary["lower"] > 0 and result.decision == "rollback"
