"""The agent's gates on a candidate: the champion's recent labelled traffic, run once.

The prediction log is written with the real ``PredictionLog`` writer, shaped as the
server writes it (the model's inputs, the entity keys, and for a model served by entity
key every looked-up ``feature.VIEW:NAME``), with feedback labels by record id. The
oracles are the two models' AUCs computed here with scikit-learn on the rows of the
window, which the test knows (the log also holds rows before the window and after the
agent's clock: neither may count).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sqlalchemy import func, select

from modelyard.agent.evaluation import gate_candidate
from modelyard.agent.faults import CRASH_ENV
from modelyard.agent.records import Action
from modelyard.config import CONFIG_FILE, Settings, init_project, load_settings
from modelyard.errors import InvalidInputError
from modelyard.gates.config import gate_config
from modelyard.gates.records import new_evaluation_id
from modelyard.gates.runner import run_gates
from modelyard.monitoring.labelled import logged_inputs
from modelyard.registry.client import ModelRegistry
from modelyard.registry.promotion import evidence_of
from modelyard.store.predlog import FeedbackRecord, PredictionLog, PredictionRecord
from modelyard.store.schema import gate_evaluations

NOW = datetime(2024, 5, 1, tzinfo=UTC)
DAY_US = 86_400_000_000


def us(when: datetime) -> int:
    return int(when.timestamp()) * 1_000_000


def make_action(**fields: Any) -> Action:
    base: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "model": "toy",
        "kind": "retrain",
        "state": "gating",
        "incident_id": 1,
        "incident_opened_us": us(NOW),
        "rule": "toy-auc",
        "champion_version": 1,
        "candidate_version": 2,
        "pipeline": "retrain",
        "params": {},
        "window_start_us": None,
        "window_end_us": None,
        "pipeline_run_id": None,
        "gate_evaluation_id": None,
        "canary_started_us": None,
        "decision": None,
        "reason": None,
        "detail": {"gate_evaluation_id": new_evaluation_id()},
        "created_us": us(NOW),
        "updated_us": us(NOW),
        "recorded_us": us(NOW),
        "created_by": "test",
    }
    base.update(fields)
    return Action(**base)


def rows(seed: int, n: int) -> pd.DataFrame:
    """Features and a label that follows x1, then x2, then visits."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.normal(size=n),
            "spend": rng.normal(size=n),
            "visits": rng.normal(size=n),
        }
    )
    score = 0.8 * frame.age + 0.5 * frame.spend + 1.2 * frame.visits
    frame["y"] = (score + rng.normal(scale=0.8, size=n) > 0).astype(int)
    return frame


@dataclasses.dataclass
class Traffic:
    """What the log holds: every row with its time, and which rows the window holds."""

    settings: Settings
    frame: pd.DataFrame  # age, spend, visits, y, time_us
    champion: LogisticRegression
    candidate: LogisticRegression

    @property
    def window(self) -> pd.DataFrame:
        start, end = us(NOW - timedelta(days=14)), us(NOW)
        inside = (self.frame.time_us >= start) & (self.frame.time_us < end)
        return self.frame[inside].reset_index(drop=True)


def write_log(settings: Settings, frame: pd.DataFrame, inputs: list[str], *, entity: bool) -> None:
    """One request of 10 rows per block, to v1 as route primary, each labelled later."""
    root = settings.project_dir / settings.serving.log_dir
    with PredictionLog(root) as log:
        for start in range(0, len(frame), 10):
            part = frame.iloc[start : start + 10]
            record_id = uuid.uuid4().hex
            logged: dict[str, list[Any]] = {n: part[n].tolist() for n in inputs}
            features = None
            if entity:  # as the server logs an entities request: keys and every lookup
                logged["user"] = [f"u{i}" for i in range(len(part))]
                features = {
                    "activity:spend": part.spend.tolist(),
                    "activity:visits": part.visits.tolist(),
                }
            time_us = int(part.time_us.iloc[0])
            log.append_blocking(
                PredictionRecord(
                    record_id=record_id,
                    request_id=record_id,
                    time_us=time_us,
                    model="toy",
                    version=1,
                    rows=len(part),
                    inputs=logged,
                    features=features,
                    outputs={"label": [0] * len(part)},
                    latency_us=500,
                    route="primary",
                )
            )
            log.append_feedback_blocking(
                FeedbackRecord(
                    request_id=record_id,
                    record_id=record_id,
                    label=[int(v) for v in part.y],
                    time_us=time_us + 60_000_000,
                )
            )


