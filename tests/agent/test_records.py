"""The agent's records and lease on SQLite and PostgreSQL: compare-and-set, uniqueness."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelyard.agent.lease import AgentLease
from modelyard.agent.records import TERMINAL, ActionStore
from modelyard.errors import ConflictError, InvalidInputError, NotFoundError
from modelyard.store.database import Database, open_database
from modelyard.store.monitor_results import Incident


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """SQLite and PostgreSQL (the constraints and the compare-and-set are the store's)."""
    database = open_database(db_url)
    yield database
    database.close()


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[Database]:
    """SQLite only, for what does not depend on the backend."""
    database = open_database(f"sqlite:///{tmp_path / 'meta.db'}")
    yield database
    database.close()


_SHARED: list[Database] = []


def shared_db() -> Database:
    if not _SHARED:
        _SHARED.append(open_database("sqlite://"))
    return _SHARED[0]


def incident(id: int, opened: int, model: str = "churn") -> Incident:
    return Incident(id, model, 1, "auc-low", "auc", "open", opened, opened, {})


_EXAMPLES = itertools.count(1)


def test_transitions_are_compare_and_set_with_their_events(db: Database) -> None:
    store = ActionStore(db)
    action = store.create(
        model="churn",
        kind="retrain",
        state="pending",
        now_us=10,
        incident=incident(1, 100),
        rule="auc-low",
        champion_version=1,
        pipeline="retrain_churn",
        params={"promote": False},
        window=(0, 10),
    )
    assert action is not None and action.state == "pending"
    assert (action.incident_id, action.incident_opened_us, action.params) == (
        1,
        100,
        {"promote": False},
    )
    training = store.advance(action, "training", now_us=20, event=("retrain_started", "", {"n": 1}))
    gating = store.advance(
        training,
        "gating",
        now_us=30,
        events=[("retrain_completed", "", {}), ("candidate", "", {"version": 2})],
        candidate_version=2,
        pipeline_run_id="r" * 32,
    )
    assert (gating.state, gating.candidate_version, gating.updated_us) == ("gating", 2, 30)
    # a stale copy (another process moved it) changes nothing, events included
    with pytest.raises(ConflictError, match="is gating, not training"):
        store.advance(training, "failed", now_us=40, event=("failed", "", {}), reason="x")
    assert store.get(action.id) == gating
    assert [e.kind for e in store.events(action.id)] == [
        "created",
        "retrain_started",
        "retrain_completed",
        "candidate",
    ]
    detailed = store.update_detail(gating, {"gate_evaluation_id": "e" * 32}, now_us=41)
    assert (detailed.state, detailed.detail) == ("gating", {"gate_evaluation_id": "e" * 32})
    assert store.in_flight("churn") == detailed
    done = store.advance(detailed, "rejected", now_us=50, reason="gates failed")
    assert store.in_flight("churn") is None and done.terminal
    assert store.for_version("churn", 2) == [done]
    assert store.get(action.id).to_dict()["reason"] == "gates failed"


def test_one_in_flight_per_model_and_one_action_per_incident_opening(db: Database) -> None:
    store = ActionStore(db)
    first = store.create(
        model="churn", kind="retrain", state="pending", now_us=1, incident=incident(1, 100)
    )
    assert first is not None
    # the same opening again: no second action, whatever its state would be
    assert store.create(model="churn", kind="retrain", state="pending", now_us=2,
                        incident=incident(1, 100)) is None  # fmt: skip
    assert store.create(model="churn", kind="retrain", state="skipped", now_us=2,
                        incident=incident(1, 100)) is None  # fmt: skip
    with pytest.raises(ConflictError, match=f"Action {first.id} of churn is in flight"):
        store.create(model="churn", kind="retrain", state="pending", now_us=3,
                     incident=incident(2, 200))  # fmt: skip
    skipped = store.create(
        model="churn",
        kind="retrain",
        state="skipped",
        now_us=3,
        incident=incident(2, 200),
        reason="in flight",
    )
    assert skipped is not None and skipped.state == "skipped"
    assert [e.kind for e in store.events(skipped.id)] == ["skipped"]
    # another model is independent
    assert store.create(model="other", kind="retrain", state="pending", now_us=3) is not None
    assert store.last_retrain("churn") == first
    store.advance(first, "failed", now_us=4)
    # the incident reopened (a new opening) gets its action once nothing is in flight
    again = store.create(
        model="churn", kind="retrain", state="pending", now_us=5, incident=incident(1, 300)
    )
    assert again is not None
    assert [a.id for a in store.list("churn")] == [again.id, skipped.id, first.id]
    assert [a.id for a in store.list("churn", states=["failed"])] == [first.id]


def test_expected_columns_join_the_compare_and_set(lite: Database) -> None:
    store = ActionStore(lite)
    action = store.create(model="churn", kind="retrain", state="canary", now_us=1)
    assert action is not None
    started = store.advance(
        action, "canary", now_us=2, canary_started_us=2, expect={"canary_started_us": None}
    )
    with pytest.raises(ConflictError, match=r"changed meanwhile \(canary_started_us\)"):
        store.advance(
            action, "canary", now_us=3, canary_started_us=3, expect={"canary_started_us": None}
        )
    assert store.get(action.id) == started


def test_events_are_written_once(lite: Database) -> None:
    db = lite
    store = ActionStore(db)
    action = store.create(model="churn", kind="retrain", state="pending", now_us=1)
    assert action is not None
    assert store.add_event(action.id, "look", key="1", now_us=2, detail={"n": 5}) is True
    assert store.add_event(action.id, "look", key="1", now_us=3, detail={"n": 9}) is False
    assert store.add_event(action.id, "look", key="2", now_us=3) is True
    store.advance(action, "training", now_us=4, events=[("look", "2", {}), ("look", "3", {})])
    looks = [(e.key, e.detail) for e in store.events(action.id) if e.kind == "look"]
    assert looks == [("1", {"n": 5}), ("2", {}), ("3", {})]


def test_bad_names_are_refused_naming_them(lite: Database) -> None:
    db = lite
    store = ActionStore(db)
    action = store.create(model="churn", kind="retrain", state="pending", now_us=1)
    assert action is not None
    with pytest.raises(InvalidInputError, match="'nowhere'"):
        store.advance(action, "nowhere", now_us=2)
    with pytest.raises(InvalidInputError, match="'colour'"):
        store.advance(action, "training", now_us=2, colour="red")
    with pytest.raises(InvalidInputError, match="'party'"):
        store.add_event(action.id, "party", now_us=2)
    with pytest.raises(NotFoundError, match="'nosuch'"):
        store.get("nosuch")
    assert store.get(action.id).state == "pending"


def test_racing_transitions_have_one_winner(db: Database) -> None:
    """Eight threads advance the same action from the same state: exactly one wins."""
    store = ActionStore(db)
    action = store.create(model="churn", kind="retrain", state="pending", now_us=1)
    assert action is not None
    won: list[str] = []
    lost: list[str] = []
    barrier = threading.Barrier(8)

    def move(i: int) -> None:
        barrier.wait()
        try:
            store.advance(action, "training", now_us=2, event=("retrain_started", "", {"i": i}))
            won.append(str(i))
        except ConflictError:
            lost.append(str(i))

    threads = [threading.Thread(target=move, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (len(won), len(lost)) == (1, 7)
    [started] = [e for e in store.events(action.id) if e.kind == "retrain_started"]
    assert started.detail == {"i": int(won[0])}


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["create", "create_incident", "advance", "finish"]),
        st.sampled_from(["a", "b"]),
        st.integers(0, 3),
    ),
    max_size=25,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_OPS)
