"""``run_pass`` on the tiny project of conftest.py: each way an action ends, and the rules.

The full loop that ends promoted is the reference run of test_crash_safety.py (checked
there by ``test_the_reference_run_is_promoted``); here: a canary rolled back, one action
in flight per model, a failed retrain and rejected gates leaving production untouched
and opening an incident, the cool-down, manual approval, an unexpected error, the
up-front validation and the lease.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import pytest

from modelyard.agent import canary as canary_module
from modelyard.agent.lease import AgentLease
from modelyard.agent.loop import PassReport, approve, monitored_models, run_forever, run_pass
from modelyard.agent.records import Action, ActionStore
from modelyard.config import AgentSettings
from modelyard.errors import ConflictError, InvalidInputError
from modelyard.store.database import open_database
from modelyard.store.monitor_results import Incident, MonitorResults
from tests.agent.conftest import CONFIG, MODEL, CTProject, at


def run(project: CTProject, day: float) -> PassReport:
    return run_pass(project.settings, now=at(day))


@contextmanager
def stores(project: CTProject) -> Iterator[tuple[ActionStore, MonitorResults]]:
    db = open_database(project.settings.db_url)
    try:
        yield ActionStore(db), MonitorResults(db)
    finally:
        db.close()


def kinds(project: CTProject, action: Action) -> list[str]:
    with stores(project) as (store, _):
        return [e.kind for e in store.events(action.id)]


def agent_incidents(project: CTProject) -> list[Incident]:
    with stores(project) as (_, results):
        return [i for i in results.incidents(MODEL) if i.rule == "agent"]


def alert(**retrain: Any) -> dict[str, Any]:
    """The project's alert rule with ``retrain`` options changed."""
    rule: dict[str, Any] = dict(CONFIG["monitoring"]["alerts"][0])
    rule["action"] = {"retrain": {**rule["action"]["retrain"], **retrain}}
    return rule


def test_a_worse_canary_is_rolled_back_and_one_action_is_in_flight(
    ct_project: CTProject,
) -> None:
    # two retrain rules breach at once: one action, the other incident's is skipped
    second = {**alert(), "name": "auc-low-2", "below": 0.75}
    ct_project.configure(monitoring={"alerts": [alert(), second]})
    first = run(ct_project, 7)
    assert {i["rule"] for i in first.incidents_opened} == {"auc-low", "auc-low-2"}
    by_state = {a.state: a for a in first.actions}
    assert set(by_state) == {"canary", "skipped"}, first.events
    action, skipped = by_state["canary"], by_state["skipped"]
    assert f"action {action.id} is in flight" in (skipped.reason or "")
    assert kinds(ct_project, skipped) == ["skipped"]
    assert ct_project.aliases() == {"production": 1, "canary": 2}
    # the world went back to concept a: the candidate (trained on b) loses online
    ct_project.serve(7, "a")
    done = run(ct_project, 8)
    [action] = [a for a in done.actions if a.id == action.id]
    assert (action.state, action.decision) == ("rolled_back", "rollback"), done.events
    assert ct_project.aliases() == {"production": 1}
    assert kinds(ct_project, action)[-3:] == ["look", "decision", "rolled_back"]
    assert not done.failed and agent_incidents(ct_project) == []
    # nothing in flight and the incidents' openings have their actions: nothing new
    again = run(ct_project, 9)
    assert again.actions == []