def build(root: Path, *, entity: bool) -> Traffic:
    """v1 (production) and v2 of ``toy``; 30 days of logged traffic of v1 around NOW."""
    init_project(root)
    (root / CONFIG_FILE).write_text(f"db_url: sqlite:///{root / 'meta.db'}\n")
    settings = load_settings(root, environ={})
    train = rows(1, 400)
    champion_cols = ["age", "spend"]
    candidate_cols = ["age", "spend", "visits"] if entity else ["age", "spend"]
    champion = LogisticRegression(C=0.01).fit(train[champion_cols], train.y)
    candidate = LogisticRegression().fit(train[candidate_cols], train.y)
    service = "scoring" if entity else None
    with ModelRegistry(settings) as registry:
        registry.log_model(
            champion, name="toy", training_frame=train[champion_cols], feature_service=service
        )
        registry.log_model(
            candidate, name="toy", training_frame=train[candidate_cols], feature_service=service
        )
        registry.set_alias("toy/1", "production")
    frame = rows(2, 600)
    # 600 rows over 20 days before NOW and 10 days after it (never in the window)
    frame["time_us"] = us(NOW - timedelta(days=20)) + (np.arange(600) // 10) * (DAY_US // 2)
    write_log(settings, frame, champion_cols, entity=entity)
    return Traffic(settings, frame, champion, candidate)


@pytest.fixture(scope="module")
def plain_base(tmp_path_factory: pytest.TempPathFactory) -> Traffic:
    return build(tmp_path_factory.mktemp("plain") / "p", entity=False)


@pytest.fixture
def plain(plain_base: Traffic, tmp_path: Path) -> Iterator[Traffic]:
    """A private copy of the plain project (its store and log)."""
    root = tmp_path / "p"
    shutil.copytree(plain_base.settings.project_dir, root)
    text = (root / CONFIG_FILE).read_text()
    old = str(plain_base.settings.project_dir)
    (root / CONFIG_FILE).write_text(text.replace(old, str(root)))
    yield dataclasses.replace(plain_base, settings=load_settings(root, environ={}))


def champion_numbers(report: Any) -> dict[str, Any]:
    (found,) = [r for r in report.results if r.kind == "champion"]
    return dict(found.numbers)


def test_default_gates_on_the_champions_labelled_window(plain: Traffic) -> None:
    report = gate_candidate(plain.settings, make_action(), now=NOW)
    assert [r.gate for r in report.results] == ["champion:auc", "signature"]
    assert (report.model, report.version, report.against, report.champion_version) == (
        "toy",
        2,
        "production",
        1,
    )
    window = plain.window
    assert 0 < len(window) < len(plain.frame)
    numbers = champion_numbers(report)
    assert numbers["rows"] == len(window)
    cols = ["age", "spend"]
    want_candidate = roc_auc_score(window.y, plain.candidate.predict_proba(window[cols])[:, 1])
    want_champion = roc_auc_score(window.y, plain.champion.predict_proba(window[cols])[:, 1])
    assert numbers["candidate"] == pytest.approx(want_candidate, abs=1e-9)
    assert numbers["champion"] == pytest.approx(want_champion, abs=1e-9)
    assert numbers["margin"] == 0.0
    signature = next(r for r in report.results if r.kind == "signature")
    assert signature.passed


def test_the_evaluation_id_runs_the_gates_once(plain: Traffic) -> None:
    action = make_action()
    first = gate_candidate(plain.settings, action, now=NOW)
    assert first.id == action.detail["gate_evaluation_id"]
    # the log is gone: a second run of the gates could not read a row
    shutil.rmtree(plain.settings.project_dir / plain.settings.serving.log_dir)
    again = gate_candidate(plain.settings, action, now=NOW + timedelta(days=3))
    assert again == first
    with ModelRegistry(plain.settings) as registry, registry.db.read() as conn:
        count = conn.execute(select(func.count()).select_from(gate_evaluations)).scalar()
    assert count == 1
    # another action's id reads the (gone) log: the error names the agent's setting
    with pytest.raises(InvalidInputError) as info:
        gate_candidate(plain.settings, make_action(), now=NOW)
    assert info.value.loc == "agent.models.toy.gate_window"


def test_gates_stored_then_killed_run_again_returns_the_stored_report(plain: Traffic) -> None:
    action = make_action()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.environ[CRASH_ENV] = "gates-stored"
            gate_candidate(plain.settings, action, now=NOW)
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    with ModelRegistry(plain.settings) as registry:
        stored = registry.evaluations("toy")
    assert [r.id for r in stored] == [action.detail["gate_evaluation_id"]]
    assert gate_candidate(plain.settings, action, now=NOW) == stored[0]


def test_evaluation_id_checks(plain: Traffic) -> None:
    action = make_action()
    report = gate_candidate(plain.settings, action, now=NOW)
    # the id of an evaluation of another version is refused, not returned as this one's
    with pytest.raises(InvalidInputError) as other:
        run_gates(plain.settings, "toy/1", evaluation_id=report.id)
    assert other.value.loc == "evaluation_id" and "toy/2" in str(other.value)
    for bad in ("", "x" * 33, "a b", "é"):
        with pytest.raises(InvalidInputError) as info:
            run_gates(plain.settings, "toy/2", evaluation_id=bad)
        assert info.value.loc == "evaluation_id"
    with pytest.raises(InvalidInputError) as missing:
        gate_candidate(plain.settings, make_action(detail={}), now=NOW)
    assert missing.value.loc == "action.detail.gate_evaluation_id"
    with pytest.raises(InvalidInputError) as naive:
        gate_candidate(plain.settings, make_action(), now=NOW.replace(tzinfo=None))
    assert naive.value.loc == "now"


def test_declared_gates_are_used_and_their_evidence_is_fresh(plain: Traffic) -> None:
    gates = (
        "gates:\n  toy:\n    label: outcome\n    checks:\n"
        "      - {type: champion, metric: auc, margin: 0.5}\n"
    )
    config = plain.settings.project_dir / CONFIG_FILE
    config.write_text(config.read_text() + gates)
    traffic = dataclasses.replace(
        plain, settings=load_settings(plain.settings.project_dir, environ={})
    )
    report = gate_candidate(traffic.settings, make_action(), now=NOW)
    assert [r.gate for r in report.results] == ["champion:auc"]
    assert report.config_digest == gate_config(traffic.settings, "toy").digest
    assert report.passed  # margin 0.5: the candidate is not 0.5 AUC worse
    with ModelRegistry(traffic.settings) as registry:
        version = registry.get_version("toy/2")
        evidence = evidence_of(registry.db, traffic.settings, version, "production", holder=1)
    assert evidence.state == "passed" and evidence.report == report


def test_feature_service_model_gets_its_looked_up_features(tmp_path: Path) -> None:
    """v1 takes age and spend; v2 also visits, which the log holds only as a lookup."""
    traffic = build(tmp_path / "f", entity=True)
    report = gate_candidate(traffic.settings, make_action(), now=NOW)
    # (the signature gate calls the new column breaking: clients that send instances
    # would have to send it; entity requests get it from the service)
    window = traffic.window
    numbers = champion_numbers(report)
    assert numbers["rows"] == len(window)
    full = ["age", "spend", "visits"]
    want = roc_auc_score(window.y, traffic.candidate.predict_proba(window[full])[:, 1])
    assert numbers["candidate"] == pytest.approx(want, abs=1e-9)
    old = roc_auc_score(window.y, traffic.champion.predict_proba(window[["age", "spend"]])[:, 1])
    assert numbers["champion"] == pytest.approx(old, abs=1e-9)


# -- logged_inputs: generated frames -------------------------------------------------------

_cell = st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False))


