"""One bad metric point never costs another: refused at the call, or dropped alone at write.

Points that fail the checks at ``log_metric`` are refused there (the point is not
kept). A point that passes them but not the database (injected here straight into
the buffer, as a store with narrower columns would see it) is split out of its batch,
logged once and dropped; every other point is written exactly once and every run
ends FINISHED, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from fractions import Fraction
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from modelyard.config import Settings, TrackingSettings
from modelyard.errors import InvalidInputError, NotFoundError, StorageError
from modelyard.store.schema import metrics
from modelyard.tracking.buffer import Point
from modelyard.tracking.client import TrackingClient
from modelyard.tracking.entities import RunStatus
from modelyard.tracking.store import SQLTrackingStore

_MISSING_RUN = "f" * 32


def _tuned(base: Settings, **tracking: Any) -> Settings:
    return msgspec.structs.replace(base, tracking=TrackingSettings(**tracking))


def _stored(client: TrackingClient, run_id: str) -> Counter[tuple[str, int, str]]:
    """(key, step, value as text) of every stored point of the run, with multiplicity."""
    with client.db.read() as conn:
        rows = conn.execute(
            select(metrics.c.key, metrics.c.step, metrics.c.value).where(metrics.c.run_id == run_id)
        ).all()
    return Counter((r.key, r.step, _text(math.nan if r.value is None else r.value)) for r in rows)


def _text(value: float) -> str:
    """A float as text; -0.0 as 0.0 (SQLite stores a zero without its sign)."""
    return repr(float(value) + 0.0)


# (what is wrong, the call's arguments after the run id, the error, its message)
BAD_CALLS: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("step over 64 bits", {"step": 2**70}, InvalidInputError, r"integer step between -2\*\*63"),
    ("step under 64 bits", {"step": -(2**63) - 1}, InvalidInputError, r"got -9223372036854775809"),
    ("timestamp over 64 bits", {"timestamp": 2**64}, InvalidInputError, r"0 to 2\*\*63-1"),
    ("negative timestamp", {"timestamp": -1}, InvalidInputError, r"timestamp .* got -1"),
    ("int too big for a float", {"value": 10**400}, InvalidInputError, r"fits a 64-bit float"),
    ("fraction too big", {"value": Fraction(10**400, 3)}, InvalidInputError, r"64-bit float"),
    ("bool value", {"value": True}, InvalidInputError, r"Expected a number .* got bool True"),
    ("bad key", {"key": "a\nb"}, InvalidInputError, r"Expected a metric key"),
]


@pytest.mark.parametrize(
    ("what", "call", "error", "message"), BAD_CALLS, ids=[b[0] for b in BAD_CALLS]
)
def test_a_bad_point_is_refused_at_the_call_and_costs_no_other(
    client: TrackingClient, what: str, call: dict[str, Any], error: type[Exception], message: str
) -> None:
    run = client.start_run("bad")
    run.log_metric("good", 1.0, step=0)
    args: dict[str, Any] = {"key": "x", "value": 1.0, "step": 1} | call
    with pytest.raises(error, match=message) as info:
        client.log_metric(run.id, **args)
    assert isinstance(info.value, InvalidInputError)
    assert info.value.loc is not None and info.value.loc.startswith("metrics")
    run.log_metric("good", 2.0, step=1)
    later = client.start_run("bad")  # a later run in the same process
    later.log_metric("good", 3.0)
    run.end()
    later.end()
    assert client.get_run(run.id).status is RunStatus.FINISHED
    assert client.get_run(later.id).status is RunStatus.FINISHED
    assert [m.value for m in client.get_metric_history(run.id, "good")] == [1.0, 2.0]
    assert [m.value for m in client.get_metric_history(later.id, "good")] == [3.0]
    assert sum(_stored(client, run.id).values()) == 2


def test_a_point_for_a_run_that_does_not_exist_is_refused_at_the_call(
    client: TrackingClient,
) -> None:
    with pytest.raises(NotFoundError, match=f"No run with id '{_MISSING_RUN}'"):
        client.log_metric(_MISSING_RUN, "x", 1.0)
    with pytest.raises(InvalidInputError, match=r"Expected a run id of 32 hex digits, got 'run-1'"):
        client.log_metrics("run-1", {"x": 1.0})
    with client.start_run("bad") as run:
        run.log_metric("x", 1.0)
    assert client.get_run(run.id).status is RunStatus.FINISHED
    # a run of another client (here: ended) is found in the store
    with TrackingClient(client.settings) as other:
        other.log_metric(run.id, "late", 2.0)
        assert [m.value for m in other.get_metric_history(run.id, "late")] == [2.0]


# points that pass no check at the call, as the database sees them
def _raw_bad(run_id: str, kind: str, n: int) -> Point:
    if kind == "step":
        return (run_id, "bad", 1.0, 2**70 + n, 5)
    if kind == "timestamp":
        return (run_id, "bad", 1.0, n, 2**64 + n)
    if kind == "value":
        return (run_id, "bad", 10**400 + n, n, 5)
    return (_MISSING_RUN, "bad", 1.0, n, 5)


def test_a_point_the_store_refuses_is_dropped_alone_and_logged_once(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with TrackingClient(_tuned(settings, flush_points=10, flush_interval_ms=10**6)) as client:
        run = client.start_run("bad")
        later = client.start_run("bad")
        for step in range(25):
            if step == 7:
                client._buffer.add(_raw_bad(run.id, "step", step))
            run.log_metric("loss", float(step), step=step)
            later.log_metric("loss", -float(step), step=step)
        with caplog.at_level(logging.ERROR, logger="modelyard.tracking.buffer"):
            run.end()
            later.end()
        assert client._buffer.dropped == 1
        refused = [r for r in caplog.records if "refused a point" in r.getMessage()]
        assert len(refused) == 1, caplog.text
        assert "step 1180591620717411303431" in refused[0].getMessage()
        for r, sign in ((run, 1.0), (later, -1.0)):
            assert client.get_run(r.id).status is RunStatus.FINISHED
            history = client.get_metric_history(r.id, "loss")
            assert [(m.step, m.value) for m in history] == [(s, sign * s) for s in range(25)]


_GOOD = st.tuples(
    st.just("good"),
    st.integers(0, 2),  # which run
    st.sampled_from(["loss", "auc", "lr"]),
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-(2**53), 2**53),
    ),
    st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
)
_BAD_CALL = st.tuples(st.just("call"), st.integers(0, 2), st.integers(0, len(BAD_CALLS) - 1))
_BAD_RAW = st.tuples(
    st.just("raw"), st.integers(0, 2), st.sampled_from(["step", "timestamp", "value", "run"])
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ops=st.lists(st.one_of(_GOOD, _GOOD, _GOOD, _BAD_CALL, _BAD_RAW), max_size=60),
    flush_points=st.integers(1, 16),
)
def test_random_mixes_of_good_and_bad_points_store_every_good_one_once(
    settings: Settings, ops: list[tuple[Any, ...]], flush_points: int
) -> None:
    tuned = _tuned(settings, flush_points=flush_points, flush_interval_ms=10**6)
    with TrackingClient(tuned) as client:
        runs = [client.start_run("mix") for _ in range(3)]
        expected: list[Counter[tuple[str, int, str]]] = [Counter() for _ in runs]
        auto: Counter[tuple[int, str]] = Counter()
        dropped = 0
        for n, op in enumerate(ops):
            kind, which = op[0], op[1]
            run = runs[which]
            if kind == "good":
                _, _, key, value, step = op
                run.log_metric(key, value, step=step)
                if step is None:
                    step = auto[(which, key)]
                    auto[(which, key)] += 1
                expected[which][(key, step, _text(value))] += 1
            elif kind == "call":
                _, call, error, _ = BAD_CALLS[op[2]]
                args: dict[str, Any] = {"key": "loss", "value": 1.0, "step": None} | call
                with pytest.raises(error):
                    client.log_metric(run.id, **args)
            else:
                client._buffer.add(_raw_bad(run.id, op[2], n))
                dropped += 1
        for run in runs:
            run.end()
        assert client._buffer.dropped == dropped
        for run, want in zip(runs, expected, strict=True):
            assert client.get_run(run.id).status is RunStatus.FINISHED
            assert _stored(client, run.id) == want


# -- idempotent writes -------------------------------------------------------------------


def test_a_batch_written_twice_is_stored_once(client: TrackingClient) -> None:
    run = client.start_run("once")
    store = SQLTrackingStore(client.db)
    points: list[Point] = [(run.id, "x", float(i), i, 1000 + i) for i in range(5)]
    store.write_metrics("a" * 32, points)
    store.write_metrics("a" * 32, points)  # a retry after a commit whose answer was lost
    assert store.metric_batch_written("a" * 32)
    assert not store.metric_batch_written("b" * 32)
    assert sum(_stored(client, run.id).values()) == 5
    run.end()


class _LostAnswerStore(SQLTrackingStore):
    """A real store whose first ``lose`` commits succeed but answer with an error, as when
    the connection drops between COMMIT and its reply (fault injection, not a mock)."""

    def __init__(self, inner: SQLTrackingStore, lose: int) -> None:
        super().__init__(inner.db)
        self.lose = lose

    def write_metrics(self, batch_id: str, points: Any) -> None:
        super().write_metrics(batch_id, points)
        if self.lose:
            self.lose -= 1
            raise StorageError("Metadata store failed: server closed the connection unexpectedly")


def test_a_retry_after_a_lost_commit_answer_writes_no_duplicate(settings: Settings) -> None:
    with TrackingClient(_tuned(settings, flush_points=10, flush_interval_ms=10**6)) as client:
        client._buffer._sink = _LostAnswerStore(client._store, lose=2)
        run = client.start_run("once")
        for step in range(35):
            run.log_metric("x", float(step))  # no error reaches the caller
        run.end()
        history = client.get_metric_history(run.id, "x")
        assert [(m.step, m.value) for m in history] == [(s, float(s)) for s in range(35)]
        assert client.get_run(run.id).status is RunStatus.FINISHED
        with client.db.read() as conn:
            count = conn.execute(select(func.count()).select_from(metrics)).scalar_one()
        assert count == 35


class _FaultyStore(SQLTrackingStore):
    """A real store that fails writes on a schedule (fault injection, not a mock).

    Each write takes the next fault: ``"ok"`` writes; ``"lost"`` writes and commits but
    answers with an error; ``"refused"`` fails before writing while the store still
    answers; ``"down"`` fails and the store answers nothing until the next write.
    """

    def __init__(self, inner: SQLTrackingStore, faults: list[str]) -> None:
        super().__init__(inner.db)
        self.faults = list(faults)
        self.down = False

    def write_metrics(self, batch_id: str, points: Any) -> None:
        fault = self.faults.pop(0) if self.faults else "ok"
        self.down = fault == "down"
        if fault in ("ok", "lost"):
            super().write_metrics(batch_id, points)
        if fault != "ok":
            raise StorageError(f"Metadata store failed: injected {fault}")

    def metric_batch_written(self, batch_id: str) -> bool:
        if self.down:
            raise StorageError("Metadata store failed: injected down")
        return super().metric_batch_written(batch_id)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    faults=st.lists(st.sampled_from(["ok", "lost", "refused", "down"]), max_size=6),
    points=st.integers(1, 60),
    flush_points=st.integers(1, 16),
)
def test_random_store_faults_raise_nothing_and_store_each_point_once(
    settings: Settings, faults: list[str], points: int, flush_points: int
) -> None:
    tuned = _tuned(settings, flush_points=flush_points, flush_interval_ms=10**6)
    with TrackingClient(tuned) as client:
        client._buffer._sink = _FaultyStore(client._store, faults)
        run = client.start_run("faults")
        for step in range(points):
            run.log_metric("x", float(step))  # never raises: the buffer owns the point
        run.end()
        assert client._buffer.dropped == 0
        assert client.get_run(run.id).status is RunStatus.FINISHED
        assert _stored(client, run.id) == Counter(
            ("x", step, _text(step)) for step in range(points)
        )


def test_a_caller_blocked_on_a_full_buffer_writes_when_the_store_is_back(
    settings: Settings,
) -> None:
    # the flusher sleeps for ~17 minutes: only the blocked caller itself can make room
    tuned = _tuned(settings, flush_points=5, flush_interval_ms=10**6)
    with TrackingClient(tuned, max_buffered_points=10, full_buffer_wait_s=30) as client:
        client._buffer._sink = _FaultyStore(client._store, ["down"] * 4)
        run = client.start_run("full")
        started = time.monotonic()
        for step in range(40):
            run.log_metric("x", float(step))
        assert time.monotonic() - started < 20
        run.end()
        assert _stored(client, run.id) == Counter(("x", s, _text(s)) for s in range(40))