def test_a_failed_retrain_opens_an_incident_then_the_cool_down_skips(
    ct_project: CTProject,
) -> None:
    ct_project.configure(monitoring={"alerts": [alert(params={"fail": True})]})
    report = run(ct_project, 7)
    [action] = report.actions
    assert action.state == "failed" and report.failed
    assert "the training data is broken" in (action.reason or "")
    assert ct_project.aliases() == {"production": 1}
    [incident] = agent_incidents(ct_project)
    assert (incident.cause, incident.state, incident.version) == (
        f"retrain:{action.id}",
        "open",
        1,
    )
    assert incident.detail["action_id"] == action.id
    assert kinds(ct_project, action) == [
        "created",
        "retrain_started",
        "retrain_failed",
        "incident_opened",
        "failed",
    ]
    # a new incident within the 1d cool-down is recorded as skipped, once
    second = {**alert(), "name": "auc-low-2", "below": 0.75}
    ct_project.configure(monitoring={"alerts": [alert(), second]})
    later = run(ct_project, 7.5)
    [skipped] = later.actions
    assert skipped.state == "skipped" and "cool-down" in (skipped.reason or "")
    assert run(ct_project, 7.75).actions == []
    with stores(ct_project) as (store, _):
        assert [a.state for a in store.list(MODEL)] == ["skipped", "failed"]


def test_a_candidate_failing_its_gates_is_rejected_and_production_untouched(
    ct_project: CTProject,
) -> None:
    """The pipeline even moves production itself: the agent moves it back, then rejects."""
    ct_project.configure(
        gates={MODEL: {"checks": [{"type": "metric", "metric": "auc", "min": 0.999}]}},
        monitoring={"alerts": [alert(params={"promote": True})]},
    )
    report = run(ct_project, 7)
    [action] = report.actions
    assert (action.state, action.candidate_version) == ("rejected", 2), report.events
    assert (action.reason or "").startswith("gates failed: metric:auc")
    assert action.gate_evaluation_id is not None and report.failed
    assert ct_project.aliases() == {"production": 1}
    [incident] = agent_incidents(ct_project)
    assert incident.cause == f"gates:{action.id}"
    assert kinds(ct_project, action) == [
        "created",
        "retrain_started",
        "production_restored",
        "retrain_completed",
        "candidate",
        "gates",
        "incident_opened",
    ]
    with ct_project.registry() as registry:
        moves = [(h.alias, h.version_to) for h in registry.history(MODEL) if h.alias]
    assert moves == [("production", 1), ("production", 2), ("production", 1)]


def test_manual_approval_stops_before_the_canary_until_approved(ct_project: CTProject) -> None:
    ct_project.configure(agent={"models": {MODEL: {"approve": "manual"}}})
    [action] = run(ct_project, 7).actions
    assert action.state == "awaiting_approval"
    assert ct_project.aliases() == {"production": 1}
    assert run(ct_project, 7.25).actions == []  # it waits: nothing to do
    with stores(ct_project) as (store, _):
        assert store.in_flight(MODEL) == action
    with pytest.raises(ConflictError, match="churn/1 has no action awaiting approval"):
        approve(ct_project.settings, f"{MODEL}/1")
    approved = approve(
        ct_project.settings, f"{MODEL}/2", who="alice", reason="looks right", now=at(7.25)
    )
    assert (approved.state, approved.canary_started_us) == ("canary", approved.updated_us)
    assert ct_project.aliases() == {"production": 1, "canary": 2}
    with pytest.raises(ConflictError, match=f"{action.id} canary"):
        approve(ct_project.settings, f"{MODEL}/2")
    with stores(ct_project) as (store, _):
        [event] = [e for e in store.events(action.id) if e.kind == "approved"]
    assert event.detail == {"who": "alice", "reason": "looks right"}
    ct_project.serve(8, "b")
    [done] = run(ct_project, 9).actions
    assert done.state == "promoted" and ct_project.aliases() == {"production": 2}


@pytest.mark.parametrize("error", [RuntimeError, ConflictError])
def test_an_unexpected_error_fails_the_action_removes_the_canary_and_the_pass_goes_on(
    ct_project: CTProject, monkeypatch: pytest.MonkeyPatch, error: type[Exception]
) -> None:
    """Any error of a stage (a ConflictError too, unless another process moved the action)."""
    ct_project.configure(
        agent={"models": {"zeta": {}}},
        serving={"traffic": {"zeta": {"canary": "canary", "canary_weight": 0.1}}},
    )
    [action] = run(ct_project, 7).actions
    assert action.state == "canary"
    ct_project.serve(7, "b")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise error("the disk is on fire")

    monkeypatch.setattr(canary_module, "look", broken)
    report = run(ct_project, 8)
    [failed] = report.actions
    assert failed.state == "failed" and report.failed
    assert f"{error.__name__}: the disk is on fire" in (failed.reason or "")
    assert ct_project.aliases() == {"production": 1}  # the canary no longer serves
    assert [i.cause for i in agent_incidents(ct_project)] == [f"error:{action.id}"]
    # the next model got its pass
    assert report.models == [MODEL, "zeta"]
    assert any(line.startswith("zeta: monitoring skipped") for line in report.events)


