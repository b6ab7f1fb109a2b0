"""Lineage of a version the agent trained: the action and the incident that caused it.

The agent's records are real rows of ``agent_actions``/``agent_events`` (written here
with SQLAlchemy, as ``modelyard.agent`` writes them) beside a real pipeline run, a real
registered version and a real incident recorded by ``MonitorResults``, on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert

from modelyard.config import Settings
from modelyard.pipelines import PipelineRun
from modelyard.pipelines.lineage import LineageNode, lineage_of
from modelyard.store.database import Database, open_database
from modelyard.store.monitor_results import Incident, MonitorResults
from modelyard.store.schema import agent_actions, agent_events
from tests.pipelines.test_lineage import cli_find, cli_flow_project, cli_run

OPENED_US = 1_368_921_600_000_000  # 2013-05-19T00:00:00Z on the agent's clock


def add_action(
    db: Database,
    *,
    model: str,
    candidate: int | None,
    run_id: str | None,
    incident: Incident | None,
    state: str = "promoted",
    decision: str | None = "promote",
    events: tuple[tuple[str, str], ...] = (("created", ""), ("promoted", "")),
    opened_us: int = OPENED_US,
) -> str:
    """One action row and its events, as the agent records them; its id."""
    action_id = uuid.uuid4().hex
    terminal = state in ("promoted", "rolled_back", "failed", "rejected", "skipped")
    with db.write() as conn:
        conn.execute(
            insert(agent_actions).values(
                id=action_id,
                model=model,
                kind="retrain",
                state=state,
                in_flight=None if terminal else model,
                incident_id=None if incident is None else incident.id,
                incident_opened_us=opened_us if incident is not None else None,
                rule=None if incident is None else incident.rule,
                champion_version=1,
                candidate_version=candidate,
                pipeline="flights",
                params=json.dumps({"c": 0.25}),
                window_start_us=OPENED_US - 90 * 86_400_000_000,
                window_end_us=OPENED_US,
                pipeline_run_id=run_id,
                gate_evaluation_id=uuid.uuid4().hex,
                canary_started_us=OPENED_US + 3_600_000_000,
                decision=decision,
                reason="canary wins on log_loss",
                detail=json.dumps({}),
                created_us=OPENED_US,
                updated_us=OPENED_US,
                recorded_us=OPENED_US,
                created_by="agent",
            )
        )
        for i, (kind, key) in enumerate(events):
            conn.execute(
                insert(agent_events).values(
                    action_id=action_id,
                    kind=kind,
                    key=key,
                    time_us=OPENED_US + i,
                    recorded_us=OPENED_US + i,
                    detail=json.dumps({"n": i}),
                )
            )
    return action_id


def record_incident(db: Database, version: int = 1) -> Incident:
    incident, change = MonitorResults(db).record_incident(
        "toy",
        version,
        "auc-low",
        "auc",
        breaching=True,
        detail={"signal": "auc", "values": [0.61, 0.58], "below": 0.65},
    )
    assert change in ("opened", "updated") and incident is not None
    return incident


@pytest.fixture
def trained(tmp_path: Any, db_url: str) -> tuple[Settings, PipelineRun, PipelineRun]:
    """The flights project with two pipeline runs: toy/1 (by hand) and toy/2."""
    flow = cli_flow_project(tmp_path, db_url)
    return flow, cli_run(flow, {"c": 0.5}), cli_run(flow, {"c": 0.25})


def only(nodes: list[LineageNode]) -> LineageNode:
    assert len(nodes) == 1, [n.label for n in nodes]
    return nodes[0]


def test_a_version_the_agent_trained_shows_its_action_and_incident(
    trained: tuple[Settings, PipelineRun, PipelineRun],
) -> None:
    flow, _first, second = trained
    db = open_database(flow.db_url)
    try:
        incident = record_incident(db)
        looks = tuple(("look", str(n)) for n in range(1, 4))
        action_id = add_action(
            db,
            model="toy",
            candidate=2,
            run_id=second.run_id,
            incident=incident,
            events=(("created", ""), ("gates", ""), ("canary_started", ""), *looks),
        )
        root = lineage_of(flow, "toy/2", db=db).root
        # the action hangs off the version, after the step run that logged it
        assert root.children[0].kind == "step"
        action = only(cli_find(root, "action"))
        assert action in root.children
        assert action.id == action_id
        assert action.details["pipeline_run_id"] == second.run_id
        assert action.details["state"] == "promoted" and action.details["decision"] == "promote"
        assert action.details["looks"] == 3 and action.details["last_look"] == {"n": 5}
        assert [e["kind"] for e in action.details["events"]] == [
            "created",
            "gates",
            "canary_started",
        ]
        assert f"agent action {action_id[:8]} retrain (promoted)" in action.label
        assert f"pipeline flights run {second.run_id[:8]}" in action.label
        # upstream of the action: the incident as it opened
        found = only(action.children)
        assert (found.kind, found.id) == ("incident", str(incident.id))
        assert found.details["rule"] == "auc-low" and found.details["cause"] == "auc"
        assert found.details["values"] == [0.61, 0.58]
        assert found.details["opened_us"] == OPENED_US
        assert "opened 2013-05-19T00:00:00Z" in found.label
        # the pipeline run the action started shows it too
        prun = lineage_of(flow, second.run_id, db=db).root
        assert prun.kind == "pipeline"
        assert only(cli_find(prun, "action")).id == action_id
        # toy/1 was trained by hand: no action, no incident
        hand = lineage_of(flow, "toy/1", db=db).root
        assert cli_find(hand, "action") == [] and cli_find(hand, "incident") == []
        # JSON-able as the CLI prints it
        json.dumps(lineage_of(flow, "toy/2", db=db).to_dict())
    finally:
        db.close()


def test_an_action_without_an_incident_or_whose_incident_is_gone(
    trained: tuple[Settings, PipelineRun, PipelineRun],
) -> None:
    flow, _first, second = trained
    db = open_database(flow.db_url)
    try:
        gone = Incident(
            id=987654,
            model="toy",
            version=1,
            rule="drift",
            cause="x",
            state="open",
            opened_at_us=OPENED_US,
            updated_at_us=OPENED_US,
            detail={},
        )
        first = add_action(db, model="toy", candidate=2, run_id=second.run_id, incident=gone)
        second_action = add_action(db, model="toy", candidate=2, run_id=None, incident=None)
        root = lineage_of(flow, "toy/2", db=db).root
        actions = cli_find(root, "action")
        assert sorted(a.id for a in actions) == sorted([first, second_action])
        incident = only(cli_find(root, "incident"))
        assert incident.id == "987654" and "(not recorded)" in incident.label
        assert "rule drift" in incident.label
    finally:
        db.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    candidates=st.lists(st.sampled_from([1, 2, None]), min_size=0, max_size=5),
    with_incident=st.lists(st.booleans(), min_size=5, max_size=5),
)
def test_each_version_shows_exactly_the_actions_whose_candidate_it_is(
    trained: tuple[Settings, PipelineRun, PipelineRun],
    candidates: list[int | None],
    with_incident: list[bool],
) -> None:
    """Generated: any set of actions (on either version, or with no candidate yet, with
    or without an incident); each version's lineage shows exactly its own, each once,
    each with its incident when it has one."""
    flow, first, second = trained
    db = open_database(flow.db_url)
    try:
        incident = record_incident(db, version=3) if any(with_incident) else None
        made: dict[int | None, list[str]] = {1: [], 2: [], None: []}
        for n, (candidate, has) in enumerate(zip(candidates, with_incident, strict=False)):
            run = {1: first.run_id, 2: second.run_id, None: None}[candidate]
            made[candidate].append(
                add_action(
                    db,
                    model="toy",
                    candidate=candidate,
                    run_id=run,
                    incident=incident if has else None,
                    opened_us=OPENED_US + n,  # one action per opening of the incident
                )
            )
        for version in (1, 2):
            root = lineage_of(flow, f"toy/{version}", db=db).root
            actions = [n for n in cli_find(root, "action") if not n.seen]
            assert sorted(a.id for a in actions) == sorted(made[version])
            for a in actions:
                shown = [c.id for c in a.children]
                assert shown == ([str(incident.id)] if incident and a.details["rule"] else [])
    finally:
        with db.write() as conn:
            conn.execute(agent_events.delete())
            conn.execute(agent_actions.delete())
        db.close()