def test_generated_histories_keep_the_invariants(ops: list[tuple[str, str, int]]) -> None:
    """Any sequence of creates and moves: one in flight per model, one per opening."""
    store = ActionStore(shared_db())
    example = next(_EXAMPLES)
    names = {m: f"{m}{example}" for m in ("a", "b")}
    clock = 0
    openings: dict[tuple[int, int], str] = {}
    for op, key, n in ops:
        model = names[key]
        clock += 1
        flying = store.in_flight(model)
        if op in ("create", "create_incident"):
            inc = None
            if op == "create_incident":
                inc = incident(example * 10 + n, 100 + n % 2, model)
            try:
                made = store.create(model=model, kind="retrain", state="pending", now_us=clock,
                                    incident=inc)  # fmt: skip
            except ConflictError:
                assert flying is not None
                continue
            if inc is not None and (inc.id, inc.opened_at_us) in openings:
                assert made is None
                continue
            assert flying is None and made is not None
            if inc is not None:
                openings[(inc.id, inc.opened_at_us)] = made.id
        elif flying is not None:
            nxt = "training" if op == "advance" else TERMINAL[n % 4]
            store.advance(flying, nxt, now_us=clock)
            if nxt != flying.state:  # the copy is stale now
                with pytest.raises(ConflictError):
                    store.advance(flying, nxt, now_us=clock)
        for name in names.values():
            live = [a for a in store.list(name, limit=1000) if not a.terminal]
            assert len(live) <= 1


# -- the lease ----------------------------------------------------------------------------


def test_a_second_agent_is_refused_naming_the_holder(db: Database) -> None:
    first, second = AgentLease(db, ttl_s=60), AgentLease(db, ttl_s=60)
    assert first.acquire() and first.acquire()  # ours already: kept
    assert not second.acquire()
    assert second.holder_seen == first.holder
    assert first.renew() and not second.renew()
    second.release()  # not ours: nothing happens
    assert not second.acquire()
    first.release()
    assert second.acquire() and not first.acquire()


def test_an_expired_lease_is_taken_over(lite: Database) -> None:
    db = lite
    old = AgentLease(db, ttl_s=0.001)
    old.holder = "elsewhere:1:abc"  # another host: only the expiry frees it
    assert old.acquire()
    fresh = AgentLease(db, ttl_s=60)
    threading.Event().wait(0.01)
    assert fresh.acquire()
    assert not old.renew()
    fresh.release()
    # a live process of this host keeps its lease past the TTL (a long retrain)
    slow = AgentLease(db, ttl_s=0.001)
    assert slow.acquire()
    threading.Event().wait(0.01)
    assert not AgentLease(db, ttl_s=60).acquire()


def test_the_lease_of_a_dead_process_of_this_host_is_taken_over(lite: Database) -> None:
    db = lite
    pid = os.fork()
    if pid == 0:  # the child takes the lease and dies without releasing it
        code = 0
        try:
            lease = AgentLease(db, ttl_s=3600)
            db.engine.dispose(close=False)
            code = 0 if lease.acquire() else 3
        except BaseException:
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    lease = AgentLease(db, ttl_s=60)
    assert lease.acquire()