def test_bad_configuration_is_refused_up_front_naming_the_key(ct_project: CTProject) -> None:
    ct_project.configure(monitoring={"alerts": [alert(pipeline="nope")]})
    with pytest.raises(InvalidInputError) as caught:
        run(ct_project, 7)
    assert "monitoring.alerts[0].action.retrain.pipeline" in str(caught.value)
    assert "retrain_churn" in str(caught.value)
    ct_project.configure(monitoring={"alerts": [{**alert(), "name": "agent"}]})
    with pytest.raises(InvalidInputError, match=r"monitoring.alerts\[0\].name"):
        run(ct_project, 7)
    ct_project.configure(
        monitoring={"alerts": [alert()]},
        serving={"traffic": {MODEL: {"canary": "beta"}}},
    )
    with pytest.raises(InvalidInputError, match=f"serving.traffic.{MODEL}"):
        run(ct_project, 7)
    with stores(ct_project) as (store, results):
        assert store.list() == [] and results.incidents() == []


def test_a_second_agent_skips_its_pass_naming_the_holder(ct_project: CTProject) -> None:
    db = open_database(ct_project.settings.db_url)
    try:
        other = AgentLease(db)
        other.holder = "elsewhere:42:cafe"
        assert other.acquire()
        reports: list[PassReport] = []
        stop = threading.Event()

        def seen(report: PassReport) -> None:
            reports.append(report)
            stop.set()

        run_forever(ct_project.settings, interval_s=60, stop=stop, now=lambda: at(7),
                    on_report=seen)  # fmt: skip
        [report] = reports
        assert report.skipped_lease and report.actions == []
        assert report.events == ["another agent holds the lease (elsewhere:42:cafe): pass skipped"]
        assert MonitorResults(db).incidents() == []
        other.release()
    finally:
        db.close()
    default = msgspec.structs.replace(ct_project.settings, agent=AgentSettings())
    with ct_project.registry() as registry:
        assert monitored_models(default, registry) == [MODEL]
    assert report.to_dict()["skipped_lease"] is True


def test_the_loop_outlives_a_store_that_is_down(ct_project: CTProject) -> None:
    down = msgspec.structs.replace(
        ct_project.settings, db_url="postgresql+psycopg://nobody@127.0.0.1:1/none"
    )
    reports: list[PassReport] = []
    stop = threading.Event()

    def seen(report: PassReport) -> None:
        reports.append(report)
        if len(reports) == 2:
            stop.set()

    run_forever(down, interval_s=0.01, stop=stop, now=lambda: at(7), on_report=seen)
    assert [r.failed for r in reports] == [True, True]
    [line] = reports[0].events
    assert line.startswith("pass failed: Metadata store") and "127.0.0.1:1" in line


def test_a_pass_judges_closed_windows_only(ct_project: CTProject) -> None:
    """A pass in the middle of a window stores no partial window (nor alerts on one)."""
    rule = {k: v for k, v in alert().items() if k != "action"}
    ct_project.configure(monitoring={"alerts": [rule]})
    for day in (6.5, 6.75, 7):
        run(ct_project, day)
        with stores(ct_project) as (_, results):
            windows = results.windows(MODEL, 1, "drift")
        day_us = 86_400_000_000
        assert all(w.end_us - w.start_us == day_us for w in windows)
        assert windows[-1].end_us == int(at(int(day)).timestamp() * 1e6)
        assert len(windows) == int(day)