@hyp_settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 6),
    data=st.data(),
    has_input=st.booleans(),
    views=st.integers(0, 2),
)
def test_logged_inputs_fills_each_row_as_the_server_would(
    n: int, data: st.DataObject, has_input: bool, views: int
) -> None:
    """input.x where the serving model took x, else the one non-empty feature.V:x."""
    columns: dict[str, list[float | None]] = {}
    if has_input:
        columns["input.x"] = data.draw(st.lists(_cell, min_size=n, max_size=n))
    for i in range(views):
        columns[f"feature.v{i}:x"] = data.draw(st.lists(_cell, min_size=n, max_size=n))
    columns["feature.other:y"] = [1.0] * n
    frame = pd.DataFrame(columns, dtype="float64")
    logged = frame.get("input.x")
    filled = [c for c in frame.columns if c.startswith("feature.v") and frame[c].notna().any()]
    needs = logged is None or bool(logged.isna().any())
    if needs and len(filled) > 1:
        with pytest.raises(InvalidInputError) as info:
            logged_inputs(frame, ["x"])
        assert info.value.loc == "x"
        return
    got = logged_inputs(frame, ["x"])
    if logged is None and not filled:
        assert list(got.columns) == []  # found nowhere: left to the signature gate
        return
    for row in range(n):
        own = None if logged is None else logged.iloc[row]
        if own is not None and not pd.isna(own):
            want = own
        elif filled:
            want = frame[filled[0]].iloc[row]
        else:
            want = own
        value = got["x"].iloc[row]
        assert (pd.isna(value) and pd.isna(want)) or value == want


def test_a_candidate_that_drops_an_input_is_compared_on_the_champions_inputs(
    plain: Traffic,
) -> None:
    """v3 takes only age: the champion still scores the rows with age and spend."""
    train = rows(1, 400)
    smaller = LogisticRegression().fit(train[["age"]], train.y)
    with ModelRegistry(plain.settings) as registry:
        registry.log_model(smaller, name="toy", training_frame=train[["age"]])
    report = gate_candidate(plain.settings, make_action(candidate_version=3), now=NOW)
    numbers = champion_numbers(report)
    window = plain.window
    want = roc_auc_score(window.y, smaller.predict_proba(window[["age"]])[:, 1])
    old = roc_auc_score(window.y, plain.champion.predict_proba(window[["age", "spend"]])[:, 1])
    assert numbers["candidate"] == pytest.approx(want, abs=1e-9)
    assert numbers["champion"] == pytest.approx(old, abs=1e-9)
