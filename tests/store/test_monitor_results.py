"""``MonitorResults``: stored windows and alert incidents, on every metadata backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from modelyard.store.database import Database, open_database
from modelyard.store.monitor_results import MonitorResults, WindowResult

DAY = 86_400_000_000


@pytest.fixture
def results(db_url: str) -> Iterator[MonitorResults]:
    db: Database = open_database(db_url)
    yield MonitorResults(db)
    db.close()


def _window(day: int, *, kind: str = "drift", length: int = 1, **kw: object) -> WindowResult:
    fields: dict[str, object] = {
        "model": "churn",
        "version": 1,
        "kind": kind,
        "start_us": day * DAY,
        "end_us": (day + length) * DAY,
        "rows": 10 + day,
        "alarm": day % 2 == 1,
        "summary": {"day": day, "nested": {"list": [1, 2.5, None, "x"], "flag": True}},
    }
    fields.update(kw)
    return WindowResult(**fields)  # type: ignore[arg-type]


def test_windows_round_trip_oldest_first(results: MonitorResults) -> None:
    results.save_windows([_window(3), _window(1), _window(2)])
    got = results.windows("churn", 1, "drift")
    assert [w.start_us for w in got] == [DAY, 2 * DAY, 3 * DAY]
    first = got[0]
    assert (first.model, first.version, first.kind, first.end_us) == ("churn", 1, "drift", 2 * DAY)
    assert (first.rows, first.alarm) == (11, True)
    assert first.summary == {"day": 1, "nested": {"list": [1, 2.5, None, "x"], "flag": True}}
    assert first.computed_at_us > 0
    assert results.windows("churn", 1, "performance") == []
    assert results.windows("churn", 2, "drift") == []
    assert results.windows("fraud", 1, "drift") == []


def test_saving_a_window_again_replaces_it(results: MonitorResults) -> None:
    results.save_window(_window(1, computed_at_us=5))
    results.save_window(_window(1, rows=99, summary={"v": 2}, computed_at_us=7))
    results.save_windows([_window(1, rows=100, summary={"v": 3}), _window(2)])
    got = results.windows("churn", 1, "drift")
    assert (got[0].start_us, got[0].rows, got[0].summary) == (DAY, 100, {"v": 3})
    assert len(got) == 2
    # the same start with another length is another window
    results.save_window(_window(1, length=7))
    assert [(w.start_us, w.end_us) for w in results.windows("churn", 1, "drift")] == [
        (DAY, 2 * DAY),
        (DAY, 8 * DAY),
        (2 * DAY, 3 * DAY),
    ]
    results.save_windows([])  # nothing to do


def test_windows_since_and_until_keep_the_overlapping_ones(results: MonitorResults) -> None:
    results.save_windows([_window(d) for d in range(5)])

    def starts(**kw: int) -> list[int]:
        return [w.start_us // DAY for w in results.windows("churn", 1, "drift", **kw)]

    assert starts(since_us=2 * DAY) == [2, 3, 4]  # day 1 ends at 2*DAY: not after since
    assert starts(since_us=2 * DAY - 1) == [1, 2, 3, 4]
    assert starts(until_us=2 * DAY) == [0, 1]  # day 2 starts at until: excluded
    assert starts(until_us=2 * DAY + 1) == [0, 1, 2]
    assert starts(since_us=DAY + DAY // 2, until_us=3 * DAY + 5) == [1, 2, 3]


def test_latest_is_the_window_that_ends_last(results: MonitorResults) -> None:
    assert results.latest("churn", 1, "drift") is None
    results.save_windows([_window(4), _window(0, length=7), _window(2)])
    latest = results.latest("churn", 1, "drift")
    assert latest is not None and (latest.start_us, latest.end_us) == (0, 7 * DAY)
    results.save_window(_window(6, kind="performance"))
    latest = results.latest("churn", 1, "drift")
    assert latest is not None and latest.end_us == 7 * DAY


def test_record_incident_state_machine(results: MonitorResults) -> None:
    def record(breaching: bool, n: int, cause: str = "x") -> tuple[object, str]:
        return results.record_incident(
            "churn", 1, "rule", cause, breaching=breaching, detail={"n": n}
        )

    assert record(False, 0) == (None, "unchanged")
    assert results.incidents() == []
    opened, change = record(True, 1)
    assert change == "opened"
    assert opened is not None
    assert (opened.state, opened.detail, opened.cause) == ("open", {"n": 1}, "x")  # type: ignore[attr-defined]
    assert opened.opened_at_us == opened.updated_at_us  # type: ignore[attr-defined]
    updated, change = record(True, 2)
    assert change == "updated"
    assert updated.id == opened.id  # type: ignore[attr-defined]
    assert updated.opened_at_us == opened.opened_at_us  # type: ignore[attr-defined]
    assert updated.updated_at_us >= opened.updated_at_us  # type: ignore[attr-defined]
    assert updated.detail == {"n": 2}  # type: ignore[attr-defined]
    resolved, change = record(False, 3)
    assert change == "resolved"
    assert (resolved.state, resolved.detail) == ("resolved", {"n": 3})  # type: ignore[attr-defined]
    same, change = record(False, 4)
    assert change == "unchanged"
    assert same.detail == {"n": 3}  # type: ignore[attr-defined]  # untouched
    reopened, change = record(True, 5)
    assert change == "reopened"
    assert reopened.id == opened.id and reopened.state == "open"  # type: ignore[attr-defined]
    assert reopened.opened_at_us >= resolved.updated_at_us  # type: ignore[attr-defined]
    assert len(results.incidents()) == 1


def test_incidents_are_keyed_and_filtered(results: MonitorResults) -> None:
    for model, version, rule, cause in [
        ("churn", 1, "r", "a"),
        ("churn", 1, "r", "b"),
        ("churn", 1, "s", "a"),
        ("churn", 2, "r", "a"),
        ("fraud", 1, "r", "a"),
    ]:
        results.record_incident(model, version, rule, cause, breaching=True, detail={})
    results.record_incident("churn", 1, "r", "b", breaching=False, detail={})
    assert len(results.incidents()) == 5
    assert len({i.id for i in results.incidents()}) == 5
    assert len(results.incidents("churn")) == 4
    assert len(results.incidents("churn", 1)) == 3
    assert [(i.rule, i.cause) for i in results.incidents("churn", 1, "resolved")] == [("r", "b")]
    assert len(results.incidents(state="open")) == 4
    newest = results.incidents()[0]
    assert (newest.model, newest.cause, newest.state) == ("churn", "b", "resolved")
    times = [i.updated_at_us for i in results.incidents()]
    assert times == sorted(times, reverse=True)
    assert results.incidents()[0].to_dict()["state"] == "resolved"
