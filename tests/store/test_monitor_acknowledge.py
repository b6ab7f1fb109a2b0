"""``MonitorResults.acknowledge`` and ``monitored``, on every metadata backend.

An acknowledgement is never lost: whatever alert evaluation does to the incident after
it (update, resolve, reopen), every acknowledgement made is still in its detail, in order.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelyard.errors import InvalidInputError, NotFoundError
from modelyard.store.database import Database, open_database
from modelyard.store.monitor_results import MonitorResults, WindowResult

DAY = 86_400_000_000


@pytest.fixture
def results(db_url: str) -> Iterator[MonitorResults]:
    db: Database = open_database(db_url)
    yield MonitorResults(db)
    db.close()


def test_acknowledge_keeps_state_and_survives_updates(results: MonitorResults) -> None:
    opened, _ = results.record_incident("m", 1, "drift", "x", breaching=True, detail={"v": 1})
    assert opened is not None and opened.acknowledged is None
    acked = results.acknowledge(opened.id, "ui:alice", "looking into it")
    assert (acked.state, acked.opened_at_us, acked.updated_at_us) == (
        "open",
        opened.opened_at_us,
        opened.updated_at_us,
    )
    assert acked.detail["v"] == 1
    assert acked.acknowledged is not None
    assert (acked.acknowledged["by"], acked.acknowledged["note"]) == ("ui:alice", "looking into it")
    # alert evaluation rewrites the detail: the acknowledgement stays
    updated, change = results.record_incident("m", 1, "drift", "x", breaching=True, detail={"v": 2})
    assert change == "updated" and updated is not None
    assert updated.detail["v"] == 2 and updated.acknowledged == acked.acknowledged
    resolved, change = results.record_incident(
        "m", 1, "drift", "x", breaching=False, detail={"v": 3}
    )
    assert change == "resolved" and resolved is not None
    assert [a["by"] for a in resolved.acknowledgements] == ["ui:alice"]
    # a reopening is a new episode: the old acknowledgement is kept but does not cover it
    reopened, change = results.record_incident(
        "m", 1, "drift", "x", breaching=True, detail={"v": 4}
    )
    assert change == "reopened" and reopened is not None
    assert len(reopened.acknowledgements) == 1 and reopened.acknowledged is None
    assert results.incident(opened.id) == reopened


def test_acknowledge_refuses_unknown_ids_and_bad_input(results: MonitorResults) -> None:
    with pytest.raises(NotFoundError, match="No incident 999"):
        results.acknowledge(999, "ui:alice", "")
    with pytest.raises(NotFoundError):
        results.incident(999)
    incident, _ = results.record_incident("m", 1, "r", "c", breaching=True, detail={})
    assert incident is not None
    with pytest.raises(InvalidInputError, match="who acknowledges"):
        results.acknowledge(incident.id, "  ", "")
    with pytest.raises(InvalidInputError, match="at most 2000 characters, got 2001"):
        results.acknowledge(incident.id, "ui:a", "n" * 2001)
    assert results.incident(incident.id).acknowledgements == []


_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("eval"), st.booleans()),
        st.tuples(st.just("ack"), st.text(max_size=20)),
    ),
    max_size=12,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=_STEPS)
def test_no_acknowledgement_is_ever_lost(results: MonitorResults, steps: list) -> None:
    """Generated: any interleaving of evaluations and acknowledgements keeps every ack."""
    with results.db.write() as conn:
        conn.exec_driver_sql("DELETE FROM monitor_incidents")
    made: list[str] = []
    incident_id: int | None = None
    for i, (kind, value) in enumerate(steps):
        if kind == "eval":
            found, change = results.record_incident(
                "m", 1, "r", "c", breaching=value, detail={"step": i}
            )
            if found is not None:
                incident_id = found.id
                assert change == "unchanged" or found.detail["step"] == i
        elif incident_id is not None:
            results.acknowledge(incident_id, f"ui:k{i}", value)
            made.append(value)
        if incident_id is not None:
            assert [a["note"] for a in results.incident(incident_id).acknowledgements] == made


def test_monitored_groups_every_version(results: MonitorResults) -> None:
    windows = [
        WindowResult("a", 1, "drift", 0, DAY, 5, True, {}),
        WindowResult("a", 1, "drift", DAY, 2 * DAY, 5, False, {}),
        WindowResult("a", 1, "performance", 0, DAY, 5, False, {}),
        WindowResult("b", 3, "drift", 0, 3 * DAY, 5, True, {}),
    ]
    results.save_windows(windows)
    results.record_incident("a", 1, "r", "c", breaching=True, detail={})
    results.record_incident("c", 2, "r", "c", breaching=True, detail={})
    got = {(m.model, m.version): m for m in results.monitored()}
    assert list(got) == [("a", 1), ("b", 3), ("c", 2)]
    a = got[("a", 1)]
    assert (a.drift_windows, a.performance_windows, a.alarms, a.last_end_us) == (2, 1, 1, 2 * DAY)
    assert a.open_incidents == 1
    assert (got[("b", 3)].alarms, got[("b", 3)].open_incidents) == (1, 0)
    assert (got[("c", 2)].drift_windows, got[("c", 2)].open_incidents) == (0, 1)
